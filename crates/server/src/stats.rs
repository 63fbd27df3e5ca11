//! Counters behind `srvr`, `stat`, `cons`, `dump` and `mntr`, with ZooKeeper's meanings.
//!
//! [`ServerStats`] holds the server-wide figures (ZooKeeper's `ServerStats` and the session and connection
//! counters of its `ServerMetrics`) and the table of open connections (what ZooKeeper's connection factory
//! knows: every socket, including those without a session, and their expiry queue). [`ConnStats`] is one
//! connection's request figures, kept by the executor. Nothing here does I/O; times come in as arguments
//! or from the clock helpers at the bottom.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use oxkeeper_core::tracker::ExpiryQueue;
use oxkeeper_proto::OpCode;

use crate::connection::ConnId;

pub struct ServerStats {
    started: Instant,
    packets_received: AtomicU64,
    packets_sent: AtomicU64,
    latency_count: AtomicU64,
    latency_total_ms: AtomicU64,
    latency_min_ms: AtomicI64,
    latency_max_ms: AtomicI64,
    counters: [AtomicU64; Counter::ALL.len()],
    connections: Mutex<ConnTable>,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            started: Instant::now(),
            packets_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            latency_total_ms: AtomicU64::new(0),
            latency_min_ms: AtomicI64::new(0),
            latency_max_ms: AtomicI64::new(0),
            counters: Default::default(),
            connections: Mutex::new(ConnTable::default()),
        }
    }
}

/// ZooKeeper's session and connection counters (its `ServerMetrics` counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// ConnectRequests read (ZooKeeper counts them once parsed, before anything can refuse them).
    ConnectionRequest,
    /// ConnectRequests that try to resume a session (not refused for a lastZxidSeen ahead of ours).
    ConnectionRevalidate,
    /// Connections the client closed (end of stream) while the server still meant to read from them.
    ConnectionDrop,
    /// Connections refused at accept (maxClientCnxns, or accept itself failed).
    ConnectionRejected,
    /// Connections closed for sending no ConnectRequest within `nio.sessionlessCnxnTimeout`.
    SessionlessConnectionExpired,
    /// Sessions the session tracker found past their deadline (each time it finds one).
    StaleSessionExpired,
    /// Bytes of the packets received: 4 per four-letter word, length prefix plus payload per frame.
    BytesReceived,
}

impl Counter {
    pub const ALL: [Counter; 7] = [
        Counter::ConnectionRequest,
        Counter::ConnectionRevalidate,
        Counter::ConnectionDrop,
        Counter::ConnectionRejected,
        Counter::SessionlessConnectionExpired,
        Counter::StaleSessionExpired,
        Counter::BytesReceived,
    ];

    /// The key `mntr` prints it under (after `zk_`), ZooKeeper's.
    pub fn mntr_name(self) -> &'static str {
        match self {
            Counter::ConnectionRequest => "connection_request_count",
            Counter::ConnectionRevalidate => "connection_revalidate_count",
            Counter::ConnectionDrop => "connection_drop_count",
            Counter::ConnectionRejected => "connection_rejected",
            Counter::SessionlessConnectionExpired => "sessionless_connections_expired",
            Counter::StaleSessionExpired => "stale_sessions_expired",
            Counter::BytesReceived => "bytes_received_count",
        }
    }
}

