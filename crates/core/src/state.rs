//! The whole replicated state (DataTree, session table, zxid counter, next-session counter, cluster
//! secret, apply settings) and `apply`, the pure function every member runs on every committed command.
//!
//! `apply` decides each write the way ZooKeeper's PrepRequestProcessor and DataTree together do: the same
//! checks in the same order (the first failure wins), the same Stat changes, the same watch events in the
//! same order. Reads are answered by `read` from the same state. Nothing here does I/O or reads a clock:
//! the command carries the leader's time.

use crate::acl::{check_acl, fixup_acl, mask_digest_ids};
use crate::path::{self, is_special_path, parent_of, validate_path};
use crate::session::{
    self, hmac_password, initial_session_counter, password_matches, zookeeper_password, Owner,
    SessionInfo, SessionTable, PASSWORD_LEN,
};
use crate::tree::{next_version, DataTree, NodeKind, NodeRef};
use crate::SessionId;
use oxkeeper_proto::{
    perms, Acl, CreateMode, CreateRequest, ErrorCode, EventType, Id, MultiOp, MultiResult, OpCode,
    PathVersion, Request, Response, SetAclRequest, SetDataRequest, Stat, CONTAINER_EPHEMERAL_OWNER,
    TTL_EPHEMERAL_OWNER_MASK, TTL_MAX_MS,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use crate::session::SessionChange;

/// One entry of the replicated log: what apply gets, identical on every member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Command {
    pub session_id: SessionId,
    pub cxid: i32,
    /// The leader's wall clock when it proposed the command; becomes ctime/mtime.
    pub time_ms: i64,
    /// The authenticated ids of the connection that sent the command (ACL checks use them).
    /// Shared with the connection's own list: a command copies no identity.
    pub auth: Arc<[Id]>,
    pub op: CommandOp,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum CommandOp {
    /// First entry of a new cluster: the cluster secret (random bytes chosen by the leader), the member id
    /// that goes in the top byte of session ids, and the settings that change what apply does.
    Bootstrap {
        secret: Vec<u8>,
        member_id: u8,
        settings: ApplySettings,
    },
    /// A new session; the id is allocated at apply. `timeout_ms` is already clamped by the server.
    CreateSession { timeout_ms: i32 },
    /// Explicit close or expiry of `Command::session_id`: deletes every ephemeral of the session.
    CloseSession,
    /// Create (any create opcode), Delete, SetData, SetAcl, Multi or DeleteContainer.
    Write(Request),
    /// New apply settings (a member started with a config that says otherwise). Takes no zxid: it is not a
    /// ZooKeeper transaction. Appended last so earlier variants keep their encoding.
    UpdateSettings { settings: ApplySettings },
    /// A client reconnects to session `Command::session_id` with `password`: if the session is live and the
    /// password right, the command's origin becomes the session's owner. Takes no zxid (ZooKeeper's
    /// revalidation is not a transaction either). `timeout_ms` is the timeout negotiated for the new
    /// connection; the stored one stays the original (a restart tracks the session with it).
    Revalidate { password: Vec<u8>, timeout_ms: i32 },
}

/// Settings that change the outcome of apply; they enter the state only through [`CommandOp::Bootstrap`]
/// and [`CommandOp::UpdateSettings`], so members with different config files cannot diverge.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApplySettings {
    /// `zookeeper.extendedTypesEnabled`: TTL nodes are allowed.
    pub extended_types_enabled: bool,
}

/// A watch event a write produced, before it is matched against the member's watch table.
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    /// Shared with the session's ephemeral index for an ephemeral's events: a session's cleanup makes no
    /// copy of its paths.
    pub path: Arc<str>,
    pub event: EventType,
    pub zxid: i64,
    /// The ACL of the node the watcher must be able to READ for the event to be delivered (for
    /// NodeChildrenChanged, the parent's).
    pub acl: Arc<Vec<Acl>>,
}

/// What applying one command did.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The zxid this command used (every command except Bootstrap and UpdateSettings uses one, failed writes too); for
    /// Bootstrap, the unchanged last zxid.
    pub zxid: i64,
    /// `ReplyHeader.err` (0 for a failed multi: its results carry the errors).
    pub err: i32,
    /// The reply body (`Response::Empty` when `err != 0`).
    pub response: Response,
    /// Watch events to fire, in ZooKeeper's order, before the reply is sent.
    pub triggers: Vec<Trigger>,
    pub session: Option<SessionChange>,
}

/// The cluster secret; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The replicated state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateMachine {
    tree: DataTree,
    sessions: SessionTable,
    last_zxid: i64,
    /// Low 56 bits of the next session id.
    next_session: u64,
    /// Goes in the top byte of every session id.
    member_id: u8,
    /// `None` until the Bootstrap command is applied.
    secret: Option<Secret>,
    settings: ApplySettings,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new()
    }
}

type Outcome<T> = Result<T, ErrorCode>;

