//! Stress: ephemeral creates racing the end of their session — an explicit closeSession pipelined behind them
//! on the same connection, a closeSession sent from a second connection that took the session over, and
//! expiry in the middle of a stream of creates. However the races fall, no node may be left owned by a dead
//! session (DESIGN.md, Sessions: "An ephemeral create checks at apply time that its session is live").

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    create_req, exists_req, get_children_req, Client, Incoming, RecvError, TestServer, SOON,
};
use oxkeeper_proto::frame::encode_request;
use oxkeeper_proto::records::{Request, Response};
use oxkeeper_proto::{CreateMode, ErrorCode, OpCode};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const ITERATIONS: usize = 6000;
/// Iterations running at once (each holds one or two connections).
const CONCURRENCY: usize = 100;
const TICK_MS: u64 = 20;
/// The smallest timeout the server grants at tickTime 20: 2 ticks.
const SHORT_TIMEOUT_MS: i32 = 40;
/// For sessions that must not expire during the test.
const LONG_TIMEOUT_MS: i32 = 30_000;
const PARENT: &str = "/race";
const CLOSE_XID: i32 = 1_000_000;

/// Sessions known to be gone: their closeSession reply arrived, or the server closed their connection on
/// expiry. Anything a read finds afterwards must not be owned by them.
type Dead = Arc<Mutex<HashSet<i64>>>;

#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    /// Creates answered with success.
    created: usize,
    /// Creates answered with SessionExpired (-112) or SessionMoved (-118).
    refused: usize,
    /// Creates never answered: dropped because their session was closing, or their connection closed.
    dropped: usize,
}

impl Outcome {
    fn raced(&self) -> bool {
        self.created > 0 && self.refused + self.dropped > 0
    }
    fn add(&mut self, o: &Outcome) {
        self.created += o.created;
        self.refused += o.refused;
        self.dropped += o.dropped;
    }
}

fn node(iteration: usize, k: usize) -> String {
    format!("{PARENT}/i{iteration}-{k}")
}

fn dead_add(dead: &Dead, session: i64) {
    dead.lock().expect("dead set").insert(session);
}

/// Tallies one create reply into `o`; panics on anything but success or a session error.
fn tally_create(o: &mut Outcome, f: &Incoming, what: &str) {
    match f.err() {
        0 => o.created += 1,
        e if e == ErrorCode::SessionExpired as i32 || e == ErrorCode::SessionMoved as i32 => {
            o.refused += 1
        }
        e => panic!("{what}: create failed with {e}"),
    }
}

