//! Microbenchmarks of the replicated state at a million nodes: apply of create / setData / delete, a
//! sequential create under a parent of 100,000 children, the getData and getChildren reads, a clone of
//! the whole state (what a snapshot costs the apply loop), and the snapshot serialization of a
//! 100,000-node state with its decoding (what a restart reads).
//!
//! cargo bench -p oxkeeper-core --bench tree
//!
//! The per-operation benchmarks take 1,000 samples of 100 operations, so that the writes and the reads
//! walk over 100,000 different nodes. The million-node state is built once and shared by the benchmarks; each one leaves the same nodes
//! behind (zxids and versions move on). Under `cargo test --all-targets` divan runs each benchmark once,
//! and every state is built 1,000 times smaller so the test run stays short.

use std::cell::RefCell;
use std::hint::black_box;

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use oxkeeper_core::{Command, CommandOp, StateMachine};
use oxkeeper_proto::{CreateMode, PathVersion, PathWatch, Request, SetDataRequest};

mod support;

use support::command;

fn main() {
    divan::main();
}

const CHILDREN_PER_DIR: usize = 1000;
const DATA_BYTES: usize = 100;
/// The parent of the sequential creates, and the prefix of their names.
const SEQ_PARENT: &str = "/seq";
const SEQ_PREFIX: &str = "s-";
/// How many distinct nodes the getData benchmark cycles over, spread over the whole tree.
const READ_PATHS: usize = 65_536;

/// Sizes of the states: the full ones under `cargo bench` (divan gets `--bench`, and no `--test`), a
/// thousandth when the benchmarks run as tests.
struct Scale {
    /// Directories of `CHILDREN_PER_DIR` nodes under `/bench`.
    dirs: usize,
    /// Children of `SEQ_PARENT`.
    seq_children: usize,
    /// Directories of `CHILDREN_PER_DIR` nodes in the state that is serialized.
    snapshot_dirs: usize,
}

fn scale() -> Scale {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    if bench {
        // 900 × 1,000 + 100,000 = 1,000,000 nodes; 100,000 in the serialized one.
        Scale {
            dirs: 900,
            seq_children: 100_000,
            snapshot_dirs: 100,
        }
    } else {
        Scale {
            dirs: 1,
            seq_children: 100,
            snapshot_dirs: 1,
        }
    }
}

fn create_mode(session_id: i64, path: String, mode: CreateMode) -> Command {
    support::create_node(session_id, path, vec![0x5a; DATA_BYTES], mode)
}

fn create(session_id: i64, path: String) -> Command {
    create_mode(session_id, path, CreateMode::Persistent)
}

fn delete(session_id: i64, path: String) -> Command {
    command(
        session_id,
        CommandOp::Write(Request::Delete(PathVersion { path, version: -1 })),
    )
}

fn set_data(session_id: i64, path: String) -> Command {
    command(
        session_id,
        CommandOp::Write(Request::SetData(SetDataRequest {
            path,
            data: Some(vec![0xa5; DATA_BYTES]),
            version: -1,
        })),
    )
}

fn apply_ok(sm: &mut StateMachine, cmd: &Command) {
    let a = sm.apply(cmd);
    assert_eq!(a.err, 0, "{cmd:?}: {a:?}");
}

/// A bootstrapped state with one session and `dirs` directories of `CHILDREN_PER_DIR` nodes of
/// `DATA_BYTES` at `/bench/d<k>/n<i>`, `seq_children` nodes at `/seq/c<i>`, and an empty `/new`.
struct BenchState {
    sm: StateMachine,
    session: i64,
    dirs: usize,
}

impl BenchState {
    fn build(dirs: usize, seq_children: usize) -> Self {
        let (mut sm, session) = support::bootstrapped();
        for parent in ["/bench", "/new", SEQ_PARENT] {
            apply_ok(&mut sm, &create(session, parent.into()));
        }
        for d in 0..dirs {
            apply_ok(&mut sm, &create(session, format!("/bench/d{d}")));
            for i in 0..CHILDREN_PER_DIR {
                apply_ok(&mut sm, &create(session, format!("/bench/d{d}/n{i}")));
            }
        }
        for i in 0..seq_children {
            apply_ok(&mut sm, &create(session, format!("{SEQ_PARENT}/c{i}")));
        }
        BenchState { sm, session, dirs }
    }

    /// The children of `parent` whose name starts with `prefix`.
    fn children_with_prefix(&self, parent: &str, prefix: &str) -> Vec<String> {
        let node = self.sm.tree().get(parent).expect("the parent exists");
        node.sorted_children()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .map(|c| format!("{parent}/{c}"))
            .collect()
    }
}

