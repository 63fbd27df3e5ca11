//! One logged transaction: `TxnHeader`, the record its type names (`org.apache.zookeeper.txn` in
//! `zookeeper.jute`), then, from 3.6 on, a `TxnDigest`; decoded as `SerializeUtils.deserializeTxn`
//! reads them, old layouts included (a `CreateTxn` without parentCVersion, a closeSession without a
//! body).

use crate::error::{decode_offset, describe};
use oxkeeper_core::import::{ZkCreate, ZkTxn, ZkTxnHeader};
use oxkeeper_proto::records::Record;
use oxkeeper_proto::{Acl, DecodeError, OpCode, Reader};

/// `TxnDigest`: ZooKeeper's digest of the whole tree after this transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TxnDigest {
    pub version: i32,
    pub tree_digest: i64,
}

/// A decoded transaction.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Decoded {
    pub txn_type: i32,
    pub hdr: ZkTxnHeader,
    pub txn: ZkTxn,
    pub digest: Option<TxnDigest>,
}

/// Why a transaction could not be decoded; offsets are from the start of the transaction's bytes.
#[derive(Debug, PartialEq)]
pub(crate) enum TxnError {
    Decode(DecodeError),
    Unknown { zxid: i64, txn_type: i32 },
    Invalid { offset: usize, what: String },
}

impl From<DecodeError> for TxnError {
    fn from(e: DecodeError) -> Self {
        TxnError::Decode(e)
    }
}

const TXN_DIGEST_BYTES: usize = 12;
/// The shortest jute `ACL`: perms and two string lengths.
const ACL_MIN_BYTES: usize = 12;

fn path(r: &mut Reader<'_>) -> Result<String, TxnError> {
    let offset = r.position();
    r.ustring_opt()?.ok_or(TxnError::Invalid {
        offset,
        what: "null path".into(),
    })
}

/// `vector<ACL>`; `None` for a null vector.
fn acl(r: &mut Reader<'_>) -> Result<Option<Vec<Acl>>, TxnError> {
    Ok(r.vec(ACL_MIN_BYTES, Acl::decode)?)
}

fn create(r: &mut Reader<'_>, op: OpCode) -> Result<ZkCreate, TxnError> {
    let path = path(r)?;
    let data = r.buffer()?;
    let acl = acl(r)?;
    let (ephemeral, parent_cversion, ttl) = match op {
        OpCode::Create | OpCode::Create2 => (r.bool()?, r.i32()?, -1),
        OpCode::CreateTtl => (false, r.i32()?, r.i64()?),
        _ => (false, r.i32()?, -1),
    };
    Ok(ZkCreate {
        op,
        path,
        data,
        acl,
        ephemeral,
        parent_cversion,
        ttl,
    })
}

/// `CreateTxnV0` (logs older than 3.3): no parentCVersion, which the replay reads as "one more".
fn create_v0(r: &mut Reader<'_>) -> Result<ZkCreate, TxnError> {
    Ok(ZkCreate {
        op: OpCode::Create,
        path: path(r)?,
        data: r.buffer()?,
        acl: acl(r)?,
        ephemeral: r.bool()?,
        parent_cversion: -1,
        ttl: -1,
    })
}

fn set_data(r: &mut Reader<'_>) -> Result<ZkTxn, TxnError> {
    Ok(ZkTxn::SetData {
        path: path(r)?,
        data: r.buffer()?,
        version: r.i32()?,
    })
}

fn check(r: &mut Reader<'_>) -> Result<ZkTxn, TxnError> {
    Ok(ZkTxn::Check {
        path: path(r)?,
        version: r.i32()?,
    })
}

/// A sub-transaction of a multi, decoded from its `Txn.data` (trailing bytes ignored, as ZooKeeper's
/// `RequestRecord.readRecord` does). `base` is the offset of that data in the transaction.
fn sub_txn(op: i32, data: &[u8], base: usize) -> Result<ZkTxn, TxnError> {
    let mut r = Reader::new(data);
    let shift = |e: TxnError| match e {
        TxnError::Decode(d) => TxnError::Invalid {
            offset: base + decode_offset(&d),
            what: format!("sub-transaction of type {op}: {}", describe(&d)),
        },
        TxnError::Invalid { offset, what } => TxnError::Invalid {
            offset: base + offset,
            what,
        },
        other => other,
    };
    let txn = match OpCode::from_i32(op) {
        Some(
            o @ (OpCode::Create | OpCode::Create2 | OpCode::CreateTtl | OpCode::CreateContainer),
        ) => create(&mut r, o).map(ZkTxn::Create),
        Some(OpCode::Delete | OpCode::DeleteContainer) => {
            path(&mut r).map(|path| ZkTxn::Delete { path })
        }
        Some(OpCode::SetData) => set_data(&mut r),
        Some(OpCode::Check) => check(&mut r),
        Some(OpCode::Error) => r
            .i32()
            .map(|err| ZkTxn::Error { err })
            .map_err(TxnError::from),
        _ => Err(TxnError::Invalid {
            offset: 0,
            what: format!("a multi cannot hold a sub-transaction of type {op}"),
        }),
    };
    txn.map_err(shift)
}

