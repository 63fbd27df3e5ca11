//! Golden frames captured from real clients (kazoo, the Java client, the C client, hand-built edge
//! cases) talking to Apache ZooKeeper 3.8.0; see `fixtures/README.md`.
//!
//! Every frame is split by our frame decoder, decoded by our decoders and re-encoded, and the bytes
//! must come back identical. A few decoded fields are checked against what the clients sent.

use oxkeeper_proto::frame::{
    encode_connect_request, encode_connect_response, encode_notification, encode_reply,
    encode_request, four_letter_word, split_reply, split_request, Decoded, FrameDecoder,
};
use oxkeeper_proto::*;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client to server.
    C,
    /// Server to client.
    S,
}

#[derive(Debug)]
struct Line {
    dir: Dir,
    name: String,
    bytes: Vec<u8>,
}

type Connection = Vec<Line>;

fn parse(text: &str) -> Vec<Connection> {
    let mut conns: Vec<Connection> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with("connection ") {
            conns.push(Vec::new());
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(dir), Some(name), Some(hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            panic!("bad fixture line: {line}");
        };
        let dir = match dir {
            "C" => Dir::C,
            "S" => Dir::S,
            _ => panic!("bad direction in {line}"),
        };
        conns
            .last_mut()
            .expect("a frame before the first `connection` line")
            .push(Line {
                dir,
                name: name.to_owned(),
                bytes: hex::decode(hex).expect("hex"),
            });
    }
    conns
}

/// The names capture.py gives opcodes.
fn op_name(op: i32) -> String {
    let name = match OpCode::from_i32(op) {
        Some(OpCode::Create) => "create",
        Some(OpCode::Delete) => "delete",
        Some(OpCode::Exists) => "exists",
        Some(OpCode::GetData) => "getData",
        Some(OpCode::SetData) => "setData",
        Some(OpCode::GetAcl) => "getACL",
        Some(OpCode::SetAcl) => "setACL",
        Some(OpCode::GetChildren) => "getChildren",
        Some(OpCode::Sync) => "sync",
        Some(OpCode::Ping) => "ping",
        Some(OpCode::GetChildren2) => "getChildren2",
        Some(OpCode::Check) => "check",
        Some(OpCode::Multi) => "multi",
        Some(OpCode::Create2) => "create2",
        Some(OpCode::Reconfig) => "reconfig",
        Some(OpCode::CheckWatches) => "checkWatches",
        Some(OpCode::RemoveWatches) => "removeWatches",
        Some(OpCode::CreateContainer) => "createContainer",
        Some(OpCode::DeleteContainer) => "deleteContainer",
        Some(OpCode::CreateTtl) => "createTTL",
        Some(OpCode::MultiRead) => "multiRead",
        Some(OpCode::Auth) => "auth",
        Some(OpCode::SetWatches) => "setWatches",
        Some(OpCode::Sasl) => "sasl",
        Some(OpCode::GetEphemerals) => "getEphemerals",
        Some(OpCode::GetAllChildrenNumber) => "getAllChildrenNumber",
        Some(OpCode::SetWatches2) => "setWatches2",
        Some(OpCode::AddWatch) => "addWatch",
        Some(OpCode::WhoAmI) => "whoAmI",
        Some(OpCode::CloseSession) => "closeSession",
        _ => return format!("op{op}"),
    };
    name.to_owned()
}

/// The fixture name without its edge-case suffix: `getData/trailing` → `getData`.
fn base_name(name: &str) -> &str {
    name.split('/').next().unwrap_or(name)
}

fn payload(line: &Line) -> &[u8] {
    match FrameDecoder::default().decode(&line.bytes) {
        Decoded::Frame(p) => {
            assert_eq!(
                p.len() + 4,
                line.bytes.len(),
                "{}: one whole frame",
                line.name
            );
            p
        }
        other => panic!("{}: frame decoder said {other:?}", line.name),
    }
}

