//! Test harness: the real server started in-process on 127.0.0.1 port 0 with a temporary data directory,
//! a minimal raw ZooKeeper client over the proto crate's encoders and decoders, and `GateDisk`, a
//! `RealDisk` whose fdatasync a test can stall.
//!
//! Every wait here is on a condition with a deadline (`tokio::time::timeout`), never a sleep. (The one sleep,
//! in a slow `GateDisk`'s sync, makes a write slow on purpose; nothing waits on it.)

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use oxkeeper_proto::frame::{
    encode_connect_request, encode_request, split_reply, Decoded, FrameDecoder,
};
use oxkeeper_proto::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, Id, PathWatch, Record, Request, Response,
    WatcherEvent,
};
use oxkeeper_proto::{perms, xid, CreateMode, OpCode, Reader};
use oxkeeper_server::executor::Shared;
use oxkeeper_server::Config;
use oxkeeper_storage::{Disk, DiskFile, RealDisk, RealFile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A generous bound for anything that should happen "soon" on a loaded 2-core machine.
pub const SOON: Duration = Duration::from_secs(10);

pub use oxkeeper_server::testing::Watchdog;

/// A four-letter word's whole answer.
pub async fn four_letter(addr: SocketAddr, word: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(word.as_bytes()).await.expect("send the word");
    let mut out = String::new();
    tokio::time::timeout(SOON, s.read_to_string(&mut out))
        .await
        .expect("the four-letter word is answered")
        .expect("read");
    out
}

/// Waits (up to `SOON`) until `mntr`'s `key` reaches `at_least`.
pub async fn mntr_reaches(addr: SocketAddr, key: &str, at_least: u64) {
    let what = format!("mntr's {key} to reach {at_least}");
    eventually(SOON, &what, || async {
        (mntr(addr, key).await >= at_least).then_some(())
    })
    .await
}

/// A number from `mntr` (`zk_<key>`).
pub async fn mntr(addr: SocketAddr, key: &str) -> u64 {
    let text = four_letter(addr, "mntr").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("zk_{key}\t")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no zk_{key} in mntr: {text}"))
}

// ---------------------------------------------------------------------------------------------------------
// The server

/// A config for tests: port 0 on 127.0.0.1 (never 2181), data in `dir`, every four-letter word allowed, no
/// per-IP connection limit (every test client comes from 127.0.0.1).
pub fn test_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        data_log_dir: dir.to_path_buf(),
        client_port: 0,
        client_port_address: Ipv4Addr::LOCALHOST.into(),
        max_client_cnxns: 0,
        four_letter_whitelist: None,
        ..Config::default()
    }
}

/// A member serving on an ephemeral port; its data directory is removed when this is dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    _watchdog: Watchdog,
}

impl TestServer {
    /// Starts a member on the current tokio runtime. `configure` adjusts the test config.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_on(RealDisk, configure).await
    }

    /// `start`, with the log's WAL on `disk`.
    pub async fn start_on<D: Disk>(disk: D, configure: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let mut server = Self::start_in_on(dir.path(), disk, configure).await;
        server._dir = Some(dir);
        server
    }

    /// `start`, with the data in `dir` (which the caller removes).
    pub async fn start_in(dir: &Path, configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_in_on(dir, RealDisk, configure).await
    }

    async fn start_in_on<D: Disk>(
        dir: &Path,
        disk: D,
        configure: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = test_config(dir);
        configure(&mut config);
        assert_ne!(config.client_port, 2181, "tests never use the real port");
        let (running, accept) = oxkeeper_server::server::start_on(config, disk)
            .await
            .expect("the server starts");
        tokio::spawn(accept);
        TestServer {
            addr: running.local_addr,
            shared: running.shared,
            data_dir: dir.to_path_buf(),
            _dir: None,
            _watchdog: Watchdog::arm(),
        }
    }
}

/// A member running on a runtime of its own (two worker threads, as many as the machine's cores), so that
/// clients measuring it do not share its threads. Dropping it stops the runtime without waiting.
pub struct IsolatedServer {
    pub server: TestServer,
    runtime: Option<tokio::runtime::Runtime>,
}

impl IsolatedServer {
    pub fn start(configure: impl FnOnce(&mut Config) + Send + 'static) -> IsolatedServer {
        Self::start_on(RealDisk, configure)
    }

