//! Four-letter words: ZooKeeper's plain-text admin commands, in ZooKeeper's output formats.
//!
//! Built from a read-only view taken at one point in time, so the text is consistent with it. The view holds
//! no lock: a copy of the state (O(1), its maps are persistent) and of what the word needs of the watch
//! table, both taken together, so a word's text (`wchp` on a large table, `dump` of many sessions) is made
//! while reads, writes and the watches they set or fire go on.
//!
//! The connection's reader answers a word itself (`answer`), without the executor, so that `ruok`, `mntr`
//! and `srvr` answer while the apply thread waits on the disk (`crate::apply_thread`); only the words that
//! list the connections the executor serves (`lists_connections`) are answered by the executor.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use oxkeeper_core::state::StateMachine;
use oxkeeper_core::tracker::SessionTracker;
use oxkeeper_core::watches::WatchTable;

use crate::config::Config;
use crate::connection::{ConnId, Outbound};
use crate::executor::{answer_four_letter, Shared};
use crate::stats::{fmt_addr, ConnStats, Counter, LiveConnView, ServerStats};

/// The ZooKeeper release whose feature set we implement; clients parse it from `srvr` and `envi`.
pub const ZK_VERSION: &str = concat!("3.9.3-oxkeeper-", env!("CARGO_PKG_VERSION"));
pub const BUILT_ON: &str = "2026-11-21 00:00 UTC";

/// Whether `word` lists the connections the executor serves (with the requests waiting there for each), so
/// that the executor, which alone knows them, must answer it.
pub fn lists_connections(word: &str) -> bool {
    matches!(word, "stat" | "cons" | "wchc" | "wchp")
}

/// Answers `word` on its connection and closes it: refused unless whitelisted; otherwise a view taken now
/// (the state's lock, then the watch table's, as everywhere; `conns`: the executor's connections, for the
/// words that list them, else empty), and the text made and written on a blocking thread of the
/// connections' runtime, with no lock held.
pub fn answer(
    shared: &Arc<Shared>,
    word: &'static str,
    self_conn: (ConnId, SocketAddr),
    out: Outbound,
    conns: Vec<ConnView>,
) {
    if !shared.config.four_letter_allowed(word) {
        let text = format!("{word} is not executed because it is not in the whitelist.\n");
        answer_four_letter(shared, self_conn.0, &out, text);
        return;
    }
    // `crst` resets the connections' figures in `run` (one set per connection, shared by its reader and the
    // executor).
    if word == "srst" {
        shared.stats.reset();
    }
    let view = {
        let state = shared.state();
        let watches = WatchFacts::of(word, &shared.watches());
        View {
            shared: Arc::clone(shared),
            sm: state.clone(),
            watches,
            conns,
            self_conn,
            last_zxid: shared.last_zxid(),
            outstanding: shared.outstanding(),
            clock: (shared.now_ms(), crate::executor::wall_ms()),
            stalls: shared.clock.stall_stats(),
            wal: (
                shared.replicator.wal_health(),
                shared.replicator.wal_stats(),
            ),
            snapshot_failures: shared.replicator.snapshot_failures(),
            since_snapshot: shared.since_snapshot.load(Ordering::Relaxed),
            snapshot_pending: shared.replicator.snapshot_pending(),
            expiry_backlog: shared.expiry_backlog.load(Ordering::Relaxed),
        }
    };
    // `wchp` of a large table or `dump` of many sessions takes tens of milliseconds, which nothing waits for.
    shared.homes.workers().spawn_blocking(move || {
        let text = run(word, &view);
        answer_four_letter(&view.shared, self_conn.0, &out, text);
    });
}

/// A connection the executor serves (it sent a ConnectRequest).
pub struct ConnView {
    pub id: ConnId,
    pub remote: SocketAddr,
    /// Requests received and not yet answered (ZooKeeper's `queued=`).
    pub queued: usize,
    /// Frames waiting in the outbound queue (ZooKeeper then also selects the socket for writing).
    pub out_queued: usize,
    pub session_id: i64,
    pub timeout_ms: i32,
}

