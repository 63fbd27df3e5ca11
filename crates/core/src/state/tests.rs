//! Unit tests of apply and read: every rule of the reference, check by check.

use super::*;
use crate::acl::{digest_id, entry as acl, id, open_acl_unsafe, read_acl_unsafe};
use oxkeeper_proto::{PathWatch, Stat, TTL_MAX_MS};

const NO_NODE: i32 = ErrorCode::NoNode as i32;
const NO_AUTH: i32 = ErrorCode::NoAuth as i32;
const BAD_ARGS: i32 = ErrorCode::BadArguments as i32;
const BAD_VERSION: i32 = ErrorCode::BadVersion as i32;
const NODE_EXISTS: i32 = ErrorCode::NodeExists as i32;
const NOT_EMPTY: i32 = ErrorCode::NotEmpty as i32;
const INVALID_ACL: i32 = ErrorCode::InvalidAcl as i32;
const SESSION_EXPIRED: i32 = ErrorCode::SessionExpired as i32;
const UNIMPLEMENTED: i32 = ErrorCode::Unimplemented as i32;
const NO_CHILDREN_FOR_EPHEMERALS: i32 = ErrorCode::NoChildrenForEphemerals as i32;
const RUNTIME_INCONSISTENCY: i32 = ErrorCode::RuntimeInconsistency as i32;
const MARSHALLING: i32 = ErrorCode::MarshallingError as i32;

fn create_req(path: &str, data: Option<&[u8]>, acl: Vec<Acl>, flags: i32) -> CreateRequest {
    CreateRequest {
        path: path.into(),
        data: data.map(<[u8]>::to_vec),
        acl,
        flags,
        ttl: -1,
    }
}

/// A persistent node with this data and ACL.
fn create_with(path: &str, data: Option<&[u8]>, acl: Vec<Acl>) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: create_req(path, data, acl, 0),
    }
}

fn create(path: &str, flags: i32) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: create_req(path, None, open_acl_unsafe(), flags),
    }
}

fn create_op(op: OpCode, path: &str, flags: i32, ttl: i64) -> Request {
    Request::Create {
        op,
        req: CreateRequest {
            ttl,
            ..create_req(path, None, open_acl_unsafe(), flags)
        },
    }
}

fn delete(path: &str, version: i32) -> Request {
    Request::Delete(PathVersion {
        path: path.into(),
        version,
    })
}

fn set_data(path: &str, data: &[u8], version: i32) -> Request {
    Request::SetData(SetDataRequest {
        path: path.into(),
        data: Some(data.to_vec()),
        version,
    })
}

fn set_acl(path: &str, acl: Vec<Acl>, version: i32) -> Request {
    Request::SetAcl(SetAclRequest {
        path: path.into(),
        acl,
        version,
    })
}

fn pw(path: &str) -> PathWatch {
    PathWatch {
        path: path.into(),
        watch: false,
    }
}

/// A bootstrapped state machine with a clock.
struct H {
    sm: StateMachine,
    time_ms: i64,
}

impl H {
    fn new() -> Self {
        Self::with_settings(ApplySettings::default())
    }

    fn extended() -> Self {
        Self::with_settings(ApplySettings {
            extended_types_enabled: true,
        })
    }

    fn with_settings(settings: ApplySettings) -> Self {
        let mut h = H {
            sm: StateMachine::new(),
            time_ms: 1_000_000,
        };
        let a = h.run(
            0,
            CommandOp::Bootstrap {
                secret: b"cluster secret".to_vec(),
                member_id: 1,
                settings,
            },
        );
        assert_eq!(a.err, 0);
        h
    }

    fn run_as(&mut self, session_id: i64, auth: &[Id], op: CommandOp) -> Applied {
        self.run_full(session_id, auth, op, None)
    }

    fn run_from(&mut self, session_id: i64, origin: Owner, op: CommandOp) -> Applied {
        self.run_full(session_id, &[], op, Some(origin))
    }

    fn run_full(
        &mut self,
        session_id: i64,
        auth: &[Id],
        op: CommandOp,
        origin: Option<Owner>,
    ) -> Applied {
        self.time_ms += 10;
        let before = self.sm.last_zxid();
        let a = self.sm.apply_from(
            &Command {
                session_id,
                cxid: 1,
                time_ms: self.time_ms,
                auth: auth.into(),
                op: op.clone(),
            },
            origin,
        );
        if matches!(
            op,
            CommandOp::Bootstrap { .. }
                | CommandOp::UpdateSettings { .. }
                | CommandOp::Revalidate { .. }
        ) {
            assert_eq!(a.zxid, before);
        } else {
            assert_eq!(a.zxid, before + 1, "every command takes exactly one zxid");
        }
        assert_eq!(a.zxid, self.sm.last_zxid());
        if a.err != 0 {
            assert_eq!(a.response, Response::Empty);
            assert!(a.triggers.is_empty());
        }
        self.sm.check_invariants().unwrap();
        a
    }

    fn run(&mut self, session_id: i64, op: CommandOp) -> Applied {
        self.run_as(session_id, &[], op)
    }

    fn write(&mut self, session_id: i64, req: Request) -> Applied {
        self.run(session_id, CommandOp::Write(req))
    }

    fn write_as(&mut self, session_id: i64, auth: &[Id], req: Request) -> Applied {
        self.run_as(session_id, auth, CommandOp::Write(req))
    }

    fn session(&mut self) -> i64 {
        match self
            .run(0, CommandOp::CreateSession { timeout_ms: 30_000 })
            .session
        {
            Some(SessionChange::Created { id, .. }) => id,
            other => panic!("no session: {other:?}"),
        }
    }

    fn ok(&mut self, session_id: i64, req: Request) -> Applied {
        let a = self.write(session_id, req);
        assert_eq!(a.err, 0, "{:?}", a);
        a
    }

    fn err(&mut self, session_id: i64, req: Request) -> i32 {
        self.write(session_id, req).err
    }

    fn node(&self, path: &str) -> NodeRef<'_> {
        self.sm.tree().get(path).unwrap()
    }

    fn stat(&self, path: &str) -> Stat {
        self.node(path).client_stat()
    }

    fn read(&self, req: Request) -> (i32, Response) {
        self.sm.read(0, &req, &[])
    }
}

fn events(a: &Applied) -> Vec<(String, EventType)> {
    a.triggers
        .iter()
        .map(|t| (t.path.to_string(), t.event))
        .collect()
}

fn ev(path: &str, e: EventType) -> (String, EventType) {
    (path.to_owned(), e)
}

// ---------------------------------------------------------------------------------------------
// Bootstrap, sessions, zxids.

#[test]
fn new_state_is_zookeepers_initial_tree_at_zxid_0() {
    let sm = StateMachine::new();
    assert_eq!(sm.last_zxid(), 0);
    assert!(!sm.is_bootstrapped());
    assert_eq!(sm.tree().len(), 4);
    for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
        assert!(sm.tree().contains(p), "{p}");
    }
    assert_eq!(sm.sessions().count(), 0);
    sm.check_invariants().unwrap();
}

#[test]
fn bootstrap_takes_no_zxid_and_happens_once() {
    let mut h = H::new();
    assert!(h.sm.is_bootstrapped());
    let again = h.run(
        0,
        CommandOp::Bootstrap {
            secret: b"other".to_vec(),
            member_id: 2,
            settings: ApplySettings::default(),
        },
    );
    assert_eq!(again.err, BAD_ARGS);
    assert_eq!(h.sm.member_id(), 1);
}

#[test]
fn bootstrap_refuses_reserved_member_ids_and_empty_secrets() {
    for (secret, member_id) in [(vec![1u8], 0x80u8), (vec![1], 0xFF), (vec![], 1)] {
        let mut sm = StateMachine::new();
        let a = sm.apply(&Command {
            session_id: 0,
            cxid: 0,
            time_ms: 0,
            auth: vec![].into(),
            op: CommandOp::Bootstrap {
                secret,
                member_id,
                settings: ApplySettings::default(),
            },
        });
        assert_eq!(a.err, BAD_ARGS);
        assert_eq!(a.zxid, 0);
        assert!(!sm.is_bootstrapped());
    }
}

#[test]
fn create_session_before_bootstrap_fails_but_uses_a_zxid() {
    let mut sm = StateMachine::new();
    let a = sm.apply(&Command {
        session_id: 0,
        cxid: 0,
        time_ms: 5,
        auth: vec![].into(),
        op: CommandOp::CreateSession { timeout_ms: 1000 },
    });
    assert_eq!(a.err, ErrorCode::SystemError as i32);
    assert_eq!(a.zxid, 1);
    assert_eq!(a.session, None);
    assert_eq!(sm.session_count(), 0);
}