/// `MultiTxn`. As `DataTree.processTxn`, a multi with an error sub-transaction failed as a whole: its
/// other sub-transactions are not decoded and become errors too (OK before the first error, then
/// RuntimeInconsistency).
fn multi(r: &mut Reader<'_>) -> Result<ZkTxn, TxnError> {
    let offset = r.position();
    let subs = r
        .vec(8, |r| {
            let op = r.i32()?;
            let at = r.position() + 4;
            Ok((op, r.buffer()?, at))
        })?
        .ok_or(TxnError::Invalid {
            offset,
            what: "multi with a null list".into(),
        })?;
    let allowed = |op: i32| {
        matches!(
            OpCode::from_i32(op),
            Some(
                OpCode::Create
                    | OpCode::Create2
                    | OpCode::CreateTtl
                    | OpCode::CreateContainer
                    | OpCode::Delete
                    | OpCode::DeleteContainer
                    | OpCode::SetData
                    | OpCode::Error
                    | OpCode::Check
            )
        )
    };
    let mut failed = false;
    for (op, data, at) in &subs {
        if !allowed(*op) {
            return Err(TxnError::Invalid {
                offset: *at - 8,
                what: format!("a multi cannot hold a sub-transaction of type {op}"),
            });
        }
        if data.is_none() {
            return Err(TxnError::Invalid {
                offset: *at,
                what: format!("sub-transaction of type {op} with null data"),
            });
        }
        failed |= *op == OpCode::Error as i32;
    }
    let mut txns = Vec::with_capacity(subs.len());
    let mut after_error = false;
    for (op, data, at) in subs {
        let data = data.unwrap_or_default();
        if failed && op != OpCode::Error as i32 {
            let err = if after_error { -2 } else { 0 };
            txns.push(ZkTxn::Error { err });
            continue;
        }
        after_error |= op == OpCode::Error as i32;
        txns.push(sub_txn(op, &data, at)?);
    }
    Ok(ZkTxn::Multi(txns))
}

fn digest(r: &mut Reader<'_>) -> Result<Option<TxnDigest>, TxnError> {
    // ZooKeeper reads a digest if one follows; a shorter tail is read as "no digest" and ignored.
    if r.remaining() < TXN_DIGEST_BYTES {
        return Ok(None);
    }
    Ok(Some(TxnDigest {
        version: r.i32()?,
        tree_digest: r.i64()?,
    }))
}

/// `CloseSessionTxn` (3.6+), or nothing (older logs, or `zookeeper.closeSessionTxn.enabled=false`), then
/// the digest if any.
fn close_session(body: &[u8]) -> Result<(ZkTxn, Option<TxnDigest>), TxnError> {
    if body.is_empty() {
        return Ok((ZkTxn::CloseSession { paths: None }, None));
    }
    let mut r = Reader::new(body);
    if let Ok(paths) = r.vec(4, |r| r.ustring()) {
        if r.remaining() == 0 || r.remaining() >= TXN_DIGEST_BYTES {
            return Ok((ZkTxn::CloseSession { paths }, digest(&mut r)?));
        }
    }
    // No CloseSessionTxn: what follows the header is the digest.
    let mut r = Reader::new(body);
    Ok((ZkTxn::CloseSession { paths: None }, digest(&mut r)?))
}

/// Decodes one transaction's bytes (what a log record's checksum covers).
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded, TxnError> {
    let mut r = Reader::new(bytes);
    let hdr = ZkTxnHeader {
        session_id: r.i64()?,
        cxid: r.i32()?,
        zxid: r.i64()?,
        time_ms: r.i64()?,
    };
    let txn_type = r.i32()?;
    let body_at = r.position();
    let op = OpCode::from_i32(txn_type);
    let (txn, digest) = match op {
        Some(OpCode::CreateSession) => (
            ZkTxn::CreateSession {
                timeout_ms: r.i32()?,
            },
            digest(&mut r)?,
        ),
        Some(OpCode::CloseSession) => close_session(&bytes[body_at..])?,
        Some(OpCode::Create) => match create(&mut r, OpCode::Create) {
            Ok(c) => (ZkTxn::Create(c), digest(&mut r)?),
            Err(TxnError::Decode(DecodeError::Truncated { .. })) => {
                let mut r = Reader::new(&bytes[body_at..]);
                (ZkTxn::Create(create_v0(&mut r)?), None)
            }
            Err(e) => return Err(e),
        },
        Some(o @ (OpCode::Create2 | OpCode::CreateTtl | OpCode::CreateContainer)) => {
            (ZkTxn::Create(create(&mut r, o)?), digest(&mut r)?)
        }
        Some(OpCode::Delete | OpCode::DeleteContainer) => (
            ZkTxn::Delete {
                path: path(&mut r)?,
            },
            digest(&mut r)?,
        ),
        Some(OpCode::SetData) => (set_data(&mut r)?, digest(&mut r)?),
        Some(OpCode::Reconfig) => {
            set_data(&mut r)?;
            (ZkTxn::Reconfig, digest(&mut r)?)
        }
        Some(OpCode::SetAcl) => (
            ZkTxn::SetAcl {
                path: path(&mut r)?,
                acl: acl(&mut r)?,
                version: r.i32()?,
            },
            digest(&mut r)?,
        ),
        Some(OpCode::Error) => (ZkTxn::Error { err: r.i32()? }, digest(&mut r)?),
        Some(OpCode::Check) => (check(&mut r)?, digest(&mut r)?),
        Some(OpCode::Multi) => (multi(&mut r)?, digest(&mut r)?),
        _ => {
            return Err(TxnError::Unknown {
                zxid: hdr.zxid,
                txn_type,
            })
        }
    };
    Ok(Decoded {
        txn_type,
        hdr,
        txn,
        digest,
    })
}
