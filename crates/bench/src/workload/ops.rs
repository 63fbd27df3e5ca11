//! `ops`: request throughput and latency. N sessions, each with up to D requests in flight (closed loop), or
//! requests issued on a fixed schedule (open loop, `--rate`).
//!
//! Nodes the requests need are created before the measured window, under a unique root deleted afterwards.
//! Each session sends pre-encoded frames (only the xid and a node number patched), written to the socket in
//! one batch per wake-up, and matches replies to requests in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxkeeper_proto::{xid, CreateMode, PathWatch, Request, SetDataRequest};

use crate::args::{CommonArgs, Op, OpsArgs, RunLength};
use crate::error::{error_name, BenchError};
use crate::progress::{Goal, Progress};
use crate::report::{Figure, Rate, Report};
use crate::schedule::{Schedule, SEND_AHEAD};
use crate::session::{numbered_path, Session, Template, CONTROL_TIMEOUT};
use crate::stats::{Errors, Latency};
use crate::sysstat::{server_rss_kib, CpuSnapshot};
use crate::workload::{
    close_all, connect_many, create, delete_paths, hold, share, unique_root, PREPARE_DEPTH,
};

const KEY_DIGITS: usize = 7;
const NODE_DIGITS: usize = 10;
/// Length of the repeating sequence of operations of a mixed run.
const MIX_CYCLE: usize = 1000;

/// How a template's node number is chosen for each send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numbering {
    /// A fixed path.
    None,
    /// One of the prepared keys, round robin.
    Key,
    /// The session's next new node.
    Created,
    /// The session's next prepared node to delete.
    Deleted,
}

struct Plan {
    index: usize,
    templates: Vec<(Template, Numbering)>,
    /// Template indexes, cycled through.
    cycle: Vec<u8>,
    quota: Option<u64>,
    /// Nodes prepared for this session to delete.
    deletable: u64,
    keys: u64,
    depth: usize,
    schedule: Option<Schedule>,
}

/// What a session did, for the cleanup and the counts.
#[derive(Default)]
struct Outcome {
    created: u64,
    deleted: u64,
    completed: u64,
    /// It stopped because its nodes to delete were all deleted.
    ran_out: bool,
    /// The session, unless its connection was lost.
    session: Option<Session>,
}

struct Shared {
    /// One per template, then the total of a mixed run.
    latencies: Vec<Latency>,
    /// Open loop: how late each request left compared with its intended time.
    lag: Latency,
    errors: Errors,
    start: Instant,
    deadline: Option<Instant>,
}

struct Inflight {
    xid: i32,
    slot: u8,
    sent: Instant,
    intended: Option<Instant>,
}

