//! `forceSync=no` (standalone only): a write is acknowledged once it is written to the log file, without
//! waiting for fdatasync. The log's fdatasync is held at a gate the whole time; with `forceSync=yes` the
//! first write would wait at it (tests/pings_never_wait.rs relies on that).

mod common;

use common::{exists_req, Client, GateDisk, TestServer};
use oxkeeper_proto::CreateMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_force_sync_writes_are_acknowledged_while_fdatasync_is_stuck() {
    let disk = GateDisk::default();
    let server = TestServer::start_on(disk.clone(), |config| {
        config.force_sync = false;
        // The lazy sync must not come while the gate is closed: it would hold the log (and every write
        // queued behind it) at the gate.
        config.lazy_sync_ms = 3_600_000;
    })
    .await;
    let gate = disk.stall();
    // Session creation is a write too.
    let mut c = Client::connect(server.addr, 30_000).await;
    for k in 0..20 {
        let path = format!("/n{k}");
        let reply = c
            .call(k + 1, &common::create_req(&path, CreateMode::Persistent))
            .await;
        assert_eq!(reply.err(), 0, "create {path}");
    }
    let reply = c.call(100, &exists_req("/n19")).await;
    assert_eq!(reply.err(), 0, "the acknowledged create is visible");
    assert_eq!(
        disk.blocked_syncs(),
        0,
        "something waited for fdatasync with forceSync=no"
    );
    gate.release();
    drop(c);
}