#[test]
fn session_ids_come_from_the_bootstrap_time_and_member() {
    let mut sm = StateMachine::new();
    let mut run = |op| {
        sm.apply(&Command {
            session_id: 0,
            cxid: 0,
            time_ms: 123_456_789,
            auth: vec![].into(),
            op,
        })
    };
    run(CommandOp::Bootstrap {
        secret: vec![7; 32],
        member_id: 1,
        settings: ApplySettings::default(),
    });
    let mut ids = Vec::new();
    for _ in 0..3 {
        match run(CommandOp::CreateSession { timeout_ms: 4000 }).session {
            Some(SessionChange::Created {
                id,
                timeout_ms,
                passwd,
            }) => {
                assert_eq!(timeout_ms, 4000);
                assert_eq!(passwd, hmac_password(&[7; 32], id));
                ids.push(id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        ids,
        [
            0x0100_075b_cd15_0000,
            0x0100_075b_cd15_0001,
            0x0100_075b_cd15_0002
        ]
    );
    assert_eq!(
        sm.sessions().collect::<Vec<_>>(),
        ids.iter().map(|i| (*i, 4000)).collect::<Vec<_>>()
    );
}

#[test]
fn passwords_are_hmac_and_checked_in_constant_time() {
    let mut h = H::new();
    let s = h.session();
    let pw = h.sm.session_password(s).unwrap();
    assert_eq!(pw, hmac_password(b"cluster secret", s));
    assert!(h.sm.check_password(s, &pw));
    let mut wrong = pw;
    wrong[15] ^= 1;
    assert!(!h.sm.check_password(s, &wrong));
    assert!(!h.sm.check_password(s, &pw[..8]));
    assert!(!h.sm.check_password(0, &pw));
    assert_eq!(h.sm.session_password(s + 100), None);
    // A session imported from ZooKeeper keeps ZooKeeper's derivation.
    if let Some(info) = h.sm.sessions.get_mut(&s) {
        info.legacy_password = true;
    }
    assert!(h.sm.check_password(s, &zookeeper_password(s)));
    assert!(!h.sm.check_password(s, &pw));
}

#[test]
fn every_command_uses_one_zxid_failed_writes_too() {
    let mut h = H::new();
    let s = h.session();
    let z = h.sm.last_zxid();
    assert_eq!(h.err(s, create("/missing/child", 0)), NO_NODE);
    assert_eq!(h.sm.last_zxid(), z + 1);
    h.ok(s, create("/a", 0));
    assert_eq!(h.sm.last_zxid(), z + 2);
    // A multi counts once, failed or not.
    h.ok(
        s,
        Request::Multi(vec![
            MultiOp::Create {
                op: OpCode::Create,
                req: create_req("/b", None, open_acl_unsafe(), 0),
            },
            MultiOp::Create {
                op: OpCode::Create,
                req: create_req("/c", None, open_acl_unsafe(), 0),
            },
        ]),
    );
    assert_eq!(h.sm.last_zxid(), z + 3);
    assert_eq!(h.stat("/b").czxid, z + 3);
    assert_eq!(h.stat("/c").czxid, z + 3);
    h.ok(
        s,
        Request::Multi(vec![MultiOp::Delete(PathVersion {
            path: "/nope".into(),
            version: -1,
        })]),
    );
    assert_eq!(h.sm.last_zxid(), z + 4);
    h.run(s, CommandOp::CloseSession);
    assert_eq!(h.sm.last_zxid(), z + 5);
}

// ---------------------------------------------------------------------------------------------
// Create.

#[test]
fn create_replies_by_opcode_and_fires_created_then_children_changed() {
    let mut h = H::new();
    let s = h.session();
    let a = h.ok(s, create("/a", 0));
    assert_eq!(a.response, Response::Create { path: "/a".into() });
    assert_eq!(
        events(&a),
        [
            ev("/a", EventType::NodeCreated),
            ev("/", EventType::NodeChildrenChanged)
        ]
    );
    assert!(a.triggers.iter().all(|t| t.zxid == a.zxid));
    let restricted = vec![acl(perms::ALL, "digest", &digest_id("u:p"))];
    let a = h.ok(
        s,
        Request::Create {
            op: OpCode::Create2,
            req: create_req("/a/b", Some(b"hi"), restricted.clone(), 0),
        },
    );
    let stat = h.stat("/a/b");
    assert_eq!(
        a.response,
        Response::Create2 {
            path: "/a/b".into(),
            stat
        }
    );
    assert_eq!(stat.czxid, a.zxid);
    assert_eq!(stat.mzxid, a.zxid);
    assert_eq!(stat.pzxid, a.zxid);
    assert_eq!(stat.ctime, h.time_ms);
    assert_eq!(stat.mtime, h.time_ms);
    assert_eq!(stat.data_length, 2);
    assert_eq!((stat.version, stat.cversion, stat.aversion), (0, 0, 0));
    assert_eq!(stat.ephemeral_owner, 0);
    // NodeCreated carries the new node's ACL; NodeChildrenChanged the parent's.
    assert_eq!(*a.triggers[0].acl, restricted);
    assert_eq!(*a.triggers[1].acl, open_acl_unsafe());
    assert_eq!(&*a.triggers[1].path, "/a");
}

#[test]
fn sequential_suffix_is_the_parents_internal_cversion_before_increment() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/p", 0));
    h.ok(s, create("/p/a", 0));
    h.ok(s, create("/p/b", 0));
    h.ok(s, delete("/p/a", -1));
    // Two children created, one deleted: the suffix is the creation count.
    let a = h.ok(s, create("/p/seq-", 2));
    assert_eq!(
        a.response,
        Response::Create {
            path: "/p/seq-0000000002".into()
        }
    );
    let a = h.ok(s, create("/p/seq-", 3));
    assert_eq!(
        a.response,
        Response::Create {
            path: "/p/seq-0000000003".into()
        }
    );
    // "/p/" + sequential is a valid child named by the counter alone.
    let a = h.ok(s, create("/p/", 2));
    assert_eq!(
        a.response,
        Response::Create {
            path: "/p/0000000004".into()
        }
    );
    // Under the root, the suffix continues from the root's own count.
    let a = h.ok(s, create("/", 2));
    assert_eq!(
        a.response,
        Response::Create {
            path: "/0000000001".into()
        }
    );
}

#[test]
fn sequential_suffix_formats_negative_counters_like_java() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/p", 0));
    assert!(h.sm.tree.change_stat("/p", |s| s.cversion = -5));
    let a = h.ok(s, create("/p/n", 2));
    assert_eq!(
        a.response,
        Response::Create {
            path: "/p/n-000000005".into()
        }
    );
    assert_eq!(h.node("/p").stat().cversion, -4);
}

#[test]
fn client_cversion_and_pzxid_follow_creates_and_deletes() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/p", 0));
    let c1 = h.ok(s, create("/p/a", 0)).zxid;
    assert_eq!(h.stat("/p").pzxid, c1);
    assert_eq!(h.stat("/p").cversion, 1);
    h.ok(s, create("/p/b", 0));
    let d = h.ok(s, delete("/p/a", -1)).zxid;
    let st = h.stat("/p");
    // Internal cversion 2, one child left: 2*2 - 1 = 3 = creates + deletes.
    assert_eq!(st.cversion, 3);
    assert_eq!(st.num_children, 1);
    assert_eq!(st.pzxid, d);
    assert_eq!(h.node("/p").stat().cversion, 2);
    // Children changes do not touch the parent's mzxid or version.
    assert_eq!(st.mzxid, st.czxid);
    assert_eq!(st.version, 0);
}

#[test]
fn null_data_reads_back_null_with_length_zero() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/n", 0));
    let (err, r) = h.read(Request::GetData(pw("/n")));
    assert_eq!(err, 0);
    match r {
        Response::GetData { data, stat } => {
            assert_eq!(data, None);
            assert_eq!(stat.data_length, 0);
        }
        other => panic!("{other:?}"),
    }
    h.ok(s, create_with("/e", Some(b""), open_acl_unsafe()));
    let (_, r) = h.read(Request::GetData(pw("/e")));
    assert!(matches!(r, Response::GetData { data: Some(d), .. } if d.is_empty()));
}

#[test]
fn create_checks_flags_first() {
    let mut h = H::new();
    // Even a dead session with a bad path gets BadArguments for bad flags.
    assert_eq!(h.err(12345, create("bad", 7)), BAD_ARGS);
    assert_eq!(h.err(12345, create("bad", -1)), BAD_ARGS);
}

#[test]
fn ttl_needs_extended_types_then_a_valid_ttl() {
    let mut h = H::new();
    assert_eq!(
        h.err(12345, create_op(OpCode::CreateTtl, "bad", 5, 100)),
        UNIMPLEMENTED
    );
    assert_eq!(
        h.err(12345, create_op(OpCode::Create, "/x", 6, -1)),
        UNIMPLEMENTED
    );
    let mut h = H::extended();
    let s = h.session();
    for ttl in [0, -1, TTL_MAX_MS + 1] {
        assert_eq!(
            h.err(12345, create_op(OpCode::CreateTtl, "/t", 5, ttl)),
            BAD_ARGS,
            "ttl {ttl}"
        );
    }
    // A TTL mode through plain create carries no TTL (-1).
    assert_eq!(h.err(s, create_op(OpCode::Create, "/t", 5, 100)), BAD_ARGS);
    // createTTL with a mode that is not TTL.
    assert_eq!(
        h.err(s, create_op(OpCode::CreateTtl, "/t", 0, 100)),
        BAD_ARGS
    );
    assert_eq!(
        h.err(s, create_op(OpCode::CreateTtl, "/t", 0, -1)),
        BAD_ARGS
    );
    let a = h.ok(s, create_op(OpCode::CreateTtl, "/t", 5, TTL_MAX_MS));
    assert!(matches!(a.response, Response::Create2 { .. }));
}

#[test]
fn create_checks_the_session_before_the_path() {
    let mut h = H::new();
    let s = h.session();
    h.run(s, CommandOp::CloseSession);
    assert_eq!(h.err(s, create("no-slash", 0)), SESSION_EXPIRED);
    assert_eq!(h.err(s, create("/a", 0)), SESSION_EXPIRED);
    assert_eq!(h.err(0, create("/a", 0)), SESSION_EXPIRED);
}

#[test]
fn create_checks_slash_and_nul_before_the_acl() {
    let mut h = H::new();
    let s = h.session();
    let no_acl = |path: &str| create_with(path, None, vec![]);
    assert_eq!(h.err(s, no_acl("a")), BAD_ARGS);
    assert_eq!(h.err(s, no_acl("")), BAD_ARGS);
    assert_eq!(h.err(s, no_acl("/a\0b")), BAD_ARGS);
    assert_eq!(h.err(s, no_acl("/a")), INVALID_ACL);
    // The ACL is checked before the parent.
    assert_eq!(h.err(s, no_acl("/missing/a")), INVALID_ACL);
}

#[test]
fn create_checks_parent_then_permission_then_full_path() {
    let mut h = H::new();
    let s = h.session();
    assert_eq!(h.err(s, create("/missing/a", 0)), NO_NODE);
    // "/a//b": the parent "/a/" cannot exist.
    h.ok(s, create("/a", 0));
    assert_eq!(h.err(s, create("/a//b", 0)), NO_NODE);
    // No CREATE on the parent wins over an invalid final path.
    h.ok(s, create_with("/ro", None, read_acl_unsafe()));
    assert_eq!(h.err(s, create("/ro/x", 0)), NO_AUTH);
    assert_eq!(h.err(s, create("/ro/", 0)), NO_AUTH);
    // With permission, the final path is validated.
    assert_eq!(h.err(s, create("/a/", 0)), BAD_ARGS);
    assert_eq!(h.err(s, create("/a/.", 0)), BAD_ARGS);
    assert_eq!(h.err(s, create("/a/b\u{1}", 0)), BAD_ARGS);
}