pub async fn run(common: &CommonArgs, a: &OpsArgs) -> Result<Report, BenchError> {
    validate(a)?;
    let addr = common.server.as_str();
    let root = unique_root();
    let data = vec![b'x'; a.value_size];
    let kinds: Vec<Op> = match a.op {
        Op::Mixed => a.mix.0.iter().map(|(op, _)| *op).collect(),
        op => vec![op],
    };
    let n = a.sessions;
    let depth = a.depth();

    let mut control = Session::connect(addr, common.session_timeout_ms).await?;
    control
        .call_ok(
            "create the root",
            &create(root.clone(), b"", CreateMode::Persistent),
        )
        .await?;
    // Preparation, outside the measured window.
    let needs_keys = kinds
        .iter()
        .any(|k| matches!(k, Op::Get | Op::Set | Op::Exists));
    if needs_keys {
        let reqs = (0..a.keys).map(|k| {
            create(
                numbered_path(&format!("{root}/k"), KEY_DIGITS, k),
                &data,
                CreateMode::Persistent,
            )
        });
        expect_all_ok(
            "create the keys",
            control.pipeline(reqs, PREPARE_DEPTH).await?,
        )?;
    }
    if kinds.contains(&Op::Children) {
        let parent = format!("{root}/ch");
        let reqs = std::iter::once(create(parent.clone(), b"", CreateMode::Persistent)).chain(
            (0..a.children)
                .map(|j| create(format!("{parent}/x{j}"), &data, CreateMode::Persistent)),
        );
        expect_all_ok(
            "create the children",
            control.pipeline(reqs, PREPARE_DEPTH).await?,
        )?;
    }
    let delete_total = a.length.requests.unwrap_or(a.keys);
    if kinds.contains(&Op::Delete) {
        let reqs = (0..n).flat_map(|i| {
            let prefix = format!("{root}/d{i:05}-");
            let data = &data;
            (0..share(delete_total, n, i)).map(move |j| {
                create(
                    numbered_path(&prefix, NODE_DIGITS, j),
                    data,
                    CreateMode::Persistent,
                )
            })
        });
        expect_all_ok(
            "create the nodes to delete",
            control.pipeline(reqs, PREPARE_DEPTH).await?,
        )?;
    }

    let connected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sessions = connect_many(addr, n, common.session_timeout_ms, 64, connected).await?;

    let templates = templates(&root, &kinds, &data);
    let cycle = mix_cycle(a, &kinds);
    let duration = a.length.duration_or_default();
    let cpu = CpuSnapshot::take(common.server_pid);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        latencies: kinds
            .iter()
            .map(|k| Latency::new(k.name(), start, kinds.len() == 1))
            .chain((kinds.len() > 1).then(|| Latency::new("all", start, true)))
            .collect(),
        lag: Latency::new("send lag (open loop)", start, false),
        errors: Errors::default(),
        start,
        deadline: duration.map(|d| start + d),
    });
    let main = shared.latencies.len() - 1;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let goal = match (duration, a.length.requests) {
        (Some(d), _) => Goal::Time(d),
        (None, r) => Goal::Count(r.unwrap_or(0)),
    };
    let progress = Progress::start(common.quiet, a.op.name(), goal, counter.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in sessions.into_iter().enumerate() {
        let plan = Plan {
            index: i,
            templates: templates.clone(),
            cycle: cycle.clone(),
            quota: a.length.requests.map(|r| share(r, n, i)),
            deletable: share(delete_total, n, i),
            keys: a.keys,
            depth,
            schedule: a.rate.map(|r| Schedule::new(r, n, i)),
        };
        let shared = shared.clone();
        let counter = counter.clone();
        tasks.spawn(async move { drive(s, plan, &shared, &counter).await });
    }
    let outcomes = hold(&mut control, async {
        let mut outcomes = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Ok(o) = r {
                outcomes.push(o);
            }
        }
        outcomes
    })
    .await;
    let window = start.elapsed();
    let cpu = cpu.until_now();
    progress.finish();
    let server_rss = common.server_pid.and_then(server_rss_kib);

    // Cleanup, outside the window.
    let mut notes = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    let outcomes_ran_out = a.length.requests.is_none() && outcomes.iter().any(|(_, o)| o.ran_out);
    let mut created_total = 0;
    let mut completed = 0;
    for (i, o) in outcomes.iter().map(|(i, o)| (*i, o)) {
        created_total += o.created;
        completed += o.completed;
        let created_prefix = format!("{root}/n{i:05}-");
        paths.extend((0..o.created).map(|j| numbered_path(&created_prefix, NODE_DIGITS, j)));
        if kinds.contains(&Op::Delete) {
            let prefix = format!("{root}/d{i:05}-");
            paths.extend(
                (o.deleted..share(delete_total, n, i))
                    .map(|j| numbered_path(&prefix, NODE_DIGITS, j)),
            );
        }
    }
    let failed_closes = close_all(
        outcomes
            .into_iter()
            .filter_map(|(_, o)| o.session)
            .collect(),
    )
    .await;
    if failed_closes > 0 {
        notes.push(format!(
            "{failed_closes} sessions failed to close after the run"
        ));
    }
    if a.keep {
        notes.push(format!("nodes kept under {root}"));
    } else {
        if needs_keys {
            paths.extend((0..a.keys).map(|k| numbered_path(&format!("{root}/k"), KEY_DIGITS, k)));
        }
        if kinds.contains(&Op::Children) {
            paths.extend((0..a.children).map(|j| format!("{root}/ch/x{j}")));
            paths.push(format!("{root}/ch"));
        }
        paths.push(root.clone());
        let failed = delete_paths(&mut control, paths).await?;
        if failed > 0 {
            notes.push(format!("{failed} nodes could not be deleted under {root}"));
        }
    }
    let _ = control.close().await;

    if outcomes_ran_out {
        notes.push(format!(
            "delete ran out of prepared nodes ({delete_total}) before the duration; raise --keys"
        ));
    }
    let errors = shared.errors.snapshot();
    let mut latencies: Vec<_> = shared.latencies.iter().map(Latency::summary).collect();
    if a.rate.is_some() {
        latencies.push(shared.lag.summary());
        notes.push(format!(
            "open loop: latency counts from each request's intended send time (requests may leave up to {} ms early, \
             then count from their actual send)",
            SEND_AHEAD.as_millis()
        ));
    }
    let window_s = window.as_secs_f64();
    Ok(Report {
        workload: "ops".into(),
        description: describe(a),
        server: common.server.clone(),
        root: Some(root),
        window_s,
        rates: vec![Rate::new("requests", completed, window_s)],
        latencies,
        figures: vec![
            Figure::new("sessions", n as f64, ""),
            Figure::new("in flight per session (max)", depth as f64, ""),
            Figure::new("nodes created", created_total as f64, ""),
        ],
        error_total: errors.values().sum(),
        errors,
        cpu,
        server_rss_kib: server_rss,
        timeline: shared.latencies[main].timeline(),
        notes,
    })
}

