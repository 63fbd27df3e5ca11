//! Reading the log back at startup: scan the segments in order, check every batch, cut a torn tail.
//!
//! The rule that separates a crash from damage: only the last batch of the log can be unsynced (see
//! `wal`). So an invalid region at the very end, with no valid batch after it, is a torn or unsynced
//! write: it was never acknowledged and is zeroed. Anything else invalid (a valid batch after it, a
//! later segment, a gap in the indices) is damage to durable data: `WalError::Corrupt`, never repaired.
//!
//! With forceSync=no (`WalOptions::sync_each_batch` off) every batch written since the last sync of
//! the last segment may be unsynced, so a power loss may keep a later one and lose an earlier one:
//! `recover(.., unsynced_batches: true)` cuts the last segment at its first invalid batch, whatever
//! follows. Earlier segments were synced before the next one was created and stay strict.

use std::path::{Path, PathBuf};

use crate::disk::{Disk, DiskFile};
use crate::error::WalError;
use crate::format::{
    self, Batch, BatchError, BatchKind, HeaderError, SegmentHeader, BATCH_MAGIC, FORMAT_VERSION,
    SEGMENT_HEADER_BYTES,
};
use crate::wal::{Recovered, Segment};

/// The largest zero-filling write when cutting a torn tail.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// The segments found (the last one open for appending) and their entries.
pub(crate) type Recovery<F> = (Vec<Segment<F>>, Recovered);

pub(crate) fn recover<D: Disk>(
    disk: &D,
    dir: &Path,
    unsynced_batches: bool,
) -> Result<Recovery<D::File>, WalError> {
    disk.create_dir_all(dir)
        .map_err(WalError::at("creating directory", dir))?;
    let mut names: Vec<(u64, PathBuf)> = disk
        .list(dir)
        .map_err(WalError::at("listing", dir))?
        .into_iter()
        .filter_map(|path| {
            let index = format::parse_segment_file_name(path.file_name()?.to_str()?)?;
            Some((index, path))
        })
        .collect();
    names.sort();
    let mut scan = Scan {
        disk,
        dir,
        segments: Vec::new(),
        entries: Vec::new(),
        truncated_tail: None,
        unsynced_batches,
    };
    let count = names.len();
    for (k, (first_index, path)) in names.into_iter().enumerate() {
        scan.segment(first_index, path, k + 1 == count)?;
    }
    let recovered = Recovered {
        first_index: scan.entries.first().map_or(0, |(index, _)| *index),
        entries: scan.entries,
        truncated_tail: scan.truncated_tail,
    };
    Ok((scan.segments, recovered))
}

struct Scan<'a, D: Disk> {
    disk: &'a D,
    dir: &'a Path,
    segments: Vec<Segment<D::File>>,
    entries: Vec<(u64, Vec<u8>)>,
    truncated_tail: Option<(PathBuf, u64)>,
    /// The last segment may hold several unsynced batches (forceSync=no).
    unsynced_batches: bool,
}

