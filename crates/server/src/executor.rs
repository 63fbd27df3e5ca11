//! The executor: the one task that changes the replicated state machine, and owns the connections' request
//! queues. Serialising apply and reads here is what makes them atomic with respect to each other: a read's
//! reply and the watch it sets, and a write's events and reply, are enqueued without anything in between,
//! so no watch can miss an event. The one exception: a connection's reader answers a read (getData, exists,
//! getChildren, with or without a watch) itself when the executor holds nothing of that connection, under
//! the read side of the lock that apply holds while it changes the state and fires and queues the change's
//! events; the reader adds the read's watch to the shared table and queues its reply under that read lock
//! (`connection::answer_read`).
//!
//! Per connection, requests run in arrival order: writes are proposed as soon as everything before them has
//! been started (they pipeline through the log); a read, auth or watch operation waits until the same
//! connection's earlier writes are applied. Replies leave in request order through one outbound FIFO.
//!
//! The executor runs on the apply thread (`crate::apply_thread`), beside openraft's tasks and the log's
//! writes; the connections' readers hand it requests from the runtime's workers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oxkeeper_core::acl::{check_acl, digest_id};
use oxkeeper_core::pacer::Pacer;
use oxkeeper_core::session::Owner;
use oxkeeper_core::state::{
    Applied, ApplySettings, Command, CommandOp, SessionChange, StateMachine,
};
use oxkeeper_core::tracker::SessionTracker;
use oxkeeper_core::watches::{watch_for_read, WatchKind, WatchTable};
use oxkeeper_proto::frame::{
    encode_connect_response, encode_notification, encode_notification_of, encode_reply,
};
use oxkeeper_proto::records::{
    AddWatchRequest, ClientInfo, ConnectRequest, ConnectResponse, Id, Request, Response,
    WatcherEvent,
};
use oxkeeper_proto::{perms, xid, ErrorCode, KeeperState, OpCode};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::clock::SessionClock;
use crate::config::Config;
use crate::connection::{ConnId, Outbound, Outbox};
use crate::replication::{
    Committed, Payload, Replicator, Settled, SnapshotSource, StateCopy, ToExecutor,
};
use crate::slots::Slots;
use crate::stats::ServerStats;

/// Where a command came from, so the member holding that connection sends the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub member: u64,
    pub conn: ConnId,
    pub xid: i32,
}

/// One replicated command with its origin; a log entry carries a batch of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub origin: Option<Origin>,
    pub cmd: Command,
}

/// Format version of the replicated payload, first byte of every log entry we write.
const PAYLOAD_FORMAT_V1: u8 = 1;

pub fn encode_batch(batch: &[Envelope]) -> Payload {
    let out =
        postcard::to_extend(batch, vec![PAYLOAD_FORMAT_V1]).expect("commands always serialize");
    Payload(out.into())
}

/// Format version of a serialized state (a snapshot's data), its first byte.
const STATE_FORMAT_V1: u8 = 1;

/// Serializes the replicated state for a snapshot.
pub fn encode_state(sm: &StateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    write_state(sm, &mut out).expect("the state always serializes into memory");
    out
}

/// Serializes the replicated state into `out` as it goes (a snapshot file: a million nodes make ~100
/// MB, never held in memory whole).
pub fn write_state(sm: &StateMachine, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    out.write_all(&[STATE_FORMAT_V1])?;
    // postcard writes field by field: through a buffer of a known type each write is a copy, where
    // through `out` each would be a call through a pointer, and several more below it.
    let mut out =
        std::io::BufWriter::with_capacity(STATE_WRITE_BUFFER, KeepError { out, error: None });
    let result = postcard::to_io(sm, &mut out)
        .map(drop)
        .map_err(std::io::Error::other)
        .and_then(|()| std::io::Write::flush(&mut out));
    match result {
        Ok(()) => Ok(()),
        // postcard reports a failed write without its cause: give the writer's own error back.
        Err(e) => Err(out.get_mut().error.take().unwrap_or(e)),
    }
}

/// How much of the serialized state is gathered before a write to the writer it goes to.
const STATE_WRITE_BUFFER: usize = 64 << 10;

/// A writer that remembers the first error of the writer it wraps.
struct KeepError<'a> {
    out: &'a mut dyn std::io::Write,
    error: Option<std::io::Error>,
}

