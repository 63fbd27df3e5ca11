//! The background task that owns the socket: handshake, xids, in-order reply matching, pings, read
//! timeouts, reconnection with the session's id and password, SetWatches, client-side expiry.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use oxkeeper_proto::frame::{
    encode_connect_request, encode_request, split_reply, Decoded, FrameDecoder,
};
use oxkeeper_proto::records::{
    AuthPacket, ConnectRequest, ConnectResponse, Record, Request, Response, SetWatches,
    WatcherEvent, WatchesRequest,
};
use oxkeeper_proto::{xid, ErrorCode, EventType, KeeperState, OpCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};

use crate::error::{Error, Result};
use crate::{PersistentEvent, State, WatchedEvent, WatcherType};

/// Which watch table a one-shot registration goes to once its reply says it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchKind {
    /// exists: a data watch if the node exists, an exist watch if not.
    Exists,
    Data,
    Child,
    /// addWatch PERSISTENT: every event on the path itself, until removed.
    Persistent,
    /// addWatch PERSISTENT_RECURSIVE: created/deleted/data events on the path and every descendant.
    PersistentRecursive,
}

/// Where a watch's events go.
pub(crate) enum WatchTx {
    Once(oneshot::Sender<WatchedEvent>),
    Persistent(mpsc::UnboundedSender<PersistentEvent>),
}

pub(crate) struct WatchReg {
    pub kind: WatchKind,
    /// The server-side (chrooted) path.
    pub path: String,
    pub tx: WatchTx,
}

pub(crate) enum Cmd {
    Request {
        req: Request,
        reply: oneshot::Sender<Result<Response>>,
        watch: Option<WatchReg>,
    },
    Auth {
        scheme: String,
        auth: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    /// checkWatches (`remove: None`) or removeWatches (`remove: Some(local)`) for the session's own
    /// registrations of `kind` at `path` (server-side path).
    Watches {
        path: String,
        kind: WatcherType,
        remove: Option<bool>,
        reply: oneshot::Sender<Result<Response>>,
    },
}

/// What the client handle and the task share.
pub(crate) struct Shared {
    pub session_id: AtomicI64,
    pub timeout_ms: AtomicI64,
    /// Set when the task ends: what every later call fails with.
    pub terminal: Mutex<Option<Error>>,
    /// For new state streams; taken when the task ends, so that every stream ends then.
    pub events: Mutex<Option<broadcast::Sender<State>>>,
    /// Every watch notification of the session, once each (see `Client::notifications`).
    pub notifications: broadcast::Sender<WatchedEvent>,
}

struct Pending {
    xid: i32,
    op: OpCode,
    reply: Option<oneshot::Sender<Result<Response>>>,
    watch: Option<WatchReg>,
    /// removeWatches: what to drop locally once the server agreed.
    removal: Option<(String, WatcherType)>,
}

type Watchers = HashMap<String, Vec<oneshot::Sender<WatchedEvent>>>;
type PersistentWatchers = HashMap<String, Vec<mpsc::UnboundedSender<PersistentEvent>>>;

#[derive(Default)]
struct WatchTables {
    data: Watchers,
    exist: Watchers,
    child: Watchers,
    persistent: PersistentWatchers,
    recursive: PersistentWatchers,
}

/// The paths to re-arm on a new connection, by table.
#[derive(Default)]
struct LivePaths {
    data: Vec<String>,
    exist: Vec<String>,
    child: Vec<String>,
    persistent: Vec<String>,
    recursive: Vec<String>,
}

fn live_keys<T>(t: &mut HashMap<String, Vec<T>>, closed: impl Fn(&T) -> bool) -> Vec<String> {
    t.retain(|_, v| {
        v.retain(|tx| !closed(tx));
        !v.is_empty()
    });
    let mut paths: Vec<String> = t.keys().cloned().collect();
    paths.sort();
    paths
}

impl WatchTables {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
            && self.exist.is_empty()
            && self.child.is_empty()
            && self.persistent.is_empty()
            && self.recursive.is_empty()
    }

