//! Imports the data directories a real Apache ZooKeeper 3.8 wrote (`tests/import/make_fixture.py`) and
//! compares every node (getData, getChildren2, getACL and exists as the super user), every session and
//! the last zxid with what ZooKeeper answered just before it was stopped.

use oxkeeper_core::session::zookeeper_password;
use oxkeeper_core::{ApplySettings, NodeKind, StateMachine};
use oxkeeper_proto::{Acl, Id, PathWatch, Request, Response, Stat};
use oxkeeper_zkimport::{read_zookeeper_dir, read_zookeeper_dirs, ZkImage};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A fixture folder: `tests/fixtures/<name>`, or `$ZKIMPORT_FIXTURES/<name>` to try a new generation
/// (`ZKIMPORT_FIXTURES=/tmp/out python3 tests/import/make_fixture.py`) before it replaces the committed one.
fn fixture(name: &str) -> PathBuf {
    match std::env::var_os("ZKIMPORT_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    }
}

fn expected(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn expected_stat(v: &Value) -> Stat {
    let f = |k: &str| int(&v[k]);
    Stat {
        czxid: f("czxid"),
        mzxid: f("mzxid"),
        ctime: f("ctime"),
        mtime: f("mtime"),
        version: f("version") as i32,
        cversion: f("cversion") as i32,
        aversion: f("aversion") as i32,
        ephemeral_owner: f("ephemeral_owner"),
        data_length: f("data_length") as i32,
        num_children: f("num_children") as i32,
        pzxid: f("pzxid"),
    }
}

fn super_user() -> Vec<Id> {
    vec![Id {
        scheme: "super".into(),
        id: String::new(),
    }]
}

fn read(state: &StateMachine, req: Request) -> Response {
    match state.read(0, &req, &super_user()) {
        (0, r) => r,
        (err, _) => panic!("{req:?}: error {err}"),
    }
}

fn watchless(path: &str) -> PathWatch {
    PathWatch {
        path: path.into(),
        watch: false,
    }
}

/// The imported state answers every read as ZooKeeper did, holds the same sessions and continues from
/// ZooKeeper's last zxid. Returns that state.
fn assert_matches(img: &ZkImage, want: &Value) -> StateMachine {
    let state = StateMachine::from_zookeeper(
        img.image.clone(),
        b"cluster secret".to_vec(),
        1,
        ApplySettings {
            extended_types_enabled: true,
        },
    )
    .expect("from_zookeeper");
    state.check_invariants().expect("invariants");
    assert_eq!(state.last_zxid(), int(&want["last_zxid"]), "last zxid");

    let nodes = want["nodes"].as_object().expect("nodes");
    assert_eq!(state.tree().len(), nodes.len(), "node count");
    for (path, n) in nodes {
        let stat = expected_stat(&n["stat"]);
        let data = n["data_hex"].as_str().map(|h| hex::decode(h).expect("hex"));
        let Response::GetData { data: got, stat: s } =
            read(&state, Request::GetData(watchless(path)))
        else {
            panic!("getData {path}")
        };
        assert_eq!(got, data, "data of {path}");
        assert_eq!(s, stat, "stat of {path}");
        let Response::GetChildren2 { children, stat: s } =
            read(&state, Request::GetChildren2(watchless(path)))
        else {
            panic!("getChildren2 {path}")
        };
        let mut children = children;
        children.sort();
        let want_children: Vec<&str> = n["children"]
            .as_array()
            .expect("children")
            .iter()
            .map(|c| c.as_str().expect("child"))
            .collect();
        assert_eq!(children, want_children, "children of {path}");
        assert_eq!(s, stat, "getChildren2 stat of {path}");
        let Response::GetAcl { acl, stat: s } = read(&state, Request::GetAcl(path.clone())) else {
            panic!("getACL {path}")
        };
        let want_acl: Vec<Acl> = n["acl"]
            .as_array()
            .expect("acl")
            .iter()
            .map(|a| Acl {
                perms: int(&a["perms"]) as i32,
                id: Id {
                    scheme: a["scheme"].as_str().expect("scheme").into(),
                    id: a["id"].as_str().expect("id").into(),
                },
            })
            .collect();
        assert_eq!(acl, want_acl, "ACL of {path}");
        assert_eq!(s, stat, "getACL stat of {path}");
        assert_eq!(
            read(&state, Request::Exists(watchless(path))),
            Response::Stat(stat),
            "exists {path}"
        );
    }

    let mut sessions: Vec<(i64, i32)> = state.sessions().collect();
    sessions.sort();
    let mut want_sessions: Vec<(i64, i32)> = Vec::new();
    for s in want["sessions"].as_array().expect("sessions") {
        let id = int(&s["id"]);
        let password = hex::decode(s["password_hex"].as_str().expect("password")).expect("hex");
        assert_eq!(
            zookeeper_password(id).as_slice(),
            password,
            "password of {id:#x}"
        );
        assert!(
            state.check_password(id, &password),
            "{id:#x} keeps its password"
        );
        assert!(state.session(id).expect("live").legacy_password);
        want_sessions.push((id, int(&s["timeout_ms"]) as i32));
    }
    want_sessions.sort();
    assert_eq!(sessions, want_sessions, "sessions");
    state
}

fn assert_clean(img: &ZkImage) {
    for n in &img.notes {
        assert!(!n.contains("digest"), "digest mismatch: {n}");
        assert!(!n.contains("missing"), "gap: {n}");
    }
}

#[test]
fn zk38_tree_imports_exactly_what_zookeeper_had() {
    let dir = fixture("zk38-tree");
    let want = expected(&dir);
    let img = read_zookeeper_dir(&dir).expect("import");
    assert_clean(&img);
    // The snapshot of ZooKeeper's restart, and both logs: the first one's records are all skipped.
    let newest = *snapshot_zxids(&dir).last().expect("a snapshot");
    assert!(newest > 0);
    assert_eq!(img.snapshot_zxid, newest);
    assert_eq!(img.logs.len(), 2, "{:?}", img.logs);
    assert_eq!(img.txns_applied, (int(&want["last_zxid"]) - newest) as u64);
    assert_eq!(img.digest_verified_at, Some(int(&want["last_zxid"])));
    let state = assert_matches(&img, &want);
    // What clients cannot see but the reaper and session expiry need (make_fixture.py's tree).
    assert_eq!(
        state.tree().containers().collect::<Vec<_>>(),
        ["/cont", "/cont-empty"]
    );
    assert_eq!(
        state.tree().ttls().collect::<Vec<_>>(),
        ["/ttl/s-0000000001", "/ttl/t1", "/ttl/t2"]
    );
    let kind = |p: &str| state.tree().get(p).expect(p).kind();
    assert_eq!(kind("/ttl/t1"), NodeKind::Ttl(3_600_000));
    assert_eq!(kind("/ttl/s-0000000001"), NodeKind::Ttl(7_200_000));
    // The internal cversion: /cont has had three children, /app/seq four (the next suffix is 4).
    assert_eq!(state.tree().get("/cont").expect("/cont").stat().cversion, 3);
    assert_eq!(
        state.tree().get("/app/seq").expect("seq").stat().cversion,
        4
    );
    let owners: Vec<Vec<String>> = state
        .sessions()
        .map(|(id, _)| state.ephemerals(id))
        .collect();
    assert!(owners.contains(&vec!["/eph/a-0000000001".to_owned(), "/eph/a2".to_owned()]));
    assert!(owners.contains(&vec!["/eph/b-0000000005".to_owned(), "/eph/b1".to_owned()]));
    // The version-2 folder itself, and a separate (here: the same) log folder, work too.
    let again = read_zookeeper_dirs(&dir.join("version-2"), &dir).expect("import");
    assert_eq!(again.image, img.image);
}

/// Copies `dir`'s logs and the snapshots up to `snapshot_zxid` into a fresh folder.
fn with_snapshots_up_to(dir: &Path, snapshot_zxid: i64) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(dir.join("version-2")).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("name");
        let keep = match name.strip_prefix("snapshot.") {
            Some(z) => i64::from_str_radix(z, 16).expect("zxid") <= snapshot_zxid,
            None => true,
        };
        if keep {
            std::fs::copy(entry.path(), tmp.path().join(&name)).expect("copy");
        }
    }
    tmp
}

