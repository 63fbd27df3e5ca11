//! An async (tokio) ZooKeeper client.
//!
//! [`Client::connect`] parses a connect string (`host1:port,host2:port/chroot`), establishes a session and
//! returns the client with a [`StateStream`] of session state changes. A background task owns the socket:
//! it pipelines requests, matches replies strictly in order, pings when idle for a third of the session
//! timeout, treats two thirds without data as connection loss, and reconnects to the next host with the
//! session's id and password. One-shot watches (`*_w` calls) resolve once and are re-armed on reconnect
//! (the server sends the events they missed); persistent watches ([`Client::add_watch`]) are streams,
//! re-added on reconnect and then given [`PersistentEvent::Resync`], since the protocol re-adds them
//! without catch-up events.
//!
//! Errors say what to do next: [`Error::ConnectionLoss`] — the operation may or may not have happened,
//! the session may still be alive; retry once connected (idempotently: see the lock recipe's protected
//! names). [`Error::SessionExpired`] — the session and its ephemeral nodes and watches are gone: start
//! over with a new client. [`Error::SessionMoved`] — another connection took the session over.
//!
//! ```no_run
//! use std::time::Duration;
//! use oxkeeper_client::{acl, AddWatchMode, Client, CreateMode, PersistentEvent, State};
//!
//! # async fn demo() -> oxkeeper_client::Result<()> {
//! let (zk, mut states) = Client::connect("127.0.0.1:2181,127.0.0.1:2182/app", Duration::from_secs(10)).await?;
//! zk.create("/config", b"v1", &acl::open_unsafe(), CreateMode::Persistent).await?;
//! let (data, stat, changed) = zk.get_data_w("/config").await?;
//! println!("{} (version {})", String::from_utf8_lossy(&data), stat.version);
//! let event = changed.await; // fires once: NodeDataChanged, NodeDeleted, or the session's end
//!
//! let mut tree = zk.add_watch("/", AddWatchMode::PersistentRecursive).await?;
//! while let Some(ev) = tree.next().await {
//!     match ev {
//!         PersistentEvent::Event(e) => println!("{:?} {}", e.event_type, e.path),
//!         PersistentEvent::Resync => { /* reconnected: re-read what you track */ }
//!     }
//! }
//! tokio::spawn(async move {
//!     while let Some(s) = states.next().await {
//!         if s == State::Expired { /* start over */ }
//!     }
//! });
//! zk.close().await
//! # }
//! ```

mod conn;
pub mod connect_string;
mod error;
pub mod recipes;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use oxkeeper_proto::records::{
    AddWatchRequest, CreateRequest, MultiOp, MultiResult, PathVersion, PathWatch, Request,
    Response, SetAclRequest, SetDataRequest,
};
use rand::seq::SliceRandom;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use conn::{Cmd, Shared, Task, WatchKind, WatchReg, WatchTx};
pub use error::{Error, Result};
pub use oxkeeper_proto::records::{Acl, ClientInfo, Id, Stat};
pub use oxkeeper_proto::{perms, AddWatchMode, CreateMode, EventType, KeeperState, WatcherType};

/// Notifications kept for a slow reader of [`Client::notifications`].
const NOTIFICATIONS_BUFFERED: usize = 1024;

/// Any version, for delete / setData / setACL / check.
pub const ANY_VERSION: i32 = -1;

/// The session's state, as the [`StateStream`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Connecting,
    Connected,
    ConnectedReadOnly,
    /// The connection dropped; the client is reconnecting and the session may still be alive.
    Disconnected,
    /// The session is gone (final).
    Expired,
    /// The server refused our credentials (final).
    AuthFailed,
    /// The client was closed, or never got a session (final).
    Closed,
}

impl State {
    pub fn is_connected(self) -> bool {
        matches!(self, State::Connected | State::ConnectedReadOnly)
    }
    /// No more transitions after this one.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Expired | State::AuthFailed | State::Closed)
    }
}

/// Every state transition in order (a `broadcast` receiver: a slow reader may miss some, and then sees
/// the current state next).
pub struct StateStream {
    rx: broadcast::Receiver<State>,
    current: watch::Receiver<State>,
}

