//! Test harness: a server to talk to (oxkeeper in-process on port 0, or whatever
//! `OXK_CLIENT_TEST_SERVER=host:port` names, e.g. an Apache ZooKeeper 3.8), and a TCP proxy a test can
//! cut or stall. Every wait is on a condition with a deadline, never a bare sleep.

#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxkeeper_client::{acl, Client, CreateMode, State, StateStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
}

impl TestServer {
    pub async fn start() -> TestServer {
        if let Ok(addr) = std::env::var("OXK_CLIENT_TEST_SERVER") {
            return TestServer { addr, _dir: None };
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
            ..oxkeeper_server::Config::default()
        };
        let (running, accept) = oxkeeper_server::server::start(config)
            .await
            .expect("the server starts");
        tokio::spawn(accept);
        TestServer {
            addr: running.local_addr.to_string(),
            _dir: Some(dir),
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
// A TCP proxy that can be cut (every connection closed, new ones refused) or stalled (bytes swallowed).

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
        });
        let acc = inner.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
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
                    let a = tokio::spawn(pump(dr, uw, inner.clone()));
                    let b = tokio::spawn(pump(ur, dw, inner.clone()));
                    // Aborting this task must close both sockets: abort the pumps on drop.
                    let _guard = AbortOnDrop(vec![a, b]);
                    std::future::pending::<()>().await;
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

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    inner: Arc<ProxyInner>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if inner.stalled.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
