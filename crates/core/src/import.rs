//! Importing a ZooKeeper database into oxkeeper's replicated state.
//!
//! [`ZkReplay`] is ZooKeeper's own restore (`FileTxnSnapLog.restore`): a snapshot's nodes and sessions,
//! then each logged transaction applied as `DataTree.processTxn` applies it (fuzzy-snapshot quirks
//! included), then the clean-up of `ZooKeeperServer.loadData`. It yields a [`ZooKeeperImage`], from which
//! [`StateMachine::from_zookeeper`] builds a bootstrapped state. Pure: reading ZooKeeper's files is
//! `oxkeeper-zkimport`'s job, which hands the decoded records in; nothing here does I/O.

use crate::acl::{open_acl_unsafe, read_acl_unsafe};
use crate::path::{self, parent_of};
use crate::quota::{self, StatsTrack};
use crate::session::{self, SessionInfo, SessionTable};
use crate::state::{ApplySettings, StateMachine};
use crate::tree::{DataTree, NodeKind, NodeStat};
use oxkeeper_proto::{
    Acl, ErrorCode, OpCode, CONTAINER_EPHEMERAL_OWNER, TTL_EPHEMERAL_OWNER_MASK, TTL_MAX_MS,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// One znode as ZooKeeper stores it: the stat is its `StatPersisted` (internal cversion, the raw
/// ephemeralOwner that also marks containers and TTL nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedNode {
    /// `/` for the root (ZooKeeper's files name it `""`).
    pub path: String,
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    pub stat: NodeStat,
}

/// A live ZooKeeper session: its id and the timeout it was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportedSession {
    pub id: i64,
    pub timeout_ms: i32,
}

/// Everything oxkeeper takes over from a ZooKeeper database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZooKeeperImage {
    /// Every node, in any order.
    pub nodes: Vec<ImportedNode>,
    /// The live sessions (ZooKeeper's `sessionsWithTimeouts`).
    pub sessions: Vec<ImportedSession>,
    /// The zxid of the last transaction ZooKeeper applied; oxkeeper's first write takes the next one.
    pub last_zxid: i64,
    /// Session ids ZooKeeper handed out, live or not (the highest of each member byte is enough):
    /// oxkeeper never hands them out again.
    pub session_ids_seen: Vec<i64>,
    /// The newest wall-clock time in the data (ms): new session ids start from it, as after a bootstrap.
    pub time_ms: i64,
}

/// A `TxnHeader` without its type (the type is the [`ZkTxn`] variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZkTxnHeader {
    pub session_id: i64,
    pub cxid: i32,
    pub zxid: i64,
    /// The leader's wall clock (ms): ctime/mtime of what the transaction creates or changes.
    pub time_ms: i64,
}

/// A create transaction (`CreateTxn`, `CreateContainerTxn` or `CreateTTLTxn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkCreate {
    /// Create, Create2, CreateContainer or CreateTtl.
    pub op: OpCode,
    pub path: String,
    pub data: Option<Vec<u8>>,
    /// `None` for a null vector, which ZooKeeper stores as world:anyone ALL.
    pub acl: Option<Vec<Acl>>,
    /// `CreateTxn.ephemeral` (create and create2 only).
    pub ephemeral: bool,
    /// The parent's internal cversion after this create; -1 (very old logs) means "one more".
    pub parent_cversion: i32,
    /// `CreateTTLTxn.ttl` (createTTL only).
    pub ttl: i64,
}

/// A logged ZooKeeper transaction (`org.apache.zookeeper.txn`), decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZkTxn {
    CreateSession {
        timeout_ms: i32,
    },
    /// `paths` is `CloseSessionTxn.paths2Delete` (3.6+); `None` when the transaction has no body.
    CloseSession {
        paths: Option<Vec<String>>,
    },
    Create(ZkCreate),
    /// delete and deleteContainer.
    Delete {
        path: String,
    },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Option<Vec<Acl>>,
        version: i32,
    },
    /// A check inside a multi: changes nothing.
    Check {
        path: String,
        version: i32,
    },
    /// A failed request: changes nothing.
    Error {
        err: i32,
    },
    Multi(Vec<ZkTxn>),
    /// A reconfig (a new `/zookeeper/config`): not applied, the ensemble's membership does not carry
    /// over to oxkeeper.
    Reconfig,
}

impl ZkTxn {
    fn name(&self) -> &'static str {
        match self {
            ZkTxn::CreateSession { .. } => "createSession",
            ZkTxn::CloseSession { .. } => "closeSession",
            ZkTxn::Create(_) => "create",
            ZkTxn::Delete { .. } => "delete",
            ZkTxn::SetData { .. } => "setData",
            ZkTxn::SetAcl { .. } => "setACL",
            ZkTxn::Check { .. } => "check",
            ZkTxn::Error { .. } => "error",
            ZkTxn::Multi(_) => "multi",
            ZkTxn::Reconfig => "reconfig",
        }
    }
}

/// Equal ACL lists share one allocation, as ZooKeeper's ACL cache shares one entry.
#[derive(Default)]
struct AclCache(HashMap<Vec<Acl>, Arc<Vec<Acl>>>);

impl AclCache {
    fn intern(&mut self, acl: Vec<Acl>) -> Arc<Vec<Acl>> {
        if let Some(a) = self.0.get(&acl) {
            return a.clone();
        }
        let a = Arc::new(acl.clone());
        self.0.insert(acl, a.clone());
        a
    }

    /// A txn's ACL: a null vector is world:anyone ALL (`ReferenceCountedACLCache.convertAcls(null)`).
    fn intern_txn(&mut self, acl: &Option<Vec<Acl>>) -> Arc<Vec<Acl>> {
        self.intern(acl.clone().unwrap_or_else(open_acl_unsafe))
    }
}