    /// `start`, with the log on `disk` (e.g. a `GateDisk`).
    pub fn start_on<D: Disk>(
        disk: D,
        configure: impl FnOnce(&mut Config) + Send + 'static,
    ) -> IsolatedServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("oxkeeper-server")
            .enable_all()
            .build()
            .expect("build the server runtime");
        let server = runtime.block_on(TestServer::start_on(disk, configure));
        IsolatedServer {
            server,
            runtime: Some(runtime),
        }
    }
}

impl Drop for IsolatedServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// A disk whose fdatasync can be stalled

/// `RealDisk` with a gate in front of every `sync_data`: while the gate is closed, syncs block (on the WAL's
/// own thread), so nothing becomes durable and no write is acknowledged.
#[derive(Clone, Default)]
pub struct GateDisk {
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    /// Syncs currently blocked at the gate.
    waiting: Mutex<usize>,
    /// While set, writes fail with ENOSPC (a full device).
    full: std::sync::atomic::AtomicBool,
    /// While set, every sync takes `SLOW_SYNC` longer (a slow device).
    slow: std::sync::atomic::AtomicBool,
    /// While set, syncs fail with EIO (a device that lost the written pages).
    broken: std::sync::atomic::AtomicBool,
}

/// How much longer a sync of a slow `GateDisk` takes: well beyond what the log counts as a quick write (1 ms).
const SLOW_SYNC: Duration = Duration::from_millis(5);

impl GateDisk {
    /// Closes the gate; the returned guard opens it again when dropped (also when a test panics, so the WAL
    /// thread can finish and the runtime can shut down).
    pub fn stall(&self) -> GateGuard {
        *self.gate.closed.lock().expect("gate lock") = true;
        GateGuard {
            gate: self.gate.clone(),
        }
    }

    /// Makes the device full (writes fail with ENOSPC) or gives the space back.
    pub fn set_full(&self, full: bool) {
        self.gate
            .full
            .store(full, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes every sync from now on fail with EIO (after the gate, if it is closed).
    pub fn break_syncs(&self) {
        self.gate
            .broken
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes the next write go to the log's own thread instead of the apply thread, so that the executor goes
    /// on while that write waits at a closed gate (`stall`): `client` makes one write (a create of `path`)
    /// while every sync takes longer than the log counts as quick, and the log leaves its next write to its
    /// thread. Nothing else may write in between.
    pub async fn leave_next_write_to_the_logs_thread(&self, client: &mut Client, path: &str) {
        self.gate
            .slow
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let reply = client
            .call(i32::MAX, &create_req(path, CreateMode::Persistent))
            .await;
        self.gate
            .slow
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(reply.err(), 0, "the slow write of {path}");
    }

    /// Syncs blocked at the gate right now.
    pub fn blocked_syncs(&self) -> usize {
        *self.gate.waiting.lock().expect("gate lock")
    }

    /// Waits (up to `SOON`) until a sync is blocked at the gate: a write has reached the log.
    pub async fn sync_blocked(&self) {
        eventually(SOON, "a write blocked at the gate", || async {
            (self.blocked_syncs() > 0).then_some(())
        })
        .await
    }
}

pub struct GateGuard {
    gate: Arc<Gate>,
}

impl GateGuard {
    pub fn release(self) {}
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        *self.gate.closed.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.gate.opened.notify_all();
    }
}

impl Gate {
    fn pass(&self) {
        if self.slow.load(std::sync::atomic::Ordering::SeqCst) {
            // A slow device, deliberately: this write takes at least this long.
            std::thread::sleep(SLOW_SYNC);
        }
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if !*closed {
            return;
        }
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        while *closed {
            closed = self.opened.wait(closed).unwrap_or_else(|p| p.into_inner());
        }
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
    }
}

pub struct GateFile {
    file: RealFile,
    gate: Arc<Gate>,
}

impl Disk for GateDisk {
    type File = GateFile;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealDisk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        RealDisk.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<GateFile> {
        Ok(GateFile {
            file: RealDisk.open(path, create)?,
            gate: self.gate.clone(),
        })
    }
    fn open_log(&self, path: &Path, create: bool) -> io::Result<GateFile> {
        Ok(GateFile {
            file: RealDisk.open_log(path, create)?,
            gate: self.gate.clone(),
        })
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealDisk.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealDisk.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir)
    }
}

impl DiskFile for GateFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.gate.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.file.write_at(offset, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.gate.pass();
        if self.gate.broken.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()
    }
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.file.allocate(len)
    }
}