impl std::io::Write for KeepError<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.out.write(bytes).inspect_err(|e| {
            self.error
                .get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub fn decode_state(bytes: &[u8]) -> Result<StateMachine, String> {
    match bytes.split_first() {
        Some((&STATE_FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown state format version {v}")),
        None => Err("empty state".into()),
    }
}

pub fn decode_batch(p: &Payload) -> Result<Vec<Envelope>, String> {
    match p.0.split_first() {
        Some((&PAYLOAD_FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown payload format version {v}")),
        None => Err("empty payload".into()),
    }
}

pub enum ExecMsg {
    Connect {
        conn: ConnId,
        remote: SocketAddr,
        req: ConnectRequest,
        out: Outbound,
    },
    Request {
        conn: ConnId,
        xid: i32,
        req: Request,
    },
    Unknown {
        conn: ConnId,
        xid: i32,
        op: i32,
    },
    Malformed {
        conn: ConnId,
        xid: i32,
    },
    Closed {
        conn: ConnId,
    },
    FourLetter {
        conn: ConnId,
        remote: SocketAddr,
        word: &'static str,
        out: Outbound,
    },
}

/// State shared between the executor and the connection tasks.
pub struct Shared {
    pub config: Config,
    pub exec: mpsc::UnboundedSender<ExecMsg>,
    pub tracker: Mutex<SessionTracker>,
    /// The replicated state. Only the executor changes it (under the write lock, together with queueing
    /// the watch events a change fires); a connection's reader answers reads from it under the read
    /// lock (see `connection::answer_read`).
    state: RwLock<StateMachine>,
    /// Every connection's watches. Locked inside the state's lock (read or write), never the other way
    /// round: apply fires them under the write lock; a reader that answers a read with a watch adds it
    /// under the read lock, before its reply is queued (see `connection::answer_read`).
    watches: Mutex<WatchTable>,
    pub stats: ServerStats,
    last_zxid: AtomicI64,
    next_conn: AtomicU64,
    outstanding: std::sync::atomic::AtomicUsize,
    outstanding_changed: tokio::sync::Notify,
    pub clock: Arc<SessionClock>,
    /// How the executor's lingering after its replies went (`crate::linger`).
    pub(crate) lingers: crate::linger::LingerCounts,
    /// Where each connection's reader lives: the apply thread or the workers (`crate::home`); the
    /// multi-threaded runtime (`Homes::workers`: the accept loop, the flushers, the cold set's watcher, the
    /// readers of connections whose clients only read, blocking work such as four-letter words' text).
    pub(crate) homes: crate::home::Homes,
    /// Idle connections out of the runtime's reactor (`crate::cold`).
    pub(crate) cold: Arc<crate::cold::ColdSet>,
    /// The log and the snapshots, for the four-letter words' figures.
    pub(crate) replicator: Replicator,
    /// The executor's own figures, copied here for the four-letter words a reader answers: transactions
    /// applied since the last snapshot was asked for, and expired sessions whose close waits for the pacer.
    pub(crate) since_snapshot: AtomicU64,
    pub(crate) expiry_backlog: std::sync::atomic::AtomicUsize,
    /// Why this member can no longer serve, once it cannot (`crate::server::watch_member`): the first reason.
    failure: tokio::sync::watch::Sender<Option<Arc<str>>>,
}

impl Shared {
    /// Must be called on the runtime that will serve the connections.
    pub fn new(
        config: Config,
        exec: mpsc::UnboundedSender<ExecMsg>,
        replicator: Replicator,
    ) -> Shared {
        let tracker = SessionTracker::new(config.tick_ms);
        let clock = Arc::new(SessionClock::new());
        clock.start_keeper();
        let runtime = tokio::runtime::Handle::current();
        let cold = Arc::new(crate::cold::ColdSet::new());
        runtime.spawn(crate::cold::watch(Arc::clone(&cold)));
        Shared {
            config,
            exec,
            tracker: Mutex::new(tracker),
            state: RwLock::new(StateMachine::new()),
            watches: Mutex::new(WatchTable::default()),
            stats: ServerStats::default(),
            last_zxid: AtomicI64::new(0),
            // Connection ids name session owners in the replicated state: never reuse one across restarts.
            next_conn: AtomicU64::new((wall_ms().max(0) as u64) << 20),
            outstanding: std::sync::atomic::AtomicUsize::new(0),
            outstanding_changed: tokio::sync::Notify::new(),
            clock,
            homes: crate::home::Homes::new(runtime),
            lingers: crate::linger::LingerCounts::default(),
            cold,
            replicator,
            since_snapshot: AtomicU64::new(0),
            expiry_backlog: std::sync::atomic::AtomicUsize::new(0),
            failure: tokio::sync::watch::Sender::new(None),
        }
    }

    /// The log and the replication core.
    pub fn replicator(&self) -> &Replicator {
        &self.replicator
    }

    /// Records why this member can no longer serve; the first reason stays.
    pub(crate) fn fail(&self, reason: String) {
        self.failure.send_if_modified(|r| {
            let first = r.is_none();
            if first {
                *r = Some(reason.into());
            }
            first
        });
    }

    /// Completes once this member can no longer serve (its log or its replication core stopped, or its
    /// executor ended), with the reason. `server::run` exits the process then (fail-stop).
    pub async fn failed(&self) -> Arc<str> {
        let mut rx = self.failure.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                // `self` holds the sender: unreachable while borrowed.
                return std::future::pending().await;
            }
        }
    }
    /// The tracker's clock: monotonic milliseconds that stand still while the member is stalled.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
    /// Connections idle out of the runtime's reactor now (`crate::cold`).
    pub fn cold_connections(&self) -> usize {
        self.cold.len()
    }
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid.load(Ordering::Acquire)
    }
    /// Requests handed to the executor and not yet answered or dropped, over every connection.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// A connection hands the executor one more request.
    pub fn request_started(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// `n` requests are answered or dropped.
    fn requests_finished(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        if before.saturating_sub(n) < self.config.global_outstanding_limit {
            self.outstanding_changed.notify_waiters();
        }
    }

    /// Waits while the requests outstanding over all connections are at `globalOutstandingLimit`: like
    /// ZooKeeper, a member past the limit stops reading from its clients until it has caught up.
    pub async fn wait_below_outstanding_limit(&self) {
        loop {
            let changed = self.outstanding_changed.notified();
            if self.outstanding.load(Ordering::Acquire) < self.config.global_outstanding_limit {
                return;
            }
            changed.await;
        }
    }

    /// The replicated state, for reading.
    pub fn state(&self) -> RwLockReadGuard<'_, StateMachine> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The replicated state, for the executor's apply.
    fn state_mut(&self) -> RwLockWriteGuard<'_, StateMachine> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The watch table. Whoever also holds the state's lock takes that first.
    pub(crate) fn watches(&self) -> std::sync::MutexGuard<'_, WatchTable> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
    fn tracker(&self) -> std::sync::MutexGuard<'_, SessionTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Touches a session; false if it is unknown or closing (its request is then dropped, as ZooKeeper does).
    pub fn touch(&self, session: i64) -> bool {
        let now = self.now_ms();
        self.tracker().touch(session, now)
    }
}

pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

enum Item {
    Connect(ConnectRequest),
    Write { xid: i32, req: Request },
    Local { xid: i32, req: Request },
    Unimplemented { xid: i32 },
    Malformed { xid: i32 },
}

struct Conn {
    /// Its reply queue, and through it what the server's tables know of it (`Outbound::info`: address,
    /// session id for `cons`, figures).
    out: Outbound,
    session_id: i64,
    timeout_ms: i32,
    read_only_byte: bool,
    /// The connection's identities: its `ip` one (shared by every connection from that address, see
    /// `Executor::ip_auth`) and what `addauth` added.
    auth: Arc<[Id]>,
    /// Its requests, while it has any (an idle connection's record is 48 B instead of 104 B).
    queues: Option<Box<Queues>>,
    /// A ConnectRequest is being decided (its CreateSession is in the log): nothing behind it runs yet.
    connecting: bool,
    closing: bool,
}

// Every connection holds one, in a slot of `Executor::conns`.
const _: () = assert!(std::mem::size_of::<Option<Conn>>() <= 48);

/// A connection's requests in the executor, in order.
#[derive(Default)]
struct Queues {
    /// Received, not started yet.
    waiting: VecDeque<Item>,
    /// Writes proposed and not yet applied: (xid, when it started, opcode).
    inflight: VecDeque<(i32, Instant, OpCode)>,
}

impl Conn {
    fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Box::default)
    }

    /// Queues a request behind the connection's others.
    fn wait(&mut self, item: Item) {
        self.queues().waiting.push_back(item);
    }

    fn waiting(&self) -> Option<&VecDeque<Item>> {
        self.queues.as_ref().map(|q| &q.waiting)
    }

    fn has_inflight(&self) -> bool {
        self.queues.as_ref().is_some_and(|q| !q.inflight.is_empty())
    }

    /// Requests received and not answered yet.
    fn queued(&self) -> usize {
        self.queues
            .as_ref()
            .map_or(0, |q| q.waiting.len() + q.inflight.len())
    }

    /// Frees the queues once both are empty.
    fn release_queues(&mut self) {
        if self
            .queues
            .as_ref()
            .is_some_and(|q| q.waiting.is_empty() && q.inflight.is_empty())
        {
            self.queues = None;
        }
    }
}

pub struct Executor {
    shared: Arc<Shared>,
    /// The records side by side in chunks (`crate::slots`), not in the table itself: a table that holds
    /// its entries inline is up to twice as big as its contents (it doubles when full).
    conns: Slots<Conn>,
    /// Every connection starts with the identity `ip:<its address>`; connections from one address share
    /// one copy (an idle connection is lighter by ~90 B). Entries no connection uses are dropped.
    ip_auth: HashMap<IpAddr, Arc<[Id]>>,
    replicator: Replicator,
    member: u64,
    proposals: Vec<Envelope>,
    /// Connections with replies queued in this pass of the executor, written at its end.
    outbox: Outbox,
    /// Transactions applied since the last snapshot was asked for. ZooKeeper's `snapCount` counts
    /// transactions, and a log entry carries a batch of them: counting entries would let the log (and its
    /// copy in memory) grow to many times `snapCount` transactions between snapshots under load.
    since_snapshot: u64,
    /// Paces the container reaper's deletions (`znode.container.maxPerMinute`).
    reaper_pacer: Pacer,
    /// Expired sessions (marked closing) whose CloseSession is not proposed yet, oldest first.
    expiry_backlog: VecDeque<i64>,
    /// Paces expiry (`sessionExpiryRate` nodes per second, see `expire_sessions`).
    expiry_pacer: Pacer,
    /// The index of the last log entry the state restored from a snapshot holds.
    restored_index: Option<u64>,
    /// One past the last log entry applied (0: none).
    applied_end: u64,
    /// Appends the log made durable that are not applied yet (`replication::Settled`), by first index:
    /// one applies as soon as everything before it is applied.
    settled: BTreeMap<u64, Settled>,
    /// Per session, the newest of this member's connections (by accept order) whose Revalidate is in the
    /// log and not applied yet; see `older_than_a_claim`.
    reconnecting: HashMap<i64, ConnId>,
    /// The batches proposed here, until applied.
    proposed: Proposed,
    /// How quickly the clients come back after their replies (`crate::linger`).
    linger: crate::linger::Linger,
    /// Commands in the entry proposed last.
    last_entry_commands: usize,
}

/// The batches an executor proposed, oldest first, kept as they were until they are applied: an ensemble
/// of one applies only its own proposals, and knowing each again at apply by its payload's address (the
/// log's memory and openraft share the bytes) spares decoding what was just encoded (session 30: the
/// decode was 3.4% of the apply thread's time at create with 32 sessions). An entry not known here (an
/// earlier leader's, one read back from the log's files) is decoded. `Envelope`'s encoding gives back
/// what was encoded (tests/formats.rs), so the kept batch is what any member decodes.
#[derive(Default)]
struct Proposed(VecDeque<(Payload, Vec<Envelope>)>);

/// Batches kept at most: one is in the log at a time (`MAX_UNDURABLE_PROPOSALS`) and expiry proposes
/// beside it; any beyond were never applied in order (lost with a leadership) and go.
const PROPOSED_KEPT: usize = 8;

impl Proposed {
    fn keep(&mut self, payload: &Payload, batch: Vec<Envelope>) {
        if self.0.len() >= PROPOSED_KEPT {
            self.0.pop_front();
        }
        self.0.push_back((payload.clone(), batch));
    }

    /// The batch kept last, which was not proposed after all.
    fn forget_last(&mut self) -> Vec<Envelope> {
        self.0
            .pop_back()
            .map(|(_, batch)| batch)
            .unwrap_or_default()
    }

    /// The batch proposed as `payload`, if it was proposed here. Those proposed before it go too: the log
    /// applies entries in the order they were proposed, so they never will be.
    fn take(&mut self, payload: &Payload) -> Option<Vec<Envelope>> {
        let at = self
            .0
            .iter()
            .position(|(kept, _)| Arc::ptr_eq(&kept.0, &payload.0))?;
        self.0.drain(..at);
        self.0.pop_front().map(|(_, batch)| batch)
    }
}

impl Executor {
    /// The identities a new connection from `ip` starts with: `ip:<ip>`, one shared copy per address.
    fn ip_identity(&mut self, ip: IpAddr) -> Arc<[Id]> {
        if self.ip_auth.len() > 2 * self.conns.len() + 64 {
            // Addresses whose last connection closed while a copy was still in use elsewhere.
            self.ip_auth.retain(|_, ids| Arc::strong_count(ids) > 1);
        }
        self.ip_auth
            .entry(ip)
            .or_insert_with(|| {
                Arc::from(vec![Id {
                    scheme: "ip".into(),
                    id: ip.to_string(),
                }])
            })
            .clone()
    }

    pub fn new(shared: Arc<Shared>, replicator: Replicator) -> Executor {
        let member = replicator.member_id;
        let cfg = &shared.config;
        let (reaper_pacer, expiry_pacer) = (
            // ZooKeeper's ContainerManager likewise waits 60000/maxPerMinute ms between deletions.
            Pacer::new(
                f64::from(cfg.container_max_per_minute) / 60.0,
                cfg.container_check_interval_ms,
            ),
            Pacer::new(
                cfg.session_expiry_rate as f64,
                expiry_period(cfg).as_millis() as u64,
            ),
        );
        Executor {
            shared,
            conns: Slots::default(),
            ip_auth: HashMap::new(),
            reconnecting: HashMap::new(),
            proposed: Proposed::default(),
            linger: crate::linger::Linger::default(),
            last_entry_commands: 0,
            replicator,
            member,
            proposals: Vec::new(),
            outbox: Outbox::start(),
            since_snapshot: 0,
            reaper_pacer,
            expiry_backlog: VecDeque::new(),
            expiry_pacer,
            restored_index: None,
            applied_end: 0,
            settled: BTreeMap::new(),
        }
    }

    pub fn state(&self) -> RwLockReadGuard<'_, StateMachine> {
        self.shared.state()
    }

    /// Starts from a snapshot: the state as of log index `index`, as `snapshot_state` encoded it.
    pub fn restore(&mut self, index: u64, bytes: &[u8]) -> Result<(), String> {
        // The file's CRC and the tree's own checks while decoding (every parent present, children lists
        // derived) guard what is loaded; the full invariant check would add seconds at a million nodes.
        let sm = decode_state(bytes)
            .map_err(|e| format!("the snapshot of log index {index} does not decode: {e}"))?;
        let zxid = sm.last_zxid();
        *self.shared.state_mut() = sm;
        self.shared.last_zxid.store(zxid, Ordering::Release);
        self.restored_index = Some(index);
        self.applied_end = index + 1;
        self.replicator.gate().executor_applied(self.applied_end);
        Ok(())
    }

    /// Applies committed entries until the log position `upto` (recovery at start).
    pub async fn recover(
        &mut self,
        committed: &mut mpsc::UnboundedReceiver<ToExecutor>,
        upto: Option<u64>,
    ) -> Result<(), String> {
        let Some(upto) = upto else { return Ok(()) };
        let mut applied = self.restored_index.unwrap_or(0);
        while applied < upto {
            let Some(m) = committed.recv().await else {
                return Err("log closed during recovery".into());
            };
            if let Some(index) = self.handle_replicated(m) {
                applied = index;
            }
        }
        Ok(())
    }

    /// Applies committed entries or answers a snapshot request; returns the log index applied up to.
    fn handle_replicated(&mut self, m: ToExecutor) -> Option<u64> {
        match m {
            ToExecutor::Committed(c) => {
                let index = c.last_index;
                self.apply_committed(c);
                Some(index)
            }
            ToExecutor::Snapshot(reply) => {
                // O(1): the maps are structurally shared; the copy is serialized on another thread.
                let started = Instant::now();
                let sm = self.shared.state().clone();
                let source: SnapshotSource = Box::new(move |out| write_state(&sm, out));
                let _ = reply.send(StateCopy {
                    source,
                    through: self.applied_end.checked_sub(1),
                    asked: self.replicator.snapshots_asked(),
                });
                tracing::debug!(
                    took_us = started.elapsed().as_micros() as u64,
                    "state copied for a snapshot"
                );
                None
            }
        }
    }

    /// Proposes the first command of a new cluster and waits until it is applied.
    pub async fn bootstrap(
        &mut self,
        committed: &mut mpsc::UnboundedReceiver<ToExecutor>,
        secret: Vec<u8>,
        settings: ApplySettings,
    ) -> Result<(), String> {
        let op = CommandOp::Bootstrap {
            secret,
            member_id: self.member as u8,
            settings,
        };
        self.propose_and_wait(committed, op, |sm| sm.is_bootstrapped())
            .await
    }

    /// Makes the replicated apply settings those of this member's config, through the log.
    pub async fn update_settings(
        &mut self,
        committed: &mut mpsc::UnboundedReceiver<ToExecutor>,
        settings: ApplySettings,
    ) -> Result<(), String> {
        let want = settings.clone();
        let op = CommandOp::UpdateSettings { settings };
        self.propose_and_wait(committed, op, move |sm| *sm.settings() == want)
            .await
    }

    async fn propose_and_wait(
        &mut self,
        committed: &mut mpsc::UnboundedReceiver<ToExecutor>,
        op: CommandOp,
        done: impl Fn(&StateMachine) -> bool,
    ) -> Result<(), String> {
        let cmd = Command {
            session_id: 0,
            cxid: 0,
            time_ms: wall_ms(),
            auth: vec![].into(),
            op,
        };
        self.replicator
            .propose(encode_batch(&[Envelope { origin: None, cmd }]))
            .await
            .map_err(|e| e.to_string())?;
        while !done(&self.shared.state()) {
            let Some(m) = committed.recv().await else {
                return Err("log closed before the command was applied".into());
            };
            self.handle_replicated(m);
        }
        Ok(())
    }

    /// Gives every recovered session a fresh full timeout, as ZooKeeper does after a restart.
    pub fn track_recovered_sessions(&mut self) {
        let now = self.shared.now_ms();
        let mut t = self.shared.tracker();
        for (id, timeout) in self.shared.state().sessions() {
            t.track(id, timeout as u64, now);
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<ExecMsg>,
        mut committed: mpsc::UnboundedReceiver<ToExecutor>,
    ) {
        let mut expiry = tokio::time::interval(expiry_period(&self.shared.config));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reaper = tokio::time::interval(Duration::from_millis(
            self.shared.config.container_check_interval_ms,
        ));
        reaper.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let gate = self.replicator.gate().clone();
        loop {
            tokio::select! {
                biased;
                c = committed.recv() => match c {
                    Some(ToExecutor::Committed(c)) => {
                        oxkeeper_storage::hoptrace::hop("exec_apply");
                        // What gathered while these were in the log is proposed, then they are applied
                        // and replied to. openraft's core appends the proposal only once this pass yields,
                        // so the order within the pass decides when the replies go out, not when the next
                        // write starts: the durable arm below, the path of every write in an ensemble of
                        // one, replies first (session 37); entries reach this arm only when the executor
                        // did not apply them at durability (read back at start, a dropped report).
                        self.flush_proposals().await;
                        self.apply_committed(c);
                        self.outbox.flush();
                    }
                    Some(m) => {
                        self.handle_replicated(m);
                    }
                    None => break,
                },
                // The entry proposed last is durable: it is applied and its replies go out (in an
                // ensemble of one, durable is committed), then what gathered meanwhile is proposed.
                _ = gate.made_durable() => {
                    oxkeeper_storage::hoptrace::hop("exec_durable");
                    // Replies first: the next fdatasync starts only after this pass anyway (openraft's
                    // core, on this thread, appends once the pass yields), so proposing first only held
                    // the replies back, and with them the clients' next requests, which then often came
                    // in just after the next entry was closed and waited a whole fdatasync more
                    // (session 37, set at 32 sessions: +17%, 13.8 requests an entry instead of 11.4;
                    // create at 32 +4%, set at 8 +7%).
                    self.apply_settled();
                    // The readers on this thread (`crate::home`) read what came in during the fdatasync
                    // and the apply (this runtime polls its sockets before it runs them again), and it
                    // goes out as the next entry. Without the yield, at a few sessions those requests
                    // missed the next entry (session 34: set at 4 sessions -33%).
                    tokio::task::yield_now().await;
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(m) => {
                                self.linger.request(&m, Instant::now);
                                self.handle(m);
                            }
                            Err(_) => break,
                        }
                    }
                    self.flush_proposals().await;
                    // Nothing else to do: stay awake for the clients' next requests a moment
                    // (`crate::linger`), polling this thread's sockets (each yield does).
                    if self.proposals.is_empty() && gate.undurable() == 0 {
                        if let Some(mut lingering) =
                            self.linger.idle(Instant::now(), self.last_entry_commands)
                        {
                            while committed.is_empty()
                                && !lingering.done(Instant::now(), rx.len())
                            {
                                tokio::task::yield_now().await;
                            }
                            self.shared.lingers.record(!rx.is_empty());
                        }
                    }
                }
                m = rx.recv() => match m {
                    Some(m) => {
                        oxkeeper_storage::hoptrace::hop("exec_in");
                        self.linger.request(&m, Instant::now);
                        self.handle(m);
                        // Take everything already queued so that one log entry carries many commands.
                        for _ in 0..4096 {
                            match rx.try_recv() {
                                Ok(m) => self.handle(m),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                _ = expiry.tick() => self.expire_sessions().await,
                _ = reaper.tick() => self.reap_containers(),
            }
            self.outbox.flush();
            self.flush_proposals().await;
        }
    }

    async fn flush_proposals(&mut self) {
        if self.proposals.is_empty()
            || self.replicator.gate().undurable() >= MAX_UNDURABLE_PROPOSALS
        {
            return;
        }
        // openraft's core handles the proposals that wait in its queue before its notifications (a flush,
        // the commit it makes) up to a budget of a thousand, and this thread proposes the next entry the
        // moment the last is durable, during the core's own append: it would append entry after entry
        // while its commit, its state machine task (which frees the log's memory of applied entries) and
        // the snapshot that waits for it fell behind. Past `OPENRAFT_LAG_MAX` entries, let it catch up
        // first (a few turns of this thread; bounded, so a core busy elsewhere holds nothing up).
        for _ in 0..8 {
            let gate = self.replicator.gate();
            if gate.openraft_lag() <= OPENRAFT_LAG_MAX {
                break;
            }
            gate.note_lag_yield();
            tokio::task::yield_now().await;
        }
        let mut batch = std::mem::take(&mut self.proposals);
        // A handshake whose connection is already gone (a client that gave up on it: after a stall the
        // kernel hands over many such abandoned attempts at once) is not proposed: it would create a session
        // nobody holds, or move a session to a dead connection and close the client's live one.
        let conns = &self.conns;
        batch.retain(|e| match (&e.cmd.op, e.origin) {
            (CommandOp::CreateSession { .. } | CommandOp::Revalidate { .. }, Some(o)) => {
                conns.get(&o.conn).is_some_and(|c| !c.closing)
            }
            _ => true,
        });
        if batch.is_empty() {
            return;
        }
        oxkeeper_storage::hoptrace::hop("propose");
        self.last_entry_commands = batch.len();
        let payload = encode_batch(&batch);
        // Kept before it is proposed: nothing of it can be applied before this returns anyway.
        self.proposed.keep(&payload, batch);
        match self.replicator.propose(payload).await {
            // openraft's core, woken by the proposal, runs on this thread once this pass awaits; the log
            // writes the entry after that pass's apply and replies (see `LogStore::append`).
            Ok(()) => {}
            Err(e) => {
                // The outcome of these writes is unknown: close their connections (clients see CONNECTION_LOSS).
                tracing::error!("proposal failed: {e}");
                let batch = self.proposed.forget_last();
                for env in batch {
                    if let Some(o) = env.origin {
                        self.close_conn(o.conn);
                    }
                }
            }
        }
    }

    fn handle(&mut self, msg: ExecMsg) {
        match msg {
            ExecMsg::Connect {
                conn,
                remote,
                req,
                out,
            } => {
                // The session's latency (`lop=SESS`) counts from the ConnectRequest.
                let after = (wall_ms() - out.info().established_ms).max(0);
                out.info().figures().connect_after_ms = u32::try_from(after).unwrap_or(u32::MAX);
                let mut c = Conn {
                    out,
                    session_id: 0,
                    timeout_ms: 0,
                    read_only_byte: req.read_only.is_some(),
                    auth: self.ip_identity(remote.ip()),
                    queues: None,
                    connecting: false,
                    closing: false,
                };
                c.out.info().figures().received += 1;
                self.shared.stats.packet_received();
                c.wait(Item::Connect(req));
                self.conns.insert(conn, c);
                self.pump(conn);
            }
            ExecMsg::Request { conn, xid, req } => {
                self.shared.stats.packet_received();
                let Some(c) = self.conns.get_mut(&conn) else {
                    self.shared.requests_finished(1);
                    return;
                };
                c.out.info().figures().received += 1;
                if c.closing || (c.session_id != 0 && !self.shared.touch(c.session_id)) {
                    // A closing connection, or an unknown or closing session: dropped without a reply.
                    self.shared.requests_finished(1);
                    c.out.info().answered_by_executor();
                    return;
                }
                let item = if matches!(req, Request::Check(_)) {
                    // Only valid inside a multi (ZooKeeper 3.9: UNIMPLEMENTED, then close).
                    Item::Unimplemented { xid }
                } else if req.is_write() {
                    Item::Write { xid, req }
                } else {
                    Item::Local { xid, req }
                };
                c.wait(item);
                self.pump(conn);
            }
            ExecMsg::Unknown { conn, xid, op } => {
                tracing::debug!(conn, op, "unknown opcode");
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.wait(Item::Unimplemented { xid });
                    self.pump(conn);
                } else {
                    self.shared.requests_finished(1);
                }
            }
            ExecMsg::Malformed { conn, xid } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.wait(Item::Malformed { xid });
                    self.pump(conn);
                } else {
                    self.shared.requests_finished(1);
                }
            }
            ExecMsg::Closed { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    self.shared.requests_finished(c.queued());
                    let ip = c.out.info().remote().ip();
                    drop(c);
                    if self
                        .ip_auth
                        .get(&ip)
                        .is_some_and(|ids| Arc::strong_count(ids) == 1)
                    {
                        self.ip_auth.remove(&ip);
                    }
                }
                self.shared.watches().remove_conn(conn);
            }
            ExecMsg::FourLetter {
                conn,
                remote,
                word,
                out,
            } => {
                // Only the words that list this executor's connections come here (`fourlw::answer`).
                crate::fourlw::answer(
                    &self.shared,
                    word,
                    (conn, remote),
                    out,
                    self.connection_views(),
                );
            }
        }
    }

    /// Runs what can run of a connection's queue, in order.
    fn pump(&mut self, conn: ConnId) {
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.connecting || c.closing {
                c.release_queues();
                return;
            }
            let Some(front) = c.waiting().and_then(VecDeque::front) else {
                // Nothing left to start (a write started here is in `inflight` until it is applied).
                c.release_queues();
                return;
            };
            let is_write = matches!(front, Item::Write { .. });
            if !is_write && c.has_inflight() {
                return; // reads, auth and watch ops wait for this connection's earlier writes
            }
            let Some(item) = c.queues().waiting.pop_front() else {
                return;
            };
            match item {
                // A write stays outstanding until it is applied (it moves to `inflight`); the handshake is
                // not a request.
                Item::Write { .. } | Item::Connect(_) => {}
                _ => self.shared.requests_finished(1),
            }
            match item {
                Item::Connect(req) => self.start_connect(conn, req),
                Item::Write { xid, req } => self.propose_write(conn, xid, req),
                Item::Local { xid, req } => self.run_local(conn, xid, req),
                Item::Unimplemented { xid } => {
                    // UnimplementedRequestProcessor replies with the request's zxid: -1, as no txn was made.
                    self.reply(
                        conn,
                        xid,
                        -1,
                        ErrorCode::Unimplemented as i32,
                        &Response::Empty,
                    );
                    self.close_conn(conn);
                }
                Item::Malformed { xid } => {
                    self.reply(
                        conn,
                        xid,
                        self.shared.last_zxid(),
                        ErrorCode::MarshallingError as i32,
                        &Response::Empty,
                    );
                    self.close_conn(conn);
                }
            }
        }
    }

    fn start_connect(&mut self, conn: ConnId, req: ConnectRequest) {
        let cfg = &self.shared.config;
        let timeout = (req.timeout_ms.max(0) as u64)
            .max(cfg.min_session_timeout_ms())
            .min(cfg.max_session_timeout_ms()) as i32;
        let our_zxid = self.shared.state().last_zxid();
        if req.last_zxid_seen > our_zxid {
            tracing::info!(conn, client_zxid = req.last_zxid_seen, our_zxid,
                "refusing a client that has seen a later zxid than this member: it must try another server");
            self.close_conn(conn);
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.timeout_ms = timeout;
        if req.session_id == 0 {
            c.connecting = true;
            let op = CommandOp::CreateSession {
                timeout_ms: timeout,
            };
            self.propose_handshake(conn, 0, op);
            return;
        }
        // A reconnect. Refused here without a log entry when it cannot succeed: an unknown, closed or
        // expiring session, or a wrong password (checked in constant time; the owner is not disturbed).
        // Otherwise the touch keeps the session from expiring meanwhile and the replicated Revalidate
        // decides: it makes this connection the owner (see `apply_one`).
        let id = req.session_id;
        let pw = req.passwd.clone().unwrap_or_default();
        let plausible = {
            let sm = self.shared.state();
            sm.session_exists(id) && sm.check_password(id, &pw)
        } && self.shared.touch(id);
        if !plausible {
            self.refuse_connect(conn);
            return;
        }
        if self.older_than_a_claim(id, conn) {
            // An abandoned attempt (a client has one attempt at a time, and a newer one of the same session
            // was accepted after it): it must not take the session back from the newer one. ZooKeeper
            // decides a member's handshakes in accept order; here connections are read in parallel.
            tracing::debug!(
                conn,
                session = format!("0x{id:x}"),
                "a newer connection already reconnected this session: closing the older attempt"
            );
            self.close_conn(conn);
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.connecting = true;
        }
        if self.reconnecting.len() > 2 * self.conns.len() + 64 {
            // Claims whose Revalidate never came back (its proposal lost with a leadership change).
            let conns = &self.conns;
            self.reconnecting.retain(|_, c| conns.contains_key(c));
        }
        self.reconnecting.insert(id, conn);
        let op = CommandOp::Revalidate {
            password: pw,
            timeout_ms: timeout,
        };
        self.propose_handshake(conn, id, op);
    }

    /// Whether a connection of this member accepted after `conn` (a higher id: ids follow accept order)
    /// and not closing has already reconnected session `id`, or has its Revalidate in the log. Proposals
    /// of one member are applied in their order, so with this check a member's reconnects of one session
    /// reach the log oldest first, and the newest attempt ends up owning the session.
    fn older_than_a_claim(&self, id: i64, conn: ConnId) -> bool {
        let pending = self.reconnecting.get(&id).copied();
        let owner = self
            .shared
            .state()
            .session(id)
            .and_then(|s| s.owner)
            .filter(|o| o.member == self.member)
            .map(|o| o.conn.get());
        [pending, owner]
            .into_iter()
            .flatten()
            .any(|newer| newer > conn && self.conns.get(&newer).is_some_and(|c| !c.closing))
    }

    /// Proposes a connection's CreateSession or Revalidate; its outcome answers the ConnectRequest.
    fn propose_handshake(&mut self, conn: ConnId, session_id: i64, op: CommandOp) {
        let cmd = Command {
            session_id,
            cxid: 0,
            time_ms: wall_ms(),
            auth: vec![].into(),
            op,
        };
        self.proposals.push(Envelope {
            origin: Some(Origin {
                member: self.member,
                conn,
                xid: 0,
            }),
            cmd,
        });
    }

    /// Answers a ConnectRequest for a session that cannot be resumed with timeout 0 (clients read it as
    /// SESSION_EXPIRED), then closes the connection.
    fn refuse_connect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let resp = ConnectResponse {
            protocol_version: 0,
            timeout_ms: 0,
            session_id: 0,
            passwd: vec![0; 16],
            read_only: c.read_only_byte.then_some(false),
        };
        c.out.info().figures().sent += 1;
        self.shared.stats.packet_sent();
        send(c, &self.outbox, encode_connect_response(&resp));
        self.close_conn(conn);
    }

    fn finish_connect(&mut self, conn: ConnId, id: i64, timeout: i32, passwd: Vec<u8>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.session_id = id;
        c.timeout_ms = timeout;
        c.connecting = false;
        c.out.info().set_session(id);
        c.out.info().figures().session_established(id, timeout);
        let resp = ConnectResponse {
            protocol_version: 0,
            timeout_ms: timeout,
            session_id: id,
            passwd,
            read_only: c.read_only_byte.then_some(false),
        };
        c.out.info().figures().sent += 1;
        send(c, &self.outbox, encode_connect_response(&resp));
        self.shared.stats.packet_sent();
        self.pump(conn);
    }

    fn propose_write(&mut self, conn: ConnId, xid: i32, req: Request) {
        if !matches!(req, Request::CloseSession) && self.replicator.wal_health().is_out_of_space() {
            // The log cannot take writes until space returns: refuse at once rather than queue, as a
            // read-only ZooKeeper member does (clients know NOTREADONLY); reads go on being served.
            self.shared.requests_finished(1);
            self.reply(
                conn,
                xid,
                self.shared.last_zxid(),
                ErrorCode::NotReadOnly as i32,
                &Response::Empty,
            );
            self.pump(conn);
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.queues()
            .inflight
            .push_back((xid, Instant::now(), req.opcode()));
        let op = match req {
            Request::CloseSession => {
                self.shared.tracker().set_closing(c.session_id);
                CommandOp::CloseSession
            }
            req => CommandOp::Write(req),
        };
        let cmd = Command {
            session_id: c.session_id,
            cxid: xid,
            time_ms: wall_ms(),
            auth: c.auth.clone(),
            op,
        };
        self.proposals.push(Envelope {
            origin: Some(Origin {
                member: self.member,
                conn,
                xid,
            }),
            cmd,
        });
    }

    /// Applies what the log made durable (`replication::Settled`), in log order: an append applies once
    /// everything before it is applied; what openraft delivered first is skipped.
    fn apply_settled(&mut self) {
        for s in self.replicator.gate().take_settled() {
            self.settled.insert(s.first, s);
        }
        while let Some(entry) = self.settled.first_entry() {
            if entry.get().last < self.applied_end {
                entry.remove();
                continue;
            }
            if *entry.key() > self.applied_end {
                // A gap: an append before it was not reported (the report dropped, see `ProposalGate`),
                // or not yet: openraft delivers it.
                break;
            }
            let s = entry.remove();
            oxkeeper_storage::hoptrace::hop("exec_apply");
            self.apply_entries(&s.entries, s.last);
        }
        self.outbox.flush();
    }

    /// Applies what openraft committed, but what the executor applied already (`apply_settled`).
    fn apply_committed(&mut self, c: Committed) {
        self.apply_entries(&c.entries, c.last_index);
        let _ = c.applied.send(());
        // An append reported durable after openraft delivered part of it can follow on at once.
        if !self.settled.is_empty() {
            self.apply_settled();
        }
    }

    /// Applies the normal entries (`entries`) of the log up to `last` (its index), those not applied yet.
    fn apply_entries(&mut self, entries: &[(u64, Payload)], last: u64) {
        for (index, payload) in entries {
            if *index < self.applied_end {
                continue;
            }
            let batch = match self.proposed.take(payload) {
                Some(batch) => Ok(batch),
                None => decode_batch(payload),
            };
            match batch {
                Ok(batch) => {
                    self.since_snapshot += batch.len() as u64;
                    for env in batch {
                        self.apply_one(env);
                    }
                }
                Err(e) => {
                    // A payload this binary cannot read: applying around it would diverge. Stop.
                    tracing::error!(index, "cannot decode log entry: {e}");
                    std::process::exit(3);
                }
            }
        }
        self.applied_end = self.applied_end.max(last + 1);
        self.replicator.gate().executor_applied(self.applied_end);
        self.shared
            .since_snapshot
            .store(self.since_snapshot, Ordering::Relaxed);
        if self.since_snapshot >= self.shared.config.snap_count {
            self.since_snapshot = 0;
            self.shared.since_snapshot.store(0, Ordering::Relaxed);
            self.replicator
                .ask_snapshot(self.applied_end.checked_sub(1));
        }
    }

    fn apply_one(&mut self, env: Envelope) {
        // Connection ids are never 0 (they start from the wall clock, see `Shared::new`).
        let origin = env.origin.and_then(|o| {
            Some(Owner {
                member: o.member,
                conn: std::num::NonZeroU64::new(o.conn)?,
            })
        });
        // The change, the zxid readers reply with and the events it fires are one step to a reader: a
        // connection's reader that answers a read itself (under the read lock) must not show the change
        // before the watch event that tells its client of it.
        let mut state = self.shared.state_mut();
        let applied: Applied = state.apply_from(&env.cmd, origin);
        // Taken only by a command that fires something (most writes fire nothing), and kept until the
        // state's lock goes: a reader adds a watch only under the read lock, so it sees all or none of this.
        let mut watches = None;
        // Watch events go out before the reply of the write that fired them. A command that fires many
        // (the close of a session with thousands of ephemerals) hands them to the flushers as it goes, so
        // that the watchers read the first ones while the rest are made.
        // Each event is encoded once; every connection but the last gets a copy of the frame.
        let mut unflushed = 0;
        for t in &applied.triggers {
            let mut frame: Option<Vec<u8>> = None;
            let mut waiting: Option<ConnId> = None;
            let table = watches.get_or_insert_with(|| self.shared.watches());
            for conn in table.fired(t) {
                let Some(c) = self.conns.get(&conn) else {
                    continue;
                };
                if !check_acl(&t.acl, perms::READ, &c.auth) {
                    continue;
                }
                let frame = frame.get_or_insert_with(|| {
                    encode_notification_of(
                        t.zxid,
                        t.event.into(),
                        KeeperState::SyncConnected.into(),
                        &t.path,
                    )
                });
                if let Some(c) = waiting.replace(conn).and_then(|w| self.conns.get_mut(&w)) {
                    send_notification_frame(c, &self.outbox, &self.shared.stats, frame.clone());
                    unflushed += 1;
                }
            }
            if let Some((c, frame)) = waiting.and_then(|w| self.conns.get_mut(&w)).zip(frame) {
                send_notification_frame(c, &self.outbox, &self.shared.stats, frame);
                unflushed += 1;
            }
            if unflushed >= NOTIFICATIONS_PER_FLUSH {
                unflushed = 0;
                self.outbox.flush();
            }
        }
        if !matches!(env.cmd.op, CommandOp::Bootstrap { .. }) {
            self.shared.last_zxid.store(applied.zxid, Ordering::Release);
        }
        drop(watches);
        drop(state);
        let mine = env.origin.filter(|o| o.member == self.member);
        match applied.session {
            Some(SessionChange::Created {
                id,
                timeout_ms,
                passwd,
            }) => {
                let now = self.shared.now_ms();
                self.shared.tracker().track(id, timeout_ms as u64, now);
                if let Some(o) = mine {
                    if let Some(c) = self.conns.get_mut(&o.conn) {
                        c.out
                            .info()
                            .figures()
                            .session_created(applied.zxid, c.out.info().established_ms);
                        self.finish_connect(o.conn, id, timeout_ms, passwd.to_vec());
                    }
                }
                return;
            }
            Some(SessionChange::Revalidated {
                id,
                timeout_ms,
                passwd,
                previous,
            }) => {
                // The newly negotiated timeout governs later touches; the stored one stays the original.
                let now = self.shared.now_ms();
                self.shared.tracker().track(id, timeout_ms as u64, now);
                // The session moved: the connection that owned it, if it is one of ours, is closed (its
                // further writes would fail with SessionMoved anyway).
                let new_conn = mine.map(|o| o.conn);
                self.applied_claim(id, new_conn);
                if let Some(p) = previous.filter(|p| p.member == self.member) {
                    if Some(p.conn.get()) != new_conn {
                        tracing::info!(
                            session = format!("0x{id:x}"),
                            "session reconnected: closing its previous connection"
                        );
                        self.close_conn(p.conn.get());
                    }
                }
                if let Some(conn) = new_conn.filter(|c| self.conns.contains_key(c)) {
                    self.finish_connect(conn, id, timeout_ms, passwd.to_vec());
                }
                return;
            }
            Some(SessionChange::RevalidateFailed { id }) => {
                self.applied_claim(id, mine.map(|o| o.conn));
                if let Some(o) = mine {
                    self.refuse_connect(o.conn);
                }
                return;
            }
            Some(SessionChange::Closed { id, owner }) => {
                self.shared.tracker().remove(id);
                self.reconnecting.remove(&id);
                // The connection serving the session, if it is one of ours and still serves it (the
                // replicated owner: no table of its own per session on this member).
                let serving = owner
                    .filter(|o| o.member == self.member)
                    .map(|o| o.conn.get())
                    .filter(|c| self.conns.get(c).is_some_and(|c| c.session_id == id));
                if let Some(serving) = serving {
                    if mine.map(|o| o.conn) != Some(serving) {
                        self.close_conn(serving);
                    }
                }
                if let Some(o) = mine {
                    self.complete_write(o, &applied);
                    self.close_conn(o.conn);
                }
                return;
            }
            None => {}
        }
        if let Some(o) = mine {
            self.complete_write(o, &applied);
            if applied.err == ErrorCode::SessionMoved as i32 {
                // The session is owned by another connection now: a connection-level error, as in
                // ZooKeeper (ZOOKEEPER-710), so this one is closed after the reply.
                self.close_conn(o.conn);
            }
            if matches!(env.cmd.op, CommandOp::CloseSession) {
                // The session was already gone (expired meanwhile): the client still expects the socket
                // to close after the closeSession reply.
                self.close_conn(o.conn);
            }
        }
    }

    /// A Revalidate of session `id` from connection `conn` of this member was applied: it no longer claims.
    fn applied_claim(&mut self, id: i64, conn: Option<ConnId>) {
        if conn.is_some() && self.reconnecting.get(&id).copied() == conn {
            self.reconnecting.remove(&id);
        }
    }

    fn complete_write(&mut self, o: Origin, applied: &Applied) {
        let Some(c) = self.conns.get_mut(&o.conn) else {
            return;
        };
        match c.queues.as_ref().and_then(|q| q.inflight.front()) {
            Some(&(xid, started, op)) if xid == o.xid => {
                c.queues().inflight.pop_front();
                c.release_queues();
                let took = started.elapsed();
                c.out
                    .info()
                    .figures()
                    .completed(op, xid, applied.zxid, took);
                self.shared.stats.latency(took);
                self.shared.requests_finished(1);
            }
            _ => {
                tracing::error!(
                    conn = o.conn,
                    xid = o.xid,
                    "applied a write this connection is not waiting for"
                );
                self.close_conn(o.conn);
                return;
            }
        }
        self.reply(o.conn, o.xid, applied.zxid, applied.err, &applied.response);
        self.pump(o.conn);
    }

    fn run_local(&mut self, conn: ConnId, xid: i32, req: Request) {
        let zxid = self.shared.last_zxid();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let started = Instant::now();
        let op = req.opcode();
        let (reply_xid, reply_zxid, err, resp): (i32, i64, i32, Response) = match &req {
            Request::Ping => (xid::PING, zxid, 0, Response::Empty),
            Request::Auth(a) => {
                match authenticate(
                    &a.scheme,
                    a.auth.as_deref(),
                    c.out.info().remote(),
                    self.shared.config.super_digest.as_deref(),
                ) {
                    Some(ids) => {
                        let mut auth = c.auth.to_vec();
                        for id in ids {
                            if !auth.contains(&id) {
                                auth.push(id);
                            }
                        }
                        c.auth = auth.into();
                        // ZooKeeper echoes the request's xid (normally -4) with zxid 0.
                        (xid, 0, 0, Response::Empty)
                    }
                    None => {
                        let err = ErrorCode::AuthFailed as i32;
                        send(c, &self.outbox, encode_reply(xid, 0, err, &Response::Empty));
                        self.close_conn(conn);
                        return;
                    }
                }
            }
            Request::SetWatches { req: sw, .. } => {
                let state = self.shared.state();
                let events = self.shared.watches().set_watches(conn, sw, state.tree());
                for ev in events {
                    send_notification(c, &self.outbox, &self.shared.stats, -1, &ev);
                }
                (xid, zxid, 0, Response::Empty)
            }
            Request::CheckWatches(w) => {
                let err = self
                    .shared
                    .watches()
                    .check_watches(conn, &w.path, w.watcher_type);
                (xid, zxid, err, Response::Empty)
            }
            Request::RemoveWatches(w) => {
                let err = self
                    .shared
                    .watches()
                    .remove_watches(conn, &w.path, w.watcher_type);
                (xid, zxid, err, Response::Empty)
            }
            // ZooKeeper 3.8 does not validate the path; an unknown mode is MarshallingError (the
            // IllegalArgumentException of `WatcherMode.fromZooDef`).
            Request::AddWatch(AddWatchRequest { path, mode }) => {
                match WatchKind::from_add_watch_mode(*mode) {
                    Some(k) => {
                        self.shared.watches().add(conn, path, k);
                        (xid, zxid, 0, Response::ErrorResponse(0))
                    }
                    None => (
                        xid,
                        zxid,
                        ErrorCode::MarshallingError as i32,
                        Response::Empty,
                    ),
                }
            }
            Request::WhoAmI => {
                let infos = c
                    .auth
                    .iter()
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        user: oxkeeper_core::acl::auth_user_name(id),
                    })
                    .collect();
                (xid, zxid, 0, Response::WhoAmI(infos))
            }
            // No SASL server is configured: ZooKeeper 3.8 answers OK with a null token, zxid 0; a null
            // token in the request makes it fail and close the connection without a reply.
            Request::Sasl(None) => {
                self.close_conn(conn);
                return;
            }
            Request::Sasl(Some(_)) => (xid, 0, 0, Response::Sasl { token: None }),
            _ => {
                let (err, resp) = self.shared.state().read(c.session_id, &req, &c.auth);
                if let Some((path, kind)) = watch_for_read(&req, err) {
                    self.shared.watches().add(conn, path, kind);
                }
                (xid, zxid, err, resp)
            }
        };
        let took = started.elapsed();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.info().figures().completed(op, xid, zxid, took);
        }
        // ZooKeeper's FinalRequestProcessor counts the latency of every request it answers; auth, SASL and
        // whoAmI are answered before it.
        if !matches!(req, Request::Auth(_) | Request::Sasl(_) | Request::WhoAmI) {
            self.shared.stats.latency(took);
        }
        self.reply(conn, reply_xid, reply_zxid, err, &resp);
    }

    fn reply(&mut self, conn: ConnId, xid: i32, zxid: i64, err: i32, resp: &Response) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.out.info().figures().sent += 1;
        self.shared.stats.packet_sent();
        send(c, &self.outbox, encode_reply(xid, zxid, err, resp));
        // Every request's reply passes here: the connection's reader may answer reads again once all of
        // them are queued.
        c.out.info().answered_by_executor();
    }

    fn close_conn(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closing = true;
            let dropped = c.waiting().map_or(0, |w| {
                w.iter().filter(|i| !matches!(i, Item::Connect(_))).count()
            });
            if let Some(q) = c.queues.as_mut() {
                q.waiting = VecDeque::new();
            }
            c.release_queues();
            // Gone from the connection table before the client can see its socket close (ZooKeeper's
            // `NIOServerCnxn.close` removes it from the factory first): a `cons` sent the moment the client
            // sees the end of the stream must not list it.
            self.shared.stats.cnxn_closed(conn, self.shared.now_ms());
            c.out.close();
            self.shared.requests_finished(dropped);
        }
    }

    /// The expiry pass. Only a leader that has applied everything committed before its term expires
    /// sessions, and its CloseSession proposals are conditioned on it still leading. Due sessions are
    /// marked closing at once (their requests are dropped, a reconnect is refused) and queued; their
    /// CloseSessions are proposed at no more than `sessionExpiryRate` nodes per second (a session counts
    /// one plus its ephemerals), so a mass expiry — after a restart, or when thousands of clients are cut
    /// off together — never floods the log and the executor ahead of live sessions' requests. An expired
    /// session's ephemerals are therefore gone within T + tick + backlog / rate of its last touch.
    async fn expire_sessions(&mut self) {
        let Some(leadership) = self.replicator.leadership() else {
            return;
        };
        let now = self.shared.now_ms();
        {
            let mut t = self.shared.tracker();
            // Each returned session is already marked closing in the tracker.
            for id in t.expire_within(now, oxkeeper_core::tracker::EXPIRY_PASS_BUDGET) {
                self.shared
                    .stats
                    .count(crate::stats::Counter::StaleSessionExpired);
                self.expiry_backlog.push_back(id);
            }
        }
        self.expiry_pacer.refill(now);
        let mut batch = Vec::new();
        while self.expiry_pacer.admits() {
            let Some(id) = self.expiry_backlog.pop_front() else {
                break;
            };
            let Some(ephemerals) = self.shared.state().session(id).map(|s| s.ephemerals.len())
            else {
                continue; // closed meanwhile
            };
            tracing::info!(session = format!("0x{id:x}"), "session expired");
            // A session with more ephemerals than one pass allows still goes out whole, and the debt is
            // paid by the next passes.
            self.expiry_pacer.spend(1.0 + ephemerals as f64);
            batch.push(Envelope {
                origin: None,
                cmd: Command {
                    session_id: id,
                    cxid: 0,
                    time_ms: wall_ms(),
                    auth: vec![].into(),
                    op: CommandOp::CloseSession,
                },
            });
        }
        if self.expiry_backlog.is_empty() {
            self.expiry_pacer.idle();
        }
        self.shared
            .expiry_backlog
            .store(self.expiry_backlog.len(), Ordering::Relaxed);
        if batch.is_empty() {
            return;
        }
        let proposed = self
            .replicator
            .propose_as(&leadership, encode_batch(&batch))
            .await;
        if let Err(e) = proposed {
            // No longer the leader (or the log is gone): the next leader expires these sessions. Here
            // they stay marked closing; this member stops serving them when the close commits.
            tracing::warn!("session expiry not proposed: {e}");
        }
    }

    /// ZooKeeper's ContainerManager: deletes emptied containers and expired TTL nodes, at most
    /// `znode.container.maxPerMinute` of them per minute so a mass expiry cannot flood the log.
    fn reap_containers(&mut self) {
        if self.replicator.leadership().is_none() {
            return;
        }
        self.reaper_pacer.refill(self.shared.now_ms());
        if !self.reaper_pacer.admits() {
            return;
        }
        let candidates = self.shared.state().container_candidates(wall_ms());
        for path in candidates {
            if !self.reaper_pacer.admits() {
                break;
            }
            self.reaper_pacer.spend(1.0);
            let cmd = Command {
                session_id: 0,
                cxid: 0,
                time_ms: wall_ms(),
                auth: vec![].into(),
                op: CommandOp::Write(Request::DeleteContainer(path)),
            };
            self.proposals.push(Envelope { origin: None, cmd });
        }
    }

    /// The connections this executor serves, for the four-letter words that list them.
    fn connection_views(&self) -> Vec<crate::fourlw::ConnView> {
        self.conns
            .iter()
            .map(|(id, c)| crate::fourlw::ConnView {
                id: *id,
                remote: c.out.info().remote(),
                queued: c.queued(),
                out_queued: c.out.queued(),
                session_id: c.session_id,
                timeout_ms: c.timeout_ms,
            })
            .collect()
    }
}

