//! `expiry`: sessions that vanish without closing. Each creates its ephemerals, sends one last request
//! (its last contact), then drops its socket. A watcher with a persistent recursive watch on the root records
//! when each ephemeral is deleted; lateness = deletion seen − (last request sent + the session's timeout).
//! With `--cleanup-ephemerals N`, also: one session with N ephemerals sends closeSession, and the time until
//! the watcher sees the last NodeDeleted.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxkeeper_proto::{AddWatchMode, AddWatchRequest, CreateMode, EventType, PathWatch, Request};
use tokio::sync::{mpsc, oneshot};

use crate::args::{CommonArgs, ExpiryArgs};
use crate::error::BenchError;
use crate::report::{Figure, Report};
use crate::session::{Notification, Session};
use crate::stats::{micros, Errors, Latency};
use crate::sysstat::{server_rss_kib, CpuSnapshot};
use crate::workload::{connect_many, create, delete_paths, unique_root, PREPARE_DEPTH};

/// Beyond the timeout, how long to wait for the last ephemeral before calling it never deleted.
const EXPIRY_GRACE: Duration = Duration::from_secs(20);

pub async fn run(common: &CommonArgs, a: &ExpiryArgs) -> Result<Report, BenchError> {
    if a.sessions == 0 || a.ephemerals == 0 {
        return Err(BenchError::Usage(
            "--sessions and --ephemerals must be at least 1".into(),
        ));
    }
    let root = unique_root();
    let mut w = Session::connect(&common.server, common.session_timeout_ms).await?;
    w.call_ok(
        "create the root",
        &create(root.clone(), b"", CreateMode::Persistent),
    )
    .await?;
    let watch = Request::AddWatch(AddWatchRequest {
        path: root.clone(),
        mode: AddWatchMode::PersistentRecursive.as_i32(),
    });
    w.call_ok("addWatch (persistent recursive) on the root", &watch)
        .await?;
    let (events, stop, watcher) = spawn_watcher(w);
    let mut events = events;
    let errors = Errors::default();
    let cpu = CpuSnapshot::take(common.server_pid);
    let start = Instant::now();

    // The vanishing sessions: ephemerals, one last request, gone.
    let connected = Arc::new(AtomicU64::new(0));
    let sessions = connect_many(&common.server, a.sessions, a.timeout_ms, 64, connected).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in sessions.into_iter().enumerate() {
        let prefix = format!("{root}/s{i:05}-");
        let (e, root) = (a.ephemerals, root.clone());
        tasks.spawn(async move { vanish(s, i, &prefix, e, &root).await });
    }
    // session index → (deadline it was given: last request sent + its timeout)
    let mut deadlines: HashMap<usize, Instant> = HashMap::new();
    let mut timeouts_ms = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((i, last_sent, timeout_ms))) => {
                deadlines.insert(i, last_sent + Duration::from_millis(u64::from(timeout_ms)));
                timeouts_ms.push(timeout_ms);
            }
            Ok(Err(e)) => errors.add(&e.count_key(), 1),
            Err(_) => errors.add("task failed", 1),
        }
    }
    let expected = deadlines.len() * a.ephemerals;
    let latest = deadlines
        .values()
        .max()
        .copied()
        .unwrap_or_else(Instant::now);
    let lateness = Latency::new("lateness (per ephemeral)", start, false);
    let session_lateness = Latency::new("lateness (last per session)", start, false);
    let mut last_per_session: HashMap<usize, Instant> = HashMap::new();
    let mut early = 0u64;
    let mut earliest_us: i64 = 0;
    let mut seen = 0usize;
    let give_up = latest + EXPIRY_GRACE;
    while seen < expected {
        let n = match tokio::time::timeout_at(give_up.into(), events.recv()).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                errors.add("watcher connection lost", 1);
                break;
            }
            Err(_) => break,
        };
        if n.event.event_type != EventType::NodeDeleted.as_i32() {
            continue;
        }
        let Some(i) = session_of(&root, &n.event.path) else {
            continue;
        };
        let Some(deadline) = deadlines.get(&i) else {
            continue;
        };
        seen += 1;
        if n.at >= *deadline {
            lateness.record(n.at, n.at - *deadline);
        } else {
            early += 1;
            earliest_us = earliest_us.min(-(micros(*deadline - n.at) as i64));
        }
        let last = last_per_session.entry(i).or_insert(n.at);
        *last = (*last).max(n.at);
    }
    for (i, at) in &last_per_session {
        if let Some(d) = deadlines.get(i) {
            session_lateness.record(*at, at.saturating_duration_since(*d));
        }
    }
    if seen < expected {
        errors.add("ephemerals never deleted", (expected - seen) as u64);
    }
    if early > 0 {
        errors.add("ephemerals deleted before their session's timeout", early);
    }

    let mut figures = vec![
        Figure::new("vanished sessions", deadlines.len() as f64, ""),
        Figure::new("ephemerals deleted", seen as f64, ""),
        Figure::new(
            "negotiated timeout (min)",
            timeouts_ms.iter().min().copied().unwrap_or(0) as f64,
            "ms",
        ),
    ];
    if early > 0 {
        figures.push(Figure::new(
            "earliest deletion before the timeout",
            earliest_us as f64 / 1e3,
            "ms",
        ));
    }
    let mut latencies = vec![lateness.summary(), session_lateness.summary()];

    if a.cleanup_ephemerals > 0 {
        match cleanup(common, a.cleanup_ephemerals, &root, &mut events, &errors).await {
            Ok((close_reply, last_deleted)) => {
                latencies.push(one("cleanup: closeSession reply", close_reply));
                latencies.push(one("cleanup: last NodeDeleted", last_deleted));
                figures.push(Figure::new(
                    "cleanup ephemerals",
                    a.cleanup_ephemerals as f64,
                    "",
                ));
            }
            Err(e) => errors.add(&format!("cleanup: {}", e.count_key()), 1),
        }
    }
    let window = start.elapsed().as_secs_f64();
    let cpu = cpu.until_now();
    let _ = stop.send(());
    let mut notes = vec![
        "lateness is measured from the last request each session sent plus the timeout the server granted it"
            .to_string(),
    ];
    match watcher.await {
        Ok(Some(mut w)) => {
            let mut paths = Vec::new();
            if a.cleanup_ephemerals > 0 {
                paths.push(format!("{root}/c"));
            }
            paths.push(root.clone());
            if delete_paths(&mut w, paths).await? > 0 {
                notes.push(format!("{root} could not be deleted"));
            }
            let _ = w.close().await;
        }
        _ => notes.push(format!("the watcher was lost; {root} is left behind")),
    }
    let errors = errors.snapshot();
    Ok(Report {
        workload: "expiry".into(),
        description: format!(
            "{} sessions × {} ephemerals vanish without closing (timeout {} ms asked){}",
            a.sessions,
            a.ephemerals,
            a.timeout_ms,
            if a.cleanup_ephemerals > 0 {
                format!(
                    "; cleanup of a session with {} ephemerals",
                    a.cleanup_ephemerals
                )
            } else {
                String::new()
            }
        ),
        server: common.server.clone(),
        root: Some(root),
        window_s: window,
        rates: Vec::new(),
        latencies,
        figures,
        error_total: errors.values().sum(),
        errors,
        cpu,
        server_rss_kib: common.server_pid.and_then(server_rss_kib),
        timeline: Vec::new(),
        notes,
    })
}