fn validate(a: &OpsArgs) -> Result<(), BenchError> {
    if a.sessions == 0 {
        return Err(BenchError::Usage("--sessions must be at least 1".into()));
    }
    if let Some(r) = a.rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err(BenchError::Usage("--rate must be a positive number".into()));
        }
    }
    if a.keys == 0 || a.keys >= 10u64.pow(KEY_DIGITS as u32) {
        return Err(BenchError::Usage(format!(
            "--keys must be between 1 and {}",
            10u64.pow(KEY_DIGITS as u32) - 1
        )));
    }
    if a.sessions >= 100_000 {
        return Err(BenchError::Usage("--sessions must be below 100000".into()));
    }
    Ok(())
}

fn describe(a: &OpsArgs) -> String {
    let op = match a.op {
        Op::Mixed => {
            let parts: Vec<String> = a
                .mix
                .0
                .iter()
                .map(|(o, w)| format!("{}={w}", o.name()))
                .collect();
            format!("mixed {}", parts.join(","))
        }
        op => op.name().to_string(),
    };
    let sessions = if a.sessions == 1 {
        "session"
    } else {
        "sessions"
    };
    let lp = match a.rate {
        Some(r) => format!(
            "open loop at {r:.0}/s (at most {} waiting per session)",
            a.depth()
        ),
        None => format!("{} in flight, closed loop", a.depth()),
    };
    let len = match (&a.length, a.length.duration_or_default()) {
        (
            RunLength {
                requests: Some(r), ..
            },
            None,
        ) => format!("{r} requests"),
        (_, Some(d)) => format!("{:.1}s", d.as_secs_f64()),
        _ => String::new(),
    };
    format!(
        "{op}, {} {sessions} × {lp}, {} B values, {len}",
        a.sessions, a.value_size
    )
}