/// What one fixture file decoded to, for the field checks.
#[derive(Default)]
struct Capture {
    connect_requests: Vec<ConnectRequest>,
    connect_responses: Vec<ConnectResponse>,
    /// (name, xid, request)
    requests: Vec<(String, i32, Request)>,
    /// (name, header, response)
    replies: Vec<(String, ReplyHeader, Response)>,
    notifications: Vec<(ReplyHeader, WatcherEvent)>,
    frames: usize,
}

impl Capture {
    fn request(&self, name: &str) -> impl Iterator<Item = &Request> {
        let name = name.to_owned();
        self.requests
            .iter()
            .filter(move |(n, _, _)| *n == name)
            .map(|(_, _, r)| r)
    }
    fn reply(&self, name: &str) -> impl Iterator<Item = (&ReplyHeader, &Response)> {
        let name = name.to_owned();
        self.replies
            .iter()
            .filter(move |(n, _, _)| *n == name)
            .map(|(_, h, r)| (h, r))
    }
}

/// Decodes and re-encodes every frame of a fixture file, asserting byte equality.
fn check_file(text: &str) -> Capture {
    let mut out = Capture::default();
    for conn in parse(text) {
        let mut xid_ops: HashMap<i32, i32> = HashMap::new();
        let mut seen_c = false;
        let mut seen_s = false;
        for line in &conn {
            out.frames += 1;
            match (line.dir, line.name.as_str()) {
                (Dir::C, "4lw") => {
                    let first4: [u8; 4] = line.bytes.as_slice().try_into().expect("4 bytes");
                    assert!(four_letter_word(first4).is_some());
                    seen_c = true;
                }
                (Dir::S, "4lw-reply") => {
                    assert_eq!(line.bytes, b"imok");
                    seen_s = true;
                }
                (Dir::C, _) if !seen_c => {
                    seen_c = true;
                    let req = ConnectRequest::from_bytes(payload(line)).expect("ConnectRequest");
                    assert_eq!(encode_connect_request(&req), line.bytes, "{}", line.name);
                    out.connect_requests.push(req);
                }
                (Dir::S, _) if !seen_s => {
                    seen_s = true;
                    let resp = ConnectResponse::from_bytes(payload(line)).expect("ConnectResponse");
                    assert_eq!(resp.passwd.len(), 16);
                    assert_eq!(encode_connect_response(&resp), line.bytes, "{}", line.name);
                    out.connect_responses.push(resp);
                }
                (Dir::C, name) => {
                    let (h, body) = split_request(payload(line)).expect("RequestHeader");
                    xid_ops.insert(h.xid, h.op);
                    assert_eq!(base_name(name), op_name(h.op), "fixture name");
                    check_request(name, h, body, &line.bytes, &mut out);
                }
                (Dir::S, name) => {
                    let (h, body) = split_reply(payload(line)).expect("ReplyHeader");
                    if h.xid == xid::NOTIFICATION {
                        assert_eq!(name, "notification");
                        let ev = WatcherEvent::from_bytes(body).expect("WatcherEvent");
                        assert_eq!(encode_notification(h.zxid, &ev), line.bytes);
                        out.notifications.push((h, ev));
                        continue;
                    }
                    // A ping reply always says -2, whatever xid the ping had.
                    let op = if h.xid == xid::PING {
                        OpCode::Ping.as_i32()
                    } else {
                        *xid_ops.get(&h.xid).expect("a reply to a request we saw")
                    };
                    assert_eq!(base_name(name), op_name(op), "fixture name");
                    let resp = if h.err != 0 {
                        assert!(body.is_empty(), "{name}: an error reply has no body");
                        Response::Empty
                    } else {
                        let code = OpCode::from_i32(op).expect("known opcode");
                        Response::decode(code, body)
                            .unwrap_or_else(|e| panic!("{name}: {e} in {}", hex::encode(body)))
                    };
                    assert_eq!(
                        encode_reply(h.xid, h.zxid, h.err, &resp),
                        line.bytes,
                        "{name}"
                    );
                    out.replies.push((name.to_owned(), h, resp));
                }
            }
        }
    }
    out
}

