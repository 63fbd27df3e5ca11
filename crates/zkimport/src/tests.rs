//! The import over synthetic ZooKeeper files, written byte for byte as ZooKeeper writes them: the layouts
//! of 3.4/3.5 (no digests, closeSession without a body, old CreateTxn) and 3.6+ (digests,
//! CloseSessionTxn), damaged files, snapshot selection, and mutated bytes that must never panic.

use crate::adler32::adler32;
use crate::digest::tree_digest;
use crate::restore::{restore, zxid_from_name, Named};
use crate::snapshot::SNAP_MAGIC;
use crate::txnlog::LOG_MAGIC;
use crate::{ImportError, ZkImage};
use oxkeeper_core::acl::{open_acl_unsafe, read_acl_unsafe};
use oxkeeper_core::import::{ImportedNode, ZkReplay};
use oxkeeper_core::{ApplySettings, NodeStat, StateMachine};
use oxkeeper_proto::records::Record;
use oxkeeper_proto::{Acl, OpCode, Writer};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const S1: i64 = 0x0100_0000_0001_0000;
const S2: i64 = 0x0100_0000_0001_0001;
const TIME: i64 = 1_700_000_000_000;

// ------------------------------------------------------------------------------------------------
// Writing ZooKeeper's formats.

/// A data directory in memory: file name → bytes.
#[derive(Clone, Default)]
struct Dir(BTreeMap<String, Vec<u8>>);

impl Dir {
    fn with(mut self, name: &str, bytes: Vec<u8>) -> Self {
        self.0.insert(name.to_owned(), bytes);
        self
    }

    fn import(&self) -> Result<ZkImage, ImportError> {
        let named = |prefix| {
            let mut v: Vec<Named> = self
                .0
                .keys()
                .filter_map(|n| Some((zxid_from_name(n, prefix)?, PathBuf::from(n))))
                .collect();
            v.sort();
            v
        };
        restore(
            Path::new("zk"),
            &named("snapshot"),
            &named("log"),
            &mut |p: &Path| {
                self.0
                    .get(p.to_str().unwrap_or_default())
                    .cloned()
                    .ok_or_else(|| ImportError::Io {
                        path: p.to_path_buf(),
                        source: std::io::ErrorKind::NotFound.into(),
                    })
            },
        )
    }
}

fn stat(czxid: i64, pzxid: i64, cversion: i32, owner: i64) -> NodeStat {
    NodeStat {
        czxid,
        mzxid: czxid,
        ctime: TIME + czxid,
        mtime: TIME + czxid,
        version: 0,
        cversion,
        aversion: 0,
        ephemeral_owner: owner,
        pzxid,
    }
}

fn node(path: &str, data: &[u8], stat: NodeStat) -> ImportedNode {
    ImportedNode {
        path: path.into(),
        data: Some(data.to_vec()),
        acl: open_acl_unsafe(),
        stat,
    }
}

/// ZooKeeper's initial tree with the root's cversion and pzxid as given.
fn system_nodes(root_cversion: i32, root_pzxid: i64) -> Vec<ImportedNode> {
    let mut config = node("/zookeeper/config", b"", NodeStat::default());
    config.acl = read_acl_unsafe();
    config.stat.aversion = -1;
    vec![
        node("/", b"", stat(0, root_pzxid, root_cversion, 0)),
        node("/zookeeper", b"", NodeStat::default()),
        node("/zookeeper/quota", b"", NodeStat::default()),
        config,
    ]
}

fn stat_persisted(w: &mut Writer, s: &NodeStat) {
    for v in [s.czxid, s.mzxid, s.ctime, s.mtime] {
        w.i64(v);
    }
    for v in [s.version, s.cversion, s.aversion] {
        w.i32(v);
    }
    w.i64(s.ephemeral_owner);
    w.i64(s.pzxid);
}

/// A snapshot up to its first seal (excluded): header, sessions, ACL table, nodes (in the given order,
/// parents first), the end marker. World:anyone ALL is written as index -1, as ZooKeeper does.
fn snapshot_body(sessions: &[(i64, i32)], nodes: &[ImportedNode]) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(SNAP_MAGIC);
    w.i32(2);
    w.i64(-1);
    w.i32(sessions.len() as i32);
    for (id, timeout) in sessions {
        w.i64(*id);
        w.i32(*timeout);
    }
    let mut table: Vec<Vec<Acl>> = Vec::new();
    let index: Vec<i64> = nodes
        .iter()
        .map(|n| {
            if n.acl == open_acl_unsafe() {
                return -1;
            }
            let i = table.iter().position(|a| *a == n.acl).unwrap_or_else(|| {
                table.push(n.acl.clone());
                table.len() - 1
            });
            i as i64 + 1
        })
        .collect();
    w.i32(table.len() as i32);
    for (i, acl) in table.iter().enumerate() {
        w.i64(i as i64 + 1);
        w.vec(Some(acl), |w, a| a.encode(w));
    }
    for (n, acl) in nodes.iter().zip(index) {
        w.ustring(if n.path == "/" { "" } else { &n.path });
        w.buffer(n.data.as_deref());
        w.i64(acl);
        stat_persisted(&mut w, &n.stat);
    }
    w.ustring("/");
    w.into_inner()
}