/// Creates, closeSession and more creates, all in one write: creates before the close succeed, the close
/// succeeds, creates after it are never applied.
async fn pipelined_close(addr: SocketAddr, iteration: usize, dead: Dead) -> Outcome {
    let (before, after) = {
        let mut rng = rand::thread_rng();
        (rng.gen_range(1..=8), rng.gen_range(1..=8))
    };
    let mut c = Client::connect(addr, LONG_TIMEOUT_MS).await;
    let mut frames = Vec::new();
    for k in 0..before + after {
        if k == before {
            frames.extend(encode_request(CLOSE_XID, &Request::CloseSession));
        }
        frames.extend(encode_request(
            k as i32 + 1,
            &create_req(&node(iteration, k), CreateMode::Ephemeral),
        ));
    }
    c.tx.send_raw(&frames).await.expect("send the pipeline");
    let what = format!("pipelined iteration {iteration}");
    let mut o = Outcome::default();
    let mut answered = 0;
    let mut closed = false;
    loop {
        match c.rx.recv_within(SOON).await {
            Ok(f) if f.xid() == CLOSE_XID => {
                assert_eq!(f.err(), 0, "{what}: closeSession");
                dead_add(&dead, c.session_id);
                closed = true;
            }
            Ok(f) => {
                let k = (f.xid() - 1) as usize;
                assert!(k < before + after, "{what}: unexpected {f:?}");
                if closed {
                    assert_ne!(f.err(), 0, "{what}: a create after closeSession succeeded");
                } else {
                    assert!(
                        k < before,
                        "{what}: create {k}, sent after the close, answered before it"
                    );
                }
                tally_create(&mut o, &f, &what);
                answered += 1;
            }
            Err(RecvError::Closed) => break,
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
    assert!(closed, "{what}: no closeSession reply");
    assert_eq!(
        o.created, before,
        "{what}: every create before the close succeeds"
    );
    o.dropped = before + after - answered;
    o
}

/// A session streams creates on one connection while a second connection takes the session over and closes
/// it. The first connection's creates succeed, fail (SessionMoved, SessionExpired) or are dropped. The
/// stream goes on until the first connection closes (up to a cap far above what one takeover lets through),
/// and the takeover starts after the first create is answered: it lands mid-stream however fast either is.
async fn close_from_elsewhere(addr: SocketAddr, iteration: usize, dead: Dead) -> Outcome {
    let what = format!("takeover iteration {iteration}");
    let c = Client::connect(addr, LONG_TIMEOUT_MS).await;
    let (session, passwd) = (c.session_id, c.passwd.clone());
    let (mut tx, mut rx) = (c.tx, c.rx);
    let total = 1000usize;
    let ended = Arc::new(AtomicBool::new(false));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn({
        let ended = ended.clone();
        async move {
            let mut sent = 0;
            for k in 0..total {
                let req = create_req(&node(iteration, k), CreateMode::Ephemeral);
                if ended.load(Ordering::Acquire) || tx.send(k as i32 + 1, &req).await.is_err() {
                    break;
                }
                sent += 1;
                if k % 4 == 3 {
                    tokio::task::yield_now().await;
                }
            }
            (tx, sent)
        }
    });
    let reader = tokio::spawn({
        let what = what.clone();
        let ended = ended.clone();
        async move {
            let mut o = Outcome::default();
            let mut answered = 0;
            let mut first = Some(first_tx);
            loop {
                match rx.recv_within(SOON).await {
                    Ok(f) => {
                        tally_create(&mut o, &f, &what);
                        answered += 1;
                        if let Some(first) = first.take() {
                            let _ = first.send(());
                        }
                    }
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("{what}: first connection: {e:?}"),
                }
            }
            ended.store(true, Ordering::Release);
            (o, answered, rx)
        }
    });
    // Let a few creates through first, so the takeover lands mid-stream.
    let _ = first_rx.await;
    let delay_us = rand::thread_rng().gen_range(0..1000);
    tokio::time::sleep(Duration::from_micros(delay_us)).await;
    let mut c2 = Client::try_connect(addr, session, &passwd, LONG_TIMEOUT_MS)
        .await
        .expect("take the session over");
    let r = c2.call(CLOSE_XID, &Request::CloseSession).await;
    assert_eq!(r.err(), 0, "{what}: closeSession");
    dead_add(&dead, session);
    let (mut o, answered, rx) = reader.await.expect("reader task");
    let (tx, sent) = writer.await.expect("writer task");
    common::abort(tx, rx);
    o.dropped = sent - answered;
    o
}

/// A session with the shortest timeout streams creates with pauses around its timeout, never pinging and
/// never waiting for replies, until it expires: creates sent after the expiry was decided are never applied.
async fn expiry_mid_stream(addr: SocketAddr, iteration: usize, dead: Dead) -> Outcome {
    let what = format!("expiry iteration {iteration}");
    let c = Client::connect(addr, SHORT_TIMEOUT_MS).await;
    assert_eq!(c.timeout_ms, SHORT_TIMEOUT_MS, "{what}: negotiated timeout");
    let session = c.session_id;
    let (mut tx, mut rx) = (c.tx, c.rx);
    let ended = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let ended = ended.clone();
        async move {
            let mut sent = 0usize;
            for k in 0.. {
                let req = create_req(&node(iteration, k), CreateMode::Ephemeral);
                if tx.send(k as i32 + 1, &req).await.is_err() {
                    break;
                }
                sent += 1;
                if ended.load(Ordering::Acquire) {
                    break; // one create sent after the end was seen: it must never apply
                }
                // The stimulus of the race, not a wait for a condition: pauses around the session timeout.
                let gap_ms = rand::thread_rng().gen_range(0..(2 * SHORT_TIMEOUT_MS as u64));
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
            }
            (tx, sent)
        }
    });
    let mut o = Outcome::default();
    let mut answered = 0;
    let started = Instant::now();
    loop {
        match rx.recv_within(SOON).await {
            Ok(f) => {
                tally_create(&mut o, &f, &what);
                answered += 1;
            }
            // Only expiry closes this connection: the session's close was applied.
            Err(RecvError::Closed) => break,
            Err(e) => panic!("{what}: {e:?}"),
        }
        assert!(
            started.elapsed() < SOON,
            "{what}: the session never expired"
        );
    }
    dead_add(&dead, session);
    ended.store(true, Ordering::Release);
    let (tx, sent) = writer.await.expect("writer task");
    common::abort(tx, rx);
    o.dropped = sent - answered;
    o
}