#[test]
fn create_checks_existence_then_ephemeral_parent() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/e", 1));
    assert_eq!(h.err(s, create("/e", 0)), NODE_EXISTS);
    assert_eq!(h.err(s, create("/e/x", 0)), NO_CHILDREN_FOR_EPHEMERALS);
    assert_eq!(h.err(s, create("/e/x", 3)), NO_CHILDREN_FOR_EPHEMERALS);
    assert_eq!(h.err(s, create("/", 0)), NODE_EXISTS);
    assert_eq!(h.err(s, create("/zookeeper", 0)), NODE_EXISTS);
    // Children of /zookeeper are not blocked.
    h.ok(s, create("/zookeeper/mine", 0));
    // /zookeeper/config is protected only by its READ-only ACL.
    assert_eq!(h.err(s, create("/zookeeper/config/x", 0)), NO_AUTH);
}

#[test]
fn containers_and_ttl_nodes_may_have_children() {
    let mut h = H::extended();
    let s = h.session();
    h.ok(s, create_op(OpCode::CreateContainer, "/c", 4, -1));
    h.ok(s, create_op(OpCode::CreateTtl, "/t", 5, 1000));
    h.ok(s, create("/c/x", 1));
    h.ok(s, create("/t/x", 1));
}

#[test]
fn ephemeral_nodes_belong_to_their_session() {
    let mut h = H::new();
    let s = h.session();
    let other = h.session();
    let a = h.ok(s, create("/eph-", 3));
    let Response::Create { path } = a.response else {
        panic!()
    };
    assert_eq!(path, "/eph-0000000000");
    assert_eq!(h.stat(&path).ephemeral_owner, s);
    h.ok(s, create("/e2", 1));
    assert_eq!(h.sm.ephemerals(s), ["/e2", "/eph-0000000000"]);
    assert!(h.sm.ephemerals(other).is_empty());
    assert_eq!(h.sm.ephemerals_count(), 2);
    assert_eq!(
        h.sm.sessions_with_ephemerals(),
        [(s, vec!["/e2".to_string(), "/eph-0000000000".into()])]
    );
    // Another session may delete it; the index follows.
    h.ok(other, delete("/e2", -1));
    assert_eq!(h.sm.ephemerals(s), ["/eph-0000000000"]);
}

#[test]
fn close_session_deletes_its_ephemerals_with_the_close_zxid() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/p", 0));
    h.ok(s, create("/p/e", 1));
    h.ok(s, create("/e", 1));
    h.ok(s, create("/keep", 0));
    let a = h.run(s, CommandOp::CloseSession);
    assert_eq!(a.err, 0);
    assert_eq!(a.response, Response::Empty);
    assert!(
        matches!(a.session, Some(SessionChange::Closed { id, .. }) if id == s),
        "{:?}",
        a.session
    );
    assert_eq!(
        events(&a),
        [
            ev("/e", EventType::NodeDeleted),
            ev("/", EventType::NodeChildrenChanged),
            ev("/p/e", EventType::NodeDeleted),
            ev("/p", EventType::NodeChildrenChanged),
        ]
    );
    assert!(a.triggers.iter().all(|t| t.zxid == a.zxid));
    assert!(!h.sm.session_exists(s));
    assert!(!h.sm.tree().contains("/e"));
    assert!(!h.sm.tree().contains("/p/e"));
    assert!(h.sm.tree().contains("/keep"));
    assert_eq!(h.stat("/p").pzxid, a.zxid);
    // Closing again, or closing an unknown session, does nothing.
    let again = h.run(s, CommandOp::CloseSession);
    assert_eq!((again.err, again.session), (0, None));
    assert!(again.triggers.is_empty());
}

#[test]
fn ephemeral_create_racing_a_close_fails_and_leaves_nothing() {
    let mut h = H::new();
    let s = h.session();
    // The close is ordered first; the create proposed before it was applied comes after.
    h.run(s, CommandOp::CloseSession);
    let a = h.write(s, create("/lock", 1));
    assert_eq!(a.err, SESSION_EXPIRED);
    assert!(!h.sm.tree().contains("/lock"));
    let a = h.write(s, create("/lock-", 3));
    assert_eq!(a.err, SESSION_EXPIRED);
    // Inside a multi too.
    let a = h.write(
        s,
        Request::Multi(vec![MultiOp::Create {
            op: OpCode::Create,
            req: create_req("/lock", None, open_acl_unsafe(), 1),
        }]),
    );
    assert_eq!(
        a.response,
        Response::Multi(vec![MultiResult::Error(SESSION_EXPIRED)])
    );
    assert!(!h.sm.tree().contains("/lock"));
    assert_eq!(h.sm.ephemerals_count(), 0);
}

#[test]
fn writes_of_a_closed_session_fail() {
    let mut h = H::new();
    let s = h.session();
    let other = h.session();
    h.ok(other, create("/a", 0));
    h.run(s, CommandOp::CloseSession);
    assert_eq!(h.err(s, set_data("/a", b"x", -1)), SESSION_EXPIRED);
    assert_eq!(h.err(s, delete("/a", -1)), SESSION_EXPIRED);
    assert_eq!(
        h.err(s, set_acl("/a", open_acl_unsafe(), -1)),
        SESSION_EXPIRED
    );
}

const A: Owner = Owner {
    member: 1,
    conn: std::num::NonZeroU64::new(10).unwrap(),
};
const B: Owner = Owner {
    member: 1,
    conn: std::num::NonZeroU64::new(11).unwrap(),
};
const SESSION_MOVED: i32 = -118;

fn revalidate(password: &[u8]) -> CommandOp {
    CommandOp::Revalidate {
        password: password.to_vec(),
        timeout_ms: 6000,
    }
}

fn owned_session(h: &mut H, origin: Owner) -> i64 {
    match h
        .run_from(0, origin, CommandOp::CreateSession { timeout_ms: 30_000 })
        .session
    {
        Some(SessionChange::Created { id, .. }) => id,
        other => panic!("no session: {other:?}"),
    }
}

#[test]
fn the_creating_connection_owns_the_session() {
    let mut h = H::new();
    let s = owned_session(&mut h, A);
    assert_eq!(h.sm.session(s).unwrap().owner, Some(A));
    let a = h.run_from(s, A, CommandOp::Write(create("/e", 1)));
    assert_eq!(a.err, 0);
}

#[test]
fn revalidate_with_the_right_password_moves_the_owner_and_takes_no_zxid() {
    let mut h = H::new();
    let s = owned_session(&mut h, A);
    h.run_from(s, A, CommandOp::Write(create("/e", 1)));
    let pw = h.sm.session_password(s).unwrap();
    let a = h.run_from(s, B, revalidate(&pw));
    assert_eq!(
        a.session,
        Some(SessionChange::Revalidated {
            id: s,
            timeout_ms: 6000,
            passwd: pw,
            previous: Some(A),
        })
    );
    assert!(a.triggers.is_empty());
    let info = h.sm.session(s).unwrap();
    assert_eq!(info.owner, Some(B));
    assert_eq!(
        info.timeout_ms, 30_000,
        "the stored timeout stays the original"
    );
    assert_eq!(
        h.sm.ephemerals(s),
        vec!["/e".to_string()],
        "same session, same ephemerals"
    );
}

#[test]
fn revalidate_refuses_wrong_passwords_and_dead_sessions_without_touching_the_owner() {
    let mut h = H::new();
    let s = owned_session(&mut h, A);
    let mut pw = h.sm.session_password(s).unwrap();
    pw[0] ^= 1;
    for bad in [&pw[..], &[][..], &[0u8; 16][..], &pw[..15]] {
        let before = h.sm.clone();
        let a = h.run_from(s, B, revalidate(bad));
        assert_eq!(a.session, Some(SessionChange::RevalidateFailed { id: s }));
        assert_eq!(h.sm, before, "a refused reconnect changes nothing");
    }
    assert_eq!(h.sm.session(s).unwrap().owner, Some(A));
    assert_eq!(h.run_from(s, A, CommandOp::Write(create("/a", 0))).err, 0);
    // A closed session cannot be revalidated, even with its right password.
    let right = h.sm.session_password(s).unwrap();
    h.run(s, CommandOp::CloseSession);
    let a = h.run_from(s, B, revalidate(&right));
    assert_eq!(a.session, Some(SessionChange::RevalidateFailed { id: s }));
    // Nor an id that never existed.
    let a = h.run_from(s + 1, B, revalidate(&right));
    assert_eq!(
        a.session,
        Some(SessionChange::RevalidateFailed { id: s + 1 })
    );
}

#[test]
fn writes_from_the_previous_owner_fail_with_session_moved() {
    let mut h = H::new();
    let s = owned_session(&mut h, A);
    h.run_from(s, A, CommandOp::Write(create("/a", 0)));
    let pw = h.sm.session_password(s).unwrap();
    h.run_from(s, B, revalidate(&pw));
    let before = h.sm.tree().clone();
    for req in [
        create("/e", 1),
        set_data("/a", b"x", -1),
        delete("/a", -1),
        Request::Multi(vec![MultiOp::Create {
            op: OpCode::Create,
            req: create_req("/m", None, open_acl_unsafe(), 1),
        }]),
    ] {
        let a = h.run_from(s, A, CommandOp::Write(req));
        assert_eq!(a.err, SESSION_MOVED);
    }
    assert_eq!(
        h.sm.tree(),
        &before,
        "nothing a moved connection sent was applied"
    );
    assert_eq!(h.run_from(s, B, CommandOp::Write(create("/e", 1))).err, 0);
    // A close is not checked (ZooKeeper's expirer is no owner either): it ends the session.
    let a = h.run_from(s, A, CommandOp::CloseSession);
    assert_eq!(
        a.session,
        Some(SessionChange::Closed {
            id: s,
            owner: Some(B)
        }),
        "the close names the session's last owner"
    );
    assert!(!h.sm.tree().contains("/e"));
}

