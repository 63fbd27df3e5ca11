//! Jute records of the client protocol (`zookeeper.jute`), with their encoders and decoders.
//!
//! Requests are decoded by the server and encoded by clients (our client, bench, tests); responses the other
//! way round, so every record has both directions. Null and empty are kept apart where the wire keeps them
//! apart (`Option<Vec<u8>>` for data).

use crate::codec::{DecodeError, Reader, Writer};
use crate::consts::*;
use serde::{Deserialize, Serialize};

/// A jute record.
pub trait Record: Sized {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    fn encode(&self, w: &mut Writer);

    /// Decodes a whole payload, rejecting trailing bytes.
    fn from_bytes(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let v = Self::decode(&mut r)?;
        r.finish()?;
        Ok(v)
    }
    /// Decodes the record at the start of `b` and ignores whatever follows, as ZooKeeper's
    /// `BinaryInputArchive` does with a request body.
    fn from_prefix(b: &[u8]) -> Result<Self, DecodeError> {
        Self::decode(&mut Reader::new(b))
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_inner()
    }
}

/// Node metadata, [`Stat::SIZE_BYTES`] on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    pub scheme: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Option<Vec<u8>>,
    /// `None` when the client (pre-3.4) left the byte out; the reply then leaves it out too.
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub passwd: Vec<u8>,
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: i32,
    /// Raw opcode: unknown opcodes must still be answered (UNIMPLEMENTED), so this is not an `OpCode`.
    pub op: i32,
}

/// Precedes every operation and every result inside a multi; `{-1, true, -1}` ends the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiHeader {
    /// Opcode of the operation or result (`-1` for an error result and for the terminator).
    pub op: i32,
    pub done: bool,
    pub err: i32,
}