/// Appends a seal: the Adler-32 of everything so far, then "/".
fn seal(mut bytes: Vec<u8>) -> Vec<u8> {
    let c = adler32(&bytes);
    let mut w = Writer::new();
    w.i64(c as i64);
    w.ustring("/");
    bytes.extend(w.into_inner());
    bytes
}

/// A 3.4/3.5 snapshot (no digest).
fn snapshot(sessions: &[(i64, i32)], nodes: &[ImportedNode]) -> Vec<u8> {
    seal(snapshot_body(sessions, nodes))
}

/// A 3.6+ snapshot: the digest ZooKeeper had at `zxid`, sealed again.
fn snapshot_with_digest(
    sessions: &[(i64, i32)],
    nodes: &[ImportedNode],
    zxid: i64,
    digest: i64,
) -> Vec<u8> {
    let mut bytes = snapshot(sessions, nodes);
    let mut w = Writer::new();
    w.i64(zxid);
    w.i32(2);
    w.i64(digest);
    bytes.extend(w.into_inner());
    seal(bytes)
}

/// One transaction's bytes: TxnHeader, body, optional TxnDigest.
fn txn(session: i64, zxid: i64, op: OpCode, body: &[u8], digest: Option<i64>) -> Vec<u8> {
    let mut w = Writer::new();
    w.i64(session);
    w.i32(7);
    w.i64(zxid);
    w.i64(TIME + zxid);
    w.i32(op as i32);
    w.raw(body);
    if let Some(d) = digest {
        w.i32(2);
        w.i64(d);
    }
    w.into_inner()
}

fn create_body(path: &str, data: Option<&[u8]>, ephemeral: bool, parent_cversion: i32) -> Vec<u8> {
    let mut w = Writer::new();
    w.ustring(path);
    w.buffer(data);
    w.vec(Some(&open_acl_unsafe()), |w, a| a.encode(w));
    w.bool(ephemeral);
    w.i32(parent_cversion);
    w.into_inner()
}

fn path_body(path: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.ustring(path);
    w.into_inner()
}

fn set_data_body(path: &str, data: &[u8], version: i32) -> Vec<u8> {
    let mut w = Writer::new();
    w.ustring(path);
    w.buffer(Some(data));
    w.i32(version);
    w.into_inner()
}

fn set_acl_body(path: &str, acl: &[Acl], version: i32) -> Vec<u8> {
    let mut w = Writer::new();
    w.ustring(path);
    w.vec(Some(acl), |w, a| a.encode(w));
    w.i32(version);
    w.into_inner()
}

fn int_body(v: i32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn close_body(paths: &[&str]) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(paths.len() as i32);
    for p in paths {
        w.ustring(p);
    }
    w.into_inner()
}

fn multi_body(subs: &[(OpCode, Vec<u8>)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(subs.len() as i32);
    for (op, data) in subs {
        w.i32(*op as i32);
        w.buffer(Some(data));
    }
    w.into_inner()
}

/// One log record: Adler-32, length, the transaction, 'B'.
fn record(txn: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.i64(adler32(txn) as i64);
    w.i32(txn.len() as i32);
    w.raw(txn);
    w.u8(b'B');
    w.into_inner()
}

/// A log file of these transactions, then `padding` zero bytes.
fn log(txns: &[Vec<u8>], padding: usize) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(LOG_MAGIC);
    w.i32(2);
    w.i64(0);
    for t in txns {
        w.raw(&record(t));
    }
    w.raw(&vec![0; padding]);
    w.into_inner()
}

