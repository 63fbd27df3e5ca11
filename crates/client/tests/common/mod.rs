//! Test harness: a server to talk to (oxkeeper in-process on port 0, or whatever
//! `OXK_CLIENT_TEST_SERVER=host:port` names, e.g. an Apache ZooKeeper 3.8), and a TCP proxy a test can
//! cut, stall, or make lose the reply to a chosen request. Every wait is on a condition with a deadline,
//! never a bare sleep.

#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxkeeper_client::{acl, Client, CreateMode, State, StateStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A generous bound for anything that should happen "soon" on a loaded 2-core machine.
pub const SOON: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test if it takes longer than `d`.
pub async fn within<T>(d: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// The server under test. Its data directory (in-process case) is removed on drop.
pub struct TestServer {
    pub addr: String,
    _dir: Option<tempfile::TempDir>,
    /// Ends the process if the in-process server is held far too long (a deadlock no timeout in the
    /// runtime can see).
    _watchdog: Option<oxkeeper_server::testing::Watchdog>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        if let Ok(addr) = std::env::var("OXK_CLIENT_TEST_SERVER") {
            return TestServer {
                addr,
                _dir: None,
                _watchdog: None,
            };
        }
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let config = oxkeeper_server::Config {
            data_dir: dir.path().to_path_buf(),
            data_log_dir: dir.path().to_path_buf(),
            client_port: 0,
            client_port_address: Ipv4Addr::LOCALHOST.into(),
            max_client_cnxns: 0,
            // Short ticks so that tests may ask for short session timeouts (min is 2 ticks).
            tick_ms: 100,
            // ...without capping long ones at 20 ticks (2 s), which would make reconnect tests racy.
            max_session_timeout_ms: Some(30_000),
            extended_types_enabled: true,
            // The recipes' directories are containers: reap emptied ones often, so the suites meet a
            // directory removed under them (test.sh runs ZooKeeper with the same interval).
            container_check_interval_ms: 100,
            ..oxkeeper_server::Config::default()
        };
        let (running, accept) = oxkeeper_server::server::start(config)
            .await
            .expect("the server starts");
        tokio::spawn(accept);
        TestServer {
            addr: running.local_addr.to_string(),
            _dir: Some(dir),
            _watchdog: Some(oxkeeper_server::testing::Watchdog::arm()),
        }
    }

    /// Whether the server is our in-process oxkeeper (some settings, like TTL nodes, depend on config).
    pub fn in_process(&self) -> bool {
        self._dir.is_some()
    }
}

/// A unique root for one test, so tests can share a server (e.g. an external ZooKeeper).
pub fn unique_root(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "/oxk-client-{name}-{t:x}-{}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub async fn connect(addr: &str, timeout: Duration) -> (Client, StateStream) {
    within(SOON, "connect", Client::connect(addr, timeout))
        .await
        .expect("connect")
}

/// Creates `path` (persistent, open ACL), ignoring NodeExists.
pub async fn ensure(client: &Client, path: &str) {
    match client
        .create(path, b"", &acl::open_unsafe(), CreateMode::Persistent)
        .await
    {
        Ok(_) | Err(oxkeeper_client::Error::NodeExists) => {}
        Err(e) => panic!("create {path}: {e}"),
    }
}

