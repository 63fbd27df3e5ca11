//! Microbenchmarks of the replicated state at a large tree: apply of create / setData / delete, the
//! getData and getChildren reads, and a clone of the whole state (what a snapshot takes).
//!
//! cargo bench -p oxkeeper-core --bench tree
//!
//! The tree holds 100,000 nodes (100 directories of 1,000 children, 100 B each) under `cargo bench`, and
//! 1,000 when run as a test (`cargo test --all-targets` runs each benchmark once).

use std::cell::RefCell;
use std::hint::black_box;

use divan::Bencher;
use oxkeeper_core::{ApplySettings, Command, CommandOp, SessionChange, StateMachine};
use oxkeeper_proto::{
    perms, Acl, CreateRequest, Id, OpCode, PathVersion, PathWatch, Request, SetDataRequest,
};

fn main() {
    divan::main();
}

const CHILDREN_PER_DIR: usize = 1000;
const TIME_MS: i64 = 1_763_000_000_000;

/// 100 directories under `cargo bench` (divan gets `--bench`), 1 when run as a test.
fn dirs() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        100
    } else {
        1
    }
}

fn command(session_id: i64, op: CommandOp) -> Command {
    Command {
        session_id,
        cxid: 1,
        time_ms: TIME_MS,
        auth: Vec::new(),
        op,
    }
}

fn create(session_id: i64, path: String) -> Command {
    command(
        session_id,
        CommandOp::Write(Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path,
                data: Some(vec![0x5a; 100]),
                acl: vec![Acl {
                    perms: perms::ALL,
                    id: Id {
                        scheme: "world".into(),
                        id: "anyone".into(),
                    },
                }],
                flags: 0,
                ttl: -1,
            },
        }),
    )
}

fn apply_ok(sm: &mut StateMachine, cmd: &Command) {
    let a = sm.apply(cmd);
    assert_eq!(a.err, 0, "{cmd:?}: {a:?}");
}

/// A bootstrapped state with one session and `dirs()` directories of `CHILDREN_PER_DIR` children at
/// `/bench/d<k>/n<i>`, plus an empty `/new`. Returns the state and the session id.
fn large_tree() -> (StateMachine, i64) {
    let mut sm = StateMachine::new();
    sm.apply(&command(
        0,
        CommandOp::Bootstrap {
            secret: b"bench secret".to_vec(),
            member_id: 1,
            settings: ApplySettings::default(),
        },
    ));
    let session = match sm
        .apply(&command(0, CommandOp::CreateSession { timeout_ms: 30_000 }))
        .session
    {
        Some(SessionChange::Created { id, .. }) => id,
        other => panic!("no session: {other:?}"),
    };
    apply_ok(&mut sm, &create(session, "/bench".into()));
    apply_ok(&mut sm, &create(session, "/new".into()));
    for d in 0..dirs() {
        apply_ok(&mut sm, &create(session, format!("/bench/d{d}")));
        for i in 0..CHILDREN_PER_DIR {
            apply_ok(&mut sm, &create(session, format!("/bench/d{d}/n{i}")));
        }
    }
    (sm, session)
}

/// A path of the tree, spread over the directories.
fn node_path(k: usize) -> String {
    let i = k % (dirs() * CHILDREN_PER_DIR);
    format!("/bench/d{}/n{}", i % dirs(), i / dirs())
}

/// Apply of a create of a new 100 B node (the command is built outside the timing).
#[divan::bench]
fn apply_create(bencher: Bencher) {
    let (mut sm, session) = large_tree();
    let mut next = 0usize;
    bencher
        .with_inputs(|| {
            next += 1;
            create(session, format!("/new/c{next}"))
        })
        .bench_local_refs(|cmd| sm.apply(cmd));
}

/// Apply of a setData of 100 B on existing nodes, cycling over the tree.
#[divan::bench]
fn apply_set_data(bencher: Bencher) {
    let (mut sm, session) = large_tree();
    let mut next = 0usize;
    bencher
        .with_inputs(|| {
            next += 1;
            command(
                session,
                CommandOp::Write(Request::SetData(SetDataRequest {
                    path: node_path(next),
                    data: Some(vec![0xa5; 100]),
                    version: -1,
                })),
            )
        })
        .bench_local_refs(|cmd| sm.apply(cmd));
}

/// Apply of a delete of a leaf (created, outside the timing, just before).
#[divan::bench]
fn apply_delete(bencher: Bencher) {
    let (sm, session) = large_tree();
    let sm = RefCell::new(sm);
    let mut next = 0usize;
    bencher
        .with_inputs(|| {
            next += 1;
            let path = format!("/new/c{next}");
            apply_ok(&mut sm.borrow_mut(), &create(session, path.clone()));
            command(
                session,
                CommandOp::Write(Request::Delete(PathVersion { path, version: -1 })),
            )
        })
        .bench_local_refs(|cmd| sm.borrow_mut().apply(cmd));
}

/// getData of a 100 B node, cycling over the tree (as the server answers it: ACL check, Stat, copy).
#[divan::bench]
fn read_get_data(bencher: Bencher) {
    let (sm, _) = large_tree();
    let reqs: Vec<Request> = (0..1024)
        .map(|k| {
            Request::GetData(PathWatch {
                path: node_path(k * 97),
                watch: false,
            })
        })
        .collect();
    let mut next = 0usize;
    bencher.bench_local(|| {
        next = (next + 1) % reqs.len();
        sm.read(0, black_box(&reqs[next]), &[])
    });
}

/// getChildren of a directory of 1,000 children.
#[divan::bench]
fn read_get_children_1000(bencher: Bencher) {
    let (sm, _) = large_tree();
    let req = Request::GetChildren(PathWatch {
        path: "/bench/d0".into(),
        watch: false,
    });
    bencher.bench_local(|| sm.read(0, black_box(&req), &[]));
}

/// A clone of the whole state (persistent maps: what taking a snapshot costs the apply loop).
#[divan::bench]
fn clone_state(bencher: Bencher) {
    let (sm, _) = large_tree();
    bencher.bench_local(|| black_box(&sm).clone());
}
