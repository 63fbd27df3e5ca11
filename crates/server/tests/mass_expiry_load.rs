//! Load: many sessions holding many ephemerals expire at once while a live client keeps writing and pinging.
//! The live session must survive and its latency stay far below its timeout (DESIGN.md, Sessions: mass
//! expiry is spread over time so live sessions are never starved).
//!
//! Not a unit test: run it in release, alone, and read the numbers it prints:
//! `cargo test -p oxkeeper-server --release --test mass_expiry_load -- --ignored --nocapture`
//! Sizes: `OXK_LOAD_SESSIONS` (default 10000) and `OXK_LOAD_EPHEMERALS` (default 100).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{create_req, exists_req, Client, IsolatedServer, SOON};
use oxkeeper_proto::frame::encode_request;
use oxkeeper_proto::records::{Request, Response, SetDataRequest};
use oxkeeper_proto::{CreateMode, OpCode};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const TICK_MS: u64 = 2000;
/// The session timeout every expiring session ends with, and the live client's: the minimum, 2 ticks.
const TIMEOUT_MS: i32 = 4000;
/// Long enough for the setup: sessions are first created with it, so they outlive their closed sockets.
const SETUP_TIMEOUT_MS: i32 = 600_000;
/// Connections open at once during setup (two descriptors each in this process).
const CONNECTIONS_AT_ONCE: usize = 256;
const PARENT: &str = "/load";
const LIVE: &str = "/live";
const WRITE_EVERY: Duration = Duration::from_millis(10);
const PING_EVERY_WRITES: u32 = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let max = v.last().copied().unwrap_or_default();
    println!(
        "{name}: n={} p50={:?} p99={:?} max={max:?}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
    );
    max
}

/// Latencies of the live client, split by phase.
#[derive(Default)]
struct Live {
    /// (sent at, latency) of every setData and every ping.
    writes: Vec<(Instant, Duration)>,
    pings: Vec<(Instant, Duration)>,
    /// Why the live session stopped, if it did before it was told to.
    failure: Option<String>,
}