/// Reads the children of PARENT and the owner of each: none may belong to a session known dead before the
/// read began. Returns how many nodes it checked.
async fn check_owners(c: &mut Client, xid: &mut i32, dead: &Dead) -> usize {
    let known_dead: HashSet<i64> = dead.lock().expect("dead set").clone();
    *xid += 1;
    let children = match c
        .call(*xid, &get_children_req(PARENT))
        .await
        .response(OpCode::GetChildren)
    {
        Response::GetChildren { children } => children,
        other => panic!("getChildren: {other:?}"),
    };
    let mut checked = 0;
    for name in children.iter().take(64) {
        *xid += 1;
        let f = c.call(*xid, &exists_req(&format!("{PARENT}/{name}"))).await;
        if f.err() == ErrorCode::NoNode as i32 {
            continue; // deleted since the listing
        }
        let Response::Stat(stat) = f.response(OpCode::Exists) else {
            panic!("exists: {f:?}");
        };
        assert!(
            !known_dead.contains(&stat.ephemeral_owner),
            "{PARENT}/{name} is owned by 0x{:x}, a session that had already ended",
            stat.ephemeral_owner
        );
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ephemeral_outlives_its_session_when_creates_race_close_and_expiry() {
    let server = TestServer::start(|c| {
        c.tick_ms = TICK_MS;
        c.max_session_timeout_ms = Some(LONG_TIMEOUT_MS as u64);
    })
    .await;
    let addr = server.addr;
    let mut admin = Client::connect(addr, LONG_TIMEOUT_MS).await;
    assert_eq!(
        admin
            .call(1, &create_req(PARENT, CreateMode::Persistent))
            .await
            .err(),
        0
    );
    let dead: Dead = Arc::default();
    let started = Instant::now();

    // Mid-way checks, while the races run.
    let stop = Arc::new(tokio::sync::Notify::new());
    let checker = tokio::spawn({
        let dead = dead.clone();
        let stop = stop.clone();
        async move {
            let mut c = Client::connect(addr, LONG_TIMEOUT_MS).await;
            let mut xid = 0;
            let mut checked = 0;
            let mut rounds = 0;
            loop {
                let stopped = stop.notified();
                checked += check_owners(&mut c, &mut xid, &dead).await;
                rounds += 1;
                if tokio::time::timeout(Duration::from_millis(20), stopped)
                    .await
                    .is_ok()
                {
                    return (rounds, checked);
                }
            }
        }
    });

    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for i in 0..ITERATIONS {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let dead = dead.clone();
        tasks.spawn(async move {
            let o = match i % 3 {
                0 => pipelined_close(addr, i, dead).await,
                1 => close_from_elsewhere(addr, i, dead).await,
                _ => expiry_mid_stream(addr, i, dead).await,
            };
            drop(permit);
            (i % 3, o)
        });
    }
    let mut totals = [Outcome::default(); 3];
    let mut raced = [0usize; 3];
    while let Some(r) = tasks.join_next().await {
        let (kind, o) = r.expect("an iteration panicked");
        totals[kind].add(&o);
        raced[kind] += usize::from(o.raced());
    }
    let races_s = started.elapsed().as_secs_f64();
    stop.notify_one();
    let (rounds, checked) = checker.await.expect("checker task");

    // Every racing session has ended: nothing may be left under the parent.
    let deadline = Instant::now() + SOON;
    for xid in 100.. {
        let f = admin.call(xid, &get_children_req(PARENT)).await;
        let Response::GetChildren { children } = f.response(OpCode::GetChildren) else {
            panic!("getChildren: {f:?}");
        };
        if children.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} nodes outlived their sessions, e.g. {:?}",
            children.len(),
            &children[..children.len().min(5)]
        );
        // A poll interval under the deadline above, not a wait for the condition.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let names = [
        "pipelined close",
        "close from a second connection",
        "expiry mid-stream",
    ];
    for kind in 0..3 {
        let t = totals[kind];
        println!(
            "{}: {} iterations raced; creates ok {}, refused {}, dropped {}",
            names[kind], raced[kind], t.created, t.refused, t.dropped
        );
    }
    println!(
        "{ITERATIONS} iterations in {races_s:.1} s; mid-way owner checks: {rounds} rounds, {checked} nodes"
    );
    // Not vacuous: every pipelined iteration and most of the others really raced.
    let per_kind = ITERATIONS / 3;
    assert_eq!(
        raced[0], per_kind,
        "every pipelined close raced its creates"
    );
    assert!(
        raced[1] >= per_kind / 2,
        "takeover iterations that raced: {} of {per_kind}",
        raced[1]
    );
    assert!(
        raced[2] >= per_kind / 2,
        "expiry iterations that raced: {} of {per_kind}",
        raced[2]
    );
    assert!(checked > 0, "the mid-way check never saw a live ephemeral");
}

