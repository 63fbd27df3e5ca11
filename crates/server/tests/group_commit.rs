//! Group commit one level above the log: while a log entry waits for its fdatasync, the commands that
//! arrive gather in the executor and go out together as the next entry the moment it is durable, instead
//! of a second entry being proposed at once with whatever had arrived by then (which left the rest for a
//! third). The log's fdatasync is held at a gate while the writes arrive.

mod common;

use common::{create_req, mntr, mntr_reaches, ok_replies, Client, GateDisk, TestServer};
use oxkeeper_proto::CreateMode;

const WRITES: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_arriving_during_an_fdatasync_go_out_as_one_entry() {
    let disk = GateDisk::default();
    let server = TestServer::start_on(disk.clone(), |_| {}).await;
    let mut c = Client::connect(server.addr, 30_000).await;
    let entries_before = mntr(server.addr, "oxkeeper_log_entries").await;
    let create = |i: usize| create_req(&format!("/n{i:04}"), CreateMode::Persistent);

    let gate = disk.stall();
    c.tx.send(1, &create(0))
        .await
        .expect("send the first create");
    disk.sync_blocked().await;
    // A second write reaches the executor on its own while the first is held: it must not go out alone.
    c.tx.send(2, &create(1))
        .await
        .expect("send the second create");
    mntr_reaches(server.addr, "outstanding_requests", 2).await;
    for i in 2..WRITES {
        c.tx.send(i as i32 + 1, &create(i))
            .await
            .expect("send a create");
    }
    mntr_reaches(server.addr, "outstanding_requests", WRITES as u64).await;
    gate.release();
    ok_replies(&mut c, WRITES, "create").await;
    let entries = mntr(server.addr, "oxkeeper_log_entries").await - entries_before;
    assert_eq!(
        entries,
        2,
        "the held write, then the {} that arrived meanwhile, as one entry",
        WRITES - 1
    );
}
