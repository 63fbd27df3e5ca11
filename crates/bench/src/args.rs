//! Command-line arguments of `oxkeeper bench` (clap derive), with their parsers for durations and mixes.

use std::path::PathBuf;
use std::time::Duration;

/// Measure a ZooKeeper-compatible server: throughput, latency, sessions, expiry, watch fan-out.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// The server to measure (host:port).
    #[arg(long, global = true, default_value = "127.0.0.1:2181")]
    pub server: String,
    /// The server's process id: its CPU time and memory (RSS) are reported beside each figure.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Print one JSON object with every figure instead of the table.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Write the latency per second (p50, p99, max) to this CSV file.
    #[arg(long, global = true, value_name = "FILE.csv")]
    pub timeline: Option<PathBuf>,
    /// Draw the latency per second (p50, p99, max; log scale) to this SVG file.
    #[arg(long, global = true, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Worker threads of the generator's runtime (default: one per core).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Session timeout asked of the server, in milliseconds (it clamps it to its min/max).
    #[arg(long, global = true, default_value_t = 30_000)]
    pub session_timeout_ms: u32,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Workload {
    /// Request throughput and latency: N sessions × D requests in flight, or a fixed rate (--rate).
    Ops(OpsArgs),
    /// Session establishment (connect + handshake) and close rate.
    Sessions(SessionsArgs),
    /// N connected sessions that only ping: spurious expiries, server memory and CPU per session.
    Idle(IdleArgs),
    /// Sessions that vanish without closing: when their ephemerals disappear relative to the timeout.
    Expiry(ExpiryArgs),
    /// Notification fan-out: one write, many watchers.
    Watch(WatchArgs),
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Ops(_) => "ops",
            Workload::Sessions(_) => "sessions",
            Workload::Idle(_) => "idle",
            Workload::Expiry(_) => "expiry",
            Workload::Watch(_) => "watch",
        }
    }
}

/// How long a measured run lasts: a time or a number of requests.
#[derive(clap::Args, Debug, Clone)]
pub struct RunLength {
    /// How long to measure (`10s`, `500ms`, `2m`; a bare number is seconds). Default 10s.
    #[arg(long, value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Stop after this many requests (in total, over all sessions) instead of after a duration.
    #[arg(long)]
    pub requests: Option<u64>,
}

impl RunLength {
    pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

