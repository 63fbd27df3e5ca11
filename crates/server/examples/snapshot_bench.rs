//! What a snapshot costs at N nodes (default 1,000,000): the executor's hand-off (the O(1) copy: the only
//! time apply is held up), the serialization and file write that run on another thread, and the restart
//! (reading the file back, decoding and checking the state). Also apply's latency while a serialization of
//! the same state runs beside it. A measurement, not a test:
//!
//! `cargo run --release -p oxkeeper-server --example snapshot_bench -- [nodes] [dir]`
//!
//! With `SNAP_ONLY=1` it builds the state, serializes it ten times into nothing and stops: a run to
//! profile the serialization alone (`perf record`).

use std::time::{Duration, Instant};

use oxkeeper_core::state::{ApplySettings, Command, CommandOp, StateMachine};
use oxkeeper_proto::{CreateRequest, OpCode, Request, SetDataRequest};
use oxkeeper_server::executor::{decode_state, encode_state, write_state};
use oxkeeper_storage::snapshot::{read_snapshot, write_snapshot, write_snapshot_with};
use oxkeeper_storage::RealDisk;

fn cmd_as(session_id: i64, op: CommandOp) -> Command {
    Command {
        session_id,
        cxid: 0,
        time_ms: 1_700_000_000_000,
        auth: vec![].into(),
        op,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| format!("/tmp/oxk-snapbench-{}", std::process::id()));
    let cmd = |op| cmd_as(0, op);
    let mut sm = StateMachine::new();
    sm.apply(&cmd(CommandOp::Bootstrap {
        secret: vec![7; 32],
        member_id: 1,
        settings: ApplySettings::default(),
    }));
    let session = match sm
        .apply(&cmd(CommandOp::CreateSession { timeout_ms: 30_000 }))
        .session
    {
        Some(oxkeeper_core::SessionChange::Created { id, .. }) => id,
        other => panic!("no session: {other:?}"),
    };
    let cmd = move |op| cmd_as(session, op);
    let acl = oxkeeper_core::acl::open_acl_unsafe();
    let create = |path: String| {
        cmd(CommandOp::Write(Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path,
                data: Some(vec![b'x'; 32]),
                acl: acl.clone(),
                flags: 0,
                ttl: -1,
            },
        }))
    };
    let t = Instant::now();
    let per_dir = 1000;
    for d in 0..nodes.div_ceil(per_dir) {
        sm.apply(&create(format!("/d{d}")));
        for i in 0..per_dir.min(nodes - d * per_dir) {
            sm.apply(&create(format!("/d{d}/n{i}")));
        }
    }
    println!(
        "built {} nodes in {:?}",
        sm.tree().node_count(),
        t.elapsed()
    );

    // The serialization alone (into nothing), and as the server writes a snapshot (streamed into its
    // file): the best of three each.
    let best = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    if std::env::var_os("SNAP_ONLY").is_some() {
        for _ in 0..10 {
            write_state(&sm, &mut std::io::sink()).expect("serialize");
        }
        return;
    }
    let alone = best(&mut || write_state(&sm, &mut std::io::sink()).expect("serialize"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let streamed = best(&mut || {
        write_snapshot_with(&RealDisk, std::path::Path::new(&dir), 2, b"meta", |out| {
            write_state(&sm, out)
        })
        .expect("write the snapshot");
    });
    println!("serialize alone (best of 3): {alone:?}; streamed into a snapshot file: {streamed:?}");

    // The hand-off: all apply waits for.
    let t = Instant::now();
    let copy = sm.clone();
    let handoff = t.elapsed();

    // Apply while the copy is serialized on another thread: the first writes after the copy pay for
    // copy-on-write of the paths they touch.
    let writer = std::thread::spawn(move || {
        let t = Instant::now();
        let bytes = encode_state(&copy);
        let encoded = t.elapsed();
        let t = Instant::now();
        std::fs::create_dir_all(&dir).expect("bench dir");
        let path = write_snapshot(&RealDisk, std::path::Path::new(&dir), 1, b"meta", &bytes)
            .expect("write the snapshot");
        (bytes.len(), encoded, t.elapsed(), path, dir)
    });
    let mut worst = Duration::ZERO;
    let mut applied = 0u64;
    let mut total = Duration::ZERO;
    let mut over_1ms = 0u64;
    while !writer.is_finished() {
        let path = format!("/d{}/n{}", applied % 1000, applied % 1000);
        let t = Instant::now();
        sm.apply(&cmd(CommandOp::Write(Request::SetData(SetDataRequest {
            path,
            data: Some(vec![b'y'; 32]),
            version: -1,
        }))));
        let took = t.elapsed();
        worst = worst.max(took);
        over_1ms += u64::from(took > Duration::from_millis(1));
        total += took;
        applied += 1;
    }
    let (size, encoded, written, path, dir) = writer.join().expect("writer thread");

    let t = Instant::now();
    let file = read_snapshot(&RealDisk, 1, &path).expect("read back");
    let read = t.elapsed();
    let t = Instant::now();
    let back = decode_state(&file.data).expect("decode");
    let decoded = t.elapsed();
    let t = Instant::now();
    back.check_invariants().expect("consistent");
    let checked = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);

    println!("hand-off (apply held up): {handoff:?}");
    println!("serialize {size} bytes: {encoded:?}; write + fsync + rename: {written:?}");
    println!(
        "apply during the serialization: {applied} setData, mean {:?}, {over_1ms} over 1 ms, worst {worst:?}",
        total / applied.max(1) as u32
    );
    println!("restart: read {read:?}, decode {decoded:?} (a full invariant check, not done at restart: {checked:?})");
}