/// Java's `String.trim()`: strips every char ≤ U+0020 at both ends.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// `checkAndIncVersion`: BadVersion unless `expected` is -1 or the current version.
fn check_and_inc_version(current: i32, expected: i32) -> Outcome<i32> {
    if expected != -1 && expected != current {
        return Err(ErrorCode::BadVersion);
    }
    Ok(next_version(current))
}

/// `getParentPathAndValidate` of delete and deleteContainer.
fn parent_for_delete(path: &str) -> Outcome<&str> {
    if path.contains('\0') || is_special_path(path) {
        return Err(ErrorCode::BadArguments);
    }
    parent_of(path).ok_or(ErrorCode::BadArguments)
}

fn to_data(data: &Option<Vec<u8>>) -> Option<Arc<[u8]>> {
    data.as_deref().map(Arc::from)
}

/// The node map key a read looks up: `""` is the root.
fn read_path(path: &str) -> &str {
    if path.is_empty() {
        path::ROOT
    } else {
        path
    }
}

/// The create opcode a create inside a multi really runs as. ZooKeeper 3.8 rebuilds each sub-create
/// as `Op.create(path, data, acl, flags[, ttl])`, whose opcode follows the create *mode* (invalid
/// flags read as persistent here, and fail later as BadArguments): createTTL for the TTL modes (only a
/// createTTL sub-op carries the TTL record; any other one makes the prep fail with a
/// ClassCastException, a MarshallingError for the whole multi), createContainer for the container mode,
/// create otherwise — so the sub-op's own opcode decides nothing else (a createContainer sub-op with
/// the ephemeral flag makes an ephemeral node, a createTTL one with flags 0 a persistent node).
fn multi_create_opcode(op: OpCode, flags: i32) -> Outcome<OpCode> {
    match CreateMode::from_i32(flags) {
        Some(mode) if mode.is_ttl() => {
            if op == OpCode::CreateTtl {
                Ok(OpCode::CreateTtl)
            } else {
                Err(ErrorCode::MarshallingError)
            }
        }
        Some(mode) if mode.is_container() => Ok(OpCode::CreateContainer),
        _ => Ok(OpCode::Create),
    }
}

fn is_create_op(op: OpCode) -> bool {
    matches!(
        op,
        OpCode::Create | OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl
    )
}

impl StateMachine {
    /// An empty state: ZooKeeper's initial tree, zxid 0, no session, not bootstrapped.
    pub fn new() -> Self {
        StateMachine {
            tree: DataTree::new(),
            sessions: SessionTable::new(),
            last_zxid: 0,
            next_session: 0,
            member_id: 1,
            secret: None,
            settings: ApplySettings::default(),
        }
    }