#[test]
fn a_session_without_owner_is_taken_by_its_first_writer() {
    let mut h = H::new();
    let s = h.session(); // created without an origin, like an imported session
    assert_eq!(h.sm.session(s).unwrap().owner, None);
    assert_eq!(h.run_from(s, B, CommandOp::Write(create("/x", 0))).err, 0);
    assert_eq!(h.sm.session(s).unwrap().owner, Some(B));
    assert_eq!(
        h.run_from(s, A, CommandOp::Write(create("/y", 0))).err,
        SESSION_MOVED
    );
}

#[test]
fn containers_store_the_marker_but_show_owner_zero() {
    let mut h = H::new();
    let s = h.session();
    let a = h.ok(s, create_op(OpCode::CreateContainer, "/c", 4, -1));
    let Response::Create2 { stat, .. } = a.response else {
        panic!("{a:?}")
    };
    assert_eq!(stat.ephemeral_owner, 0);
    assert_eq!(
        h.node("/c").stat().ephemeral_owner,
        CONTAINER_EPHEMERAL_OWNER
    );
    // Plain create with the container flag makes a persistent node, as ZooKeeper's CreateTxn does.
    h.ok(s, create("/not-container", 4));
    assert_eq!(h.node("/not-container").kind(), NodeKind::Persistent);
}

#[test]
fn ttl_nodes_store_the_ttl_but_show_owner_zero() {
    let mut h = H::extended();
    let s = h.session();
    let a = h.ok(s, create_op(OpCode::CreateTtl, "/t-", 6, 5000));
    let Response::Create2 { path, stat } = a.response else {
        panic!("{a:?}")
    };
    assert_eq!(path, "/t-0000000000");
    assert_eq!(stat.ephemeral_owner, 0);
    assert_eq!(
        h.node(&path).stat().ephemeral_owner,
        TTL_EPHEMERAL_OWNER_MASK | 5000
    );
    assert_eq!(h.node(&path).kind(), NodeKind::Ttl(5000));
}

#[test]
fn container_candidates_follow_the_reaper_rules() {
    let mut h = H::extended();
    let s = h.session();
    h.ok(s, create_op(OpCode::CreateContainer, "/never-used", 4, -1));
    h.ok(s, create_op(OpCode::CreateContainer, "/used", 4, -1));
    h.ok(s, create_op(OpCode::CreateContainer, "/busy", 4, -1));
    h.ok(s, create("/used/x", 0));
    h.ok(s, delete("/used/x", -1));
    h.ok(s, create("/busy/x", 0));
    let far = h.time_ms + 1_000_000_000;
    // (b) is off: a never-used container stays however old it is.
    assert_eq!(h.sm.container_candidates(far), ["/used"]);

    h.ok(s, create_op(OpCode::CreateTtl, "/ttl", 5, 1000));
    let mtime = h.node("/ttl").stat().mtime;
    assert_eq!(h.sm.container_candidates(mtime + 1000), ["/used"]);
    assert_eq!(h.sm.container_candidates(mtime + 1001), ["/used", "/ttl"]);
    // setData resets the TTL.
    h.ok(s, set_data("/ttl", b"x", -1));
    let mtime2 = h.node("/ttl").stat().mtime;
    assert_eq!(h.sm.container_candidates(mtime + 1001), ["/used"]);
    assert_eq!(h.sm.container_candidates(mtime2 + 1001), ["/used", "/ttl"]);
    // A TTL node with children is kept.
    h.ok(s, create("/ttl/c", 0));
    assert_eq!(h.sm.container_candidates(far), ["/used"]);
}

// ---------------------------------------------------------------------------------------------
// Delete and DeleteContainer.

#[test]
fn delete_fires_deleted_then_children_changed() {
    let mut h = H::new();
    let s = h.session();
    let restricted = vec![acl(perms::ALL, "digest", &digest_id("u:p"))];
    h.ok(s, create("/p", 0));
    h.ok(s, create_with("/p/x", None, restricted.clone()));
    let a = h.ok(s, delete("/p/x", 0));
    assert_eq!(a.response, Response::Empty);
    assert_eq!(
        events(&a),
        [
            ev("/p/x", EventType::NodeDeleted),
            ev("/p", EventType::NodeChildrenChanged)
        ]
    );
    assert_eq!(*a.triggers[0].acl, restricted);
    assert_eq!(*a.triggers[1].acl, open_acl_unsafe());
}

#[test]
fn delete_refuses_special_paths_and_malformed_ones() {
    let mut h = H::new();
    let s = h.session();
    for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
        assert_eq!(h.err(s, delete(p, -1)), BAD_ARGS, "{p}");
    }
    assert_eq!(h.err(s, delete("a", -1)), BAD_ARGS);
    assert_eq!(h.err(s, delete("/a\0", -1)), BAD_ARGS);
    // Not validated further: a malformed path simply does not exist.
    assert_eq!(h.err(s, delete("/a/", -1)), NO_NODE);
    assert_eq!(h.err(s, delete("//", -1)), NO_NODE);
}

#[test]
fn delete_check_order() {
    let mut h = H::new();
    let s = h.session();
    // Session first.
    assert_eq!(h.err(777, delete("/", -1)), SESSION_EXPIRED);
    // Parent missing.
    assert_eq!(h.err(s, delete("/x/y", -1)), NO_NODE);
    // No DELETE on the parent, even when the node itself is missing.
    let no_delete = vec![acl(perms::ALL & !perms::DELETE, "world", "anyone")];
    h.ok(s, create_with("/nd", None, no_delete));
    h.ok(s, create("/nd/child", 0));
    assert_eq!(h.err(s, delete("/nd/missing", -1)), NO_AUTH);
    assert_eq!(h.err(s, delete("/nd/child", -1)), NO_AUTH);
    // Node missing.
    assert_eq!(h.err(s, delete("/missing", -1)), NO_NODE);
    // Version before children.
    h.ok(s, create("/p", 0));
    h.ok(s, create("/p/c", 0));
    assert_eq!(h.err(s, delete("/p", 3)), BAD_VERSION);
    assert_eq!(h.err(s, delete("/p", 0)), NOT_EMPTY);
    assert_eq!(h.err(s, delete("/p", -1)), NOT_EMPTY);
    h.ok(s, set_data("/p/c", b"1", -1));
    assert_eq!(h.err(s, delete("/p/c", 0)), BAD_VERSION);
    h.ok(s, delete("/p/c", 1));
    h.ok(s, delete("/p", 0));
}

#[test]
fn delete_container_rules() {
    let mut h = H::new();
    let s = h.session();
    let dc = |p: &str| Request::DeleteContainer(p.into());
    h.ok(s, create_op(OpCode::CreateContainer, "/c", 4, -1));
    h.ok(s, create("/c/x", 0));
    h.ok(s, create("/e", 1));
    h.ok(s, create("/plain", 0));
    // No session needed (the reaper uses session 0).
    assert_eq!(h.err(0, dc("/c")), NOT_EMPTY);
    assert_eq!(h.err(0, dc("/e")), BAD_VERSION);
    assert_eq!(h.err(0, dc("/missing")), NO_NODE);
    assert_eq!(h.err(0, dc("/zookeeper")), BAD_ARGS);
    assert_eq!(h.err(0, dc("nope")), BAD_ARGS);
    assert_eq!(h.err(0, delete("/c/x", -1)), SESSION_EXPIRED);
    h.ok(s, delete("/c/x", -1));
    h.ok(0, dc("/c"));
}

#[test]
fn delete_container_deletes_empty_non_ephemeral_nodes() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create_op(OpCode::CreateContainer, "/c", 4, -1));
    h.ok(s, create("/plain", 0));
    let a = h.ok(0, Request::DeleteContainer("/c".into()));
    assert_eq!(
        events(&a),
        [
            ev("/c", EventType::NodeDeleted),
            ev("/", EventType::NodeChildrenChanged)
        ]
    );
    // ZooKeeper only refuses ordinary ephemerals.
    h.ok(0, Request::DeleteContainer("/plain".into()));
    assert_eq!(h.sm.tree().containers().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// SetData and SetACL.

#[test]
fn set_data_check_order_and_effects() {
    let mut h = H::new();
    let s = h.session();
    assert_eq!(h.err(999, set_data("bad", b"", -1)), SESSION_EXPIRED);
    assert_eq!(h.err(s, set_data("/a/", b"", -1)), BAD_ARGS);
    assert_eq!(h.err(s, set_data("/missing", b"", -1)), NO_NODE);
    h.ok(s, create_with("/ro", None, read_acl_unsafe()));
    assert_eq!(h.err(s, set_data("/ro", b"", 5)), NO_AUTH);
    let c = h.ok(s, create("/a", 0)).zxid;
    let ctime = h.stat("/a").ctime;
    // Children made and one taken away: the reply's numChildren, cversion and pzxid are the node's own.
    for child in ["/a/x", "/a/y", "/a/z"] {
        h.ok(s, create(child, 0));
    }
    let p = h.ok(s, delete("/a/y", -1)).zxid;
    assert_eq!(h.err(s, set_data("/a", b"x", 1)), BAD_VERSION);
    let a = h.ok(s, set_data("/a", b"xyz", 0));
    let st = h.stat("/a");
    assert_eq!(a.response, Response::Stat(st));
    assert_eq!(st.version, 1);
    assert_eq!(st.mzxid, a.zxid);
    assert_eq!(st.czxid, c);
    assert_eq!(st.mtime, h.time_ms);
    assert_eq!(st.ctime, ctime);
    assert_eq!(st.data_length, 3);
    assert_eq!((st.num_children, st.cversion), (2, 4));
    assert_eq!(st.pzxid, p);
    assert_eq!(events(&a), [ev("/a", EventType::NodeDataChanged)]);
    h.ok(s, set_data("/a", b"", -1));
    assert_eq!(h.stat("/a").version, 2);
}

#[test]
fn version_overflow_wraps_and_skips_minus_one() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/v", 0));
    assert!(h.sm.tree.change_stat("/v", |s| s.version = i32::MAX));
    h.ok(s, set_data("/v", b"", i32::MAX));
    assert_eq!(h.stat("/v").version, i32::MIN);
    assert!(h.sm.tree.change_stat("/v", |s| s.version = -2));
    h.ok(s, set_data("/v", b"", -2));
    assert_eq!(h.stat("/v").version, 0);
}