impl ServerStats {
    pub fn packet_received(&self) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
    }
    pub fn packet_sent(&self) {
        self.packets_sent.fetch_add(1, Ordering::Relaxed);
    }
    pub fn latency(&self, d: Duration) {
        let ms = d.as_millis() as i64;
        let n = self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_total_ms
            .fetch_add(ms as u64, Ordering::Relaxed);
        if n == 0 {
            self.latency_min_ms.store(ms, Ordering::Relaxed);
        } else {
            self.latency_min_ms.fetch_min(ms, Ordering::Relaxed);
        }
        self.latency_max_ms.fetch_max(ms, Ordering::Relaxed);
    }
    pub fn received(&self) -> u64 {
        self.packets_received.load(Ordering::Relaxed)
    }
    pub fn sent(&self) -> u64 {
        self.packets_sent.load(Ordering::Relaxed)
    }
    /// (min, avg, max) in ms, ZooKeeper's `Latency min/avg/max`.
    pub fn latency_min_avg_max(&self) -> (i64, f64, i64) {
        let n = self.latency_count.load(Ordering::Relaxed);
        if n == 0 {
            return (0, 0.0, 0);
        }
        let total = self.latency_total_ms.load(Ordering::Relaxed) as f64;
        (
            self.latency_min_ms.load(Ordering::Relaxed),
            total / n as f64,
            self.latency_max_ms.load(Ordering::Relaxed),
        )
    }
    /// Milliseconds since the server started (`zk_uptime`).
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// `srst`: ZooKeeper resets the latency and packet figures and every `ServerMetrics` counter; gauges
    /// (connections, sessions) and the connections' own figures stay.
    pub fn reset(&self) {
        self.packets_received.store(0, Ordering::Relaxed);
        self.packets_sent.store(0, Ordering::Relaxed);
        self.latency_count.store(0, Ordering::Relaxed);
        self.latency_total_ms.store(0, Ordering::Relaxed);
        self.latency_min_ms.store(0, Ordering::Relaxed);
        self.latency_max_ms.store(0, Ordering::Relaxed);
        for c in &self.counters {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Counts one more of `c`.
    pub fn count(&self, c: Counter) {
        self.add(c, 1);
    }
    pub fn add(&self, c: Counter, n: u64) {
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }

    fn table(&self) -> MutexGuard<'_, ConnTable> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A socket was accepted. Until it sends a ConnectRequest its timeout is the sessionless one, which is
    /// also the width of the connection expiry buckets (as in ZooKeeper's NIO factory).
    pub fn cnxn_opened(
        &self,
        conn: ConnId,
        remote: SocketAddr,
        session: Arc<AtomicI64>,
        figures: SharedConnStats,
        sessionless_timeout_ms: u64,
        now_ms: u64,
    ) {
        let mut t = self.table();
        t.expiry
            .get_or_insert_with(|| ExpiryQueue::new(sessionless_timeout_ms));
        t.live.insert(
            conn,
            LiveConn {
                id: conn,
                remote,
                established_ms: wall_ms(),
                session,
                timeout_ms: sessionless_timeout_ms,
                four_letter: false,
                figures,
            },
        );
        t.touch(conn, now_ms);
    }

    /// The connection did I/O: its expiry moves to `now + its timeout`.
    pub fn cnxn_touched(&self, conn: ConnId, now_ms: u64) {
        let mut t = self.table();
        t.touch(conn, now_ms);
    }

    /// The connection's ConnectRequest asked for a session: from now on its timeout is the negotiated one.
    pub fn cnxn_session_timeout(&self, conn: ConnId, timeout_ms: u64, now_ms: u64) {
        let mut t = self.table();
        if let Some(c) = t.live.get_mut(&conn) {
            c.timeout_ms = timeout_ms;
        }
        t.touch(conn, now_ms);
    }

    /// The connection's first bytes were a four-letter word.
    pub fn cnxn_four_letter(&self, conn: ConnId) {
        if let Some(c) = self.table().live.get_mut(&conn) {
            c.four_letter = true;
        }
    }

    /// The connection's reader answered a ping itself (the executor never sees it).
    pub fn cnxn_pinged(&self, conn: ConnId, zxid: i64, took: Duration) {
        if let Some(c) = self.table().live.get(&conn) {
            c.figures.pinged(zxid, took);
        }
    }

    /// The figures of an open connection, shared with its reader and the executor.
    pub fn cnxn_figures(&self, conn: ConnId) -> Option<SharedConnStats> {
        self.table().live.get(&conn).map(|c| c.figures.clone())
    }

    pub fn cnxn_closed(&self, conn: ConnId) {
        let mut t = self.table();
        t.live.remove(&conn);
        if let Some(q) = t.expiry.as_mut() {
            q.remove(conn);
        }
    }

    /// Open connections (`num_alive_connections`, `Connections:` of `srvr`).
    pub fn alive_connections(&self) -> usize {
        self.table().live.len()
    }

    /// The open connections, by id.
    pub fn live_connections(&self) -> Vec<LiveConnView> {
        self.table()
            .live
            .values()
            .map(|c| LiveConnView {
                id: c.id,
                remote: c.remote,
                established_ms: c.established_ms,
                session_id: c.session.load(Ordering::Acquire),
                four_letter: c.four_letter,
                figures: c.figures.lock().clone(),
            })
            .collect()
    }

    /// `crst` of every open connection's figures.
    pub fn reset_connection_stats(&self) {
        for c in self.table().live.values() {
            c.figures.lock().reset();
        }
    }

    /// The connection part of `dump` (ZooKeeper's `NIOServerCnxnFactory.dumpConnections`):
    /// `Connections Sets (<buckets>)/(<connections>):`, then per bucket `<n> expire at <date>:` and one
    /// `\tip: /<addr>:<port> sessionId: 0x<id>` line per connection. Buckets whose time has come are gone
    /// (ZooKeeper's expirer takes them at once). `date` turns a bucket time into the text to show.
    pub fn dump_connections(&self, now_ms: u64, date: impl Fn(u64) -> String) -> String {
        use std::fmt::Write as _;
        let mut t = self.table();
        let Some(expiry) = t.expiry.as_mut() else {
            return "Connections Sets (0)/(0):\n".into();
        };
        expiry.poll(now_ms);
        let d = expiry.dump();
        let mut s = format!("Connections Sets ({})/({}):\n", d.buckets.len(), d.elements);
        for (time, ids) in d.buckets {
            let _ = writeln!(s, "{} expire at {}:", ids.len(), date(time));
            for id in ids {
                let (addr, sid) = t
                    .live
                    .get(&id)
                    .map(|c| (fmt_addr(c.remote), c.session.load(Ordering::Acquire)))
                    .unwrap_or_default();
                let _ = writeln!(s, "\tip: {addr} sessionId: 0x{sid:x}");
            }
        }
        s
    }
}

/// Java's `InetSocketAddress.toString()` for an address without a host name: `/<ip>:<port>`.
pub fn fmt_addr(a: SocketAddr) -> String {
    format!("/{}:{}", a.ip(), a.port())
}

#[derive(Default)]
struct ConnTable {
    /// ZooKeeper's `cnxnExpiryQueue`: each connection's last I/O plus its timeout, in buckets as wide as
    /// the sessionless timeout. Only shown by `dump`: sessions, not this queue, close idle connections.
    /// Created by the first connection, which brings the width.
    expiry: Option<ExpiryQueue<ConnId>>,
    live: BTreeMap<ConnId, LiveConn>,
}

impl ConnTable {
    fn touch(&mut self, conn: ConnId, now_ms: u64) {
        let Some(timeout) = self.live.get(&conn).map(|c| c.timeout_ms) else {
            return;
        };
        if let Some(q) = self.expiry.as_mut() {
            // Buckets whose time has passed are dropped here, so the queue stays as small as the number
            // of buckets ahead.
            q.poll(now_ms);
            q.update(conn, timeout, now_ms);
        }
    }
}

struct LiveConn {
    id: ConnId,
    remote: SocketAddr,
    /// Wall-clock ms of the accept (`est=` of `cons`).
    established_ms: i64,
    /// The connection's session id, 0 until the executor establishes one.
    session: Arc<AtomicI64>,
    timeout_ms: u64,
    four_letter: bool,
    figures: SharedConnStats,
}

/// What `cons`/`stat` need of an open connection, beyond what the executor keeps.
#[derive(Debug, Clone)]
pub struct LiveConnView {
    pub id: ConnId,
    pub remote: SocketAddr,
    pub established_ms: i64,
    pub session_id: i64,
    pub four_letter: bool,
    pub figures: ConnStats,
}

/// One connection's [`ConnStats`], kept together by its reader (which answers pings) and the executor
/// (everything else): one copy per connection, in response order without any merging.
#[derive(Debug, Clone)]
pub struct SharedConnStats(Arc<Mutex<ConnStats>>);

impl SharedConnStats {
    pub fn new(now_wall_ms: i64) -> Self {
        SharedConnStats(Arc::new(Mutex::new(ConnStats::new(now_wall_ms))))
    }

    pub fn lock(&self) -> MutexGuard<'_, ConnStats> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection's reader answered a ping itself (the executor never sees it); ZooKeeper counts it
    /// like any other request.
    pub fn pinged(&self, zxid: i64, took: Duration) {
        let mut s = self.lock();
        s.received += 1;
        s.sent += 1;
        s.completed(OpCode::Ping, oxkeeper_proto::xid::PING, zxid, took);
    }
}

/// Per-connection figures for `cons`, with the values ZooKeeper's `ServerCnxn` starts from: a new
/// connection shows `lop=null`, `lcxid=0x0`, `lzxid=0x0` until its first response (its constructor sets
/// nothing), while `crst` resets to `lop=NA`, no `lcxid`, `lzxid=0xffffffffffffffff`.
#[derive(Debug, Clone)]
pub struct ConnStats {
    pub received: u64,
    pub sent: u64,
    pub established_ms: i64,
    pub last_op: &'static str,
    pub last_cxid: i64,
    pub last_zxid: i64,
    /// ZooKeeper's `Time.currentElapsedTime()` of the last response: monotonic ms, not wall-clock.
    pub last_response_ms: i64,
    pub last_latency_ms: i64,
    /// `i64::MAX` after `crst` until the next response (shown as 0).
    pub min_latency_ms: i64,
    pub max_latency_ms: i64,
    pub total_latency_ms: i64,
    pub count: i64,
}

impl ConnStats {
    pub fn new(now_wall_ms: i64) -> Self {
        ConnStats {
            received: 0,
            sent: 0,
            established_ms: now_wall_ms,
            last_op: "null",
            last_cxid: 0,
            last_zxid: 0,
            last_response_ms: 0,
            last_latency_ms: 0,
            min_latency_ms: 0,
            max_latency_ms: 0,
            total_latency_ms: 0,
            count: 0,
        }
    }
    /// A session is established on this connection. ZooKeeper records nothing here: a resumed session
    /// shows the connection's initial figures; a new one is recorded by [`ConnStats::session_created`].
    pub fn session_established(&mut self, _id: i64, _timeout: i32) {}
    /// The createSession that this connection asked for was applied at `zxid`: recorded as ZooKeeper's
    /// FinalRequestProcessor does (`lop=SESS`, cxid 0, latency since the ConnectRequest).
    pub fn session_created(&mut self, zxid: i64) {
        let took = (wall_ms() - self.established_ms).max(0) as u64;
        self.completed(OpCode::CreateSession, 0, zxid, Duration::from_millis(took));
    }
    pub fn completed(&mut self, op: OpCode, xid: i32, zxid: i64, took: Duration) {
        let ms = took.as_millis() as i64;
        self.last_op = last_op_name(op);
        if xid >= 0 {
            self.last_cxid = xid as i64;
        }
        self.last_zxid = zxid;
        self.last_response_ms = elapsed_ms();
        self.last_latency_ms = ms;
        self.min_latency_ms = self.min_latency_ms.min(ms);
        self.max_latency_ms = self.max_latency_ms.max(ms);
        self.total_latency_ms += ms;
        self.count += 1;
    }
    /// What `crst` leaves (ZooKeeper's `ServerCnxn.resetStats`), with no establishment time.
    pub fn cleared() -> Self {
        ConnStats {
            last_op: "NA",
            last_cxid: -1,
            last_zxid: -1,
            min_latency_ms: i64::MAX,
            ..ConnStats::new(0)
        }
    }
    /// `crst`.
    pub fn reset(&mut self) {
        *self = ConnStats {
            established_ms: self.established_ms,
            ..ConnStats::cleared()
        };
    }
    /// (min, avg, max) latency as `cons` prints them (integer ms; ZooKeeper's `getMinLatency` shows
    /// "none yet" as 0).
    pub fn latency_min_avg_max(&self) -> (i64, i64, i64) {
        let min = if self.min_latency_ms == i64::MAX {
            0
        } else {
            self.min_latency_ms
        };
        let avg = if self.count == 0 {
            0
        } else {
            self.total_latency_ms / self.count
        };
        (min, avg, self.max_latency_ms)
    }
}

/// ZooKeeper's four-letter names of the last operation (`Request.op2String` abbreviations in `cons`).
pub fn last_op_name(op: OpCode) -> &'static str {
    match op {
        OpCode::Ping => "PING",
        OpCode::CreateSession => "SESS",
        OpCode::Create | OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => "CREA",
        OpCode::Delete | OpCode::DeleteContainer => "DELE",
        OpCode::SetData => "SETD",
        OpCode::SetAcl => "SETA",
        OpCode::GetData => "GETD",
        OpCode::GetChildren | OpCode::GetChildren2 => "GETC",
        OpCode::GetAcl => "GETA",
        OpCode::Exists => "EXIS",
        OpCode::Sync => "SYNC",
        OpCode::Check => "CHEC",
        OpCode::Multi => "MULT",
        OpCode::MultiRead => "MLTR",
        OpCode::CloseSession => "CLOS",
        OpCode::SetWatches => "SETW",
        OpCode::SetWatches2 => "STW2",
        OpCode::AddWatch => "ADDW",
        OpCode::CheckWatches => "CHKW",
        OpCode::RemoveWatches => "REMW",
        OpCode::WhoAmI => "HOMI",
        OpCode::GetEphemerals => "GETE",
        OpCode::GetAllChildrenNumber => "GETACN",
        OpCode::Reconfig => "RECO",
        _ => "NA",
    }
}