// ---------------------------------------------------------------------------------------------------------
// A raw client

/// One frame from the server after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Reply {
        xid: i32,
        zxid: i64,
        err: i32,
        body: Vec<u8>,
    },
    Notification(WatcherEvent),
}

impl Incoming {
    pub fn xid(&self) -> i32 {
        match self {
            Incoming::Reply { xid, .. } => *xid,
            Incoming::Notification(_) => xid::NOTIFICATION,
        }
    }
    pub fn is_ping(&self) -> bool {
        self.xid() == xid::PING
    }
    /// The reply's error code (0 for a notification).
    pub fn err(&self) -> i32 {
        match self {
            Incoming::Reply { err, .. } => *err,
            Incoming::Notification(_) => 0,
        }
    }
    /// Decodes a successful reply's body as the reply to a request with opcode `op`.
    pub fn response(&self, op: OpCode) -> Response {
        match self {
            Incoming::Reply { err: 0, body, .. } => {
                Response::decode(op, body).expect("a well-formed reply body")
            }
            other => panic!("expected a successful reply to {op:?}, got {other:?}"),
        }
    }
}

/// What a receive found instead of a frame.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// The server closed the connection (EOF or reset).
    Closed,
    Malformed(String),
}

/// The sending half of a client connection.
pub struct Sender {
    wr: OwnedWriteHalf,
}

/// The receiving half: a buffer and an incremental frame decoder, so a receive cut off by its deadline loses
/// nothing.
pub struct Receiver {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

/// A client connection with an established session.
pub struct Client {
    pub tx: Sender,
    pub rx: Receiver,
    pub session_id: i64,
    pub timeout_ms: i32,
    pub passwd: Vec<u8>,
}

/// The ACL of `ZooDefs.Ids.OPEN_ACL_UNSAFE`.
pub fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

pub fn create_req(path: &str, mode: CreateMode) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path: path.into(),
            data: Some(Vec::new()),
            acl: open_acl(),
            flags: mode.as_i32(),
            ttl: -1,
        },
    }
}

pub fn exists_req(path: &str) -> Request {
    Request::Exists(PathWatch {
        path: path.into(),
        watch: false,
    })
}

pub fn get_children_req(path: &str) -> Request {
    Request::GetChildren(PathWatch {
        path: path.into(),
        watch: false,
    })
}

/// A ping frame (xid -2, opcode 11, no body).
pub fn ping_frame() -> Vec<u8> {
    encode_request(xid::PING, &Request::Ping)
}

impl Client {
    /// Opens a connection and a new session asking for `timeout_ms`.
    pub async fn connect(addr: SocketAddr, timeout_ms: i32) -> Client {
        Self::try_connect(addr, 0, &[], timeout_ms)
            .await
            .expect("connect and get a session")
    }

    /// Opens a connection and resumes session `session_id` (or creates one if 0). An expired session or a
    /// wrong password is an error (the server answers with timeout 0 and closes).
    pub async fn try_connect(
        addr: SocketAddr,
        session_id: i64,
        passwd: &[u8],
        timeout_ms: i32,
    ) -> io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        Self::handshake(stream, session_id, passwd, timeout_ms).await
    }

    /// A new session over a connection whose receive buffer is `bytes` (set before connecting, so the TCP
    /// window is small too): a client that stops reading makes the server's writes block soon.
    pub async fn connect_with_receive_buffer(
        addr: SocketAddr,
        timeout_ms: i32,
        bytes: u32,
    ) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        Self::handshake(stream, 0, &[], timeout_ms)
            .await
            .expect("a session")
    }

    /// Sends a ConnectRequest on an open connection and reads the ConnectResponse.
    pub async fn handshake(
        stream: TcpStream,
        session_id: i64,
        passwd: &[u8],
        timeout_ms: i32,
    ) -> io::Result<Client> {
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms,
            session_id,
            passwd: Some(if passwd.is_empty() {
                vec![0; 16]
            } else {
                passwd.to_vec()
            }),
            read_only: Some(false),
        };
        wr.write_all(&encode_connect_request(&req)).await?;
        let mut rx = Receiver {
            rd,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let payload = match tokio::time::timeout(SOON, rx.frame()).await {
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no ConnectResponse",
                ))
            }
            Ok(r) => r?,
        };
        let resp = ConnectResponse::from_bytes(&payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if resp.timeout_ms <= 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "session expired or wrong password (timeout 0)",
            ));
        }
        Ok(Client {
            tx: Sender { wr },
            rx,
            session_id: resp.session_id,
            timeout_ms: resp.timeout_ms,
            passwd: resp.passwd,
        })
    }

    /// Sends one request and waits for its reply, skipping pings and notifications.
    pub async fn call(&mut self, xid: i32, req: &Request) -> Incoming {
        self.tx.send(xid, req).await.expect("send a request");
        loop {
            match self.rx.recv_within(SOON).await {
                Ok(f) if f.xid() == xid => return f,
                Ok(f) if f.is_ping() || f.xid() == xid::NOTIFICATION => continue,
                Ok(f) => panic!("expected the reply to xid {xid}, got {f:?}"),
                Err(e) => panic!("no reply to xid {xid}: {e:?}"),
            }
        }
    }

    /// Closes the socket at once with a reset (SO_LINGER 0), without closeSession: the session lives on
    /// until it expires.
    pub fn abort(self) {
        abort(self.tx, self.rx);
    }
}

