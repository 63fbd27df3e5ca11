//! `sessions`: how fast the server establishes and closes sessions. C workers each loop over: TCP connect +
//! handshake (timed as "establish"), closeSession (timed until its reply), wait for the server to close.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::args::{CommonArgs, SessionsArgs};
use crate::error::BenchError;
use crate::progress::{Goal, Progress};
use crate::report::{Figure, Rate, Report};
use crate::session::Session;
use crate::stats::{Errors, Latency};
use crate::sysstat::{server_rss_kib, CpuSnapshot};

pub async fn run(common: &CommonArgs, a: &SessionsArgs) -> Result<Report, BenchError> {
    if a.concurrency == 0 {
        return Err(BenchError::Usage("--concurrency must be at least 1".into()));
    }
    // One session first: a server that is not there fails the run instead of filling the error table.
    Session::connect(&common.server, common.session_timeout_ms)
        .await?
        .close()
        .await?;
    let duration = a.length.duration_or_default();
    let cpu = CpuSnapshot::take(common.server_pid);
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let establish = Arc::new(Latency::new("establish", start, true));
    let close = Arc::new(Latency::new("close", start, false));
    let errors = Arc::new(Errors::default());
    let tickets = Arc::new(AtomicU64::new(0));
    let cycles = Arc::new(AtomicU64::new(0));
    let goal = match (duration, a.length.requests) {
        (Some(d), _) => Goal::Time(d),
        (None, r) => Goal::Count(r.unwrap_or(0)),
    };
    let progress = Progress::start(common.quiet, "sessions", goal, cycles.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (establish, close, errors, tickets, cycles) = (
            establish.clone(),
            close.clone(),
            errors.clone(),
            tickets.clone(),
            cycles.clone(),
        );
        let addr = common.server.clone();
        let timeout_ms = common.session_timeout_ms;
        let total = a.length.requests;
        tasks.spawn(async move {
            loop {
                if total.is_some_and(|t| tickets.fetch_add(1, Ordering::Relaxed) >= t)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    return;
                }
                let t0 = Instant::now();
                let s = match Session::connect(&addr, timeout_ms).await {
                    Ok(s) => s,
                    Err(e) => {
                        errors.add(&e.count_key(), 1);
                        continue;
                    }
                };
                let t1 = Instant::now();
                establish.record(t1, t1 - t0);
                match s.close_timed().await {
                    Ok(replied) => close.record(replied, replied - t1),
                    Err(e) => errors.add(&e.count_key(), 1),
                }
                cycles.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let window = start.elapsed().as_secs_f64();
    let cpu = cpu.until_now();
    progress.finish();
    let errors = errors.snapshot();
    let established = establish.summary().count;
    let closed = close.summary().count;
    Ok(Report {
        workload: "sessions".into(),
        description: format!(
            "connect + handshake, then closeSession; {} at a time",
            a.concurrency
        ),
        server: common.server.clone(),
        root: None,
        window_s: window,
        rates: vec![
            Rate::new("established", established, window),
            Rate::new("closed", closed, window),
        ],
        latencies: vec![establish.summary(), close.summary()],
        figures: vec![Figure::new("concurrency", a.concurrency as f64, "")],
        error_total: errors.values().sum(),
        errors,
        cpu,
        server_rss_kib: common.server_pid.and_then(server_rss_kib),
        timeline: establish.timeline(),
        notes: vec![],
    })
}
