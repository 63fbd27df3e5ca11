//! A server restart (SIGKILL and SIGTERM) under a connected client: the client reconnects to the restarted
//! server with the same session, its ephemeral node is still there and its one-shot watch is re-armed.
//!
//! The server is a child process: the oxkeeper binary (`OXKEEPER_BIN`, default target/release/oxkeeper; build
//! it first), or Apache ZooKeeper 3.8 from the Debian package with `OXK_CLIENT_TEST_KIND=zookeeper`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use oxkeeper_client::{acl, CreateMode, EventType, State, ANY_VERSION};

const ZK_CLASSPATH: &str =
    "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

/// A server process on a fixed port with a data directory that outlives it.
struct ServerProcess {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn oxkeeper_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OXKEEPER_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/oxkeeper");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release --bin oxkeeper` first (or set OXKEEPER_BIN)",
        p.display()
    );
    p
}

/// A free port that stays this test's across a restart: below the kernel's ephemeral range (32768 and up
/// on Linux), so no outgoing connection (the clients' reconnect attempts) and no port-0 bind can take it
/// while the server is down, and never handed out twice in this process (the tests run in parallel).
fn reserve_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let start = 20_000 + (std::process::id() % 10_000) as u16;
    for i in 0..10_000u16 {
        let port = 20_000 + (start - 20_000 + i) % 10_000;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 20000..30000");
}

impl ServerProcess {
    fn new(dir: &Path) -> ServerProcess {
        let port = reserve_port();
        ServerProcess {
            port,
            dir: dir.to_path_buf(),
            child: None,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn zookeeper() -> bool {
        std::env::var("OXK_CLIENT_TEST_KIND").as_deref() == Ok("zookeeper")
    }

    /// Starts the server and waits until it answers.
    async fn start(&mut self) {
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let cfg = self.dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=100\nmaxSessionTimeout=30000\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\n",
                data.display(),
                self.port
            ),
        )
        .expect("write zoo.cfg");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("server log");
        let mut cmd = if Self::zookeeper() {
            let mut c = Command::new("java");
            c.args(["-Xmx256m", "-XX:+UseSerialGC", "-cp", ZK_CLASSPATH])
                .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
                .arg(&cfg);
            c
        } else {
            let mut c = Command::new(oxkeeper_bin());
            c.arg("--config").arg(&cfg);
            c
        };
        let child = cmd
            .current_dir(&self.dir)
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn the server");
        self.child = Some(child);
        let addr = self.addr();
        within(Duration::from_secs(60), "the server to answer", async {
            loop {
                if let Ok(Ok((c, _))) = tokio::time::timeout(
                    Duration::from_secs(2),
                    oxkeeper_client::Client::connect(&addr, Duration::from_secs(2)),
                )
                .await
                {
                    let _ = c.close().await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// Stops the server with `signal` (SIGKILL or SIGTERM) and waits for it to exit.
    fn stop(&mut self, signal: i32) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
            let _ = child.wait();
        }
    }
}

use libc::{SIGKILL, SIGTERM};

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop(SIGKILL);
        // A failing test shows what the server said (the data directory goes with the test).
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(120).collect();
            eprintln!("---- the server's log (last {} lines) ----", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

async fn restart_keeps_the_session(signal: i32) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut server = ServerProcess::new(dir.path());
    server.start().await;
    let (c, mut states) = connect(&server.addr(), Duration::from_secs(8)).await;
    let root = unique_root("restart");
    ensure(&c, &root).await;
    let (eph, _) = c
        .create(
            &format!("{root}/eph"),
            b"mine",
            &acl::open_unsafe(),
            CreateMode::Ephemeral,
        )
        .await
        .expect("create the ephemeral");
    let (_, _, watch) = c.get_data_w(&root).await.expect("watch");
    let session = c.session_id();

    server.stop(signal);
    wait_state(&mut states, State::Disconnected, SOON).await;
    server.start().await;
    wait_state(&mut states, State::Connected, Duration::from_secs(20)).await;
    assert_eq!(c.session_id(), session, "same session after the restart");
    let (data, stat) = c.get_data(&eph).await.expect("the ephemeral survived");
    assert_eq!(
        (data.as_slice(), stat.ephemeral_owner),
        (&b"mine"[..], session)
    );
    // The watch was re-armed on the restarted server.
    let (other, _) = connect(&server.addr(), Duration::from_secs(4)).await;
    other
        .set_data(&root, b"changed", ANY_VERSION)
        .await
        .expect("set");
    let ev = within(SOON, "the re-armed watch", watch).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDataChanged, root.as_str())
    );
    other.close().await.expect("close");
    c.close().await.expect("close");
}

#[tokio::test]
async fn sigkill_restart_keeps_the_session_its_ephemerals_and_watches() {
    restart_keeps_the_session(SIGKILL).await;
}

#[tokio::test]
async fn sigterm_restart_keeps_the_session_its_ephemerals_and_watches() {
    restart_keeps_the_session(SIGTERM).await;
}