    /// Drops registrations whose receiver is gone; returns the paths left in each table.
    fn live_paths(&mut self) -> LivePaths {
        LivePaths {
            data: live_keys(&mut self.data, |tx| tx.is_closed()),
            exist: live_keys(&mut self.exist, |tx| tx.is_closed()),
            child: live_keys(&mut self.child, |tx| tx.is_closed()),
            persistent: live_keys(&mut self.persistent, |tx| tx.is_closed()),
            recursive: live_keys(&mut self.recursive, |tx| tx.is_closed()),
        }
    }

    /// The tables a `WatcherType` of checkWatches/removeWatches covers, as ZooKeeper's client
    /// (`ZKWatchManager.removeWatcher`): Data = data + exist, Children = child, Any = all five.
    fn covers(kind: WatcherType) -> [bool; 5] {
        match kind {
            WatcherType::Data => [true, true, false, false, false],
            WatcherType::Children => [false, false, true, false, false],
            WatcherType::Persistent => [false, false, false, true, false],
            WatcherType::PersistentRecursive => [false, false, false, false, true],
            WatcherType::Any => [true; 5],
        }
    }

    fn has(&self, path: &str, kind: WatcherType) -> bool {
        let c = Self::covers(kind);
        (c[0] && self.data.contains_key(path))
            || (c[1] && self.exist.contains_key(path))
            || (c[2] && self.child.contains_key(path))
            || (c[3] && self.persistent.contains_key(path))
            || (c[4] && self.recursive.contains_key(path))
    }

    /// Removes the registrations of `kind` at `path`, telling each with a watch-removed event (persistent
    /// streams then end). `path` is the server-side path; `shown` the one the user sees.
    /// Returns the kinds of removal event given, each once (what a single session-wide watcher sees).
    fn remove(&mut self, path: &str, kind: WatcherType, shown: &str) -> Vec<WatchedEvent> {
        let c = Self::covers(kind);
        let mut given = Vec::new();
        let event = |event_type| WatchedEvent {
            event_type,
            state: KeeperState::SyncConnected,
            path: shown.to_string(),
        };
        for (on, table) in [(c[0], &mut self.data), (c[1], &mut self.exist)] {
            if on {
                for tx in table.remove(path).into_iter().flatten() {
                    let _ = tx.send(event(EventType::DataWatchRemoved));
                    given.push(EventType::DataWatchRemoved);
                }
            }
        }
        if c[2] {
            for tx in self.child.remove(path).into_iter().flatten() {
                let _ = tx.send(event(EventType::ChildWatchRemoved));
                given.push(EventType::ChildWatchRemoved);
            }
        }
        for (on, table) in [(c[3], &mut self.persistent), (c[4], &mut self.recursive)] {
            if on {
                for tx in table.remove(path).into_iter().flatten() {
                    let _ = tx.send(PersistentEvent::Event(event(
                        EventType::PersistentWatchRemoved,
                    )));
                    given.push(EventType::PersistentWatchRemoved);
                }
            }
        }
        let mut once = Vec::new();
        for t in given {
            if !once.contains(&t) {
                once.push(t);
            }
        }
        once.into_iter().map(event).collect()
    }
}

/// How a connection ended.
enum Outcome {
    /// Connection loss: reconnect.
    Lost,
    /// The session ended for good with this state.
    Done(State, Error),
}

pub(crate) struct Task {
    pub hosts: Vec<String>,
    pub chroot: Option<String>,
    pub requested_timeout: Duration,
    /// Ask for (accept) a read-only server.
    pub read_only: bool,
    pub rx: mpsc::UnboundedReceiver<Cmd>,
    pub state_tx: watch::Sender<State>,
    pub events_tx: broadcast::Sender<State>,
    pub shared: Arc<Shared>,
    session_id: i64,
    passwd: Vec<u8>,
    last_zxid: i64,
    /// The negotiated timeout (the requested one until the first handshake).
    timeout: Duration,
    next_host: usize,
    xid: i32,
    watches: WatchTables,
    auths: Vec<(String, Vec<u8>)>,
    /// Commands taken off the channel while no connection was up.
    queued: VecDeque<Cmd>,
}

enum Handshake {
    Up(TcpStream, ConnectResponse, BytesMut),
    Expired,
    Failed,
}

