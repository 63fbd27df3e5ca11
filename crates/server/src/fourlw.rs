//! Four-letter words: ZooKeeper's plain-text admin commands, in ZooKeeper's output formats.
//!
//! Built from a read-only view the executor hands over, so the text is consistent with one point in time.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Mutex;

use oxkeeper_core::state::StateMachine;
use oxkeeper_core::tracker::SessionTracker;
use oxkeeper_core::watches::WatchTable;

use crate::config::Config;
use crate::connection::ConnId;
use crate::stats::{ConnStats, ServerStats};

/// The ZooKeeper release whose feature set we implement; clients parse it from `srvr` and `envi`.
pub const ZK_VERSION: &str = concat!("3.9.3-oxkeeper-", env!("CARGO_PKG_VERSION"));
pub const BUILT_ON: &str = "2026-11-21 00:00 UTC";

pub struct ConnView<'a> {
    pub id: ConnId,
    pub remote: SocketAddr,
    pub queued: usize,
    pub session_id: i64,
    pub timeout_ms: i32,
    pub stats: &'a ConnStats,
}

pub struct View<'a> {
    pub config: &'a Config,
    pub stats: &'a ServerStats,
    pub sm: &'a StateMachine,
    pub watches: &'a WatchTable,
    pub tracker: &'a Mutex<SessionTracker>,
    pub conns: Vec<ConnView<'a>>,
    /// The four-letter word's own connection, which ZooKeeper counts and lists too.
    pub self_conn: (ConnId, SocketAddr),
    pub last_zxid: i64,
    pub outstanding: usize,
    /// (monotonic ms of the tracker's clock, wall-clock ms) at the same instant, to print tracker deadlines.
    pub clock: (u64, i64),
}

/// Java's `Date.toString()` in UTC: `EEE MMM dd HH:mm:ss zzz yyyy`.
pub fn java_date(wall_ms: i64) -> String {
    let secs = wall_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = DAYS[days.rem_euclid(7) as usize];
    format!(
        "{wd} {} {d:02} {h:02}:{m:02}:{s:02} UTC {y}",
        MONTHS[(mo - 1) as usize]
    )
}

pub fn run(word: &str, v: &View<'_>) -> String {
    match word {
        "ruok" => "imok".into(),
        "isro" => "rw".into(),
        "srvr" => server_stats(v, false),
        "stat" => server_stats(v, true),
        "cons" => connections(v, false),
        "crst" => "Connection stats reset.\n".into(),
        "srst" => "Server stats reset.\n".into(),
        "dump" => dump(v),
        "envi" => environment(v),
        "conf" => conf(v),
        "mntr" => monitor(v),
        "wchs" => {
            let (conns, paths, total) = v.watches.data_watch_summary();
            format!("{conns} connections watching {paths} paths\nTotal watches:{total}\n")
        }
        "wchc" => {
            let mut s = String::new();
            for (sid, paths) in v
                .watches
                .data_watches_by_session(|conn| session_of(v, conn))
            {
                let _ = writeln!(s, "0x{sid:x}");
                for p in paths {
                    let _ = writeln!(s, "\t{p}");
                }
            }
            s.push('\n');
            s
        }
        "wchp" => {
            let mut s = String::new();
            for (path, sids) in v.watches.data_watches_by_path(|conn| session_of(v, conn)) {
                let _ = writeln!(s, "{path}");
                for sid in sids {
                    let _ = writeln!(s, "\t0x{sid:x}");
                }
            }
            s.push('\n');
            s
        }
        "dirs" => format!(
            "datadir_size: {}\nlogdir_size: {}\n",
            dir_size(&v.config.data_dir),
            dir_size(&v.config.data_log_dir)
        ),
        other => format!("Unknown command: {other}\n"),
    }
}