fn templates(root: &str, kinds: &[Op], data: &[u8]) -> Vec<(Template, Numbering)> {
    let key = format!("{root}/k");
    kinds
        .iter()
        .map(|k| match k {
            Op::Get => (
                Template::numbered(&key, KEY_DIGITS, |path| {
                    Request::GetData(PathWatch { path, watch: false })
                }),
                Numbering::Key,
            ),
            Op::Exists => (
                Template::numbered(&key, KEY_DIGITS, |path| {
                    Request::Exists(PathWatch { path, watch: false })
                }),
                Numbering::Key,
            ),
            Op::Set => (
                Template::numbered(&key, KEY_DIGITS, |path| {
                    Request::SetData(SetDataRequest {
                        path,
                        data: Some(data.to_vec()),
                        version: -1,
                    })
                }),
                Numbering::Key,
            ),
            Op::Children => (
                Template::fixed(&Request::GetChildren(PathWatch {
                    path: format!("{root}/ch"),
                    watch: false,
                })),
                Numbering::None,
            ),
            // The session's own prefix is patched in per session (see `session_templates`).
            Op::Create => (
                Template::numbered(&format!("{root}/n#####-"), NODE_DIGITS, |p| {
                    create(p, data, CreateMode::Persistent)
                }),
                Numbering::Created,
            ),
            Op::Delete | Op::Mixed => (
                Template::numbered(&format!("{root}/d#####-"), NODE_DIGITS, |path| {
                    Request::Delete(oxkeeper_proto::PathVersion { path, version: -1 })
                }),
                Numbering::Deleted,
            ),
        })
        .collect()
}

/// The template indexes in the proportions of the mix, shuffled once (a run cycles through them).
fn mix_cycle(a: &OpsArgs, kinds: &[Op]) -> Vec<u8> {
    if kinds.len() == 1 {
        return vec![0];
    }
    let total: u64 = a.mix.0.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut cycle = Vec::with_capacity(MIX_CYCLE);
    for (slot, (_, w)) in a.mix.0.iter().enumerate() {
        let count = (u64::from(*w) * MIX_CYCLE as u64).div_ceil(total.max(1));
        cycle.extend(std::iter::repeat_n(slot as u8, count as usize));
    }
    use rand::seq::SliceRandom;
    cycle.shuffle(&mut rand::thread_rng());
    cycle
}

/// Replaces the `#####` placeholder of per-session templates with the session's index.
fn session_templates(
    templates: &[(Template, Numbering)],
    index: usize,
) -> Vec<(Template, Numbering)> {
    templates
        .iter()
        .map(|(t, n)| (t.with_placeholder(format!("{index:05}").as_bytes()), *n))
        .collect()
}

fn expect_all_ok(what: &str, errs: Vec<i32>) -> Result<(), BenchError> {
    match errs.iter().find(|&&e| e != 0) {
        Some(&code) => Err(BenchError::Server {
            what: what.to_string(),
            code,
        }),
        None => Ok(()),
    }
}