fn check_request(name: &str, h: RequestHeader, body: &[u8], frame: &[u8], out: &mut Capture) {
    let decoded = Request::decode(h.op, body);
    match name {
        "op99" => assert_eq!(decoded, Err(RequestDecodeError::UnknownOpcode(99))),
        // A read in a multi and mixed kinds in a multiRead are well-formed jute: they decode, and the
        // server answers MARSHALLINGERROR without closing, as ZooKeeper does.
        "setData/truncated" => {
            assert!(
                matches!(decoded, Err(RequestDecodeError::Malformed { .. })),
                "{name}: {decoded:?}"
            );
        }
        _ => {
            let req = decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(req.opcode().as_i32(), h.op);
            let again = encode_request(h.xid, &req);
            match name {
                // We read ZooKeeper's null string as "" and write it back as "".
                "getChildren/null-path" => {
                    assert_eq!(
                        req,
                        Request::GetChildren(PathWatch {
                            path: String::new(),
                            watch: false
                        })
                    );
                }
                // Trailing bytes are ignored: the re-encoding is a strict prefix.
                "getData/trailing" => {
                    assert!(again.len() < frame.len());
                    assert_eq!(again[4..], frame[4..again.len()]);
                }
                _ => assert_eq!(again, frame, "{name}"),
            }
            out.requests.push((name.to_owned(), h.xid, req));
        }
    }
}

const KAZOO: &str = include_str!("fixtures/kazoo.txt");
const JAVA: &str = include_str!("fixtures/java.txt");
const C: &str = include_str!("fixtures/c.txt");
const RAW: &str = include_str!("fixtures/raw.txt");

fn new_session_request(timeout_ms: i32) -> ConnectRequest {
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms,
        session_id: 0,
        passwd: Some(vec![0; 16]),
        read_only: Some(false),
    }
}

#[test]
fn kazoo_frames_round_trip() {
    let d = check_file(KAZOO);
    assert!(d.frames >= 60, "{} frames", d.frames);
    assert_eq!(d.connect_requests[0], new_session_request(4000));
    assert_eq!(d.connect_responses[0].read_only, Some(false));
    assert_eq!(d.connect_responses[0].timeout_ms, 4000);

    // kazoo writes b"" as an empty buffer (not null) and uses plain create (1) unless asked for
    // the stat.
    let Some(Request::Create { op, req }) = d.request("create").nth(1) else {
        panic!("second create");
    };
    assert_eq!((*op, req.path.as_str()), (OpCode::Create, "/k/eph"));
    assert_eq!(req.data, Some(vec![]));
    assert_eq!(req.flags, CreateMode::Ephemeral.as_i32());
    assert_eq!(req.ttl, -1);

    let Some(Request::Auth(auth)) = d.request("auth").next() else {
        panic!("auth");
    };
    assert_eq!(auth.scheme, "digest");
    assert_eq!(auth.auth.as_deref(), Some(&b"user:password"[..]));
    let (h, _) = d.reply("auth").next().expect("auth reply");
    assert_eq!((h.xid, h.zxid, h.err), (xid::AUTH, 0, 0));

    // ZooKeeper 3.8 sends notifications with zxid -1.
    let (h, ev) = &d.notifications[0];
    assert_eq!(h.zxid, -1);
    assert_eq!(
        (ev.event_type, ev.state, ev.path.as_str()),
        (
            EventType::NodeDataChanged.as_i32(),
            KeeperState::SyncConnected.as_i32(),
            "/k"
        )
    );

    // The failed transaction: header err 0, results OK-before / real code / -2 after.
    let (h, resp) = d.reply("multi").nth(1).expect("second multi");
    assert_eq!(h.err, 0);
    assert_eq!(
        *resp,
        Response::Multi(vec![
            MultiResult::Error(0),
            MultiResult::Error(ErrorCode::NodeExists.as_i32()),
            MultiResult::Error(ErrorCode::RuntimeInconsistency.as_i32()),
        ])
    );

    let (h, _) = d.reply("reconfig").next().expect("reconfig reply");
    assert_eq!(h.err, ErrorCode::ReconfigDisabled.as_i32());
    let (h, _) = d.reply("ping").next().expect("ping reply");
    assert_eq!(h.xid, xid::PING);
}