pub struct View {
    /// The config, the statistics and the session tracker.
    pub shared: Arc<Shared>,
    /// A copy of the state (`StateMachine::clone` is O(1)): no lock is held while the text is made.
    pub sm: StateMachine,
    pub watches: WatchFacts,
    /// The connections the executor serves; `stats` knows every open one, including those without a
    /// session and the four-letter word's own, which ZooKeeper counts and lists too.
    pub conns: Vec<ConnView>,
    /// The four-letter word's own connection.
    pub self_conn: (ConnId, SocketAddr),
    pub last_zxid: i64,
    pub outstanding: usize,
    /// (monotonic ms of the tracker's clock, wall-clock ms) at the same instant, to print tracker deadlines.
    pub clock: (u64, i64),
    /// Stalls of this member (see `clock.rs`).
    pub stalls: crate::clock::StallStats,
    /// Expired sessions whose close is paced and not proposed yet.
    pub expiry_backlog: usize,
    /// The log's health and its out-of-space retries so far.
    pub wal: (
        oxkeeper_storage::WalHealth,
        oxkeeper_storage::WalWriterStats,
    ),
    /// Snapshot writes that failed so far (each is tried again until written).
    pub snapshot_failures: u64,
    /// Transactions applied since the last snapshot was asked for (one is asked for at `snapCount`).
    pub since_snapshot: u64,
    /// A snapshot was asked for that no written snapshot covers yet.
    pub snapshot_pending: bool,
}

impl View {
    fn config(&self) -> &Config {
        &self.shared.config
    }

    fn stats(&self) -> &ServerStats {
        &self.shared.stats
    }

    /// Locked only to copy the session sets out (`dump`).
    fn tracker(&self) -> &Mutex<SessionTracker> {
        &self.shared.tracker
    }
}

/// What a word needs of the watch table, copied while it is locked (`WatchFacts::of`), so that the table's
/// lock is not held while the text is made: every read that sets a watch and every write that fires one
/// takes it. Only the word's own parts are copied.
#[derive(Debug, Default)]
pub struct WatchFacts {
    /// `wchs` and `mntr`: the data table's (connections, paths, watches).
    pub summary: (usize, usize, usize),
    /// `mntr`'s `watch_count`: both tables.
    pub total: usize,
    /// `wchc`: each watching connection's paths.
    pub by_conn: Vec<(ConnId, Vec<Arc<str>>)>,
    /// `wchp`: each path's watching connections.
    pub by_path: Vec<(Arc<str>, Vec<ConnId>)>,
}

impl WatchFacts {
    pub fn of(word: &str, table: &WatchTable) -> WatchFacts {
        let mut facts = WatchFacts::default();
        match word {
            "wchs" => facts.summary = table.data_watch_summary(),
            "mntr" => {
                facts.summary = table.data_watch_summary();
                facts.total = table.total_watch_count();
            }
            "wchc" => facts.by_conn = table.data_watches_by_conn(),
            "wchp" => facts.by_path = table.data_watches_by_path(),
            _ => {}
        }
        facts
    }
}

/// Java's `Date.toString()` in UTC: `EEE MMM dd HH:mm:ss zzz yyyy`.
pub fn java_date(wall_ms: i64) -> String {
    oxkeeper_proto::javadate::java_date(wall_ms, 0, "UTC")
}

pub fn run(word: &str, v: &View) -> String {
    match word {
        "ruok" => "imok".into(),
        "isro" => "rw".into(),
        "srvr" => server_stats(v, false),
        "stat" => server_stats(v, true),
        "cons" => connections(v),
        "crst" => {
            // Every open connection's figures (one set each, shared by its reader and the executor).
            v.stats().reset_connection_stats();
            "Connection stats reset.\n".into()
        }
        "srst" => "Server stats reset.\n".into(),
        "dump" => dump(v),
        "envi" => environment(v),
        "conf" => conf(v),
        "mntr" => monitor(v),
        "wchs" => {
            let (conns, paths, total) = v.watches.summary;
            format!("{conns} connections watching {paths} paths\nTotal watches:{total}\n")
        }
        "wchc" => watches_by_session(&v.watches.by_conn, &sessions_by_conn(v)),
        "wchp" => watches_by_path(&v.watches.by_path, &sessions_by_conn(v)),
        "dirs" => format!(
            "datadir_size: {}\nlogdir_size: {}\n",
            dir_size(&v.config().data_dir),
            dir_size(&v.config().data_log_dir)
        ),
        other => format!("Unknown command: {other}\n"),
    }
}

/// The session of each connection the executor serves (ZooKeeper names a watcher by its session; 0 for a
/// connection without one).
fn sessions_by_conn(v: &View) -> HashMap<ConnId, i64> {
    v.conns.iter().map(|c| (c.id, c.session_id)).collect()
}

