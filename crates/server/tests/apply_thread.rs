//! The apply thread (`server::apply_thread`): while the disk is quick, the log's writes and fdatasyncs are
//! made on it, beside the executor and openraft; a disk that turns slow is left to the log's own thread; and
//! what does not need the executor (pings, reads of a connection with nothing queued, most four-letter
//! words) is answered while the apply thread waits on the disk: the connections whose readers live there
//! are moved off it meanwhile (`server::home`).

mod common;

use common::{
    create_req, eventually, exists_req, four_letter, mntr, Client, GateDisk, TestServer, SOON,
};
use std::time::{Duration, Instant};

use oxkeeper_proto::CreateMode;

const WRITES: u64 = 20;

/// How long the held write is held at least: far beyond the 1 ms the log counts as a quick write.
const SLOW: Duration = Duration::from_millis(5);

async fn syncs(server: &TestServer) -> (u64, u64) {
    (
        mntr(server.addr, "oxkeeper_log_syncs").await,
        mntr(server.addr, "oxkeeper_log_syncs_on_apply_thread").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_synced_on_the_apply_thread_until_the_disk_turns_slow() {
    let disk = GateDisk::default();
    // No spare segment zeroed beside the log: its writes, in the device's queue, can make a sync of the log
    // slow enough to count as a slow disk, which this test must decide alone.
    let server = TestServer::start_on(disk.clone(), |cfg| cfg.log_prepare_segments = false).await;
    let mut c = Client::connect(server.addr, 30_000).await;
    let mut reader = Client::connect(server.addr, 30_000).await;

    // A quick disk: every one of these writes (one at a time, one sync each) is synced on the apply thread.
    let (all_before, apply_before) = syncs(&server).await;
    for i in 0..WRITES {
        let path = format!("/quick{i}");
        let reply = c
            .call(i as i32 + 1, &create_req(&path, CreateMode::Persistent))
            .await;
        assert_eq!(reply.err(), 0, "create {path}");
    }
    let (all, apply) = syncs(&server).await;
    assert!(all - all_before >= WRITES, "{all_before} -> {all} syncs");
    // Each sync slower than the log counts as quick (1 ms: a machine busy with something else, as when
    // cargo builds beside the tests) rightly sends the write after it to the log's thread; most stay here.
    // (With the inline write switched off, none do.)
    assert!(
        (apply - apply_before) * 4 >= (all - all_before) * 3,
        "writes on a quick disk were synced off the apply thread: {} of {}",
        (all - all_before) - (apply - apply_before),
        all - all_before
    );

    // The apply thread waits in a held fdatasync: pings, a read of a connection with nothing queued and
    // `mntr` are answered meanwhile.
    let gate = disk.stall();
    c.tx.send(100, &create_req("/held", CreateMode::Persistent))
        .await
        .expect("send the held create");
    disk.sync_blocked().await;
    let held_since = Instant::now();
    reader.tx.ping().await.expect("send a ping");
    let pong = reader.rx.recv_within(SOON).await.expect("the ping's reply");
    assert!(pong.is_ping());
    // The reader's connection, parked on the apply thread since its handshake, was moved off it to be read.
    assert!(
        mntr(server.addr, "oxkeeper_connections_moved_off_apply").await >= 1,
        "the held apply thread's connections were not moved"
    );
    let read = reader.call(2, &exists_req("/quick0")).await;
    assert_eq!(
        read.err(),
        0,
        "a read while the apply thread waits on the disk"
    );
    assert!(
        four_letter(server.addr, "ruok").await == "imok",
        "ruok while the apply thread waits on the disk"
    );
    let (all_held, _) = syncs(&server).await;
    assert!(disk.blocked_syncs() > 0, "the held write went through");
    // Held long enough to count as slow (the log's bound is 1 ms), on purpose.
    if let Some(rest) = SLOW.checked_sub(held_since.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    gate.release();
    let held =
        c.rx.recv_within(SOON)
            .await
            .expect("the held create's reply");
    assert_eq!((held.xid(), held.err()), (100, 0));

    // The held write took long: the log's own thread takes the next one (the executor does not wait on a
    // slow disk again), and the apply thread the one after, the disk being quick again.
    let (all, apply) = syncs(&server).await;
    assert_eq!(all, all_held + 1, "the held write is one sync");
    let reply = c
        .call(101, &create_req("/after", CreateMode::Persistent))
        .await;
    assert_eq!(reply.err(), 0);
    let (all_after, apply_after) = syncs(&server).await;
    assert_eq!(
        (all_after - all, apply_after - apply),
        (1, 0),
        "the write after a slow one was synced on the apply thread"
    );
    let reply = c
        .call(102, &create_req("/again", CreateMode::Persistent))
        .await;
    assert_eq!(reply.err(), 0);
    let (all_again, apply_again) = syncs(&server).await;
    assert_eq!((all_again - all_after, apply_again - apply_after), (1, 1));
}

/// Waits (up to `SOON`) until exactly `n` connections are parked on the apply thread.
async fn parked_on_apply_reaches(server: &TestServer, n: u64, what: &str) {
    let what = format!("{n} connections parked on the apply thread: {what}");
    eventually(SOON, &what, || async {
        (mntr(server.addr, "oxkeeper_connections_parked_on_apply").await == n).then_some(())
    })
    .await
}

/// Two reads, each its own round trip (so the second is read in a run of its own, whatever run the first
/// shared with the handshake).
async fn two_reads(c: &mut Client, xid: i32) {
    for x in [xid, xid + 1] {
        assert_eq!(c.call(x, &exists_req("/")).await.err(), 0, "read {x}");
    }
}

/// A client whose last requests were writes has its socket parked on the apply thread; one whose last
/// requests were reads the reader answered has it on the workers (`server::home`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_clients_park_on_the_apply_thread_and_reading_ones_on_the_workers() {
    // No fdatasync: no call long enough for the watchdog to move anyone while this counts.
    let server = TestServer::start(|c| c.force_sync = false).await;
    let mut reader = Client::connect(server.addr, 30_000).await;
    two_reads(&mut reader, 1).await;
    parked_on_apply_reaches(&server, 0, "one client that reads").await;
    let mut writer = Client::connect(server.addr, 30_000).await;
    two_reads(&mut writer, 1).await;
    parked_on_apply_reaches(&server, 0, "two clients that read").await;

    let w = writer
        .call(3, &create_req("/w", CreateMode::Persistent))
        .await;
    assert_eq!(w.err(), 0);
    parked_on_apply_reaches(&server, 1, "one of them wrote").await;
    let r = reader
        .call(3, &create_req("/r", CreateMode::Persistent))
        .await;
    assert_eq!(r.err(), 0);
    parked_on_apply_reaches(&server, 2, "both wrote").await;

    two_reads(&mut writer, 4).await;
    parked_on_apply_reaches(&server, 1, "one of them reads again").await;
    two_reads(&mut reader, 4).await;
    parked_on_apply_reaches(&server, 0, "both read again").await;
    assert_eq!(
        mntr(server.addr, "oxkeeper_connections_moved_off_apply").await,
        0,
        "the watchdog moved connections: the counts above were not the policy's"
    );
}
