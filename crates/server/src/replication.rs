//! Replication through openraft: the only module that names openraft.
//!
//! Standalone is an ensemble of one: one code path. The log store keeps every entry in memory (so apply never
//! reads the disk again) and makes it durable through the storage crate's group-commit WAL: openraft is told an
//! append is flushed only after its batch's fdatasync. The state machine is a thin proxy: committed entries go
//! to the executor task, which owns the real state. Entries carry opaque payloads (postcard-encoded command
//! batches) so this module knows nothing of ZooKeeper.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
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
use oxkeeper_storage::{read_file, write_atomic, Disk, RealDisk, Wal, WalOptions, WalWriter};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// An opaque replicated payload: one batch of commands, encoded by the executor.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload(pub Vec<u8>);

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

// ---------------------------------------------------------------------------------------------------------
// Log store

#[derive(Default)]
struct LogInner {
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
}

/// openraft's log store over the WAL. Entries stay in memory until purged.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    wal: Arc<WalWriter>,
    vote_path: PathBuf,
}

impl LogStore {
    /// Opens the WAL under `dir`, replaying what it holds into memory.
    pub fn open(dir: &Path) -> Result<LogStore, ReplicationError> {
        Self::open_on(RealDisk, dir)
    }

    /// `open`, with the WAL on `disk` (tests wrap `RealDisk` to stall or fail its syncs). The vote file
    /// stays on the real file system.
    pub fn open_on<D: Disk>(disk: D, dir: &Path) -> Result<LogStore, ReplicationError> {
        let (wal, recovered) = Wal::open(disk, &dir.join("log"), WalOptions::default())
            .map_err(|e| ReplicationError::Storage(e.to_string()))?;
        if let Some((file, offset)) = &recovered.truncated_tail {
            tracing::warn!(file = %file.display(), offset, "cut off a torn, unacknowledged tail of the log");
        }
        let mut log = BTreeMap::new();
        for (index, bytes) in recovered.entries {
            let entry: Entry = postcard::from_bytes(&bytes).map_err(|e| {
                ReplicationError::Storage(format!("log entry {index} does not decode: {e}"))
            })?;
            log.insert(index, entry);
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
        let inner = LogInner {
            last_purged: None,
            log,
            vote,
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            wal: Arc::new(WalWriter::spawn(wal)),
            vote_path,
        })
    }

    pub fn last_index(&self) -> Option<u64> {
        self.lock().log.keys().next_back().copied()
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
        Ok(self
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
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
            .log
            .values()
            .next_back()
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

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = postcard::to_allocvec(vote).map_err(io_err)?;
        let path = self.vote_path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&RealDisk, &path, &bytes))
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
        {
            let mut inner = self.lock();
            for entry in entries {
                let index = entry.index();
                encoded.push((index, postcard::to_allocvec(&entry).map_err(io_err)?));
                inner.log.insert(index, entry);
            }
        }
        self.wal.submit(
            encoded,
            Box::new(move |r| callback.io_completed(r.map_err(io_err))),
        );
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep = last_log_id.map(|l| l.index());
        {
            let mut inner = self.lock();
            let from = keep.map_or(0, |k| k + 1);
            let doomed: Vec<u64> = inner.log.range(from..).map(|(k, _)| *k).collect();
            for k in doomed {
                inner.log.remove(&k);
            }
        }
        match keep {
            Some(k) => self.wal_call(|w, done| w.truncate_after(k, done)).await,
            None => self.wal_call(|w, done| w.clear(done)).await,
        }
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index();
        {
            let mut inner = self.lock();
            let doomed: Vec<u64> = inner.log.range(..=upto).map(|(k, _)| *k).collect();
            for k in doomed {
                inner.log.remove(&k);
            }
            inner.last_purged = Some(log_id);
        }
        self.wal_call(|w, done| w.purge_upto(upto, done)).await
    }
}

// ---------------------------------------------------------------------------------------------------------
// State machine proxy

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

/// openraft's state machine: forwards committed entries to the executor and waits until it applied them.
#[derive(Clone)]
pub struct StateMachineProxy {
    tx: mpsc::UnboundedSender<Committed>,
    applied: Arc<Mutex<Applied>>,
}

impl StateMachineProxy {
    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineProxy {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<TypeConfig, Self::SnapshotData>, io::Error> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "snapshots are not built yet (snapshot policy is Never)",
        ))
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
        if let Some(last_index) = last.as_ref().map(|l| l.index()) {
            let (ack, done) = oneshot::channel();
            self.tx
                .send(Committed {
                    entries: batch,
                    last_index,
                    applied: ack,
                })
                .map_err(|_| io_err("executor is gone"))?;
            done.await
                .map_err(|_| io_err("executor stopped before applying"))?;
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

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
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
        Ok(None)
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
    pub member_id: u64,
}

pub struct Started {
    pub replicator: Replicator,
    /// Committed entries, in order, for the executor.
    pub committed: mpsc::UnboundedReceiver<Committed>,
    /// Index of the last entry in the log at start: the executor has recovered once it applied this far.
    pub recovered_index: Option<u64>,
}

impl Replicator {
    /// Opens the log under `dir` and starts a one-member Raft on it, waiting until this member leads.
    pub async fn start_standalone(dir: &Path, member_id: u64) -> Result<Started, ReplicationError> {
        Self::start_standalone_on(RealDisk, dir, member_id).await
    }

    /// `start_standalone`, with the log's WAL on `disk`.
    pub async fn start_standalone_on<D: Disk>(
        disk: D,
        dir: &Path,
        member_id: u64,
    ) -> Result<Started, ReplicationError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ReplicationError::Storage(format!("{}: {e}", dir.display())))?;
        let log = LogStore::open_on(disk, dir)?;
        let recovered_index = log.last_index();
        let wal = log.wal.clone();
        let (tx, committed) = mpsc::unbounded_channel();
        let sm = StateMachineProxy {
            tx,
            applied: Arc::default(),
        };
        let config = openraft::Config {
            cluster_name: "oxkeeper".to_string(),
            heartbeat_interval: 100,
            election_timeout_min: 200,
            election_timeout_max: 400,
            snapshot_policy: openraft::SnapshotPolicy::Never,
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
                member_id,
            },
            committed,
            recovered_index,
        })
    }

    /// Proposes one payload without waiting; its outcome arrives through the committed stream.
    pub async fn propose(&self, payload: Payload) -> Result<(), ReplicationError> {
        self.raft
            .client_write_ff(payload, None)
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))
    }

    /// The openraft handle, for benchmarks and tests of this module.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Group-commit counters of the log.
    pub fn wal_stats(&self) -> oxkeeper_storage::WalWriterStats {
        self.wal.stats()
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
            .map_err(|e| ReplicationError::Raft(e.to_string()))
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
