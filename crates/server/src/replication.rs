//! Replication through openraft: the only module that names openraft.
//!
//! Standalone is an ensemble of one: one code path. The log store keeps the recent end of the log in memory
//! (every entry not yet applied, so apply never reads the disk, and a bounded window of applied ones; older
//! entries are read back from the WAL's files when asked for) and makes entries durable through the storage
//! crate's group-commit WAL: openraft is told an append is flushed only after its batch's fdatasync. The state machine is a thin proxy: committed entries go
//! to the executor task, which owns the real state. Entries carry opaque payloads (postcard-encoded command
//! batches) so this module knows nothing of ZooKeeper.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{
    LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use openraft::{
    BasicNode, EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, ServerState,
};
use oxkeeper_storage::snapshot::{
    list_snapshots, read_snapshot, retain_snapshots, write_snapshot, write_snapshot_with,
    SnapshotFile,
};
use oxkeeper_storage::{
    read_file, write_atomic_waiting_for_space, Disk, RealDisk, Wal, WalOptions, WalWriter,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// An opaque replicated payload: one batch of commands, encoded by the executor. Shared, not copied: the
/// log's memory, openraft and the apply hold the same bytes, and the executor knows its own proposals
/// again at apply by their address (`executor::Proposed`). Serialized as bytes (one copy, where serde's
/// `Arc<[u8]>` is a sequence serialized a byte at a time): postcard encodes both as a `Vec<u8>`, a length
/// then the bytes, so logs written either way read the same.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(pub Arc<[u8]>);

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(Payload(bytes.into_vec().into()))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}
impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Payload,
        R = (),
        NodeId = u64,
        Node = BasicNode,
);

type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig, StateMachineProxy>;

/// A term in which this member leads (see [`Replicator::leadership`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership(openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>);

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
}

fn io_err(e: impl fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The wait after a failed snapshot write: doubling from the first to the second.
const SNAPSHOT_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));
/// A snapshot write failing again and again is logged at its first failure and every this many.
const SNAPSHOT_FAILURES_PER_LOG: u32 = 30;

/// Calls `attempt` until it succeeds, telling `failed` of each failure (with its number, from 1) and
/// sleeping (`SNAPSHOT_RETRY`) before the next; returns the result and the number of failures. A
/// snapshot is never needed for safety (the log keeps every entry after the last snapshot, and is not
/// purged meanwhile), so a failed write, above all on a full device (a snapshot is the largest write a
/// member makes), is waited out rather than returned: openraft stops for good on any storage error
/// (session 28: a snapshot that hit ENOSPC stopped its core, and the member answered nothing more, not
/// even `ruok`). Any error is tried again, EIO too: each attempt writes its temporary file whole from
/// the point-in-time copy, so pages a failed fsync dropped are never trusted (the log's own EIO rule,
/// fail-stop, guards acknowledged writes; a snapshot acknowledges nothing).
fn retry_until_written<T, E>(
    mut attempt: impl FnMut() -> Result<T, E>,
    mut failed: impl FnMut(&E, u32),
    mut sleep: impl FnMut(Duration),
) -> (T, u32) {
    let (mut delay, longest) = SNAPSHOT_RETRY;
    let mut failures = 0;
    loop {
        match attempt() {
            Ok(written) => return (written, failures),
            Err(error) => {
                failures += 1;
                failed(&error, failures);
                sleep(delay);
                delay = (delay * 2).min(longest);
            }
        }
    }
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice 19) and waits for its result.
/// Serializing a large state keeps a core busy for a while (a million nodes make ~100 MB); at nice 19
/// it takes what requests leave, and a waking runtime worker preempts it at once (under a machine kept
/// fully busy a snapshot takes longer: a million nodes need ~130 ms of CPU). Session 28, a 90 MB
/// snapshot every second beside set at 32 sessions on 2 cores, with the snapshot's writes paced as well
/// (`DiskFile::write_behind`): p99.9 13-27 -> 7.5-8.4 ms (bench/RESULTS.md). A thread per snapshot:
/// they are rare, and tokio's blocking pool would keep the lowered priority for whatever it runs next.
async fn in_background<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| io_err(format!("{name}: the thread ended without a result")))?
}