/// The history most tests share, as ZooKeeper 3.4 logs it: a snapshot at 0 with session S1, then
/// createSession S2, creates, an ephemeral of S2, setData, setACL, S2's close, a failed request.
fn history(digests: bool) -> Vec<Vec<u8>> {
    let d = |_: i64| digests.then_some(0);
    let digest_acl = vec![Acl {
        perms: 31,
        id: oxkeeper_proto::Id {
            scheme: "digest".into(),
            id: "u:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY=".into(),
        },
    }];
    let close = if digests {
        close_body(&["/a/e"])
    } else {
        Vec::new()
    };
    vec![
        txn(S2, 1, OpCode::CreateSession, &int_body(6000), d(1)),
        txn(
            S1,
            2,
            OpCode::Create,
            &create_body("/a", Some(b"v0"), false, 2),
            d(2),
        ),
        txn(
            S2,
            3,
            OpCode::Create,
            &create_body("/a/e", None, true, 1),
            d(3),
        ),
        txn(S1, 4, OpCode::SetData, &set_data_body("/a", b"v1", 1), d(4)),
        txn(
            S1,
            5,
            OpCode::SetAcl,
            &set_acl_body("/a", &digest_acl, 1),
            d(5),
        ),
        txn(
            S1,
            6,
            OpCode::Create,
            &create_body("/b", Some(b""), true, 3),
            d(6),
        ),
        txn(S2, 7, OpCode::CloseSession, &close, d(7)),
        txn(S1, 8, OpCode::Error, &int_body(-110), d(8)),
    ]
}

/// A persistent create with null data, logged by `S1`.
fn create_txn(zxid: i64, path: &str, parent_cversion: i32) -> Vec<u8> {
    let body = create_body(path, None, false, parent_cversion);
    txn(S1, zxid, OpCode::Create, &body, None)
}

/// [`base_dir`] (3.4 layout) with these transactions as its log.
fn import_log(txns: &[Vec<u8>]) -> Result<ZkImage, ImportError> {
    base_dir(false).with("log.1", log(txns, 0)).import()
}

fn base_dir(digests: bool) -> Dir {
    Dir::default()
        .with("snapshot.0", snapshot(&[(S1, 10_000)], &system_nodes(1, 0)))
        .with("log.1", log(&history(digests), 4096))
}

fn find<'a>(img: &'a ZkImage, path: &str) -> &'a ImportedNode {
    img.image
        .nodes
        .iter()
        .find(|n| n.path == path)
        .unwrap_or_else(|| panic!("{path} missing"))
}

fn has(img: &ZkImage, path: &str) -> bool {
    img.image.nodes.iter().any(|n| n.path == path)
}

fn state(img: &ZkImage) -> StateMachine {
    StateMachine::from_zookeeper(
        img.image.clone(),
        b"k".to_vec(),
        1,
        ApplySettings::default(),
    )
    .expect("from_zookeeper")
}

/// The same nodes, sessions and last zxid (what was seen on the way may differ).
fn assert_same_state(a: &ZkImage, b: &ZkImage) {
    assert_eq!(a.image.nodes, b.image.nodes);
    assert_eq!(a.image.sessions, b.image.sessions);
    assert_eq!(a.image.last_zxid, b.image.last_zxid);
}

fn assert_history(img: &ZkImage) {
    let a = find(img, "/a");
    assert_eq!(a.data.as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        (a.stat.version, a.stat.aversion, a.stat.mzxid, a.stat.mtime),
        (1, 1, 4, TIME + 4)
    );
    assert_eq!(a.acl[0].id.scheme, "digest");
    // /a/e was created (cversion 1) and deleted by S2's close (pzxid 7).
    assert_eq!((a.stat.cversion, a.stat.pzxid), (1, 7));
    assert!(!has(img, "/a/e"));
    assert_eq!(find(img, "/b").stat.ephemeral_owner, S1);
    let root = find(img, "/");
    assert_eq!((root.stat.cversion, root.stat.pzxid), (3, 6));
    assert_eq!(img.image.sessions.len(), 1);
    assert_eq!(img.image.sessions[0].id, S1);
    assert_eq!(img.image.sessions[0].timeout_ms, 10_000);
    assert_eq!(img.image.last_zxid, 8);
    state(img).check_invariants().expect("invariants");
}

// ------------------------------------------------------------------------------------------------
// Layouts.

#[test]
fn zookeeper_3_4_layout_without_digests() {
    let img = base_dir(false).import().expect("import");
    assert_history(&img);
    assert_eq!(img.txns_applied, 8);
    assert_eq!(img.digest_verified_at, None);
    assert!(img.notes.is_empty(), "{:?}", img.notes);
    assert_eq!(img.logs, [PathBuf::from("log.1")]);
}