/// `wchc`: per watching connection of the data table, its session (0 if unknown), then its paths; sorted
/// by session, paths sorted.
fn watches_by_session(
    by_conn: &[(ConnId, Vec<Arc<str>>)],
    sessions: &HashMap<ConnId, i64>,
) -> String {
    let mut entries: Vec<(i64, ConnId, Vec<&str>)> = by_conn
        .iter()
        .map(|(conn, paths)| {
            let mut p: Vec<&str> = paths.iter().map(|p| &**p).collect();
            p.sort_unstable();
            (sessions.get(conn).copied().unwrap_or(0), *conn, p)
        })
        .collect();
    entries.sort_unstable();
    let mut s = String::new();
    for (sid, _, paths) in entries {
        let _ = writeln!(s, "0x{sid:x}");
        for p in paths {
            let _ = writeln!(s, "\t{p}");
        }
    }
    s.push('\n');
    s
}

/// `wchp`: per path of the data table, the sessions of its watching connections (0 if unknown), in the
/// connections' order; sorted by path.
fn watches_by_path(by_path: &[(Arc<str>, Vec<ConnId>)], sessions: &HashMap<ConnId, i64>) -> String {
    let mut entries: Vec<&(Arc<str>, Vec<ConnId>)> = by_path.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::new();
    for (path, conns) in entries {
        let _ = writeln!(s, "{path}");
        for conn in conns {
            let _ = writeln!(s, "\t0x{:x}", sessions.get(conn).copied().unwrap_or(0));
        }
    }
    s.push('\n');
    s
}

fn dir_size(p: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(p)
}

fn server_stats(v: &View, with_clients: bool) -> String {
    let mut s = format!("Zookeeper version: {ZK_VERSION}, built on {BUILT_ON}\n");
    let lines = connection_lines(v, true);
    if with_clients {
        s.push_str("Clients:\n");
        for line in &lines {
            let _ = writeln!(s, "{line}");
        }
        s.push('\n');
    }
    let (min, avg, max) = v.stats().latency_min_avg_max();
    let _ = write!(
        s,
        "Latency min/avg/max: {min}/{}/{max}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: {}\nZxid: 0x{:x}\nMode: standalone\nNode count: {}\n",
        fmt_double(avg),
        v.stats().received(),
        v.stats().sent(),
        lines.len(),
        v.outstanding,
        v.last_zxid,
        v.sm.tree().node_count(),
    );
    if !v.wal.0.is_ok() {
        // Only when something is wrong, after ZooKeeper's lines, so parsers of a healthy srvr see no change.
        let _ = writeln!(s, "Storage: {}", v.wal.0);
    }
    s
}