/// Writes `LIVE` every `WRITE_EVERY` and pings every `PING_EVERY_WRITES` writes, one request at a time, until
/// `stop`; records each round trip.
async fn live_client(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Live {
    let mut c = Client::connect(addr, TIMEOUT_MS).await;
    assert_eq!(c.timeout_ms, TIMEOUT_MS);
    let mut live = Live::default();
    let mut every = tokio::time::interval(WRITE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    let mut writes_since_ping = 0;
    let limit = Duration::from_millis(2 * TIMEOUT_MS as u64);
    while !stop.load(Ordering::Acquire) {
        every.tick().await;
        n = n.wrapping_add(1);
        let xid = n as i32;
        let req = Request::SetData(SetDataRequest {
            path: LIVE.into(),
            data: Some(n.to_be_bytes().to_vec()),
            version: -1,
        });
        let sent = Instant::now();
        if let Err(e) = c.tx.send(xid, &req).await {
            live.failure = Some(format!("send setData: {e}"));
            return live;
        }
        match c.rx.recv_within(limit).await {
            Ok(f) if f.xid() == xid && f.err() == 0 => live.writes.push((sent, sent.elapsed())),
            other => {
                live.failure = Some(format!("setData {xid}: {other:?}"));
                return live;
            }
        }
        writes_since_ping += 1;
        if writes_since_ping == PING_EVERY_WRITES {
            writes_since_ping = 0;
            let sent = Instant::now();
            if let Err(e) = c.tx.ping().await {
                live.failure = Some(format!("send ping: {e}"));
                return live;
            }
            match c.rx.recv_within(limit).await {
                Ok(f) if f.is_ping() => live.pings.push((sent, sent.elapsed())),
                other => {
                    live.failure = Some(format!("ping: {other:?}"));
                    return live;
                }
            }
        }
    }
    live
}

/// The number of children of `PARENT` (one read; its Stat is O(1) however many children).
async fn children_count(c: &mut Client, xid: i32) -> i32 {
    match c
        .call(xid, &exists_req(PARENT))
        .await
        .response(OpCode::Exists)
    {
        Response::Stat(s) => s.num_children,
        other => panic!("exists {PARENT}: {other:?}"),
    }
}

#[test]
#[ignore = "load test: cargo test -p oxkeeper-server --release --test mass_expiry_load -- --ignored --nocapture"]
fn live_session_survives_a_mass_expiry_of_ephemeral_owners() {
    let sessions = env_usize("OXK_LOAD_SESSIONS", 10_000);
    let ephemerals = env_usize("OXK_LOAD_EPHEMERALS", 100);
    let server = IsolatedServer::start(|c| {
        c.tick_ms = TICK_MS;
        c.max_session_timeout_ms = Some(SETUP_TIMEOUT_MS as u64);
    });
    let addr = server.server.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(scenario(addr, sessions, ephemerals));
    rt.shutdown_background();
    drop(server);
}

/// Sets up the sessions and their ephemerals, expires them all at once and measures the live client.
async fn scenario(addr: std::net::SocketAddr, sessions: usize, ephemerals: usize) {
    let mut admin = Client::connect(addr, SETUP_TIMEOUT_MS).await;
    for (xid, path) in [(1, PARENT), (2, LIVE)] {
        let r = admin
            .call(xid, &create_req(path, CreateMode::Persistent))
            .await;
        assert_eq!(r.err(), 0, "create {path}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let live = tokio::spawn(live_client(addr, stop.clone()));

    // Setup: every session creates its ephemerals in one pipelined write, then drops its socket.
    let setup_started = Instant::now();
    let limit = Arc::new(Semaphore::new(CONNECTIONS_AT_ONCE));
    let mut tasks = JoinSet::new();
    for s in 0..sessions {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        tasks.spawn(async move {
            let mut c = Client::connect(addr, SETUP_TIMEOUT_MS).await;
            let mut frames = Vec::with_capacity(ephemerals * 64);
            for e in 0..ephemerals {
                let path = format!("{PARENT}/s{s}-{e}");
                frames.extend(encode_request(
                    e as i32 + 1,
                    &create_req(&path, CreateMode::Ephemeral),
                ));
            }
            c.tx.send_raw(&frames).await.expect("send creates");
            for _ in 0..ephemerals {
                let f = c.rx.recv_within(SOON).await.expect("create reply");
                assert_eq!(f.err(), 0, "session {s}: create {f:?}");
            }
            let id = (c.session_id, c.passwd.clone());
            c.abort();
            drop(permit);
            id
        });
    }
    let mut ids = Vec::with_capacity(sessions);
    while let Some(r) = tasks.join_next().await {
        ids.push(r.expect("a setup session failed"));
    }
    let setup = setup_started.elapsed();
    let total = i32::try_from(sessions * ephemerals).expect("node count fits");
    assert_eq!(children_count(&mut admin, 10).await, total);
    println!("setup: {sessions} sessions x {ephemerals} ephemerals in {setup:.1?}");

    // Arm: every session reconnects with the shortest timeout and drops its socket at once, so they all
    // expire together, TIMEOUT_MS after this burst.
    let arm_started = Instant::now();
    let mut tasks = JoinSet::new();
    for (id, passwd) in ids {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        tasks.spawn(async move {
            let c = Client::try_connect(addr, id, &passwd, TIMEOUT_MS)
                .await
                .expect("resume a setup session");
            assert_eq!(c.timeout_ms, TIMEOUT_MS);
            c.abort();
            drop(permit);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a reconnect failed");
    }
    let last_close = Instant::now();
    println!(
        "all {sessions} sockets closed within {:.1?} (reconnect burst)",
        last_close - arm_started
    );

    // Watch the ephemerals go.
    let mut first_gone = None;
    let mut xid = 100;
    let all_gone = loop {
        xid += 1;
        let n = children_count(&mut admin, xid).await;
        let now = Instant::now();
        if n < total && first_gone.is_none() {
            first_gone = Some(now);
        }
        if n == 0 {
            break now;
        }
        assert!(
            now - last_close < Duration::from_secs(120),
            "{n} ephemerals still there 120 s after their sessions' sockets closed"
        );
        // A poll interval, not a wait for the condition: the loop re-checks it under the deadline above.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Keep the live client going a little past the end of the expiry.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Release);
    let live = live.await.expect("live client task");

    let first = first_gone.unwrap_or(all_gone);
    println!(
        "expiry: first ephemeral gone {:.2?} after the last close, the last one {:.2?} after it \
         ({:.2?} after the first close); deleting took {:.2?}",
        first - last_close,
        all_gone - last_close,
        all_gone - arm_started,
        all_gone - first
    );
    let since = |v: &[(Instant, Duration)], from: Instant| -> Vec<Duration> {
        v.iter()
            .filter(|(at, _)| *at >= from)
            .map(|&(_, d)| d)
            .collect()
    };
    let until = |v: &[(Instant, Duration)], to: Instant| -> Vec<Duration> {
        v.iter()
            .filter(|(at, _)| *at < to)
            .map(|&(_, d)| d)
            .collect()
    };
    let expiring = first - Duration::from_millis(100);
    summary(
        "live setData during setup",
        until(&live.writes, arm_started),
    );
    summary("live ping during setup", until(&live.pings, arm_started));
    summary(
        "live setData during the expiry",
        since(&live.writes, expiring),
    );
    summary("live ping during the expiry", since(&live.pings, expiring));
    let w = summary(
        "live setData from the reconnect burst on",
        since(&live.writes, arm_started),
    );
    let p = summary(
        "live ping from the reconnect burst on",
        since(&live.pings, arm_started),
    );
    if let Some(f) = &live.failure {
        panic!("the live session did not survive: {f}");
    }
    let bound = Duration::from_millis(TIMEOUT_MS as u64 / 3);
    assert!(
        w < bound && p < bound,
        "live latency max (setData {w:?}, ping {p:?}) is not below T/3 = {bound:?}"
    );
}