fn session_of(v: &View<'_>, conn: ConnId) -> i64 {
    v.conns
        .iter()
        .find(|c| c.id == conn)
        .map(|c| c.session_id)
        .unwrap_or(0)
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

fn server_stats(v: &View<'_>, with_clients: bool) -> String {
    let mut s = format!("Zookeeper version: {ZK_VERSION}, built on {BUILT_ON}\n");
    if with_clients {
        s.push_str("Clients:\n");
        for c in &v.conns {
            let _ = writeln!(s, "{}", conn_line(c, true));
        }
        let _ = writeln!(
            s,
            " {}[0](queued=0,recved=1,sent=0)",
            fmt_addr(v.self_conn.1)
        );
        s.push('\n');
    }
    let (min, avg, max) = v.stats.latency_min_avg_max();
    let _ = write!(
        s,
        "Latency min/avg/max: {min}/{}/{max}\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: {}\nZxid: 0x{:x}\nMode: standalone\nNode count: {}\n",
        fmt_double(avg),
        v.stats.received(),
        v.stats.sent(),
        v.conns.len() + 1,
        v.outstanding,
        v.last_zxid,
        v.sm.tree().node_count(),
    );
    s
}

fn fmt_addr(a: SocketAddr) -> String {
    format!("/{}:{}", a.ip(), a.port())
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

fn conn_line(c: &ConnView<'_>, brief: bool) -> String {
    let st = c.stats;
    let mut s = format!(
        " {}[1](queued={},recved={},sent={}",
        fmt_addr(c.remote),
        c.queued,
        st.received,
        st.sent
    );
    if !brief && c.session_id != 0 {
        let _ = write!(
            s,
            ",sid=0x{:x},lop={},est={},to={}",
            c.session_id, st.last_op, st.established_ms, c.timeout_ms
        );
        if st.last_cxid >= 0 {
            let _ = write!(s, ",lcxid=0x{:x}", st.last_cxid);
        }
        let (min, avg, max) = if st.count == 0 {
            (0, 0, 0)
        } else {
            (
                st.min_latency_ms,
                st.total_latency_ms / st.count,
                st.max_latency_ms,
            )
        };
        let _ = write!(
            s,
            ",lzxid=0x{:x},lresp={},llat={},minlat={},avglat={},maxlat={}",
            st.last_zxid, st.last_response_ms, st.last_latency_ms, min, avg, max
        );
    }
    s.push(')');
    s
}

fn connections(v: &View<'_>, _brief: bool) -> String {
    let mut s = String::new();
    for c in &v.conns {
        let _ = writeln!(s, "{}", conn_line(c, false));
    }
    let _ = writeln!(
        s,
        " {}[0](queued=0,recved=1,sent=0)",
        fmt_addr(v.self_conn.1)
    );
    s.push('\n');
    s
}

fn dump(v: &View<'_>) -> String {
    let mut s = String::from("SessionTracker dump:\n");
    let (now_mono, now_wall) = v.clock;
    let date = |t: u64| java_date(now_wall + t as i64 - now_mono as i64);
    s.push_str(
        &v.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dump_text(date),
    );
    s.push_str("ephemeral nodes dump:\n");
    let sessions: Vec<(i64, Vec<String>)> =
        v.sm.sessions()
            .map(|(id, _)| (id, v.sm.ephemerals(id)))
            .filter(|(_, e)| !e.is_empty())
            .collect();
    let _ = writeln!(s, "Sessions with Ephemerals ({}):", sessions.len());
    for (id, paths) in sessions {
        let _ = writeln!(s, "0x{id:x}:");
        for p in paths {
            let _ = writeln!(s, "\t{p}");
        }
    }
    s.push_str("Connections dump:\n");
    s
}

fn environment(v: &View<'_>) -> String {
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

fn conf(v: &View<'_>) -> String {
    let c = v.config;
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

fn monitor(v: &View<'_>) -> String {
    let (min, avg, max) = v.stats.latency_min_avg_max();
    let (_, watch_paths, _) = v.watches.data_watch_summary();
    let ephemerals: usize =
        v.sm.sessions()
            .map(|(id, _)| v.sm.ephemerals(id).len())
            .sum();
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    let mut s = String::new();
    let mut kv = |k: &str, val: String| {
        let _ = writeln!(s, "zk_{k}\t{val}");
    };
    kv("version", format!("{ZK_VERSION}, built on {BUILT_ON}"));
    kv("server_state", "standalone".into());
    kv("avg_latency", fmt_double(avg));
    kv("max_latency", max.to_string());
    kv("min_latency", min.to_string());
    kv("packets_received", v.stats.received().to_string());
    kv("packets_sent", v.stats.sent().to_string());
    kv("num_alive_connections", (v.conns.len() + 1).to_string());
    kv("outstanding_requests", v.outstanding.to_string());
    kv("znode_count", v.sm.tree().node_count().to_string());
    kv("watch_count", v.watches.total_watch_count().to_string());
    kv("watch_paths", watch_paths.to_string());
    kv("ephemerals_count", ephemerals.to_string());
    kv(
        "approximate_data_size",
        v.sm.tree().approximate_data_size().to_string(),
    );
    kv("global_sessions", v.sm.sessions().count().to_string());
    kv("local_sessions", "0".into());
    kv("open_file_descriptor_count", fds.to_string());
    kv("max_file_descriptor_count", max_fds().to_string());
    kv("last_zxid", v.last_zxid.to_string());
    s
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