impl StateStream {
    /// The next transition; `None` once the client task has ended and every transition was read.
    pub async fn next(&mut self) -> Option<State> {
        match self.rx.recv().await {
            Ok(s) => Some(s),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(*self.current.borrow()),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
    /// The current state.
    pub fn current(&self) -> State {
        *self.current.borrow()
    }
    /// Waits for the next transition to `want` (ignoring others); `None` if the stream ended first.
    pub async fn wait_for(&mut self, want: State) -> Option<State> {
        loop {
            let s = self.next().await?;
            if s == want {
                return Some(s);
            }
        }
    }
}

/// A watch event delivered to a one-shot registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedEvent {
    /// `EventType::None` when the session ended before the watch fired (`state` says how).
    pub event_type: EventType,
    pub state: KeeperState,
    /// Relative to the chroot.
    pub path: String,
}

/// What a persistent watch ([`Client::add_watch`]) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistentEvent {
    /// A change: NodeCreated, NodeDeleted, NodeDataChanged, NodeChildrenChanged (the latter only for
    /// `AddWatchMode::Persistent`, on the watched node itself); `PersistentWatchRemoved` after
    /// [`Client::remove_watches`]; `EventType::None` with the final state when the session ends.
    Event(WatchedEvent),
    /// The connection was lost and the watch has been re-added on a new one. Changes made in between were
    /// NOT reported (ZooKeeper re-adds persistent watches without catch-up events): re-read what you track.
    Resync,
}

/// A persistent watch: a stream of [`PersistentEvent`]s, in the order the server sent them.
pub struct PersistentWatch {
    rx: mpsc::UnboundedReceiver<PersistentEvent>,
}

impl PersistentWatch {
    /// The next event; `None` once the watch was removed or the session ended (and every event was read).
    pub async fn next(&mut self) -> Option<PersistentEvent> {
        self.rx.recv().await
    }

    /// The next event if one is already here, without waiting.
    pub fn try_next(&mut self) -> Option<PersistentEvent> {
        self.rx.try_recv().ok()
    }
}

/// How to connect: see [`Client::connect_with`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The session timeout asked for; the server may negotiate it within its bounds.
    pub session_timeout: Duration,
    /// Accept a read-only server (one cut off from its ensemble): the state is then ConnectedReadOnly and
    /// writes fail with `NotReadOnly`.
    pub read_only: bool,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            session_timeout: Duration::from_secs(30),
            read_only: false,
        }
    }
}

/// The result of one operation of a [`MultiRead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    Data { data: Vec<u8>, stat: Stat },
    Children { children: Vec<String> },
    Error(Error),
}

/// Reads run together by [`Client::multi_read`]; each reports its own result.
#[derive(Debug, Clone, Default)]
pub struct MultiRead {
    ops: Vec<MultiOp>,
    invalid: Option<Error>,
}

impl MultiRead {
    pub fn new() -> MultiRead {
        MultiRead::default()
    }
    pub fn get_data(mut self, path: &str) -> MultiRead {
        self.check(path);
        self.ops.push(MultiOp::GetData(path.to_string()));
        self
    }
    pub fn get_children(mut self, path: &str) -> MultiRead {
        self.check(path);
        self.ops.push(MultiOp::GetChildren(path.to_string()));
        self
    }
    fn check(&mut self, path: &str) {
        if let (None, Err(e)) = (&self.invalid, validate_path(path, false)) {
            self.invalid = Some(e);
        }
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A one-shot watch: resolves once, with the event that fired it or the end of the session.
pub struct Watch {
    rx: oneshot::Receiver<WatchedEvent>,
    path: String,
}

impl Future for Watch {
    type Output = WatchedEvent;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WatchedEvent> {
        let path = self.path.clone();
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or(WatchedEvent {
                event_type: EventType::None,
                state: KeeperState::Closed,
                path,
            })
        })
    }
}

/// Helpers for common ACLs.
pub mod acl {
    use super::{perms, Acl, Id};
    /// world:anyone with every permission.
    pub fn open_unsafe() -> Vec<Acl> {
        vec![Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }]
    }
    /// world:anyone, read only.
    pub fn read_unsafe() -> Vec<Acl> {
        vec![Acl {
            perms: perms::READ,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }]
    }
    /// Every permission for whoever the session authenticated as (auth scheme).
    pub fn creator_all() -> Vec<Acl> {
        vec![Acl {
            perms: perms::ALL,
            id: Id {
                scheme: "auth".into(),
                id: String::new(),
            },
        }]
    }
}