/// Entries openraft's state machine task may fall behind the executor before a proposal waits for it
/// (`Executor::flush_proposals`).
const OPENRAFT_LAG_MAX: u64 = 32;

/// Proposed log entries the executor lets wait for the disk (see `ProposalGate`): one. While it is being
/// made durable, new commands gather in `proposals` and go out as one entry the moment it is (group commit
/// one level up: one entry for many commands costs openraft and the log far less than one each, and a
/// second entry waiting behind the fdatasync in progress would carry only what arrived before it was
/// proposed, leaving the rest for a third).
const MAX_UNDURABLE_PROPOSALS: u64 = 1;

/// How often the expiry pass runs: a tenth of a tick, between 10 and 50 ms, so a bucket is expired at most
/// 50 ms after its time (ZooKeeper's expirer thread wakes exactly at it). A pass with nothing due costs a
/// few nanoseconds in the tracker.
fn expiry_period(cfg: &Config) -> Duration {
    Duration::from_millis((cfg.tick_ms / 10).clamp(10, 50))
}

/// Gives an emptied queue's buffer back: most connections are idle most of the time, and a queue keeps
/// the capacity of its busiest moment (4 requests of ~150 B here after a single one).
pub(crate) fn release_if_empty<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > 0 {
        *q = VecDeque::new();
    }
}