impl MultiHeader {
    /// The list terminator every client and ZooKeeper write.
    pub const END: MultiHeader = MultiHeader {
        op: -1,
        done: true,
        err: -1,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    pub path: String,
    /// Serialized as bytes (one copy), not as a sequence of u8 (one call a byte): postcard encodes both
    /// alike, so logs and snapshots read the same either way.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    pub flags: i32,
    /// Only on the wire for createTTL (opcode 21); -1 otherwise, as inside ZooKeeper.
    pub ttl: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathVersion {
    pub path: String,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathWatch {
    pub path: String,
    pub watch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDataRequest {
    pub path: String,
    /// Serialized as bytes (one copy), not as a sequence of u8 (one call a byte): postcard encodes both
    /// alike, so logs and snapshots read the same either way.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAclRequest {
    pub path: String,
    pub acl: Vec<Acl>,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconfigRequest {
    pub joining_servers: Option<String>,
    pub leaving_servers: Option<String>,
    pub new_members: Option<String>,
    pub cur_config_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchesRequest {
    pub path: String,
    /// `WatcherType` as sent (kept raw so an unknown value can be answered as ZooKeeper does).
    pub watcher_type: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthPacket {
    pub auth_type: i32,
    pub scheme: String,
    pub auth: Option<Vec<u8>>,
}

/// SetWatches (opcode 101) and SetWatches2 (105); the persistent lists are empty for 101.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetWatches {
    pub relative_zxid: i64,
    pub data_watches: Vec<String>,
    pub exist_watches: Vec<String>,
    pub child_watches: Vec<String>,
    pub persistent_watches: Vec<String>,
    pub persistent_recursive_watches: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddWatchRequest {
    pub path: String,
    pub mode: i32,
}

/// One operation inside a multi (opcode 14) or multiRead (opcode 22).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiOp {
    /// `op` is Create, Create2, CreateContainer or CreateTtl.
    Create {
        op: OpCode,
        req: CreateRequest,
    },
    Delete(PathVersion),
    SetData(SetDataRequest),
    Check(PathVersion),
    GetChildren(String),
    GetData(String),
}

/// A decoded client request body, by opcode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `op` is Create, Create2, CreateContainer or CreateTtl.
    Create {
        op: OpCode,
        req: CreateRequest,
    },
    Delete(PathVersion),
    Exists(PathWatch),
    GetData(PathWatch),
    SetData(SetDataRequest),
    GetAcl(String),
    SetAcl(SetAclRequest),
    GetChildren(PathWatch),
    GetChildren2(PathWatch),
    Sync(String),
    Ping,
    /// Top-level check: answered UNIMPLEMENTED, then the connection is closed.
    Check(PathVersion),
    Multi(Vec<MultiOp>),
    MultiRead(Vec<MultiOp>),
    Reconfig(ReconfigRequest),
    CheckWatches(WatchesRequest),
    RemoveWatches(WatchesRequest),
    DeleteContainer(String),
    Auth(AuthPacket),
    /// `v2` = opcode 105 (with the persistent lists).
    SetWatches {
        v2: bool,
        req: SetWatches,
    },
    Sasl(Option<Vec<u8>>),
    GetEphemerals(String),
    GetAllChildrenNumber(String),
    AddWatch(AddWatchRequest),
    WhoAmI,
    CloseSession,
}

/// One result inside a MultiResponse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiResult {
    Create {
        path: String,
    },
    Create2 {
        path: String,
        stat: Stat,
    },
    Delete,
    SetData {
        stat: Stat,
    },
    Check,
    GetChildren {
        children: Vec<String>,
    },
    GetData {
        data: Option<Vec<u8>>,
        stat: Stat,
    },
    /// Header type -1, body ErrorResponse{err}.
    Error(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub auth_scheme: String,
    pub user: String,
}

/// A reply body (what follows the ReplyHeader when err = 0, or always for multi).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// No body: delete, setWatches, auth, ping, closeSession, checkWatches, removeWatches, and every error.
    Empty,
    Create {
        path: String,
    },
    Create2 {
        path: String,
        stat: Stat,
    },
    /// exists, setData, setACL.
    Stat(Stat),
    GetData {
        data: Option<Vec<u8>>,
        stat: Stat,
    },
    GetAcl {
        acl: Vec<Acl>,
        stat: Stat,
    },
    GetChildren {
        children: Vec<String>,
    },
    GetChildren2 {
        children: Vec<String>,
        stat: Stat,
    },
    Sync {
        path: String,
    },
    Multi(Vec<MultiResult>),
    /// addWatch's 4-byte body.
    ErrorResponse(i32),
    Sasl {
        token: Option<Vec<u8>>,
    },
    GetEphemerals {
        paths: Vec<String>,
    },
    AllChildrenNumber(i32),
    WhoAmI(Vec<ClientInfo>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherEvent {
    pub event_type: i32,
    pub state: i32,
    pub path: String,
}

// ---------------------------------------------------------------------------------------------
// Encoders and decoders. Field order is the declaration order in `zookeeper.jute`.

/// `vector<ACL>`; a null vector reads as empty (ZooKeeper rejects both with InvalidACL).
pub(crate) fn read_acls(r: &mut Reader<'_>) -> Result<Vec<Acl>, DecodeError> {
    Ok(r.vec(Acl::MIN_BYTES, Acl::decode)?.unwrap_or_default())
}

pub(crate) fn write_acls(w: &mut Writer, acl: &[Acl]) {
    w.vec(Some(acl), |w, a| a.encode(w));
}

impl Stat {
    pub const SIZE_BYTES: usize = 68;
}

impl Record for Stat {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Stat {
            czxid: r.i64()?,
            mzxid: r.i64()?,
            ctime: r.i64()?,
            mtime: r.i64()?,
            version: r.i32()?,
            cversion: r.i32()?,
            aversion: r.i32()?,
            ephemeral_owner: r.i64()?,
            data_length: r.i32()?,
            num_children: r.i32()?,
            pzxid: r.i64()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i64(self.czxid);
        w.i64(self.mzxid);
        w.i64(self.ctime);
        w.i64(self.mtime);
        w.i32(self.version);
        w.i32(self.cversion);
        w.i32(self.aversion);
        w.i64(self.ephemeral_owner);
        w.i32(self.data_length);
        w.i32(self.num_children);
        w.i64(self.pzxid);
    }
}

impl Record for Id {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Id {
            scheme: r.ustring()?,
            id: r.ustring()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring(&self.scheme);
        w.ustring(&self.id);
    }
}

impl Acl {
    /// perms + two string lengths.
    const MIN_BYTES: usize = 12;
}

impl Record for Acl {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Acl {
            perms: r.i32()?,
            id: Id::decode(r)?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i32(self.perms);
        self.id.encode(w);
    }
}

/// The trailing `readOnly` byte of the handshake records: absent for pre-3.4 peers.
fn read_optional_bool(r: &mut Reader<'_>) -> Result<Option<bool>, DecodeError> {
    if r.is_empty() {
        Ok(None)
    } else {
        Ok(Some(r.bool()?))
    }
}

impl Record for ConnectRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConnectRequest {
            protocol_version: r.i32()?,
            last_zxid_seen: r.i64()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            passwd: r.buffer()?,
            read_only: read_optional_bool(r)?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i32(self.protocol_version);
        w.i64(self.last_zxid_seen);
        w.i32(self.timeout_ms);
        w.i64(self.session_id);
        w.buffer(self.passwd.as_deref());
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
    }
}

impl Record for ConnectResponse {
    /// A null passwd reads as empty; ZooKeeper always sends 16 bytes.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ConnectResponse {
            protocol_version: r.i32()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            passwd: r.buffer()?.unwrap_or_default(),
            read_only: read_optional_bool(r)?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i32(self.protocol_version);
        w.i32(self.timeout_ms);
        w.i64(self.session_id);
        w.buffer(Some(&self.passwd));
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
    }
}

impl RequestHeader {
    pub const SIZE_BYTES: usize = 8;
}

impl Record for RequestHeader {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RequestHeader {
            xid: r.i32()?,
            op: r.i32()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i32(self.xid);
        w.i32(self.op);
    }
}

impl ReplyHeader {
    pub const SIZE_BYTES: usize = 16;
}

impl Record for ReplyHeader {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ReplyHeader {
            xid: r.i32()?,
            zxid: r.i64()?,
            err: r.i32()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i32(self.xid);
        w.i64(self.zxid);
        w.i32(self.err);
    }
}

impl MultiHeader {
    pub const SIZE_BYTES: usize = 9;
}

impl Record for MultiHeader {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MultiHeader {
            op: r.i32()?,
            done: r.bool()?,
            err: r.i32()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i32(self.op);
        w.bool(self.done);
        w.i32(self.err);
    }
}

impl CreateRequest {
    /// Decodes `CreateRequest`, or `CreateTTLRequest` when `ttl` is set (opcode 21); without it the
    /// ttl field is -1.
    pub fn decode_with(r: &mut Reader<'_>, ttl: bool) -> Result<Self, DecodeError> {
        Ok(CreateRequest {
            path: r.ustring()?,
            data: r.buffer()?,
            acl: read_acls(r)?,
            flags: r.i32()?,
            ttl: if ttl { r.i64()? } else { -1 },
        })
    }
    /// Encodes `CreateRequest`, or `CreateTTLRequest` (with the trailing ttl) when `ttl` is set.
    pub fn encode_with(&self, w: &mut Writer, ttl: bool) {
        w.ustring(&self.path);
        w.buffer(self.data.as_deref());
        write_acls(w, &self.acl);
        w.i32(self.flags);
        if ttl {
            w.i64(self.ttl);
        }
    }
}

/// Plain `CreateRequest` (opcodes 1, 15, 19): no ttl on the wire.
impl Record for CreateRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_with(r, false)
    }
    fn encode(&self, w: &mut Writer) {
        self.encode_with(w, false);
    }
}

/// `DeleteRequest` and `CheckVersionRequest`.
impl Record for PathVersion {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PathVersion {
            path: r.ustring()?,
            version: r.i32()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring(&self.path);
        w.i32(self.version);
    }
}

/// `ExistsRequest`, `GetDataRequest`, `GetChildrenRequest`, `GetChildren2Request`.
impl Record for PathWatch {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PathWatch {
            path: r.ustring()?,
            watch: r.bool()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring(&self.path);
        w.bool(self.watch);
    }
}

impl Record for SetDataRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SetDataRequest {
            path: r.ustring()?,
            data: r.buffer()?,
            version: r.i32()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring(&self.path);
        w.buffer(self.data.as_deref());
        w.i32(self.version);
    }
}

impl Record for SetAclRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SetAclRequest {
            path: r.ustring()?,
            acl: read_acls(r)?,
            version: r.i32()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring(&self.path);
        write_acls(w, &self.acl);
        w.i32(self.version);
    }
}

