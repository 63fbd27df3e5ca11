//! Reading entries back from the log while it runs: for a caller whose in-memory tail no longer holds
//! them (the Raft log store keeps only the recent tail; an older entry is asked for by a lagging
//! follower, or by anything that looks far back).
//!
//! `Wal::view` takes a consistent picture under the log's lock: every segment overlapping the range,
//! opened (an open file outlives the unlink of a later purge) with the byte length written so far.
//! `LogView::read` then reads and decodes the files without the lock, so the writer goes on meanwhile;
//! what it writes later lies past the recorded ends and is not seen. The bytes read were checked when
//! the log was recovered or written, and are checked again here (every batch's checksum): damage is
//! reported as `WalError::Corrupt` to this caller and does not stop the log.

use std::path::{Path, PathBuf};

use crate::disk::DiskFile;
use crate::error::WalError;
use crate::format::{Batch, BatchKind, SegmentHeader, SEGMENT_HEADER_BYTES};

/// One segment as `Wal::view` saw it.
pub(crate) struct ViewedSegment<F> {
    pub path: PathBuf,
    pub file: F,
    pub first_index: u64,
    /// Bytes written to the segment when the view was taken (header included).
    pub end: u64,
    pub salt: u64,
    /// The segment's readers' token (`Segment::readers`): held while this view may read the file.
    pub _readers: std::sync::Arc<()>,
}

/// The segments holding entries `from..=to` at one moment; read them with [`LogView::read`].
pub struct LogView<F> {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) segments: Vec<ViewedSegment<F>>,
}

impl<F: DiskFile> LogView<F> {
    /// Entries `from..=to`, consecutive and oldest first: every one of them, or an error.
    pub fn read(self) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        let (from, to) = (self.from, self.to);
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for segment in self.segments {
            read_segment(&segment, from, to, &mut out)?;
        }
        let expected = to.checked_sub(from).map_or(0, |n| n + 1);
        let consecutive = out
            .iter()
            .enumerate()
            .all(|(k, (index, _))| *index == from + k as u64);
        if out.len() as u64 != expected || !consecutive {
            return Err(WalError::ReadShort {
                from,
                to,
                found: out.len() as u64,
            });
        }
        Ok(out)
    }
}

fn corrupt(segment: &Path, offset: usize, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: segment.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// Appends the entries of `segment` within `from..=to` to `out` (whose entries, from earlier segments,
/// all come before this one's).
fn read_segment<F: DiskFile>(
    segment: &ViewedSegment<F>,
    from: u64,
    to: u64,
    out: &mut Vec<(u64, Vec<u8>)>,
) -> Result<(), WalError> {
    let path = &segment.path;
    let len = usize::try_from(segment.end).map_err(|_| WalError::TooLarge {
        what: format!("segment {} of {} bytes", path.display(), segment.end),
    })?;
    let mut buf = vec![0u8; len];
    segment
        .file
        .read_at(0, &mut buf)
        .map_err(WalError::at("reading", path))?;
    let header = SegmentHeader::decode(&buf).map_err(|e| {
        corrupt(
            path,
            0,
            format!("the segment header does not decode: {e:?}"),
        )
    })?;
    if header.first_index != segment.first_index || header.salt != segment.salt {
        return Err(corrupt(
            path,
            0,
            "the segment header changed since the log was opened",
        ));
    }
    // Where this segment's entries start in `out`: a truncate batch drops from there on.
    let base = out.len();
    let mut at = SEGMENT_HEADER_BYTES;
    while at < len {
        let batch = Batch::decode(&buf[at..len], segment.salt)
            .map_err(|e| corrupt(path, at, format!("a written batch does not decode: {e:?}")))?;
        match batch.kind {
            BatchKind::Entries => {
                out.extend(
                    batch
                        .records()
                        .filter(|(index, _)| (from..=to).contains(index))
                        .map(|(index, bytes)| (index, bytes.to_vec())),
                );
            }
            BatchKind::Truncate => {
                let keep = out[base..].partition_point(|(index, _)| *index < batch.first_index);
                out.truncate(base + keep);
            }
        }
        at += batch.len();
    }
    Ok(())
}