/// Waits for the state stream to report `want`.
pub async fn wait_state(states: &mut StateStream, want: State, d: Duration) {
    within(d, &format!("state {want:?}"), async {
        loop {
            match states.next().await {
                Some(s) if s == want => return,
                Some(_) => {}
                None => panic!("state stream ended before {want:?}"),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------------------
// A TCP proxy that can be cut (every connection closed, new ones refused), stalled (bytes swallowed), or
// made to drop one reply and close that connection (it reads the frames' length prefixes and headers).

pub struct Proxy {
    pub addr: SocketAddr,
    inner: Arc<ProxyInner>,
    accept: JoinHandle<()>,
}

struct ProxyInner {
    upstream: Mutex<String>,
    cut: AtomicBool,
    stalled: AtomicBool,
    conns: Mutex<Vec<JoinHandle<()>>>,
    /// The opcode of the request whose reply is to be lost (see [`Proxy::lose_next_reply`]); 0 for none.
    lose_reply_to: AtomicI32,
    replies_lost: AtomicU64,
    /// Connections accepted so far (refused ones included).
    accepted: AtomicU64,
}

/// One proxied connection's state, shared by its two pumps.
struct ConnInner {
    /// The xid of the request whose reply must be dropped, once the client sent it.
    doomed_xid: Mutex<Option<i32>>,
    /// Ends the connection (both sockets closed).
    kill: Notify,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let inner = Arc::new(ProxyInner {
            upstream: Mutex::new(upstream.to_string()),
            cut: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            lose_reply_to: AtomicI32::new(0),
            replies_lost: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let acc = inner.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                acc.accepted.fetch_add(1, Ordering::SeqCst);
                if acc.cut.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let inner = acc.clone();
                let h = tokio::spawn(async move {
                    let upstream = inner.upstream.lock().unwrap().clone();
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    let conn = Arc::new(ConnInner {
                        doomed_xid: Mutex::new(None),
                        kill: Notify::new(),
                    });
                    let a = tokio::spawn(pump(dr, uw, inner.clone(), conn.clone(), Dir::Up));
                    let b = tokio::spawn(pump(ur, dw, inner.clone(), conn.clone(), Dir::Down));
                    // Aborting this task must close both sockets: abort the pumps on drop.
                    let _guard = AbortOnDrop(vec![a, b]);
                    conn.kill.notified().await;
                });
                acc.conns.lock().unwrap().push(h);
            }
        });
        Proxy {
            addr,
            inner,
            accept,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Closes every proxied connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.inner.cut.store(true, Ordering::SeqCst);
        for h in self.inner.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    /// Keeps connections open but swallows every byte (both ways) until [`Proxy::restore`].
    pub fn stall(&self) {
        self.inner.stalled.store(true, Ordering::SeqCst);
    }

    /// Where new connections go from now on (existing ones are left alone).
    pub fn set_upstream(&self, addr: &str) {
        *self.inner.upstream.lock().unwrap() = addr.to_string();
    }

    /// Arms a one-shot fault: the next request with opcode `op` (e.g. `OpCode::Create2`) reaches the server,
    /// but its reply is dropped and the connection closed, as when a connection dies with the reply on the
    /// wire. The client sees ConnectionLoss for a request the server did process.
    pub fn lose_next_reply(&self, op: i32) {
        assert_ne!(op, 0, "opcode 0 means none");
        self.inner.lose_reply_to.store(op, Ordering::SeqCst);
    }

    /// How many connections the proxy accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// How many replies [`Proxy::lose_next_reply`] dropped so far.
    pub fn replies_lost(&self) -> u64 {
        self.inner.replies_lost.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.inner.cut.store(false, Ordering::SeqCst);
        self.inner.stalled.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.inner.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Which way a pump copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client to server: requests (`len, xid, type, ...`) after the ConnectRequest.
    Up,
    /// Server to client: replies (`len, xid, zxid, err, ...`) after the ConnectResponse.
    Down,
}

/// Splits a byte stream into length-prefixed frames (the first one being the handshake).
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
    seen: u64,
}

impl Frames {
    /// The next complete frame (with its length prefix) and whether it is the handshake.
    fn next(&mut self) -> Option<(Vec<u8>, bool)> {
        let len = i32::from_be_bytes(self.buf.get(..4)?.try_into().ok()?);
        let total = 4 + len.max(0) as usize;
        if self.buf.len() < total {
            return None;
        }
        let frame: Vec<u8> = self.buf.drain(..total).collect();
        self.seen += 1;
        Some((frame, self.seen == 1))
    }
}

fn be_i32(frame: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    inner: Arc<ProxyInner>,
    conn: Arc<ConnInner>,
    dir: Dir,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames = Frames::default();
    // Once bytes were swallowed (stall) the framing is lost: copy blindly from then on.
    let mut framed = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if inner.stalled.load(Ordering::SeqCst) {
            framed = false;
            continue;
        }
        if !framed {
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
            continue;
        }
        frames.buf.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        let mut doomed = false;
        while let Some((frame, handshake)) = frames.next() {
            if !handshake {
                match dir {
                    Dir::Up => {
                        let op = be_i32(&frame, 8).unwrap_or(0);
                        let armed = inner.lose_reply_to.load(Ordering::SeqCst);
                        if armed != 0
                            && op == armed
                            && inner
                                .lose_reply_to
                                .compare_exchange(armed, 0, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok()
                        {
                            // Recorded before the request is forwarded: its reply cannot come first.
                            *conn.doomed_xid.lock().unwrap() = be_i32(&frame, 4);
                        }
                    }
                    Dir::Down => {
                        let xid = be_i32(&frame, 4);
                        if xid.is_some() && *conn.doomed_xid.lock().unwrap() == xid {
                            doomed = true;
                            break;
                        }
                    }
                }
            }
            out.extend_from_slice(&frame);
        }
        if !out.is_empty() && to.write_all(&out).await.is_err() {
            break;
        }
        if doomed {
            inner.replies_lost.fetch_add(1, Ordering::SeqCst);
            conn.kill.notify_one();
            return;
        }
    }
    let _ = to.shutdown().await;
}