/// Adds `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config` where missing (a 3.4 snapshot has no
/// config node), as ZooKeeper's initial tree and `addConfigNode` make them. Returns what was added.
fn add_missing_system_nodes(tree: &mut DataTree, acls: &mut AclCache) -> Vec<&'static str> {
    let mut added = Vec::new();
    for (p, acl, aversion) in [
        (path::ZOOKEEPER, open_acl_unsafe(), 0),
        (path::QUOTA, open_acl_unsafe(), 0),
        (path::CONFIG, read_acl_unsafe(), -1),
    ] {
        let stat = NodeStat {
            aversion,
            ..NodeStat::default()
        };
        if !tree.contains(p) && tree.add_loaded(p, Some(Arc::from(&[][..])), acls.intern(acl), stat)
        {
            added.push(p);
        }
    }
    added
}

/// `DataTree.setupQuota`, run when ZooKeeper loads a snapshot: every `zookeeper_limits` leaf under
/// `/zookeeper/quota` has the subtree it governs recounted into its `zookeeper_stats` node.
fn setup_quota(tree: &mut DataTree) {
    const LIMITS_SUFFIX: &str = "/zookeeper_limits";
    let prefix = format!("{}/", path::QUOTA);
    let reals: Vec<String> = tree
        .iter()
        .filter(|(p, n)| p.starts_with(&prefix) && p.ends_with(LIMITS_SUFFIX) && !n.has_children())
        .filter_map(|(p, _)| Some(p.get(path::QUOTA.len()..p.find(LIMITS_SUFFIX)?)?.to_owned()))
        .collect();
    for real in reals {
        let (count, bytes) = tree.subtree_counts(if real.is_empty() { path::ROOT } else { &real });
        let mut stats = StatsTrack::default();
        stats.set_bytes(bytes);
        stats.set_count(count);
        tree.set_data_keep_stat(&quota::stat_path(&real), Some(stats.to_bytes()));
    }
}

/// ZooKeeper's restore, step by step: [`ZkReplay::from_snapshot`], [`ZkReplay::apply`] for each logged
/// transaction after the snapshot in log order, then [`ZkReplay::finish`].
///
/// Transactions apply with `DataTree.processTxn`'s rules, which tolerate a fuzzy snapshot (one written
/// while transactions were applied, so it may already hold some of the ones replayed after it): a
/// create of an existing node gives that node the create's ACL and, for a plain create, raises the
/// parent's cversion to the logged one; a parent's cversion and pzxid only ever go up; a delete of a
/// missing node still raises its parent's pzxid; every other failure is ignored.
pub struct ZkReplay {
    tree: DataTree,
    /// Live sessions and their timeouts.
    sessions: BTreeMap<i64, i32>,
    /// Ordinary ephemerals by owner (ZooKeeper's `DataTree.ephemerals`), dead owners included.
    ephemerals: BTreeMap<i64, BTreeSet<String>>,
    last_zxid: i64,
    /// The highest session id seen, by member byte.
    ids_seen: BTreeMap<u8, i64>,
    time_ms: i64,
    acls: AclCache,
    notes: Vec<String>,
    /// Transactions ZooKeeper's replay lets fail, by error code.
    ignored: BTreeMap<i32, u64>,
}

impl ZkReplay {
    /// Loads a snapshot (`DataTree.deserialize`): `nodes` in the snapshot's order (parents first, the
    /// root first), the session table, and the zxid in the snapshot's name. Then recounts the quota
    /// statistics (`setupQuota`) and adds the system nodes an old snapshot lacks.
    pub fn from_snapshot(
        nodes: Vec<ImportedNode>,
        sessions: &[ImportedSession],
        zxid: i64,
    ) -> Result<ZkReplay, String> {
        let mut acls = AclCache::default();
        let mut time_ms = 0i64;
        let loaded = nodes.into_iter().map(|n| {
            time_ms = time_ms.max(n.stat.ctime).max(n.stat.mtime);
            (n.path, n.data.map(Arc::from), acls.intern(n.acl), n.stat)
        });
        let mut tree = DataTree::from_loaded(loaded).map_err(|e| e.to_string())?;
        let mut notes = Vec::new();
        for p in add_missing_system_nodes(&mut tree, &mut acls) {
            notes.push(format!(
                "the snapshot has no {p} (older ZooKeeper): added as ZooKeeper creates it"
            ));
        }
        setup_quota(&mut tree);
        let mut replay = ZkReplay {
            tree,
            sessions: BTreeMap::new(),
            ephemerals: BTreeMap::new(),
            last_zxid: zxid,
            ids_seen: BTreeMap::new(),
            time_ms,
            acls,
            notes,
            ignored: BTreeMap::new(),
        };
        let owned: Vec<(i64, String)> = replay
            .tree
            .iter()
            .filter_map(|(p, n)| match n.kind() {
                NodeKind::Ephemeral(owner) => Some((owner, p.to_string())),
                _ => None,
            })
            .collect();
        for (owner, p) in owned {
            replay.see_session(owner);
            replay.ephemerals.entry(owner).or_default().insert(p);
        }
        for s in sessions {
            replay.see_session(s.id);
            replay.sessions.insert(s.id, s.timeout_ms);
        }
        Ok(replay)
    }