#[test]
fn set_acl_check_order_and_effects() {
    let mut h = H::new();
    let s = h.session();
    let digest = digest_id("u:p");
    let me = [id("digest", &digest)];
    assert_eq!(h.err(999, set_acl("bad", vec![], -1)), SESSION_EXPIRED);
    assert_eq!(h.err(s, set_acl("bad", vec![], -1)), BAD_ARGS);
    assert_eq!(h.err(s, set_acl("/missing", vec![], -1)), INVALID_ACL);
    assert_eq!(
        h.err(s, set_acl("/missing", open_acl_unsafe(), -1)),
        NO_NODE
    );
    // The config node is READ-only for the world.
    assert_eq!(
        h.err(s, set_acl("/zookeeper/config", open_acl_unsafe(), 7)),
        NO_AUTH
    );
    h.ok(s, create("/a", 0));
    assert_eq!(h.err(s, set_acl("/a", open_acl_unsafe(), 1)), BAD_VERSION);
    let a = h.write_as(s, &me, set_acl("/a", vec![acl(perms::ALL, "auth", "")], 0));
    assert_eq!(a.err, 0);
    assert!(a.triggers.is_empty());
    let st = h.stat("/a");
    assert_eq!(a.response, Response::Stat(st));
    assert_eq!(st.aversion, 1);
    assert_eq!(st.version, 0);
    assert_eq!(
        **h.node("/a").acl(),
        vec![acl(perms::ALL, "digest", &digest)]
    );
    // Without the digest id, no ADMIN any more.
    assert_eq!(h.err(s, set_acl("/a", open_acl_unsafe(), -1)), NO_AUTH);
}

#[test]
fn config_node_aversion_minus_one_moves_to_zero() {
    let mut h = H::new();
    let s = h.session();
    let a = h.write_as(
        s,
        &[id("super", "")],
        set_acl("/zookeeper/config", read_acl_unsafe(), -1),
    );
    assert_eq!(a.err, 0);
    assert_eq!(h.stat("/zookeeper/config").aversion, 0);
}

// ---------------------------------------------------------------------------------------------
// ACL schemes through writes.

#[test]
fn acl_schemes_gate_writes() {
    let mut h = H::new();
    let s = h.session();
    let digest = digest_id("user:password");
    h.ok(
        s,
        create_with(
            "/guarded",
            None,
            vec![
                acl(perms::READ, "world", "anyone"),
                acl(perms::WRITE, "ip", "10.0.0.0/8"),
                acl(perms::ALL, "digest", &digest),
            ],
        ),
    );
    let ip_in = [id("ip", "10.1.2.3")];
    let ip_out = [id("ip", "192.168.0.1")];
    let user = [id("ip", "192.168.0.1"), id("digest", &digest)];
    let root = [id("super", "")];
    assert_eq!(h.write_as(s, &ip_in, set_data("/guarded", b"1", -1)).err, 0);
    assert_eq!(
        h.write_as(s, &ip_out, set_data("/guarded", b"1", -1)).err,
        NO_AUTH
    );
    assert_eq!(h.write_as(s, &user, set_data("/guarded", b"1", -1)).err, 0);
    assert_eq!(h.write_as(s, &root, set_data("/guarded", b"1", -1)).err, 0);
    assert_eq!(h.write_as(s, &ip_in, create("/guarded/c", 0)).err, NO_AUTH);
    assert_eq!(h.write_as(s, &user, create("/guarded/c", 0)).err, 0);
    assert_eq!(h.write_as(s, &[], create("/guarded/d", 0)).err, NO_AUTH);
}

#[test]
fn auth_acl_needs_an_authenticated_id() {
    let mut h = H::new();
    let s = h.session();
    let auth_acl = |p: &str| create_with(p, None, vec![acl(perms::ALL, "auth", "")]);
    assert_eq!(
        h.write_as(s, &[id("ip", "1.2.3.4")], auth_acl("/x")).err,
        INVALID_ACL
    );
    let d = digest_id("a:b");
    assert_eq!(h.write_as(s, &[id("digest", &d)], auth_acl("/x")).err, 0);
    assert_eq!(**h.node("/x").acl(), vec![acl(perms::ALL, "digest", &d)]);
}

// ---------------------------------------------------------------------------------------------
// Multi.

fn mcreate(path: &str, flags: i32) -> MultiOp {
    MultiOp::Create {
        op: OpCode::Create,
        req: create_req(path, None, open_acl_unsafe(), flags),
    }
}

fn mcheck(path: &str, version: i32) -> MultiOp {
    MultiOp::Check(PathVersion {
        path: path.into(),
        version,
    })
}

#[test]
fn multi_ops_see_each_other_and_fire_in_order() {
    let mut h = H::new();
    let s = h.session();
    let a = h.ok(
        s,
        Request::Multi(vec![
            mcreate("/m", 0),
            MultiOp::SetData(SetDataRequest {
                path: "/m".into(),
                data: Some(b"v".to_vec()),
                version: 0,
            }),
            MultiOp::Create {
                op: OpCode::Create2,
                req: create_req("/m/s-", None, open_acl_unsafe(), 2),
            },
            MultiOp::Create {
                op: OpCode::Create2,
                req: create_req("/m/s-", None, open_acl_unsafe(), 2),
            },
            mcheck("/m", 1),
            MultiOp::Delete(PathVersion {
                path: "/m/s-0000000000".into(),
                version: 0,
            }),
        ]),
    );
    let Response::Multi(results) = &a.response else {
        panic!("{a:?}")
    };
    assert_eq!(results[0], MultiResult::Create { path: "/m".into() });
    let MultiResult::SetData { stat } = &results[1] else {
        panic!()
    };
    assert_eq!(stat.version, 1);
    assert_eq!(stat.mzxid, a.zxid);
    // A create2 sub-op with a persistent mode answers as a plain create (ZooKeeper 3.8: the result
    // follows the create mode).
    assert_eq!(
        results[2],
        MultiResult::Create {
            path: "/m/s-0000000000".into()
        }
    );
    assert_eq!(
        results[3],
        MultiResult::Create {
            path: "/m/s-0000000001".into()
        }
    );
    assert_eq!(results[4], MultiResult::Check);
    assert_eq!(results[5], MultiResult::Delete);
    assert_eq!(
        events(&a),
        [
            ev("/m", EventType::NodeCreated),
            ev("/", EventType::NodeChildrenChanged),
            ev("/m", EventType::NodeDataChanged),
            ev("/m/s-0000000000", EventType::NodeCreated),
            ev("/m", EventType::NodeChildrenChanged),
            ev("/m/s-0000000001", EventType::NodeCreated),
            ev("/m", EventType::NodeChildrenChanged),
            ev("/m/s-0000000000", EventType::NodeDeleted),
            ev("/m", EventType::NodeChildrenChanged),
        ]
    );
    assert_eq!(h.sm.tree().get("/m").unwrap().num_children(), 1);
}

#[test]
fn failed_multi_changes_nothing_and_reports_per_op() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/exists", 0));
    let before = h.sm.clone();
    let a = h.write(
        s,
        Request::Multi(vec![
            mcreate("/new", 0),
            mcreate("/eph", 1),
            mcheck("/exists", 0),
            mcreate("/exists", 0),
            mcreate("/other", 0),
            mcheck("/nope", 0),
        ]),
    );
    assert_eq!(a.err, 0, "a failed multi still replies err 0");
    assert_eq!(
        a.response,
        Response::Multi(vec![
            MultiResult::Error(0),
            MultiResult::Error(0),
            MultiResult::Error(0),
            MultiResult::Error(NODE_EXISTS),
            MultiResult::Error(RUNTIME_INCONSISTENCY),
            MultiResult::Error(RUNTIME_INCONSISTENCY),
        ])
    );
    assert!(a.triggers.is_empty());
    assert_eq!(h.sm.tree(), before.tree());
    assert_eq!(h.sm.sessions, before.sessions);
    assert_eq!(h.sm.last_zxid(), before.last_zxid() + 1);
}