/// Sets the calling thread's nice value to 19. On Linux the nice value is a thread's own, and raising it
/// needs no privilege; if it fails, the work runs at the priority it has.
fn lower_priority() {
    // SAFETY: plain system calls about the calling thread; they read only their arguments.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    };
    if rc != 0 {
        tracing::debug!(
            "could not lower a background thread's priority: {}",
            io::Error::last_os_error()
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Log store

struct LogInner {
    last_purged: Option<LogId>,
    /// The recent end of the log.
    tail: Tail,
    vote: Option<Vote>,
}

/// Applied entries kept in memory beyond those that must be (ZooKeeper keeps its last 500 committed
/// proposals, `commitLogCount`): a follower a little behind is served from memory. Older ones are read
/// back from the WAL's files.
const TAIL_KEEP_ENTRIES: usize = 1024;
/// ... and at most this many bytes of them (encoded), whatever their number. An entry is a batch (up to
/// hundreds of commands under load: ~14 KB each when 1024 creates are in flight), so this bound is the
/// one that holds: 4 MiB is thousands of commands, and not ~30 B per node of a bulk load kept for good.
const TAIL_KEEP_BYTES: usize = 4 << 20;

/// The end of the log in memory: consecutive entries, each with its encoded size. It holds every entry
/// that is not yet both applied and durable, the last entry always, and older ones up to the
/// `TAIL_KEEP_*` bounds; the entries before `first` are in the WAL (or purged).
#[derive(Default)]
struct Tail {
    /// Index of `entries[0]` (meaningless while empty).
    first: u64,
    entries: VecDeque<(Entry, u32)>,
    bytes: usize,
}

impl Tail {
    /// Index one past the last entry; `None` while empty.
    fn end(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first + self.entries.len() as u64)
    }

    fn last(&self) -> Option<&Entry> {
        self.entries.back().map(|(e, _)| e)
    }

    fn push(&mut self, entry: Entry, bytes: usize) -> io::Result<()> {
        let index = entry.index();
        match self.end() {
            None => self.first = index,
            Some(end) if end == index => {}
            Some(end) => {
                return Err(io_err(format!(
                    "log entry {index} appended where entry {end} was expected"
                )))
            }
        }
        self.bytes += bytes;
        self.entries
            .push_back((entry, u32::try_from(bytes).unwrap_or(u32::MAX)));
        Ok(())
    }

    /// Drops the entries before `index`.
    fn drop_before(&mut self, index: u64) {
        while self.first < index {
            let Some((_, bytes)) = self.entries.pop_front() else {
                return;
            };
            self.bytes -= bytes as usize;
            self.first += 1;
        }
    }

    /// Drops the entries from `index` on.
    fn drop_from(&mut self, index: u64) {
        while self.end().is_some_and(|end| end > index) {
            if let Some((_, bytes)) = self.entries.pop_back() {
                self.bytes -= bytes as usize;
            }
        }
    }

    /// Drops applied, durable entries (`< settled`) beyond the `TAIL_KEEP_*` bounds, oldest first.
    fn evict(&mut self, settled: u64) {
        while self.first < settled
            && self.entries.len() > 1
            && (self.entries.len() > TAIL_KEEP_ENTRIES || self.bytes > TAIL_KEEP_BYTES)
        {
            self.drop_before(self.first + 1);
        }
    }

    /// Clones of the entries in `from..to` that are here.
    fn range(&self, from: u64, to: u64) -> Vec<Entry> {
        let Some(end) = self.end() else {
            return Vec::new();
        };
        let (from, to) = (from.max(self.first), to.min(end));
        if from >= to {
            return Vec::new();
        }
        let (a, b) = ((from - self.first) as usize, (to - self.first) as usize);
        self.entries.range(a..b).map(|(e, _)| e.clone()).collect()
    }
}

/// openraft's log store over the WAL, with the recent end of the log in memory (`Tail`).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    /// One past the last entry the state machine applied (0: none): set by `StateMachineProxy`.
    applied_end: Arc<AtomicU64>,
    wal: Arc<WalWriter>,
    vote_path: PathBuf,
    /// How far the log is known committed and durable, kept in a file beside it (`committed.rs`).
    committed: Arc<crate::committed::CommittedRecord>,
    /// Counts the normal entries made durable, for the executor's `ProposalGate`.
    gate: Arc<ProposalGate>,
}

/// How many proposed normal entries (client commands, expiries, settings) the log has not yet made
/// durable, and a signal each time it makes some durable. The executor proposes its next entry only
/// when none is waiting for the disk: the commands that arrive while one fdatasync runs then go out
/// together as the next entry the moment it ends, instead of trailing behind in entries of their own
/// (session 9, set at 32 sessions: ~9.6 commands per fdatasync with two entries let wait for the disk).
#[derive(Default)]
pub struct ProposalGate {
    /// Normal entries handed to openraft (counted by `Replicator` once accepted).
    proposed: AtomicU64,
    /// Normal entries the log made durable (counted by `LogStore::append`'s completions).
    durable: AtomicU64,
    /// Signalled after `durable` moves.
    signal: tokio::sync::Notify,
    /// Whether an append's durability is reported as `Settled` (an ensemble of one: durable is committed).
    settles: std::sync::atomic::AtomicBool,
    /// Appends made durable, for the executor (`take_settled`), in the order their completions ran.
    settled: Mutex<Vec<Settled>>,
    /// One past the last entry the executor applied (`executor_applied`): openraft's state machine task
    /// does not hand it entries it already applied.
    executor_applied_end: AtomicU64,
    /// One past the last entry openraft's state machine task applied (`openraft_lag`).
    openraft_applied_end: AtomicU64,
    /// Turns the executor gave openraft to catch up before a proposal (`Executor::flush_proposals`), since
    /// the start (`mntr`).
    lag_yields: AtomicU64,
}

/// `Settled` reports kept at most until the executor takes them.
const SETTLED_KEPT: usize = 1024;

/// Entries of one append that the log made durable. In an ensemble of one that is their commit (the only
/// voter has them, and no other leader can ever truncate them), so the executor applies them at once
/// instead of one hop through openraft's core and another through its state machine task later (session
/// 33: durable -> applied 21 -> 4 us p50 at 1 session, of a ~370 us write). openraft still commits and applies
/// them as before; the executor then skips what it applied (`Executor::apply_committed`).
#[derive(Debug)]
pub struct Settled {
    /// Index of the append's first entry (of any kind).
    pub first: u64,
    /// Index of its last entry.
    pub last: u64,
    /// Its normal entries' payloads, in log order.
    pub entries: Vec<(u64, Payload)>,
}

impl ProposalGate {
    /// Proposed normal entries not yet durable. A completion can count an entry before its proposal
    /// returns, so the difference is read saturating.
    pub fn undurable(&self) -> u64 {
        let durable = self.durable.load(Ordering::Acquire);
        self.proposed
            .load(Ordering::Acquire)
            .saturating_sub(durable)
    }

    /// Resolves after the log makes entries durable (or at once if it did since the last call).
    pub async fn made_durable(&self) {
        self.signal.notified().await
    }

    fn proposed(&self) {
        self.proposed.fetch_add(1, Ordering::AcqRel);
    }

    /// Appends made durable since the last call (`Settled`: only in an ensemble of one).
    pub fn take_settled(&self) -> Vec<Settled> {
        std::mem::take(&mut *self.settled.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// From now on, appends made durable are reported (`take_settled`): for a member that is the only
    /// voter of its cluster.
    fn settle_at_durability(&self) {
        self.settles.store(true, Ordering::Release);
    }

    /// The executor applied every entry up to `end` (exclusive).
    pub fn executor_applied(&self, end: u64) {
        self.executor_applied_end.fetch_max(end, Ordering::AcqRel);
    }

    fn settles(&self) -> bool {
        self.settles.load(Ordering::Acquire)
    }

    /// The executor let openraft's tasks run once before proposing, openraft being behind.
    pub fn note_lag_yield(&self) {
        self.lag_yields.fetch_add(1, Ordering::Relaxed);
    }

    /// Turns given to openraft to catch up so far (`note_lag_yield`).
    pub fn lag_yields(&self) -> u64 {
        self.lag_yields.load(Ordering::Relaxed)
    }

    /// How many entries the executor applied that openraft's state machine task has not: see
    /// `Executor::flush_proposals`, which keeps it small.
    pub fn openraft_lag(&self) -> u64 {
        self.executor_applied_end
            .load(Ordering::Acquire)
            .saturating_sub(self.openraft_applied_end.load(Ordering::Acquire))
    }

    fn durable(&self, entries: u64, settled: Option<Settled>) {
        if let Some(s) = settled {
            let mut reports = self.settled.lock().unwrap_or_else(|p| p.into_inner());
            // Nobody takes them (a test of this module, an executor that stopped): the oldest go. A report
            // is only a shortcut: openraft delivers the same entries to the executor anyway.
            if reports.len() >= SETTLED_KEPT {
                reports.remove(0);
            }
            reports.push(s);
        }
        if entries > 0 {
            self.durable.fetch_add(entries, Ordering::AcqRel);
            self.signal.notify_one();
        }
    }
}

impl LogStore {
    /// Opens the WAL under `dir`, replaying what it holds into memory.
    pub fn open(dir: &Path) -> Result<LogStore, ReplicationError> {
        Self::open_on(RealDisk, dir)
    }

    /// `open`, with the WAL on `disk` (tests wrap `RealDisk` to stall or fail its syncs). The vote file
    /// stays on the real file system.
    pub fn open_on<D: Disk>(disk: D, dir: &Path) -> Result<LogStore, ReplicationError> {
        Self::open_after(disk, dir, None, WalOptions::default())
    }

    /// Opens the log, which must continue the snapshot that covers it up to `snapshot` (the newest
    /// snapshot's last log id): entries up to there count as purged.
    fn open_after<D: Disk>(
        disk: D,
        dir: &Path,
        snapshot: Option<LogId>,
        wal_options: WalOptions,
    ) -> Result<LogStore, ReplicationError> {
        let (wal, recovered) = Wal::open(disk, &dir.join("log"), wal_options)
            .map_err(|e| ReplicationError::Storage(e.to_string()))?;
        if let Some((file, offset)) = &recovered.truncated_tail {
            tracing::warn!(file = %file.display(), offset, "cut off a torn, unacknowledged tail of the log");
        }
        let mut tail = Tail::default();
        for (index, bytes) in recovered.entries {
            let entry: Entry = postcard::from_bytes(&bytes).map_err(|e| {
                ReplicationError::Storage(format!("log entry {index} does not decode: {e}"))
            })?;
            tail.push(entry, bytes.len())
                .map_err(|e| ReplicationError::Storage(e.to_string()))?;
        }
        let vote_path = dir.join("vote");
        let vote = match read_file(&RealDisk, &vote_path)
            .map_err(|e| ReplicationError::Storage(e.to_string()))?
        {
            None => None,
            Some(b) => Some(
                postcard::from_bytes(&b)
                    .map_err(|e| ReplicationError::Storage(format!("vote file: {e}")))?,
            ),
        };
        // The log continues the snapshot: its first entry is at most one past the snapshot (openraft's first
        // entry, the initial membership, has index 0).
        let covered = snapshot.map_or(0, |l| l.index() + 1);
        if tail.end().is_some() {
            let first = tail.first;
            if first > covered {
                return Err(ReplicationError::Storage(format!(
                    "the log in {} starts at entry {first}, but the newest valid snapshot covers only the \
                     entries before {covered}: entries are missing. Restore the missing snapshot file (or the \
                     whole data directory from a backup).",
                    dir.display()
                )));
            }
        }
        let (committed, recorded) =
            crate::committed::CommittedRecord::open(dir).map_err(ReplicationError::Storage)?;
        let last_in_log = tail
            .last()
            .map(|e| e.index())
            .or(snapshot.map(|l| l.index()));
        crate::committed::check_log_end(dir, recorded, last_in_log)
            .map_err(ReplicationError::Storage)?;
        let inner = LogInner {
            last_purged: snapshot,
            tail,
            vote,
        };
        let wal = Arc::new(WalWriter::spawn(wal));
        committed
            .spawn_persister(&wal)
            .map_err(|e| ReplicationError::Storage(format!("starting a thread: {e}")))?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            applied_end: Arc::new(AtomicU64::new(snapshot.map_or(0, |l| l.index() + 1))),
            wal,
            vote_path,
            committed,
            gate: Arc::new(ProposalGate::default()),
        })
    }

    pub fn last_index(&self) -> Option<u64> {
        self.lock().tail.last().map(|e| e.index())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn wal_call(
        &self,
        f: impl FnOnce(&WalWriter, Box<dyn FnOnce(Result<(), oxkeeper_storage::WalError>) + Send>),
    ) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        f(
            &self.wal,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.map_err(io_err)?.map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        use std::ops::Bound;
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        // What memory holds is copied now; what lies before it (entries left to the WAL) is read after,
        // without the lock: those entries are durable and stay in the files until a purge, which openraft
        // orders after its reads of them.
        // Entries before the log's first one are not there (as with a range past its end, what exists is
        // returned): the WAL says where its entries start when asked for earlier ones. A purge between the
        // look at memory and the read moves that start too.
        let mut from = from;
        let mut attempts = 0;
        let (read, in_memory) = loop {
            let (on_disk, in_memory) = {
                let inner = self.lock();
                let log_first = inner.last_purged.map_or(0, |l| l.index() + 1);
                let disk_to = inner.tail.end().map_or(log_first, |_| inner.tail.first);
                from = from.max(log_first);
                ((from, to.min(disk_to)), inner.tail.range(from, to))
            };
            if on_disk.0 >= on_disk.1 {
                return Ok(in_memory);
            }
            let wal = self.wal.clone();
            let (a, b) = on_disk;
            match tokio::task::spawn_blocking(move || wal.read(a, b - 1))
                .await
                .map_err(io_err)?
            {
                Ok(read) => break (read, in_memory),
                Err(oxkeeper_storage::WalError::NotInLog {
                    first: Some(first), ..
                }) if first > a && attempts < 3 => {
                    from = first;
                    attempts += 1;
                }
                Err(e) => return Err(io_err(e)),
            }
        };
        let mut out = Vec::with_capacity(read.len() + in_memory.len());
        for (index, bytes) in read {
            let entry: Entry = postcard::from_bytes(&bytes)
                .map_err(|e| io_err(format!("log entry {index} read back does not decode: {e}")))?;
            out.push(entry);
        }
        out.extend(in_memory);
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock();
        let last = inner
            .tail
            .last()
            .map(|e| e.log_id())
            .or_else(|| inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Only told, not written here: the record's thread writes it, never past the synced log.
        if let Some(committed) = committed {
            self.committed.committed(committed.index());
        }
        Ok(())
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = postcard::to_allocvec(vote).map_err(io_err)?;
        let path = self.vote_path.clone();
        // openraft stops for good on an error here, so a full device is waited out (as the WAL does).
        tokio::task::spawn_blocking(move || {
            let retry = (Duration::from_millis(100), Duration::from_secs(1));
            write_atomic_waiting_for_space(&RealDisk, &path, &bytes, retry, |error, attempt| {
                if attempt == 1 || attempt % 60 == 0 {
                    tracing::error!(file = %path.display(), %error,
                        "the device is full: the Raft vote is retried until space is freed");
                }
            })
        })
        .await
        .map_err(io_err)??;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        let mut normal = 0u64;
        let mut settled = self.gate.settles().then(|| Settled {
            first: u64::MAX,
            last: 0,
            entries: Vec::new(),
        });
        {
            let mut inner = self.lock();
            for entry in entries {
                let index = entry.index();
                if let EntryPayload::Normal(p) = &entry.payload {
                    normal += 1;
                    if let Some(s) = &mut settled {
                        s.entries.push((index, p.clone()));
                    }
                }
                if let Some(s) = &mut settled {
                    s.first = s.first.min(index);
                    s.last = index;
                }
                let bytes = postcard::to_allocvec(&entry).map_err(io_err)?;
                inner.tail.push(entry, bytes.len())?;
                encoded.push((index, bytes));
            }
            // Entries both applied and durable may leave memory (beyond the kept window).
            let applied_end = self.applied_end.load(Ordering::Acquire);
            let synced_end = self.wal.synced_index().map_or(0, |i| i + 1);
            inner.tail.evict(applied_end.min(synced_end));
        }
        oxkeeper_storage::hoptrace::hop("append");
        let gate = self.gate.clone();
        let settled = settled.filter(|s| s.first <= s.last);
        let settles = settled.is_some();
        // Who tells openraft: the completion itself, unless it ran inline below (then the caller, after
        // letting the executor apply first).
        let told = Arc::new(Mutex::new(Told {
            inline: true,
            callback: Some(callback),
            result: None,
        }));
        let told_by_completion = told.clone();
        let done: oxkeeper_storage::Completion = Box::new(move |r| {
            if r.is_ok() {
                gate.durable(normal, settled);
            }
            let mut t = told_by_completion.lock().unwrap_or_else(|p| p.into_inner());
            if t.inline {
                t.result = Some(r.map_err(io_err));
            } else if let Some(callback) = t.callback.take() {
                drop(t);
                callback.io_completed(r.map_err(io_err));
            }
        });
        // On the apply thread (`crate::apply_thread`), with the log idle and its disk quick, the entry is
        // written and synced here, on this thread: the hand-off to the log's thread and the completion's
        // way back were each a wake-up of a sleeping thread. First yield, so that what is already runnable on
        // this thread (openraft's state machine task, an executor pass woken meanwhile) runs before it
        // blocks, not one fdatasync later; the executor applied the entry before and wrote its replies
        // before it proposed this one (`Executor::run`, the durable arm). Anywhere else (tests of this
        // module on a runtime's workers) or with a disk that has turned slow (`is_idle_and_quick`: the
        // executor must not wait on it long), the log's thread writes it.
        let inline = crate::apply_thread::on_apply_thread() && self.wal.is_idle_and_quick();
        if inline {
            tokio::task::yield_now().await;
            // Marked: a disk that hangs here has the connections moved off this thread (`crate::home`).
            crate::apply_thread::blocking(|| self.wal.submit_now(encoded, done));
        } else {
            self.wal.submit(encoded, done);
        }
        let finished = {
            let mut t = told.lock().unwrap_or_else(|p| p.into_inner());
            t.inline = false;
            match t.result.take() {
                Some(result) => t.callback.take().map(|callback| (result, callback)),
                None => None,
            }
        };
        if let Some((result, callback)) = finished {
            // Durable before the submit returned (written and synced on this thread, or the log's
            // thread was that quick). With the entries `Settled`, yield once more before openraft's core
            // hears of it: the executor, woken by the gate, applies them and replies first, instead of
            // after the core's commit (session 33: ~15 us of a write at 1 session).
            if settles {
                tokio::task::yield_now().await;
            }
            callback.io_completed(result);
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep = last_log_id.map(|l| l.index());
        self.lock().tail.drop_from(keep.map_or(0, |k| k + 1));
        match keep {
            Some(k) => self.wal_call(|w, done| w.truncate_after(k, done)).await,
            None => self.wal_call(|w, done| w.clear(done)).await,
        }
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index();
        {
            let mut inner = self.lock();
            inner.tail.drop_before(upto.saturating_add(1));
            inner.last_purged = Some(log_id);
        }
        self.wal_call(|w, done| w.purge_upto(upto, done)).await
    }
}

/// An append's way to tell openraft it is durable (see `LogStore::append`).
struct Told {
    /// The caller is still inside the WAL's submit: a completion run inline leaves its result here.
    inline: bool,
    callback: Option<IOFlushed<TypeConfig>>,
    result: Option<io::Result<()>>,
}

// ---------------------------------------------------------------------------------------------------------
// State machine proxy

/// What the state machine asks of the executor, in order.
pub enum ToExecutor {
    /// Apply these committed entries.
    Committed(Committed),
    /// Take a point-in-time copy of the state (everything applied so far, nothing more) and return it.
    Snapshot(oneshot::Sender<StateCopy>),
}

/// A point-in-time copy of the state for a snapshot.
pub struct StateCopy {
    /// Serializes the copy; it runs on another thread, so apply is not held up while it does.
    pub source: SnapshotSource,
    /// The index of the last entry it holds: it can be past the last one openraft applied (the executor
    /// applies `Settled` entries first).
    pub through: Option<u64>,
    /// How many snapshots the executor had asked for when it was taken (`Replicator::ask_snapshot`).
    pub asked: u64,
}

/// Serializes a point-in-time copy of the replicated state into a writer (the snapshot file, in pieces).
/// It can be called again: a write that failed (a full device) is tried again from the same copy.
pub type SnapshotSource = Box<dyn Fn(&mut dyn io::Write) -> io::Result<()> + Send + Sync>;

/// What the state machine hands the executor: committed payloads in log order, and an ack to send once they
/// are applied.
pub struct Committed {
    pub entries: Vec<(u64, Payload)>,
    /// Log index of the last entry (of any kind) this delivery covers.
    pub last_index: u64,
    pub applied: oneshot::Sender<()>,
}

#[derive(Default)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembershipOf<TypeConfig>,
}

/// openraft's state machine: forwards committed entries to the executor and waits until it applied them;
/// asks it for point-in-time copies to build snapshots, which it writes to `snapshots`.
pub struct StateMachineProxy {
    tx: mpsc::UnboundedSender<ToExecutor>,
    applied: Arc<Mutex<Applied>>,
    /// The log store's `applied_end`: applied entries may leave its memory.
    applied_end: Arc<AtomicU64>,
    /// How far the executor applied already (`ProposalGate::executor_applied`).
    gate: Arc<ProposalGate>,
    snapshots: Arc<SnapshotDir>,
    /// Filled by `get_snapshot_builder`: the copy the next `build_snapshot` serializes, with its position
    /// in openraft's terms.
    pending: Option<(StateCopy, Option<LogId>, StoredMembershipOf<TypeConfig>)>,
}

impl Clone for StateMachineProxy {
    /// A clone shares everything but a pending snapshot copy (that one belongs to its builder).
    fn clone(&self) -> Self {
        StateMachineProxy {
            tx: self.tx.clone(),
            applied: self.applied.clone(),
            applied_end: self.applied_end.clone(),
            gate: self.gate.clone(),
            snapshots: self.snapshots.clone(),
            pending: None,
        }
    }
}

/// Where snapshots live and how many are kept (`autopurge.snapRetainCount`).
struct SnapshotDir {
    dir: PathBuf,
    retain: usize,
    /// Snapshot writes that failed (and were tried again), for mntr.
    failures: AtomicU64,
    /// Snapshots the executor asked for (`Replicator::ask_snapshot`).
    asked: AtomicU64,
    /// Of those, how many a written snapshot covers (its copy was taken after them).
    covered: AtomicU64,
    /// An ask is waiting for openraft to apply its entry: asks meanwhile are not made (see `ask_snapshot`).
    waiting: AtomicBool,
}

/// Raft's part of a snapshot file (`meta` in the storage crate's terms); the state is `data`. Version 2:
/// the index of the last entry the state holds (u64, little-endian), then openraft's metadata. That index
/// can be past the metadata's `last_log_id` (the executor applies an entry when it is durable, openraft
/// later: `Settled`); openraft knows the snapshot as of its own index and replays the entries after it,
/// and the executor skips those the state already holds. Version 1 (before session 33): the metadata
/// alone, the state as of its `last_log_id`.
fn encode_meta(meta: &SnapshotMetaOf<TypeConfig>, through: Option<u64>) -> io::Result<Vec<u8>> {
    let through = through.or(meta.last_log_id.map(|l| l.index())).unwrap_or(0);
    let mut out = vec![SNAPSHOT_META_V2];
    out.extend(through.to_le_bytes());
    out.extend(postcard::to_allocvec(meta).map_err(io_err)?);
    Ok(out)
}

/// The metadata and the index of the last entry the state holds.
fn decode_meta(bytes: &[u8]) -> Result<(SnapshotMetaOf<TypeConfig>, u64), String> {
    let meta_index = |meta: &SnapshotMetaOf<TypeConfig>| meta.last_log_id.map_or(0, |l| l.index());
    match bytes.split_first() {
        Some((&SNAPSHOT_META_V1, rest)) => {
            let meta = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            let through = meta_index(&meta);
            Ok((meta, through))
        }
        Some((&SNAPSHOT_META_V2, rest)) => {
            let (through, rest) = rest
                .split_first_chunk::<8>()
                .ok_or("snapshot metadata too short")?;
            let through = u64::from_le_bytes(*through);
            let meta = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            if through < meta_index(&meta) {
                return Err(format!(
                    "snapshot state through entry {through}, before its own index {}",
                    meta_index(&meta)
                ));
            }
            Ok((meta, through))
        }
        Some((v, _)) => Err(format!("unknown snapshot metadata version {v}")),
        None => Err("empty snapshot metadata".into()),
    }
}

const SNAPSHOT_META_V1: u8 = 1;
const SNAPSHOT_META_V2: u8 = 2;

impl StateMachineProxy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineProxy {
    type SnapshotData = Cursor<Vec<u8>>;

    /// Serializes the copy taken by `get_snapshot_builder` and writes it: temporary file, fsync, rename,
    /// directory fsync; then removes the snapshots beyond `autopurge.snapRetainCount`.
    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<TypeConfig, Self::SnapshotData>, io::Error> {
        let Some((copy, last_log_id, last_membership)) = self.pending.take() else {
            return Err(io_err("build_snapshot without get_snapshot_builder"));
        };
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id,
            last_membership,
        };
        let meta_bytes = encode_meta(&meta, copy.through)?;
        let (source, asked) = (copy.source, copy.asked);
        let index = last_log_id.map_or(0, |l| l.index());
        let dir = self.snapshots.clone();
        let started = std::time::Instant::now();
        let (bytes, failures) = in_background("oxkeeper-snapshot", move || {
            let written = retry_until_written(
                || {
                    write_snapshot_with(&RealDisk, &dir.dir, index, &meta_bytes, |out| source(out))
                        .map(|(_, bytes)| bytes)
                },
                |error, attempt| {
                    dir.failures.fetch_add(1, Ordering::Relaxed);
                    if attempt == 1 || attempt % SNAPSHOT_FAILURES_PER_LOG == 0 {
                        tracing::error!(
                            index, %error, attempt,
                            "snapshot not written: trying again (the log keeps every entry meanwhile)"
                        );
                    }
                    // What the failed attempt left (its temporary file) goes, so a full device gets
                    // that room back; nothing else is being written into the directory now.
                    if let Err(error) = retain_snapshots(&RealDisk, &dir.dir, dir.retain) {
                        tracing::warn!(%error, "snapshot directory not cleaned after a failed write");
                    }
                },
                std::thread::sleep,
            );
            if let Err(error) = retain_snapshots(&RealDisk, &dir.dir, dir.retain) {
                // The new snapshot is in place; older ones go next time.
                tracing::warn!(%error, "older snapshots not removed");
            }
            dir.covered.fetch_max(asked, Ordering::AcqRel);
            Ok(written)
        })
        .await?;
        tracing::info!(
            index,
            bytes,
            failures,
            took_ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        // The state went straight into the file, never whole into memory (a million nodes make
        // ~100 MB); openraft keeps only the metadata of a snapshot it had built, and reads the data
        // back through `get_current_snapshot` (from the file) when it needs it.
        Ok(SnapshotOf::<TypeConfig, Self::SnapshotData> {
            meta,
            snapshot: Cursor::new(Vec::new()),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineProxy {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembershipOf<TypeConfig>), io::Error> {
        let a = self.lock();
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        let mut last = None;
        let mut membership = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(p) => batch.push((log_id.index(), p)),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembershipOf::<TypeConfig>::new(Some(log_id), m))
                }
            }
            last = Some(log_id);
            if let Some(r) = responder {
                responders.push(r);
            }
        }
        let last_index = last.as_ref().map(|l| l.index());
        // Entries the executor applied when the log made them durable (`Settled`) are not handed over
        // again: it would only skip them.
        let already =
            last_index.is_some_and(|i| i < self.gate.executor_applied_end.load(Ordering::Acquire));
        if let Some(last_index) = last_index {
            if !already {
                oxkeeper_storage::hoptrace::hop("sm_apply");
                let (ack, done) = oneshot::channel();
                self.tx
                    .send(ToExecutor::Committed(Committed {
                        entries: batch,
                        last_index,
                        applied: ack,
                    }))
                    .map_err(|_| io_err("executor is gone"))?;
                done.await
                    .map_err(|_| io_err("executor stopped before applying"))?;
            }
            self.applied_end.fetch_max(last_index + 1, Ordering::AcqRel);
            self.gate
                .openraft_applied_end
                .fetch_max(last_index + 1, Ordering::AcqRel);
        }
        {
            let mut a = self.lock();
            if last.is_some() {
                a.last = last;
            }
            if let Some(m) = membership {
                a.membership = m;
            }
        }
        for r in responders {
            r.send(());
        }
        Ok(())
    }

    /// Called between applies: the executor's state holds what was applied up to `applied.last` and maybe
    /// more (`Settled`: it says how far), and copying it is O(1) (structurally shared maps), so apply is held up only for that hand-off.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let (last, membership) = {
            let a = self.lock();
            (a.last, a.membership.clone())
        };
        let (tx, rx) = oneshot::channel();
        let mut builder = self.clone();
        if self.tx.send(ToExecutor::Snapshot(tx)).is_ok() {
            if let Ok(copy) = rx.await {
                builder.pending = Some((copy, last, membership));
            }
        }
        builder
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMetaOf<TypeConfig>,
        _snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a standalone member never receives a snapshot",
        ))
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        let dir = self.snapshots.dir.clone();
        let newest = tokio::task::spawn_blocking(move || newest_valid_snapshot(&dir))
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        Ok(newest.map(
            |(meta, _, file)| SnapshotOf::<TypeConfig, Self::SnapshotData> {
                meta,
                snapshot: Cursor::new(file.data),
            },
        ))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Network: a member of a one-member cluster never talks to anyone.

