//! Proptest strategies for every record, request and response (tests only).
//!
//! Values are generated in their canonical form, the one decoding gives back: ttl is -1 unless the
//! opcode is createTTL, SetWatches (101) has no persistent lists.

use crate::consts::OpCode;
use crate::records::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub fn string() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

pub fn strings() -> impl Strategy<Value = Vec<String>> {
    vec(string(), 0..4)
}

pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..24)
}

pub fn stat() -> impl Strategy<Value = Stat> {
    (
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        any::<i32>(),
        any::<i32>(),
        any::<i32>(),
        any::<i64>(),
        any::<i32>(),
        any::<i32>(),
        any::<i64>(),
    )
        .prop_map(
            |(czxid, mzxid, ctime, mtime, version, cversion, aversion, eo, dl, nc, pzxid)| Stat {
                czxid,
                mzxid,
                ctime,
                mtime,
                version,
                cversion,
                aversion,
                ephemeral_owner: eo,
                data_length: dl,
                num_children: nc,
                pzxid,
            },
        )
}

pub fn id() -> impl Strategy<Value = Id> {
    (string(), string()).prop_map(|(scheme, id)| Id { scheme, id })
}

pub fn acl() -> impl Strategy<Value = Acl> {
    (any::<i32>(), id()).prop_map(|(perms, id)| Acl { perms, id })
}

pub fn acls() -> impl Strategy<Value = Vec<Acl>> {
    vec(acl(), 0..3)
}

pub fn connect_request() -> impl Strategy<Value = ConnectRequest> {
    (
        any::<i32>(),
        any::<i64>(),
        any::<i32>(),
        any::<i64>(),
        option::of(bytes()),
        option::of(any::<bool>()),
    )
        .prop_map(|(pv, zxid, to, sid, passwd, ro)| ConnectRequest {
            protocol_version: pv,
            last_zxid_seen: zxid,
            timeout_ms: to,
            session_id: sid,
            passwd,
            read_only: ro,
        })
}

pub fn connect_response() -> impl Strategy<Value = ConnectResponse> {
    (
        any::<i32>(),
        any::<i32>(),
        any::<i64>(),
        bytes(),
        option::of(any::<bool>()),
    )
        .prop_map(|(pv, to, sid, passwd, ro)| ConnectResponse {
            protocol_version: pv,
            timeout_ms: to,
            session_id: sid,
            passwd,
            read_only: ro,
        })
}

pub fn request_header() -> impl Strategy<Value = RequestHeader> {
    (any::<i32>(), any::<i32>()).prop_map(|(xid, op)| RequestHeader { xid, op })
}

pub fn reply_header() -> impl Strategy<Value = ReplyHeader> {
    (any::<i32>(), any::<i64>(), any::<i32>()).prop_map(|(xid, zxid, err)| ReplyHeader {
        xid,
        zxid,
        err,
    })
}

pub fn multi_header() -> impl Strategy<Value = MultiHeader> {
    (any::<i32>(), any::<bool>(), any::<i32>()).prop_map(|(op, done, err)| MultiHeader {
        op,
        done,
        err,
    })
}

/// A create request as sent with opcode `op` (ttl only for createTTL).
pub fn create_request(op: OpCode) -> impl Strategy<Value = CreateRequest> {
    let ttl = if op == OpCode::CreateTtl {
        any::<i64>().boxed()
    } else {
        Just(-1i64).boxed()
    };
    (string(), option::of(bytes()), acls(), any::<i32>(), ttl).prop_map(
        |(path, data, acl, flags, ttl)| CreateRequest {
            path,
            data,
            acl,
            flags,
            ttl,
        },
    )
}

pub fn create_op() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Create),
        Just(OpCode::Create2),
        Just(OpCode::CreateContainer),
        Just(OpCode::CreateTtl),
    ]
}

pub fn path_version() -> impl Strategy<Value = PathVersion> {
    (string(), any::<i32>()).prop_map(|(path, version)| PathVersion { path, version })
}

pub fn path_watch() -> impl Strategy<Value = PathWatch> {
    (string(), any::<bool>()).prop_map(|(path, watch)| PathWatch { path, watch })
}

pub fn set_data_request() -> impl Strategy<Value = SetDataRequest> {
    (string(), option::of(bytes()), any::<i32>()).prop_map(|(path, data, version)| SetDataRequest {
        path,
        data,
        version,
    })
}

pub fn set_acl_request() -> impl Strategy<Value = SetAclRequest> {
    (string(), acls(), any::<i32>()).prop_map(|(path, acl, version)| SetAclRequest {
        path,
        acl,
        version,
    })
}

pub fn reconfig_request() -> impl Strategy<Value = ReconfigRequest> {
    (
        option::of(string()),
        option::of(string()),
        option::of(string()),
        any::<i64>(),
    )
        .prop_map(|(j, l, n, id)| ReconfigRequest {
            joining_servers: j,
            leaving_servers: l,
            new_members: n,
            cur_config_id: id,
        })
}

pub fn watches_request() -> impl Strategy<Value = WatchesRequest> {
    (string(), any::<i32>()).prop_map(|(path, watcher_type)| WatchesRequest { path, watcher_type })
}

pub fn auth_packet() -> impl Strategy<Value = AuthPacket> {
    (any::<i32>(), string(), option::of(bytes())).prop_map(|(auth_type, scheme, auth)| AuthPacket {
        auth_type,
        scheme,
        auth,
    })
}

