//! A ping is answered at once even while that connection's write is stuck in the log (a slow disk) and
//! while a flood of closeSession requests from other sessions is stuck behind it (DESIGN.md, concurrency
//! contract 3). The log is stalled by holding its fdatasync at a gate.

mod common;

use std::time::{Duration, Instant};

use common::{exists_req, Client, GateDisk, RecvError, TestServer, SOON};
use oxkeeper_proto::records::Request;
use oxkeeper_proto::{CreateMode, ErrorCode, OpCode};

/// How long a stalled request must stay unanswered: proves the gate holds.
const STALL_PROOF: Duration = Duration::from_millis(300);
/// How long a ping may take while writes are stuck.
const PING_DEADLINE: Duration = Duration::from_secs(2);
const SESSION_TIMEOUT_MS: i32 = 30_000;

/// Pings once and waits for its reply; any other frame arriving meanwhile fails the test (nothing else may
/// be answered while the log is stalled). Returns the round trip.
async fn ping_answered_alone(c: &mut Client, what: &str) -> Duration {
    let sent = Instant::now();
    c.tx.ping().await.expect("send a ping");
    match c.rx.recv_within(PING_DEADLINE).await {
        Ok(f) if f.is_ping() => {
            assert_eq!(f.err(), 0, "{what}: ping reply carries an error");
            sent.elapsed()
        }
        Ok(f) => panic!("{what}: while the log is stalled, got {f:?} instead of a ping reply"),
        Err(e) => panic!("{what}: ping not answered within {PING_DEADLINE:?} ({e:?})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_while_writes_are_stuck_in_the_log() {
    pings_answered_during_a_stall(200).await;
}

/// A flood of closes at least as large as globalOutstandingLimit (1000): the member is at its limit, so the
/// connections' requests wait in their readers' hands, but their pings are still read and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_while_closes_beyond_the_outstanding_limit_are_stuck() {
    pings_answered_during_a_stall(1000).await;
}

/// One session has a create stuck in the stalled log; `flood_sessions` other sessions ask to close meanwhile.
async fn pings_answered_during_a_stall(flood_sessions: usize) {
    let disk = GateDisk::default();
    let server = TestServer::start_on(disk.clone(), |_| {}).await;
    let mut a = Client::connect(server.addr, SESSION_TIMEOUT_MS).await;
    let r = a
        .call(1, &common::create_req("/p", CreateMode::Persistent))
        .await;
    assert_eq!(r.err(), 0, "create /p");
    let mut flood = Vec::new();
    for _ in 0..flood_sessions {
        flood.push(Client::connect(server.addr, SESSION_TIMEOUT_MS).await);
    }

    let gate = disk.stall();
    // A create, then a read behind it on the same connection: neither may be answered while the log is
    // stalled (the read waits for the earlier write, contract rule 4). A ping queued the same way would wait
    // too, which is what this test would catch.
    a.tx.send(2, &common::create_req("/p/x", CreateMode::Ephemeral))
        .await
        .expect("send create");
    a.tx.send(3, &exists_req("/p/x"))
        .await
        .expect("send exists");
    match a.rx.recv_within(STALL_PROOF).await {
        Err(RecvError::Timeout) => {}
        other => panic!("the stalled create (or the read behind it) was answered: {other:?}"),
    }
    assert!(
        disk.blocked_syncs() > 0,
        "the WAL thread is not blocked at the gate"
    );

    let mut rtts = Vec::new();
    for i in 0..5 {
        rtts.push(ping_answered_alone(&mut a, &format!("ping {i} behind a stuck create")).await);
    }

    // The flood: every other session asks to close while the log is stalled.
    for (i, c) in flood.iter_mut().enumerate() {
        c.tx.send(1, &Request::CloseSession)
            .await
            .unwrap_or_else(|e| panic!("send closeSession {i}: {e}"));
    }
    for i in 0..20 {
        rtts.push(ping_answered_alone(&mut a, &format!("ping {i} during the close flood")).await);
    }
    // The closes are stuck behind the stall too.
    for (i, c) in flood.iter_mut().enumerate().take(10) {
        match c.rx.recv_within(Duration::from_millis(10)).await {
            Err(RecvError::Timeout) => {}
            other => panic!("closeSession {i} answered while the log is stalled: {other:?}"),
        }
    }
    let max = rtts.iter().max().copied().unwrap_or_default();
    println!(
        "ping round trips while stalled: {} pings, max {max:?}",
        rtts.len()
    );

    gate.release();
    let created =
        a.rx.recv_within(SOON)
            .await
            .expect("create reply after release");
    assert_eq!(created.xid(), 2, "the create's reply comes first");
    assert_eq!(created.err(), 0);
    let exists = a.rx.recv_within(SOON).await.expect("exists reply");
    assert_eq!(exists.xid(), 3);
    match exists.response(OpCode::Exists) {
        oxkeeper_proto::records::Response::Stat(s) => {
            assert_eq!(s.ephemeral_owner, a.session_id, "/p/x is a's ephemeral")
        }
        other => panic!("exists: {other:?}"),
    }
    for (i, c) in flood.iter_mut().enumerate() {
        let r = loop {
            match c.rx.recv_within(SOON).await {
                Ok(f) if f.is_ping() => continue,
                Ok(f) => break f,
                Err(e) => panic!("closeSession {i}: no reply after release ({e:?})"),
            }
        };
        assert_eq!(r.xid(), 1, "closeSession {i} reply");
        assert_eq!(r.err(), ErrorCode::Ok as i32, "closeSession {i}");
        assert!(
            c.rx.closed_within(SOON).await,
            "the server closes session {i}'s socket after closeSession"
        );
    }
    // a's session is still fine.
    let r = a.call(4, &exists_req("/p/x")).await;
    assert_eq!(r.err(), 0);
}
