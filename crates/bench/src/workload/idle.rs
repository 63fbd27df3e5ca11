//! `idle`: N sessions that only ping (every third of their timeout), held for a while. Reports every
//! spurious expiry or disconnect, the ping round trip, and with `--server-pid` the server's memory and CPU
//! per session. The open-file limit is raised to its hard limit first; it bounds N.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxkeeper_proto::{xid, EventType, KeeperState, Record, WatcherEvent};

use crate::args::{CommonArgs, IdleArgs};
use crate::error::BenchError;
use crate::progress::{Goal, Progress};
use crate::report::{Figure, Rate, Report};
use crate::session::Session;
use crate::stats::{Errors, Latency};
use crate::sysstat::{open_fds, raise_nofile_limit, server_rss_kib, CpuSnapshot};
use crate::workload::{close_all, connect_many};

/// File descriptors kept free for everything else (the runtime, files, the control socket).
const SPARE_FDS: u64 = 64;

pub async fn run(common: &CommonArgs, a: &IdleArgs) -> Result<Report, BenchError> {
    let mut notes = Vec::new();
    let limit = raise_nofile_limit()?;
    let allowed = limit.saturating_sub(open_fds().unwrap_or(0) + SPARE_FDS);
    notes.push(format!(
        "open-file limit raised to {limit}: room for about {allowed} sessions in this process"
    ));
    let n = if a.sessions as u64 > allowed {
        notes.push(format!(
            "asked for {} sessions; capped at {allowed} by the open-file limit",
            a.sessions
        ));
        allowed as usize
    } else {
        a.sessions
    };
    if n == 0 {
        return Err(BenchError::Usage("no session to hold".into()));
    }
    let rss_before = common.server_pid.and_then(server_rss_kib);

    let connected = Arc::new(AtomicU64::new(0));
    let bar = Progress::start(
        common.quiet,
        "connect",
        Goal::Count(n as u64),
        connected.clone(),
    );
    let t0 = Instant::now();
    let sessions = connect_many(
        &common.server,
        n,
        common.session_timeout_ms,
        a.concurrency,
        connected,
    )
    .await;
    let connect_s = t0.elapsed().as_secs_f64();
    bar.finish();
    let sessions = sessions?;
    let rss_connected = common.server_pid.and_then(server_rss_kib);

    let cpu = CpuSnapshot::take(common.server_pid);
    let start = Instant::now();
    let end = start + a.duration;
    let pings = Arc::new(Latency::new("ping", start, true));
    let errors = Arc::new(Errors::default());
    let elapsed = Arc::new(AtomicU64::new(0));
    let bar = Progress::start(common.quiet, "hold", Goal::Time(a.duration), elapsed);
    let mut tasks = tokio::task::JoinSet::new();
    for s in sessions {
        let (pings, errors) = (pings.clone(), errors.clone());
        tasks.spawn(async move { keep(s, end, &pings, &errors).await });
    }
    let mut alive = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(s)) = r {
            alive.push(s);
        }
    }
    let window = start.elapsed().as_secs_f64();
    let cpu = cpu.until_now();
    bar.finish();
    let rss_held = common.server_pid.and_then(server_rss_kib);
    let survivors = alive.len();
    let failed_closes = close_all(alive).await;
    if failed_closes > 0 {
        notes.push(format!(
            "{failed_closes} sessions failed to close after the hold"
        ));
    }

    let mut figures = vec![
        Figure::new("sessions held", n as f64, ""),
        Figure::new("sessions alive at the end", survivors as f64, ""),
        Figure::new("open-file limit", limit as f64, ""),
    ];
    if let (Some(before), Some(after)) = (rss_before, rss_held.or(rss_connected)) {
        figures.push(Figure::new("server rss before", before as f64, "KiB"));
        figures.push(Figure::new(
            "server rss with the sessions",
            after as f64,
            "KiB",
        ));
        figures.push(Figure::new(
            "server rss per session",
            (after as f64 - before as f64) * 1024.0 / n as f64,
            "B",
        ));
        if after <= before {
            notes.push(
                "the server's RSS did not grow: a JVM's RSS is its reserved heap, not its live data \
                 (for ZooKeeper, compare `jcmd <pid> GC.heap_info` after a full GC)"
                    .into(),
            );
        }
    }
    if let Some(server_s) = cpu.server_cpu_s {
        figures.push(Figure::new(
            "server cpu per session",
            server_s * 1e6 / n as f64 / window.max(1e-9),
            "µs/s",
        ));
    }
    let errors = errors.snapshot();
    Ok(Report {
        workload: "idle".into(),
        description: format!(
            "{n} sessions that only ping, held {:.1}s",
            a.duration.as_secs_f64()
        ),
        server: common.server.clone(),
        root: None,
        window_s: window,
        rates: vec![Rate::new("connected", n as u64, connect_s)],
        latencies: vec![pings.summary()],
        figures,
        error_total: errors.values().sum(),
        errors,
        cpu,
        server_rss_kib: rss_held,
        timeline: pings.timeline(),
        notes,
    })
}

/// Pings `s` every third of its timeout until `end`; returns it if it is still connected.
async fn keep(mut s: Session, end: Instant, pings: &Latency, errors: &Errors) -> Option<Session> {
    let every = Duration::from_millis(u64::from(s.timeout_ms / 3).max(10));
    // Spread the first pings over one period so that N sessions do not ping in lockstep.
    let mut next = Instant::now() + every.mul_f64(rand::random::<f64>());
    let mut ping_sent: Option<Instant> = None;
    loop {
        enum Ev {
            Tick,
            Read(Result<(), BenchError>),
        }
        let wake = next.min(end);
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => Ev::Tick,
            r = s.fill() => Ev::Read(r),
        };
        match ev {
            Ev::Tick if Instant::now() >= end => return Some(s),
            Ev::Tick => {
                if let Err(e) = s.ping().await {
                    errors.add(&format!("{} while idle", e.count_key()), 1);
                    return None;
                }
                ping_sent = Some(Instant::now());
                next += every;
            }
            Ev::Read(Err(e)) => {
                errors.add(&format!("{} while idle", e.count_key()), 1);
                return None;
            }
            Ev::Read(Ok(())) => {
                let now = Instant::now();
                let mut expired = false;
                let r = s.drain_replies(|h, body| {
                    match h.xid {
                        xid::PING => {
                            if let Some(t) = ping_sent.take() {
                                pings.record(now, now - t);
                            }
                        }
                        xid::NOTIFICATION => {
                            let ev = WatcherEvent::from_bytes(body)?;
                            if ev.event_type == EventType::None.as_i32()
                                && ev.state == KeeperState::Expired.as_i32()
                            {
                                expired = true;
                            }
                        }
                        other => {
                            return Err(BenchError::OutOfOrder {
                                expected: xid::PING,
                                got: other,
                            })
                        }
                    }
                    Ok(())
                });
                if expired {
                    errors.add("session expired while idle", 1);
                    return None;
                }
                if let Err(e) = r {
                    errors.add(&format!("{} while idle", e.count_key()), 1);
                    return None;
                }
            }
        }
    }
}
