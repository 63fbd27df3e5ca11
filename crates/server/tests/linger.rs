//! Lingering (`server::linger`): after an entry's replies, with nothing else to do, the apply thread stays
//! awake a moment for the next request of clients that come back quickly, and never for clients that
//! do not.

mod common;

use common::{create_req, mntr, Client, TestServer, SOON};
use std::time::Duration;

use oxkeeper_proto::CreateMode;

async fn lingers(server: &TestServer) -> (u64, u64) {
    (
        mntr(server.addr, "oxkeeper_lingers_caught").await,
        mntr(server.addr, "oxkeeper_lingers_missed").await,
    )
}

/// A client that writes in a closed loop has requests read while the apply thread lingers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_writer_is_caught_while_the_apply_thread_lingers() {
    let server = TestServer::start(|c| c.force_sync = false).await;
    let mut c = Client::connect(server.addr, 30_000).await;
    // Whether a request comes back within the linger depends on the machine's round trip: writes go on
    // (in rounds of 50) until one has, or the deadline.
    let until = tokio::time::Instant::now() + SOON;
    for round in 0.. {
        for i in 1..=50 {
            let x = round * 50 + i;
            let path = format!("/n{x}");
            let reply = c.call(x, &create_req(&path, CreateMode::Persistent)).await;
            assert_eq!(reply.err(), 0, "create {path}");
        }
        if lingers(&server).await.0 >= 1 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no request read while the apply thread lingered, in {} writes",
            (round + 1) * 50
        );
    }
}

/// A client that writes now and then (here every 2 ms, ten times the longest gap counted as quick) never
/// has the apply thread linger for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_comes_back_slowly_is_not_lingered_for() {
    let server = TestServer::start(|c| c.force_sync = false).await;
    let mut c = Client::connect(server.addr, 30_000).await;
    // Counted from after a first slow write: the server's first entries (its own, the handshake) come and
    // go at a pace of their own.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let reply = c
        .call(1, &create_req("/slow", CreateMode::Persistent))
        .await;
    assert_eq!(reply.err(), 0);
    let before = lingers(&server).await;
    for x in 2..=21 {
        // The client's pace, not a wait for the server: every gap is longer than a quick one.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let path = format!("/slow{x}");
        let reply = c.call(x, &create_req(&path, CreateMode::Persistent)).await;
        assert_eq!(reply.err(), 0, "create {path}");
    }
    assert_eq!(lingers(&server).await, before, "lingered for a slow client");
}
