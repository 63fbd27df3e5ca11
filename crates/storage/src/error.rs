//! `WalError`, the one error type of this crate.
//!
//! It keeps the distinctions the server must act on differently: `NoSpace` (ENOSPC on a write,
//! preallocation or create, which left the log as it was: wait for space and retry; `WalWriter` does),
//! `Io` (EIO, and any error from fdatasync, ENOSPC included: the kernel may have dropped dirty pages, so
//! fail-stop), and `Corrupt` (refuse to start, naming the file and offset). It is `Clone` so one failed
//! batch can fail every submission it carried.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An error of the write-ahead log or of the small metadata files.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// The device is full (ENOSPC or EDQUOT) while `op` on `path`: a write, a preallocation or a create,
    /// never a sync. Nothing was acknowledged and the log is as it was before the call, so the same call
    /// may be retried once space returns. Until a later append or truncation succeeds, a power loss may
    /// still bring the failed batch back, as it could for a call the crash interrupted.
    #[error("no space left on device while {op} {}: {source}", path.display())]
    NoSpace {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    /// Any other I/O error while `op` on `path`, and every error of fdatasync (ENOSPC included): after a
    /// failed fdatasync the kernel may have dropped the unsynced pages, so the log stops for good.
    #[error("I/O error while {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    /// Data that was durable is damaged: the log cannot be trusted past `offset` of `file`.
    #[error(
        "write-ahead log is corrupt: {} at byte offset {offset}: {reason}. Entries that were already \
         durable are damaged, so this member refuses to start rather than lose acknowledged writes. \
         To recover, restore this member's data directory from a backup, or move it aside and let \
         the member catch up from the rest of the ensemble",
        file.display()
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A file written in a format version this build does not read (written by a newer oxkeeper).
    #[error(
        "{} at byte offset {offset} is in write-ahead log format version {version}, but this build \
         reads only version {supported}; run the oxkeeper release that wrote it",
        file.display()
    )]
    UnsupportedVersion {
        file: PathBuf,
        offset: u64,
        version: u16,
        supported: u16,
    },

    /// The caller appended an entry whose index does not follow the previous one.
    #[error("log entries must be consecutive: expected index {expected}, got {got}")]
    NotConsecutive { expected: u64, got: u64 },

    /// Entries asked of the log (`Wal::view`) that it does not hold: purged, or not written yet.
    #[error("entries {from}..={to} are not in the write-ahead log, which holds {}", match (first, last) {
        (Some(f), Some(l)) => format!("entries {f}..={l}"),
        _ => "no entries".to_owned(),
    })]
    NotInLog {
        from: u64,
        to: u64,
        first: Option<u64>,
        last: Option<u64>,
    },

    /// Entries read back through a view (`LogView::read`) were not all in the files the view covered,
    /// although the log's own index said they were: the files changed under the log, or a bug. Only the
    /// read fails; the log goes on.
    #[error(
        "reading entries {from}..={to} back from the write-ahead log found {found} of them in the \
         segments that should hold them all (were the log's files changed by another process?)"
    )]
    ReadShort { from: u64, to: u64, found: u64 },

    /// An entry or a batch does not fit the format's 32-bit lengths, or the index space is exhausted.
    #[error("too large for the write-ahead log: {what}")]
    TooLarge { what: String },

    /// An earlier error stopped the log; it takes no more writes until the process restarts.
    #[error("write-ahead log stopped after an earlier error: {0}")]
    Stopped(Box<WalError>),

    /// The `WalWriter` has shut down (or its thread died) and no longer takes requests.
    #[error("the write-ahead log writer has shut down")]
    Closed,

    /// A check of the log's own invariants failed; nothing is acknowledged past this point.
    #[error("write-ahead log invariant violated: {0}")]
    Invariant(&'static str),
}

impl WalError {
    /// Maps an `io::Error` from `op` on `path`, keeping ENOSPC apart from the rest.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> WalError {
        let path = path.to_path_buf();
        let source = Arc::new(source);
        if is_no_space(&source) {
            WalError::NoSpace { op, path, source }
        } else {
            WalError::Io { op, path, source }
        }
    }

    /// `|e| WalError::io(op, path, e)`, for `map_err`.
    pub(crate) fn at<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> WalError + 'a {
        move |e| WalError::io(op, path, e)
    }

    /// Maps an `io::Error` from an operation that may not be retried whatever the cause (fdatasync, a
    /// directory sync, a removal): always `Io`, never `NoSpace`.
    pub(crate) fn fatal_at<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> WalError + 'a {
        move |source| WalError::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// True for `NoSpace`: the call failed for lack of space, changed nothing that matters, and may be
    /// retried. A log stopped by some other error (`Stopped`) is never retryable.
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::NoSpace { .. })
    }

    /// True when the log found damaged durable data (also for an unknown format version).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            WalError::Corrupt { .. } | WalError::UnsupportedVersion { .. }
        )
    }

    /// The OS error number behind this error, if any (e.g. `libc::EIO`).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            WalError::NoSpace { source, .. } | WalError::Io { source, .. } => source.raw_os_error(),
            WalError::Stopped(cause) => cause.raw_os_error(),
            _ => None,
        }
    }
}

pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_no_space_and_eio_to_io() {
        let path = Path::new("/x/log.0000000000000001");
        let e = WalError::io("writing", path, io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, WalError::NoSpace { .. }));
        assert!(e.is_no_space());
        let e = WalError::io("syncing", path, io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, WalError::Io { .. }));
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert!(!e.is_no_space());
        let stopped = WalError::Stopped(Box::new(e));
        assert_eq!(stopped.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn enospc_from_a_sync_is_fatal_not_no_space() {
        let path = Path::new("/x/log.0000000000000001");
        let e = WalError::fatal_at("syncing", path)(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, WalError::Io { .. }), "{e}");
        assert!(!e.is_no_space());
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn corrupt_names_file_and_offset_and_what_to_do() {
        let e = WalError::Corrupt {
            file: PathBuf::from("/data/log.0000000000000001"),
            offset: 4096,
            reason: "bad checksum".into(),
        };
        let text = e.to_string();
        assert!(text.contains("/data/log.0000000000000001"), "{text}");
        assert!(text.contains("offset 4096"), "{text}");
        assert!(text.contains("restore"), "{text}");
    }
}