/// Writes a four-letter word's text and closes its connection. The connection is gone from the connection
/// table before the client can see the end of the text (as with ZooKeeper, which closes it before the next
/// command runs): a command that follows at once must not count or list it.
pub(crate) fn answer_four_letter(shared: &Shared, conn: ConnId, out: &Outbound, text: String) {
    shared.stats.cnxn_closed(conn, shared.now_ms());
    out.send(text.into_bytes());
    out.close();
}

/// Queues a frame, written when this pass of the executor ends (`Outbox::flush`); a connection whose queue
/// is full is marked closing (it is being closed).
fn send(c: &mut Conn, outbox: &Outbox, frame: Vec<u8>) {
    if !c.out.queue(frame, outbox) {
        c.closing = true;
    }
}

/// Notifications one command queues before they are handed to the flushers in the middle of its apply
/// (`Executor::apply_one`).
const NOTIFICATIONS_PER_FLUSH: usize = 512;

/// A watch event; ZooKeeper counts it as a packet sent.
fn send_notification(
    c: &mut Conn,
    outbox: &Outbox,
    stats: &ServerStats,
    zxid: i64,
    ev: &WatcherEvent,
) {
    send_notification_frame(c, outbox, stats, encode_notification(zxid, ev));
}

fn send_notification_frame(c: &mut Conn, outbox: &Outbox, stats: &ServerStats, frame: Vec<u8>) {
    c.out.info().figures().sent += 1;
    stats.packet_sent();
    send(c, outbox, frame);
}

