//! Reconnect attempts of one session on one member are decided in accept order: an attempt accepted before
//! the one that now holds the session (a client gave it up and opened another) cannot take the session back,
//! however late its ConnectRequest is read. Connections are read in parallel, so after a stall the abandoned
//! attempts of a burst can reach the executor after the live one.

mod common;

use common::{exists_req, Client, GateDisk, TestServer, SOON};
use oxkeeper_proto::ErrorCode;
use tokio::net::TcpStream;

const TIMEOUT_MS: i32 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_attempt_read_late_does_not_take_the_session_back() {
    let server = TestServer::start(|_| {}).await;
    let mut owner = Client::connect(server.addr, TIMEOUT_MS).await;
    let (sid, pw) = (owner.session_id, owner.passwd.clone());
    // Accepted first (connect returns once the kernel completed the handshake, so it is ahead in the
    // backlog), its ConnectRequest sent last.
    let older = TcpStream::connect(server.addr).await.expect("connect");
    let mut newer = Client::try_connect(server.addr, sid, &pw, TIMEOUT_MS)
        .await
        .expect("the newer attempt resumes the session");
    assert_eq!(newer.session_id, sid);
    assert!(
        owner.rx.closed_within(SOON).await,
        "the session's previous connection is closed when it moves"
    );

    let late = Client::handshake(older, sid, &pw, TIMEOUT_MS).await;
    assert!(
        late.is_err(),
        "the older attempt is closed without a session, not given the session back"
    );
    // The newer attempt still owns the session: its requests run (a takeover would close it, or answer
    // SessionMoved).
    let reply = newer.call(1, &exists_req("/")).await;
    assert_eq!(reply.err(), ErrorCode::Ok as i32);
    let reply = newer.call(2, &exists_req("/zookeeper")).await;
    assert_eq!(reply.err(), ErrorCode::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_attempt_takes_the_session_over() {
    let server = TestServer::start(|_| {}).await;
    let mut first = Client::connect(server.addr, TIMEOUT_MS).await;
    let (sid, pw) = (first.session_id, first.passwd.clone());
    let mut second = Client::try_connect(server.addr, sid, &pw, TIMEOUT_MS)
        .await
        .expect("resume");
    assert!(first.rx.closed_within(SOON).await);
    // Then a third, accepted after the second: the usual reconnect, it wins.
    let mut third = Client::try_connect(server.addr, sid, &pw, TIMEOUT_MS)
        .await
        .expect("resume again");
    assert!(second.rx.closed_within(SOON).await);
    let reply = third.call(1, &exists_req("/")).await;
    assert_eq!(reply.err(), ErrorCode::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_attempt_read_while_the_newer_one_is_in_the_log_is_closed() {
    let disk = GateDisk::default();
    let server = TestServer::start_on(disk.clone(), |_| {}).await;
    let mut owner = Client::connect(server.addr, TIMEOUT_MS).await;
    let (sid, pw) = (owner.session_id, owner.passwd.clone());
    let older = TcpStream::connect(server.addr).await.expect("connect");
    let newer = TcpStream::connect(server.addr).await.expect("connect");
    // The newer attempt's Revalidate must wait on the log while the executor goes on: on a quick disk the
    // apply thread would write it itself, and the older attempt would wait for that write's end.
    disk.leave_next_write_to_the_logs_thread(&mut owner, "/slow")
        .await;
    let gate = disk.stall();
    let pw2 = pw.clone();
    let newer = tokio::spawn(async move { Client::handshake(newer, sid, &pw2, TIMEOUT_MS).await });
    // The newer attempt's Revalidate has reached the log and waits there.
    disk.sync_blocked().await;
    // The older one is refused at once, with the log still held: it does not queue a Revalidate of its own
    // behind the newer one (which, applied after it, would take the session back).
    let late = Client::handshake(older, sid, &pw, TIMEOUT_MS).await;
    match late {
        Err(e) => assert_ne!(
            e.kind(),
            std::io::ErrorKind::TimedOut,
            "the older attempt waited on the log instead of being closed"
        ),
        Ok(_) => panic!("the older attempt got the session"),
    }
    gate.release();
    let mut newer = newer
        .await
        .expect("the handshake task")
        .expect("the newer attempt resumes the session");
    assert!(owner.rx.closed_within(SOON).await);
    let reply = newer.call(1, &exists_req("/")).await;
    assert_eq!(reply.err(), ErrorCode::Ok as i32);
}
