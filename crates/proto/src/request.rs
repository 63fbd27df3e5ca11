//! Client request bodies: decoding by opcode (server side) and encoding (client side).
//!
//! The body is what follows the 8-byte `RequestHeader` in a frame. Like ZooKeeper's
//! `BinaryInputArchive`, decoding reads the record at the start of the body and ignores any trailing
//! bytes (`ByteBufferInputStream.byteBuffer2Record` never checks that the buffer was used up).
//! Decoding never panics; an unknown opcode is its own error so the server can answer UNIMPLEMENTED.

use crate::codec::{DecodeError, Reader, Writer};
use crate::consts::OpCode;
use crate::records::*;
use thiserror::Error;

/// Why a request body could not be turned into a [`Request`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestDecodeError {
    /// Not a client opcode (this includes 0 notification, -1 error and -10 createSession). ZooKeeper
    /// replies `UNIMPLEMENTED` (-6) and closes the connection.
    #[error("unknown opcode {0}")]
    UnknownOpcode(i32),
    /// The body does not parse as the opcode's record (ZooKeeper: MARSHALLINGERROR, -5).
    #[error("malformed {op:?} request: {err}")]
    Malformed { op: OpCode, err: DecodeError },
}

/// Which operations a multi may hold (`Op.OpKind`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum MultiKind {
    /// multi (14): create, create2, createContainer, createTTL, delete, setData, check.
    Write,
    /// multiRead (22): getChildren, getData.
    Read,
}

impl MultiOp {
    /// The opcode written in this operation's `MultiHeader`.
    pub fn opcode(&self) -> OpCode {
        match self {
            MultiOp::Create { op, .. } => *op,
            MultiOp::Delete(_) => OpCode::Delete,
            MultiOp::SetData(_) => OpCode::SetData,
            MultiOp::Check(_) => OpCode::Check,
            MultiOp::GetChildren(_) => OpCode::GetChildren,
            MultiOp::GetData(_) => OpCode::GetData,
        }
    }

    /// Decodes one operation: any of the seven types `MultiOperationRecord.deserialize` knows, in a
    /// multi or a multiRead alike; any other type is an error. An operation of the wrong kind (a read in
    /// a multi, a write in a multiRead, or both kinds mixed) is well-formed jute: ZooKeeper answers it
    /// with MARSHALLINGERROR but keeps the connection, each request type in its own way, so the server
    /// decides (see `oxkeeper_core`), not the decoder.
    fn decode(r: &mut Reader<'_>, op: i32, kind: MultiKind) -> Result<Self, DecodeError> {
        let bad = DecodeError::BadValue {
            what: match kind {
                MultiKind::Write => "multi operation type",
                MultiKind::Read => "multiRead operation type",
            },
            value: op,
        };
        let Some(code) = OpCode::from_i32(op) else {
            return Err(bad);
        };
        match code {
            OpCode::Create | OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                Ok(MultiOp::Create {
                    op: code,
                    req: CreateRequest::decode_with(r, code == OpCode::CreateTtl)?,
                })
            }
            OpCode::Delete => Ok(MultiOp::Delete(PathVersion::decode(r)?)),
            OpCode::SetData => Ok(MultiOp::SetData(SetDataRequest::decode(r)?)),
            OpCode::Check => Ok(MultiOp::Check(PathVersion::decode(r)?)),
            // The watch flag of GetChildrenRequest/GetDataRequest is read and dropped, as ZooKeeper
            // does (`Op.getChildren(gcr.getPath())`): a multiRead never sets watches.
            OpCode::GetChildren => Ok(MultiOp::GetChildren(PathWatch::decode(r)?.path)),
            OpCode::GetData => Ok(MultiOp::GetData(PathWatch::decode(r)?.path)),
            _ => Err(bad),
        }
    }

    fn encode(&self, w: &mut Writer) {
        MultiHeader {
            op: self.opcode().as_i32(),
            done: false,
            err: -1,
        }
        .encode(w);
        match self {
            MultiOp::Create { op, req } => req.encode_with(w, *op == OpCode::CreateTtl),
            MultiOp::Delete(pv) | MultiOp::Check(pv) => pv.encode(w),
            MultiOp::SetData(req) => req.encode(w),
            MultiOp::GetChildren(path) | MultiOp::GetData(path) => PathWatch {
                path: path.clone(),
                watch: false,
            }
            .encode(w),
        }
    }
}