#[test]
fn zookeeper_3_6_layout_with_digests_is_verified() {
    let img = base_dir(true).import().expect("import");
    assert_history(&img);
    // Every logged digest is 0, so the last one disagrees.
    assert_eq!(img.digest_verified_at, None);
    assert!(
        img.notes.iter().any(|n| n.contains("digest")),
        "{:?}",
        img.notes
    );
    // With ZooKeeper's real digest on the last transaction, the tree is proved equal.
    let right = tree_digest(&tree_of(&img));
    let mut txns = history(true);
    let last = txns.len() - 1;
    txns[last] = txn(S1, 8, OpCode::Error, &int_body(-110), Some(right));
    let img = base_dir(true)
        .with("log.1", log(&txns, 0))
        .import()
        .expect("import");
    assert_history(&img);
    assert_eq!(img.digest_verified_at, Some(8));
    assert!(img.notes.is_empty(), "{:?}", img.notes);
}

/// The tree an image describes, as ZooKeeper's digest sees it (before any clean-up).
fn tree_of(img: &ZkImage) -> oxkeeper_core::DataTree {
    let mut nodes = img.image.nodes.clone();
    nodes.sort_by_key(|n| {
        if n.path == "/" {
            0
        } else {
            n.path.matches('/').count()
        }
    });
    let sessions: Vec<_> = img.image.sessions.clone();
    ZkReplay::from_snapshot(nodes, &sessions, img.image.last_zxid)
        .expect("replay")
        .tree()
        .clone()
}

#[test]
fn snapshots_with_and_without_the_trailing_digest_read_alike() {
    let img = base_dir(false).import().expect("import");
    let nodes = img.image.nodes.clone();
    let sessions = [(S1, 10_000)];
    let plain = Dir::default()
        .with("snapshot.8", snapshot(&sessions, &nodes))
        .import()
        .expect("plain");
    assert_same_state(&plain, &img);
    assert_eq!(plain.digest_verified_at, None);
    let right = tree_digest(&tree_of(&img));
    let digested = Dir::default()
        .with(
            "snapshot.8",
            snapshot_with_digest(&sessions, &nodes, 8, right),
        )
        .import()
        .expect("digested");
    assert_same_state(&digested, &img);
    assert_eq!(digested.digest_verified_at, Some(8));
    let wrong = Dir::default()
        .with(
            "snapshot.8",
            snapshot_with_digest(&sessions, &nodes, 8, right + 1),
        )
        .import()
        .expect("wrong digest");
    assert_same_state(&wrong, &img);
    assert!(wrong.notes.iter().any(|n| n.contains("digest")));
    // A digest of an older zxid (a snapshot written by a new leader) is not compared.
    let older = Dir::default()
        .with(
            "snapshot.8",
            snapshot_with_digest(&sessions, &nodes, 3, right + 1),
        )
        .import()
        .expect("older digest");
    assert!(older.notes.is_empty(), "{:?}", older.notes);
    // 3.4-style digest versions (hex text) are read and not compared.
    let mut bytes = snapshot(&sessions, &nodes);
    let mut w = Writer::new();
    w.i64(8);
    w.i32(1);
    w.ustring("abc");
    bytes.extend(w.into_inner());
    let text = Dir::default()
        .with("snapshot.8", seal(bytes))
        .import()
        .expect("text digest");
    assert_same_state(&text, &img);
    assert!(text.notes.is_empty(), "{:?}", text.notes);
}

/// ZooKeeper records a transaction's digest only after applying it, so a snapshot written meanwhile
/// can disagree with its own digest; a matching digest at the end of the logs settles it.
#[test]
fn a_snapshot_digest_mismatch_is_settled_by_the_last_transaction() {
    let img = base_dir(false).import().expect("import");
    let right = tree_digest(&tree_of(&img));
    let at_4 = Dir::default()
        .with("snapshot.0", snapshot(&[(S1, 10_000)], &system_nodes(1, 0)))
        .with("log.1", log(&history(false)[..4], 0))
        .import()
        .expect("state at 4");
    let snap = snapshot_with_digest(&[(S1, 10_000), (S2, 6000)], &at_4.image.nodes, 4, 12345);
    let mut txns = history(true);
    txns[7] = txn(S1, 8, OpCode::Error, &int_body(-110), Some(right));
    let dir = Dir::default().with("snapshot.4", snap.clone());
    let img = dir
        .clone()
        .with("log.1", log(&txns, 0))
        .import()
        .expect("import");
    assert_history(&img);
    assert_eq!(img.digest_verified_at, Some(8));
    assert!(img.notes.is_empty(), "{:?}", img.notes);
    // Without digests after it, the snapshot's mismatch is reported.
    let img = dir
        .with("log.1", log(&history(false), 0))
        .import()
        .expect("import");
    assert_eq!(img.digest_verified_at, None);
    assert!(
        img.notes.iter().any(|n| n.contains("no later digest")),
        "{:?}",
        img.notes
    );
}