#[test]
fn java_frames_round_trip() {
    let d = check_file(JAVA);
    assert!(d.frames >= 120, "{} frames", d.frames);
    assert_eq!(d.connect_requests[0], new_session_request(10_000));

    // The reconnects carry the session id and its password, and the last zxid seen.
    let reconnect = &d.connect_requests[1];
    assert_eq!(reconnect.session_id, d.connect_responses[0].session_id);
    assert_eq!(
        reconnect.passwd.as_deref(),
        Some(d.connect_responses[0].passwd.as_slice())
    );
    assert!(reconnect.last_zxid_seen > 0);

    let Some(Request::Create { req, .. }) = d.request("createTTL").next() else {
        panic!("createTTL");
    };
    assert_eq!(
        (req.path.as_str(), req.flags, req.ttl),
        ("/j/ttl", 5, 60_000)
    );
    let Some(Request::Create { req, .. }) = d.request("createContainer").next() else {
        panic!("createContainer");
    };
    assert_eq!(req.flags, CreateMode::Container.as_i32());
    // A null data buffer from the Java client.
    let Some(Request::Create { req, .. }) = d.request("create").nth(1) else {
        panic!("create /j/eph");
    };
    assert_eq!((req.path.as_str(), req.data.as_deref()), ("/j/eph", None));
    let (_, resp) = d.reply("getData").nth(1).expect("getData /j/eph");
    assert!(matches!(resp, Response::GetData { data: None, stat } if stat.data_length == 0));

    // The successful multi: the header type follows the create mode (1 / 19 / 21); the results use
    // type 1 for a plain create and 15 for container and TTL creates.
    let Some(Request::Multi(ops)) = d.request("multi").next() else {
        panic!("multi");
    };
    let types: Vec<OpCode> = ops.iter().map(MultiOp::opcode).collect();
    assert_eq!(
        types,
        [
            OpCode::Create,
            OpCode::CreateContainer,
            OpCode::CreateTtl,
            OpCode::SetData,
            OpCode::Check,
            OpCode::Delete
        ]
    );
    let (_, Response::Multi(results)) = d.reply("multi").next().expect("multi reply") else {
        panic!("multi body");
    };
    assert!(matches!(results[0], MultiResult::Create { .. }));
    assert!(matches!(results[1], MultiResult::Create2 { .. }));
    assert!(matches!(results[2], MultiResult::Create2 { .. }));
    assert!(matches!(results[3], MultiResult::SetData { .. }));
    assert_eq!(results[4..], [MultiResult::Check, MultiResult::Delete]);

    let (_, resp) = d.reply("multi").nth(1).expect("failed multi");
    assert_eq!(
        *resp,
        Response::Multi(vec![
            MultiResult::Error(0),
            MultiResult::Error(-110),
            MultiResult::Error(-2)
        ])
    );

    // multiRead: each failing read is an error result of its own.
    let Some(Request::MultiRead(ops)) = d.request("multiRead").next() else {
        panic!("multiRead");
    };
    assert_eq!(ops[1], MultiOp::GetChildren("/j/container".into()));
    let (h, Response::Multi(results)) = d.reply("multiRead").next().expect("multiRead reply")
    else {
        panic!("multiRead body");
    };
    assert_eq!(h.err, 0);
    assert!(matches!(results[0], MultiResult::GetData { .. }));
    assert_eq!(
        results[1],
        MultiResult::GetChildren {
            children: vec!["child".into()]
        }
    );
    assert_eq!(results[2], MultiResult::Error(ErrorCode::NoNode.as_i32()));

    let (_, resp) = d.reply("whoAmI").next().expect("whoAmI");
    assert_eq!(
        *resp,
        Response::WhoAmI(vec![
            ClientInfo {
                auth_scheme: "digest".into(),
                user: "user".into()
            },
            ClientInfo {
                auth_scheme: "ip".into(),
                user: "127.0.0.1".into()
            },
        ])
    );
    let (_, resp) = d.reply("getAllChildrenNumber").next().expect("count");
    assert_eq!(*resp, Response::AllChildrenNumber(11));
    let (_, resp) = d.reply("addWatch").next().expect("addWatch");
    assert_eq!(*resp, Response::ErrorResponse(0));

    // The Java client re-registers watches with an ordinary xid, not -8.
    let Some(Request::SetWatches { v2: false, req }) = d.request("setWatches").next() else {
        panic!("setWatches");
    };
    assert_eq!(req.data_watches, ["/j/kid"]);
    assert_eq!(req.exist_watches, ["/j/absent"]);
    assert_eq!(req.child_watches, ["/j/container"]);
    let (_, xid, _) = d
        .requests
        .iter()
        .find(|(n, _, _)| n == "setWatches")
        .expect("setWatches");
    assert!(*xid > 0);
    let Some(Request::SetWatches { v2: true, req }) = d.request("setWatches2").next() else {
        panic!("setWatches2");
    };
    assert_eq!(req.persistent_watches, ["/j/kid"]);
    assert_eq!(req.persistent_recursive_watches, ["/j/container"]);

    // Deleting a node that has children.
    let (h, _) = d.reply("delete").nth(2).expect("delete /j");
    assert_eq!(h.err, ErrorCode::NotEmpty.as_i32());
}