/// The ids an AuthPacket adds, or `None` for an unknown scheme or bad credentials (AUTHFAILED, then close).
fn authenticate(
    scheme: &str,
    auth: Option<&[u8]>,
    remote: SocketAddr,
    super_digest: Option<&str>,
) -> Option<Vec<Id>> {
    match scheme {
        "digest" => {
            // ZooKeeper decodes the bytes with replacement characters (`new String(bytes)`), never failing
            // on their content; null auth data is an exception there, hence AUTHFAILED.
            let text = String::from_utf8_lossy(auth?).into_owned();
            let id = digest_id(&text);
            let mut ids = vec![Id {
                scheme: "digest".into(),
                id: id.clone(),
            }];
            if super_digest == Some(id.as_str()) {
                ids.push(Id {
                    scheme: "super".into(),
                    id: String::new(),
                });
            }
            Some(ids)
        }
        "ip" => Some(vec![Id {
            scheme: "ip".into(),
            id: remote.ip().to_string(),
        }]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(cxid: i32) -> Vec<Envelope> {
        vec![Envelope {
            origin: None,
            cmd: Command {
                session_id: 1,
                cxid,
                time_ms: 0,
                auth: vec![].into(),
                op: CommandOp::CloseSession,
            },
        }]
    }

    #[test]
    fn a_proposed_batch_is_known_again_by_its_payload_and_not_by_equal_bytes() {
        let mut proposed = Proposed::default();
        let (a, b, c) = (
            encode_batch(&batch(1)),
            encode_batch(&batch(2)),
            encode_batch(&batch(3)),
        );
        proposed.keep(&a, batch(1));
        proposed.keep(&b, batch(2));
        proposed.keep(&c, batch(3));
        // The same bytes read back from the log's files are another payload: decoded, nothing taken.
        let b_read_back = Payload(b.0.to_vec().into());
        assert_eq!(proposed.take(&b_read_back), None);
        assert_eq!(proposed.0.len(), 3);
        // b applied: a, proposed before it and not applied first, never will be and goes with it.
        assert_eq!(proposed.take(&b.clone()), Some(batch(2)));
        assert_eq!(proposed.take(&a), None);
        assert_eq!(proposed.take(&c), Some(batch(3)));
        assert!(proposed.0.is_empty());
    }

    #[test]
    fn kept_batches_are_bounded_and_a_failed_proposal_is_given_back() {
        let mut proposed = Proposed::default();
        let payloads: Vec<Payload> = (0..PROPOSED_KEPT as i32 + 3)
            .map(|i| {
                let p = encode_batch(&batch(i));
                proposed.keep(&p, batch(i));
                p
            })
            .collect();
        assert_eq!(proposed.0.len(), PROPOSED_KEPT);
        assert_eq!(proposed.take(&payloads[2]), None, "the oldest went");
        let last = payloads.len() as i32 - 1;
        assert_eq!(proposed.forget_last(), batch(last));
        assert_eq!(proposed.take(&payloads[last as usize]), None);
        assert_eq!(
            proposed.take(&payloads[last as usize - 1]),
            Some(batch(last - 1))
        );
    }
}