/// One operation's result inside a successful multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Create { path: String, stat: Option<Stat> },
    Delete,
    SetData { stat: Stat },
    Check,
}

/// A multi builder: every operation succeeds or none does.
#[derive(Debug, Clone, Default)]
pub struct Multi {
    ops: Vec<MultiOp>,
    /// The first invalid argument given to the builder (reported by [`Client::multi`]).
    invalid: Option<Error>,
}

impl Multi {
    pub fn new() -> Multi {
        Multi::default()
    }
    pub fn create(mut self, path: &str, data: &[u8], acl: &[Acl], mode: CreateMode) -> Multi {
        if let Err(e) = validate_path(path, mode.is_sequential()) {
            self.invalid.get_or_insert(e);
        }
        let op = if mode.is_container() {
            oxkeeper_proto::OpCode::CreateContainer
        } else if mode.is_ttl() {
            self.invalid
                .get_or_insert(Error::BadArguments("use create_ttl for TTL modes".into()));
            oxkeeper_proto::OpCode::CreateTtl
        } else {
            oxkeeper_proto::OpCode::Create2
        };
        self.ops.push(MultiOp::Create {
            op,
            req: CreateRequest {
                path: path.to_string(),
                data: Some(data.to_vec()),
                acl: acl.to_vec(),
                flags: mode.as_i32(),
                ttl: -1,
            },
        });
        self
    }
    pub fn create_ttl(
        mut self,
        path: &str,
        data: &[u8],
        acl: &[Acl],
        mode: CreateMode,
        ttl: Duration,
    ) -> Multi {
        match ttl_request(path, data, acl, mode, ttl) {
            Ok(req) => self.ops.push(MultiOp::Create {
                op: oxkeeper_proto::OpCode::CreateTtl,
                req,
            }),
            Err(e) => {
                self.invalid.get_or_insert(e);
            }
        }
        self
    }
    pub fn delete(mut self, path: &str, version: i32) -> Multi {
        if let Err(e) = validate_path(path, false) {
            self.invalid.get_or_insert(e);
        }
        self.ops.push(MultiOp::Delete(PathVersion {
            path: path.to_string(),
            version,
        }));
        self
    }
    pub fn set_data(mut self, path: &str, data: &[u8], version: i32) -> Multi {
        if let Err(e) = validate_path(path, false) {
            self.invalid.get_or_insert(e);
        }
        self.ops.push(MultiOp::SetData(SetDataRequest {
            path: path.to_string(),
            data: Some(data.to_vec()),
            version,
        }));
        self
    }
    pub fn check(mut self, path: &str, version: i32) -> Multi {
        if let Err(e) = validate_path(path, false) {
            self.invalid.get_or_insert(e);
        }
        self.ops.push(MultiOp::Check(PathVersion {
            path: path.to_string(),
            version,
        }));
        self
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn ttl_request(
    path: &str,
    data: &[u8],
    acl: &[Acl],
    mode: CreateMode,
    ttl: Duration,
) -> Result<CreateRequest> {
    validate_path(path, mode.is_sequential())?;
    if !mode.is_ttl() {
        return Err(Error::BadArguments(format!("{mode:?} is not a TTL mode")));
    }
    let ms = ttl.as_millis();
    if ms == 0 || ms > oxkeeper_proto::TTL_MAX_MS as u128 {
        return Err(Error::BadArguments(format!("TTL {ms} ms out of range")));
    }
    Ok(CreateRequest {
        path: path.to_string(),
        data: Some(data.to_vec()),
        acl: acl.to_vec(),
        flags: mode.as_i32(),
        ttl: ms as i64,
    })
}

/// Checks a path as ZooKeeper's `PathUtils.validatePath` does (a sequential create may end in `/`).
pub fn validate_path(path: &str, sequential: bool) -> Result<()> {
    let bad = |why: &str| Err(Error::BadArguments(format!("path {path:?}: {why}")));
    if !path.starts_with('/') {
        return bad("must start with /");
    }
    if path == "/" {
        // ZooKeeper validates a sequential path with a digit appended: "/1" is fine.
        return Ok(());
    }
    let body = if sequential && path.ends_with('/') {
        &path[1..path.len() - 1]
    } else if path.ends_with('/') {
        return bad("must not end with /");
    } else {
        &path[1..]
    };
    if sequential && body.is_empty() {
        return Ok(());
    }
    for comp in body.split('/') {
        if comp.is_empty() {
            return bad("empty component");
        }
        if comp == "." || comp == ".." {
            return bad("relative component");
        }
        if comp.chars().any(|c| {
            c == '\0'
                || ('\u{1}'..='\u{1f}').contains(&c)
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || ('\u{e000}'..='\u{f8ff}').contains(&c)
                || ('\u{fff0}'..='\u{ffff}').contains(&c)
        }) {
            return bad("invalid character");
        }
    }
    Ok(())
}

pub(crate) fn strip_chroot(chroot: Option<&str>, path: String) -> String {
    match chroot {
        None => path,
        Some(c) => match path.strip_prefix(c) {
            Some("") => "/".to_string(),
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            _ => path,
        },
    }
}

/// A ZooKeeper session. Cheap to clone: clones share the session; the session is closed by [`Client::close`]
/// or when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Cmd>,
    chroot: Option<Arc<str>>,
    shared: Arc<Shared>,
    state: watch::Receiver<State>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &format_args!("{:#x}", self.session_id()))
            .field("chroot", &self.chroot)
            .finish()
    }
}