#[test]
fn multi_check_op_errors() {
    let mut h = H::new();
    let s = h.session();
    h.ok(
        s,
        create_with("/secret", None, vec![acl(perms::WRITE, "world", "anyone")]),
    );
    h.ok(s, create("/a", 0));
    let one = |h: &mut H, op: MultiOp| match h.ok(s, Request::Multi(vec![op])).response {
        Response::Multi(r) => r[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(one(&mut h, mcheck("/a", 0)), MultiResult::Check);
    assert_eq!(one(&mut h, mcheck("/a", -1)), MultiResult::Check);
    assert_eq!(
        one(&mut h, mcheck("/a", 1)),
        MultiResult::Error(BAD_VERSION)
    );
    assert_eq!(one(&mut h, mcheck("/b", 0)), MultiResult::Error(NO_NODE));
    assert_eq!(
        one(&mut h, mcheck("/secret", 0)),
        MultiResult::Error(NO_AUTH)
    );
    assert_eq!(one(&mut h, mcheck("bad", 0)), MultiResult::Error(BAD_ARGS));
}

#[test]
fn multi_result_kinds_follow_opcodes() {
    let mut h = H::extended();
    let s = h.session();
    let a = h.ok(
        s,
        Request::Multi(vec![
            MultiOp::Create {
                op: OpCode::CreateContainer,
                req: create_req("/c", None, open_acl_unsafe(), 4),
            },
            MultiOp::Create {
                op: OpCode::CreateTtl,
                req: CreateRequest {
                    ttl: 10,
                    ..create_req("/t", None, open_acl_unsafe(), 5)
                },
            },
        ]),
    );
    let Response::Multi(r) = a.response else {
        panic!()
    };
    assert!(matches!(&r[0], MultiResult::Create2 { path, .. } if path == "/c"));
    assert!(matches!(&r[1], MultiResult::Create2 { path, .. } if path == "/t"));
    assert_eq!(h.node("/c").kind(), NodeKind::Container);
    assert_eq!(h.node("/t").kind(), NodeKind::Ttl(10));
}

#[test]
fn empty_multi_succeeds_and_uses_a_zxid() {
    let mut h = H::new();
    let s = h.session();
    let a = h.ok(s, Request::Multi(vec![]));
    assert_eq!(a.response, Response::Multi(vec![]));
}

#[test]
fn read_ops_in_a_write_multi_are_a_marshalling_error() {
    let mut h = H::new();
    let s = h.session();
    let a = h.write(
        s,
        Request::Multi(vec![mcreate("/x", 0), MultiOp::GetData("/".into())]),
    );
    assert_eq!(a.err, MARSHALLING);
    assert!(!h.sm.tree().contains("/x"));
}

#[test]
fn unknown_writes_are_refused_with_a_zxid() {
    let mut h = H::new();
    let s = h.session();
    assert_eq!(h.err(s, Request::Exists(pw("/"))), UNIMPLEMENTED);
    assert_eq!(
        h.err(
            s,
            Request::Check(PathVersion {
                path: "/".into(),
                version: -1
            })
        ),
        UNIMPLEMENTED
    );
    assert_eq!(
        h.err(
            s,
            Request::Reconfig(oxkeeper_proto::ReconfigRequest {
                joining_servers: None,
                leaving_servers: None,
                new_members: None,
                cur_config_id: -1,
            })
        ),
        ErrorCode::ReconfigDisabled as i32
    );
    assert_eq!(
        h.err(s, create_op(OpCode::Delete, "/x", 0, -1)),
        MARSHALLING
    );
}

// ---------------------------------------------------------------------------------------------
// Reads.

#[test]
fn exists_and_get_data() {
    let mut h = H::new();
    let s = h.session();
    h.ok(
        s,
        create_with("/w", Some(b"d"), vec![acl(perms::WRITE, "world", "anyone")]),
    );
    h.ok(s, create("/a", 0));
    assert_eq!(
        h.read(Request::Exists(pw("/missing"))),
        (NO_NODE, Response::Empty)
    );
    assert_eq!(h.read(Request::Exists(pw("/a\0"))).0, BAD_ARGS);
    // ZooKeeper 3.8.0's exists checks no ACL.
    assert_eq!(
        h.read(Request::Exists(pw("/w"))),
        (0, Response::Stat(h.stat("/w")))
    );
    assert_eq!(
        h.read(Request::Exists(pw("/a"))),
        (0, Response::Stat(h.stat("/a")))
    );
    assert_eq!(h.read(Request::GetData(pw("/w"))).0, NO_AUTH);
    assert_eq!(h.read(Request::GetData(pw("/missing"))).0, NO_NODE);
    let (err, r) =
        h.sm.read(0, &Request::GetData(pw("/w")), &[id("super", "")]);
    assert_eq!(err, 0);
    assert_eq!(
        r,
        Response::GetData {
            data: Some(b"d".to_vec()),
            stat: h.stat("/w")
        }
    );
}

#[test]
fn get_children_lists_names_and_the_parent_stat() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/p", 0));
    for c in ["b", "a", "c"] {
        h.ok(s, create(&format!("/p/{c}"), 0));
    }
    assert_eq!(
        h.read(Request::GetChildren(pw("/p"))),
        (
            0,
            Response::GetChildren {
                children: vec!["a".into(), "b".into(), "c".into()]
            }
        )
    );
    match h.read(Request::GetChildren2(pw("/p"))) {
        (0, Response::GetChildren2 { children, stat }) => {
            assert_eq!(children.len(), 3);
            assert_eq!(stat, h.stat("/p"));
            assert_eq!(stat.cversion, 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.read(Request::GetChildren(pw("/nope"))).0, NO_NODE);
    assert_eq!(h.read(Request::GetChildren2(pw("/nope"))).0, NO_NODE);
}

#[test]
fn get_acl_masks_digests_without_admin() {
    let mut h = H::new();
    let s = h.session();
    let d = digest_id("user:password");
    let admin_acl = vec![
        acl(perms::READ, "world", "anyone"),
        acl(perms::ALL, "digest", &d),
    ];
    h.ok(s, create_with("/a", None, admin_acl.clone()));
    let (err, r) = h.read(Request::GetAcl("/a".into()));
    assert_eq!(err, 0);
    let Response::GetAcl { acl: got, stat } = r else {
        panic!()
    };
    assert_eq!(got[0], admin_acl[0]);
    assert_eq!(got[1].id.id, "user:x");
    assert_eq!(stat, h.stat("/a"));
    let (_, r) =
        h.sm.read(0, &Request::GetAcl("/a".into()), &[id("digest", &d)]);
    assert!(matches!(r, Response::GetAcl { acl, .. } if acl == admin_acl));
    // ADMIN alone is enough to read the ACL.
    h.ok(
        s,
        create_with("/adm", None, vec![acl(perms::ADMIN, "world", "anyone")]),
    );
    assert_eq!(h.read(Request::GetAcl("/adm".into())).0, 0);
    h.ok(
        s,
        create_with("/w", None, vec![acl(perms::WRITE, "world", "anyone")]),
    );
    assert_eq!(h.read(Request::GetAcl("/w".into())).0, NO_AUTH);
    assert_eq!(h.read(Request::GetAcl("/none".into())).0, NO_NODE);
}

#[test]
fn get_all_children_number_counts_descendants() {
    let mut h = H::new();
    let s = h.session();
    assert_eq!(
        h.read(Request::GetAllChildrenNumber("/".into())),
        (0, Response::AllChildrenNumber(3))
    );
    for p in ["/a", "/a/b", "/a/b/c", "/ab"] {
        h.ok(s, create(p, 0));
    }
    assert_eq!(
        h.read(Request::GetAllChildrenNumber("/".into())),
        (0, Response::AllChildrenNumber(7))
    );
    assert_eq!(
        h.read(Request::GetAllChildrenNumber("/a".into())),
        (0, Response::AllChildrenNumber(2))
    );
    assert_eq!(
        h.read(Request::GetAllChildrenNumber("/x".into())).0,
        NO_NODE
    );
    h.ok(
        s,
        create_with("/w", None, vec![acl(perms::WRITE, "world", "anyone")]),
    );
    assert_eq!(
        h.read(Request::GetAllChildrenNumber("/w".into())).0,
        NO_AUTH
    );
}

#[test]
fn get_ephemerals_filters_by_prefix() {
    let mut h = H::new();
    let s = h.session();
    let other = h.session();
    h.ok(s, create("/app", 0));
    for p in ["/app/e1", "/app/e2", "/apple", "/z"] {
        h.ok(s, create(p, 1));
    }
    h.ok(other, create("/o", 1));
    let get = |prefix: &str| match h.sm.read(s, &Request::GetEphemerals(prefix.into()), &[]) {
        (0, Response::GetEphemerals { paths }) => paths,
        other => panic!("{other:?}"),
    };
    assert_eq!(get(""), ["/app/e1", "/app/e2", "/apple", "/z"]);
    assert_eq!(get(" / "), ["/app/e1", "/app/e2", "/apple", "/z"]);
    assert_eq!(get("/app"), ["/app/e1", "/app/e2", "/apple"]);
    assert_eq!(get("/app/"), ["/app/e1", "/app/e2"]);
    assert!(get("/q").is_empty());
}

#[test]
fn multi_read_reports_errors_per_op() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/a", 0));
    let (err, r) = h.read(Request::MultiRead(vec![
        MultiOp::GetData("/a".into()),
        MultiOp::GetChildren("/missing".into()),
        MultiOp::GetChildren("/".into()),
    ]));
    assert_eq!(err, 0);
    assert_eq!(
        r,
        Response::Multi(vec![
            MultiResult::GetData {
                data: None,
                stat: h.stat("/a")
            },
            MultiResult::Error(NO_NODE),
            MultiResult::GetChildren {
                children: vec!["a".into(), "zookeeper".into()]
            },
        ])
    );
    // Only writes: ZooKeeper fails on the first op, after creating the (empty) response.
    assert_eq!(
        h.read(Request::MultiRead(vec![mcheck("/a", 0)])),
        (MARSHALLING, Response::Multi(vec![]))
    );
    // Both kinds: ZooKeeper fails while decoding, no body.
    assert_eq!(
        h.read(Request::MultiRead(vec![
            MultiOp::GetData("/a".into()),
            mcheck("/a", 0)
        ])),
        (MARSHALLING, Response::Empty)
    );
    assert_eq!(
        h.read(Request::MultiRead(vec![])),
        (0, Response::Multi(vec![]))
    );
}

#[test]
fn sync_echoes_and_other_reads_are_unimplemented() {
    let h = H::new();
    assert_eq!(
        h.read(Request::Sync("/x".into())),
        (0, Response::Sync { path: "/x".into() })
    );
    assert_eq!(h.read(Request::Ping).0, UNIMPLEMENTED);
    assert_eq!(h.read(create("/a", 0)).0, UNIMPLEMENTED);
}

// ---------------------------------------------------------------------------------------------
// Snapshots and determinism.

#[test]
fn snapshot_round_trips_and_hides_the_secret() {
    let mut h = H::extended();
    let s = h.session();
    h.ok(s, create("/e", 1));
    h.ok(s, create_op(OpCode::CreateTtl, "/t", 5, 100));
    h.ok(s, create_op(OpCode::CreateContainer, "/c", 4, -1));
    h.ok(s, set_data("/t", b"data", -1));
    let bytes = postcard::to_allocvec(&h.sm).unwrap();
    let back: StateMachine = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, h.sm);
    back.check_invariants().unwrap();
    assert_eq!(back.session_password(s), h.sm.session_password(s));
    assert!(!format!("{:?}", h.sm).contains("cluster secret"));
    // The copy goes on exactly like the original.
    let mut a = h.sm.clone();
    let mut b = back;
    let cmd = Command {
        session_id: s,
        cxid: 9,
        time_ms: 5,
        auth: vec![].into(),
        op: CommandOp::CloseSession,
    };
    assert_eq!(a.apply(&cmd), b.apply(&cmd));
    assert_eq!(a, b);
}

#[test]
fn a_clone_is_unaffected_by_later_applies() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/a", 0));
    let snap = h.sm.clone();
    h.ok(s, set_data("/a", b"new", -1));
    h.ok(s, create("/b", 1));
    assert_eq!(snap.tree().get("/a").unwrap().data_len(), 0);
    assert!(!snap.tree().contains("/b"));
    assert!(snap.ephemerals(s).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Properties: apply never panics, keeps every invariant, and a snapshot equals the state.

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Which session a generated command names: mostly a live one (resolved when it runs), sometimes
    /// any id at all.
    #[derive(Clone, Debug)]
    enum SessionRef {
        Live(usize),
        Raw(i64),
    }

    fn session_ref() -> impl Strategy<Value = SessionRef> {
        prop_oneof![
            8 => (0usize..4).prop_map(SessionRef::Live),
            1 => Just(SessionRef::Raw(0)),
            1 => any::<i64>().prop_map(SessionRef::Raw),
        ]
    }

    fn resolve(sm: &StateMachine, r: &SessionRef) -> i64 {
        match r {
            SessionRef::Live(i) => {
                let live: Vec<i64> = sm.sessions().map(|(id, _)| id).collect();
                if live.is_empty() {
                    0
                } else {
                    live[i % live.len()]
                }
            }
            SessionRef::Raw(id) => *id,
        }
    }

    fn path() -> impl Strategy<Value = String> {
        let valid = prop::sample::select(vec![
            "/a", "/a", "/b", "/b", "/c", "/a/x", "/a/x/y", "/b/x", "/a/s-", "/b/",
        ]);
        let odd = prop::sample::select(vec![
            "/",
            "/zookeeper",
            "/zookeeper/config",
            "/zookeeper/quota",
            "",
            "a",
            "/a/",
            "//",
            "/a\0",
            "/a/.",
            "/é",
        ]);
        prop_oneof![8 => valid, 2 => odd].prop_map(str::to_owned)
    }

    fn acl_list() -> impl Strategy<Value = Vec<Acl>> {
        let entry = prop::sample::select(vec![
            acl(perms::ALL, "world", "anyone"),
            acl(perms::READ, "world", "anyone"),
            acl(perms::ALL & !perms::DELETE, "world", "anyone"),
            acl(perms::ALL, "auth", ""),
            acl(perms::ALL, "digest", "u:h"),
            acl(perms::WRITE, "ip", "10.0.0.0/8"),
            acl(perms::ALL, "ip", "bad"),
            acl(perms::ALL, "world", "nobody"),
        ]);
        prop_oneof![
            1 => Just(Vec::new()),
            6 => Just(open_acl_unsafe()),
            3 => prop::collection::vec(entry, 1..3),
        ]
    }

    fn auth() -> impl Strategy<Value = Vec<Id>> {
        prop::collection::vec(
            prop::sample::select(vec![
                id("ip", "10.1.1.1"),
                id("digest", "u:h"),
                id("super", ""),
            ]),
            0..3,
        )
    }

    fn data() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop::option::of(prop::collection::vec(any::<u8>(), 0..4))
    }

    fn create_request() -> impl Strategy<Value = (OpCode, CreateRequest)> {
        (
            prop::sample::select(vec![
                OpCode::Create,
                OpCode::Create,
                OpCode::Create,
                OpCode::Create2,
                OpCode::CreateContainer,
                OpCode::CreateTtl,
            ]),
            path(),
            data(),
            acl_list(),
            prop_oneof![8 => 0i32..4, 1 => 4i32..7, 1 => -1i32..8],
            prop_oneof![6 => Just(-1i64), 2 => 1i64..5000, 1 => Just(0i64), 1 => Just(TTL_MAX_MS + 1)],
        )
            .prop_map(|(op, path, data, acl, flags, ttl)| {
                (
                    op,
                    CreateRequest {
                        path,
                        data,
                        acl,
                        flags,
                        ttl,
                    },
                )
            })
    }

    fn version() -> impl Strategy<Value = i32> {
        prop_oneof![Just(-1), 0i32..3, any::<i32>()]
    }

    fn multi_op() -> impl Strategy<Value = MultiOp> {
        prop_oneof![
            4 => create_request().prop_map(|(op, req)| MultiOp::Create { op, req }),
            2 => (path(), version()).prop_map(|(path, version)| MultiOp::Delete(PathVersion { path, version })),
            2 => (path(), data(), version())
                .prop_map(|(path, data, version)| MultiOp::SetData(SetDataRequest { path, data, version })),
            1 => (path(), version()).prop_map(|(path, version)| MultiOp::Check(PathVersion { path, version })),
            1 => path().prop_map(MultiOp::GetData),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            6 => create_request().prop_map(|(op, req)| Request::Create { op, req }),
            3 => (path(), version()).prop_map(|(path, version)| Request::Delete(PathVersion { path, version })),
            3 => (path(), data(), version())
                .prop_map(|(path, data, version)| Request::SetData(SetDataRequest { path, data, version })),
            1 => (path(), acl_list(), version())
                .prop_map(|(path, acl, version)| Request::SetAcl(SetAclRequest { path, acl, version })),
            2 => prop::collection::vec(multi_op(), 0..5).prop_map(Request::Multi),
            1 => path().prop_map(Request::DeleteContainer),
            1 => path().prop_map(|p| Request::Exists(pw(&p))),
            1 => (path(), data()).prop_map(|(path, data)| Request::Create {
                op: OpCode::Delete,
                req: CreateRequest { path, data, acl: open_acl_unsafe(), flags: 0, ttl: -1 },
            }),
        ]
    }

    fn command_op() -> impl Strategy<Value = CommandOp> {
        prop_oneof![
            1 => (prop::collection::vec(any::<u8>(), 0..3), any::<u8>(), any::<bool>()).prop_map(
                |(secret, member_id, extended)| CommandOp::Bootstrap {
                    secret,
                    member_id,
                    settings: ApplySettings { extended_types_enabled: extended },
                }
            ),
            2 => any::<i32>().prop_map(|timeout_ms| CommandOp::CreateSession { timeout_ms }),
            1 => Just(CommandOp::CloseSession),
            // An empty password stands for the session's right one (resolved when the command runs).
            2 => (prop_oneof![Just(vec![]), prop::collection::vec(any::<u8>(), 0..17)], any::<i32>())
                .prop_map(|(password, timeout_ms)| CommandOp::Revalidate { password, timeout_ms }),
            12 => request().prop_map(CommandOp::Write),
        ]
    }

    /// The connection a command comes from: none (expiry, reaper) or one of a few, on two members.
    fn origin() -> impl Strategy<Value = Option<Owner>> {
        prop_oneof![
            1 => Just(None),
            4 => (1u64..3, 1u64..4).prop_map(|(member, conn)| {
                Some(Owner {
                    member,
                    conn: std::num::NonZeroU64::MIN.saturating_add(conn - 1),
                })
            }),
        ]
    }

    fn command() -> impl Strategy<Value = (SessionRef, Command, Option<Owner>)> {
        (
            session_ref(),
            any::<i32>(),
            any::<i64>(),
            auth(),
            command_op(),
            origin(),
        )
            .prop_map(|(session, cxid, time_ms, auth, op, origin)| {
                let cmd = Command {
                    session_id: 0,
                    cxid,
                    time_ms,
                    auth: auth.into(),
                    op,
                };
                (session, cmd, origin)
            })
    }

    fn read_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            path().prop_map(|p| Request::Exists(pw(&p))),
            path().prop_map(|p| Request::GetData(pw(&p))),
            path().prop_map(|p| Request::GetChildren2(pw(&p))),
            path().prop_map(Request::GetAcl),
            path().prop_map(Request::GetAllChildrenNumber),
            path().prop_map(Request::GetEphemerals),
            prop::collection::vec(multi_op(), 0..3).prop_map(Request::MultiRead),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn apply_never_panics_and_snapshots_round_trip(
            boot_time in prop_oneof![Just(0i64), any::<i64>()],
            cmds in prop::collection::vec(command(), 0..120),
            reads in prop::collection::vec((session_ref(), read_request(), auth()), 0..10),
        ) {
            let mut sm = StateMachine::new();
            sm.apply(&Command {
                session_id: 0,
                cxid: 0,
                time_ms: boot_time,
                auth: vec![].into(),
                op: CommandOp::Bootstrap {
                    secret: vec![1, 2, 3],
                    member_id: 1,
                    settings: ApplySettings { extended_types_enabled: true },
                },
            });
            for _ in 0..2 {
                sm.apply(&Command {
                    session_id: 0,
                    cxid: 0,
                    time_ms: 0,
                    auth: vec![].into(),
                    op: CommandOp::CreateSession { timeout_ms: 1000 },
                });
            }
            let mut twin = sm.clone();
            for (session, cmd, origin) in &cmds {
                let session_id = resolve(&sm, session);
                let op = match &cmd.op {
                    CommandOp::Revalidate { password, timeout_ms } if password.is_empty() => CommandOp::Revalidate {
                        password: sm.session_password(session_id).map(|p| p.to_vec()).unwrap_or_default(),
                        timeout_ms: *timeout_ms,
                    },
                    op => op.clone(),
                };
                let cmd = &Command { session_id, op, ..cmd.clone() };
                let before = sm.clone();
                let a = sm.apply_from(cmd, *origin);
                prop_assert_eq!(&twin.apply_from(cmd, *origin), &a, "apply is deterministic");
                match (&cmd.op, a.session) {
                    (CommandOp::Revalidate { .. }, Some(SessionChange::Revalidated { id, previous, .. })) => {
                        prop_assert_eq!(previous, before.session(id).and_then(|s| s.owner));
                        prop_assert_eq!(sm.session(id).and_then(|s| s.owner), origin.or(previous));
                        prop_assert_eq!(sm.tree(), before.tree());
                    }
                    (CommandOp::Revalidate { .. }, Some(SessionChange::RevalidateFailed { .. })) => {
                        prop_assert_eq!(&sm, &before, "a refused reconnect changes nothing");
                    }
                    (CommandOp::Revalidate { .. }, other) => {
                        return Err(TestCaseError::fail(format!("revalidate gave {other:?}")));
                    }
                    _ => {}
                }
                let moved = matches!(cmd.op, CommandOp::Write(_))
                    && before.session(session_id).and_then(|s| s.owner).zip(*origin).is_some_and(|(o, from)| o != from);
                if moved {
                    prop_assert_eq!(a.err, i32::from(ErrorCode::SessionMoved), "a write from a non-owner");
                }
                if matches!(cmd.op, CommandOp::Bootstrap { .. } | CommandOp::Revalidate { .. }) {
                    prop_assert_eq!(a.zxid, before.last_zxid());
                } else {
                    prop_assert_eq!(a.zxid, before.last_zxid() + 1);
                }
                if a.err != 0 {
                    prop_assert_eq!(&a.response, &Response::Empty);
                    prop_assert!(a.triggers.is_empty());
                    prop_assert_eq!(sm.tree(), before.tree());
                }
                if let Response::Multi(results) = &a.response {
                    if results.iter().any(|r| matches!(r, MultiResult::Error(_))) {
                        prop_assert_eq!(sm.tree(), before.tree());
                        prop_assert!(a.triggers.is_empty());
                    }
                }
                if let Err(e) = sm.check_invariants() {
                    return Err(TestCaseError::fail(format!("{e} after {cmd:?}")));
                }
            }
            prop_assert_eq!(&sm, &twin);
            for (session, req, auth) in &reads {
                let (err, r) = sm.read(resolve(&sm, session), req, auth);
                // The one error with a body: a multiRead of writes only.
                let writes_only = matches!(req, Request::MultiRead(ops) if !ops.is_empty()
                    && ops.iter().all(|op| !matches!(op, MultiOp::GetChildren(_) | MultiOp::GetData(_))));
                if err != 0 && !writes_only {
                    prop_assert_eq!(r, Response::Empty);
                }
            }
            let bytes = postcard::to_allocvec(&sm).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: StateMachine =
                postcard::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &sm);
            prop_assert_eq!(postcard::to_allocvec(&back).ok(), Some(bytes));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ZooKeeper 3.8.0 behaviours pinned by the differential test.

#[test]
fn reads_do_not_validate_paths_and_the_empty_path_is_the_root() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/a", 0));
    for p in ["a", "/a/", "//a", "/a/."] {
        assert_eq!(h.read(Request::GetData(pw(p))).0, NO_NODE, "{p}");
        assert_eq!(h.read(Request::Exists(pw(p))).0, NO_NODE, "{p}");
        assert_eq!(h.read(Request::GetAcl(p.into())).0, NO_NODE, "{p}");
    }
    assert_eq!(
        h.read(Request::GetData(pw(""))),
        h.read(Request::GetData(pw("/")))
    );
    assert_eq!(
        h.read(Request::Exists(pw(""))),
        (0, Response::Stat(h.stat("/")))
    );
    assert_eq!(
        h.read(Request::GetChildren(pw(""))),
        (
            0,
            Response::GetChildren {
                children: vec!["a".into(), "zookeeper".into()]
            }
        )
    );
    // getAllChildrenNumber counts the keys starting with path + "/": "" counts the root too.
    let (_, all) = h.read(Request::GetAllChildrenNumber("/".into()));
    let Response::AllChildrenNumber(n) = all else {
        panic!("{all:?}")
    };
    assert_eq!(
        h.read(Request::GetAllChildrenNumber("".into())),
        (0, Response::AllChildrenNumber(n + 1))
    );
}

