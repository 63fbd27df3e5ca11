//! Every workload, briefly, against an in-process oxkeeper (or the server `OXK_BENCH_TEST_SERVER=host:port`
//! names): the report's counts must agree with what the server holds afterwards, with no error. These check
//! the instrument, not the server's speed: no figure here is a timing assertion, except that expiry lateness
//! stays within the bound the server promises (timeout + one tick + a margin for a loaded machine).

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::Parser;
use oxkeeper_bench::session::Session;
use oxkeeper_bench::{run_workload, BenchArgs, Report};
use oxkeeper_proto::{OpCode, PathWatch, Request, Response};

const TICK_MS: u64 = 100;

struct TestServer {
    addr: String,
    _dir: Option<tempfile::TempDir>,
    /// Ends the process if the in-process server is held far too long (a deadlock no timeout in the
    /// runtime can see).
    _watchdog: Option<oxkeeper_server::testing::Watchdog>,
}

async fn server() -> TestServer {
    if let Ok(addr) = std::env::var("OXK_BENCH_TEST_SERVER") {
        return TestServer {
            addr,
            _dir: None,
            _watchdog: None,
        };
    }
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let config = oxkeeper_server::Config {
        data_dir: dir.path().to_path_buf(),
        data_log_dir: dir.path().to_path_buf(),
        client_port: 0,
        client_port_address: Ipv4Addr::LOCALHOST.into(),
        max_client_cnxns: 0,
        tick_ms: TICK_MS,
        max_session_timeout_ms: Some(30_000),
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

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

async fn bench(srv: &TestServer, args: &str) -> Report {
    let argv = ["bench", "--quiet", "--server", &srv.addr]
        .into_iter()
        .map(String::from)
        .chain(args.split_whitespace().map(String::from));
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args}: {e}"));
    let report = run_workload(&cli.bench)
        .await
        .unwrap_or_else(|e| panic!("{args}: {e}"));
    assert_eq!(report.error_total, 0, "{args}: {}", report.table());
    report
}

fn latency<'a>(r: &'a Report, name: &str) -> &'a oxkeeper_bench::stats::Summary {
    r.latencies
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no latency {name} in\n{}", r.table()))
}

fn figure(r: &Report, name: &str) -> f64 {
    r.figures
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no figure {name} in\n{}", r.table()))
        .value
}

