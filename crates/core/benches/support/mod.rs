//! Shared by the tree benchmarks and the node-memory test (`tests/node_memory.rs` includes this file by
//! path): commands, and a bootstrapped state with one session.

#![allow(dead_code)] // each user takes what it needs

use oxkeeper_core::{ApplySettings, Command, CommandOp, SessionChange, StateMachine};
use oxkeeper_proto::{perms, Acl, CreateMode, CreateRequest, Id, OpCode, Request};

pub const TIME_MS: i64 = 1_763_000_000_000;

pub fn command(session_id: i64, op: CommandOp) -> Command {
    Command {
        session_id,
        cxid: 1,
        time_ms: TIME_MS,
        auth: Vec::new().into(),
        op,
    }
}

/// A create of `path` with `data` and the open ACL.
pub fn create_node(session_id: i64, path: String, data: Vec<u8>, mode: CreateMode) -> Command {
    command(
        session_id,
        CommandOp::Write(Request::Create {
            op: OpCode::Create,
            req: CreateRequest {
                path,
                data: Some(data),
                acl: vec![Acl {
                    perms: perms::ALL,
                    id: Id {
                        scheme: "world".into(),
                        id: "anyone".into(),
                    },
                }],
                flags: mode.as_i32(),
                ttl: -1,
            },
        }),
    )
}

/// A bootstrapped state and the id of the one session created in it.
pub fn bootstrapped() -> (StateMachine, i64) {
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
    (sm, session)
}