/// `MultiOperationRecord`: `MultiHeader` + operation, repeated, until a header with `done` set.
/// Like ZooKeeper, only `done` ends the list; the terminator's type and err are not checked.
/// The loop needs no count limit: every operation consumes at least one header of input.
fn decode_multi(r: &mut Reader<'_>, kind: MultiKind) -> Result<Vec<MultiOp>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let h = MultiHeader::decode(r)?;
        if h.done {
            return Ok(ops);
        }
        ops.push(MultiOp::decode(r, h.op, kind)?);
    }
}

fn encode_multi(w: &mut Writer, ops: &[MultiOp]) {
    for op in ops {
        op.encode(w);
    }
    MultiHeader::END.encode(w);
}

impl Request {
    /// Whether this request changes the replicated state, so goes through the log: ZooKeeper's write
    /// requests (a multi even if it holds only checks; reconfig; closeSession).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create { .. }
                | Request::Delete(_)
                | Request::SetData(_)
                | Request::SetAcl(_)
                | Request::Multi(_)
                | Request::DeleteContainer(_)
                | Request::Reconfig(_)
                | Request::CloseSession
        )
    }

    /// Decodes a request body for the opcode in its `RequestHeader`. Trailing bytes are ignored.
    pub fn decode(op: i32, body: &[u8]) -> Result<Request, RequestDecodeError> {
        let code = OpCode::from_i32(op).ok_or(RequestDecodeError::UnknownOpcode(op))?;
        let mut r = Reader::new(body);
        Self::decode_body(code, &mut r)
            .map_err(|err| RequestDecodeError::Malformed { op: code, err })?
            .ok_or(RequestDecodeError::UnknownOpcode(op))
    }

    /// `Ok(None)` for opcodes that are known but never sent by a client.
    fn decode_body(code: OpCode, r: &mut Reader<'_>) -> Result<Option<Request>, DecodeError> {
        let req = match code {
            OpCode::Create | OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                Request::Create {
                    op: code,
                    req: CreateRequest::decode_with(r, code == OpCode::CreateTtl)?,
                }
            }
            OpCode::Delete => Request::Delete(PathVersion::decode(r)?),
            OpCode::Exists => Request::Exists(PathWatch::decode(r)?),
            OpCode::GetData => Request::GetData(PathWatch::decode(r)?),
            OpCode::SetData => Request::SetData(SetDataRequest::decode(r)?),
            OpCode::GetAcl => Request::GetAcl(r.ustring()?),
            OpCode::SetAcl => Request::SetAcl(SetAclRequest::decode(r)?),
            OpCode::GetChildren => Request::GetChildren(PathWatch::decode(r)?),
            OpCode::GetChildren2 => Request::GetChildren2(PathWatch::decode(r)?),
            OpCode::Sync => Request::Sync(r.ustring()?),
            OpCode::Ping => Request::Ping,
            OpCode::Check => Request::Check(PathVersion::decode(r)?),
            OpCode::Multi => Request::Multi(decode_multi(r, MultiKind::Write)?),
            OpCode::MultiRead => Request::MultiRead(decode_multi(r, MultiKind::Read)?),
            OpCode::Reconfig => Request::Reconfig(ReconfigRequest::decode(r)?),
            OpCode::CheckWatches => Request::CheckWatches(WatchesRequest::decode(r)?),
            OpCode::RemoveWatches => Request::RemoveWatches(WatchesRequest::decode(r)?),
            // Not a jute record: ZooKeeper's ContainerManager puts the raw UTF-8 path in the body and
            // PrepRequestProcessor reads it back with `new String(request.request.array())`.
            OpCode::DeleteContainer => {
                Request::DeleteContainer(String::from_utf8_lossy(r.rest()).into_owned())
            }
            OpCode::Auth => Request::Auth(AuthPacket::decode(r)?),
            OpCode::SetWatches => Request::SetWatches {
                v2: false,
                req: SetWatches::decode_with(r, false)?,
            },
            OpCode::SetWatches2 => Request::SetWatches {
                v2: true,
                req: SetWatches::decode_with(r, true)?,
            },
            OpCode::Sasl => Request::Sasl(r.buffer()?),
            OpCode::GetEphemerals => Request::GetEphemerals(r.ustring()?),
            OpCode::GetAllChildrenNumber => Request::GetAllChildrenNumber(r.ustring()?),
            OpCode::AddWatch => Request::AddWatch(AddWatchRequest::decode(r)?),
            OpCode::WhoAmI => Request::WhoAmI,
            OpCode::CloseSession => Request::CloseSession,
            OpCode::Notification | OpCode::CreateSession | OpCode::Error => return Ok(None),
        };
        Ok(Some(req))
    }

    /// The opcode to put in the `RequestHeader`.
    pub fn opcode(&self) -> OpCode {
        match self {
            Request::Create { op, .. } => *op,
            Request::Delete(_) => OpCode::Delete,
            Request::Exists(_) => OpCode::Exists,
            Request::GetData(_) => OpCode::GetData,
            Request::SetData(_) => OpCode::SetData,
            Request::GetAcl(_) => OpCode::GetAcl,
            Request::SetAcl(_) => OpCode::SetAcl,
            Request::GetChildren(_) => OpCode::GetChildren,
            Request::GetChildren2(_) => OpCode::GetChildren2,
            Request::Sync(_) => OpCode::Sync,
            Request::Ping => OpCode::Ping,
            Request::Check(_) => OpCode::Check,
            Request::Multi(_) => OpCode::Multi,
            Request::MultiRead(_) => OpCode::MultiRead,
            Request::Reconfig(_) => OpCode::Reconfig,
            Request::CheckWatches(_) => OpCode::CheckWatches,
            Request::RemoveWatches(_) => OpCode::RemoveWatches,
            Request::DeleteContainer(_) => OpCode::DeleteContainer,
            Request::Auth(_) => OpCode::Auth,
            Request::SetWatches { v2: false, .. } => OpCode::SetWatches,
            Request::SetWatches { v2: true, .. } => OpCode::SetWatches2,
            Request::Sasl(_) => OpCode::Sasl,
            Request::GetEphemerals(_) => OpCode::GetEphemerals,
            Request::GetAllChildrenNumber(_) => OpCode::GetAllChildrenNumber,
            Request::AddWatch(_) => OpCode::AddWatch,
            Request::WhoAmI => OpCode::WhoAmI,
            Request::CloseSession => OpCode::CloseSession,
        }
    }

    /// Encodes the body (without the `RequestHeader`).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Request::Create { op, req } => req.encode_with(w, *op == OpCode::CreateTtl),
            Request::Delete(pv) | Request::Check(pv) => pv.encode(w),
            Request::Exists(pw)
            | Request::GetData(pw)
            | Request::GetChildren(pw)
            | Request::GetChildren2(pw) => pw.encode(w),
            Request::SetData(req) => req.encode(w),
            Request::GetAcl(path)
            | Request::Sync(path)
            | Request::GetEphemerals(path)
            | Request::GetAllChildrenNumber(path) => w.ustring(path),
            Request::SetAcl(req) => req.encode(w),
            Request::Multi(ops) | Request::MultiRead(ops) => encode_multi(w, ops),
            Request::Reconfig(req) => req.encode(w),
            Request::CheckWatches(req) | Request::RemoveWatches(req) => req.encode(w),
            Request::DeleteContainer(path) => w.raw(path.as_bytes()),
            Request::Auth(req) => req.encode(w),
            Request::SetWatches { v2, req } => req.encode_with(w, *v2),
            Request::Sasl(token) => w.buffer(token.as_deref()),
            Request::AddWatch(req) => req.encode(w),
            Request::Ping | Request::WhoAmI | Request::CloseSession => {}
        }
    }

    /// The encoded body as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arb;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Requests whose body a shorter prefix cannot also encode.
    fn has_fixed_end(req: &Request) -> bool {
        !matches!(
            req,
            Request::Ping | Request::WhoAmI | Request::CloseSession | Request::DeleteContainer(_)
        )
    }

    proptest! {
        /// ZooKeeper's write requests, by opcode (those that `PrepRequestProcessor` turns into a
        /// transaction).
        #[test]
        fn writes_are_zookeepers_transaction_opcodes(req in arb::request()) {
            use OpCode::*;
            let op = req.opcode();
            let write = matches!(
                op,
                Create | Create2 | CreateContainer | CreateTtl | Delete | DeleteContainer | SetData
                    | SetAcl | Multi | Reconfig | CloseSession
            );
            prop_assert_eq!(req.is_write(), write, "{:?}", op);
        }

        #[test]
        fn request_round_trips(req in arb::request()) {
            let bytes = req.to_bytes();
            let op = req.opcode().as_i32();
            let back = Request::decode(op, &bytes).expect("decodes");
            prop_assert_eq!(&back, &req);
            prop_assert_eq!(back.to_bytes(), bytes);
        }

        #[test]
        fn request_ignores_trailing_bytes(req in arb::request(), tail in vec(any::<u8>(), 1..16)) {
            prop_assume!(!matches!(req, Request::DeleteContainer(_)));
            let mut bytes = req.to_bytes();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(Request::decode(req.opcode().as_i32(), &bytes), Ok(req));
        }

        #[test]
        fn truncated_request_is_malformed(req in arb::request(), cut in any::<prop::sample::Index>()) {
            prop_assume!(has_fixed_end(&req));
            let bytes = req.to_bytes();
            let cut = cut.index(bytes.len());
            let res = Request::decode(req.opcode().as_i32(), &bytes[..cut]);
            prop_assert!(
                matches!(res, Err(RequestDecodeError::Malformed { .. })),
                "cut at {} of {}: {:?}", cut, bytes.len(), res
            );
        }

        #[test]
        fn decode_never_panics_on_random_bytes(op in arb::any_opcode(), body in vec(any::<u8>(), 0..128)) {
            let _ = Request::decode(op, &body);
        }

        #[test]
        fn decode_never_panics_on_mutated_requests(
            req in arb::request(),
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = req.to_bytes();
            if !bytes.is_empty() {
                for (at, b) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
            }
            let _ = Request::decode(req.opcode().as_i32(), &bytes);
        }
    }

    #[test]
    fn every_client_opcode_decodes_and_the_others_are_unknown() {
        for op in -20..=120 {
            let res = Request::decode(op, &[]);
            match OpCode::from_i32(op) {
                Some(OpCode::Notification | OpCode::CreateSession | OpCode::Error) | None => {
                    assert_eq!(res, Err(RequestDecodeError::UnknownOpcode(op)), "op {op}");
                }
                Some(OpCode::Ping | OpCode::WhoAmI | OpCode::CloseSession) => {
                    assert!(res.is_ok(), "op {op}: {res:?}");
                }
                Some(OpCode::DeleteContainer) => {
                    assert_eq!(res, Ok(Request::DeleteContainer(String::new())));
                }
                Some(code) => {
                    assert!(
                        matches!(res, Err(RequestDecodeError::Malformed { op, .. }) if op == code),
                        "op {op}: {res:?}"
                    );
                }
            }
        }
    }

    /// A multi operation's header type and a writer for its body.
    type TestOp<'a> = (i32, &'a dyn Fn(&mut Writer));

    fn multi_body(ops: &[TestOp<'_>]) -> Vec<u8> {
        let mut w = Writer::new();
        for (op, body) in ops {
            MultiHeader {
                op: *op,
                done: false,
                err: -1,
            }
            .encode(&mut w);
            body(&mut w);
        }
        MultiHeader::END.encode(&mut w);
        w.into_inner()
    }

    fn path_watch(w: &mut Writer) {
        PathWatch {
            path: "/a".into(),
            watch: false,
        }
        .encode(w);
    }

    fn path_version(w: &mut Writer) {
        PathVersion {
            path: "/a".into(),
            version: -1,
        }
        .encode(w);
    }

    #[test]
    fn empty_multi_is_allowed() {
        let body = multi_body(&[]);
        assert_eq!(body.len(), 9);
        assert_eq!(Request::decode(14, &body), Ok(Request::Multi(vec![])));
        assert_eq!(Request::decode(22, &body), Ok(Request::MultiRead(vec![])));
    }

    #[test]
    fn multis_decode_ops_of_either_kind_but_refuse_unknown_types() {
        // Wrong-kind and mixed operations are well-formed: the server answers them (MARSHALLINGERROR
        // without closing), so they decode.
        let reads = multi_body(&[(4, &path_watch)]);
        assert!(matches!(
            Request::decode(14, &reads),
            Ok(Request::Multi(ops)) if ops == [MultiOp::GetData("/a".into())]
        ));
        let writes = multi_body(&[(2, &path_version)]);
        assert!(matches!(
            Request::decode(22, &writes),
            Ok(Request::MultiRead(ops)) if matches!(ops[..], [MultiOp::Delete(_)])
        ));
        let mixed = multi_body(&[(8, &path_watch), (2, &path_version)]);
        assert!(
            matches!(Request::decode(22, &mixed), Ok(Request::MultiRead(ops)) if ops.len() == 2)
        );
        let unknown = multi_body(&[(3, &path_watch)]);
        assert!(matches!(
            Request::decode(14, &unknown),
            Err(RequestDecodeError::Malformed {
                op: OpCode::Multi,
                err: DecodeError::BadValue { value: 3, .. }
            })
        ));
        assert!(Request::decode(22, &unknown).is_err());
    }

    #[test]
    fn multi_read_drops_the_watch_flag() {
        let body = multi_body(&[(8, &|w: &mut Writer| {
            PathWatch {
                path: "/a".into(),
                watch: true,
            }
            .encode(w)
        })]);
        assert_eq!(
            Request::decode(22, &body),
            Ok(Request::MultiRead(vec![MultiOp::GetChildren("/a".into())]))
        );
    }

    #[test]
    fn multi_ends_at_any_header_with_done_set() {
        let mut w = Writer::new();
        MultiHeader {
            op: 0,
            done: true,
            err: 0,
        }
        .encode(&mut w);
        assert_eq!(
            Request::decode(14, &w.into_inner()),
            Ok(Request::Multi(vec![]))
        );
    }

    #[test]
    fn create_ttl_carries_the_ttl_and_create_does_not() {
        let req = CreateRequest {
            path: "/t".into(),
            data: None,
            acl: vec![],
            flags: 5,
            ttl: 1000,
        };
        let ttl = Request::Create {
            op: OpCode::CreateTtl,
            req: req.clone(),
        };
        let plain = Request::Create {
            op: OpCode::Create,
            req: CreateRequest { ttl: -1, ..req },
        };
        assert_eq!(ttl.to_bytes().len(), plain.to_bytes().len() + 8);
        assert_eq!(Request::decode(21, &ttl.to_bytes()), Ok(ttl));
        assert_eq!(Request::decode(1, &plain.to_bytes()), Ok(plain));
    }

    #[test]
    fn delete_container_body_is_the_raw_path() {
        let req = Request::DeleteContainer("/c".into());
        assert_eq!(req.to_bytes(), b"/c");
        assert_eq!(Request::decode(20, b"/c"), Ok(req));
    }
}