pub fn set_watches(v2: bool) -> impl Strategy<Value = SetWatches> {
    let persistent = if v2 {
        (strings(), strings()).boxed()
    } else {
        Just((Vec::new(), Vec::new())).boxed()
    };
    (any::<i64>(), strings(), strings(), strings(), persistent).prop_map(
        |(relative_zxid, data, exist, child, (p, pr))| SetWatches {
            relative_zxid,
            data_watches: data,
            exist_watches: exist,
            child_watches: child,
            persistent_watches: p,
            persistent_recursive_watches: pr,
        },
    )
}

pub fn add_watch_request() -> impl Strategy<Value = AddWatchRequest> {
    (string(), any::<i32>()).prop_map(|(path, mode)| AddWatchRequest { path, mode })
}

pub fn watcher_event() -> impl Strategy<Value = WatcherEvent> {
    (any::<i32>(), any::<i32>(), string()).prop_map(|(event_type, state, path)| WatcherEvent {
        event_type,
        state,
        path,
    })
}

pub fn client_info() -> impl Strategy<Value = ClientInfo> {
    (string(), string()).prop_map(|(auth_scheme, user)| ClientInfo { auth_scheme, user })
}

pub fn write_op() -> impl Strategy<Value = MultiOp> {
    prop_oneof![
        create_op().prop_flat_map(|op| create_request(op).prop_map(move |req| MultiOp::Create {
            op,
            req
        })),
        path_version().prop_map(MultiOp::Delete),
        set_data_request().prop_map(MultiOp::SetData),
        path_version().prop_map(MultiOp::Check),
    ]
}

pub fn read_op() -> impl Strategy<Value = MultiOp> {
    prop_oneof![
        string().prop_map(MultiOp::GetChildren),
        string().prop_map(MultiOp::GetData),
    ]
}

pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        create_op().prop_flat_map(|op| create_request(op).prop_map(move |req| Request::Create {
            op,
            req
        })),
        path_version().prop_map(Request::Delete),
        path_watch().prop_map(Request::Exists),
        path_watch().prop_map(Request::GetData),
        set_data_request().prop_map(Request::SetData),
        string().prop_map(Request::GetAcl),
        set_acl_request().prop_map(Request::SetAcl),
        path_watch().prop_map(Request::GetChildren),
        path_watch().prop_map(Request::GetChildren2),
        string().prop_map(Request::Sync),
        Just(Request::Ping),
        path_version().prop_map(Request::Check),
        vec(write_op(), 0..4).prop_map(Request::Multi),
        vec(read_op(), 0..4).prop_map(Request::MultiRead),
        reconfig_request().prop_map(Request::Reconfig),
        watches_request().prop_map(Request::CheckWatches),
        watches_request().prop_map(Request::RemoveWatches),
        string().prop_map(Request::DeleteContainer),
        auth_packet().prop_map(Request::Auth),
        any::<bool>().prop_flat_map(|v2| set_watches(v2).prop_map(move |req| Request::SetWatches {
            v2,
            req
        })),
        option::of(bytes()).prop_map(Request::Sasl),
        string().prop_map(Request::GetEphemerals),
        string().prop_map(Request::GetAllChildrenNumber),
        add_watch_request().prop_map(Request::AddWatch),
        Just(Request::WhoAmI),
        Just(Request::CloseSession),
    ]
}

pub fn multi_result() -> impl Strategy<Value = MultiResult> {
    prop_oneof![
        string().prop_map(|path| MultiResult::Create { path }),
        (string(), stat()).prop_map(|(path, stat)| MultiResult::Create2 { path, stat }),
        Just(MultiResult::Delete),
        stat().prop_map(|stat| MultiResult::SetData { stat }),
        Just(MultiResult::Check),
        strings().prop_map(|children| MultiResult::GetChildren { children }),
        (option::of(bytes()), stat()).prop_map(|(data, stat)| MultiResult::GetData { data, stat }),
        any::<i32>().prop_map(MultiResult::Error),
    ]
}

/// A response with an opcode whose reply it can be.
pub fn response() -> impl Strategy<Value = (OpCode, Response)> {
    prop_oneof![
        Just((OpCode::Delete, Response::Empty)),
        string().prop_map(|path| (OpCode::Create, Response::Create { path })),
        (string(), stat())
            .prop_map(|(path, stat)| (OpCode::Create2, Response::Create2 { path, stat })),
        stat().prop_map(|s| (OpCode::Exists, Response::Stat(s))),
        (option::of(bytes()), stat())
            .prop_map(|(data, stat)| (OpCode::GetData, Response::GetData { data, stat })),
        (acls(), stat()).prop_map(|(acl, stat)| (OpCode::GetAcl, Response::GetAcl { acl, stat })),
        strings().prop_map(|children| (OpCode::GetChildren, Response::GetChildren { children })),
        (strings(), stat()).prop_map(|(children, stat)| (
            OpCode::GetChildren2,
            Response::GetChildren2 { children, stat }
        )),
        string().prop_map(|path| (OpCode::Sync, Response::Sync { path })),
        vec(multi_result(), 0..4).prop_map(|r| (OpCode::Multi, Response::Multi(r))),
        any::<i32>().prop_map(|e| (OpCode::AddWatch, Response::ErrorResponse(e))),
        option::of(bytes()).prop_map(|token| (OpCode::Sasl, Response::Sasl { token })),
        strings().prop_map(|paths| (OpCode::GetEphemerals, Response::GetEphemerals { paths })),
        any::<i32>().prop_map(|n| (OpCode::GetAllChildrenNumber, Response::AllChildrenNumber(n))),
        vec(client_info(), 0..3).prop_map(|c| (OpCode::WhoAmI, Response::WhoAmI(c))),
    ]
}

/// Every opcode the protocol defines, plus values next to them.
pub fn any_opcode() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => -12i32..=23,
        2 => 99i32..=108,
        1 => any::<i32>(),
    ]
}