/// Java's Double.toString for the small values we print: at least one decimal, at most 4 (ZooKeeper rounds).
fn fmt_double(x: f64) -> String {
    let r = (x * 10000.0).round() / 10000.0;
    let s = format!("{r}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// One line per open connection, as ZooKeeper's `ServerCnxn.dumpConnectionInfo` prints it (`brief` for
/// `stat`, full for `cons`): ` /<ip>:<port>[<interest ops>](queued=..,recved=..,sent=..[,sid=0x..,...])`.
/// A connection without a session has only the brief part.
fn connection_lines(v: &View, brief: bool) -> Vec<String> {
    let served: HashMap<ConnId, &ConnView> = v.conns.iter().map(|c| (c.id, c)).collect();
    let mut live = v.stats().live_connections();
    if !live.iter().any(|l| l.id == v.self_conn.0) {
        live.push(LiveConnView {
            id: v.self_conn.0,
            remote: v.self_conn.1,
            established_ms: 0,
            session_id: 0,
            four_letter: true,
            figures: ConnStats::cleared(),
        });
    }
    live.iter()
        .map(|l| match served.get(&l.id) {
            Some(c) => conn_line(c, l, brief),
            // Not selected while its command runs, one packet (the word) in.
            None if l.four_letter => {
                format!(" {}[0](queued=0,recved=1,sent=0)", fmt_addr(l.remote))
            }
            // Accepted, no ConnectRequest yet: selected for reading.
            None => format!(" {}[1](queued=0,recved=0,sent=0)", fmt_addr(l.remote)),
        })
        .collect()
}

fn conn_line(c: &ConnView, live: &LiveConnView, brief: bool) -> String {
    let st = &live.figures;
    // Interest ops: read, plus write while output is pending.
    let ops = if c.out_queued > 0 { 5 } else { 1 };
    let mut s = format!(
        " {}[{ops}](queued={},recved={},sent={}",
        fmt_addr(c.remote),
        c.queued,
        st.received,
        st.sent
    );
    if !brief && c.session_id != 0 {
        let _ = write!(
            s,
            ",sid=0x{:x},lop={},est={},to={}",
            c.session_id, st.last_op, live.established_ms, c.timeout_ms
        );
        if st.last_cxid >= 0 {
            let _ = write!(s, ",lcxid=0x{:x}", st.last_cxid);
        }
        let (min, avg, max) = st.latency_min_avg_max();
        let _ = write!(
            s,
            ",lzxid=0x{:x},lresp={},llat={},minlat={min},avglat={avg},maxlat={max}",
            st.last_zxid, st.last_response_ms, st.last_latency_ms
        );
    }
    s.push(')');
    s
}

/// `cons`: one full line per connection, then an empty line.
fn connections(v: &View) -> String {
    let mut s = String::new();
    for line in connection_lines(v, false) {
        let _ = writeln!(s, "{line}");
    }
    s.push('\n');
    s
}

/// `dump`: the session tracker's expiry buckets, the ephemerals by session and the connections' expiry
/// buckets, in the formats of ZooKeeper's `SessionTrackerImpl.dumpSessions`, `DataTree.dumpEphemerals`
/// and `NIOServerCnxnFactory.dumpConnections`.
fn dump(v: &View) -> String {
    let mut s = String::from("SessionTracker dump:\n");
    let (now_mono, now_wall) = v.clock;
    let date = |t: u64| java_date(now_wall + t as i64 - now_mono as i64);
    // The session sets are copied under the tracker's lock (every ping takes it) and written out after.
    let sets = v.tracker().lock().unwrap_or_else(|p| p.into_inner()).dump();
    s.push_str(&sets.text(date));
    s.push_str("ephemeral nodes dump:\n");
    let sessions = v.sm.sessions_with_ephemerals();
    let _ = writeln!(s, "Sessions with Ephemerals ({}):", sessions.len());
    for (id, paths) in sessions {
        let _ = writeln!(s, "0x{id:x}:");
        for p in paths {
            let _ = writeln!(s, "\t{p}");
        }
    }
    s.push_str("Connections dump:\n");
    s.push_str(&v.stats().dump_connections(now_mono, date));
    s
}

fn environment(v: &View) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_default();
    let home = std::env::var("HOME").unwrap_or_default();
    let _ = v;
    format!(
        "Environment:\nzookeeper.version={ZK_VERSION}, built on {BUILT_ON}\nhost.name={host}\njava.version=n/a (oxkeeper, Rust)\n\
         java.vendor=oxkeeper\njava.home=\njava.class.path=\njava.library.path=\njava.io.tmpdir={}\njava.compiler=<NA>\n\
         os.name={}\nos.arch={}\nos.version=\nuser.name={user}\nuser.home={home}\nuser.dir={cwd}\n\
         jvm.memory.free=0\njvm.memory.max=0\njvm.memory.total=0\n",
        std::env::temp_dir().display(),
        std::env::consts::OS,
        std::env::consts::ARCH,
    )
}

fn conf(v: &View) -> String {
    let c = v.config();
    format!(
        "clientPort={}\nsecureClientPort=-1\ndataDir={}\ndataDirSize={}\ndataLogDir={}\ndataLogSize={}\ntickTime={}\n\
         maxClientCnxns={}\nminSessionTimeout={}\nmaxSessionTimeout={}\nclientPortListenBacklog=-1\nserverId=0\n",
        c.client_port,
        c.data_dir.display(),
        dir_size(&c.data_dir),
        c.data_log_dir.display(),
        dir_size(&c.data_log_dir),
        c.tick_ms,
        c.max_client_cnxns,
        c.min_session_timeout_ms(),
        c.max_session_timeout_ms(),
    )
}

/// `mntr`: ZooKeeper's `zk_<key>\t<value>` lines, version and state first. Besides the server gauges, the
/// session and connection metrics of ZooKeeper 3.8 under its names. Those that only TLS (Netty), a quorum
/// or the optional `WatchManagerOptimized` can move are printed too, with the value they have in a
/// standalone plain-socket server, which is ours: 0.
fn monitor(v: &View) -> String {
    let (min, avg, max) = v.stats().latency_min_avg_max();
    let (_, watch_paths, _) = v.watches.summary;
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let mut s = String::new();
    let mut kv = |k: &str, val: String| {
        let _ = writeln!(s, "zk_{k}\t{val}");
    };
    kv("version", format!("{ZK_VERSION}, built on {BUILT_ON}"));
    kv("server_state", "standalone".into());
    kv("uptime", v.stats().uptime_ms().to_string());
    kv("avg_latency", fmt_double(avg));
    kv("max_latency", max.to_string());
    kv("min_latency", min.to_string());
    kv("packets_received", v.stats().received().to_string());
    kv("packets_sent", v.stats().sent().to_string());
    kv(
        "num_alive_connections",
        v.stats().alive_connections().to_string(),
    );
    kv("outstanding_requests", v.outstanding.to_string());
    kv("znode_count", v.sm.tree().node_count().to_string());
    kv("watch_count", v.watches.total.to_string());
    kv("watch_paths", watch_paths.to_string());
    kv("ephemerals_count", v.sm.ephemerals_count().to_string());
    kv(
        "approximate_data_size",
        v.sm.tree().approximate_data_size().to_string(),
    );
    kv("global_sessions", v.sm.session_count().to_string());
    // No local sessions (ZooKeeper's localSessionsEnabled is off by default, and oxkeeper has none).
    kv("local_sessions", "0".into());
    kv("open_file_descriptor_count", fds.to_string());
    kv("max_file_descriptor_count", max_fds().to_string());
    kv("last_zxid", v.last_zxid.to_string());
    // No connection throttle (BlueThrottle) is configured: nothing is dropped at random.
    kv("connection_drop_probability", "0.0".into());
    for counter in Counter::ALL {
        kv(counter.mntr_name(), v.stats().counter(counter).to_string());
    }
    // Followers revalidating their clients' sessions with a leader: none standalone.
    kv("revalidate_count", "0".into());
    // Netty only (accepting before the server runs, TLS handshakes, client certificates).
    for k in [
        "cnxn_closed_without_zk_server_running",
        "unsuccessful_handshake",
        "tls_handshake_exceeded",
        "outstanding_tls_handshake",
        "auth_failed_count",
        "non_mtls_remote_conn_count",
        "non_mtls_local_conn_count",
    ] {
        kv(k, "0".into());
    }
    // The WatcherCleaner of WatchManagerOptimized: watches of a closed connection are removed at once here,
    // as by ZooKeeper's default WatchManager, so nothing is ever queued for it.
    for k in [
        "dead_watchers_queued",
        "dead_watchers_cleared",
        "add_dead_watcher_stall_time",
    ] {
        kv(k, "0".into());
    }
    // Summaries (avg/min/max/cnt/sum, plus percentiles for ZooKeeper's "advanced" ones). The connection
    // throttle records its token deficit, 0 without a throttle, once per connection request.
    summary(
        &mut kv,
        "connection_token_deficit",
        v.stats().counter(Counter::ConnectionRequest),
        false,
    );
    summary(&mut kv, "dead_watchers_cleaner_latency", 0, true);
    // oxkeeper's own (DEVIATIONS.md: stalls, paced expiry).
    kv("oxkeeper_stall_count", v.stalls.stalls.to_string());
    kv("oxkeeper_stalled_ms", v.stalls.stalled_ms.to_string());
    kv("oxkeeper_longest_stall_ms", v.stalls.longest_ms.to_string());
    kv(
        "oxkeeper_session_expiry_backlog",
        v.expiry_backlog.to_string(),
    );
    let (state, since) = match &v.wal.0 {
        oxkeeper_storage::WalHealth::Ok => ("ok", 0),
        oxkeeper_storage::WalHealth::OutOfSpace { since, .. } => {
            ("out_of_space", since.elapsed().as_secs())
        }
        oxkeeper_storage::WalHealth::Failed(_) => ("failed", 0),
    };
    kv("oxkeeper_log_state", state.into());
    kv("oxkeeper_log_out_of_space_seconds", since.to_string());
    kv(
        "oxkeeper_log_no_space_retries",
        v.wal.1.no_space_retries.to_string(),
    );
    // Group commit at work: log entries and fdatasyncs (one per batch) so far.
    kv("oxkeeper_log_syncs", v.wal.1.batches.to_string());
    kv(
        "oxkeeper_log_syncs_on_apply_thread",
        v.wal.1.caller_batches.to_string(),
    );
    // Connections moved off the apply thread while it was held in an fdatasync, and those idle there now
    // (`crate::home`: the readers of clients that write).
    kv(
        "oxkeeper_connections_moved_off_apply",
        v.shared.homes.moved().to_string(),
    );
    kv(
        "oxkeeper_connections_parked_on_apply",
        v.shared.homes.parked().to_string(),
    );
    // The apply thread's lingering after its replies (`crate::linger`): with the next request in, or not.
    kv(
        "oxkeeper_lingers_caught",
        v.shared.lingers.caught().to_string(),
    );
    kv(
        "oxkeeper_lingers_missed",
        v.shared.lingers.missed().to_string(),
    );
    // Turns the executor let openraft's tasks catch up before proposing (`Executor::flush_proposals`).
    kv(
        "oxkeeper_openraft_lag_yields",
        v.shared.replicator.gate().lag_yields().to_string(),
    );
    kv("oxkeeper_log_entries", v.wal.1.entries.to_string());
    kv("oxkeeper_log_write_us", v.wal.1.write_us.to_string());
    kv("oxkeeper_log_entry_bytes", v.wal.1.entry_bytes.to_string());
    // A snapshot that could not be written (a full device) is tried again until it is; meanwhile the log
    // is not purged.
    kv(
        "oxkeeper_snapshot_write_failures",
        v.snapshot_failures.to_string(),
    );
    kv(
        "oxkeeper_transactions_since_snapshot",
        v.since_snapshot.to_string(),
    );
    kv(
        "oxkeeper_snapshot_pending",
        u8::from(v.snapshot_pending).to_string(),
    );
    s
}

/// A ZooKeeper summary whose every sample is 0: `avg_`, `min_`, `max_`, `cnt_`, `sum_` and, for an
/// advanced one, `p50_`, `p95_`, `p99_`, `p999_`.
fn summary(kv: &mut impl FnMut(&str, String), name: &str, count: u64, advanced: bool) {
    kv(&format!("avg_{name}"), "0.0".into());
    for stat in ["min", "max"] {
        kv(&format!("{stat}_{name}"), "0".into());
    }
    kv(&format!("cnt_{name}"), count.to_string());
    kv(&format!("sum_{name}"), "0".into());
    if advanced {
        for p in ["p50", "p95", "p99", "p999"] {
            kv(&format!("{p}_{name}"), "0".into());
        }
    }
}

fn max_fds() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wchc_and_wchp_name_connections_by_session_in_order() {
        let mut w = WatchTable::new();
        w.add(7, "/b", oxkeeper_core::watches::WatchKind::Data);
        w.add(7, "/a", oxkeeper_core::watches::WatchKind::Data);
        w.add(3, "/b", oxkeeper_core::watches::WatchKind::Data);
        w.add(9, "/c", oxkeeper_core::watches::WatchKind::Data);
        w.add(5, "/d", oxkeeper_core::watches::WatchKind::Child); // child watches are not listed
                                                                  // Connection 9 has no session the executor knows of (ZooKeeper prints 0).
        let sessions: HashMap<ConnId, i64> = [(7, 0x20), (3, 0x1f)].into_iter().collect();
        let facts = WatchFacts::of("wchc", &w);
        assert!(facts.by_path.is_empty());
        assert_eq!(
            watches_by_session(&facts.by_conn, &sessions),
            "0x0\n\t/c\n0x1f\n\t/b\n0x20\n\t/a\n\t/b\n\n"
        );
        let facts = WatchFacts::of("wchp", &w);
        assert!(facts.by_conn.is_empty());
        assert_eq!(
            watches_by_path(&facts.by_path, &sessions),
            "/a\n\t0x20\n/b\n\t0x1f\n\t0x20\n/c\n\t0x0\n\n"
        );
        assert_eq!(WatchFacts::of("wchs", &w).summary, (3, 3, 4));
        let mntr = WatchFacts::of("mntr", &w);
        assert_eq!((mntr.summary, mntr.total), ((3, 3, 4), 5));
    }

    #[test]
    fn doubles_print_like_java() {
        assert_eq!(fmt_double(0.0), "0.0");
        assert_eq!(fmt_double(1.5), "1.5");
        assert_eq!(fmt_double(0.123456), "0.1235");
    }

    #[test]
    fn dates_print_like_java_date_to_string() {
        // 2026-07-17 13:55:24 UTC was a Friday.
        assert_eq!(java_date(1_784_296_524_000), "Fri Jul 17 13:55:24 UTC 2026");
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
    }
}