pub struct NoNetwork;

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoPeer;
    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> Self::Network {
        NoPeer
    }
}

pub struct NoPeer;

fn unreachable_peer() -> Unreachable<TypeConfig> {
    Unreachable::new(&io_err("standalone member has no peers"))
}

impl RaftNetworkV2<TypeConfig> for NoPeer {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable_peer()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable_peer()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: SnapshotOf<TypeConfig, Self::SnapshotData>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(unreachable_peer()))
    }
}

// ---------------------------------------------------------------------------------------------------------
// The handle the rest of the server uses.

/// A running replicated log (one member for now).
#[derive(Clone)]
pub struct Replicator {
    raft: Raft,
    wal: Arc<WalWriter>,
    gate: Arc<ProposalGate>,
    snapshots: Arc<SnapshotDir>,
    pub member_id: u64,
}

/// Where the log and the snapshots live, and the snapshot policy.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The log (`dataLogDir`).
    pub log_dir: PathBuf,
    /// The snapshots (`dataDir`/snapshots).
    pub snapshot_dir: PathBuf,
    /// Take a snapshot every this many log entries at the latest; `None`: never. (The executor asks for one
    /// every `snapCount` transactions, which comes first: an entry holds at least one.)
    pub snap_count: Option<u64>,
    /// Snapshots kept (`autopurge.snapRetainCount`).
    pub snap_retain: usize,
    /// `forceSync`: fdatasync every batch before acknowledging it (see `WalOptions::sync_each_batch`).
    pub force_sync: bool,
    /// With `force_sync` off: how long written entries may stay unsynced.
    pub lazy_sync_after: Duration,
    /// `logDirectWrites`: segments written around the page cache (`WalOptions::direct_writes`).
    pub direct_writes: bool,
    /// `logPrepareSegments`: the next segment made ready ahead (`WalOptions::prepare_segments`).
    pub prepare_segments: bool,
}