impl Task {
    pub fn new(
        hosts: Vec<String>,
        chroot: Option<String>,
        options: crate::ConnectOptions,
        rx: mpsc::UnboundedReceiver<Cmd>,
        state_tx: watch::Sender<State>,
        events_tx: broadcast::Sender<State>,
        shared: Arc<Shared>,
    ) -> Task {
        Task {
            hosts,
            chroot,
            requested_timeout: options.session_timeout,
            read_only: options.read_only,
            rx,
            state_tx,
            events_tx,
            shared,
            session_id: 0,
            passwd: vec![0; 16],
            last_zxid: 0,
            timeout: options.session_timeout,
            next_host: 0,
            xid: 0,
            watches: WatchTables::default(),
            auths: Vec::new(),
            queued: VecDeque::new(),
        }
    }

    fn set_state(&self, s: State) {
        if *self.state_tx.borrow() == s {
            return;
        }
        tracing::debug!(state = ?s, session = format_args!("{:#x}", self.session_id), "client state");
        self.state_tx.send_replace(s);
        let _ = self.events_tx.send(s);
    }

    fn next_xid(&mut self) -> i32 {
        self.xid = if self.xid >= i32::MAX - 1 {
            1
        } else {
            self.xid + 1
        };
        self.xid
    }

    pub async fn run(mut self) {
        let (state, err) = self.run_inner().await;
        self.finish(state, err);
    }

    async fn run_inner(&mut self) -> (State, Error) {
        // Contact: the last time the server answered us (or the start, before the first handshake).
        let mut last_contact = Instant::now();
        let mut failures = 0usize;
        loop {
            // Before the first session: give up after 4/3 of the requested timeout, as after one.
            if last_contact.elapsed() > self.timeout * 4 / 3 {
                return if self.session_id == 0 {
                    (State::Closed, Error::ConnectionLoss)
                } else {
                    (State::Expired, Error::SessionExpired)
                };
            }
            let host = self.hosts[self.next_host].clone();
            self.next_host = (self.next_host + 1) % self.hosts.len();
            // The Java client gives each host timeout / hosts. A server can also accept a connection and then
            // neither answer the handshake nor close it (ZooKeeper does this to some connections while it
            // starts): with one host, that wait alone would use up the session. A handshake takes milliseconds,
            // so one attempt gets a quarter of the timeout at most, and never more than is left of 4/3 of it.
            let left = (self.timeout * 4 / 3).saturating_sub(last_contact.elapsed());
            let per_host = (self.timeout / self.hosts.len() as u32)
                .min(self.timeout / 4)
                .min(left);
            let attempt = timeout(per_host, self.handshake(&host)).await;
            match attempt {
                Ok(Handshake::Up(stream, resp, buf)) => {
                    failures = 0;
                    self.session_id = resp.session_id;
                    self.shared
                        .session_id
                        .store(resp.session_id, Ordering::Relaxed);
                    self.passwd = resp.passwd.clone();
                    self.timeout = Duration::from_millis(resp.timeout_ms as u64);
                    self.shared
                        .timeout_ms
                        .store(resp.timeout_ms as i64, Ordering::Relaxed);
                    let ro = resp.read_only == Some(true);
                    self.set_state(if ro {
                        State::ConnectedReadOnly
                    } else {
                        State::Connected
                    });
                    let (outcome, contact) = self.serve(stream, buf).await;
                    last_contact = contact;
                    match outcome {
                        Outcome::Lost => self.set_state(State::Disconnected),
                        Outcome::Done(s, e) => return (s, e),
                    }
                }
                Ok(Handshake::Expired) => return (State::Expired, Error::SessionExpired),
                Ok(Handshake::Failed) | Err(_) => {
                    failures += 1;
                    if attempt.is_err() {
                        tracing::debug!(%host, ?per_host, "connect attempt not answered in time");
                    } else {
                        tracing::debug!(%host, "connect attempt failed");
                    }
                    if failures >= self.hosts.len() {
                        failures = 0;
                        // Every host refused: wait a little (taking Close meanwhile) before another round.
                        let pause = Duration::from_millis(rand::random::<u64>() % 100 + 20);
                        if let Some(done) = self.pause(pause).await {
                            return done;
                        }
                    }
                }
            }
        }
    }