/// One session's measured run.
async fn drive(
    mut s: Session,
    plan: Plan,
    shared: &Shared,
    counter: &std::sync::atomic::AtomicU64,
) -> (usize, Outcome) {
    let templates = session_templates(&plan.templates, plan.index);
    let mut locals: Vec<_> = shared.latencies.iter().map(Latency::local).collect();
    let all = (locals.len() > 1).then(|| locals.len() - 1);
    let mut lag = shared.lag.local();
    let mut inflight: VecDeque<Inflight> = VecDeque::with_capacity(plan.depth);
    let frame_bytes = templates.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
    let mut wbuf = Vec::with_capacity(plan.depth.min(4096) * frame_bytes);
    let mut out = Outcome::default();
    let mut issued: u64 = 0;
    // Sessions start at different keys so that they do not all hit the same node at once.
    let mut key = (plan.index as u64).wrapping_mul(7919) % plan.keys.max(1);
    let mut done_issuing = false;
    let ping_every = Duration::from_millis(u64::from(s.timeout_ms / 3).max(10));
    let mut last_write = Instant::now();
    let lost = loop {
        let now = Instant::now();
        let first_new = inflight.len();
        while !done_issuing && inflight.len() < plan.depth {
            if plan.quota.is_some_and(|q| issued >= q) || shared.deadline.is_some_and(|d| now >= d)
            {
                done_issuing = true;
                break;
            }
            let intended = match &plan.schedule {
                Some(sch) => {
                    let t = shared.start + sch.intended(issued);
                    if t > now + SEND_AHEAD {
                        break;
                    }
                    Some(t)
                }
                None => None,
            };
            let slot = plan.cycle[(issued % plan.cycle.len() as u64) as usize];
            let (template, numbering) = &templates[slot as usize];
            let number = match numbering {
                Numbering::None => 0,
                Numbering::Key => {
                    key = (key + 1) % plan.keys;
                    key
                }
                Numbering::Created => {
                    out.created += 1;
                    out.created - 1
                }
                Numbering::Deleted => {
                    if out.deleted >= plan.deletable {
                        out.ran_out = true;
                        done_issuing = true;
                        break;
                    }
                    out.deleted += 1;
                    out.deleted - 1
                }
            };
            let x = s.take_xid();
            template.write(x, number, &mut wbuf);
            inflight.push_back(Inflight {
                xid: x,
                slot,
                sent: now,
                intended,
            });
            issued += 1;
        }
        if !wbuf.is_empty() {
            let sent = Instant::now();
            for f in inflight.iter_mut().skip(first_new) {
                f.sent = sent;
            }
            if let Err(e) = s.write_all(&wbuf).await {
                break Some(e);
            }
            wbuf.clear();
            last_write = sent;
        }
        if done_issuing && inflight.is_empty() {
            break None;
        }
        // Wait for replies, the next scheduled send, a ping, or the end of the window.
        let mut wake = last_write + ping_every;
        if let Some(oldest) = inflight.front() {
            wake = wake.min(oldest.sent + CONTROL_TIMEOUT);
        }
        if let Some(sch) = &plan.schedule {
            if !done_issuing && inflight.len() < plan.depth {
                let due = shared.start + sch.intended(issued);
                wake = wake.min(due.checked_sub(SEND_AHEAD).unwrap_or(now));
            }
        }
        if let Some(d) = shared.deadline {
            if !done_issuing {
                wake = wake.min(d);
            }
        }
        enum Ev {
            Timer,
            Read(Result<(), BenchError>),
        }
        let ev = tokio::select! {
            r = s.fill() => Ev::Read(r),
            _ = tokio::time::sleep_until(wake.into()) => Ev::Timer,
        };
        match ev {
            Ev::Timer => {
                let now = Instant::now();
                if !inflight.is_empty() && now.duration_since(inflight[0].sent) >= CONTROL_TIMEOUT {
                    break Some(BenchError::Timeout {
                        what: "a reply".into(),
                        seconds: CONTROL_TIMEOUT.as_secs_f64(),
                    });
                }
                if now >= last_write + ping_every {
                    if let Err(e) = s.ping().await {
                        break Some(e);
                    }
                    last_write = now;
                }
                continue;
            }
            Ev::Read(Err(e)) => break Some(e),
            Ev::Read(Ok(())) => {}
        }
        let now = Instant::now();
        let mut completed = 0u64;
        let r = s.drain_replies(|h, _body| {
            if h.xid == xid::PING || h.xid == xid::NOTIFICATION {
                return Ok(());
            }
            let Some(f) = inflight.pop_front() else {
                return Err(BenchError::OutOfOrder {
                    expected: 0,
                    got: h.xid,
                });
            };
            if f.xid != h.xid {
                return Err(BenchError::OutOfOrder {
                    expected: f.xid,
                    got: h.xid,
                });
            }
            let from = match f.intended {
                Some(t) => {
                    lag.record(now, f.sent.saturating_duration_since(t));
                    t.min(f.sent)
                }
                None => f.sent,
            };
            let latency = now.duration_since(from);
            locals[f.slot as usize].record(now, latency);
            if let Some(all) = all {
                locals[all].record(now, latency);
            }
            if h.err != 0 {
                shared.errors.add(&error_name(h.err), 1);
            }
            completed += 1;
            Ok(())
        });
        out.completed += completed;
        counter.fetch_add(completed, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = r {
            break Some(e);
        }
    };
    match lost {
        // Every request still in flight is lost with the connection: count each one.
        Some(e) => shared
            .errors
            .add(&e.count_key(), inflight.len().max(1) as u64),
        None => out.session = Some(s),
    }
    (plan.index, out)
}