/// Resets the connection made of these halves.
pub fn abort(tx: Sender, rx: Receiver) {
    if let Ok(stream) = rx.rd.reunite(tx.wr) {
        let _ = stream.set_zero_linger();
        drop(stream);
    }
}

impl Sender {
    pub async fn send(&mut self, xid: i32, req: &Request) -> io::Result<()> {
        self.wr.write_all(&encode_request(xid, req)).await
    }
    pub async fn ping(&mut self) -> io::Result<()> {
        self.wr.write_all(&ping_frame()).await
    }
    /// Writes already encoded frames in one go (pipelining).
    pub async fn send_raw(&mut self, frames: &[u8]) -> io::Result<()> {
        self.wr.write_all(frames).await
    }
}

impl Receiver {
    /// The next frame's payload (without the length prefix). Cancel-safe.
    async fn frame(&mut self) -> io::Result<Vec<u8>> {
        let decoder = FrameDecoder::new(64 << 20);
        loop {
            match decoder.decode(&self.buf) {
                Decoded::Frame(p) => {
                    let payload = p.to_vec();
                    self.buf.advance(4 + payload.len());
                    return Ok(payload);
                }
                Decoded::Error(e) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                }
                Decoded::NeedMore => {}
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// The next reply or notification.
    pub async fn recv(&mut self) -> Result<Incoming, RecvError> {
        let payload = self.frame().await.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => RecvError::Malformed(e.to_string()),
            _ => RecvError::Closed,
        })?;
        let (h, body) = split_reply(&payload).map_err(|e| RecvError::Malformed(e.to_string()))?;
        if h.xid == xid::NOTIFICATION {
            let ev = WatcherEvent::decode(&mut Reader::new(body))
                .map_err(|e| RecvError::Malformed(e.to_string()))?;
            return Ok(Incoming::Notification(ev));
        }
        Ok(Incoming::Reply {
            xid: h.xid,
            zxid: h.zxid,
            err: h.err,
            body: body.to_vec(),
        })
    }

    /// `recv` with a deadline.
    pub async fn recv_within(&mut self, within: Duration) -> Result<Incoming, RecvError> {
        match tokio::time::timeout(within, self.recv()).await {
            Err(_) => Err(RecvError::Timeout),
            Ok(r) => r,
        }
    }

    /// Waits until the server closes the connection, discarding whatever arrives before; false if it is still
    /// open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(until, self.recv()).await {
                Err(_) => return false,
                Ok(Err(RecvError::Closed)) => return true,
                Ok(_) => {}
            }
        }
    }
}

/// Receives the replies to requests sent with xids `1..=n`, in order, each without an error.
pub async fn ok_replies(c: &mut Client, n: usize, what: &str) {
    for i in 1..=n {
        let f = c.rx.recv_within(SOON).await.expect("a reply");
        assert_eq!((f.xid(), f.err()), (i as i32, 0), "{what} {i}");
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {within:?} waiting for: {what}"
        );
        // A poll interval, not a wait for the condition: the loop re-checks it, under the deadline above.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
