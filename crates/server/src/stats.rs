//! Counters behind `srvr`, `stat`, `cons`, `dump` and `mntr`, with ZooKeeper's meanings.
//!
//! [`ServerStats`] holds the server-wide figures (ZooKeeper's `ServerStats` and the session and connection
//! counters of its `ServerMetrics`) and the table of open connections (what ZooKeeper's connection factory
//! knows: every socket, including those without a session, and their expiry queue). [`ConnStats`] is one
//! connection's request figures, kept by the executor. Nothing here does I/O; times come in as arguments
//! or from the clock helpers at the bottom.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// The width of the connection expiry buckets (the sessionless timeout), set by the first connection;
    /// 0 before.
    cnxn_bucket_ms: AtomicU64,
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
            cnxn_bucket_ms: AtomicU64::new(0),
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
    /// How many requests the latency figures count.
    pub fn latency_samples(&self) -> u64 {
        self.latency_count.load(Ordering::Relaxed)
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

    /// A socket was accepted (`info` made with the sessionless timeout, which is also the width of the
    /// connection expiry buckets, as in ZooKeeper's NIO factory).
    pub fn cnxn_opened(&self, info: Arc<ConnInfo>, sessionless_timeout_ms: u64, now_ms: u64) {
        let _ = self.cnxn_bucket_ms.compare_exchange(
            0,
            sessionless_timeout_ms.max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.cnxn_touched(&info, now_ms);
        self.table().live.insert(ById(info));
    }

    /// The connection did I/O: its expiry moves to the bucket of `now + its timeout`. Lock-free but for
    /// a change of bucket (at most once per bucket width), which records the bucket it left: ZooKeeper's
    /// queue shows a bucket until its time even when it is empty.
    pub fn cnxn_touched(&self, info: &ConnInfo, now_ms: u64) {
        let width = self.cnxn_bucket_ms.load(Ordering::Acquire);
        if width == 0 {
            return;
        }
        let deadline = round_up(now_ms.saturating_add(info.timeout_ms()), width);
        let left = info.deadline_ms.swap(deadline, Ordering::AcqRel);
        if left != deadline && left > now_ms {
            let mut t = self.table();
            t.left_buckets.retain(|&b| b > now_ms);
            t.left_buckets.insert(left);
        }
    }

    /// The connection's ConnectRequest asked for a session: from now on its timeout is the negotiated one.
    pub fn cnxn_session_timeout(&self, info: &ConnInfo, timeout_ms: u64, now_ms: u64) {
        info.timeout_ms.store(
            u32::try_from(timeout_ms).unwrap_or(u32::MAX),
            Ordering::Release,
        );
        self.cnxn_touched(info, now_ms);
    }

    pub fn cnxn_closed(&self, conn: ConnId, now_ms: u64) {
        let mut t = self.table();
        if let Some(ById(info)) = t.live.take(&conn) {
            // Buckets whose time has come go here too, not only at dump or a bucket change: a server whose
            // connections only come and go would otherwise keep one per bucket width forever.
            t.left_buckets.retain(|&b| b > now_ms);
            let left = info.deadline_ms.load(Ordering::Acquire);
            if left > now_ms {
                t.left_buckets.insert(left);
            }
        }
    }

    /// Buckets kept for `dump` that no live connection is in (for tests).
    #[cfg(test)]
    fn left_bucket_count(&self) -> usize {
        self.table().left_buckets.len()
    }

    /// Open connections (`num_alive_connections`, `Connections:` of `srvr`).
    pub fn alive_connections(&self) -> usize {
        self.table().live.len()
    }

    /// The open connections, by id.
    pub fn live_connections(&self) -> Vec<LiveConnView> {
        let mut v: Vec<LiveConnView> = self
            .table()
            .live
            .iter()
            .map(|c| &c.0)
            .map(|c| LiveConnView {
                id: c.id,
                remote: c.remote(),
                established_ms: c.established_ms,
                session_id: c.session_id(),
                four_letter: c.four_letter(),
                figures: c.figures().clone(),
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// `crst` of every open connection's figures.
    pub fn reset_connection_stats(&self) {
        for ById(c) in self.table().live.iter() {
            c.figures().reset();
        }
    }

    /// The connection part of `dump` (ZooKeeper's `NIOServerCnxnFactory.dumpConnections`):
    /// `Connections Sets (<buckets>)/(<connections>):`, then per bucket `<n> expire at <date>:` and one
    /// `\tip: /<addr>:<port> sessionId: 0x<id>` line per connection. Buckets whose time has come are gone
    /// (ZooKeeper's expirer takes them at once); a bucket a connection left stays, maybe empty, until its
    /// time. `date` turns a bucket time into the text to show.
    pub fn dump_connections(&self, now_ms: u64, date: impl Fn(u64) -> String) -> String {
        use std::fmt::Write as _;
        let mut t = self.table();
        t.left_buckets.retain(|&b| b > now_ms);
        let mut buckets: BTreeMap<u64, Vec<(ConnId, SocketAddr, i64)>> =
            t.left_buckets.iter().map(|&b| (b, Vec::new())).collect();
        for ById(c) in t.live.iter() {
            let deadline = c.deadline_ms.load(Ordering::Acquire);
            if deadline > now_ms {
                buckets
                    .entry(deadline)
                    .or_default()
                    .push((c.id, c.remote(), c.session_id()));
            }
        }
        let mut s = format!("Connections Sets ({})/({}):\n", buckets.len(), t.live.len());
        for (time, mut conns) in buckets {
            conns.sort_unstable_by_key(|c| c.0);
            let _ = writeln!(s, "{} expire at {}:", conns.len(), date(time));
            for (_, addr, sid) in conns {
                let _ = writeln!(s, "\tip: {} sessionId: 0x{sid:x}", fmt_addr(addr));
            }
        }
        s
    }
}

/// `((time / width) + 1) * width`: the next bucket boundary strictly after `time` (ZooKeeper's
/// `ExpiryQueue.roundToNextInterval`).
fn round_up(time_ms: u64, width_ms: u64) -> u64 {
    (time_ms / width_ms)
        .saturating_add(1)
        .saturating_mul(width_ms)
}

/// A record named by an id of its own (`Keyed`), for a hash set that is a map from that id: its entries
/// are one pointer instead of an id and a pointer.
#[derive(Debug)]
pub(crate) struct ById<T: Keyed>(pub Arc<T>);

pub(crate) trait Keyed {
    fn key(&self) -> &u64;
}

impl Keyed for ConnInfo {
    fn key(&self) -> &u64 {
        &self.id
    }
}

impl<T: Keyed> std::borrow::Borrow<u64> for ById<T> {
    fn borrow(&self) -> &u64 {
        self.0.key()
    }
}

// Hash and equality are the id's, as `Borrow` requires.
impl<T: Keyed> std::hash::Hash for ById<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key().hash(state);
    }
}

impl<T: Keyed> PartialEq for ById<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl<T: Keyed> Eq for ById<T> {}

/// Java's `InetSocketAddress.toString()` for an address without a host name: `/<ip>:<port>`.
pub fn fmt_addr(a: SocketAddr) -> String {
    format!("/{}:{}", a.ip(), a.port())
}

#[derive(Default)]
struct ConnTable {
    /// Keyed by each record's own id: a table entry is one pointer (at 19,000 connections the table is
    /// ~15 B per connection instead of ~29).
    live: HashSet<ById<ConnInfo>>,
    /// Times of expiry buckets a connection left (moved on, or closed) that have not come yet: with the
    /// live connections' own buckets, ZooKeeper's `cnxnExpiryQueue` as `dump` shows it.
    left_buckets: BTreeSet<u64>,
}

/// A socket address in 24 bytes: the IP (v4 in the first 4 bytes), the port, and a v6 address's scope id
/// (its flow info, 0 for the peers of accepted TCP connections in practice, is not kept).
#[derive(Debug, Clone, Copy)]
struct CompactAddr {
    ip: [u8; 16],
    scope_id: u32,
    port: u16,
    v6: bool,
}

impl CompactAddr {
    fn new(addr: SocketAddr) -> CompactAddr {
        let mut ip = [0u8; 16];
        match addr {
            SocketAddr::V4(a) => {
                ip[..4].copy_from_slice(&a.ip().octets());
                CompactAddr {
                    ip,
                    scope_id: 0,
                    port: a.port(),
                    v6: false,
                }
            }
            SocketAddr::V6(a) => CompactAddr {
                ip: a.ip().octets(),
                scope_id: a.scope_id(),
                port: a.port(),
                v6: true,
            },
        }
    }

    fn get(&self) -> SocketAddr {
        if self.v6 {
            SocketAddr::V6(std::net::SocketAddrV6::new(
                self.ip.into(),
                self.port,
                0,
                self.scope_id,
            ))
        } else {
            let [a, b, c, d, ..] = self.ip;
            SocketAddr::from(([a, b, c, d], self.port))
        }
    }
}

/// One open connection as the server knows it: its address, session, expiry bucket and `cons` figures.
/// One allocation, shared by its reader, its reply queue, the executor and the connection table (which
/// is a map of these, so a connection costs the table one pointer).
#[derive(Debug)]
pub struct ConnInfo {
    pub id: ConnId,
    /// The client's address (`remote()`), in 24 bytes instead of a `SocketAddr`'s 32: with the 32-bit
    /// timeout below, the record fits an allocation of 160 bytes instead of 192.
    remote: CompactAddr,
    /// Wall-clock ms of the accept (`est=` of `cons`).
    pub established_ms: i64,
    /// The connection's session id, 0 until the executor establishes one.
    session: AtomicI64,
    /// `FOUR_LETTER`, and the number of requests its reader handed to the executor whose replies are not
    /// queued yet (or that were not dropped yet): while it is 0 the reader may answer a read itself,
    /// and the reply still leaves behind every earlier one (see `connection::answer_read`). One word, in
    /// what was the padding after a flag: the record keeps its allocation class.
    reader: AtomicU32,
    /// The sessionless timeout until a ConnectRequest, then the session timeout it asked for (a protocol
    /// timeout is an i32).
    timeout_ms: AtomicU32,
    /// The expiry bucket its last I/O put it in (ZooKeeper's `cnxnExpiryQueue`); 0 before any.
    deadline_ms: AtomicU64,
    /// Its request figures, kept by its reader (which answers pings) and the executor (everything else):
    /// one copy, in response order without any merging.
    figures: Mutex<ConnStats>,
}

/// `ConnInfo::reader`: the connection's first bytes were a four-letter word.
const FOUR_LETTER: u32 = 1 << 31;
/// `ConnInfo::reader`: the requests at the executor (2^31 of them cannot fit in memory).
const AT_EXECUTOR: u32 = FOUR_LETTER - 1;

impl ConnInfo {
    pub fn new(
        id: ConnId,
        remote: SocketAddr,
        established_ms: i64,
        timeout_ms: u64,
    ) -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            id,
            remote: CompactAddr::new(remote),
            established_ms,
            session: AtomicI64::new(0),
            reader: AtomicU32::new(0),
            timeout_ms: AtomicU32::new(u32::try_from(timeout_ms).unwrap_or(u32::MAX)),
            deadline_ms: AtomicU64::new(0),
            figures: Mutex::new(ConnStats::new()),
        })
    }

    pub fn session_id(&self) -> i64 {
        self.session.load(Ordering::Acquire)
    }

    pub fn set_session(&self, id: i64) {
        self.session.store(id, Ordering::Release);
    }

    fn timeout_ms(&self) -> u64 {
        u64::from(self.timeout_ms.load(Ordering::Acquire))
    }

    /// The client's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote.get()
    }

    /// The connection's first bytes were a four-letter word.
    pub fn set_four_letter(&self) {
        self.reader.fetch_or(FOUR_LETTER, Ordering::AcqRel);
    }

    fn four_letter(&self) -> bool {
        self.reader.load(Ordering::Acquire) & FOUR_LETTER != 0
    }

    /// The reader hands the executor a request (before it does: the executor may answer it at once).
    pub fn handed_to_executor(&self) {
        self.reader.fetch_add(1, Ordering::AcqRel);
    }

    /// The executor has queued the reply to one of this connection's requests, or dropped it. Called once
    /// the reply is in the connection's queue: a reader that then sees none left queues its own behind it.
    pub fn answered_by_executor(&self) {
        let _ = self
            .reader
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v & AT_EXECUTOR != 0).then(|| v - 1)
            });
    }

    /// Every request handed to the executor has its reply queued (or was dropped).
    pub fn executor_done(&self) -> bool {
        self.reader.load(Ordering::Acquire) & AT_EXECUTOR == 0
    }

    pub fn figures(&self) -> MutexGuard<'_, ConnStats> {
        self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection's reader answered a request itself (a ping, a read: the executor never sees
    /// it); ZooKeeper counts it like any other request.
    pub fn answered_here(&self, op: OpCode, xid: i32, zxid: i64, took: Duration) {
        let mut s = self.figures();
        s.received += 1;
        s.sent += 1;
        s.completed(op, xid, zxid, took);
    }
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

