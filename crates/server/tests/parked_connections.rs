//! An idle connection has no task: its reader's state is parked in the connection's record and the
//! socket's readiness (or a cancel by the server) starts a task for it again (connection.rs, `park`).
//! One whose client only pings is cold besides: its socket leaves the runtime's reactor for the server's
//! own epoll set (cold.rs). These tests hold the server to that: idle connections add no tasks and go
//! cold, and a parked connection still answers pings and requests, takes a burst of events larger than
//! its socket's buffers, is closed by the server when its session expires, notices its client going
//! away, and gives its socket back (a parked connection that kept itself alive would leak it).

mod common;

use std::time::Duration;

use common::{create_req, eventually, Client, RecvError, TestServer, SOON};
use oxkeeper_proto::records::{PathWatch, Request};
use oxkeeper_proto::{CreateMode, OpCode};

const CLIENTS: usize = 100;

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Open file descriptors of this process (clients' and the server's sockets alike).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

async fn ping(c: &mut Client) {
    c.tx.ping().await.expect("send a ping");
    match c.rx.recv_within(SOON).await {
        Ok(f) if f.is_ping() => {}
        other => panic!("expected a ping reply, got {other:?}"),
    }
}

/// Pings `clients` until `n` connections of `server` are cold. A connection goes cold when a run of its
/// reader read pings only. A ping sent right after the replies to a burst of requests can still be read in
/// the run that read the burst (its reader had queued the last reply but not yet found the socket empty,
/// as on a loaded machine): the connection then parks warm, and the next ping, alone in its run, makes it
/// cold.
async fn ping_until_cold(server: &TestServer, clients: &mut [&mut Client], n: usize, what: &str) {
    let until = tokio::time::Instant::now() + SOON;
    loop {
        for c in clients.iter_mut() {
            ping(c).await;
        }
        let settled = tokio::time::Instant::now() + Duration::from_millis(200);
        while tokio::time::Instant::now() < settled {
            if server.shared.cold_connections() == n {
                return;
            }
            // A poll interval: the loop re-checks the condition, under the deadlines.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {SOON:?} waiting for: {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_hold_no_task_yet_answer_and_close() {
    let server = TestServer::start(|_| {}).await;
    // A first connection makes the server's one-off tasks (flushers, timers) exist.
    let mut warm = Client::connect(server.addr, 30_000).await;
    ping(&mut warm).await;
    let fds_before = open_fds();
    let tasks_before = eventually(SOON, "the task count settles", || async {
        let a = alive_tasks();
        tokio::time::sleep(Duration::from_millis(50)).await;
        (alive_tasks() == a).then_some(a)
    })
    .await;

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = Client::connect(server.addr, 30_000).await;
        ping(&mut c).await;
        clients.push(c);
    }
    // A task per connection would be 100 more.
    eventually(SOON, "idle connections park (no task each)", || async {
        (alive_tasks() <= tasks_before + 5).then_some(())
    })
    .await;
    // They only pinged: every one is cold (and the first connection too).
    eventually(SOON, "pinging connections go cold", || async {
        (server.shared.cold_connections() == CLIENTS + 1).then_some(())
    })
    .await;

    // Parked connections answer pings and requests, again and again.
    for round in 0..3 {
        for (k, c) in clients.iter_mut().enumerate() {
            ping(c).await;
            let path = format!("/parked-{round}-{k}");
            let reply = c.call(1, &create_req(&path, CreateMode::Persistent)).await;
            assert_eq!(reply.err(), 0, "create {path}");
            match reply.response(OpCode::Create) {
                oxkeeper_proto::records::Response::Create { path: created } => {
                    assert_eq!(created, path)
                }
                other => panic!("{other:?}"),
            }
        }
        eventually(SOON, "they park again", || async {
            (alive_tasks() <= tasks_before + 5).then_some(())
        })
        .await;
    }
    // A connection that ran a request stays warm until it only pings again.
    assert!(
        server.shared.cold_connections() <= 1,
        "busy connections went cold"
    );
    for c in clients.iter_mut() {
        ping(c).await;
    }
    eventually(SOON, "pinging connections go cold again", || async {
        (server.shared.cold_connections() == CLIENTS + 1).then_some(())
    })
    .await;

    // Half the clients go away (end of stream while parked): the server notices and closes their sockets.
    let gone: Vec<Client> = clients.drain(..CLIENTS / 2).collect();
    for c in gone {
        drop(c);
    }
    eventually(
        SOON,
        "connections of departed clients are closed",
        || async { (server.shared.stats.alive_connections() == CLIENTS / 2 + 1).then_some(()) },
    )
    .await;

    // The server closes the rest while they are parked (closeSession from another connection is not a
    // thing; a session's expiry is: those sessions are 30 s, so their closes come through a closeSession
    // of their own, which is the server closing its side after the reply).
    for c in clients.iter_mut() {
        c.tx.send(2, &Request::CloseSession)
            .await
            .expect("send closeSession");
    }
    for c in clients.iter_mut() {
        assert!(c.rx.closed_within(SOON).await, "closed after closeSession");
    }
    drop(clients);
    eventually(SOON, "every socket is given back", || async {
        (open_fds() <= fds_before).then_some(())
    })
    .await;
    ping(&mut warm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_closed_when_its_session_expires() {
    let server = TestServer::start(|c| {
        c.tick_ms = 100;
        c.min_session_timeout_ms = Some(400);
    })
    .await;
    let fds_before = open_fds();
    let mut quiet = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect(server.addr, 400).await;
        ping(&mut c).await;
        quiet.push(c);
    }
    // Sessions of 400 ms: the connections must go cold before they expire for the test to be about cold
    // connections; the expiry runs either way.
    let cold = server.shared.cold_connections();
    // They never ping again: each session expires and the server closes its parked connection.
    for c in quiet.iter_mut() {
        match c.rx.recv_within(SOON).await {
            Err(RecvError::Closed) => {}
            Ok(f) => assert!(c.rx.closed_within(SOON).await, "closed after {f:?}"),
            Err(e) => panic!("the expired session's connection stays open: {e:?}"),
        }
    }
    drop(quiet);
    eventually(SOON, "every socket is given back", || async {
        (open_fds() <= fds_before).then_some(())
    })
    .await;
    assert!(
        cold > 0,
        "no connection went cold before its session expired"
    );
    assert_eq!(
        server.shared.cold_connections(),
        0,
        "a closed connection left in the cold set"
    );
}

/// A cold connection whose client has stopped reading gets more events than its socket's buffers take:
/// the server's write would block, so the connection warms to wait for the client, and once the client
/// reads, every event arrives, in order; after a ping it is cold again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_connection_warms_for_a_burst_its_socket_cannot_take() {
    // ~9 MB of events: more than the server's send buffer takes (on loopback the kernel sizes it from the
    // 64 KiB segments: megabytes) on top of the client's small receive window.
    const WATCHES: usize = 3_000;
    let server = TestServer::start(|_| {}).await;
    let mut watcher = Client::connect_with_receive_buffer(server.addr, 30_000, 4096).await;
    let long_name = "x".repeat(3000);
    let path = |i: usize| format!("/burst-{i}-{long_name}");
    for i in 0..WATCHES {
        let exists = Request::Exists(PathWatch {
            path: path(i),
            watch: true,
        });
        watcher
            .tx
            .send(i as i32 + 1, &exists)
            .await
            .expect("send exists");
    }
    for i in 0..WATCHES {
        let f = watcher.rx.recv_within(SOON).await.expect("an exists reply");
        // NONODE: a watch for its creation is set.
        assert_eq!((f.xid(), f.err()), (i as i32 + 1, -101), "exists {i}");
    }
    ping_until_cold(
        &server,
        &mut [&mut watcher],
        1,
        "the watcher's connection goes cold",
    )
    .await;

    // The watcher reads nothing while every node is created.
    let mut writer = Client::connect(server.addr, 30_000).await;
    for i in 0..WATCHES {
        let create = create_req(&path(i), CreateMode::Persistent);
        writer
            .tx
            .send(i as i32 + 1, &create)
            .await
            .expect("send create");
    }
    common::ok_replies(&mut writer, WATCHES, "create").await;
    eventually(
        SOON,
        "the blocked write warms the watcher's connection",
        || async { (server.shared.cold_connections() == 0).then_some(()) },
    )
    .await;

    for i in 0..WATCHES {
        match watcher.rx.recv_within(SOON).await {
            Ok(common::Incoming::Notification(ev)) => {
                assert_eq!(
                    (ev.path.as_str(), ev.event_type),
                    (path(i).as_str(), 1),
                    "event {i}"
                )
            }
            other => panic!("event {i}: expected a notification, got {other:?}"),
        }
    }
    ping_until_cold(
        &server,
        &mut [&mut watcher, &mut writer],
        2,
        "both connections go cold",
    )
    .await;
}