/// The `k`th node of a walk that visits every node of `/bench` (`dirs` directories) once per
/// `dirs * CHILDREN_PER_DIR` steps, in an order that jumps around the tree.
fn node_path(dirs: usize, k: usize) -> String {
    // A prime stride that divides no node count used here: consecutive steps land far apart.
    let i = k.wrapping_mul(7919) % (dirs * CHILDREN_PER_DIR);
    format!("/bench/d{}/n{}", i % dirs, i / dirs)
}

thread_local! {
    /// The million-node state, built by the first benchmark that needs it. Divan runs the benchmarks
    /// one after the other on the main thread.
    static LARGE: RefCell<Option<BenchState>> = const { RefCell::new(None) };
}

/// Runs `f` on the shared large state (built on first use).
fn with_large_state<R>(f: impl FnOnce(&mut BenchState) -> R) -> R {
    let mut state = LARGE.take().unwrap_or_else(|| {
        let s = scale();
        BenchState::build(s.dirs, s.seq_children)
    });
    let r = f(&mut state);
    LARGE.set(Some(state));
    r
}

/// Apply of a create of a new 100 B node under `/new`, which grows to 100,000 children (the command is
/// built outside the timing). The nodes are deleted afterwards.
#[divan::bench(sample_count = 1000, sample_size = 100)]
fn apply_create(bencher: Bencher) {
    with_large_state(|st| {
        let session = st.session;
        let mut created = 0usize;
        bencher
            .with_inputs(|| {
                created += 1;
                create(session, format!("/new/c{created}"))
            })
            .bench_local_refs(|cmd| st.sm.apply(cmd));
        let made = st.children_with_prefix("/new", "c");
        assert_eq!(made.len(), created, "every create succeeded");
        for path in made {
            apply_ok(&mut st.sm, &delete(session, path));
        }
    });
}

/// Apply of a sequential create (`/seq/s-`, suffix from the parent's cversion) under a parent holding
/// 100,000 children. The nodes are deleted afterwards.
#[divan::bench(sample_count = 1000, sample_size = 100)]
fn apply_create_sequential_100k_siblings(bencher: Bencher) {
    with_large_state(|st| {
        let session = st.session;
        let mut created = 0usize;
        bencher
            .with_inputs(|| {
                created += 1;
                create_mode(
                    session,
                    format!("{SEQ_PARENT}/{SEQ_PREFIX}"),
                    CreateMode::PersistentSequential,
                )
            })
            .bench_local_refs(|cmd| st.sm.apply(cmd));
        let made = st.children_with_prefix(SEQ_PARENT, SEQ_PREFIX);
        assert_eq!(made.len(), created, "every sequential create succeeded");
        for path in made {
            apply_ok(&mut st.sm, &delete(session, path));
        }
    });
}

/// Apply of a setData of 100 B, walking over the whole tree.
#[divan::bench(sample_count = 1000, sample_size = 100)]
fn apply_set_data(bencher: Bencher) {
    with_large_state(|st| {
        let (session, dirs) = (st.session, st.dirs);
        apply_ok(&mut st.sm, &set_data(session, node_path(dirs, 0)));
        let mut next = 0usize;
        let sm = &mut st.sm;
        bencher
            .with_inputs(|| {
                next += 1;
                set_data(session, node_path(dirs, next))
            })
            .bench_local_refs(|cmd| sm.apply(cmd));
    });
}

/// Apply of a delete of a leaf under `/new` (created, outside the timing, just before).
#[divan::bench(sample_count = 1000, sample_size = 100)]
fn apply_delete(bencher: Bencher) {
    with_large_state(|st| {
        let session = st.session;
        let sm = RefCell::new(&mut st.sm);
        let mut next = 0usize;
        bencher
            .with_inputs(|| {
                next += 1;
                let path = format!("/new/d{next}");
                apply_ok(&mut sm.borrow_mut(), &create(session, path.clone()));
                delete(session, path)
            })
            .bench_local_refs(|cmd| sm.borrow_mut().apply(cmd));
        assert!(
            st.children_with_prefix("/new", "d").is_empty(),
            "every delete succeeded"
        );
    });
}