/// The newest snapshot in `dir` that reads back whole, with its metadata and the index of the last entry
/// its state holds. A damaged newer one is skipped with a warning (the log store then refuses to start if
/// the log does not reach back to the older one).
fn newest_valid_snapshot(
    dir: &Path,
) -> Result<Option<(SnapshotMetaOf<TypeConfig>, u64, SnapshotFile)>, ReplicationError> {
    let storage = |e: &dyn fmt::Display| ReplicationError::Storage(e.to_string());
    for (index, path) in list_snapshots(&RealDisk, dir).map_err(|e| storage(&e))? {
        let file = match read_snapshot(&RealDisk, index, &path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("skipping a damaged snapshot: {e}");
                continue;
            }
        };
        match decode_meta(&file.meta) {
            Ok((meta, through)) => return Ok(Some((meta, through, file))),
            Err(e) => tracing::warn!(path = %path.display(), "skipping a snapshot: {e}"),
        }
    }
    Ok(None)
}

/// Writes the snapshot a member starts from when its state did not come from its own log (an import): the
/// state as of log index 0 of a one-member cluster of `member_id`. The log must be empty.
pub fn write_seed_snapshot(
    snapshot_dir: &Path,
    member_id: u64,
    state: &[u8],
) -> Result<PathBuf, ReplicationError> {
    use openraft::vote::RaftLeaderIdExt;
    type LeaderId = <TypeConfig as openraft::RaftTypeConfig>::LeaderId;
    let log_id = LogId::new(LeaderId::new_committed(0, member_id), 0);
    let voters = std::collections::BTreeSet::from([member_id]);
    let membership = openraft::Membership::new_with_defaults(vec![voters], [member_id]);
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(log_id),
        last_membership: StoredMembershipOf::<TypeConfig>::new(Some(log_id), membership),
    };
    let meta = encode_meta(&meta, Some(0)).map_err(|e| ReplicationError::Storage(e.to_string()))?;
    write_snapshot(&RealDisk, snapshot_dir, 0, &meta, state)
        .map_err(|e| ReplicationError::Storage(e.to_string()))
}