    /// The tree as replayed so far.
    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    /// The highest zxid applied so far (the snapshot's before any transaction).
    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// The live sessions and their timeouts so far.
    pub fn sessions(&self) -> impl Iterator<Item = (i64, i32)> + '_ {
        self.sessions.iter().map(|(id, t)| (*id, *t))
    }

    /// Applies one logged transaction as `FileTxnSnapLog.processTransaction` does. An error means the
    /// transaction is one ZooKeeper itself could not replay (it would stop, or leave the tree in a
    /// state oxkeeper cannot hold, such as a deleted node's children left without a parent).
    pub fn apply(&mut self, hdr: &ZkTxnHeader, txn: &ZkTxn) -> Result<(), String> {
        self.see_session(hdr.session_id);
        self.time_ms = self.time_ms.max(hdr.time_ms);
        match txn {
            ZkTxn::CreateSession { timeout_ms } => {
                self.sessions.insert(hdr.session_id, *timeout_ms);
            }
            ZkTxn::CloseSession { paths } => {
                self.sessions.remove(&hdr.session_id);
                self.kill_session(hdr.session_id, hdr.zxid, paths.as_deref())?;
            }
            ZkTxn::Multi(subs) => self.multi(hdr, subs)?,
            ZkTxn::Reconfig => self.notes.push(format!(
                "reconfig transaction {:#x} not applied: ZooKeeper's ensemble membership does not \
                 carry over (/zookeeper/config keeps its earlier data)",
                hdr.zxid
            )),
            other => self.apply_one(hdr, other)?,
        }
        // processTxn: lastProcessedZxid only goes up.
        self.last_zxid = self.last_zxid.max(hdr.zxid);
        Ok(())
    }

    /// Ends the replay as `ZooKeeperServer.loadData` does: the ephemerals of sessions that are not live
    /// are deleted (with the last zxid). Returns the image and the notes gathered on the way.
    pub fn finish(mut self) -> Result<(ZooKeeperImage, Vec<String>), String> {
        let dead: Vec<(i64, usize)> = self
            .ephemerals
            .iter()
            .filter(|(id, paths)| !self.sessions.contains_key(id) && !paths.is_empty())
            .map(|(id, paths)| (*id, paths.len()))
            .collect();
        for (id, n) in dead {
            self.notes.push(format!(
                "session {id:#x} is not live but owns {n} ephemeral node(s): deleted, as ZooKeeper \
                 deletes them when it loads this data"
            ));
            self.kill_session(id, self.last_zxid, None)?;
        }
        let newest = self
            .tree
            .iter()
            .map(|(_, n)| n.stat().czxid.max(n.stat().mzxid).max(n.stat().pzxid))
            .max()
            .unwrap_or(0);
        if newest > self.last_zxid {
            self.notes.push(format!(
                "nodes carry zxid {newest:#x}, above the last logged one {:#x} (a snapshot written \
                 while ZooKeeper was busy, without the logs after it): zxids continue above {newest:#x}",
                self.last_zxid
            ));
            self.last_zxid = newest;
        }
        for p in add_missing_system_nodes(&mut self.tree, &mut self.acls) {
            self.notes.push(format!("{p} was missing: added"));
        }
        if !self.ignored.is_empty() {
            let total: u64 = self.ignored.values().sum();
            let by_code: Vec<String> = self
                .ignored
                .iter()
                .map(|(code, n)| match ErrorCode::from_i32(*code) {
                    Some(c) => format!("{c:?} x{n}"),
                    None => format!("error {code} x{n}"),
                })
                .collect();
            self.notes.push(format!(
                "{total} logged transaction(s) found the snapshot already changed ({}): normal for a \
                 snapshot written while ZooKeeper was busy; ZooKeeper's restore skips them too",
                by_code.join(", ")
            ));
        }
        let nodes = self
            .tree
            .iter()
            .map(|(p, n)| ImportedNode {
                path: p.to_string(),
                data: n.data_vec(),
                acl: n.acl().to_vec(),
                stat: n.stat(),
            })
            .collect();
        let image = ZooKeeperImage {
            nodes,
            sessions: self
                .sessions
                .iter()
                .map(|(id, t)| ImportedSession {
                    id: *id,
                    timeout_ms: *t,
                })
                .collect(),
            last_zxid: self.last_zxid,
            session_ids_seen: self.ids_seen.values().copied().collect(),
            time_ms: self.time_ms,
        };
        Ok((image, self.notes))
    }

    fn see_session(&mut self, id: i64) {
        if id == 0 {
            return;
        }
        let seen = self.ids_seen.entry((id as u64 >> 56) as u8).or_insert(id);
        if (id as u64) > (*seen as u64) {
            *seen = id;
        }
    }

    fn count_ignored(&mut self, code: Option<ErrorCode>) {
        if let Some(code) = code {
            *self.ignored.entry(code.into()).or_insert(0) += 1;
        }
    }

    fn apply_one(&mut self, hdr: &ZkTxnHeader, txn: &ZkTxn) -> Result<(), String> {
        let failed = match txn {
            ZkTxn::Create(c) => self.create(hdr, c)?,
            ZkTxn::Delete { path } => self.delete(path, hdr.zxid)?,
            ZkTxn::SetData {
                path,
                data,
                version,
            } => self
                .tree
                .set_data(
                    path,
                    data.as_deref().map(Arc::from),
                    *version,
                    hdr.zxid,
                    hdr.time_ms,
                )
                .is_none()
                .then_some(ErrorCode::NoNode),
            ZkTxn::SetAcl { path, acl, version } => {
                let acl = self.acls.intern_txn(acl);
                self.tree
                    .set_acl(path, acl, *version)
                    .is_none()
                    .then_some(ErrorCode::NoNode)
            }
            ZkTxn::Check { .. } | ZkTxn::Error { .. } => None,
            other => return Err(format!("{} cannot be applied here", other.name())),
        };
        self.count_ignored(failed);
        Ok(())
    }

    /// A multi: if any sub-transaction is an error the whole multi failed and changes nothing;
    /// otherwise each sub-transaction applies in turn, a failing one not stopping the others.
    fn multi(&mut self, hdr: &ZkTxnHeader, subs: &[ZkTxn]) -> Result<(), String> {
        if subs.iter().any(|t| matches!(t, ZkTxn::Error { .. })) {
            return Ok(());
        }
        for sub in subs {
            match sub {
                ZkTxn::Create(_)
                | ZkTxn::Delete { .. }
                | ZkTxn::SetData { .. }
                | ZkTxn::Check { .. } => self.apply_one(hdr, sub)?,
                other => return Err(format!("a multi cannot hold a {}", other.name())),
            }
        }
        Ok(())
    }

    /// `DataTree.createNode`, then processTxn's NodeExists fix-up of a plain create.
    fn create(&mut self, hdr: &ZkTxnHeader, c: &ZkCreate) -> Result<Option<ErrorCode>, String> {
        let owner = match c.op {
            OpCode::Create | OpCode::Create2 if c.ephemeral => hdr.session_id,
            OpCode::Create | OpCode::Create2 => 0,
            OpCode::CreateContainer => CONTAINER_EPHEMERAL_OWNER,
            OpCode::CreateTtl if c.ttl > 0 && c.ttl <= TTL_MAX_MS => {
                TTL_EPHEMERAL_OWNER_MASK | c.ttl
            }
            OpCode::CreateTtl => {
                return Err(format!(
                    "createTTL of {:?} with TTL {}, which ZooKeeper cannot replay either",
                    c.path, c.ttl
                ))
            }
            op => return Err(format!("{op:?} is not a create")),
        };
        let parent_path = parent_of(&c.path)
            .ok_or_else(|| format!("create of {:?}, which is not a path", c.path))?
            .to_owned();
        let acl = self.acls.intern_txn(&c.acl);
        let Some(parent) = self.tree.get(&parent_path) else {
            return Ok(Some(ErrorCode::NoNode));
        };
        let (old_cversion, old_pzxid) = (parent.stat().cversion, parent.stat().pzxid);
        if let Some(existing) = self.tree.get(&c.path) {
            let aversion = existing.stat().aversion;
            self.tree.set_acl(&c.path, acl, aversion);
            if c.op == OpCode::Create {
                self.raise_cversion(&parent_path, c.parent_cversion, hdr.zxid);
            }
            return Ok(Some(ErrorCode::NodeExists));
        }
        let cversion = match c.parent_cversion {
            -1 => old_cversion.wrapping_add(1),
            v => v,
        };
        if let Err(code) = self.tree.create(
            &c.path,
            c.data.as_deref().map(Arc::from),
            acl,
            owner,
            hdr.zxid,
            hdr.time_ms,
        ) {
            return Ok(Some(code));
        }
        let (cversion, pzxid) = if cversion > old_cversion {
            (cversion, hdr.zxid)
        } else {
            (old_cversion, old_pzxid)
        };
        self.tree.set_cversion_pzxid(&parent_path, cversion, pzxid);
        if let NodeKind::Ephemeral(id) = NodeKind::from_owner(owner) {
            self.see_session(id);
            self.ephemerals
                .entry(id)
                .or_default()
                .insert(c.path.clone());
        }
        Ok(None)
    }

    /// `DataTree.setCversionPzxid`: -1 means one more; the cversion (and with it the pzxid) only goes up.
    fn raise_cversion(&mut self, path: &str, cversion: i32, zxid: i64) {
        let Some(node) = self.tree.get(path) else {
            return;
        };
        let current = node.stat().cversion;
        let cversion = match cversion {
            -1 => current.wrapping_add(1),
            v => v,
        };
        if cversion > current {
            self.tree.set_cversion_pzxid(path, cversion, zxid);
        }
    }

    /// `DataTree.deleteNode`: the parent's pzxid goes up to `zxid` even when the node is already gone.
    fn delete(&mut self, path: &str, zxid: i64) -> Result<Option<ErrorCode>, String> {
        if path == path::ROOT {
            return Err("a delete of the root".into());
        }
        let parent_path = parent_of(path)
            .ok_or_else(|| format!("a delete of {path:?}, which is not a path"))?
            .to_owned();
        let Some(parent) = self.tree.get(&parent_path) else {
            return Ok(Some(ErrorCode::NoNode));
        };
        let (parent_cversion, parent_pzxid) = (parent.stat().cversion, parent.stat().pzxid);
        let Some(node) = self.tree.get(path) else {
            if zxid > parent_pzxid {
                self.tree
                    .set_cversion_pzxid(&parent_path, parent_cversion, zxid);
            }
            return Ok(Some(ErrorCode::NoNode));
        };
        if node.has_children() {
            return Err(format!(
                "a delete of {path}, which has {} child(ren) here: ZooKeeper would leave them without \
                 a parent",
                node.num_children()
            ));
        }
        let kind = node.kind();
        self.tree.delete(path, zxid);
        if let NodeKind::Ephemeral(owner) = kind {
            if let Some(set) = self.ephemerals.get_mut(&owner) {
                set.remove(path);
                if set.is_empty() {
                    self.ephemerals.remove(&owner);
                }
            }
        }
        Ok(None)
    }

    /// `DataTree.killSession`: the paths the closeSession transaction lists, then whatever ephemerals
    /// of the session are left; a path already gone is skipped.
    fn kill_session(
        &mut self,
        id: i64,
        zxid: i64,
        listed: Option<&[String]>,
    ) -> Result<(), String> {
        let mut local = self.ephemerals.remove(&id).unwrap_or_default();
        if let Some(paths) = listed {
            for p in paths {
                local.remove(p);
                self.delete(p, zxid)?;
            }
            if !local.is_empty() {
                self.notes.push(format!(
                    "closeSession {zxid:#x} of session {id:#x} does not list {} of its ephemerals: \
                     deleted too, as ZooKeeper does",
                    local.len()
                ));
            }
        }
        for p in local {
            self.delete(&p, zxid)?;
        }
        Ok(())
    }
}