impl Record for ReconfigRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ReconfigRequest {
            joining_servers: r.ustring_opt()?,
            leaving_servers: r.ustring_opt()?,
            new_members: r.ustring_opt()?,
            cur_config_id: r.i64()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring_opt(self.joining_servers.as_deref());
        w.ustring_opt(self.leaving_servers.as_deref());
        w.ustring_opt(self.new_members.as_deref());
        w.i64(self.cur_config_id);
    }
}

/// `CheckWatchesRequest` and `RemoveWatchesRequest`.
impl Record for WatchesRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(WatchesRequest {
            path: r.ustring()?,
            watcher_type: r.i32()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring(&self.path);
        w.i32(self.watcher_type);
    }
}

impl Record for AuthPacket {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(AuthPacket {
            auth_type: r.i32()?,
            scheme: r.ustring()?,
            auth: r.buffer()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i32(self.auth_type);
        w.ustring(&self.scheme);
        w.buffer(self.auth.as_deref());
    }
}

impl SetWatches {
    /// Decodes `SetWatches` (opcode 101, three lists) or, with `v2`, `SetWatches2` (opcode 105, five).
    pub fn decode_with(r: &mut Reader<'_>, v2: bool) -> Result<Self, DecodeError> {
        let mut sw = SetWatches {
            relative_zxid: r.i64()?,
            data_watches: r.ustring_vec()?,
            exist_watches: r.ustring_vec()?,
            child_watches: r.ustring_vec()?,
            ..SetWatches::default()
        };
        if v2 {
            sw.persistent_watches = r.ustring_vec()?;
            sw.persistent_recursive_watches = r.ustring_vec()?;
        }
        Ok(sw)
    }
    /// Encodes `SetWatches`, or `SetWatches2` with `v2`. Without `v2` the persistent lists must be
    /// empty: opcode 101 has no place for them.
    pub fn encode_with(&self, w: &mut Writer, v2: bool) {
        debug_assert!(
            v2 || (self.persistent_watches.is_empty()
                && self.persistent_recursive_watches.is_empty()),
            "SetWatches (101) cannot carry persistent watches"
        );
        w.i64(self.relative_zxid);
        w.ustring_vec(&self.data_watches);
        w.ustring_vec(&self.exist_watches);
        w.ustring_vec(&self.child_watches);
        if v2 {
            w.ustring_vec(&self.persistent_watches);
            w.ustring_vec(&self.persistent_recursive_watches);
        }
    }
}

/// `SetWatches` (opcode 101); see [`SetWatches::decode_with`] for `SetWatches2`.
impl Record for SetWatches {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Self::decode_with(r, false)
    }
    fn encode(&self, w: &mut Writer) {
        self.encode_with(w, false);
    }
}