/// Sessions expire while their creates sit in the stalled log, proposed but not yet durable: once the log
/// moves, the creates apply (they were proposed first) and the expiry deletes what they made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemerals_still_in_the_log_when_their_session_expires_are_deleted() {
    const SESSIONS: usize = 20;
    const CREATES: usize = 5;
    let disk = common::GateDisk::default();
    let server = TestServer::start_on(disk.clone(), |c| {
        c.tick_ms = TICK_MS;
        c.max_session_timeout_ms = Some(LONG_TIMEOUT_MS as u64);
    })
    .await;
    let mut admin = Client::connect(server.addr, LONG_TIMEOUT_MS).await;
    assert_eq!(
        admin
            .call(1, &create_req(PARENT, CreateMode::Persistent))
            .await
            .err(),
        0
    );
    let mut clients = Vec::new();
    for _ in 0..SESSIONS {
        clients.push(Client::connect(server.addr, SHORT_TIMEOUT_MS).await);
    }
    // The creates must wait on the log while the executor's expiry passes go on: on a quick disk the apply
    // thread would write them itself, and no pass would run until that write ended.
    disk.leave_next_write_to_the_logs_thread(&mut admin, "/slow")
        .await;
    let gate = disk.stall();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut frames = Vec::new();
        for k in 0..CREATES {
            let req = create_req(&node(i, k), CreateMode::Ephemeral);
            frames.extend(encode_request(k as i32 + 1, &req));
        }
        c.tx.send_raw(&frames).await.expect("send creates");
    }
    // Every session's expiry is decided while its creates are still waiting for the disk.
    let ids: Vec<i64> = clients.iter().map(|c| c.session_id).collect();
    common::eventually(SOON, "every session is expiring", || {
        let shared = server.shared.clone();
        let ids = ids.clone();
        async move {
            let t = shared.tracker.lock().expect("tracker");
            ids.iter()
                .all(|&id| t.is_closing(id) || !t.contains(id))
                .then_some(())
        }
    })
    .await;
    assert!(disk.blocked_syncs() > 0, "the log is not stalled");
    gate.release();
    let mut created = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        loop {
            match c.rx.recv_within(SOON).await {
                Ok(f) => {
                    assert_eq!(
                        f.err(),
                        0,
                        "session {i}: a create proposed before the expiry applies"
                    );
                    created += 1;
                }
                Err(RecvError::Closed) => break,
                Err(e) => panic!("session {i}: {e:?}"),
            }
        }
    }
    let f = admin.call(2, &get_children_req(PARENT)).await;
    assert_eq!(
        f.response(OpCode::GetChildren),
        Response::GetChildren { children: vec![] },
        "the expired sessions' ephemerals are gone"
    );
    println!("{created} creates applied in the same stall as their session's expiry, all deleted");
}