/// Wall-clock milliseconds since the epoch.
fn wall_ms() -> i64 {
    crate::executor::wall_ms()
}

/// ZooKeeper's `Time.currentElapsedTime()` (`System.nanoTime() / 10^6`): CLOCK_MONOTONIC in milliseconds,
/// which `cons` prints as `lresp`.
pub fn elapsed_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and reads nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn new_connection_shows_zookeepers_initial_figures_and_crst_its_reset_ones() {
        let mut s = ConnStats::new(5);
        assert_eq!((s.last_op, s.last_cxid, s.last_zxid), ("null", 0, 0));
        assert_eq!(s.latency_min_avg_max(), (0, 0, 0));
        // ZooKeeper's minimum starts at 0, not "none", so it stays 0 until crst.
        s.completed(OpCode::Exists, 3, 7, Duration::from_millis(4));
        assert_eq!(s.latency_min_avg_max(), (0, 4, 4));
        s.reset();
        assert_eq!((s.last_op, s.last_cxid, s.last_zxid), ("NA", -1, -1));
        assert_eq!((s.received, s.sent, s.established_ms), (0, 0, 5));
        assert_eq!(s.latency_min_avg_max(), (0, 0, 0));
        s.completed(OpCode::GetData, -2, 8, Duration::from_millis(2));
        assert_eq!(s.last_cxid, -1, "special xids do not replace the last cxid");
        assert_eq!(s.latency_min_avg_max(), (2, 2, 2));
    }

    #[test]
    fn srst_resets_counters_but_not_connections() {
        let st = ServerStats::default();
        st.cnxn_opened(1, addr(1), Arc::default(), SharedConnStats::new(0), 1000, 0);
        st.count(Counter::ConnectionRequest);
        st.count(Counter::ConnectionDrop);
        st.add(Counter::BytesReceived, 49);
        assert_eq!(st.counter(Counter::ConnectionRequest), 1);
        assert_eq!(st.counter(Counter::BytesReceived), 49);
        st.reset();
        assert!(Counter::ALL.iter().all(|c| st.counter(*c) == 0));
        assert_eq!(st.alive_connections(), 1);
    }

    #[test]
    fn connections_dump_buckets_by_last_io_plus_timeout() {
        let st = ServerStats::default();
        let session = Arc::new(AtomicI64::new(0));
        st.cnxn_opened(
            1,
            addr(40001),
            session.clone(),
            SharedConnStats::new(0),
            1000,
            100,
        );
        st.cnxn_opened(
            2,
            addr(40002),
            Arc::default(),
            SharedConnStats::new(0),
            1000,
            200,
        );
        let date = |t: u64| format!("t{t}");
        assert_eq!(
            st.dump_connections(300, date),
            "Connections Sets (1)/(2):\n2 expire at t2000:\n\tip: /127.0.0.1:40001 sessionId: 0x0\n\
             \tip: /127.0.0.1:40002 sessionId: 0x0\n"
        );
        // A ConnectRequest: the connection's timeout becomes the session's.
        st.cnxn_session_timeout(1, 10_000, 500);
        session.store(0x1ab, Ordering::Release);
        st.cnxn_closed(2);
        // The bucket both left stays, empty, until its time passes.
        assert_eq!(
            st.dump_connections(600, date),
            "Connections Sets (2)/(1):\n0 expire at t2000:\n\
             1 expire at t11000:\n\tip: /127.0.0.1:40001 sessionId: 0x1ab\n"
        );
        assert_eq!(
            st.dump_connections(2000, date),
            "Connections Sets (1)/(1):\n1 expire at t11000:\n\tip: /127.0.0.1:40001 sessionId: 0x1ab\n"
        );
        assert_eq!(st.alive_connections(), 1);
    }
}