    /// Sleeps for `d`, queueing commands that arrive; a Close ends the session.
    async fn pause(&mut self, d: Duration) -> Option<(State, Error)> {
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return None,
                cmd = self.rx.recv() => match cmd {
                    None => return Some((State::Closed, Error::Closed)),
                    Some(Cmd::Close { reply }) => {
                        let _ = reply.send(());
                        return Some((State::Closed, Error::Closed));
                    }
                    Some(cmd) => self.queued.push_back(cmd),
                },
            }
        }
    }

    async fn handshake(&mut self, host: &str) -> Handshake {
        let Ok(mut stream) = TcpStream::connect(host).await else {
            return Handshake::Failed;
        };
        let _ = stream.set_nodelay(true);
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: self.last_zxid,
            timeout_ms: self.requested_timeout.as_millis().min(i32::MAX as u128) as i32,
            session_id: self.session_id,
            passwd: Some(self.passwd.clone()),
            read_only: Some(self.read_only),
        };
        if stream
            .write_all(&encode_connect_request(&req))
            .await
            .is_err()
        {
            return Handshake::Failed;
        }
        let mut buf = BytesMut::with_capacity(4096);
        let decoder = FrameDecoder::default();
        loop {
            match decoder.decode(&buf) {
                Decoded::Frame(payload) => {
                    let n = payload.len();
                    // A server that is behind our lastZxidSeen closes instead of answering; so does one
                    // that is not serving: both are just a failed attempt.
                    let Ok(resp) = ConnectResponse::from_prefix(payload) else {
                        return Handshake::Failed;
                    };
                    buf.advance(4 + n);
                    if resp.timeout_ms <= 0 {
                        return Handshake::Expired;
                    }
                    return Handshake::Up(stream, resp, buf);
                }
                Decoded::Error(_) => return Handshake::Failed,
                Decoded::NeedMore => match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return Handshake::Failed,
                    Ok(_) => {}
                },
            }
        }
    }

    fn strip(&self, path: String) -> String {
        crate::strip_chroot(self.chroot.as_deref(), path)
    }

    /// Runs one established connection until it is lost or the session ends. Returns the last contact.
    async fn serve(&mut self, stream: TcpStream, mut buf: BytesMut) -> (Outcome, Instant) {
        let (mut rd, mut wr) = stream.into_split();
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        let mut writer = tokio::spawn(async move {
            while let Some(frame) = wrx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        let t = self.timeout;
        let mut last_recv = Instant::now();
        let mut last_send = Instant::now();
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut auth_waiters: VecDeque<Option<oneshot::Sender<Result<()>>>> = VecDeque::new();
        let mut closing: Option<oneshot::Sender<()>> = None;

        // Re-authenticate, then re-arm the watches; the server sends catch-up events for what changed
        // after lastZxidSeen.
        for (scheme, auth) in &self.auths {
            let _ = wtx.send(auth_frame(scheme, auth));
            auth_waiters.push_back(None);
        }
        if !self.watches.is_empty() {
            let live = self.watches.live_paths();
            for req in set_watches_frames(self.last_zxid, live) {
                let _ = wtx.send(encode_request(xid::SET_WATCHES, &req));
            }
            // Persistent watches come back without catch-up events: whoever holds one must re-read what
            // it tracks. Requests they send after this go behind the SetWatches on this connection.
            for tx in self
                .watches
                .persistent
                .values()
                .chain(self.watches.recursive.values())
                .flatten()
            {
                let _ = tx.send(PersistentEvent::Resync);
            }
        }
        let decoder = FrameDecoder::default();
        let outcome = 'conn: loop {
            while let Some(cmd) = self.queued.pop_front() {
                if let Some(done) =
                    self.submit(cmd, &wtx, &mut pending, &mut auth_waiters, &mut closing)
                {
                    break 'conn done;
                }
                last_send = Instant::now();
            }
            let read_deadline = last_recv + t * 2 / 3;
            let ping_at = last_send + t / 3;
            tokio::select! {
                r = rd.read_buf(&mut buf) => {
                    match r {
                        Ok(0) | Err(_) => break 'conn Outcome::Lost,
                        Ok(_) => last_recv = Instant::now(),
                    }
                    loop {
                        let (payload_len, result) = match decoder.decode(&buf) {
                            Decoded::NeedMore => break,
                            Decoded::Error(_) => break 'conn Outcome::Lost,
                            Decoded::Frame(p) => {
                                (p.len(), self.on_frame(p, &mut pending, &mut auth_waiters, &mut closing))
                            }
                        };
                        buf.advance(4 + payload_len);
                        if let Some(o) = result {
                            break 'conn o;
                        }
                    }
                }
                cmd = self.rx.recv(), if closing.is_none() => {
                    let cmd = match cmd {
                        Some(c) => c,
                        // Every handle is gone: close the session.
                        None => Cmd::Close { reply: oneshot::channel().0 },
                    };
                    self.queued.push_back(cmd);
                }
                _ = sleep_until(read_deadline.min(ping_at)) => {
                    if Instant::now() >= read_deadline {
                        tracing::debug!("no data from the server for 2/3 of the session timeout");
                        break 'conn Outcome::Lost;
                    }
                    let _ = wtx.send(encode_request(xid::PING, &Request::Ping));
                    last_send = Instant::now();
                }
                _ = &mut writer => break 'conn Outcome::Lost,
            }
        };
        writer.abort();
        let fail = match &outcome {
            Outcome::Lost => Error::ConnectionLoss,
            Outcome::Done(_, e) => e.clone(),
        };
        for p in pending {
            if let Some(r) = p.reply {
                let _ = r.send(Err(fail.clone()));
            }
        }
        for w in auth_waiters.into_iter().flatten() {
            let _ = w.send(Err(fail.clone()));
        }
        let outcome = match (outcome, closing) {
            (_, Some(reply)) => {
                let _ = reply.send(());
                Outcome::Done(State::Closed, Error::Closed)
            }
            (o, None) => o,
        };
        (outcome, last_recv)
    }

    /// Sends one command. Returns an outcome if the connection must end.
    fn submit(
        &mut self,
        cmd: Cmd,
        wtx: &mpsc::UnboundedSender<Vec<u8>>,
        pending: &mut VecDeque<Pending>,
        auth_waiters: &mut VecDeque<Option<oneshot::Sender<Result<()>>>>,
        closing: &mut Option<oneshot::Sender<()>>,
    ) -> Option<Outcome> {
        match cmd {
            Cmd::Request { req, reply, watch } => {
                if closing.is_some() {
                    let _ = reply.send(Err(Error::Closed));
                    return None;
                }
                let xid = self.next_xid();
                let op = req.opcode();
                pending.push_back(Pending {
                    xid,
                    op,
                    reply: Some(reply),
                    watch,
                    removal: None,
                });
                let _ = wtx.send(encode_request(xid, &req));
            }
            Cmd::Watches {
                path,
                kind,
                remove,
                reply,
            } => {
                if closing.is_some() {
                    let _ = reply.send(Err(Error::Closed));
                    return None;
                }
                // As ZooKeeper's client: nothing registered here → NoWatcher without asking the server.
                if !self.watches.has(&path, kind) {
                    let _ = reply.send(Err(Error::NoWatcher));
                    return None;
                }
                // ZooKeeper 3.8 servers know only Children, Data and Any (3.9 added the persistent
                // types), and hold one watch mode per (session, path): a persistent watch goes with Any,
                // and so does everything else this session has at the path, here as on the server.
                let kind = match kind {
                    WatcherType::Persistent | WatcherType::PersistentRecursive => WatcherType::Any,
                    k => k,
                };
                let xid = self.next_xid();
                let req = WatchesRequest {
                    path: path.clone(),
                    watcher_type: kind.as_i32(),
                };
                let (req, reply, removal) = match remove {
                    None => (Request::CheckWatches(req), Some(reply), None),
                    Some(false) => (Request::RemoveWatches(req), Some(reply), Some((path, kind))),
                    // Local: dropped here at once whatever the server says (it may be unreachable).
                    Some(true) => {
                        let shown = self.strip(path.clone());
                        for e in self.watches.remove(&path, kind, &shown) {
                            let _ = self.shared.notifications.send(e);
                        }
                        let _ = reply.send(Ok(Response::Empty));
                        (Request::RemoveWatches(req), None, None)
                    }
                };
                pending.push_back(Pending {
                    xid,
                    op: req.opcode(),
                    reply,
                    watch: None,
                    removal,
                });
                let _ = wtx.send(encode_request(xid, &req));
            }
            Cmd::Auth {
                scheme,
                auth,
                reply,
            } => {
                let _ = wtx.send(auth_frame(&scheme, &auth));
                self.auths.push((scheme, auth));
                auth_waiters.push_back(Some(reply));
            }
            Cmd::Close { reply } => {
                if closing.is_some() {
                    let _ = reply.send(());
                    return None;
                }
                let xid = self.next_xid();
                pending.push_back(Pending {
                    xid,
                    op: OpCode::CloseSession,
                    reply: None,
                    watch: None,
                    removal: None,
                });
                let _ = wtx.send(encode_request(xid, &Request::CloseSession));
                *closing = Some(reply);
            }
        }
        None
    }

    fn on_frame(
        &mut self,
        payload: &[u8],
        pending: &mut VecDeque<Pending>,
        auth_waiters: &mut VecDeque<Option<oneshot::Sender<Result<()>>>>,
        closing: &mut Option<oneshot::Sender<()>>,
    ) -> Option<Outcome> {
        let Ok((hdr, body)) = split_reply(payload) else {
            return Some(Outcome::Lost);
        };
        match hdr.xid {
            xid::NOTIFICATION => {
                match WatcherEvent::from_bytes(body) {
                    Ok(ev) => self.dispatch(ev),
                    Err(_) => return Some(Outcome::Lost),
                }
                None
            }
            xid::PING | xid::SET_WATCHES => None,
            xid::AUTH => {
                let waiter = auth_waiters.pop_front().flatten();
                if hdr.err == 0 {
                    if let Some(w) = waiter {
                        let _ = w.send(Ok(()));
                    }
                    None
                } else {
                    if let Some(w) = waiter {
                        let _ = w.send(Err(Error::AuthFailed));
                    }
                    Some(Outcome::Done(State::AuthFailed, Error::AuthFailed))
                }
            }
            x => {
                let Some(p) = pending.pop_front() else {
                    tracing::warn!(xid = x, "reply with no request outstanding");
                    return Some(Outcome::Lost);
                };
                if p.xid != x {
                    tracing::warn!(expected = p.xid, got = x, "reply out of order");
                    if let Some(r) = p.reply {
                        let _ = r.send(Err(Error::ConnectionLoss));
                    }
                    return Some(Outcome::Lost);
                }
                if hdr.zxid > 0 {
                    self.last_zxid = self.last_zxid.max(hdr.zxid);
                }
                if p.op == OpCode::CloseSession {
                    let _ = closing.take().map(|r| r.send(()));
                    return Some(Outcome::Done(State::Closed, Error::Closed));
                }
                let result = if hdr.err == 0 || (p.op == OpCode::Multi && !body.is_empty()) {
                    Response::decode(p.op, body)
                        .map_err(|e| Error::Protocol(format!("reply to {:?}: {e}", p.op)))
                } else {
                    Err(Error::from_code(hdr.err))
                };
                if let Some(w) = p.watch {
                    let kind = match (w.kind, &result, hdr.err) {
                        (WatchKind::Exists, Ok(_), _) => Some(WatchKind::Data),
                        (WatchKind::Exists, Err(_), e) if e == ErrorCode::NoNode.as_i32() => {
                            Some(WatchKind::Exists)
                        }
                        (k, Ok(_), _) => Some(k),
                        _ => None,
                    };
                    let w_ = &mut self.watches;
                    match (kind, w.tx) {
                        (Some(WatchKind::Data), WatchTx::Once(tx)) => {
                            w_.data.entry(w.path).or_default().push(tx)
                        }
                        (Some(WatchKind::Exists), WatchTx::Once(tx)) => {
                            w_.exist.entry(w.path).or_default().push(tx)
                        }
                        (Some(WatchKind::Child), WatchTx::Once(tx)) => {
                            w_.child.entry(w.path).or_default().push(tx)
                        }
                        (Some(WatchKind::Persistent), WatchTx::Persistent(tx)) => {
                            w_.persistent.entry(w.path).or_default().push(tx)
                        }
                        (Some(WatchKind::PersistentRecursive), WatchTx::Persistent(tx)) => {
                            w_.recursive.entry(w.path).or_default().push(tx)
                        }
                        _ => {}
                    }
                }
                if let (Some((path, kind)), Ok(_)) = (&p.removal, &result) {
                    let shown = self.strip(path.clone());
                    for e in self.watches.remove(path, *kind, &shown) {
                        let _ = self.shared.notifications.send(e);
                    }
                }
                if let Some(r) = p.reply {
                    let _ = r.send(result);
                }
                if hdr.err == ErrorCode::SessionExpired.as_i32() {
                    return Some(Outcome::Done(State::Expired, Error::SessionExpired));
                }
                None
            }
        }
    }

    fn dispatch(&mut self, ev: WatcherEvent) {
        let Some(ty) = EventType::from_i32(ev.event_type) else {
            return;
        };
        let state = KeeperState::from_i32(ev.state).unwrap_or(KeeperState::SyncConnected);
        let mut targets = Vec::new();
        let w = &mut self.watches;
        // Persistent watches stay: one on the path itself sees every event there, a recursive one on the
        // path or an ancestor every event but NodeChildrenChanged (ZooKeeper's client does the same).
        let mut persistent: Vec<&mpsc::UnboundedSender<PersistentEvent>> = Vec::new();
        persistent.extend(w.persistent.get(&ev.path).into_iter().flatten());
        if ty != EventType::NodeChildrenChanged && !w.recursive.is_empty() {
            let mut p = ev.path.as_str();
            loop {
                persistent.extend(w.recursive.get(p).into_iter().flatten());
                if p == "/" {
                    break;
                }
                p = match p.rfind('/') {
                    Some(0) => "/",
                    Some(i) => &p[..i],
                    None => break,
                };
            }
        }
        if !persistent.is_empty() {
            let event = WatchedEvent {
                event_type: ty,
                state,
                path: crate::strip_chroot(self.chroot.as_deref(), ev.path.clone()),
            };
            for tx in persistent {
                let _ = tx.send(PersistentEvent::Event(event.clone()));
            }
        }
        match ty {
            EventType::NodeCreated | EventType::NodeDataChanged => {
                targets.extend(w.data.remove(&ev.path).into_iter().flatten());
                targets.extend(w.exist.remove(&ev.path).into_iter().flatten());
            }
            EventType::NodeDeleted => {
                targets.extend(w.data.remove(&ev.path).into_iter().flatten());
                targets.extend(w.exist.remove(&ev.path).into_iter().flatten());
                targets.extend(w.child.remove(&ev.path).into_iter().flatten());
            }
            EventType::NodeChildrenChanged => {
                targets.extend(w.child.remove(&ev.path).into_iter().flatten());
            }
            _ => {}
        }
        let path = self.strip(ev.path);
        let _ = self.shared.notifications.send(WatchedEvent {
            event_type: ty,
            state,
            path: path.clone(),
        });
        for tx in targets {
            let _ = tx.send(WatchedEvent {
                event_type: ty,
                state,
                path: path.clone(),
            });
        }
    }

    /// Ends the session for good: the final state, every waiting call and watch told, later calls refused.
    fn finish(mut self, state: State, err: Error) {
        *self
            .shared
            .terminal
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(err.clone());
        self.rx.close();
        let mut rest: Vec<Cmd> = self.queued.drain(..).collect();
        while let Ok(cmd) = self.rx.try_recv() {
            rest.push(cmd);
        }
        for cmd in rest {
            match cmd {
                Cmd::Request { reply, .. } | Cmd::Watches { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                Cmd::Auth { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
                Cmd::Close { reply } => {
                    let _ = reply.send(());
                }
            }
        }
        let keeper_state = match state {
            State::Expired => KeeperState::Expired,
            State::AuthFailed => KeeperState::AuthFailed,
            _ => KeeperState::Closed,
        };
        let w = std::mem::take(&mut self.watches);
        let ended = |path: String| WatchedEvent {
            event_type: EventType::None,
            state: keeper_state,
            path,
        };
        for (path, txs) in w.data.into_iter().chain(w.exist).chain(w.child) {
            let path = self.strip(path);
            for tx in txs {
                let _ = tx.send(ended(path.clone()));
            }
        }
        // Persistent streams get the session's end, then end.
        for (path, txs) in w.persistent.into_iter().chain(w.recursive) {
            let path = self.strip(path);
            for tx in txs {
                let _ = tx.send(PersistentEvent::Event(ended(path.clone())));
            }
        }
        self.set_state(state);
        self.shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// Path bytes per SetWatches frame, as the Java client (`SET_WATCHES_MAX_LENGTH`): far below the
/// server's 1 MiB `jute.maxbuffer` however many watches a session holds.
const SET_WATCHES_PATH_BYTES_MAX: usize = 128 * 1024;

/// SetWatches requests re-arming every path, split so that no frame exceeds the server's limit. SetWatches2
/// (with the persistent lists) only when there are persistent watches, as ZooKeeper's client: servers
/// before 3.6 know only SetWatches.
fn set_watches_frames(relative_zxid: i64, live: LivePaths) -> Vec<Request> {
    let v2 = !live.persistent.is_empty() || !live.recursive.is_empty();
    let fresh = || SetWatches {
        relative_zxid,
        ..SetWatches::default()
    };
    let mut out = Vec::new();
    let mut cur = fresh();
    let mut bytes = 0usize;
    let tagged = live
        .data
        .into_iter()
        .map(|p| (0, p))
        .chain(live.exist.into_iter().map(|p| (1, p)))
        .chain(live.child.into_iter().map(|p| (2, p)))
        .chain(live.persistent.into_iter().map(|p| (3, p)))
        .chain(live.recursive.into_iter().map(|p| (4, p)));
    for (kind, path) in tagged {
        if bytes > 0 && bytes + path.len() > SET_WATCHES_PATH_BYTES_MAX {
            out.push(std::mem::replace(&mut cur, fresh()));
            bytes = 0;
        }
        bytes += path.len();
        match kind {
            0 => cur.data_watches.push(path),
            1 => cur.exist_watches.push(path),
            2 => cur.child_watches.push(path),
            3 => cur.persistent_watches.push(path),
            _ => cur.persistent_recursive_watches.push(path),
        }
    }
    if bytes > 0 {
        out.push(cur);
    }
    out.into_iter()
        .map(|req| Request::SetWatches { v2, req })
        .collect()
}

fn auth_frame(scheme: &str, auth: &[u8]) -> Vec<u8> {
    encode_request(
        xid::AUTH,
        &Request::Auth(AuthPacket {
            auth_type: 0,
            scheme: scheme.to_string(),
            auth: Some(auth.to_vec()),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_watches_are_split_below_the_frame_limit() {
        let long = |i: usize| format!("/{}{i:06}", "x".repeat(1000));
        let data: Vec<String> = (0..300).map(long).collect();
        let child: Vec<String> = (300..400).map(long).collect();
        let frames = set_watches_frames(
            7,
            LivePaths {
                data,
                child,
                ..LivePaths::default()
            },
        );
        assert!(frames.len() >= 3, "{} frames", frames.len());
        let mut n = 0;
        for f in &frames {
            let Request::SetWatches { req, v2: false } = f else {
                panic!("not SetWatches");
            };
            assert_eq!(req.relative_zxid, 7);
            let bytes: usize = [&req.data_watches, &req.exist_watches, &req.child_watches]
                .iter()
                .flat_map(|v| v.iter())
                .map(|p| p.len())
                .sum();
            assert!(bytes <= SET_WATCHES_PATH_BYTES_MAX);
            n += req.data_watches.len() + req.child_watches.len();
        }
        assert_eq!(n, 400);
        assert!(set_watches_frames(1, LivePaths::default()).is_empty());
        let v2 = set_watches_frames(
            1,
            LivePaths {
                recursive: vec!["/r".into()],
                data: vec!["/d".into()],
                ..LivePaths::default()
            },
        );
        let [Request::SetWatches { v2: true, req }] = &v2[..] else {
            panic!("one SetWatches2 expected: {v2:?}");
        };
        assert_eq!(req.persistent_recursive_watches, vec!["/r".to_string()]);
        assert_eq!(req.data_watches, vec!["/d".to_string()]);
    }
}