/// Per-connection figures for `cons`, with the values ZooKeeper's `ServerCnxn` starts from: a new
/// connection shows `lop=null`, `lcxid=0x0`, `lzxid=0x0` until its first response (its constructor sets
/// nothing), while `crst` resets to `lop=NA`, no `lcxid`, `lzxid=0xffffffffffffffff`.
#[derive(Debug, Clone)]
pub struct ConnStats {
    pub received: u64,
    pub sent: u64,
    /// Milliseconds from the accept to the ConnectRequest: the start of the `SESS` latency, which counts
    /// from the ConnectRequest (32 bits beside the others: the record fits a smaller allocation).
    pub connect_after_ms: u32,
    pub last_op: LastOp,
    /// An xid is 32 bits on the wire (ZooKeeper keeps it in a long; shown only when >= 0).
    pub last_cxid: i32,
    pub last_zxid: i64,
    /// ZooKeeper's `Time.currentElapsedTime()` of the last response: monotonic ms, not wall-clock.
    pub last_response_ms: i64,
    /// Latencies in ms, 32 bits (24 days; longer ones are shown as that): every open connection keeps
    /// these, and with them the record fits a smaller allocation.
    pub last_latency_ms: i32,
    /// `i32::MAX` after `crst` until the next response (shown as 0).
    pub min_latency_ms: i32,
    pub max_latency_ms: i32,
    pub total_latency_ms: i64,
    pub count: i64,
}