#[test]
fn old_create_txns_without_parent_cversion_are_read() {
    let mut w = Writer::new();
    w.ustring("/old");
    w.buffer(Some(b"v0"));
    w.vec(Some(&open_acl_unsafe()), |w, a| a.encode(w));
    w.bool(false);
    let v0 = w.into_inner();
    let img = Dir::default()
        .with("snapshot.0", snapshot(&[], &system_nodes(4, 0)))
        .with("log.1", log(&[txn(S1, 1, OpCode::Create, &v0, None)], 0))
        .import()
        .expect("import");
    assert_eq!(find(&img, "/old").data.as_deref(), Some(&b"v0"[..]));
    assert_eq!(find(&img, "/").stat.cversion, 5);
}

#[test]
fn multis_decode_and_apply_as_zookeeper_does() {
    let ok = multi_body(&[
        (OpCode::Create, create_body("/m", Some(b"1"), false, 2)),
        (OpCode::Create2, create_body("/m/x", Some(b"2"), false, 1)),
        (OpCode::SetData, set_data_body("/m", b"3", 1)),
        (OpCode::Check, {
            let mut b = path_body("/m");
            b.extend(int_body(1));
            b
        }),
        (OpCode::Delete, path_body("/m/x")),
    ]);
    let failed = multi_body(&[
        (OpCode::Create, create_body("/n", None, false, 3)),
        (OpCode::Error, int_body(-110)),
        (OpCode::Error, int_body(-2)),
    ]);
    let img = Dir::default()
        .with("snapshot.0", snapshot(&[], &system_nodes(1, 0)))
        .with(
            "log.1",
            log(
                &[
                    txn(S1, 1, OpCode::Multi, &ok, None),
                    txn(S1, 2, OpCode::Multi, &failed, Some(5)),
                ],
                100,
            ),
        )
        .import()
        .expect("import");
    let m = find(&img, "/m");
    assert_eq!(m.data.as_deref(), Some(&b"3"[..]));
    assert_eq!((m.stat.version, m.stat.cversion, m.stat.pzxid), (1, 1, 1));
    assert!(!has(&img, "/m/x") && !has(&img, "/n"));
    assert_eq!(img.image.last_zxid, 2);
    // A multi cannot hold a setACL.
    let bad = multi_body(&[(OpCode::SetAcl, set_acl_body("/m", &[], 0))]);
    let err = Dir::default()
        .with("snapshot.0", snapshot(&[], &system_nodes(1, 0)))
        .with("log.1", log(&[txn(S1, 1, OpCode::Multi, &bad, None)], 0))
        .import()
        .unwrap_err();
    assert!(
        matches!(&err, ImportError::Corrupt { offset, .. } if *offset == 16 + 12 + 32 + 4),
        "{err}"
    );
}

#[test]
fn containers_ttl_nodes_and_reaper_deletes_replay() {
    let mut w = Writer::new();
    w.ustring("/c");
    w.buffer(Some(b"c"));
    w.vec(Some(&open_acl_unsafe()), |w, a| a.encode(w));
    w.i32(2);
    let container = w.into_inner();
    let mut w = Writer::new();
    w.ustring("/t");
    w.buffer(None);
    w.vec(None, |w, a: &Acl| a.encode(w));
    w.i32(3);
    w.i64(60_000);
    let ttl = w.into_inner();
    let img = Dir::default()
        .with("snapshot.0", snapshot(&[], &system_nodes(1, 0)))
        .with(
            "log.1",
            log(
                &[
                    txn(S1, 1, OpCode::CreateContainer, &container, None),
                    txn(S1, 2, OpCode::CreateTtl, &ttl, None),
                    txn(
                        S1,
                        3,
                        OpCode::Create,
                        &create_body("/c/k", None, false, 1),
                        None,
                    ),
                    txn(S1, 4, OpCode::Delete, &path_body("/c/k"), None),
                    txn(0, 5, OpCode::DeleteContainer, &path_body("/c"), None),
                    txn(
                        S1,
                        6,
                        OpCode::Reconfig,
                        &set_data_body("/zookeeper/config", b"x", -1),
                        None,
                    ),
                ],
                0,
            ),
        )
        .import()
        .expect("import");
    assert!(!has(&img, "/c"));
    let t = find(&img, "/t");
    assert_eq!(
        t.stat.ephemeral_owner as u64,
        0xFF00_0000_0000_0000 | 60_000
    );
    assert_eq!(
        t.acl,
        open_acl_unsafe(),
        "a null ACL list is world:anyone ALL"
    );
    assert_eq!(t.data, None);
    assert_eq!(find(&img, "/").stat.pzxid, 5);
    assert_eq!(
        find(&img, "/zookeeper/config").data.as_deref(),
        Some(&b""[..])
    );
    assert!(
        img.notes.iter().any(|n| n.contains("reconfig")),
        "{:?}",
        img.notes
    );
    assert_eq!(img.image.last_zxid, 6);
}