    /// A bootstrapped state made of these parts (the ZooKeeper import, [`crate::import`], which checks
    /// them). `next_session` is the low 56 bits of the next session id.
    pub(crate) fn from_parts(
        tree: DataTree,
        sessions: SessionTable,
        last_zxid: i64,
        next_session: u64,
        member_id: u8,
        secret: Vec<u8>,
        settings: ApplySettings,
    ) -> Self {
        StateMachine {
            tree,
            sessions,
            last_zxid,
            next_session,
            member_id,
            secret: Some(Secret(secret)),
            settings,
        }
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    pub fn settings(&self) -> &ApplySettings {
        &self.settings
    }

    /// Whether the Bootstrap command has been applied (sessions can only be created after it).
    pub fn is_bootstrapped(&self) -> bool {
        self.secret.is_some()
    }

    /// The member byte of session ids.
    pub fn member_id(&self) -> u8 {
        self.member_id
    }

    pub fn session(&self, id: i64) -> Option<&SessionInfo> {
        self.sessions.get(&id)
    }

    pub fn session_exists(&self, id: i64) -> bool {
        self.sessions.contains_key(&id)
    }

    /// Every live session with the timeout it was created with, by id.
    pub fn sessions(&self) -> impl Iterator<Item = (i64, i32)> + '_ {
        let mut all: Vec<(i64, i32)> = self
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.timeout_ms))
            .collect();
        all.sort_unstable();
        all.into_iter()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The session's ordinary ephemerals, in path order.
    pub fn ephemerals(&self, id: i64) -> Vec<String> {
        self.sessions
            .get(&id)
            .map(|s| s.ephemerals.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    /// Sessions that own ephemerals, with their paths (the `dump` four-letter word).
    pub fn sessions_with_ephemerals(&self) -> Vec<(i64, Vec<String>)> {
        let mut all: Vec<(i64, Vec<String>)> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.ephemerals.is_empty())
            .map(|(id, s)| (*id, s.ephemerals.iter().map(|p| p.to_string()).collect()))
            .collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// The number of ordinary ephemerals (`ephemerals_count` of `mntr`).
    pub fn ephemerals_count(&self) -> usize {
        self.sessions.values().map(|s| s.ephemerals.len()).sum()
    }

    /// The password of a live session: HMAC-SHA256(secret, id) truncated to 16 bytes, or ZooKeeper's
    /// derivation for a session flagged as imported. `None` if the session does not exist or the cluster
    /// is not bootstrapped.
    pub fn session_password(&self, id: i64) -> Option<[u8; PASSWORD_LEN]> {
        let info = self.sessions.get(&id)?;
        self.password_for(id, info.legacy_password)
    }

    fn password_for(&self, id: i64, legacy: bool) -> Option<[u8; PASSWORD_LEN]> {
        if legacy {
            return Some(zookeeper_password(id));
        }
        self.secret.as_ref().map(|s| hmac_password(&s.0, id))
    }

    /// Is `pw` the password of session `id`? Constant time in the password bytes. Does not say whether the
    /// session is live (an unknown id is checked against the HMAC derivation); id 0 never matches.
    pub fn check_password(&self, id: i64, pw: &[u8]) -> bool {
        if id == 0 {
            return false;
        }
        let legacy = self.sessions.get(&id).is_some_and(|s| s.legacy_password);
        match self.password_for(id, legacy) {
            Some(expected) => password_matches(&expected, pw),
            None => false,
        }
    }

    /// Paths the container reaper should try to delete now (ContainerManager.getCandidates): empty
    /// containers that have had a child (internal cversion > 0), and empty TTL nodes not modified for
    /// longer than their TTL (`now_wall_ms - mtime > ttl`). Never-used containers are kept, as in 3.9
    /// (`znode.container.maxNeverUsedIntervalMs` = 0).
    pub fn container_candidates(&self, now_wall_ms: i64) -> Vec<String> {
        let mut out = Vec::new();
        for path in self.tree.containers() {
            if let Some(n) = self.tree.get(path) {
                if !n.has_children() && n.stat().cversion > 0 {
                    out.push(path.to_owned());
                }
            }
        }
        for path in self.tree.ttls() {
            if let Some(n) = self.tree.get(path) {
                if let NodeKind::Ttl(ttl) = n.kind() {
                    let elapsed = now_wall_ms.saturating_sub(n.stat().mtime);
                    if !n.has_children() && ttl != 0 && elapsed > ttl {
                        out.push(path.to_owned());
                    }
                }
            }
        }
        out
    }

    /// Checks the invariants of the whole state: the tree's own, plus every ordinary ephemeral belongs to
    /// a live session whose ephemeral set lists it (and only existing ones), and no zxid in the tree is
    /// ahead of the counter.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.tree.check_invariants()?;
        let mut listed = 0usize;
        for (id, s) in self.sessions.iter() {
            for p in s.ephemerals.iter() {
                let n = self
                    .tree
                    .get(p)
                    .ok_or_else(|| format!("session {id:#x} lists missing ephemeral {p}"))?;
                if n.kind() != NodeKind::Ephemeral(*id) {
                    return Err(format!(
                        "{p} is listed by session {id:#x} but not its ephemeral"
                    ));
                }
                listed += 1;
            }
        }
        let mut owned = 0usize;
        for (p, n) in self.tree.iter() {
            if let NodeKind::Ephemeral(owner) = n.kind() {
                if !self.sessions.contains_key(&owner) {
                    return Err(format!("{p} belongs to dead session {owner:#x}"));
                }
                owned += 1;
            }
            let s = n.stat();
            if s.czxid.max(s.mzxid).max(s.pzxid) > self.last_zxid {
                return Err(format!("{p} has a zxid above {}", self.last_zxid));
            }
        }
        if listed != owned {
            return Err(format!(
                "{owned} ephemerals in the tree, {listed} in sessions"
            ));
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------------
    // Apply.

    /// Applies one committed command that has no client connection as its origin (bootstrap, expiry, the
    /// container reaper, tests). See [`StateMachine::apply_from`].
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        self.apply_from(cmd, None)
    }

    /// Applies one committed command sent by `origin` (the member and connection the client is attached to,
    /// recorded in the log with the command). Pure: the same state, command and origin always give the same
    /// result and the same next state.
    ///
    /// Ownership: creating or revalidating a session makes its origin the owner. A write whose origin is
    /// not the owner fails with SessionMoved (ZooKeeper's `checkSession`), using a zxid as ZooKeeper's
    /// error txn does; a close does not check (ZooKeeper's expirer and a client's own close both close).
    pub fn apply_from(&mut self, cmd: &Command, origin: Option<Owner>) -> Applied {
        let mut triggers = Vec::new();
        let mut session = None;
        if let (CommandOp::Write(_), Some(o)) = (&cmd.op, origin) {
            if let Some(s) = self.sessions.get_mut(&cmd.session_id) {
                match s.owner {
                    Some(owner) if owner != o => {
                        self.next_zxid();
                        return Applied {
                            zxid: self.last_zxid,
                            err: ErrorCode::SessionMoved.into(),
                            response: Response::Empty,
                            triggers,
                            session,
                        };
                    }
                    Some(_) => {}
                    // An imported session has no owner yet: its first writer becomes it, as in ZooKeeper.
                    None => s.owner = Some(o),
                }
            }
        }
        let outcome = match &cmd.op {
            CommandOp::Bootstrap {
                secret,
                member_id,
                settings,
            } => {
                // Bootstrap is the one command that takes no zxid.
                let err = self.bootstrap(secret, *member_id, settings, cmd.time_ms);
                return Applied {
                    zxid: self.last_zxid,
                    err: err.map_or_else(i32::from, |()| 0),
                    response: Response::Empty,
                    triggers,
                    session,
                };
            }
            CommandOp::UpdateSettings { settings } => {
                let err = if self.is_bootstrapped() {
                    self.settings = settings.clone();
                    0
                } else {
                    ErrorCode::SystemError as i32
                };
                return Applied {
                    zxid: self.last_zxid,
                    err,
                    response: Response::Empty,
                    triggers,
                    session,
                };
            }
            CommandOp::Revalidate {
                password,
                timeout_ms,
            } => {
                let id = cmd.session_id;
                let change = match self.sessions.get(&id) {
                    Some(_) if self.check_password(id, password) => {
                        let passwd = self.session_password(id).unwrap_or([0; PASSWORD_LEN]);
                        let s = self.sessions.get_mut(&id).expect("checked above");
                        let previous = s.owner;
                        s.owner = origin.or(previous);
                        SessionChange::Revalidated {
                            id,
                            timeout_ms: *timeout_ms,
                            passwd,
                            previous,
                        }
                    }
                    _ => SessionChange::RevalidateFailed { id },
                };
                return Applied {
                    zxid: self.last_zxid,
                    err: 0,
                    response: Response::Empty,
                    triggers,
                    session: Some(change),
                };
            }
            CommandOp::CreateSession { timeout_ms } => {
                self.next_zxid();
                self.create_session(*timeout_ms, origin).map(|change| {
                    session = Some(change);
                    Response::Empty
                })
            }
            CommandOp::CloseSession => {
                let zxid = self.next_zxid();
                if let Some(owner) = self.close_session(cmd.session_id, zxid, &mut triggers) {
                    session = Some(SessionChange::Closed {
                        id: cmd.session_id,
                        owner,
                    });
                }
                Ok(Response::Empty)
            }
            CommandOp::Write(req) => {
                let zxid = self.next_zxid();
                self.write(cmd, zxid, req, &mut triggers)
            }
        };
        match outcome {
            Ok(response) => Applied {
                zxid: self.last_zxid,
                err: 0,
                response,
                triggers,
                session,
            },
            Err(code) => Applied {
                zxid: self.last_zxid,
                err: code.into(),
                response: Response::Empty,
                triggers: Vec::new(),
                session: None,
            },
        }
    }

    /// Takes the next zxid: +1 per command, whatever its outcome.
    fn next_zxid(&mut self) -> i64 {
        self.last_zxid = self.last_zxid.wrapping_add(1);
        self.last_zxid
    }

    fn bootstrap(
        &mut self,
        secret: &[u8],
        member_id: u8,
        settings: &ApplySettings,
        time_ms: i64,
    ) -> Outcome<()> {
        // 0x80 and 0xFF in the top byte would read as container and TTL owners; 0x80… ids are negative
        // anyway. An empty secret would make every password public.
        if self.secret.is_some() || secret.is_empty() || member_id == 0x80 || member_id == 0xFF {
            return Err(ErrorCode::BadArguments);
        }
        self.secret = Some(Secret(secret.to_vec()));
        self.member_id = member_id;
        self.settings = settings.clone();
        self.next_session = initial_session_counter(time_ms);
        Ok(())
    }

    fn create_session(&mut self, timeout_ms: i32, owner: Option<Owner>) -> Outcome<SessionChange> {
        let Some(secret) = &self.secret else {
            return Err(ErrorCode::SystemError);
        };
        let secret = secret.0.clone();
        // Skip 0 ("new session" on the wire) and, defensively, any id still in use after the counter
        // wrapped around its 56 bits.
        let id = loop {
            let candidate = session::session_id(self.member_id, self.next_session);
            self.next_session = self.next_session.wrapping_add(1) & session::ID_LOW_BITS;
            if candidate != 0 && !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        let mut info = SessionInfo::new(timeout_ms);
        info.owner = owner;
        self.sessions.insert(id, info);
        Ok(SessionChange::Created {
            id,
            timeout_ms,
            passwd: hmac_password(&secret, id),
        })
    }

    /// Removes the session and deletes its ephemerals (in path order), firing their events with the
    /// close's zxid. Returns the session's owner if the session existed.
    fn close_session(
        &mut self,
        id: i64,
        zxid: i64,
        triggers: &mut Vec<Trigger>,
    ) -> Option<Option<Owner>> {
        let info = self.sessions.remove(&id)?;
        for path in info.ephemerals.iter() {
            self.delete_node(path.clone(), zxid, triggers);
        }
        Some(info.owner)
    }

    /// Deletes a childless node, keeps the session's ephemeral index in step and records the events:
    /// NodeDeleted on the path, then NodeChildrenChanged on the parent.
    fn delete_node(&mut self, path: Arc<str>, zxid: i64, triggers: &mut Vec<Trigger>) {
        let Some(node) = self.tree.delete(&path, zxid) else {
            return;
        };
        if let NodeKind::Ephemeral(owner) = node.kind() {
            if let Some(s) = self.sessions.get_mut(&owner) {
                s.ephemerals.remove(&path);
            }
        }
        let parent = Arc::from(parent_of(&path).unwrap_or("/"));
        triggers.push(Trigger {
            path,
            event: EventType::NodeDeleted,
            zxid,
            acl: node.acl,
        });
        triggers.push(Trigger {
            path: parent,
            event: EventType::NodeChildrenChanged,
            zxid,
            acl: node.parent_acl,
        });
    }

    /// Is the session that sent a write live? A write of a closed (or never created) session fails with
    /// SessionExpired: in ZooKeeper it would find the session closing or gone.
    fn check_session(&self, id: i64) -> Outcome<()> {
        if self.sessions.contains_key(&id) {
            Ok(())
        } else {
            Err(ErrorCode::SessionExpired)
        }
    }

    fn node(&self, path: &str) -> Outcome<NodeRef<'_>> {
        self.tree.get(path).ok_or(ErrorCode::NoNode)
    }

    fn write(
        &mut self,
        cmd: &Command,
        zxid: i64,
        req: &Request,
        triggers: &mut Vec<Trigger>,
    ) -> Outcome<Response> {
        match req {
            Request::Create { op, req } => {
                if !is_create_op(*op) {
                    return Err(ErrorCode::MarshallingError);
                }
                let (path, stat) = self.create(cmd, zxid, *op, req, triggers)?;
                Ok(if *op == OpCode::Create {
                    Response::Create { path }
                } else {
                    Response::Create2 { path, stat }
                })
            }
            Request::Delete(req) => {
                self.delete(cmd, zxid, req, triggers)?;
                Ok(Response::Empty)
            }
            Request::SetData(req) => {
                let stat = self.set_data(cmd, zxid, req, triggers)?;
                Ok(Response::Stat(stat))
            }
            Request::SetAcl(req) => {
                let stat = self.set_acl(cmd, req)?;
                Ok(Response::Stat(stat))
            }
            // A client's deleteContainer: ZooKeeper reads the path from the whole request buffer,
            // header included, so it always holds a NUL and the request is BadArguments (zxid used).
            // Only the reaper (session 0) deletes containers.
            Request::DeleteContainer(_) if cmd.session_id != 0 => Err(ErrorCode::BadArguments),
            Request::DeleteContainer(path) => {
                self.delete_container(zxid, path, triggers)?;
                Ok(Response::Empty)
            }
            Request::Multi(ops) => self.multi(cmd, zxid, ops, triggers),
            Request::Reconfig(_) => Err(ErrorCode::ReconfigDisabled),
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    /// Create, in PrepRequestProcessor's order: flags → TTL support → TTL value → session → path has a `/`
    /// and no NUL → ACL fix-up → parent exists → CREATE on the parent → sequential suffix → full path
    /// valid → node absent → parent not ephemeral.
    fn create(
        &mut self,
        cmd: &Command,
        zxid: i64,
        op: OpCode,
        req: &CreateRequest,
        triggers: &mut Vec<Trigger>,
    ) -> Outcome<(String, Stat)> {
        let mode = CreateMode::from_i32(req.flags).ok_or(ErrorCode::BadArguments)?;
        // Only createTTL carries a ttl; ZooKeeper uses -1 for every other create.
        let ttl = if op == OpCode::CreateTtl { req.ttl } else { -1 };
        if mode.is_ttl() && !self.settings.extended_types_enabled {
            return Err(ErrorCode::Unimplemented);
        }
        // EphemeralType.validateTTL; a createTTL with a non-TTL mode cannot carry a valid TTL (ZooKeeper
        // would fail later, at apply).
        let ttl_ok = if mode.is_ttl() {
            ttl > 0 && ttl <= TTL_MAX_MS
        } else {
            ttl < 0 && op != OpCode::CreateTtl
        };
        if !ttl_ok {
            return Err(ErrorCode::BadArguments);
        }
        self.check_session(cmd.session_id)?;
        if req.path.contains('\0') {
            return Err(ErrorCode::BadArguments);
        }
        let parent_path = parent_of(&req.path).ok_or(ErrorCode::BadArguments)?;
        let acl = fixup_acl(&req.acl, &cmd.auth)?;
        let parent = self.node(parent_path)?;
        if !check_acl(parent.acl(), perms::CREATE, &cmd.auth) {
            return Err(ErrorCode::NoAuth);
        }
        let path = if mode.is_sequential() {
            format!("{}{:010}", req.path, parent.stat().cversion)
        } else {
            req.path.clone()
        };
        validate_path(&path)?;
        if matches!(parent.kind(), NodeKind::Ephemeral(_)) {
            // A node that exists is reported first (ZooKeeper's order); otherwise the tree's create
            // finds it, in the lookup it makes anyway.
            if self.tree.contains(&path) {
                return Err(ErrorCode::NodeExists);
            }
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        let parent_at = parent.at();
        // The node's kind follows the opcode for containers and TTL nodes and the flags for ephemerals,
        // as ZooKeeper's CreateTxn / CreateContainerTxn / CreateTTLTxn do.
        let owner = match op {
            OpCode::CreateContainer => CONTAINER_EPHEMERAL_OWNER,
            OpCode::CreateTtl => TTL_EPHEMERAL_OWNER_MASK | ttl,
            _ if mode.is_ephemeral() => cmd.session_id,
            _ => 0,
        };
        // The tree keeps each distinct ACL list once (ZooKeeper's ACL cache).
        let parent_path: Arc<str> = Arc::from(parent_path);
        let created = self.tree.create_under(
            &path,
            to_data(&req.data),
            Arc::new(acl),
            owner,
            zxid,
            cmd.time_ms,
            Some(parent_at),
        )?;
        let shared: Arc<str> = Arc::from(path.as_str());
        if let NodeKind::Ephemeral(id) = NodeKind::from_owner(owner) {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.ephemerals.insert(shared.clone());
            }
        }
        triggers.push(Trigger {
            path: shared,
            event: EventType::NodeCreated,
            zxid,
            acl: created.acl,
        });
        triggers.push(Trigger {
            path: parent_path,
            event: EventType::NodeChildrenChanged,
            zxid,
            acl: created.parent_acl,
        });
        Ok((path, created.stat))
    }

    /// Delete: session → path has a `/`, no NUL, not special → parent exists → DELETE on the parent →
    /// node exists → version → no children.
    fn delete(
        &mut self,
        cmd: &Command,
        zxid: i64,
        req: &PathVersion,
        triggers: &mut Vec<Trigger>,
    ) -> Outcome<()> {
        self.check_session(cmd.session_id)?;
        let parent = self.node(parent_for_delete(&req.path)?)?;
        if !check_acl(parent.acl(), perms::DELETE, &cmd.auth) {
            return Err(ErrorCode::NoAuth);
        }
        let node = self.node(&req.path)?;
        check_and_inc_version(node.stat().version, req.version)?;
        if node.has_children() {
            return Err(ErrorCode::NotEmpty);
        }
        self.delete_node(Arc::from(req.path.as_str()), zxid, triggers);
        Ok(())
    }

    /// DeleteContainer (the reaper's delete; no session and no ACL check, as in ZooKeeper): path has a
    /// `/`, no NUL, not special → node exists → no children → not an ordinary ephemeral (BadVersion).
    fn delete_container(
        &mut self,
        zxid: i64,
        path: &str,
        triggers: &mut Vec<Trigger>,
    ) -> Outcome<()> {
        parent_for_delete(path)?;
        let node = self.node(path)?;
        if node.has_children() {
            return Err(ErrorCode::NotEmpty);
        }
        if matches!(node.kind(), NodeKind::Ephemeral(_)) {
            return Err(ErrorCode::BadVersion);
        }
        self.delete_node(Arc::from(path), zxid, triggers);
        Ok(())
    }

    /// SetData: session → valid path → node exists → WRITE → version.
    fn set_data(
        &mut self,
        cmd: &Command,
        zxid: i64,
        req: &SetDataRequest,
        triggers: &mut Vec<Trigger>,
    ) -> Outcome<Stat> {
        self.check_session(cmd.session_id)?;
        validate_path(&req.path)?;
        let node = self.node(&req.path)?;
        if !check_acl(node.acl(), perms::WRITE, &cmd.auth) {
            return Err(ErrorCode::NoAuth);
        }
        let version = check_and_inc_version(node.stat().version, req.version)?;
        let (at, old_len) = (node.at(), node.data_len());
        let data = to_data(&req.data);
        let changed = self
            .tree
            .set_data_at(at, old_len, &req.path, data, version, zxid, cmd.time_ms)
            .ok_or(ErrorCode::NoNode)?;
        triggers.push(Trigger {
            path: Arc::from(req.path.as_str()),
            event: EventType::NodeDataChanged,
            zxid,
            acl: changed.acl,
        });
        Ok(changed.stat)
    }

    /// SetACL: session → valid path → ACL fix-up → node exists → ADMIN → aversion. Fires no event.
    fn set_acl(&mut self, cmd: &Command, req: &SetAclRequest) -> Outcome<Stat> {
        self.check_session(cmd.session_id)?;
        validate_path(&req.path)?;
        let acl = fixup_acl(&req.acl, &cmd.auth)?;
        let node = self.node(&req.path)?;
        if !check_acl(node.acl(), perms::ADMIN, &cmd.auth) {
            return Err(ErrorCode::NoAuth);
        }
        let aversion = check_and_inc_version(node.stat().aversion, req.version)?;
        self.tree
            .set_acl(&req.path, Arc::new(acl), aversion)
            .map(|changed| changed.stat)
            .ok_or(ErrorCode::NoNode)
    }

    /// Check (multi only): session → valid path → node exists → READ → version.
    fn check(&self, cmd: &Command, req: &PathVersion) -> Outcome<()> {
        self.check_session(cmd.session_id)?;
        validate_path(&req.path)?;
        let node = self.node(&req.path)?;
        if !check_acl(node.acl(), perms::READ, &cmd.auth) {
            return Err(ErrorCode::NoAuth);
        }
        check_and_inc_version(node.stat().version, req.version).map(|_| ())
    }

    /// Multi: the ops run in order on the live state, each seeing the effects of the ones before. If one
    /// fails, the state goes back to what it was, nothing fires, and the results are ErrorResult(0) for
    /// the ops before it, its code, then RuntimeInconsistency; the reply header's err stays 0. Read ops
    /// in a write multi, and a TTL-mode sub-create that is not a createTTL (see
    /// [`multi_create_opcode`]), make the whole request a MarshallingError with nothing changed
    /// (ZooKeeper's prep fails with something other than a KeeperException); the zxid is still used.
    fn multi(
        &mut self,
        cmd: &Command,
        zxid: i64,
        ops: &[MultiOp],
        triggers: &mut Vec<Trigger>,
    ) -> Outcome<Response> {
        let decodable = ops.iter().all(|op| match op {
            MultiOp::Create { op, .. } => is_create_op(*op),
            MultiOp::Delete(_) | MultiOp::SetData(_) | MultiOp::Check(_) => true,
            MultiOp::GetChildren(_) | MultiOp::GetData(_) => false,
        });
        if !decodable {
            return Err(ErrorCode::MarshallingError);
        }
        let before = (self.tree.clone(), self.sessions.clone());
        let mut results = Vec::with_capacity(ops.len());
        let mut multi_triggers = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match self.multi_op(cmd, zxid, op, &mut multi_triggers) {
                Ok(r) => results.push(r),
                Err(ErrorCode::MarshallingError) => {
                    // Not a per-op failure: the whole request fails (ZooKeeper's prep throws something
                    // other than a KeeperException), its zxid still used.
                    (self.tree, self.sessions) = before;
                    return Err(ErrorCode::MarshallingError);
                }
                Err(code) => {
                    (self.tree, self.sessions) = before;
                    let mut failed: Vec<MultiResult> = vec![MultiResult::Error(0); i];
                    failed.push(MultiResult::Error(code.into()));
                    failed.resize(
                        ops.len(),
                        MultiResult::Error(ErrorCode::RuntimeInconsistency.into()),
                    );
                    return Ok(Response::Multi(failed));
                }
            }
        }
        triggers.append(&mut multi_triggers);
        Ok(Response::Multi(results))
    }

    fn multi_op(
        &mut self,
        cmd: &Command,
        zxid: i64,
        op: &MultiOp,
        triggers: &mut Vec<Trigger>,
    ) -> Outcome<MultiResult> {
        match op {
            MultiOp::Create { op, req } => {
                let op = multi_create_opcode(*op, req.flags)?;
                let (path, stat) = self.create(cmd, zxid, op, req, triggers)?;
                Ok(if op == OpCode::Create {
                    MultiResult::Create { path }
                } else {
                    MultiResult::Create2 { path, stat }
                })
            }
            MultiOp::Delete(req) => {
                self.delete(cmd, zxid, req, triggers)?;
                Ok(MultiResult::Delete)
            }
            MultiOp::SetData(req) => {
                let stat = self.set_data(cmd, zxid, req, triggers)?;
                Ok(MultiResult::SetData { stat })
            }
            MultiOp::Check(req) => {
                self.check(cmd, req)?;
                Ok(MultiResult::Check)
            }
            MultiOp::GetChildren(_) | MultiOp::GetData(_) => Err(ErrorCode::MarshallingError),
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Reads.

    /// Answers a read as FinalRequestProcessor does: exists, getData, getChildren, getChildren2, getACL,
    /// getAllChildrenNumber, getEphemerals (of `session_id`), multiRead and sync. Returns `(err, body)`;
    /// the body is `Response::Empty` when err ≠ 0. Any other request gets Unimplemented.
    ///
    /// Watches are not registered here: the caller registers them, under the same serialization as
    /// apply, when [`crate::watches::watch_for_read`] says so (exists also on NoNode; never on NoAuth).
    ///
    /// The one error reply with a body: a multiRead of write operations only is MarshallingError with
    /// an empty multi response (ZooKeeper fails on the first operation after creating the response);
    /// one that mixes both kinds has none (ZooKeeper fails while decoding it).
    pub fn read(&self, session_id: i64, req: &Request, auth: &[Id]) -> (i32, Response) {
        if let Request::MultiRead(ops) = req {
            let reads = ops
                .iter()
                .filter(|op| matches!(op, MultiOp::GetChildren(_) | MultiOp::GetData(_)))
                .count();
            if reads == 0 && !ops.is_empty() {
                return (
                    ErrorCode::MarshallingError.into(),
                    Response::Multi(Vec::new()),
                );
            }
            if reads != ops.len() {
                return (ErrorCode::MarshallingError.into(), Response::Empty);
            }
        }
        match self.read_inner(session_id, req, auth) {
            Ok(r) => (0, r),
            Err(code) => (code.into(), Response::Empty),
        }
    }

    /// The readable node at `path`: NoNode if missing, NoAuth without `perm`. Reads do not validate
    /// paths; `""` is the root (ZooKeeper's node map holds the root under both `""` and `/`).
    fn readable(&self, path: &str, perm: i32, auth: &[Id]) -> Outcome<NodeRef<'_>> {
        let node = self.node(read_path(path))?;
        if !check_acl(node.acl(), perm, auth) {
            return Err(ErrorCode::NoAuth);
        }
        Ok(node)
    }

    fn children_of(node: NodeRef<'_>) -> Vec<String> {
        node.sorted_children()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn read_inner(&self, session_id: i64, req: &Request, auth: &[Id]) -> Outcome<Response> {
        match req {
            Request::Exists(r) => {
                // ZooKeeper 3.8.0 checks no ACL for exists (ZOOKEEPER-2590 added one in 3.8.1).
                if r.path.contains('\0') {
                    return Err(ErrorCode::BadArguments);
                }
                let node = self.node(read_path(&r.path))?;
                Ok(Response::Stat(node.client_stat()))
            }
            Request::GetData(r) => {
                let node = self.readable(&r.path, perms::READ, auth)?;
                Ok(Response::GetData {
                    data: node.data_vec(),
                    stat: node.client_stat(),
                })
            }
            Request::GetChildren(r) => {
                let node = self.readable(&r.path, perms::READ, auth)?;
                Ok(Response::GetChildren {
                    children: Self::children_of(node),
                })
            }
            Request::GetChildren2(r) => {
                let node = self.readable(&r.path, perms::READ, auth)?;
                Ok(Response::GetChildren2 {
                    children: Self::children_of(node),
                    stat: node.client_stat(),
                })
            }
            Request::GetAcl(path) => {
                let node = self.readable(path, perms::READ | perms::ADMIN, auth)?;
                let acl = if check_acl(node.acl(), perms::ADMIN, auth) {
                    node.acl().to_vec()
                } else {
                    mask_digest_ids(node.acl())
                };
                Ok(Response::GetAcl {
                    acl,
                    stat: node.client_stat(),
                })
            }
            Request::GetAllChildrenNumber(path) => {
                self.readable(path, perms::READ, auth)?;
                // `getAllChildrenNumber` counts the keys starting with `path + "/"`: for "" that is
                // every node, the root included.
                let n = if path.is_empty() {
                    self.tree.descendant_count(path::ROOT) + 1
                } else {
                    self.tree.descendant_count(path)
                };
                Ok(Response::AllChildrenNumber(
                    i32::try_from(n).unwrap_or(i32::MAX),
                ))
            }
            Request::GetEphemerals(prefix) => {
                let all = self.ephemerals(session_id);
                let trimmed = java_trim(prefix);
                let paths = if trimmed.is_empty() || trimmed == "/" {
                    all
                } else {
                    all.into_iter()
                        .filter(|p| p.starts_with(prefix.as_str()))
                        .collect()
                };
                Ok(Response::GetEphemerals { paths })
            }
            Request::MultiRead(ops) => {
                let mut results = Vec::with_capacity(ops.len());
                for op in ops {
                    let r = match op {
                        MultiOp::GetChildren(path) => {
                            self.readable(path, perms::READ, auth).map(|n| {
                                MultiResult::GetChildren {
                                    children: Self::children_of(n),
                                }
                            })
                        }
                        MultiOp::GetData(path) => {
                            self.readable(path, perms::READ, auth)
                                .map(|n| MultiResult::GetData {
                                    data: n.data_vec(),
                                    stat: n.client_stat(),
                                })
                        }
                        _ => return Err(ErrorCode::MarshallingError),
                    };
                    results.push(r.unwrap_or_else(|code| MultiResult::Error(code.into())));
                }
                Ok(Response::Multi(results))
            }
            Request::Sync(path) => Ok(Response::Sync { path: path.clone() }),
            _ => Err(ErrorCode::Unimplemented),
        }
    }
}

#[cfg(test)]
mod tests;