/// The last operation of a connection as `cons` shows it (`lop=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastOp {
    /// A new connection, before its first response (ZooKeeper's constructor sets nothing: `null`).
    Null,
    /// After `crst` (`NA`).
    Reset,
    Op(OpCode),
}

impl LastOp {
    pub fn name(self) -> &'static str {
        match self {
            LastOp::Null => "null",
            LastOp::Reset => "NA",
            LastOp::Op(op) => last_op_name(op),
        }
    }
}

impl std::fmt::Display for LastOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Default for ConnStats {
    fn default() -> Self {
        ConnStats::new()
    }
}

impl ConnStats {
    pub fn new() -> Self {
        ConnStats {
            received: 0,
            sent: 0,
            connect_after_ms: 0,
            last_op: LastOp::Null,
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
    /// FinalRequestProcessor does (`lop=SESS`, cxid 0, latency since the ConnectRequest; `accepted_ms`:
    /// the wall-clock ms of the connection's accept).
    pub fn session_created(&mut self, zxid: i64, accepted_ms: i64) {
        let since = accepted_ms.saturating_add(i64::from(self.connect_after_ms));
        let took = (wall_ms() - since).max(0) as u64;
        self.completed(OpCode::CreateSession, 0, zxid, Duration::from_millis(took));
    }
    pub fn completed(&mut self, op: OpCode, xid: i32, zxid: i64, took: Duration) {
        let ms = i32::try_from(took.as_millis()).unwrap_or(i32::MAX);
        self.last_op = LastOp::Op(op);
        if xid >= 0 {
            self.last_cxid = xid;
        }
        self.last_zxid = zxid;
        self.last_response_ms = elapsed_ms();
        self.last_latency_ms = ms;
        self.min_latency_ms = self.min_latency_ms.min(ms);
        self.max_latency_ms = self.max_latency_ms.max(ms);
        self.total_latency_ms += i64::from(ms);
        self.count += 1;
    }
    /// What `crst` leaves (ZooKeeper's `ServerCnxn.resetStats`), with no establishment time.
    pub fn cleared() -> Self {
        ConnStats {
            last_op: LastOp::Reset,
            last_cxid: -1,
            last_zxid: -1,
            min_latency_ms: i32::MAX,
            ..ConnStats::new()
        }
    }
    /// `crst`.
    pub fn reset(&mut self) {
        *self = ConnStats {
            connect_after_ms: self.connect_after_ms,
            ..ConnStats::cleared()
        };
    }
    /// (min, avg, max) latency as `cons` prints them (integer ms; ZooKeeper's `getMinLatency` shows
    /// "none yet" as 0).
    pub fn latency_min_avg_max(&self) -> (i64, i64, i64) {
        let min = if self.min_latency_ms == i32::MAX {
            0
        } else {
            i64::from(self.min_latency_ms)
        };
        let avg = if self.count == 0 {
            0
        } else {
            self.total_latency_ms / self.count
        };
        (min, avg, i64::from(self.max_latency_ms))
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

    #[test]
    fn a_connection_keeps_its_address_whole() {
        for addr in [
            "127.0.0.1:2181",
            "10.1.2.3:65535",
            "[::1]:2181",
            "[2001:db8::7]:1",
            "[fe80::1%3]:40000",
        ] {
            let addr: SocketAddr = addr.parse().expect("an address");
            let info = ConnInfo::new(7, addr, 0, 1000);
            assert_eq!(info.remote(), addr);
        }
        assert!(
            std::mem::size_of::<ConnInfo>() <= 144,
            "ConnInfo outgrew its allocation class"
        );
    }

    #[test]
    fn the_requests_at_the_executor_and_the_four_letter_flag_share_a_word_without_mixing() {
        let info = ConnInfo::new(7, addr(1), 0, 1000);
        assert!(info.executor_done() && !info.four_letter());
        info.handed_to_executor();
        info.handed_to_executor();
        info.set_four_letter();
        assert!(!info.executor_done() && info.four_letter());
        info.answered_by_executor();
        assert!(!info.executor_done(), "one of two is still at the executor");
        info.answered_by_executor();
        assert!(info.executor_done() && info.four_letter());
        // One answer too many (a drop counted twice) must not borrow from the flag.
        info.answered_by_executor();
        assert!(info.executor_done() && info.four_letter());
        info.handed_to_executor();
        assert!(!info.executor_done());
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn new_connection_shows_zookeepers_initial_figures_and_crst_its_reset_ones() {
        let mut s = ConnStats::new();
        s.connect_after_ms = 5;
        assert_eq!((s.last_op.name(), s.last_cxid, s.last_zxid), ("null", 0, 0));
        assert_eq!(s.latency_min_avg_max(), (0, 0, 0));
        // ZooKeeper's minimum starts at 0, not "none", so it stays 0 until crst.
        s.completed(OpCode::Exists, 3, 7, Duration::from_millis(4));
        assert_eq!(s.latency_min_avg_max(), (0, 4, 4));
        s.reset();
        assert_eq!((s.last_op.name(), s.last_cxid, s.last_zxid), ("NA", -1, -1));
        assert_eq!((s.received, s.sent, s.connect_after_ms), (0, 0, 5));
        assert_eq!(s.latency_min_avg_max(), (0, 0, 0));
        s.completed(OpCode::GetData, -2, 8, Duration::from_millis(2));
        assert_eq!(s.last_cxid, -1, "special xids do not replace the last cxid");
        assert_eq!(s.latency_min_avg_max(), (2, 2, 2));
    }

    #[test]
    fn srst_resets_counters_but_not_connections() {
        let st = ServerStats::default();
        st.cnxn_opened(ConnInfo::new(1, addr(1), 0, 1000), 1000, 0);
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
        let one = ConnInfo::new(1, addr(40001), 0, 1000);
        st.cnxn_opened(one.clone(), 1000, 100);
        st.cnxn_opened(ConnInfo::new(2, addr(40002), 0, 1000), 1000, 200);
        let date = |t: u64| format!("t{t}");
        assert_eq!(
            st.dump_connections(300, date),
            "Connections Sets (1)/(2):\n2 expire at t2000:\n\tip: /127.0.0.1:40001 sessionId: 0x0\n\
             \tip: /127.0.0.1:40002 sessionId: 0x0\n"
        );
        // A ConnectRequest: the connection's timeout becomes the session's.
        st.cnxn_session_timeout(&one, 10_000, 500);
        one.set_session(0x1ab);
        st.cnxn_closed(2, 550);
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
        // I/O within the same bucket moves nothing; I/O later moves it to a later bucket, and the one it
        // left stays until its time.
        st.cnxn_touched(&one, 900);
        st.cnxn_touched(&one, 1500);
        assert_eq!(
            st.dump_connections(2100, date),
            "Connections Sets (2)/(1):\n0 expire at t11000:\n\
             1 expire at t12000:\n\tip: /127.0.0.1:40001 sessionId: 0x1ab\n"
        );
        // Past every bucket: the connection is still counted, in no bucket (ZooKeeper's expirer took it).
        assert_eq!(
            st.dump_connections(12_000, date),
            "Connections Sets (0)/(1):\n"
        );
        assert_eq!(st.alive_connections(), 1);
    }

    #[test]
    fn closed_connections_leave_no_bucket_behind_once_its_time_has_passed() {
        let st = ServerStats::default();
        // Connections that come and go, one per bucket width (1000 ms), never dumped.
        for i in 0..100u64 {
            let now = i * 1000;
            st.cnxn_opened(ConnInfo::new(i, addr(40001), 0, 1000), 1000, now);
            st.cnxn_closed(i, now + 10);
        }
        // Only the buckets still to come are kept: the last one or two, not 100.
        assert!(st.left_bucket_count() <= 2, "{}", st.left_bucket_count());
        st.cnxn_opened(ConnInfo::new(100, addr(40001), 0, 1000), 1000, 200_000);
        st.cnxn_closed(100, 200_000);
        assert_eq!(st.left_bucket_count(), 1);
    }
}
