//! ZooKeeper's transaction log files (`FileTxnLog`): `FileHeader` ("ZKLG"), then records of
//! `{long Adler-32 of the bytes; int length; bytes; byte 'B'}` up to a zero length, which is where the
//! preallocated zero padding starts. As `FileTxnIterator` does, a record cut short (the file ends inside
//! it, or its end-of-record byte is missing: a torn last write) ends the file quietly; a complete record
//! whose checksum is wrong is an error.

use crate::adler32::adler32;
use crate::error::ImportError;
use crate::txn::{self, Decoded, TxnError};
use oxkeeper_proto::Reader;
use std::path::Path;

/// `FileTxnLog.TXNLOG_MAGIC`: "ZKLG".
pub(crate) const LOG_MAGIC: i32 = 0x5a4b_4c47;
const HEADER_BYTES: usize = 16;
/// `Util.writeTxnBytes`' end-of-record byte.
const END_OF_RECORD: u8 = b'B';

/// One record with its file offset (where its checksum starts).
#[derive(Debug)]
pub(crate) struct LogRecord {
    pub offset: u64,
    pub txn: Decoded,
}

/// How the records of a file ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogEnd {
    /// Right after the last record.
    Eof,
    /// Zero padding from `offset` on (a zero record length), with `stray` non-zero bytes in it.
    Padding { offset: u64, stray: usize },
    /// The record at `offset` was cut short.
    Torn { offset: u64, reason: &'static str },
}

#[derive(Debug)]
pub(crate) struct LogFile {
    pub records: Vec<LogRecord>,
    pub end: LogEnd,
}

fn torn(offset: usize, reason: &'static str) -> LogEnd {
    LogEnd::Torn {
        offset: offset as u64,
        reason,
    }
}

/// Reads a log file; `None` for an empty file (ZooKeeper deletes an empty last log).
pub(crate) fn parse(file: &Path, bytes: &[u8]) -> Result<Option<LogFile>, ImportError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut r = Reader::new(bytes);
    let decode = |e| ImportError::decode(file, 0, e);
    if bytes.len() < HEADER_BYTES {
        return Err(ImportError::corrupt(
            file,
            0,
            format!(
                "{} byte(s): too short for a transaction log header",
                bytes.len()
            ),
        ));
    }
    let magic = r.i32().map_err(decode)?;
    if magic != LOG_MAGIC {
        return Err(ImportError::corrupt(
            file,
            0,
            format!("not a ZooKeeper transaction log (magic {magic:#010x}, expected \"ZKLG\")"),
        ));
    }
    r.i32().map_err(decode)?;
    r.i64().map_err(decode)?;

    let mut records = Vec::new();
    let end = loop {
        let offset = r.position();
        if r.remaining() == 0 {
            break LogEnd::Eof;
        }
        if r.remaining() < 12 {
            break if bytes[offset..].iter().all(|b| *b == 0) {
                LogEnd::Padding {
                    offset: offset as u64,
                    stray: 0,
                }
            } else {
                torn(offset, "the file ends inside the record's header")
            };
        }
        let stored = r.i64().map_err(decode)? as u64;
        let len = r.i32().map_err(decode)?;
        if len == 0 {
            break LogEnd::Padding {
                offset: offset as u64,
                stray: bytes[offset..].iter().filter(|b| **b != 0).count(),
            };
        }
        let Ok(len) = usize::try_from(len) else {
            return Err(ImportError::corrupt(
                file,
                offset as u64 + 8,
                format!("invalid record length {len}"),
            ));
        };
        let Ok(data) = r.bytes(len) else {
            break torn(offset, "the file ends inside the record");
        };
        match r.u8() {
            Ok(END_OF_RECORD) => {}
            Ok(_) => break torn(offset, "the record has no end-of-record byte"),
            Err(_) => {
                break torn(
                    offset,
                    "the file ends before the record's end-of-record byte",
                )
            }
        }
        let computed = adler32(data);
        if stored != computed {
            return Err(ImportError::Checksum {
                file: file.to_path_buf(),
                offset: offset as u64,
                stored,
                computed,
            });
        }
        let base = offset as u64 + 12;
        let txn = txn::decode(data).map_err(|e| match e {
            TxnError::Decode(d) => ImportError::decode(file, base, d),
            TxnError::Unknown { zxid, txn_type } => ImportError::UnknownTxn {
                file: file.to_path_buf(),
                offset: offset as u64,
                zxid,
                txn_type,
            },
            TxnError::Invalid { offset, what } => {
                ImportError::corrupt(file, base + offset as u64, what)
            }
        })?;
        records.push(LogRecord {
            offset: offset as u64,
            txn,
        });
    };
    Ok(Some(LogFile { records, end }))
}