/// The number of components of `path` (the root has none): sorting by it puts parents first.
fn depth(path: &str) -> usize {
    if path == path::ROOT {
        0
    } else {
        path.matches('/').count()
    }
}

impl StateMachine {
    /// A bootstrapped state holding a ZooKeeper database: every node with its data, ACL and stat as
    /// ZooKeeper had them, the live sessions (their clients keep their ids and ZooKeeper's passwords,
    /// `legacy_password`; no owner until their first request), zxids continuing above ZooKeeper's, and
    /// new session ids above every id ZooKeeper handed out with the same member byte. `secret`,
    /// `member_id` and `settings` are what a Bootstrap command would carry.
    pub fn from_zookeeper(
        image: ZooKeeperImage,
        secret: Vec<u8>,
        member_id: u8,
        settings: ApplySettings,
    ) -> Result<StateMachine, String> {
        if secret.is_empty() {
            return Err("the cluster secret is empty".into());
        }
        if member_id == 0x80 || member_id == 0xFF {
            return Err(format!(
                "member id {member_id:#x} would make session ids read as container or TTL owners"
            ));
        }
        let mut nodes = image.nodes;
        nodes.sort_by_key(|n| depth(&n.path));
        let mut acls = AclCache::default();
        let mut tree = DataTree::from_loaded(
            nodes
                .into_iter()
                .map(|n| (n.path, n.data.map(Arc::from), acls.intern(n.acl), n.stat)),
        )
        .map_err(|e| e.to_string())?;
        add_missing_system_nodes(&mut tree, &mut acls);

        let mut sessions = SessionTable::new();
        for s in &image.sessions {
            if !matches!(NodeKind::from_owner(s.id), NodeKind::Ephemeral(_)) {
                return Err(format!(
                    "session id {:#x} cannot be a session (it reads as a container or TTL owner)",
                    s.id
                ));
            }
            if s.timeout_ms <= 0 {
                return Err(format!(
                    "session {:#x} has timeout {} ms",
                    s.id, s.timeout_ms
                ));
            }
            let mut info = SessionInfo::new(s.timeout_ms);
            info.legacy_password = true;
            if sessions.insert(s.id, info).is_some() {
                return Err(format!("session {:#x} is listed twice", s.id));
            }
        }
        let mut owners = Vec::new();
        for (p, n) in tree.iter() {
            if let NodeKind::Ephemeral(owner) = n.kind() {
                let s = sessions.get_mut(&owner).ok_or_else(|| {
                    format!("ephemeral {p} belongs to session {owner:#x}, which is not live")
                })?;
                s.ephemerals.insert(p.clone());
                owners.push(owner);
            }
        }

        let mut next_session = session::initial_session_counter(image.time_ms);
        let ids = image
            .session_ids_seen
            .iter()
            .chain(image.sessions.iter().map(|s| &s.id))
            .chain(owners.iter());
        for id in ids {
            if (*id as u64 >> 56) as u8 == member_id {
                let low = *id as u64 & session::ID_LOW_BITS;
                next_session = next_session.max((low + 1).min(session::ID_LOW_BITS));
            }
        }

        let newest = tree
            .iter()
            .map(|(_, n)| n.stat().czxid.max(n.stat().mzxid).max(n.stat().pzxid))
            .max()
            .unwrap_or(0);
        if newest > image.last_zxid {
            return Err(format!(
                "a node carries zxid {newest:#x}, above the last zxid {:#x}",
                image.last_zxid
            ));
        }
        let state = StateMachine::from_parts(
            tree,
            sessions,
            image.last_zxid,
            next_session,
            member_id,
            secret,
            settings,
        );
        state.check_invariants()?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::entry;
    use crate::session::zookeeper_password;
    use crate::state::{Command, CommandOp};
    use oxkeeper_proto::{perms, Id, PathWatch, Request, Response, Stat};

    const S1: i64 = 0x0100_0a1b_2c3d_0000;

    fn node(path: &str, data: Option<&[u8]>, stat: NodeStat) -> ImportedNode {
        ImportedNode {
            path: path.into(),
            data: data.map(<[u8]>::to_vec),
            acl: open_acl_unsafe(),
            stat,
        }
    }

    fn stat(czxid: i64, mzxid: i64, pzxid: i64, cversion: i32, owner: i64) -> NodeStat {
        NodeStat {
            czxid,
            mzxid,
            ctime: 1000 + czxid,
            mtime: 1000 + mzxid,
            version: 0,
            cversion,
            aversion: 0,
            ephemeral_owner: owner,
            pzxid,
        }
    }

    /// ZooKeeper's initial tree, root cversion and pzxid as given.
    fn system_nodes(root_cversion: i32, root_pzxid: i64) -> Vec<ImportedNode> {
        let mut config = node(path::CONFIG, Some(b""), NodeStat::default());
        config.acl = read_acl_unsafe();
        config.stat.aversion = -1;
        vec![
            node("/", Some(b""), stat(0, 0, root_pzxid, root_cversion, 0)),
            node(path::ZOOKEEPER, Some(b""), NodeStat::default()),
            node(path::QUOTA, Some(b""), NodeStat::default()),
            config,
        ]
    }

    fn super_auth() -> Vec<Id> {
        vec![Id {
            scheme: "super".into(),
            id: String::new(),
        }]
    }

    fn get(state: &StateMachine, path: &str) -> (Option<Vec<u8>>, Stat) {
        let req = Request::GetData(PathWatch {
            path: path.into(),
            watch: false,
        });
        match state.read(0, &req, &super_auth()) {
            (0, Response::GetData { data, stat }) => (data, stat),
            other => panic!("getData {path}: {other:?}"),
        }
    }

    fn hdr(zxid: i64) -> ZkTxnHeader {
        ZkTxnHeader {
            session_id: S1,
            cxid: 1,
            zxid,
            time_ms: 5000 + zxid,
        }
    }

    fn create(path: &str, parent_cversion: i32) -> ZkTxn {
        ZkTxn::Create(ZkCreate {
            op: OpCode::Create,
            path: path.into(),
            data: Some(b"x".to_vec()),
            acl: None,
            ephemeral: false,
            parent_cversion,
            ttl: -1,
        })
    }

    fn sample_image() -> ZooKeeperImage {
        let mut nodes = system_nodes(4, 7);
        let mut a = node("/a", Some(b"hello"), stat(2, 6, 5, 2, 0));
        a.stat.version = 3;
        a.stat.aversion = 1;
        a.acl = vec![
            entry(perms::ALL, "digest", "u:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY="),
            entry(perms::READ, "world", "anyone"),
        ];
        nodes.push(a);
        // A child deleted earlier: internal cversion 2, one child left.
        nodes.push(node("/a/e", None, stat(5, 5, 5, 0, S1)));
        nodes.push(node(
            "/c",
            Some(b""),
            stat(3, 3, 3, 0, CONTAINER_EPHEMERAL_OWNER),
        ));
        nodes.push(node(
            "/t",
            Some(&[0, 255]),
            stat(7, 7, 7, 0, TTL_EPHEMERAL_OWNER_MASK | 60_000),
        ));
        // Out of order on purpose: from_zookeeper sorts parents first.
        nodes.reverse();
        ZooKeeperImage {
            nodes,
            sessions: vec![ImportedSession {
                id: S1,
                timeout_ms: 10_000,
            }],
            last_zxid: 9,
            session_ids_seen: vec![S1 + 7],
            time_ms: 0,
        }
    }

    /// Creates a session as a client's connect does: its id, password and zxid.
    fn new_session(state: &mut StateMachine) -> (i64, [u8; 16], i64) {
        let applied = state.apply(&Command {
            session_id: 0,
            cxid: 0,
            time_ms: 0,
            auth: vec![].into(),
            op: CommandOp::CreateSession { timeout_ms: 4000 },
        });
        match applied.session {
            Some(crate::SessionChange::Created { id, passwd, .. }) => (id, passwd, applied.zxid),
            other => panic!("{other:?}"),
        }
    }

    fn import(image: ZooKeeperImage) -> StateMachine {
        StateMachine::from_zookeeper(image, b"secret".to_vec(), 1, ApplySettings::default())
            .expect("import")
    }

    #[test]
    fn imported_nodes_read_back_as_zookeeper_had_them() {
        let state = import(sample_image());
        let (data, s) = get(&state, "/a");
        assert_eq!(data.as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            s,
            Stat {
                czxid: 2,
                mzxid: 6,
                ctime: 1002,
                mtime: 1006,
                version: 3,
                cversion: 3, // 2 * 2 created - 1 child
                aversion: 1,
                ephemeral_owner: 0,
                data_length: 5,
                num_children: 1,
                pzxid: 5,
            }
        );
        let (data, s) = get(&state, "/a/e");
        assert_eq!((data, s.ephemeral_owner, s.data_length), (None, S1, 0));
        assert_eq!(get(&state, "/c").1.ephemeral_owner, 0);
        assert_eq!(get(&state, "/t").0.as_deref(), Some(&[0, 255][..]));
        assert_eq!(state.tree().containers().collect::<Vec<_>>(), ["/c"]);
        assert_eq!(state.tree().ttls().collect::<Vec<_>>(), ["/t"]);
        let (err, acl) = state.read(0, &Request::GetAcl("/a".into()), &super_auth());
        assert_eq!(err, 0);
        let Response::GetAcl { acl, .. } = acl else {
            panic!("{acl:?}")
        };
        assert_eq!(acl[0].id.id, "u:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY=");
        let req = Request::GetChildren2(PathWatch {
            path: "/".into(),
            watch: false,
        });
        let (_, Response::GetChildren2 { children, stat }) = state.read(0, &req, &[]) else {
            panic!()
        };
        assert_eq!(children, ["a", "c", "t", "zookeeper"]);
        assert_eq!((stat.cversion, stat.pzxid), (4, 7));
        assert_eq!(state.last_zxid(), 9);
        assert_eq!(state.ephemerals(S1), ["/a/e"]);
        state.check_invariants().unwrap();
    }

    #[test]
    fn imported_sessions_keep_zookeeper_passwords_and_ids_never_repeat() {
        let mut state = import(sample_image());
        let info = state.session(S1).unwrap();
        assert!(info.legacy_password);
        assert_eq!(info.owner, None);
        assert_eq!(info.timeout_ms, 10_000);
        assert_eq!(state.session_password(S1), Some(zookeeper_password(S1)));
        assert!(state.check_password(S1, &zookeeper_password(S1)));
        let (id, passwd, zxid) = new_session(&mut state);
        // Above the highest id ZooKeeper handed out with member byte 1, HMAC password, next zxid.
        assert_eq!(id, S1 + 8);
        assert_eq!(passwd, session::hmac_password(b"secret", id));
        assert_eq!(zxid, 10);
        // Another member byte: ids of member 1 do not matter.
        let mut state = StateMachine::from_zookeeper(
            sample_image(),
            b"s".to_vec(),
            2,
            ApplySettings::default(),
        )
        .unwrap();
        assert_eq!(new_session(&mut state).0, 0x0200_0000_0000_0000);
    }

    #[test]
    fn new_session_ids_start_no_lower_than_the_import_time() {
        let mut image = sample_image();
        image.time_ms = 1_700_000_000_000;
        let mut state = import(image);
        assert_eq!(
            new_session(&mut state).0,
            session::session_id(1, session::initial_session_counter(1_700_000_000_000))
        );
    }

    #[test]
    fn bad_images_are_refused() {
        let mut image = sample_image();
        image.sessions.clear();
        let err = StateMachine::from_zookeeper(image, b"s".to_vec(), 1, ApplySettings::default())
            .unwrap_err();
        assert!(err.contains("not live"), "{err}");
        let mut image = sample_image();
        image.last_zxid = 6;
        assert!(
            StateMachine::from_zookeeper(image, b"s".to_vec(), 1, ApplySettings::default())
                .is_err()
        );
        let mut image = sample_image();
        image.nodes.retain(|n| n.path != "/a");
        assert!(
            StateMachine::from_zookeeper(image, b"s".to_vec(), 1, ApplySettings::default())
                .is_err()
        );
        assert!(StateMachine::from_zookeeper(
            sample_image(),
            Vec::new(),
            1,
            ApplySettings::default()
        )
        .is_err());
        assert!(StateMachine::from_zookeeper(
            sample_image(),
            b"s".to_vec(),
            0xFF,
            ApplySettings::default()
        )
        .is_err());
        let mut image = sample_image();
        image.sessions.push(ImportedSession {
            id: CONTAINER_EPHEMERAL_OWNER,
            timeout_ms: 1,
        });
        assert!(
            StateMachine::from_zookeeper(image, b"s".to_vec(), 1, ApplySettings::default())
                .is_err()
        );
    }

    fn replay(nodes: Vec<ImportedNode>, zxid: i64) -> ZkReplay {
        ZkReplay::from_snapshot(
            nodes,
            &[ImportedSession {
                id: S1,
                timeout_ms: 4000,
            }],
            zxid,
        )
        .unwrap()
    }

    fn stat_of(r: &ZkReplay, path: &str) -> NodeStat {
        r.tree().get(path).unwrap().stat()
    }

    #[test]
    fn creates_take_the_logged_parent_cversion() {
        let mut r = replay(system_nodes(1, 0), 0);
        r.apply(&hdr(1), &create("/a", 2)).unwrap();
        assert_eq!((stat_of(&r, "/").cversion, stat_of(&r, "/").pzxid), (2, 1));
        // CreateTxnV0 (no parentCVersion): one more.
        r.apply(&hdr(2), &create("/b", -1)).unwrap();
        assert_eq!((stat_of(&r, "/").cversion, stat_of(&r, "/").pzxid), (3, 2));
        // A lower logged cversion (fuzzy snapshot) leaves cversion and pzxid alone.
        r.apply(&hdr(3), &create("/c", 1)).unwrap();
        assert_eq!((stat_of(&r, "/").cversion, stat_of(&r, "/").pzxid), (3, 2));
        let s = stat_of(&r, "/c");
        assert_eq!((s.czxid, s.mzxid, s.pzxid, s.ctime), (3, 3, 3, 5003));
        assert_eq!(r.last_zxid(), 3);
    }

    #[test]
    fn a_create_of_an_existing_node_takes_its_acl_and_raises_the_parent() {
        let mut nodes = system_nodes(1, 4);
        nodes.push(node("/a", Some(b"old"), stat(4, 4, 4, 0, 0)));
        let mut r = replay(nodes, 3);
        let mut c = create("/a", 5);
        if let ZkTxn::Create(c) = &mut c {
            c.acl = Some(read_acl_unsafe());
        }
        r.apply(&hdr(4), &c).unwrap();
        let a = r.tree().get("/a").unwrap();
        assert_eq!(a.acl().as_slice(), read_acl_unsafe().as_slice());
        assert_eq!(a.data(), Some(&b"old"[..]));
        assert_eq!((stat_of(&r, "/").cversion, stat_of(&r, "/").pzxid), (5, 4));
        // create2 does not get the fix-up.
        if let ZkTxn::Create(c) = &mut c {
            c.op = OpCode::Create2;
            c.parent_cversion = 9;
        }
        r.apply(&hdr(5), &c).unwrap();
        assert_eq!(stat_of(&r, "/").cversion, 5);
        let (_, notes) = r.finish().unwrap();
        assert!(
            notes.iter().any(|n| n.contains("NodeExists x2")),
            "{notes:?}"
        );
    }

    #[test]
    fn deletes_raise_the_parent_pzxid_even_for_missing_nodes() {
        let mut nodes = system_nodes(1, 1);
        nodes.push(node("/p", Some(b""), stat(1, 1, 1, 0, 0)));
        let mut r = replay(nodes, 1);
        r.apply(
            &hdr(8),
            &ZkTxn::Delete {
                path: "/p/x".into(),
            },
        )
        .unwrap();
        assert_eq!(stat_of(&r, "/p").pzxid, 8);
        r.apply(&hdr(9), &ZkTxn::Delete { path: "/p".into() })
            .unwrap();
        assert!(!r.tree().contains("/p"));
        assert_eq!((stat_of(&r, "/").cversion, stat_of(&r, "/").pzxid), (1, 9));
        // Missing parent: nothing happens.
        r.apply(
            &hdr(10),
            &ZkTxn::Delete {
                path: "/q/x".into(),
            },
        )
        .unwrap();
        assert_eq!(r.last_zxid(), 10);
    }

    #[test]
    fn replays_zookeeper_cannot_make_are_errors() {
        let mut nodes = system_nodes(1, 1);
        nodes.push(node("/p", Some(b""), stat(1, 1, 2, 1, 0)));
        nodes.push(node("/p/c", Some(b""), stat(2, 2, 2, 0, 0)));
        let mut r = replay(nodes, 2);
        assert!(r
            .apply(&hdr(3), &ZkTxn::Delete { path: "/p".into() })
            .unwrap_err()
            .contains("child"));
        let ttl = ZkTxn::Create(ZkCreate {
            op: OpCode::CreateTtl,
            ttl: 0,
            ..match create("/t", 3) {
                ZkTxn::Create(c) => c,
                _ => unreachable!(),
            }
        });
        assert!(r.apply(&hdr(4), &ttl).is_err());
        let nested = ZkTxn::Multi(vec![ZkTxn::CreateSession { timeout_ms: 1 }]);
        assert!(r.apply(&hdr(5), &nested).is_err());
        assert!(r
            .apply(&hdr(6), &ZkTxn::Delete { path: "/".into() })
            .is_err());
    }

    #[test]
    fn multis_apply_whole_or_not_at_all() {
        let mut r = replay(system_nodes(1, 0), 0);
        let failed = ZkTxn::Multi(vec![create("/a", 2), ZkTxn::Error { err: -110 }]);
        r.apply(&hdr(1), &failed).unwrap();
        assert!(!r.tree().contains("/a"));
        let ok = ZkTxn::Multi(vec![
            create("/a", 2),
            ZkTxn::Check {
                path: "/a".into(),
                version: 0,
            },
            ZkTxn::SetData {
                path: "/a".into(),
                data: None,
                version: 1,
            },
            create("/a/b", 1),
        ]);
        r.apply(&hdr(2), &ok).unwrap();
        let a = r.tree().get("/a").unwrap();
        assert_eq!((a.data(), a.stat().version, a.stat().mzxid), (None, 1, 2));
        assert!(r.tree().contains("/a/b"));
        assert_eq!(r.last_zxid(), 2);
    }

    #[test]
    fn sessions_follow_the_log_and_dead_owners_lose_their_ephemerals() {
        const S2: i64 = 0x0100_0a1b_2c3d_0001;
        const S3: i64 = 0x0100_0a1b_2c3d_0002;
        let mut nodes = system_nodes(3, 3);
        // S3 owns an ephemeral in the snapshot but is not in its session table.
        nodes.push(node("/gone", Some(b""), stat(3, 3, 3, 0, S3)));
        let mut r = replay(nodes, 3);
        let s2 = |zxid| ZkTxnHeader {
            session_id: S2,
            ..hdr(zxid)
        };
        r.apply(&s2(4), &ZkTxn::CreateSession { timeout_ms: 6000 })
            .unwrap();
        let mut e = create("/e1", 4);
        if let ZkTxn::Create(c) = &mut e {
            c.ephemeral = true;
        }
        r.apply(&s2(5), &e).unwrap();
        let mut e2 = create("/e2", 5);
        if let ZkTxn::Create(c) = &mut e2 {
            c.ephemeral = true;
        }
        r.apply(&s2(6), &e2).unwrap();
        assert_eq!(stat_of(&r, "/e1").ephemeral_owner, S2);
        // The closeSession lists one path; the other goes too.
        r.apply(
            &s2(7),
            &ZkTxn::CloseSession {
                paths: Some(vec!["/e1".into()]),
            },
        )
        .unwrap();
        assert!(!r.tree().contains("/e1") && !r.tree().contains("/e2"));
        assert_eq!(stat_of(&r, "/").pzxid, 7);
        assert_eq!(r.sessions().collect::<Vec<_>>(), [(S1, 4000)]);
        let (image, notes) = r.finish().unwrap();
        assert!(!image.nodes.iter().any(|n| n.path == "/gone"));
        assert!(notes.iter().any(|n| n.contains("not live")), "{notes:?}");
        assert_eq!(
            image.sessions,
            [ImportedSession {
                id: S1,
                timeout_ms: 4000
            }]
        );
        assert_eq!(image.last_zxid, 7);
        assert!(image.session_ids_seen.contains(&S3));
        let state = import(image);
        assert_eq!(get(&state, "/").1.pzxid, 7);
    }

    #[test]
    fn quota_stats_are_recounted_at_load_and_kept_by_the_replay() {
        let mut nodes = system_nodes(1, 2);
        nodes.push(node("/a", Some(b"12345"), stat(2, 2, 2, 0, 0)));
        nodes.push(node("/zookeeper/quota/a", Some(b""), stat(3, 3, 4, 2, 0)));
        nodes.push(node(
            "/zookeeper/quota/a/zookeeper_limits",
            Some(b"count=10,bytes=-1"),
            stat(3, 3, 3, 0, 0),
        ));
        nodes.push(node(
            "/zookeeper/quota/a/zookeeper_stats",
            Some(b"count=99,bytes=99"),
            stat(4, 4, 4, 0, 0),
        ));
        let mut r = replay(nodes, 4);
        let stats = |r: &ZkReplay| {
            r.tree()
                .get("/zookeeper/quota/a/zookeeper_stats")
                .and_then(|n| n.data_vec())
                .map(|d| String::from_utf8(d).unwrap())
        };
        assert_eq!(stats(&r).as_deref(), Some("count=1,bytes=5"));
        r.apply(&hdr(5), &create("/a/b", 1)).unwrap();
        assert_eq!(stats(&r).as_deref(), Some("count=2,bytes=6"));
        // The stats node's own stat does not change.
        assert_eq!(stat_of(&r, "/zookeeper/quota/a/zookeeper_stats").mzxid, 4);
    }

    #[test]
    fn old_snapshots_get_the_config_node() {
        let mut nodes = system_nodes(1, 0);
        nodes.retain(|n| n.path != path::CONFIG);
        let r = replay(nodes, 0);
        let (image, notes) = r.finish().unwrap();
        assert!(notes[0].contains("/zookeeper/config"), "{notes:?}");
        let state = import(image);
        assert_eq!(state.tree().get(path::CONFIG).unwrap().stat().aversion, -1);
        // /zookeeper's cversion is not touched (addConfigNode only adds the child).
        assert_eq!(get(&state, "/zookeeper").1.cversion, -2);
    }

    #[test]
    fn reconfig_is_skipped_with_a_note_but_uses_its_zxid() {
        let mut r = replay(system_nodes(1, 0), 0);
        r.apply(&hdr(0x1_0000_0001), &ZkTxn::Reconfig).unwrap();
        assert_eq!(r.last_zxid(), 0x1_0000_0001);
        let (image, notes) = r.finish().unwrap();
        assert!(notes.iter().any(|n| n.contains("reconfig")));
        assert_eq!(image.last_zxid, 0x1_0000_0001);
    }
}