#[test]
fn a_client_delete_container_is_always_bad_arguments_with_a_zxid() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create_op(OpCode::CreateContainer, "/c", 4, -1));
    // ZooKeeper reads the path from the whole request buffer, header (with NUL bytes) included.
    assert_eq!(h.err(s, Request::DeleteContainer("/c".into())), BAD_ARGS);
    assert!(h.sm.tree().contains("/c"));
    // The reaper (session 0) still deletes it.
    h.ok(0, Request::DeleteContainer("/c".into()));
    assert!(!h.sm.tree().contains("/c"));
}

#[test]
fn multi_creates_follow_the_create_mode_not_the_opcode() {
    let mut h = H::extended();
    let s = h.session();
    let mc = |op: OpCode, path: &str, flags: i32, ttl: i64| MultiOp::Create {
        op,
        req: CreateRequest {
            ttl,
            ..create_req(path, None, open_acl_unsafe(), flags)
        },
    };
    let a = h.ok(
        s,
        Request::Multi(vec![
            // create2 with a persistent mode: a type-1 result without Stat.
            mc(OpCode::Create2, "/p", 0, -1),
            // create with the container flag: a container, type-15 result.
            mc(OpCode::Create, "/c", 4, -1),
            // createContainer with the ephemeral flag: an ephemeral node.
            mc(OpCode::CreateContainer, "/e", 1, -1),
            // createTTL with a non-TTL mode: a plain create, the ttl ignored.
            mc(OpCode::CreateTtl, "/t0", 0, 1000),
            // createTTL with a TTL mode: a TTL node, type 15.
            mc(OpCode::CreateTtl, "/t", 5, 1000),
        ]),
    );
    let Response::Multi(r) = &a.response else {
        panic!("{a:?}")
    };
    assert_eq!(r[0], MultiResult::Create { path: "/p".into() });
    assert!(matches!(&r[1], MultiResult::Create2 { path, .. } if path == "/c"));
    assert_eq!(r[2], MultiResult::Create { path: "/e".into() });
    assert_eq!(r[3], MultiResult::Create { path: "/t0".into() });
    assert!(matches!(&r[4], MultiResult::Create2 { path, .. } if path == "/t"));
    assert_eq!(h.node("/c").kind(), NodeKind::Container);
    assert_eq!(h.node("/e").kind(), NodeKind::Ephemeral(s));
    assert_eq!(h.node("/t0").kind(), NodeKind::Persistent);
    assert_eq!(h.node("/t").kind(), NodeKind::Ttl(1000));

    // Invalid flags read as persistent, then fail as BadArguments (a per-op error).
    let a = h.ok(s, Request::Multi(vec![mc(OpCode::Create, "/x", 7, -1)]));
    assert_eq!(
        a.response,
        Response::Multi(vec![MultiResult::Error(BAD_ARGS)])
    );

    // A TTL mode on a sub-op that is not createTTL: the whole multi is MarshallingError, zxid used,
    // nothing changed, even after successful ops ...
    for op in [OpCode::Create, OpCode::Create2, OpCode::CreateContainer] {
        let before = h.sm.tree().clone();
        let a = h.write(
            s,
            Request::Multi(vec![mc(OpCode::Create, "/y", 0, -1), mc(op, "/z", 6, -1)]),
        );
        assert_eq!(a.err, MARSHALLING);
        assert_eq!(h.sm.tree(), &before);
    }
    // ... but not when an earlier op already failed (the rest is never prepared).
    let a = h.ok(
        s,
        Request::Multi(vec![
            mc(OpCode::Create, "/p", 0, -1),
            mc(OpCode::Create, "/z", 5, -1),
        ]),
    );
    assert_eq!(
        a.response,
        Response::Multi(vec![
            MultiResult::Error(NODE_EXISTS),
            MultiResult::Error(ErrorCode::RuntimeInconsistency as i32)
        ])
    );
}