// ------------------------------------------------------------------------------------------------
// Damage.

#[test]
fn a_torn_last_record_is_ignored_as_zookeeper_ignores_it() {
    let txns = history(false);
    let full = log(&txns, 0);
    let last = record(&txns[7]).len();
    // Cut inside the last record, with and without the preallocated zeros after it.
    for cut in [1, 5, 13, last - 1] {
        let mut bytes = full[..full.len() - last + cut].to_vec();
        for padding in [0, 64] {
            bytes.resize(full.len() - last + cut + padding, 0);
            let img = base_dir(false)
                .with("log.1", bytes.clone())
                .import()
                .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(img.image.last_zxid, 7, "cut {cut}");
            // (The first 4 bytes of a record, the high half of its checksum, are always zero.)
            assert!(
                img.notes.iter().any(|n| n.contains("cut short")) || cut < 13,
                "cut {cut}: {:?}",
                img.notes
            );
        }
    }
    // The end-of-record byte missing (the last write stopped just before it).
    let mut bytes = full.clone();
    let end = bytes.len() - 1;
    bytes[end] = 0;
    let img = base_dir(false)
        .with("log.1", bytes)
        .import()
        .expect("import");
    assert_eq!(img.image.last_zxid, 7);
    // Garbage after a zero length (a stale tail) is noted and ignored.
    let mut bytes = log(&txns, 32);
    bytes.extend([1, 2, 3]);
    let img = base_dir(false)
        .with("log.1", bytes)
        .import()
        .expect("import");
    assert_eq!(img.image.last_zxid, 8);
    assert!(
        img.notes.iter().any(|n| n.contains("non-zero")),
        "{:?}",
        img.notes
    );
}

#[test]
fn a_bad_checksum_mid_log_names_file_and_offset() {
    let txns = history(false);
    let mut bytes = log(&txns, 64);
    let offset = 16 + record(&txns[0]).len() + record(&txns[1]).len();
    // A byte of the third record's path.
    bytes[offset + 12 + 40] ^= 0x20;
    let err = base_dir(false).with("log.1", bytes).import().unwrap_err();
    match &err {
        ImportError::Checksum {
            file, offset: at, ..
        } => {
            assert_eq!(file, Path::new("log.1"));
            assert_eq!(*at, offset as u64);
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("log.1: offset {offset}: checksum")),
        "{err}"
    );
}

#[test]
fn unknown_transactions_and_bad_files_are_errors() {
    let txns = [
        create_txn(1, "/a", 2),
        txn(S1, 2, OpCode::GetData, &path_body("/a"), None),
    ];
    let err = import_log(&txns).unwrap_err();
    let offset = 16 + record(&txns[0]).len() as u64;
    assert!(
        matches!(err, ImportError::UnknownTxn { zxid: 2, txn_type: 4, offset: o, .. } if o == offset),
        "{err}"
    );
    let err = base_dir(false)
        .with("log.1", b"ZKSN-not-a-log-at-all".to_vec())
        .import()
        .unwrap_err();
    assert!(
        err.to_string().contains("not a ZooKeeper transaction log"),
        "{err}"
    );
    // A record that does not decode although its checksum is right.
    let err = import_log(&[txn(S1, 1, OpCode::SetData, &path_body("/a"), None)]).unwrap_err();
    assert!(matches!(err, ImportError::Corrupt { .. }), "{err}");
    // A delete of a node with children (ZooKeeper would orphan them).
    let txns = [
        create_txn(1, "/a", 2),
        create_txn(2, "/a/b", 1),
        txn(S1, 3, OpCode::Delete, &path_body("/a"), None),
    ];
    let err = import_log(&txns).unwrap_err();
    assert!(
        matches!(&err, ImportError::Replay { zxid: 3, .. }) && err.to_string().contains("child"),
        "{err}"
    );
}