pub struct Started {
    pub replicator: Replicator,
    /// Committed entries and snapshot requests, in order, for the executor.
    pub committed: mpsc::UnboundedReceiver<ToExecutor>,
    /// The newest valid snapshot at start: the index of the last entry its state holds, and the state; the
    /// executor starts from it, and the log replays what follows (from the snapshot's own index in
    /// openraft's terms, which can be earlier: the executor skips what the state holds).
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Index of the last entry in the log at start: the executor has recovered once it applied this far.
    pub recovered_index: Option<u64>,
}

impl Replicator {
    /// Opens the log under `dir` and starts a one-member Raft on it, waiting until this member leads.
    pub async fn start_standalone(dir: &Path, member_id: u64) -> Result<Started, ReplicationError> {
        let opts = LogOptions {
            log_dir: dir.to_path_buf(),
            snapshot_dir: dir.join("snapshots"),
            snap_count: None,
            snap_retain: 3,
            force_sync: true,
            lazy_sync_after: WalOptions::default().lazy_sync_after,
            direct_writes: WalOptions::default().direct_writes,
            prepare_segments: WalOptions::default().prepare_segments,
        };
        Self::start_standalone_on(RealDisk, &opts, member_id).await
    }

    /// `start_standalone`, with the log's WAL on `disk` and the given options.
    pub async fn start_standalone_on<D: Disk>(
        disk: D,
        opts: &LogOptions,
        member_id: u64,
    ) -> Result<Started, ReplicationError> {
        let dir = &opts.log_dir;
        for d in [dir, &opts.snapshot_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| ReplicationError::Storage(format!("{}: {e}", d.display())))?;
        }
        let snapshot = newest_valid_snapshot(&opts.snapshot_dir)?;
        let log = LogStore::open_after(
            disk,
            dir,
            snapshot.as_ref().and_then(|(m, _, _)| m.last_log_id),
            WalOptions {
                sync_each_batch: opts.force_sync,
                lazy_sync_after: opts.lazy_sync_after,
                direct_writes: opts.direct_writes,
                prepare_segments: opts.prepare_segments,
                ..WalOptions::default()
            },
        )?;
        let recovered_index = log.last_index();
        let wal = log.wal.clone();
        let gate = log.gate.clone();
        // The only voter: an entry durable here is committed.
        gate.settle_at_durability();
        let (tx, committed) = mpsc::unbounded_channel();
        let applied = match &snapshot {
            Some((meta, _, _)) => Applied {
                last: meta.last_log_id,
                membership: meta.last_membership.clone(),
            },
            None => Applied::default(),
        };
        let sm = StateMachineProxy {
            tx,
            applied: Arc::new(Mutex::new(applied)),
            applied_end: log.applied_end.clone(),
            gate: log.gate.clone(),
            snapshots: Arc::new(SnapshotDir {
                dir: opts.snapshot_dir.clone(),
                retain: opts.snap_retain,
                failures: AtomicU64::new(0),
                asked: AtomicU64::new(0),
                covered: AtomicU64::new(0),
                waiting: AtomicBool::new(false),
            }),
            pending: None,
        };
        let snapshots = sm.snapshots.clone();
        let config = openraft::Config {
            cluster_name: "oxkeeper".to_string(),
            heartbeat_interval: 100,
            election_timeout_min: 200,
            election_timeout_max: 400,
            snapshot_policy: match opts.snap_count {
                Some(n) => openraft::SnapshotPolicy::LogsSinceLast(n.max(1)),
                None => openraft::SnapshotPolicy::Never,
            },
            // Entries a snapshot covers are not needed by a member of one: purge them at once.
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| ReplicationError::Raft(e.to_string()))?,
        );
        let raft = Raft::new(member_id, config, NoNetwork, log, sm)
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        // Asked of openraft rather than guessed from our files: a crash between writing the vote and the
        // first log entry must not leave a member that never initializes.
        let fresh = !raft
            .is_initialized()
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        if fresh {
            let mut members = BTreeMap::new();
            members.insert(member_id, BasicNode::default());
            raft.initialize(members)
                .await
                .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        }
        raft.wait(Some(Duration::from_secs(30)))
            .state(ServerState::Leader, "standalone member becomes leader")
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        Ok(Started {
            replicator: Replicator {
                raft,
                wal,
                gate,
                snapshots,
                member_id,
            },
            committed,
            snapshot: snapshot.map(|(_, through, file)| (through, file.data)),
            recovered_index,
        })
    }

    /// Proposes one payload without waiting; its outcome arrives through the committed stream.
    pub async fn propose(&self, payload: Payload) -> Result<(), ReplicationError> {
        self.raft
            .client_write_ff(payload, None)
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        self.gate.proposed();
        Ok(())
    }

    /// The count of proposed entries not yet durable, and its signal.
    pub fn gate(&self) -> &Arc<ProposalGate> {
        &self.gate
    }

    /// The openraft handle, for benchmarks and tests of this module.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Snapshot writes that failed so far (each is tried again until it is written).
    pub fn snapshot_failures(&self) -> u64 {
        self.snapshots.failures.load(Ordering::Relaxed)
    }

    /// Asks openraft for a snapshot once it applied everything up to `applied` (the executor's last
    /// applied entry: it runs ahead of openraft's state machine task, see `Settled`), so that the
    /// snapshot's own index covers it and the log is purged up to it.
    ///
    /// While an earlier ask still waits, this one is not made (the next comes `snapCount` transactions
    /// later): one waiting task at a time, where a small `snapCount` under load made one per log entry, each
    /// woken by every change of openraft's figures.
    pub fn ask_snapshot(&self, applied: Option<u64>) {
        if self.snapshots.waiting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.snapshots.asked.fetch_add(1, Ordering::AcqRel);
        let raft = self.raft.clone();
        let snapshots = Arc::clone(&self.snapshots);
        tokio::spawn(async move {
            if applied.is_some() {
                let wait = raft.wait(Some(Duration::from_secs(10)));
                if let Err(e) = wait.applied_index_at_least(applied, "snapshot").await {
                    tracing::warn!("asking for a snapshot before entry {applied:?} applied: {e}");
                }
            }
            snapshots.waiting.store(false, Ordering::Release);
            if let Err(e) = raft.trigger().snapshot().await {
                tracing::warn!("snapshot not started: {e}");
            }
        });
    }

    /// How many snapshots were asked for so far.
    pub fn snapshots_asked(&self) -> u64 {
        self.snapshots.asked.load(Ordering::Acquire)
    }

    /// Whether a snapshot was asked for that no written snapshot covers yet: being taken or written, or
    /// not begun because another was being taken when it was asked for (the next one covers it).
    pub fn snapshot_pending(&self) -> bool {
        let covered = self.snapshots.covered.load(Ordering::Acquire);
        self.snapshots.asked.load(Ordering::Acquire) > covered
    }

    /// Group-commit counters of the log.
    pub fn wal_stats(&self) -> oxkeeper_storage::WalWriterStats {
        self.wal.stats()
    }

    /// Whether the log is writing (out of space: writes are held and retried; failed: final).
    pub fn wal_health(&self) -> oxkeeper_storage::WalHealth {
        self.wal.health()
    }

    /// Why this member can no longer commit anything, if it cannot: its log has failed (an fdatasync or a
    /// write the disk refused: nothing more can be made durable), or openraft's core has stopped (a storage
    /// error outside the log, such as the vote file, or a panic; openraft never restarts it).
    pub fn stopped(&self) -> Option<String> {
        if let oxkeeper_storage::WalHealth::Failed(e) = self.wal_health() {
            return Some(format!("the write-ahead log has stopped: {e}"));
        }
        use openraft::async_runtime::WatchReceiver;
        match &self.raft.metrics().borrow_watched().running_state {
            Ok(()) => None,
            Err(fatal) => Some(format!("the replication core has stopped: {fatal}")),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// This member's leadership, if it leads and has applied everything committed before its term (its
    /// last applied entry was proposed in its own term: openraft commits a blank entry when a term starts).
    /// Only then may it act on the state it holds, e.g. expire sessions.
    pub fn leadership(&self) -> Option<Leadership> {
        let leader = self.raft.as_leader().ok()?;
        let id = leader.to_committed_leader_id();
        use openraft::async_runtime::WatchReceiver;
        let metrics = self.raft.metrics();
        let applied = metrics.borrow_watched().last_applied?;
        (applied.leader_id == id).then_some(Leadership(id))
    }

    /// Proposes `payload` only if this member still holds `leadership` when openraft appends it: a deposed
    /// leader's proposals (its session expiries) can never commit.
    pub async fn propose_as(
        &self,
        leadership: &Leadership,
        payload: Payload,
    ) -> Result<(), ReplicationError> {
        self.raft
            .write(payload)
            .with_leader(leadership.0)
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        self.gate.proposed();
        Ok(())
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderId;

    fn log_id(index: u64) -> LogId {
        LogId::new(openraft::impls::leader_id_adv::LeaderId::new(1, 1), index)
    }

    fn entry(index: u64, payload_bytes: usize) -> Entry {
        let mut payload = format!("payload {index} ").into_bytes();
        payload.resize(payload_bytes.max(payload.len()), b'.');
        Entry::new_normal(log_id(index), Payload(payload.into()))
    }

    /// A payload is encoded as the `Vec<u8>` it was before it was serialized as bytes (logs written by
    /// either build read the same), inside a log entry too, and reads back whole.
    #[test]
    fn a_payload_encodes_as_a_vec_of_bytes_did() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let payload = Payload(bytes.clone().into());
            let encoded = postcard::to_allocvec(&payload).unwrap();
            assert_eq!(
                encoded,
                postcard::to_allocvec(&bytes).unwrap(),
                "{len} bytes"
            );
            assert_eq!(postcard::from_bytes::<Payload>(&encoded).unwrap(), payload);
            let entry = Entry::new_normal(log_id(5), payload);
            let in_entry = postcard::to_allocvec(&entry).unwrap();
            assert!(
                in_entry.ends_with(&encoded),
                "the entry ends with the payload's encoding"
            );
            let back: Entry = postcard::from_bytes(&in_entry).unwrap();
            assert_eq!(back, entry);
        }
    }

    /// Appends and waits until the entries are durable.
    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = TypeConfig::oneshot();
        store.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn background_work_runs_on_its_own_thread_at_nice_19() {
        let caller = std::thread::current().id();
        // SAFETY: plain system calls about the calling thread.
        let own_before =
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let (name, nice, thread) = in_background("oxkeeper-test-bg", || {
            // SAFETY: plain system calls about the calling thread.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            let me = std::thread::current();
            Ok((me.name().map(String::from), nice, me.id()))
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("oxkeeper-test-bg"));
        assert_eq!(nice, 19);
        assert_ne!(thread, caller);
        // The caller's own priority is untouched.
        // SAFETY: as above.
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        assert_eq!(own, own_before);
    }

    #[tokio::test]
    async fn background_work_reports_its_error_and_its_panic() {
        let e = in_background::<()>("oxkeeper-test-bg", || Err(io::Error::other("disk on fire")))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
        let e = in_background::<()>("oxkeeper-test-bg", || panic!("boom"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("without a result"), "{e}");
    }

    #[test]
    fn a_failed_snapshot_write_is_tried_again_with_growing_waits() {
        let mut calls = 0;
        let mut failures_seen = Vec::new();
        let mut waits = Vec::new();
        let (written, failures) = retry_until_written(
            || {
                calls += 1;
                if calls <= 9 {
                    Err(io::Error::from_raw_os_error(libc::ENOSPC))
                } else {
                    Ok(calls)
                }
            },
            |e: &io::Error, n| failures_seen.push((e.raw_os_error(), n)),
            |d| waits.push(d),
        );
        assert_eq!((written, failures), (10, 9));
        assert_eq!(
            failures_seen,
            (1..=9).map(|n| (Some(libc::ENOSPC), n)).collect::<Vec<_>>()
        );
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        // A write that succeeds at once neither sleeps nor reports.
        let (written, failures) = retry_until_written(
            || Ok::<_, io::Error>("done"),
            |_, _| panic!("no failure"),
            |_| panic!("no wait"),
        );
        assert_eq!((written, failures), ("done", 0));
    }

    fn tail_len(store: &LogStore) -> usize {
        store.lock().tail.entries.len()
    }

    fn payload(e: &Entry) -> Vec<u8> {
        match &e.payload {
            EntryPayload::Normal(p) => p.0.to_vec(),
            _ => panic!("not a normal entry: {e:?}"),
        }
    }

    /// Entries `from..to` read through openraft's reader equal `want(index)` for every index.
    async fn check_read(store: &mut LogStore, from: u64, to: u64, size: usize) {
        let got = store.try_get_log_entries(from..to).await.unwrap();
        assert_eq!(got.len() as u64, to - from, "{from}..{to}");
        for (k, e) in got.iter().enumerate() {
            let index = from + k as u64;
            assert_eq!(e.log_id(), log_id(index));
            assert_eq!(payload(e), payload(&entry(index, size)), "entry {index}");
        }
    }

    #[tokio::test]
    async fn applied_durable_entries_leave_memory_and_are_read_back_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        const N: u64 = 5000;
        for first in (1..=N).step_by(10) {
            append(
                &mut store,
                (first..first + 10).map(|i| entry(i, 40)).collect(),
            )
            .await;
            // As the state machine does once the executor applied them.
            store.applied_end.store(first + 10, Ordering::Release);
        }
        // The kept window, plus at most the last batch appended before it could count as applied.
        let kept = tail_len(&store);
        assert!(kept <= TAIL_KEEP_ENTRIES + 10, "{kept} entries in memory");
        let first_in_memory = store.lock().tail.first;
        assert!(first_in_memory > 3000, "{first_in_memory}");
        // All of it, only the part on disk, only memory, and across the boundary.
        check_read(&mut store, 1, N + 1, 40).await;
        check_read(&mut store, 10, 20, 40).await;
        check_read(&mut store, N - 5, N + 1, 40).await;
        check_read(&mut store, first_in_memory - 7, first_in_memory + 7, 40).await;
        // Unbounded ends, and a range past the end holds what exists.
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len() as u64, N);
        assert_eq!(
            store
                .try_get_log_entries(N - 1..N + 50)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(log_id(N))
        );

        // After a purge, reads start after it; reopened, the log reads the same.
        store.purge(log_id(100)).await.unwrap();
        let got = store.try_get_log_entries(50..110).await.unwrap();
        assert_eq!(got.first().map(|e| e.index()), Some(101));
        assert_eq!(got.len(), 9);
        drop(store);
        let mut store = LogStore::open_after(
            RealDisk,
            dir.path(),
            Some(log_id(100)),
            WalOptions::default(),
        )
        .unwrap();
        check_read(&mut store, 101, N + 1, 40).await;
    }

    #[tokio::test]
    async fn durable_appends_are_reported_only_once_settling_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        append(&mut store, vec![entry(1, 40)]).await;
        assert!(store.gate.take_settled().is_empty(), "reported while off");

        store.gate.settle_at_durability();
        let blank = Entry::new_blank(log_id(4));
        append(&mut store, vec![entry(2, 40), entry(3, 50), blank]).await;
        append(&mut store, vec![Entry::new_blank(log_id(5))]).await;
        let reports = store.gate.take_settled();
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert_eq!((reports[0].first, reports[0].last), (2, 4));
        let got: Vec<(u64, Vec<u8>)> = reports[0]
            .entries
            .iter()
            .map(|(i, p)| (*i, p.0.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![(2, payload(&entry(2, 40))), (3, payload(&entry(3, 50)))]
        );
        assert_eq!((reports[1].first, reports[1].last), (5, 5));
        assert!(reports[1].entries.is_empty());
        assert!(store.gate.take_settled().is_empty(), "taken twice");

        // Nobody takes them: only the newest are kept.
        for i in 6..6 + SETTLED_KEPT as u64 + 10 {
            append(&mut store, vec![entry(i, 10)]).await;
        }
        let reports = store.gate.take_settled();
        assert_eq!(reports.len(), SETTLED_KEPT);
        assert_eq!(reports[0].first, 16);
    }

    #[test]
    fn snapshot_metadata_says_how_far_its_state_goes() {
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: Some(log_id(10)),
            last_membership: StoredMembershipOf::<TypeConfig>::default(),
        };
        let v2 = encode_meta(&meta, Some(14)).unwrap();
        let (back, through) = decode_meta(&v2).unwrap();
        assert_eq!((back.last_log_id, through), (meta.last_log_id, 14));
        // Without the executor's index: the state goes as far as the snapshot's own.
        assert_eq!(
            decode_meta(&encode_meta(&meta, None).unwrap()).unwrap().1,
            10
        );
        // Version 1 (no index of its own): as far as the snapshot's index.
        let mut v1 = vec![SNAPSHOT_META_V1];
        v1.extend(postcard::to_allocvec(&meta).unwrap());
        assert_eq!(decode_meta(&v1).unwrap().1, 10);
        // A state that ends before the snapshot's own index cannot be.
        let err = decode_meta(&encode_meta(&meta, Some(9)).unwrap()).unwrap_err();
        assert!(err.contains("before its own index"), "{err}");
        assert!(decode_meta(&v2[..5]).is_err());
    }

    #[tokio::test]
    async fn entries_not_yet_applied_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        for first in (1..=3000).step_by(10) {
            append(
                &mut store,
                (first..first + 10).map(|i| entry(i, 40)).collect(),
            )
            .await;
        }
        assert_eq!(tail_len(&store), 3000);
        // Applied up to 499: only those may leave, although far more than the window is in memory.
        store.applied_end.store(500, Ordering::Release);
        append(&mut store, vec![entry(3001, 40)]).await;
        assert_eq!(store.lock().tail.first, 500);
        // Applied up to 2999: memory shrinks to the window.
        store.applied_end.store(3000, Ordering::Release);
        append(&mut store, vec![entry(3002, 40)]).await;
        assert_eq!(store.lock().tail.first, 3003 - TAIL_KEEP_ENTRIES as u64);
        check_read(&mut store, 1, 3003, 40).await;
    }

    #[tokio::test]
    async fn large_entries_are_kept_up_to_a_byte_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        const SIZE: usize = 256 << 10;
        for i in 1..=300u64 {
            append(&mut store, vec![entry(i, SIZE)]).await;
            store.applied_end.store(i + 1, Ordering::Release);
        }
        let (len, bytes) = {
            let inner = store.lock();
            (inner.tail.entries.len(), inner.tail.bytes)
        };
        assert!(
            bytes <= TAIL_KEEP_BYTES + SIZE + 64,
            "{bytes} bytes in memory"
        );
        let bound = TAIL_KEEP_BYTES / SIZE;
        assert!(
            (bound - 1..=bound + 2).contains(&len),
            "{len} entries in memory"
        );
        check_read(&mut store, 1, 301, SIZE).await;
    }
}