/// A one-sample summary (the cleanup is measured once per run).
fn one(name: &str, d: Duration) -> crate::stats::Summary {
    let mut h = crate::stats::new_histogram(3);
    h.saturating_record(micros(d));
    crate::stats::Summary::of(name, &h)
}

/// Creates `e` ephemerals, sends one last request, drops the connection. Returns the session's index, when
/// its last request was sent, and its timeout.
async fn vanish(
    mut s: Session,
    i: usize,
    prefix: &str,
    e: usize,
    root: &str,
) -> Result<(usize, Instant, u32), BenchError> {
    let reqs = (0..e).map(|k| create(format!("{prefix}{k:06}"), b"", CreateMode::Ephemeral));
    let errs = s.pipeline(reqs, PREPARE_DEPTH).await?;
    if let Some(&code) = errs.iter().find(|&&c| c != 0) {
        return Err(BenchError::Server {
            what: "create an ephemeral".into(),
            code,
        });
    }
    let last_sent = Instant::now();
    s.call_ok(
        "the last request",
        &Request::Exists(PathWatch {
            path: root.to_string(),
            watch: false,
        }),
    )
    .await?;
    let timeout_ms = s.timeout_ms;
    s.vanish();
    Ok((i, last_sent, timeout_ms))
}

/// `{root}/s00012-000003` → 12.
fn session_of(root: &str, path: &str) -> Option<usize> {
    let name = path.strip_prefix(root)?.strip_prefix("/s")?;
    name.split_once('-')?.0.parse().ok()
}

