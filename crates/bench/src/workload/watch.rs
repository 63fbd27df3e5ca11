//! `watch`: notification fan-out. W sessions hold a data watch (exists with watch set) on one node; each
//! round, one setData, and the time from sending it to each watcher's NodeDataChanged. The next round starts
//! once every watcher was notified and has set its watch again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxkeeper_proto::{CreateMode, EventType, PathWatch, Request, SetDataRequest};
use tokio::sync::{mpsc, watch};

use crate::args::{CommonArgs, WatchArgs};
use crate::error::BenchError;
use crate::progress::{Goal, Progress};
use crate::report::{Figure, Rate, Report};
use crate::session::{Session, CONTROL_TIMEOUT};
use crate::stats::{Errors, Latency};
use crate::sysstat::{server_rss_kib, CpuSnapshot};
use crate::workload::{close_all, connect_many, create, delete_paths, hold, unique_root};

enum Msg {
    /// The watcher's watch is set (its exists reply arrived).
    Armed,
    /// The watcher was notified at this instant.
    Fired(Instant),
    Failed(BenchError),
}

pub async fn run(common: &CommonArgs, a: &WatchArgs) -> Result<Report, BenchError> {
    if a.watchers == 0 {
        return Err(BenchError::Usage("--watchers must be at least 1".into()));
    }
    let root = unique_root();
    let node = format!("{root}/w");
    let data = vec![b'x'; a.value_size];
    let mut writer = Session::connect(&common.server, common.session_timeout_ms).await?;
    writer
        .call_ok(
            "create the root",
            &create(root.clone(), b"", CreateMode::Persistent),
        )
        .await?;
    writer
        .call_ok(
            "create the node",
            &create(node.clone(), &data, CreateMode::Persistent),
        )
        .await?;
    let connected = Arc::new(AtomicU64::new(0));
    let watchers = connect_many(
        &common.server,
        a.watchers,
        common.session_timeout_ms,
        64,
        connected,
    )
    .await?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for s in watchers {
        let (tx, stop, node) = (tx.clone(), stop_rx.clone(), node.clone());
        tasks.spawn(watcher(s, node, tx, stop));
    }
    drop(tx);
    let w = a.watchers;
    let errors = Errors::default();
    wait_for(&mut rx, w, 0, &errors).await?;

    let cpu = CpuSnapshot::take(common.server_pid);
    let start = Instant::now();
    let every = Latency::new("every arrival", start, false);
    let last = Latency::new("last arrival per write", start, true);
    let write = Latency::new("setData reply", start, false);
    let rounds = Arc::new(AtomicU64::new(0));
    let goal = match a.duration {
        Some(d) => Goal::Time(d),
        None => Goal::Count(a.writes),
    };
    let progress = Progress::start(common.quiet, "watch", goal, rounds.clone());
    let set = Request::SetData(SetDataRequest {
        path: node.clone(),
        data: Some(data),
        version: -1,
    });
    let deadline = a.duration.map(|d| start + d);
    let mut fatal = None;
    loop {
        let done = rounds.load(Ordering::Relaxed);
        if deadline.map_or(done >= a.writes, |d| Instant::now() >= d) {
            break;
        }
        let t0 = Instant::now();
        let (h, _) = match writer.call(&set).await {
            Ok(r) => r,
            Err(e) => {
                fatal = Some(e);
                break;
            }
        };
        let replied = Instant::now();
        write.record(replied, replied - t0);
        if h.err != 0 {
            errors.add(&crate::error::error_name(h.err), 1);
            continue;
        }
        match wait_for(&mut rx, w, w, &errors).await {
            Ok(arrivals) => {
                let now = Instant::now();
                for at in &arrivals {
                    every.record(now, at.saturating_duration_since(t0));
                }
                if let Some(max) = arrivals.iter().max() {
                    last.record(now, max.saturating_duration_since(t0));
                }
            }
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    let window = start.elapsed().as_secs_f64();
    let cpu = cpu.until_now();
    progress.finish();
    if let Some(e) = &fatal {
        errors.add(&e.count_key(), 1);
    }
    let _ = stop_tx.send(true);
    let alive = hold(&mut writer, async {
        let mut alive = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(Some(s)) = r {
                alive.push(s);
            }
        }
        alive
    })
    .await;
    let mut notes = Vec::new();
    let failed = close_all(alive).await;
    if failed > 0 {
        notes.push(format!("{failed} watcher sessions failed to close"));
    }
    let failed = delete_paths(&mut writer, vec![node, root.clone()]).await?;
    if failed > 0 {
        notes.push(format!("{failed} nodes could not be deleted under {root}"));
    }
    let _ = writer.close().await;
    let writes = rounds.load(Ordering::Relaxed);
    let errors = errors.snapshot();
    Ok(Report {
        workload: "watch".into(),
        description: format!(
            "one setData, {w} watchers (data watch set again after each notification)"
        ),
        server: common.server.clone(),
        root: Some(root),
        window_s: window,
        rates: vec![
            Rate::new("writes", writes, window),
            Rate::new("notifications", every.summary().count, window),
        ],
        latencies: vec![last.summary(), every.summary(), write.summary()],
        figures: vec![Figure::new("watchers", w as f64, "")],
        error_total: errors.values().sum(),
        errors,
        cpu,
        server_rss_kib: common.server_pid.and_then(server_rss_kib),
        timeline: last.timeline(),
        notes,
    })
}

/// Waits for `armed` Armed and `fired` Fired messages; returns the arrival times.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    armed: usize,
    fired: usize,
    errors: &Errors,
) -> Result<Vec<Instant>, BenchError> {
    let (mut a, mut arrivals) = (0, Vec::with_capacity(fired));
    let deadline = tokio::time::Instant::now() + CONTROL_TIMEOUT;
    while a < armed || arrivals.len() < fired {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Msg::Armed)) => a += 1,
            Ok(Some(Msg::Fired(at))) => arrivals.push(at),
            Ok(Some(Msg::Failed(e))) => {
                // One watcher fewer: the rounds go on without it, and the loss is counted.
                errors.add(&e.count_key(), 1);
                return Err(e);
            }
            Ok(None) => return Err(BenchError::ConnectionLost),
            Err(_) => {
                return Err(BenchError::Timeout {
                    what: format!(
                        "{} of {fired} notifications and {a} of {armed} watches",
                        arrivals.len()
                    ),
                    seconds: CONTROL_TIMEOUT.as_secs_f64(),
                })
            }
        }
    }
    Ok(arrivals)
}