fn snapshot_zxids(dir: &Path) -> Vec<i64> {
    let mut z: Vec<i64> = std::fs::read_dir(dir.join("version-2"))
        .expect("read_dir")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().into_string().expect("name");
            i64::from_str_radix(name.strip_prefix("snapshot.")?, 16).ok()
        })
        .collect();
    z.sort();
    z
}

#[test]
fn zk38_tree_replays_the_same_tree_from_the_first_snapshot() {
    let dir = fixture("zk38-tree");
    let want = expected(&dir);
    let tmp = with_snapshots_up_to(&dir, 0);
    let img = read_zookeeper_dir(tmp.path()).expect("import");
    assert_clean(&img);
    assert_eq!(img.snapshot_zxid, 0);
    assert_matches(&img, &want);
}

#[test]
fn zk38_busy_gives_the_same_tree_from_every_snapshot() {
    let dir = fixture("zk38-busy");
    let want = expected(&dir);
    let zxids = snapshot_zxids(&dir);
    assert!(zxids.len() >= 3, "{zxids:?}");
    for zxid in zxids {
        let tmp = with_snapshots_up_to(&dir, zxid);
        let img = read_zookeeper_dir(tmp.path()).expect("import");
        assert_eq!(img.snapshot_zxid, zxid);
        assert_clean(&img);
        assert!(img.logs.len() > 1, "{:?}", img.logs);
        assert_eq!(img.digest_verified_at, Some(int(&want["last_zxid"])));
        assert_matches(&img, &want);
    }
}
