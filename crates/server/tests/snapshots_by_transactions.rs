//! `snapCount` counts transactions, as ZooKeeper's does, not log entries: a log entry carries a batch of
//! commands, so counting entries would let the log (and its in-memory tail) grow to many times `snapCount`
//! transactions between snapshots under load. Writes are made to gather into a few entries by stalling the
//! log's fdatasync while they arrive.

mod common;

use std::time::{Duration, Instant};

use common::{create_req, mntr, mntr_reaches, ok_replies, Client, GateDisk, TestServer, SOON};
use oxkeeper_proto::CreateMode;

const SNAP_COUNT: u64 = 50;
const WRITES: usize = 120;

fn snapshot_files(server: &TestServer) -> Vec<String> {
    let dir = server.data_dir.join("snapshots");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapshot."))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_follows_snap_count_transactions_batched_into_few_entries() {
    let disk = GateDisk::default();
    let server = TestServer::start_on(disk.clone(), |c| c.snap_count = SNAP_COUNT).await;
    let mut c = Client::connect(server.addr, 30_000).await;
    let before = snapshot_files(&server).len();
    let entries_before = mntr(server.addr, "oxkeeper_log_entries").await;

    // While the first write's fdatasync is held, the others gather behind it.
    let gate = disk.stall();
    for i in 0..WRITES {
        let req = create_req(&format!("/n{i:04}"), CreateMode::Persistent);
        c.tx.send(i as i32 + 1, &req).await.expect("send a create");
    }
    disk.sync_blocked().await;
    // Every create has reached the executor (outstanding) and gathers there while the log is stalled.
    mntr_reaches(server.addr, "outstanding_requests", WRITES as u64).await;
    gate.release();
    ok_replies(&mut c, WRITES, "create").await;
    let entries = mntr(server.addr, "oxkeeper_log_entries").await - entries_before;
    assert!(
        entries < SNAP_COUNT,
        "the {WRITES} creates took {entries} log entries: not batched, the test proves nothing"
    );

    let deadline = Instant::now() + SOON;
    while snapshot_files(&server).len() <= before {
        assert!(
            Instant::now() < deadline,
            "no snapshot after {WRITES} transactions in {entries} log entries at snapCount {SNAP_COUNT}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