#[test]
fn c_client_frames_round_trip() {
    let d = check_file(C);
    assert!(d.frames >= 45, "{} frames", d.frames);
    assert_eq!(d.connect_requests[0], new_session_request(30_000));
    // The C client starts its xids at time(0).
    let (_, first_xid, _) = &d.requests[0];
    assert!(*first_xid > 1_000_000_000, "xid {first_xid}");
    let Some(Request::Create { req, .. }) = d.request("createTTL").next() else {
        panic!("createTTL");
    };
    assert_eq!((req.flags, req.ttl), (5, 60_000));
    assert!(d.reply("ping").next().is_some());
}

#[test]
fn edge_case_frames_round_trip() {
    let d = check_file(RAW);
    // A client without the readOnly byte gets a reply without it: 36 bytes of payload.
    assert_eq!(d.connect_requests[0].read_only, None);
    assert_eq!(d.connect_responses[0].read_only, None);
    assert_eq!(d.connect_responses[0].to_bytes().len(), 36);
    assert_eq!(d.connect_responses[1].read_only, Some(false));

    // Null data is -1 in GetDataResponse and 0 in the Stat.
    let (_, resp) = d.reply("getData").next().expect("getData");
    assert!(matches!(resp, Response::GetData { data: None, stat } if stat.data_length == 0));
    // Trailing bytes after a request body are ignored by ZooKeeper: the same reply.
    let (_, trailing) = d.reply("getData/trailing").next().expect("trailing");
    assert_eq!(trailing, resp);

    // A null path is a marshalling error (ZooKeeper hits a NullPointerException).
    let (h, _) = d.reply("getChildren/null-path").next().expect("null path");
    assert_eq!(h.err, ErrorCode::MarshallingError.as_i32());

    // Empty multi and multiRead: a body holding only the terminator.
    for name in ["multi/empty", "multiRead/empty"] {
        let (h, resp) = d.reply(name).next().expect(name);
        assert_eq!((h.err, resp), (0, &Response::Multi(vec![])));
    }
    for name in ["multi/with-read", "multiRead/mixed", "setData/truncated"] {
        let (h, _) = d.reply(name).next().expect(name);
        assert_eq!(h.err, ErrorCode::MarshallingError.as_i32(), "{name}");
    }

    // A ping's reply says xid -2 even when the ping had another xid.
    let (h, _) = d.reply("ping/xid7").next().expect("ping");
    assert_eq!(h.xid, xid::PING);

    // Unknown opcode: UNIMPLEMENTED with zxid -1 (then the server closes the connection).
    let (h, _) = d.reply("op99").next().expect("op99");
    assert_eq!(
        (h.xid, h.zxid, h.err),
        (9, -1, ErrorCode::Unimplemented.as_i32())
    );
    // ZooKeeper 3.8.0 never answers a top-level check.
    assert!(d.reply("check/top-level").next().is_none());
    let (h, _) = d.reply("closeSession").next().expect("closeSession");
    assert_eq!(h.err, 0);
}
