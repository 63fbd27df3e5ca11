//! Fail-stop: a member that can no longer commit (its log failed, or openraft's core stopped on an error
//! outside the log) says so through `Shared::failed`, which `server::run` turns into an exit (status 2), so
//! that clients move on instead of waiting forever on writes and handshakes while reads still answer.

mod common;

use common::{create_req, Client, GateDisk, TestServer, SOON};
use futures_util::FutureExt;
use oxkeeper_proto::CreateMode;

/// The member is healthy: a write commits and no failure is reported.
async fn healthy(server: &TestServer, client: &mut Client, path: &str) {
    let reply = client
        .call(1, &create_req(path, CreateMode::Persistent))
        .await;
    assert_eq!(reply.err(), 0, "create {path}");
    assert!(
        server.shared.failed().now_or_never().is_none(),
        "a healthy member reports no failure"
    );
}

/// The member reports (within `SOON`) that it can no longer serve, for a reason that says `why`.
async fn reports_failure(server: &TestServer, why: &str) {
    let reason = tokio::time::timeout(SOON, server.shared.failed())
        .await
        .expect("the member reports that it can no longer serve");
    assert!(reason.contains(why), "the reason says {why:?}: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_stops_the_member() {
    let disk = GateDisk::default();
    let server = TestServer::start_on(disk.clone(), |_| {}).await;
    let mut c = Client::connect(server.addr, 30_000).await;
    healthy(&server, &mut c, "/before").await;

    disk.break_syncs();
    // The write is never acknowledged (what happens to its connection does not matter here: the member
    // is about to exit); its fdatasync fails, and with it the log, for good.
    let write = tokio::spawn(async move {
        let _ =
            c.tx.send(2, &create_req("/lost", CreateMode::Persistent))
                .await;
        c
    });
    reports_failure(&server, "write-ahead log has stopped").await;
    let _ = write.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replication_core_stops_the_member() {
    let server = TestServer::start(|_| {}).await;
    let mut c = Client::connect(server.addr, 30_000).await;
    healthy(&server, &mut c, "/before").await;

    // openraft's core stops for good on a storage error outside the log (the vote file, a snapshot's
    // thread), on a panic, or when told to; it records why in its metrics either way (a panic ends its state
    // machine task too, and with it the executor). Of these, only the last can be provoked from outside: a
    // leader ignores an election trigger, so the vote is never written again while it leads.
    server.shared.replicator().shutdown().await;

    reports_failure(&server, "replication core has stopped").await;
}