fn corrupt(file: &Path, offset: usize, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: file.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

fn unsupported(file: &Path, offset: usize, version: u16) -> WalError {
    WalError::UnsupportedVersion {
        file: file.to_path_buf(),
        offset: offset as u64,
        version,
        supported: FORMAT_VERSION,
    }
}

impl<D: Disk> Scan<'_, D> {
    fn next_index(&self) -> Option<u64> {
        self.entries.last().map(|(index, _)| index + 1)
    }

    fn segment(&mut self, name_index: u64, path: PathBuf, is_last: bool) -> Result<(), WalError> {
        let mut file = self
            .disk
            .open(&path, false)
            .map_err(WalError::at("opening", &path))?;
        let len = file
            .len()
            .map_err(WalError::at("reading the length of", &path))?;
        let len = usize::try_from(len).map_err(|_| WalError::TooLarge {
            what: format!("segment {} of {len} bytes", path.display()),
        })?;
        let mut buf = vec![0u8; len];
        file.read_at(0, &mut buf)
            .map_err(WalError::at("reading", &path))?;

        let header = match SegmentHeader::decode(&buf) {
            Ok(header) => header,
            Err(HeaderError::UnsupportedVersion(version)) => {
                return Err(unsupported(&path, 8, version))
            }
            Err(HeaderError::Damaged(why)) => {
                // The header is synced before any batch is written: with only zeros after it, this is
                // a segment whose creation a crash interrupted, and it never held an entry.
                if is_last && last_nonzero(&buf, SEGMENT_HEADER_BYTES.min(len)).is_none() {
                    if last_nonzero(&buf, 0).is_some() {
                        self.truncated_tail = Some((path.clone(), 0));
                    }
                    drop(file);
                    return self.remove(&path);
                }
                return Err(corrupt(
                    &path,
                    0,
                    format!("the segment header is damaged ({why})"),
                ));
            }
        };
        if header.first_index != name_index {
            return Err(corrupt(
                &path,
                16,
                format!(
                    "the segment header says its first entry is {} but the file name says {name_index}",
                    header.first_index
                ),
            ));
        }
        if let Some(next) = self.next_index() {
            if name_index != next {
                return Err(corrupt(
                    &path,
                    0,
                    format!(
                        "the segment starts at entry {name_index} but the previous segment ends at entry {}: \
                         entries are missing or repeated",
                        next - 1
                    ),
                ));
            }
        }

        let entries_before = self.entries.len();
        let mut at = SEGMENT_HEADER_BYTES.min(len);
        let mut invalid = None;
        while at < len {
            match Batch::decode(&buf[at..], header.salt) {
                Ok(batch) => {
                    self.take(&batch, name_index, entries_before, &path, at)?;
                    at += batch.len();
                }
                Err(BatchError::UnsupportedVersion(version)) => {
                    return Err(unsupported(&path, at, version))
                }
                Err(BatchError::Malformed(why)) => return Err(corrupt(&path, at, why)),
                Err(BatchError::Invalid(why)) => {
                    invalid = Some(why);
                    break;
                }
            }
        }

        let garbage_end = invalid
            .and_then(|_| last_nonzero(&buf, at))
            .map(|last| last + 1);
        if let (Some(why), Some(garbage_end)) = (invalid, garbage_end) {
            if !is_last {
                return Err(corrupt(
                    &path,
                    at,
                    format!(
                        "{why}, in a segment that is not the last one (each segment was durable before \
                         the next one was created)"
                    ),
                ));
            }
            match find_batch(&buf, at + 1..garbage_end, header.salt) {
                Some(valid) if self.unsynced_batches => {
                    tracing::warn!(file = %path.display(), offset = at, reason = why, valid_batch_at = valid,
                        "forceSync=no: cutting off the unsynced end of the write-ahead log from its \
                         first damaged batch (writes acknowledged after the last sync are lost)");
                }
                Some(valid) => {
                    return Err(corrupt(
                        &path,
                        at,
                        format!(
                            "{why}, but a valid batch follows at offset {valid}: a durable batch is \
                             damaged (if this member ran with forceSync=no when it stopped, its last \
                             batches were not synced: start it once with forceSync=no to cut them off)"
                        ),
                    ));
                }
                None => {
                    tracing::warn!(file = %path.display(), offset = at, reason = why,
                        "cutting off a torn or unsynced batch at the end of the write-ahead log");
                }
            }
            self.truncated_tail = Some((path.clone(), at as u64));
        }

        if self.entries.len() == entries_before {
            if !is_last {
                return Err(corrupt(
                    &path,
                    SEGMENT_HEADER_BYTES,
                    "the segment holds no entries",
                ));
            }
            // Created, but its first batch never became durable.
            drop(file);
            return self.remove(&path);
        }
        if let Some(garbage_end) = garbage_end {
            zero(&mut file, &path, at, garbage_end)?;
        }
        let (last_index, _) = self.entries.last().expect("this segment added entries");
        self.segments.push(Segment {
            path,
            first_index: name_index,
            last_index: *last_index,
            salt: header.salt,
            end: at as u64,
            // A torn tail was zeroed above.
            dirty_end: at as u64,
            zeroed_end: at as u64,
            len: len as u64,
            file: is_last.then_some(file),
            direct_writes: false,
            readers: std::sync::Arc::default(),
        });
        Ok(())
    }

    /// Applies a valid batch at offset `at` of a segment whose entries start at `entries_before`.
    fn take(
        &mut self,
        batch: &Batch<'_>,
        name_index: u64,
        entries_before: usize,
        path: &Path,
        at: usize,
    ) -> Result<(), WalError> {
        match batch.kind {
            BatchKind::Entries => {
                let expected = self.next_index().unwrap_or(name_index);
                if batch.first_index != expected {
                    return Err(corrupt(
                        path,
                        at,
                        format!(
                            "the batch starts at entry {} but entry {expected} was expected: entries are \
                             missing or repeated",
                            batch.first_index
                        ),
                    ));
                }
                self.entries.extend(
                    batch
                        .records()
                        .map(|(index, bytes)| (index, bytes.to_vec())),
                );
            }
            BatchKind::Truncate => {
                let from = batch.first_index;
                // A truncate batch lands in the segment that keeps the entry before `from`.
                let in_segment = self.entries.len() > entries_before
                    && from > name_index
                    && self.next_index().is_some_and(|next| from <= next);
                if !in_segment {
                    return Err(corrupt(
                        path,
                        at,
                        format!("a truncate batch drops entries from {from}, outside this segment"),
                    ));
                }
                let first = self.entries[0].0;
                let keep = usize::try_from(from - first).expect("fewer entries than memory holds");
                self.entries.truncate(keep);
            }
        }
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> Result<(), WalError> {
        tracing::info!(file = %path.display(), "removing a write-ahead log segment that never held a durable entry");
        self.disk
            .remove(path)
            .map_err(WalError::fatal_at("removing", path))?;
        self.disk
            .sync_dir(self.dir)
            .map_err(WalError::fatal_at("syncing directory", self.dir))
    }
}

/// Offset of the last non-zero byte at or after `from`.
fn last_nonzero(buf: &[u8], from: usize) -> Option<usize> {
    const CHUNK: usize = 4096;
    let tail = &buf[from..];
    let mut end = tail.len();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &tail[start..end];
        // OR-folding has no early exit, so it vectorizes; a 64 MiB zero tail takes milliseconds.
        if chunk.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            let at = chunk
                .iter()
                .rposition(|&b| b != 0)
                .expect("the chunk has a non-zero byte");
            return Some(from + start + at);
        }
        end = start;
    }
    None
}

/// Offset of the first batch starting in `starts` whose checksum holds. It may end past `starts`: a
/// batch whose last bytes are zeros ends after the last non-zero byte.
fn find_batch(buf: &[u8], starts: std::ops::Range<usize>, salt: u64) -> Option<usize> {
    starts.into_iter().find(|&at| {
        buf[at..].starts_with(&BATCH_MAGIC)
            && !matches!(Batch::decode(&buf[at..], salt), Err(BatchError::Invalid(_)))
    })
}

/// Overwrites `[from, to)` with zeros and syncs, so a later append there starts clean.
fn zero<F: DiskFile>(file: &mut F, path: &Path, from: usize, to: usize) -> Result<(), WalError> {
    let zeros = vec![0u8; (to - from).min(ZERO_CHUNK_BYTES)];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len());
        file.write_at(at as u64, &zeros[..n])
            .map_err(WalError::at("cutting off the torn tail of", path))?;
        at += n;
    }
    file.sync_data()
        .map_err(WalError::fatal_at("syncing", path))
}