/// One watcher: set the watch, report it, wait for the notification, report it, again; until `stop`.
/// Returns the session if it is still usable.
async fn watcher(
    mut s: Session,
    node: String,
    tx: mpsc::UnboundedSender<Msg>,
    mut stop: watch::Receiver<bool>,
) -> Option<Session> {
    let arm = Request::Exists(PathWatch {
        path: node,
        watch: true,
    });
    let ping_every = Duration::from_millis(u64::from(s.timeout_ms / 3).max(10));
    loop {
        match s.call(&arm).await {
            Ok((h, _)) if h.err == 0 => {}
            Ok((h, _)) => {
                let _ = tx.send(Msg::Failed(BenchError::Server {
                    what: "exists with a watch".into(),
                    code: h.err,
                }));
                return None;
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed(e));
                return None;
            }
        }
        let _ = tx.send(Msg::Armed);
        loop {
            enum Ev {
                Stop,
                Ping,
                Note(Result<crate::session::Notification, BenchError>),
            }
            let ev = tokio::select! {
                _ = stop.changed() => Ev::Stop,
                _ = tokio::time::sleep(ping_every) => Ev::Ping,
                n = s.next_notification() => Ev::Note(n),
            };
            match ev {
                Ev::Stop => return Some(s),
                Ev::Ping => {
                    if let Err(e) = s.ping().await {
                        let _ = tx.send(Msg::Failed(e));
                        return None;
                    }
                }
                Ev::Note(Ok(n)) if n.event.event_type == EventType::NodeDataChanged.as_i32() => {
                    let _ = tx.send(Msg::Fired(n.at));
                    break;
                }
                Ev::Note(Ok(_)) => {}
                Ev::Note(Err(e)) => {
                    let _ = tx.send(Msg::Failed(e));
                    return None;
                }
            }
        }
    }
}