impl Client {
    /// Connects to one of the hosts (shuffled) and establishes a session with `session_timeout` (the server
    /// may negotiate it within its bounds). Fails with `ConnectionLoss` if no host gives a session within
    /// 4/3 of the timeout.
    pub async fn connect(
        connect_string: &str,
        session_timeout: Duration,
    ) -> Result<(Client, StateStream)> {
        let options = ConnectOptions {
            session_timeout,
            ..ConnectOptions::default()
        };
        Client::connect_with(connect_string, options).await
    }

    /// [`Client::connect`] with options.
    pub async fn connect_with(
        connect_string: &str,
        options: ConnectOptions,
    ) -> Result<(Client, StateStream)> {
        let session_timeout = options.session_timeout;
        let cs = connect_string::parse(connect_string)?;
        if session_timeout.is_zero() {
            return Err(Error::BadArguments("zero session timeout".into()));
        }
        let mut hosts = cs.hosts;
        hosts.shuffle(&mut rand::thread_rng());
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(State::Connecting);
        let (events_tx, events_rx) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            session_id: AtomicI64::new(0),
            timeout_ms: AtomicI64::new(0),
            terminal: Mutex::new(None),
            events: Mutex::new(Some(events_tx.clone())),
            notifications: broadcast::channel(NOTIFICATIONS_BUFFERED).0,
        });
        let task = Task::new(
            hosts,
            cs.chroot.clone(),
            options,
            rx,
            state_tx,
            events_tx,
            shared.clone(),
        );
        tokio::spawn(task.run());
        let mut stream = StateStream {
            rx: events_rx,
            current: state_rx.clone(),
        };
        loop {
            match stream.next().await {
                Some(s) if s.is_connected() => break,
                Some(State::Expired) => return Err(Error::SessionExpired),
                Some(State::AuthFailed) => return Err(Error::AuthFailed),
                Some(State::Closed) | None => return Err(Error::ConnectionLoss),
                Some(_) => {}
            }
        }
        let client = Client {
            tx,
            chroot: cs.chroot.map(Arc::from),
            shared,
            state: state_rx,
        };
        Ok((client, stream))
    }

    /// The session id (0 before the first handshake).
    pub fn session_id(&self) -> i64 {
        self.shared.session_id.load(Ordering::Relaxed)
    }

    /// The session timeout the server granted.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.timeout_ms.load(Ordering::Relaxed).max(0) as u64)
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Every watch notification of this session from now on, once each however many of its watches it
    /// fires (as ZooKeeper's Java client hands its default watcher one event for all of them), plus the
    /// removal events of [`Client::remove_watches`] once per kind. A `broadcast` receiver: a reader more
    /// than 1024 events behind is told it lagged. Each watch still gets its own event too.
    pub fn notifications(&self) -> broadcast::Receiver<WatchedEvent> {
        self.shared.notifications.subscribe()
    }

    /// Another stream of state transitions, from now on.
    pub fn state_stream(&self) -> StateStream {
        let events = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match &*events {
            Some(tx) => tx.subscribe(),
            // The session has ended: a stream with nothing more to say.
            None => broadcast::channel(1).1,
        };
        StateStream {
            rx,
            current: self.state.clone(),
        }
    }

    fn terminal_error(&self) -> Error {
        self.shared
            .terminal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or(Error::Closed)
    }

    fn full_path(&self, path: &str, sequential: bool) -> Result<String> {
        validate_path(path, sequential)?;
        Ok(match &self.chroot {
            None => path.to_string(),
            Some(c) if path == "/" => c.to_string(),
            Some(c) => format!("{c}{path}"),
        })
    }

    fn strip(&self, path: String) -> String {
        strip_chroot(self.chroot.as_deref(), path)
    }

    async fn call(&self, req: Request, watch: Option<WatchReg>) -> Result<Response> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Request { req, reply, watch }).is_err() {
            return Err(self.terminal_error());
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.terminal_error()),
        }
    }

    async fn call_watched(
        &self,
        req: Request,
        kind: WatchKind,
        path: String,
    ) -> Result<(Response, Watch)> {
        let (tx, rx) = oneshot::channel();
        let reg = WatchReg {
            kind,
            path: path.clone(),
            tx: WatchTx::Once(tx),
        };
        let resp = self.call(req, Some(reg)).await;
        let watch = Watch {
            rx,
            path: self.strip(path),
        };
        Ok((resp?, watch))
    }

    fn unexpected(resp: Response) -> Error {
        Error::Protocol(format!("unexpected reply {resp:?}"))
    }

    /// Creates a node (any mode but the TTL ones; see [`Client::create_ttl`]). Returns the created path
    /// (with the sequence number, relative to the chroot) and its Stat.
    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        acl: &[Acl],
        mode: CreateMode,
    ) -> Result<(String, Stat)> {
        if mode.is_ttl() {
            return Err(Error::BadArguments("use create_ttl for TTL modes".into()));
        }
        let full = self.full_path(path, mode.is_sequential())?;
        let op = if mode.is_container() {
            oxkeeper_proto::OpCode::CreateContainer
        } else {
            oxkeeper_proto::OpCode::Create2
        };
        let req = CreateRequest {
            path: full,
            data: Some(data.to_vec()),
            acl: acl.to_vec(),
            flags: mode.as_i32(),
            ttl: -1,
        };
        match self.call(Request::Create { op, req }, None).await? {
            Response::Create2 { path, stat } => Ok((self.strip(path), stat)),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Creates a node with a TTL (`PersistentWithTtl` or `PersistentSequentialWithTtl`; the server must have
    /// extended types enabled).
    pub async fn create_ttl(
        &self,
        path: &str,
        data: &[u8],
        acl: &[Acl],
        mode: CreateMode,
        ttl: Duration,
    ) -> Result<(String, Stat)> {
        let full = self.full_path(path, mode.is_sequential())?;
        let req = ttl_request(&full, data, acl, mode, ttl)?;
        let op = oxkeeper_proto::OpCode::CreateTtl;
        match self.call(Request::Create { op, req }, None).await? {
            Response::Create2 { path, stat } => Ok((self.strip(path), stat)),
            r => Err(Self::unexpected(r)),
        }
    }

    pub async fn delete(&self, path: &str, version: i32) -> Result<()> {
        let path = self.full_path(path, false)?;
        self.call(Request::Delete(PathVersion { path, version }), None)
            .await
            .map(|_| ())
    }

    /// The node's Stat, or `None` if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>> {
        let path = self.full_path(path, false)?;
        let req = Request::Exists(PathWatch { path, watch: false });
        match self.call(req, None).await {
            Ok(Response::Stat(s)) => Ok(Some(s)),
            Ok(r) => Err(Self::unexpected(r)),
            Err(Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `exists` with a watch: fires on creation if the node is absent, on change or deletion if present.
    pub async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, Watch)> {
        let full = self.full_path(path, false)?;
        let req = Request::Exists(PathWatch {
            path: full.clone(),
            watch: true,
        });
        let (tx, rx) = oneshot::channel();
        let reg = WatchReg {
            kind: WatchKind::Exists,
            path: full.clone(),
            tx: WatchTx::Once(tx),
        };
        let watch = Watch {
            rx,
            path: path.to_string(),
        };
        match self.call(req, Some(reg)).await {
            Ok(Response::Stat(s)) => Ok((Some(s), watch)),
            Ok(r) => Err(Self::unexpected(r)),
            Err(Error::NoNode) => Ok((None, watch)),
            Err(e) => Err(e),
        }
    }

    pub async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat)> {
        let path = self.full_path(path, false)?;
        match self
            .call(Request::GetData(PathWatch { path, watch: false }), None)
            .await?
        {
            Response::GetData { data, stat } => Ok((data.unwrap_or_default(), stat)),
            r => Err(Self::unexpected(r)),
        }
    }

    /// `get_data` with a watch that fires on the node's change or deletion.
    pub async fn get_data_w(&self, path: &str) -> Result<(Vec<u8>, Stat, Watch)> {
        let full = self.full_path(path, false)?;
        let req = Request::GetData(PathWatch {
            path: full.clone(),
            watch: true,
        });
        match self.call_watched(req, WatchKind::Data, full).await? {
            (Response::GetData { data, stat }, w) => Ok((data.unwrap_or_default(), stat, w)),
            (r, _) => Err(Self::unexpected(r)),
        }
    }

    pub async fn set_data(&self, path: &str, data: &[u8], version: i32) -> Result<Stat> {
        let path = self.full_path(path, false)?;
        let req = Request::SetData(SetDataRequest {
            path,
            data: Some(data.to_vec()),
            version,
        });
        match self.call(req, None).await? {
            Response::Stat(s) => Ok(s),
            r => Err(Self::unexpected(r)),
        }
    }

    pub async fn get_children(&self, path: &str) -> Result<Vec<String>> {
        self.get_children2(path).await.map(|(c, _)| c)
    }

    /// The children and the parent's Stat.
    pub async fn get_children2(&self, path: &str) -> Result<(Vec<String>, Stat)> {
        let path = self.full_path(path, false)?;
        let req = Request::GetChildren2(PathWatch { path, watch: false });
        match self.call(req, None).await? {
            Response::GetChildren2 { children, stat } => Ok((children, stat)),
            r => Err(Self::unexpected(r)),
        }
    }

    /// `get_children2` with a watch that fires when a child is added or removed, or the node is deleted.
    pub async fn get_children_w(&self, path: &str) -> Result<(Vec<String>, Stat, Watch)> {
        let full = self.full_path(path, false)?;
        let req = Request::GetChildren2(PathWatch {
            path: full.clone(),
            watch: true,
        });
        match self.call_watched(req, WatchKind::Child, full).await? {
            (Response::GetChildren2 { children, stat }, w) => Ok((children, stat, w)),
            (r, _) => Err(Self::unexpected(r)),
        }
    }

    pub async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)> {
        let path = self.full_path(path, false)?;
        match self.call(Request::GetAcl(path), None).await? {
            Response::GetAcl { acl, stat } => Ok((acl, stat)),
            r => Err(Self::unexpected(r)),
        }
    }

    pub async fn set_acl(&self, path: &str, acl: &[Acl], version: i32) -> Result<Stat> {
        let path = self.full_path(path, false)?;
        let req = Request::SetAcl(SetAclRequest {
            path,
            acl: acl.to_vec(),
            version,
        });
        match self.call(req, None).await? {
            Response::Stat(s) => Ok(s),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Waits until the server this client is connected to has caught up with the leader for `path`.
    pub async fn sync(&self, path: &str) -> Result<String> {
        let path = self.full_path(path, false)?;
        match self.call(Request::Sync(path), None).await? {
            Response::Sync { path } => Ok(self.strip(path)),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Runs every operation of `multi` atomically. On failure, `Error::Multi` names the first operation
    /// that failed.
    pub async fn multi(&self, multi: Multi) -> Result<Vec<OpResult>> {
        if let Some(e) = multi.invalid {
            return Err(e);
        }
        let ops = multi
            .ops
            .into_iter()
            .map(|op| self.chroot_op(op))
            .collect::<Vec<_>>();
        let results = match self.call(Request::Multi(ops), None).await? {
            Response::Multi(r) => r,
            r => return Err(Self::unexpected(r)),
        };
        let mut out = Vec::with_capacity(results.len());
        let mut first_failure = None;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                MultiResult::Create { path } => out.push(OpResult::Create {
                    path: self.strip(path),
                    stat: None,
                }),
                MultiResult::Create2 { path, stat } => out.push(OpResult::Create {
                    path: self.strip(path),
                    stat: Some(stat),
                }),
                MultiResult::Delete => out.push(OpResult::Delete),
                MultiResult::SetData { stat } => out.push(OpResult::SetData { stat }),
                MultiResult::Check => out.push(OpResult::Check),
                MultiResult::Error(code) => {
                    // Operations after the failing one report RuntimeInconsistency; before it, Ok.
                    let bad = code != 0
                        && code != oxkeeper_proto::ErrorCode::RuntimeInconsistency.as_i32();
                    if first_failure.is_none() && bad {
                        first_failure = Some((i, code));
                    }
                }
                MultiResult::GetChildren { .. } | MultiResult::GetData { .. } => {
                    return Err(Error::Protocol("read result in a multi".into()))
                }
            }
        }
        match first_failure {
            Some((index, code)) => Err(Error::Multi {
                index,
                error: Box::new(Error::from_code(code)),
            }),
            None => Ok(out),
        }
    }

    fn chroot_op(&self, op: MultiOp) -> MultiOp {
        let Some(c) = &self.chroot else {
            return op;
        };
        let fix = |p: String| {
            if p == "/" {
                c.to_string()
            } else {
                format!("{c}{p}")
            }
        };
        match op {
            MultiOp::Create { op, mut req } => {
                req.path = fix(req.path);
                MultiOp::Create { op, req }
            }
            MultiOp::Delete(mut pv) => {
                pv.path = fix(pv.path);
                MultiOp::Delete(pv)
            }
            MultiOp::SetData(mut r) => {
                r.path = fix(r.path);
                MultiOp::SetData(r)
            }
            MultiOp::Check(mut pv) => {
                pv.path = fix(pv.path);
                MultiOp::Check(pv)
            }
            MultiOp::GetChildren(p) => MultiOp::GetChildren(fix(p)),
            MultiOp::GetData(p) => MultiOp::GetData(fix(p)),
        }
    }

    /// The session's ephemeral nodes whose path starts with `prefix` (relative to the chroot).
    pub async fn get_ephemerals(&self, prefix: &str) -> Result<Vec<String>> {
        let full = match &self.chroot {
            None => prefix.to_string(),
            Some(c) if prefix == "/" => c.to_string(),
            Some(c) => format!("{c}{prefix}"),
        };
        match self.call(Request::GetEphemerals(full), None).await? {
            Response::GetEphemerals { paths } => {
                Ok(paths.into_iter().map(|p| self.strip(p)).collect())
            }
            r => Err(Self::unexpected(r)),
        }
    }

    /// The number of descendants of `path` (not counting itself).
    pub async fn get_all_children_number(&self, path: &str) -> Result<i32> {
        let path = self.full_path(path, false)?;
        match self.call(Request::GetAllChildrenNumber(path), None).await? {
            Response::AllChildrenNumber(n) => Ok(n),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Adds credentials to the session (e.g. `("digest", b"user:password")`); re-sent on every reconnect.
    /// A refusal is final: the state becomes AuthFailed.
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Auth {
            scheme: scheme.to_string(),
            auth: auth.to_vec(),
            reply,
        };
        if self.tx.send(cmd).is_err() {
            return Err(self.terminal_error());
        }
        rx.await.unwrap_or_else(|_| Err(self.terminal_error()))
    }

    /// Adds a persistent watch on `path` (ZooKeeper 3.6+): it stays until removed, and is re-added on every
    /// reconnect (followed by [`PersistentEvent::Resync`]). `PersistentRecursive` also covers every
    /// descendant (created, deleted and data events; no child events).
    ///
    /// A ZooKeeper 3.8 server keeps one watch per (session, path): a one-shot watch (`*_w`) or another
    /// `add_watch` on the same path replaces this one on the server. Keep one kind per path.
    pub async fn add_watch(&self, path: &str, mode: AddWatchMode) -> Result<PersistentWatch> {
        let full = self.full_path(path, false)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let kind = match mode {
            AddWatchMode::Persistent => WatchKind::Persistent,
            AddWatchMode::PersistentRecursive => WatchKind::PersistentRecursive,
        };
        let reg = WatchReg {
            kind,
            path: full.clone(),
            tx: WatchTx::Persistent(tx),
        };
        let req = Request::AddWatch(AddWatchRequest {
            path: full,
            mode: mode.as_i32(),
        });
        self.call(req, Some(reg)).await?;
        Ok(PersistentWatch { rx })
    }

    async fn watches_call(
        &self,
        path: &str,
        kind: WatcherType,
        remove: Option<bool>,
    ) -> Result<()> {
        let path = self.full_path(path, false)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Watches {
            path,
            kind,
            remove,
            reply,
        };
        if self.tx.send(cmd).is_err() {
            return Err(self.terminal_error());
        }
        match rx.await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(self.terminal_error()),
        }
    }

    /// Removes this session's watches of `kind` at `path`, here and on the server (`NoWatcher` if there
    /// are none here). Each removed one-shot watch resolves with DataWatchRemoved / ChildWatchRemoved; a
    /// removed persistent watch gets PersistentWatchRemoved and ends. With `local`, they are removed here
    /// whatever the server answers (e.g. while it is unreachable).
    ///
    /// `Persistent` and `PersistentRecursive` are sent as `Any` (ZooKeeper 3.8 servers know no other way
    /// to remove them) and so remove every watch this session has at `path`.
    pub async fn remove_watches(&self, path: &str, kind: WatcherType, local: bool) -> Result<()> {
        self.watches_call(path, kind, Some(local)).await
    }

    /// Whether this session has watches of `kind` at `path`, here and on the server (`NoWatcher` if not).
    pub async fn check_watches(&self, path: &str, kind: WatcherType) -> Result<()> {
        self.watches_call(path, kind, None).await
    }

    /// The identities the server associates with this session (ZooKeeper 3.7+).
    pub async fn who_am_i(&self) -> Result<Vec<ClientInfo>> {
        match self.call(Request::WhoAmI, None).await? {
            Response::WhoAmI(infos) => Ok(infos),
            r => Err(Self::unexpected(r)),
        }
    }

    /// The ensemble configuration (`/zookeeper/config`, never under the chroot).
    pub async fn get_config(&self) -> Result<(Vec<u8>, Stat)> {
        let req = Request::GetData(PathWatch {
            path: "/zookeeper/config".into(),
            watch: false,
        });
        match self.call(req, None).await? {
            Response::GetData { data, stat } => Ok((data.unwrap_or_default(), stat)),
            r => Err(Self::unexpected(r)),
        }
    }

    /// Runs the reads of `reads` together (multiRead, ZooKeeper 3.6+); each has its own result.
    pub async fn multi_read(&self, reads: MultiRead) -> Result<Vec<ReadResult>> {
        if let Some(e) = reads.invalid {
            return Err(e);
        }
        let ops = reads.ops.into_iter().map(|op| self.chroot_op(op)).collect();
        let results = match self.call(Request::MultiRead(ops), None).await? {
            Response::Multi(r) => r,
            r => return Err(Self::unexpected(r)),
        };
        results
            .into_iter()
            .map(|r| match r {
                MultiResult::GetData { data, stat } => Ok(ReadResult::Data {
                    data: data.unwrap_or_default(),
                    stat,
                }),
                MultiResult::GetChildren { children } => Ok(ReadResult::Children { children }),
                MultiResult::Error(code) => Ok(ReadResult::Error(Error::from_code(code))),
                other => Err(Error::Protocol(format!("{other:?} in a multiRead reply"))),
            })
            .collect()
    }

    /// Closes the session (closeSession, then state Closed). Idempotent.
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Close { reply }).is_err() {
            return Ok(());
        }
        let _ = rx.await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(validate_path("/", false).is_ok());
        assert!(validate_path("/a/b", false).is_ok());
        assert!(validate_path("/a/", true).is_ok());
        assert!(
            validate_path("/", true).is_ok(),
            "ZooKeeper allows a sequential child of the root"
        );
        for p in ["", "a", "/a/", "//a", "/a/./b", "/a/../b", "/a\0"] {
            assert!(validate_path(p, false).is_err(), "{p:?}");
        }
    }

    #[test]
    fn chroot_strip() {
        assert_eq!(strip_chroot(Some("/app"), "/app".into()), "/");
        assert_eq!(strip_chroot(Some("/app"), "/app/x".into()), "/x");
        assert_eq!(strip_chroot(Some("/app"), "/apple".into()), "/apple");
        assert_eq!(strip_chroot(None, "/x".into()), "/x");
    }
}