    /// The duration to run for when no request count is given.
    pub fn duration_or_default(&self) -> Option<Duration> {
        match (self.duration, self.requests) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(Self::DEFAULT_DURATION),
        }
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Create,
    Get,
    Set,
    Delete,
    Exists,
    Children,
    Mixed,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::Children => "children",
            Op::Mixed => "mixed",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct OpsArgs {
    /// The operation; `mixed` draws from --mix.
    #[arg(long, value_enum, default_value_t = Op::Get)]
    pub op: Op,
    /// Bytes of data in each created or set node.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 1)]
    pub sessions: usize,
    /// Requests in flight per session (closed loop); with --rate, the most a session lets wait for replies
    /// (default 1 closed, 1024 open).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Open loop: this many requests per second in total, on a fixed schedule; latency counts from each
    /// request's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub length: RunLength,
    /// Operation weights for --op mixed, e.g. `get=90,set=10` (create, get, set, exists, children).
    #[arg(long, value_parser = parse_mix, default_value = "get=90,set=10")]
    pub mix: Mix,
    /// Nodes read and written by get, set, exists (created before the measured window). Delete prepares
    /// --requests nodes, or this many when only a duration is given.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Children of the node that `children` lists.
    #[arg(long, default_value_t = 10)]
    pub children: u64,
    /// Leave the benchmark's nodes on the server (its root is printed).
    #[arg(long)]
    pub keep: bool,
}

impl OpsArgs {
    pub fn depth(&self) -> usize {
        self.depth
            .unwrap_or(if self.rate.is_some() { 1024 } else { 1 })
            .max(1)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct SessionsArgs {
    /// Sessions being established or closed at the same time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[command(flatten)]
    pub length: RunLength,
}

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    /// Sessions to hold open (the open-file limit is raised to its hard limit first).
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Handshakes in progress at once while connecting them.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long to hold them once all are connected.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub duration: Duration,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExpiryArgs {
    /// Sessions that create ephemerals and then vanish without closing.
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,
    /// Ephemerals per vanishing session.
    #[arg(long, default_value_t = 10)]
    pub ephemerals: usize,
    /// Session timeout of the vanishing sessions, in milliseconds (clamped by the server).
    #[arg(long, default_value_t = 4000)]
    pub timeout_ms: u32,
    /// Also measure the cleanup of one session with this many ephemerals: closeSession sent → last
    /// NodeDeleted at a watcher (0: skip).
    #[arg(long, default_value_t = 0)]
    pub cleanup_ephemerals: usize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Sessions that watch the node.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Bytes written by each setData.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Writes (rounds) to measure; each waits until every watcher was notified and watches again.
    #[arg(long, default_value_t = 200, conflicts_with = "duration")]
    pub writes: u64,
    /// Measure for this long instead of a number of writes.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Weights of the operations of a mixed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(pub Vec<(Op, u32)>);

/// `get=90,set=10`. Delete is refused: a mixed run has no pool of nodes to delete.
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected op=weight"))?;
        let op = match name.trim() {
            "create" => Op::Create,
            "get" => Op::Get,
            "set" => Op::Set,
            "exists" => Op::Exists,
            "children" => Op::Children,
            other => {
                return Err(format!(
                    "`{other}`: a mix takes create, get, set, exists, children"
                ))
            }
        };
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("`{part}`: the weight must be a whole number"))?;
        if weight > 0 {
            out.push((op, weight));
        }
    }
    if out.is_empty() {
        return Err("the mix has no operation with a weight above 0".into());
    }
    Ok(Mix(out))
}

/// `10s`, `500ms`, `2m`, `1.5s`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a number with a unit (10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("`{other}`: unknown unit (use ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10parsecs").is_err());
    }

    #[test]
    fn mixes_parse_and_refuse_delete() {
        assert_eq!(
            parse_mix("get=90, set=10"),
            Ok(Mix(vec![(Op::Get, 90), (Op::Set, 10)]))
        );
        assert!(parse_mix("delete=1").is_err());
        assert!(parse_mix("get").is_err());
        assert!(parse_mix("get=0").is_err());
    }

    #[test]
    fn ops_arguments_with_server_before_the_workload() {
        let a = parse(&[
            "--server",
            "127.0.0.1:9",
            "ops",
            "--op",
            "set",
            "--sessions",
            "32",
            "--depth",
            "4",
            "--requests",
            "1000",
            "--json",
        ])
        .expect("parses");
        assert_eq!(a.common.server, "127.0.0.1:9");
        assert!(a.common.json);
        let Workload::Ops(ops) = a.workload else {
            panic!("ops expected");
        };
        assert_eq!((ops.op, ops.sessions, ops.depth()), (Op::Set, 32, 4));
        assert_eq!(ops.length.requests, Some(1000));
        assert_eq!(ops.length.duration_or_default(), None);
    }

    #[test]
    fn open_loop_depth_defaults_high_and_closed_loop_to_one() {
        let a = parse(&["ops", "--rate", "5000"]).expect("parses");
        let Workload::Ops(ops) = a.workload else {
            panic!("ops expected");
        };
        assert_eq!(ops.depth(), 1024);
        assert_eq!(
            ops.length.duration_or_default(),
            Some(Duration::from_secs(10))
        );
        let a = parse(&["ops"]).expect("parses");
        let Workload::Ops(ops) = a.workload else {
            panic!("ops expected");
        };
        assert_eq!(ops.depth(), 1);
    }

    #[test]
    fn duration_and_requests_exclude_each_other() {
        assert!(parse(&["ops", "--duration", "1s", "--requests", "5"]).is_err());
    }

    #[test]
    fn every_workload_parses_with_its_defaults() {
        for w in ["ops", "sessions", "idle", "expiry", "watch"] {
            let a = parse(&[w]).unwrap_or_else(|e| panic!("{w}: {e}"));
            assert_eq!(a.workload.name(), w);
        }
        let a = parse(&["expiry", "--cleanup-ephemerals", "10000"]).expect("parses");
        let Workload::Expiry(e) = a.workload else {
            panic!("expiry expected");
        };
        assert_eq!(e.cleanup_ephemerals, 10000);
    }
}
