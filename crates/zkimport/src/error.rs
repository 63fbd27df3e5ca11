//! Why a ZooKeeper data directory could not be imported. Every error about file content names the file
//! and the byte offset where the problem is.

use oxkeeper_proto::DecodeError;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no ZooKeeper snapshot or transaction log (expected version-2/snapshot.* and log.* files)", dir.display())]
    NoData { dir: PathBuf },
    #[error("{}: transaction logs but no snapshot; ZooKeeper refuses to start from this too", dir.display())]
    NoSnapshot { dir: PathBuf },
    #[error("{}: no usable snapshot: {}", dir.display(), reasons.join("; "))]
    NoValidSnapshot { dir: PathBuf, reasons: Vec<String> },
    #[error("{}: the snapshot is compressed ({method}); decompress it first (gunzip for .gz, snappy-java's framing for .snappy) so that it is named snapshot.<zxid>", file.display())]
    Compressed { file: PathBuf, method: String },
    #[error("{}: offset {offset}: {what}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{}: offset {offset}: checksum mismatch: the file says {stored:#x}, the data gives {computed:#x}", file.display())]
    Checksum {
        file: PathBuf,
        offset: u64,
        stored: u64,
        computed: u64,
    },
    #[error("{}: offset {offset}: transaction {zxid:#x} has type {txn_type}, which the import does not know", file.display())]
    UnknownTxn {
        file: PathBuf,
        offset: u64,
        zxid: i64,
        txn_type: i32,
    },
    #[error("{}: offset {offset}: transaction {zxid:#x}: {what}", file.display())]
    Replay {
        file: PathBuf,
        offset: u64,
        zxid: i64,
        what: String,
    },
}

impl ImportError {
    pub(crate) fn corrupt(file: &Path, offset: u64, what: impl Into<String>) -> Self {
        ImportError::Corrupt {
            file: file.to_path_buf(),
            offset,
            what: what.into(),
        }
    }

    /// A jute decoding error of a reader whose position 0 is at file offset `base`.
    pub(crate) fn decode(file: &Path, base: u64, e: DecodeError) -> Self {
        Self::corrupt(file, base + decode_offset(&e) as u64, describe(&e))
    }
}

/// What a jute decoding error means, without its offset (the caller says where).
pub(crate) fn describe(e: &DecodeError) -> String {
    match e {
        DecodeError::Truncated { needed, .. } => {
            format!("the data ends early ({needed} more byte(s) needed)")
        }
        DecodeError::BadLength { len, .. } => format!("invalid length {len}"),
        DecodeError::BadUtf8 { .. } => "a string is not valid UTF-8".into(),
        DecodeError::BadValue { what, value } => format!("unknown {what} {value}"),
        DecodeError::Trailing(n) => format!("{n} unexpected trailing byte(s)"),
    }
}

/// Where in its buffer a jute decoding error happened.
pub(crate) fn decode_offset(e: &DecodeError) -> usize {
    match e {
        DecodeError::Truncated { offset, .. }
        | DecodeError::BadLength { offset, .. }
        | DecodeError::BadUtf8 { offset } => *offset,
        DecodeError::BadValue { .. } | DecodeError::Trailing(_) => 0,
    }
}
