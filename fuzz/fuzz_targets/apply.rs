//! Arbitrary command sequences through the replicated state machine: each chunk of the input becomes a
//! session create/close or a client write decoded from raw bytes (as the server would decode it), applied in
//! order, with reads of every kind in between. Nothing may panic, every command but Bootstrap uses exactly one
//! zxid, and the state's invariants hold after every step.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxkeeper_core::state::{ApplySettings, Command, CommandOp, StateMachine};
use oxkeeper_proto::{Id, Request};

const WRITE_OPS: [i32; 9] = [1, 2, 5, 7, 14, 15, 19, 20, 21];
const READ_OPS: [i32; 9] = [3, 4, 6, 8, 12, 22, 103, 104, 9];

fuzz_target!(|data: &[u8]| {
    let mut sm = StateMachine::new();
    let boot = Command {
        session_id: 0,
        cxid: 0,
        time_ms: 1,
        auth: vec![].into(),
        op: CommandOp::Bootstrap {
            secret: vec![7; 32],
            member_id: 1,
            settings: ApplySettings { extended_types_enabled: data.first().is_some_and(|b| b & 1 == 1) },
        },
    };
    sm.apply(&boot);
    let mut sessions: Vec<i64> = vec![0];
    let auths = [
        vec![],
        vec![Id { scheme: "digest".into(), id: "u:x".into() }],
        vec![Id { scheme: "super".into(), id: String::new() }],
    ];
    // Chunks: [selector, session, len, body...]
    let mut rest = data.get(1..).unwrap_or_default();
    let mut time = 10i64;
    while rest.len() >= 3 {
        let (sel, who, len) = (rest[0], rest[1] as usize, rest[2] as usize);
        let body_len = len.min(rest.len() - 3);
        let body = &rest[3..3 + body_len];
        rest = &rest[3 + body_len..];
        time += 1;
        let session_id = sessions[who % sessions.len()];
        let auth = auths[who % auths.len()].clone();
        let before = sm.last_zxid();
        let op = match sel % 8 {
            0 => CommandOp::CreateSession { timeout_ms: 30_000 },
            1 => CommandOp::CloseSession,
            2 => {
                let op = READ_OPS[(sel as usize / 8) % READ_OPS.len()];
                if let Ok(req) = Request::decode(op, body) {
                    let _ = sm.read(session_id, &req, &auth);
                }
                continue;
            }
            _ => {
                let op = WRITE_OPS[(sel as usize / 8) % WRITE_OPS.len()];
                match Request::decode(op, body) {
                    Ok(req) => CommandOp::Write(req),
                    Err(_) => continue,
                }
            }
        };
        let applied = sm.apply(&Command { session_id, cxid: 1, time_ms: time, auth: auth.into(), op });
        assert_eq!(applied.zxid, before + 1, "every command uses exactly one zxid");
        if let Some(oxkeeper_core::SessionChange::Created { id, .. }) = applied.session {
            sessions.push(id);
        }
        if let Err(e) = sm.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }
});