/// The Stat of `path`, or None when it does not exist.
async fn stat(s: &mut Session, path: &str) -> Option<oxkeeper_proto::Stat> {
    let req = Request::Exists(PathWatch {
        path: path.to_string(),
        watch: false,
    });
    let (h, body) = s.call(&req).await.expect("exists");
    if h.err != 0 {
        return None;
    }
    match Response::decode(OpCode::Exists, &body).expect("a Stat") {
        Response::Stat(st) => Some(st),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_counts_match_the_nodes_on_the_server() {
    let srv = server().await;
    let r = bench(
        &srv,
        "ops --op create --requests 300 --sessions 3 --depth 4 --keep",
    )
    .await;
    assert_eq!(r.rates[0].count, 300);
    assert_eq!(latency(&r, "create").count, 300);
    assert_eq!(figure(&r, "nodes created"), 300.0);
    let root = r.root.clone().expect("a root");
    let mut s = Session::connect(&srv.addr, 10_000).await.expect("connect");
    assert_eq!(
        stat(&mut s, &root).await.expect("root kept").num_children,
        300
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_set_is_one_version_on_the_server() {
    let srv = server().await;
    let r = bench(
        &srv,
        "ops --op set --requests 200 --sessions 4 --depth 2 --keys 10 --keep",
    )
    .await;
    assert_eq!(latency(&r, "set").count, 200);
    let root = r.root.clone().expect("a root");
    let mut s = Session::connect(&srv.addr, 10_000).await.expect("connect");
    let mut versions = 0;
    for k in 0..10 {
        versions += stat(&mut s, &format!("{root}/k{k:07}"))
            .await
            .expect("key exists")
            .version;
    }
    assert_eq!(versions, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_exactly_the_prepared_nodes() {
    let srv = server().await;
    let r = bench(
        &srv,
        "ops --op delete --requests 150 --sessions 2 --depth 8 --keep",
    )
    .await;
    assert_eq!(latency(&r, "delete").count, 150);
    let root = r.root.clone().expect("a root");
    let mut s = Session::connect(&srv.addr, 10_000).await.expect("connect");
    assert_eq!(
        stat(&mut s, &root).await.expect("root kept").num_children,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_runs_of_reads_and_mixes_clean_up_their_root() {
    let srv = server().await;
    let mut s = Session::connect(&srv.addr, 10_000).await.expect("connect");
    for args in [
        "ops --op get --duration 500ms --sessions 2 --depth 4",
        "ops --op exists --duration 300ms",
        "ops --op children --duration 300ms --children 5",
        "ops --op mixed --mix get=70,set=10,create=10,exists=5,children=5 --duration 500ms --sessions 3",
    ] {
        let r = bench(&srv, args).await;
        let total = r.rates[0].count;
        assert!(total > 0, "{args}: nothing completed");
        let main = r.latencies.last().expect("a latency");
        assert_eq!(main.count, total, "{args}");
        if r.latencies.len() > 1 {
            let parts: u64 = r.latencies[..r.latencies.len() - 1]
                .iter()
                .map(|l| l.count)
                .sum();
            assert_eq!(parts, total, "{args}: per-op counts add up to the total");
        }
        let seconds: u64 = r.timeline.iter().map(|row| row.count).sum();
        assert_eq!(seconds, total, "{args}: the timeline holds every sample");
        let root = r.root.clone().expect("a root");
        assert!(stat(&mut s, &root).await.is_none(), "{args}: {root} deleted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_the_scheduled_requests() {
    let srv = server().await;
    let r = bench(&srv, "ops --op get --rate 2000 --sessions 2 --requests 400").await;
    assert_eq!(latency(&r, "get").count, 400);
    assert_eq!(latency(&r, "send lag (open loop)").count, 400);
    // 400 requests at 2000/s take 200 ms of schedule: the run cannot be much shorter than that.
    assert!(r.window_s >= 0.19, "window {}", r.window_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_established_and_closed() {
    let srv = server().await;
    let r = bench(&srv, "sessions --requests 50 --concurrency 4").await;
    assert_eq!(r.rates[0].count, 50);
    assert_eq!(r.rates[1].count, 50);
    assert_eq!(latency(&r, "close").count, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_survive_the_hold() {
    let srv = server().await;
    // A 300 ms timeout makes them ping every 100 ms, several times during the hold.
    let r = bench(
        &srv,
        "--session-timeout-ms 300 idle --sessions 20 --duration 700ms",
    )
    .await;
    assert_eq!(figure(&r, "sessions alive at the end"), 20.0);
    assert!(latency(&r, "ping").count >= 20, "{}", r.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_lateness_is_within_timeout_plus_a_tick() {
    let srv = server().await;
    let r = bench(
        &srv,
        "expiry --sessions 3 --ephemerals 4 --timeout-ms 400 --cleanup-ephemerals 500",
    )
    .await;
    let late = latency(&r, "lateness (per ephemeral)");
    assert_eq!(late.count, 12);
    assert_eq!(figure(&r, "ephemerals deleted"), 12.0);
    // Never early (that would be counted as an error), and at most one tick late plus scheduling margin.
    let bound = Duration::from_millis(TICK_MS) + Duration::from_millis(900);
    assert!(late.max_us <= bound.as_micros() as u64, "{}", r.table());
    assert_eq!(latency(&r, "cleanup: last NodeDeleted").count, 1);
    let root = r.root.clone().expect("a root");
    let mut s = Session::connect(&srv.addr, 10_000).await.expect("connect");
    assert!(stat(&mut s, &root).await.is_none(), "{root} deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_is_notified_of_every_write() {
    let srv = server().await;
    let r = bench(&srv, "watch --watchers 5 --writes 20").await;
    assert_eq!(r.rates[0].count, 20);
    assert_eq!(latency(&r, "every arrival").count, 100);
    assert_eq!(latency(&r, "last arrival per write").count, 20);
    // The slowest arrival of all is the last arrival of some write.
    assert_eq!(
        latency(&r, "last arrival per write").max_us,
        latency(&r, "every arrival").max_us
    );
}