impl Record for AddWatchRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(AddWatchRequest {
            path: r.ustring()?,
            mode: r.i32()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring(&self.path);
        w.i32(self.mode);
    }
}

impl Record for WatcherEvent {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(WatcherEvent {
            event_type: r.i32()?,
            state: r.i32()?,
            path: r.ustring()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.i32(self.event_type);
        w.i32(self.state);
        w.ustring(&self.path);
    }
}

impl ClientInfo {
    /// Two string lengths.
    pub(crate) const MIN_BYTES: usize = 8;
}

impl Record for ClientInfo {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ClientInfo {
            auth_scheme: r.ustring()?,
            user: r.ustring()?,
        })
    }
    fn encode(&self, w: &mut Writer) {
        w.ustring(&self.auth_scheme);
        w.ustring(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arb;
    use proptest::prelude::*;

    fn round_trip<T: Record + PartialEq + std::fmt::Debug>(v: &T) {
        let bytes = v.to_bytes();
        assert_eq!(&T::from_bytes(&bytes).expect("decodes"), v);
        assert_eq!(T::from_bytes(&bytes).expect("decodes").to_bytes(), bytes);
        // A cut anywhere must be an error, never a panic (the handshake records end with an
        // optional byte, so cutting just that byte is still a valid record).
        for cut in 0..bytes.len() {
            let _ = T::from_bytes(&bytes[..cut]);
        }
    }

    macro_rules! round_trip_tests {
        ($($name:ident: $strategy:expr;)*) => {
            proptest! {
                $(
                    #[test]
                    fn $name(v in $strategy) {
                        round_trip(&v);
                    }
                )*
            }
        };
    }

    round_trip_tests! {
        stat_round_trips: arb::stat();
        id_round_trips: arb::id();
        acl_round_trips: arb::acl();
        connect_request_round_trips: arb::connect_request();
        connect_response_round_trips: arb::connect_response();
        request_header_round_trips: arb::request_header();
        reply_header_round_trips: arb::reply_header();
        multi_header_round_trips: arb::multi_header();
        create_request_round_trips: arb::create_request(OpCode::Create);
        path_version_round_trips: arb::path_version();
        path_watch_round_trips: arb::path_watch();
        set_data_request_round_trips: arb::set_data_request();
        set_acl_request_round_trips: arb::set_acl_request();
        reconfig_request_round_trips: arb::reconfig_request();
        watches_request_round_trips: arb::watches_request();
        auth_packet_round_trips: arb::auth_packet();
        set_watches_round_trips: arb::set_watches(false);
        add_watch_request_round_trips: arb::add_watch_request();
        watcher_event_round_trips: arb::watcher_event();
        client_info_round_trips: arb::client_info();
    }

    proptest! {
        #[test]
        fn create_ttl_request_round_trips(v in arb::create_request(OpCode::CreateTtl)) {
            let mut w = Writer::new();
            v.encode_with(&mut w, true);
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(CreateRequest::decode_with(&mut r, true), Ok(v));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn set_watches2_round_trips(v in arb::set_watches(true)) {
            let mut w = Writer::new();
            v.encode_with(&mut w, true);
            let bytes = w.into_inner();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(SetWatches::decode_with(&mut r, true), Ok(v));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn stat_is_always_68_bytes(v in arb::stat()) {
            prop_assert_eq!(v.to_bytes().len(), Stat::SIZE_BYTES);
        }
    }

    fn connect_request(read_only: Option<bool>) -> ConnectRequest {
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 30_000,
            session_id: 0,
            passwd: Some(vec![0; 16]),
            read_only,
        }
    }

    #[test]
    fn connect_request_is_45_bytes_with_read_only_and_44_without() {
        let with = connect_request(Some(false)).to_bytes();
        assert_eq!(with.len(), 45);
        let without = connect_request(None).to_bytes();
        assert_eq!(without.len(), 44);
        assert_eq!(
            ConnectRequest::from_bytes(&without)
                .expect("old client")
                .read_only,
            None
        );
    }

    #[test]
    fn connect_request_ignores_bytes_after_read_only() {
        let mut b = connect_request(Some(true)).to_bytes();
        b.extend_from_slice(&[9, 9, 9]);
        assert_eq!(
            ConnectRequest::from_prefix(&b),
            Ok(connect_request(Some(true)))
        );
    }

    #[test]
    fn connect_response_is_37_bytes_with_read_only() {
        let resp = ConnectResponse {
            protocol_version: 0,
            timeout_ms: 30_000,
            session_id: 0x100,
            passwd: vec![7; 16],
            read_only: Some(false),
        };
        assert_eq!(resp.to_bytes().len(), 37);
        let old = ConnectResponse {
            read_only: None,
            ..resp
        };
        assert_eq!(old.to_bytes().len(), 36);
    }

    #[test]
    fn null_string_vectors_read_as_empty_and_null_data_stays_null() {
        let mut w = Writer::new();
        w.i64(5);
        w.i32(-1);
        w.i32(-1);
        w.i32(-1);
        let sw = SetWatches::from_bytes(&w.into_inner()).expect("null lists");
        assert_eq!(
            sw,
            SetWatches {
                relative_zxid: 5,
                ..SetWatches::default()
            }
        );

        let mut w = Writer::new();
        w.ustring("/a");
        w.i32(-1);
        w.i32(3);
        let sd = SetDataRequest::from_bytes(&w.into_inner()).expect("null data");
        assert_eq!(sd.data, None);
    }

    #[test]
    fn kazoo_null_string_reads_as_empty() {
        let mut w = Writer::new();
        w.i32(0);
        w.i32(-1);
        w.buffer(Some(b"user:pw"));
        let ap = AuthPacket::from_bytes(&w.into_inner()).expect("decodes");
        assert_eq!(ap.scheme, "");
    }

    #[test]
    fn acl_vector_count_beyond_the_input_is_rejected_before_allocating() {
        let mut w = Writer::new();
        w.ustring("/a");
        w.i32(i32::MAX);
        assert!(matches!(
            SetAclRequest::from_bytes(&w.into_inner()),
            Err(DecodeError::BadLength { .. })
        ));
    }
}