#[test]
fn snapshots_are_chosen_as_zookeeper_chooses_them() {
    let good = snapshot(&[(S1, 10_000)], &system_nodes(1, 0));
    // The newest is corrupt (bad seal): the older one and the logs after it are used.
    let mut corrupt = good.clone();
    corrupt[30] ^= 1;
    let img = base_dir(false)
        .with("snapshot.3", corrupt)
        .import()
        .expect("import");
    assert_history(&img);
    assert_eq!(img.snapshot, PathBuf::from("snapshot.0"));
    assert!(
        img.notes.iter().any(|n| n.contains("snapshot.3")),
        "{:?}",
        img.notes
    );
    // An incomplete one (no seal at the end) is skipped.
    let img = base_dir(false)
        .with("snapshot.5", good[..good.len() - 3].to_vec())
        .import()
        .expect("import");
    assert_eq!(img.snapshot, PathBuf::from("snapshot.0"));
    // A compressed one cannot be read: an error, not a silent fallback.
    let err = base_dir(false)
        .with("snapshot.5.gz", vec![0x1f, 0x8b, 0])
        .import()
        .unwrap_err();
    assert!(matches!(err, ImportError::Compressed { .. }), "{err}");
    // Only bad ones: every reason is given.
    let err = Dir::default()
        .with("snapshot.1", vec![1; 40])
        .with("snapshot.2", good[..20].to_vec())
        .import()
        .unwrap_err();
    assert!(
        matches!(&err, ImportError::NoValidSnapshot { reasons, .. } if reasons.len() == 2),
        "{err}"
    );
    let err = Dir::default()
        .with("log.1", log(&[], 0))
        .import()
        .unwrap_err();
    assert!(matches!(err, ImportError::NoSnapshot { .. }), "{err}");
    let err = Dir::default().import().unwrap_err();
    assert!(matches!(err, ImportError::NoData { .. }), "{err}");
}