#[test]
fn top_level_creates_follow_the_opcode() {
    let mut h = H::extended();
    let s = h.session();
    // create/create2 with the container flag: a plain persistent node (CreateTxn).
    h.ok(s, create_op(OpCode::Create2, "/c2", 4, -1));
    assert_eq!(h.node("/c2").kind(), NodeKind::Persistent);
    // createContainer makes a container whatever the (non-TTL) flags.
    h.ok(s, create_op(OpCode::CreateContainer, "/e", 1, -1));
    assert_eq!(h.node("/e").kind(), NodeKind::Container);
    // TTL flags without a createTTL: BadArguments (the ttl is -1).
    for op in [OpCode::Create, OpCode::Create2, OpCode::CreateContainer] {
        assert_eq!(h.err(s, create_op(op, "/t", 5, -1)), BAD_ARGS);
    }
    // createTTL with a non-TTL mode and ttl >= 0: BadArguments.
    assert_eq!(
        h.err(s, create_op(OpCode::CreateTtl, "/t", 0, 1000)),
        BAD_ARGS
    );
}

#[test]
fn update_settings_takes_no_zxid_and_changes_what_apply_allows() {
    let mut h = H::new();
    let s = h.session();
    assert_eq!(
        h.err(s, create_op(OpCode::CreateTtl, "/t", 5, 100)),
        UNIMPLEMENTED
    );
    let before = h.sm.last_zxid();
    let a = h.run(
        0,
        CommandOp::UpdateSettings {
            settings: ApplySettings {
                extended_types_enabled: true,
            },
        },
    );
    assert_eq!((a.err, a.zxid), (0, before));
    assert_eq!(h.sm.last_zxid(), before);
    h.ok(s, create_op(OpCode::CreateTtl, "/t", 5, 100));
}

#[test]
fn update_settings_before_bootstrap_is_refused() {
    let mut sm = StateMachine::new();
    let a = sm.apply(&Command {
        session_id: 0,
        cxid: 0,
        time_ms: 1,
        auth: vec![].into(),
        op: CommandOp::UpdateSettings {
            settings: ApplySettings {
                extended_types_enabled: true,
            },
        },
    });
    assert_eq!(a.err, ErrorCode::SystemError as i32);
    assert!(!sm.settings().extended_types_enabled);
}

#[test]
fn a_child_with_its_parents_acl_shares_the_parents_list() {
    let mut h = H::new();
    let s = h.session();
    h.ok(s, create("/a", 0));
    h.ok(s, create("/a/same", 0));
    let restricted = vec![acl(perms::ALL, "digest", &digest_id("u:p"))];
    h.ok(s, create_with("/a/other", None, restricted.clone()));
    let tree = h.sm.tree();
    let (parent, same, other) = (
        tree.get("/a").expect("/a"),
        tree.get("/a/same").expect("/a/same"),
        tree.get("/a/other").expect("/a/other"),
    );
    assert!(
        Arc::ptr_eq(parent.acl(), same.acl()),
        "an equal ACL is shared, not copied"
    );
    assert_eq!(**other.acl(), restricted);
    assert!(!Arc::ptr_eq(parent.acl(), other.acl()));
}