/// getData of a 100 B node, as the server answers it (ACL check, Stat, copy of the data), cycling over
/// `READ_PATHS` nodes spread over the tree.
#[divan::bench(sample_count = 1000, sample_size = 100)]
fn read_get_data(bencher: Bencher) {
    with_large_state(|st| {
        let reqs: Vec<Request> = (0..READ_PATHS)
            .map(|k| {
                Request::GetData(PathWatch {
                    path: node_path(st.dirs, k),
                    watch: false,
                })
            })
            .collect();
        assert_eq!(st.sm.read(0, &reqs[0], &[]).0, 0, "the node is readable");
        let mut next = 0usize;
        bencher.bench_local(|| {
            next = (next + 1) % reqs.len();
            st.sm.read(0, black_box(&reqs[next]), &[])
        });
    });
}

/// getChildren of a directory of 1,000 children (the reply lists them all).
#[divan::bench(sample_count = 1000)]
fn read_get_children_1000(bencher: Bencher) {
    with_large_state(|st| {
        let req = Request::GetChildren(PathWatch {
            path: "/bench/d0".into(),
            watch: false,
        });
        bencher
            .counter(ItemsCount::new(CHILDREN_PER_DIR))
            .bench_local(|| st.sm.read(0, black_box(&req), &[]));
    });
}

/// A clone of the whole state: persistent maps make it O(1), and it is all a snapshot holds the apply
/// loop up for.
#[divan::bench(sample_count = 1000, sample_size = 100)]
fn clone_state(bencher: Bencher) {
    with_large_state(|st| {
        bencher.bench_local(|| black_box(&st.sm).clone());
    });
}

/// The state the serialization benchmarks use: 100 directories of 1,000 nodes.
fn snapshot_state() -> StateMachine {
    BenchState::build(scale().snapshot_dirs, 0).sm
}

/// Serialization of a 100,000-node state as the server writes a snapshot (`encode_state` in
/// oxkeeper-server: postcard of the state, after one format byte).
#[divan::bench(sample_count = 20)]
fn encode_state_100k(bencher: Bencher) {
    let sm = snapshot_state();
    let len = postcard::to_allocvec(&sm)
        .expect("the state serializes")
        .len();
    bencher
        .counter(BytesCount::new(len))
        .bench_local(|| postcard::to_allocvec(black_box(&sm)).expect("the state serializes"));
}

/// Decoding of that serialized state, as a restart loads a snapshot (the tree is rebuilt node by node).
#[divan::bench(sample_count = 20)]
fn decode_state_100k(bencher: Bencher) {
    let sm = snapshot_state();
    let bytes = postcard::to_allocvec(&sm).expect("the state serializes");
    let decoded: StateMachine = postcard::from_bytes(&bytes).expect("the state decodes");
    assert!(decoded == sm, "the state survives the round trip");
    bencher
        .counter(BytesCount::new(bytes.len()))
        .bench_local(|| {
            postcard::from_bytes::<StateMachine>(black_box(&bytes)).expect("the state decodes")
        });
}

/// Ephemerals of the session closed by `close_session_with_ephemerals` (a thousandth under test).
fn cleanup_ephemerals() -> usize {
    if scale().dirs > 1 {
        10_000
    } else {
        10
    }
}

/// What the cleanup of a session costs the apply loop (the `expiry` workload's cleanup): closeSession of
/// a session with 10,000 ephemerals under one parent, with the events it fires matched against a
/// persistent recursive watch on `/` (as the workload's watcher has it). The state is built outside the
/// timing for each sample.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn close_session_with_ephemerals(bencher: Bencher) {
    let n = cleanup_ephemerals();
    bencher
        .with_inputs(|| {
            let (mut sm, owner) = support::bootstrapped();
            apply_ok(&mut sm, &create(owner, "/c".into()));
            let session = match sm
                .apply(&command(0, CommandOp::CreateSession { timeout_ms: 30_000 }))
                .session
            {
                Some(oxkeeper_core::SessionChange::Created { id, .. }) => id,
                other => panic!("no session: {other:?}"),
            };
            for k in 0..n {
                apply_ok(
                    &mut sm,
                    &create_mode(session, format!("/c/e{k:07}"), CreateMode::Ephemeral),
                );
            }
            let mut watches = oxkeeper_core::WatchTable::new();
            watches.add(1, "/", oxkeeper_core::WatchKind::PersistentRecursive);
            (sm, watches, command(session, CommandOp::CloseSession))
        })
        .counter(ItemsCount::new(n))
        .bench_local_values(|(mut sm, mut watches, close)| {
            let applied = sm.apply(&close);
            let mut events = 0;
            for t in &applied.triggers {
                events += watches.trigger(t).len();
            }
            assert_eq!(events, n, "one NodeDeleted per ephemeral");
            (sm, watches)
        });
}
