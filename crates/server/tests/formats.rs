//! Golden files for what the server writes to disk inside the storage crate's frames: the log entry payload
//! (a batch of commands with their origins) and the snapshot's state. A change in either encoding (a reordered
//! field, a new enum variant in the middle) would make an old log or snapshot unreadable or, worse, read
//! differently; these tests catch it. If a change is intended, bump the format version byte, keep decoding the
//! old one, and regenerate with `OXK_BLESS=1 cargo test -p oxkeeper-server --test formats`.

use std::path::PathBuf;

use oxkeeper_core::state::{ApplySettings, Command, CommandOp, StateMachine};
use oxkeeper_core::SessionChange;
use oxkeeper_proto::records::{Id, Request};
use oxkeeper_proto::{CreateRequest, OpCode, SetDataRequest};
use oxkeeper_server::executor::{
    decode_batch, decode_state, encode_batch, encode_state, write_state, Envelope, Origin,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check_golden(name: &str, bytes: &[u8]) {
    let path = fixture(name);
    if std::env::var_os("OXK_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("fixture dir");
        std::fs::write(&path, hex::encode(bytes)).expect("write the golden file");
        return;
    }
    let golden = std::fs::read_to_string(&path).expect("the golden file exists");
    assert_eq!(
        hex::encode(bytes),
        golden.trim(),
        "{name}: the on-disk encoding changed (see this file's doc comment)"
    );
}

fn cmd(session_id: i64, op: CommandOp) -> Command {
    Command {
        session_id,
        cxid: 7,
        time_ms: 1_700_000_000_000,
        auth: vec![Id {
            scheme: "digest".into(),
            id: "u:x".into(),
        }]
        .into(),
        op,
    }
}

fn create(path: &str, flags: i32) -> Request {
    Request::Create {
        op: OpCode::Create2,
        req: CreateRequest {
            path: path.into(),
            data: Some(b"data".to_vec()),
            acl: oxkeeper_core::acl::open_acl_unsafe(),
            flags,
            ttl: -1,
        },
    }
}

/// One of every command kind, as the log carries them.
fn every_command() -> Vec<Envelope> {
    let origin = Some(Origin {
        member: 1,
        conn: 42,
        xid: 9,
    });
    [
        CommandOp::Bootstrap {
            secret: vec![1, 2, 3],
            member_id: 1,
            settings: ApplySettings {
                extended_types_enabled: true,
            },
        },
        CommandOp::CreateSession { timeout_ms: 30_000 },
        CommandOp::Write(create("/a", 0)),
        CommandOp::Write(Request::SetData(SetDataRequest {
            path: "/a".into(),
            data: None,
            version: 3,
        })),
        CommandOp::CloseSession,
        CommandOp::UpdateSettings {
            settings: ApplySettings::default(),
        },
        CommandOp::Revalidate {
            password: vec![9; 16],
            timeout_ms: 6000,
        },
    ]
    .into_iter()
    .map(|op| Envelope {
        origin,
        cmd: cmd(0x0100_0000_0000_0001, op),
    })
    .collect()
}

#[test]
fn log_entry_payload_is_stable() {
    let batch = every_command();
    let bytes = encode_batch(&batch);
    assert_eq!(decode_batch(&bytes).expect("decodes"), batch);
    check_golden("log-payload-v1.hex", &bytes.0);
}

#[test]
fn snapshot_state_is_stable() {
    let sm = snapshot_state();
    let bytes = encode_state(&sm);
    assert_eq!(decode_state(&bytes).expect("decodes"), sm);
    check_golden("snapshot-state-v1.hex", &bytes);
}

/// A snapshot streamed into a file that fails (a full disk) stops with the file's own error, and what
/// reached the file before it is the start of the encoding.
#[test]
fn a_failed_write_of_the_state_returns_the_writers_error() {
    struct FullAfter {
        room: usize,
        got: Vec<u8>,
    }
    impl std::io::Write for FullAfter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.got.len() + bytes.len() > self.room {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left (test)",
                ));
            }
            self.got.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sm = snapshot_state();
    let whole = encode_state(&sm);
    let mut file = FullAfter {
        room: whole.len() - 1,
        got: Vec::new(),
    };
    let err = write_state(&sm, &mut file).expect_err("the file is one byte short");
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
    assert_eq!(err.to_string(), "no space left (test)");
    assert!(whole.starts_with(&file.got));
    let mut file = FullAfter {
        room: whole.len(),
        got: Vec::new(),
    };
    write_state(&sm, &mut file).expect("room enough");
    assert_eq!(file.got, whole);
}

/// Snapshots written by earlier builds list the ACLs in the order a walk first meets them (now: in the
/// lists' order) and each node's children by name (now: oldest first). The format is the same, both
/// orders free: such a snapshot reads back as the same state.
#[test]
fn a_snapshot_in_the_earlier_order_reads_the_same() {
    let path = fixture("snapshot-state-v1-earlier-order.hex");
    let old = hex::decode(
        std::fs::read_to_string(&path)
            .expect("the old golden file")
            .trim(),
    )
    .expect("hex");
    assert_ne!(
        old,
        encode_state(&snapshot_state()),
        "the ACLs and nodes are in another order"
    );
    assert_eq!(decode_state(&old).expect("decodes"), snapshot_state());
}

/// A state with sessions, every kind of node and more than one ACL list.
fn snapshot_state() -> StateMachine {
    let mut sm = StateMachine::new();
    sm.apply(&cmd(
        0,
        CommandOp::Bootstrap {
            secret: vec![5; 32],
            member_id: 1,
            settings: ApplySettings::default(),
        },
    ));
    let s = match sm
        .apply(&cmd(0, CommandOp::CreateSession { timeout_ms: 10_000 }))
        .session
    {
        Some(SessionChange::Created { id, .. }) => id,
        other => panic!("no session: {other:?}"),
    };
    for (path, flags) in [("/p", 0), ("/p/e", 1), ("/p/s-", 2), ("/c", 4)] {
        assert_eq!(
            sm.apply(&cmd(s, CommandOp::Write(create(path, flags)))).err,
            0,
            "{path}"
        );
    }
    sm
}