#[test]
fn logs_are_read_from_the_one_holding_the_snapshot_zxid() {
    let txns = history(false);
    // log.1 holds 1..=2, log.3 holds 3..=4, log.5 holds 5..=8. A snapshot at 4 needs log.5, and
    // log.3 is read too (the newest named before zxid 5) with its records skipped; log.1 is not read
    // at all, so its damage does not matter.
    let snap = {
        let img = Dir::default()
            .with("snapshot.0", snapshot(&[(S1, 10_000)], &system_nodes(1, 0)))
            .with("log.1", log(&txns[..4], 0))
            .import()
            .expect("import");
        snapshot(&[(S1, 10_000), (S2, 6000)], &img.image.nodes)
    };
    let dir = Dir::default()
        .with("snapshot.4", snap)
        .with("log.1", b"garbage".to_vec())
        .with("log.3", log(&txns[2..4], 0))
        .with("log.5", log(&txns[4..], 0));
    let img = dir.clone().import().expect("import");
    assert_history(&img);
    assert_eq!(img.logs, [PathBuf::from("log.3"), PathBuf::from("log.5")]);
    assert_eq!(img.txns_applied, 4);
    // An empty last log is skipped (ZooKeeper deletes it); an empty earlier one is an error.
    let img = dir
        .clone()
        .with("log.9", Vec::new())
        .import()
        .expect("import");
    assert!(img.notes.iter().any(|n| n.contains("empty")));
    let err = dir
        .with("log.5", Vec::new())
        .with("log.9", log(&[], 0))
        .import()
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn missing_transactions_are_noted() {
    let txns = history(false);
    let img = base_dir(false)
        .with("log.1", log(&[txns[0].clone(), txns[2].clone()], 0))
        .import()
        .expect("import");
    assert!(
        img.notes
            .iter()
            .any(|n| n.contains("0x2 to 0x2 are missing")),
        "{:?}",
        img.notes
    );
}

/// A fuzzy snapshot: named after zxid 2 but written while later transactions were applied, so it
/// already holds some of their effects. Replaying the log over it gives the same tree as replaying
/// everything from a clean snapshot.
#[test]
fn fuzzy_snapshots_replay_to_the_same_tree() {
    let acl_b = read_acl_unsafe();
    let txns = vec![
        txn(
            S1,
            1,
            OpCode::Create,
            &create_body("/p", Some(b"p"), false, 2),
            None,
        ),
        create_txn(2, "/p/s-0000000000", 1),
        create_txn(3, "/p/s-0000000001", 2),
        txn(
            S1,
            4,
            OpCode::SetAcl,
            &set_acl_body("/p/s-0000000001", &acl_b, 1),
            None,
        ),
        txn(S1, 5, OpCode::Delete, &path_body("/p/s-0000000000"), None),
        txn(S1, 6, OpCode::SetData, &set_data_body("/p", b"q", 1), None),
        txn(S2, 7, OpCode::CreateSession, &int_body(5000), None),
        txn(
            S2,
            8,
            OpCode::Create,
            &create_body("/p/e", None, true, 3),
            None,
        ),
        txn(S2, 9, OpCode::CloseSession, &close_body(&["/p/e"]), None),
        txn(
            S1,
            10,
            OpCode::Create2,
            &create_body("/p/s-0000000003", None, false, 4),
            None,
        ),
    ];
    let clean = Dir::default()
        .with("snapshot.0", snapshot(&[(S1, 10_000)], &system_nodes(1, 0)))
        .with("log.1", log(&txns, 0))
        .import()
        .expect("clean");
    for (named, holds) in [(2, 4), (2, 5), (3, 8), (5, 9), (2, 10)] {
        let state_at = Dir::default()
            .with("snapshot.0", snapshot(&[(S1, 10_000)], &system_nodes(1, 0)))
            .with("log.1", log(&txns[..holds], 0))
            .import()
            .expect("state");
        let sessions: Vec<(i64, i32)> = state_at
            .image
            .sessions
            .iter()
            .map(|s| (s.id, s.timeout_ms))
            .collect();
        let fuzzy = Dir::default()
            .with(
                &format!("snapshot.{named:x}"),
                snapshot(&sessions, &state_at.image.nodes),
            )
            .with("log.1", log(&txns, 0))
            .import()
            .expect("fuzzy");
        assert_eq!(
            fuzzy.image.nodes, clean.image.nodes,
            "snapshot {named} holding {holds}"
        );
        assert_eq!(fuzzy.image.sessions, clean.image.sessions);
        assert_eq!(fuzzy.image.last_zxid, 10);
    }
}

// ------------------------------------------------------------------------------------------------
// Mutated input never panics.

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for (at, kind, value) in edits {
        if bytes.is_empty() {
            bytes.push(*value);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] ^= value | 1,
            1 => bytes.truncate(at),
            2 => bytes.insert(at, *value),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

/// Runs the whole import and, if it succeeds, builds the state: neither may panic.
fn import_never_panics(dir: &Dir) {
    if let Ok(img) = dir.import() {
        if let Ok(state) =
            StateMachine::from_zookeeper(img.image, b"k".to_vec(), 1, ApplySettings::default())
        {
            state
                .check_invariants()
                .expect("a state that was built is consistent");
        }
    }
}

/// The snapshot body and the transactions before framing, so that mutations can also be sealed and
/// checksummed again (and reach the decoders behind the checksums).
fn sample_parts() -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut nodes = system_nodes(2, 3);
    nodes.push(node("/x", b"x", stat(2, 2, 0, 0)));
    let mut e = node("/x2", b"", stat(3, 3, 0, S1));
    e.acl = read_acl_unsafe();
    nodes.push(e);
    (snapshot_body(&[(S1, 10_000)], &nodes), history(true))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        target in 0u8..4,
    ) {
        let (body, txns) = sample_parts();
        let dir = match target {
            // Raw damage: caught by seals and checksums, or by the framing.
            0 => Dir::default()
                .with("snapshot.0", mutate(seal(body), &edits))
                .with("log.1", log(&txns, 64)),
            1 => Dir::default()
                .with("snapshot.0", seal(body))
                .with("log.1", mutate(log(&txns, 64), &edits)),
            // Damage behind valid seals and checksums: the decoders and the replay see it.
            2 => Dir::default()
                .with("snapshot.0", seal(mutate(body, &edits)))
                .with("log.1", log(&txns, 64)),
            _ => {
                let mut txns = txns;
                let i = edits[0].0 % txns.len();
                txns[i] = mutate(txns[i].clone(), &edits);
                Dir::default().with("snapshot.0", seal(body)).with("log.1", log(&txns, 64))
            }
        };
        import_never_panics(&dir);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let (body, txns) = sample_parts();
        let mut with_magic = LOG_MAGIC.to_be_bytes().to_vec();
        with_magic.extend(&bytes);
        import_never_panics(&Dir::default().with("snapshot.0", bytes.clone()));
        import_never_panics(&Dir::default().with("snapshot.0", seal(bytes.clone())));
        import_never_panics(&Dir::default().with("snapshot.0", seal(body.clone())).with("log.1", with_magic));
        let mut txn = txns[0][..32].to_vec();
        txn.extend(&bytes);
        for op in [-11, -10, -1, 1, 2, 5, 7, 13, 14, 15, 16, 19, 20, 21] {
            txn[28..32].copy_from_slice(&i32::to_be_bytes(op));
            import_never_panics(
                &Dir::default().with("snapshot.0", seal(body.clone())).with("log.1", log(&[txn.clone()], 0)),
            );
        }
    }
}

#[test]
fn the_import_rejects_nothing_the_test_writers_make() {
    // The writers above are ZooKeeper's layouts: the unmutated sample imports cleanly.
    let (body, txns) = sample_parts();
    let img = Dir::default()
        .with("snapshot.0", seal(body))
        .with("log.1", log(&txns, 64))
        .import()
        .expect("import");
    assert_eq!(img.image.last_zxid, 8);
}