/// Reads the watcher's notifications in a task of its own (so the server never waits on it), keeping it
/// alive with pings. Stops on the oneshot and hands the session back.
fn spawn_watcher(
    mut s: Session,
) -> (
    mpsc::UnboundedReceiver<Notification>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Option<Session>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let every = Duration::from_millis(u64::from(s.timeout_ms / 3).max(10));
    let task = tokio::spawn(async move {
        let mut next_ping = Instant::now() + every;
        // One timer for the whole life of the watcher, reset when it fires: a sleep made for each pass
        // of the loop registered and cancelled a timer per notification, which made this reader the
        // slow end of a burst (the cleanup's 10,000 NodeDeleted).
        let ping_due = tokio::time::sleep_until(next_ping.into());
        tokio::pin!(ping_due);
        loop {
            enum Ev {
                Stop,
                Ping,
                Note(Result<Notification, BenchError>),
            }
            let ev = tokio::select! {
                _ = &mut stop_rx => Ev::Stop,
                _ = &mut ping_due => Ev::Ping,
                n = s.next_notification() => Ev::Note(n),
            };
            match ev {
                Ev::Stop => return Some(s),
                Ev::Ping => {
                    if s.ping().await.is_err() {
                        return None;
                    }
                    next_ping += every;
                    ping_due.as_mut().reset(next_ping.into());
                }
                Ev::Note(Ok(n)) => {
                    if tx.send(n).is_err() {
                        return Some(s);
                    }
                }
                Ev::Note(Err(_)) => return None,
            }
        }
    });
    (rx, stop_tx, task)
}

/// One session with `n` ephemerals under `{root}/c` closes; returns (closeSession reply, last NodeDeleted
/// seen by the watcher), both from the moment closeSession was sent.
async fn cleanup(
    common: &CommonArgs,
    n: usize,
    root: &str,
    events: &mut mpsc::UnboundedReceiver<Notification>,
    errors: &Errors,
) -> Result<(Duration, Duration), BenchError> {
    let parent = format!("{root}/c");
    let mut s = Session::connect(&common.server, common.session_timeout_ms).await?;
    s.call_ok(
        "create the cleanup parent",
        &create(parent.clone(), b"", CreateMode::Persistent),
    )
    .await?;
    let reqs = (0..n).map(|k| create(format!("{parent}/e{k:07}"), b"", CreateMode::Ephemeral));
    let errs = s.pipeline(reqs, PREPARE_DEPTH).await?;
    if let Some(&code) = errs.iter().find(|&&c| c != 0) {
        return Err(BenchError::Server {
            what: "create an ephemeral".into(),
            code,
        });
    }
    let prefix = format!("{parent}/");
    // The creations' notifications are not what is measured: wait until the watcher has had every one,
    // so that the server is not still sending them (and this process reading them) when the close goes.
    await_events(
        events,
        errors,
        EventType::NodeCreated,
        &prefix,
        n,
        "NodeCreated never seen",
    )
    .await?;
    while events.try_recv().is_ok() {}
    let t0 = Instant::now();
    let replied = s.close_timed().await?;
    let last = await_events(
        events,
        errors,
        EventType::NodeDeleted,
        &prefix,
        n,
        "ephemerals never deleted",
    )
    .await?
    .unwrap_or(t0);
    Ok((replied - t0, last - t0))
}

/// Waits until the watcher has seen `n` events of `kind` under `prefix` (others are skipped); returns when
/// the last one arrived. The missing ones are counted as `cleanup: {missing}` if they do not all come.
async fn await_events(
    events: &mut mpsc::UnboundedReceiver<Notification>,
    errors: &Errors,
    kind: EventType,
    prefix: &str,
    n: usize,
    missing: &str,
) -> Result<Option<Instant>, BenchError> {
    let (mut seen, mut last) = (0, None);
    let give_up = Instant::now() + EXPIRY_GRACE + Duration::from_secs(n as u64 / 1000);
    while seen < n {
        match tokio::time::timeout_at(give_up.into(), events.recv()).await {
            Ok(Some(note)) => {
                if note.event.event_type == kind.as_i32() && note.event.path.starts_with(prefix) {
                    seen += 1;
                    last = Some(note.at);
                }
            }
            Ok(None) | Err(_) => {
                errors.add(&format!("cleanup: {missing}"), (n - seen) as u64);
                return Err(BenchError::Timeout {
                    what: format!("{seen} of {n} {kind:?}"),
                    seconds: EXPIRY_GRACE.as_secs_f64(),
                });
            }
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_paths_name_their_session() {
        assert_eq!(session_of("/r", "/r/s00012-000003"), Some(12));
        assert_eq!(session_of("/r", "/r/c/e0000001"), None);
        assert_eq!(session_of("/r", "/other/s00012-000003"), None);
    }
}
