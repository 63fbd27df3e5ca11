//! `Wal`: the write-ahead log of opaque entries by `u64` index, in preallocated segment files.
//!
//! Synchronous and single-threaded: every call returns when its effect is durable (one fdatasync per
//! append). Group commit across callers is `WalWriter`'s job, the byte format is in `format`, and
//! reading the log back at startup is in `recovery`. Knows nothing of Raft or ZooKeeper, and keeps no
//! entries in memory: the caller keeps the tail it needs.
//!
//! Invariant kept for recovery: at most one batch is ever written but not yet synced, and it is the
//! last one. So a damaged batch that is not last was durable, which is corruption, not a torn write.
//!
//! Out of space (ENOSPC on a write, a preallocation or a create) a call fails with `WalError::NoSpace`
//! and leaves the log as it was, so the same call can be retried when space returns (`WalWriter`
//! does). A write cut short may leave bytes past the end of the last segment: they are zeroed before
//! the next batch is written there, and before a roll to a new segment, and made durable with it, so
//! they never sit before a durable batch. A half-made new segment is removed again. Any other
//! failure, and every failed fdatasync, stops the log for good.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::disk::{shrink_gently, Disk, DiskFile};
use crate::error::WalError;
use crate::format::{self, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::reader::{LogView, ViewedSegment};
use crate::recovery;

mod spare;
#[cfg(test)]
mod tests;

/// Sizes of segments and of the batches `WalWriter` forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Each segment file is preallocated to this size (ZooKeeper's `preAllocSize`); a new segment
    /// starts when the next batch does not fit. A batch larger than this gets a segment of its own.
    pub segment_bytes: u64,
    /// `WalWriter` merges queued submissions into one batch up to this many bytes of entries
    /// (a single larger submission is still written whole, as one batch).
    pub batch_bytes_max: usize,
    /// ... and up to this many entries.
    pub batch_entries_max: usize,
    /// While the device is full, `WalWriter` retries the held batch after this delay, doubling it up
    /// to `no_space_retry_max`.
    pub no_space_retry_min: Duration,
    pub no_space_retry_max: Duration,
    /// ZooKeeper's `forceSync`. `true` (the default): every batch is fdatasynced before it is
    /// acknowledged. `false` (`forceSync=no`, standalone only): a batch is acknowledged once written
    /// to the file (it survives a crash of the process, not a power loss or a kernel crash); the log is
    /// synced when a segment fills, by `WalWriter` `lazy_sync_after` after the first unsynced write,
    /// and at shutdown. Truncations are always synced.
    pub sync_each_batch: bool,
    /// With `sync_each_batch` off: how long written entries may stay unsynced.
    pub lazy_sync_after: Duration,
    /// How far ahead of the last batch the segment is overwritten with zeros (0: never). A segment is
    /// preallocated (`posix_fallocate`), which on ext4 and XFS leaves unwritten extents: the first write
    /// into one changes the file's block map, so that batch's fdatasync must also commit the file
    /// system's journal (about twice the time of an fdatasync that only flushes data). Zeroing ahead
    /// in chunks moves that cost to one batch per chunk: every other batch lands on written blocks of
    /// a file whose size does not change, and its fdatasync flushes only the data. The default, 256 KiB:
    /// whatever the chunk, the mean time per batch is the same (the same bytes are written once); a larger
    /// chunk makes its one batch slower (measured here, with 2 KB batches: 0.35 ms for 256 KiB, 0.77 ms and
    /// up to 2.2 ms for 1 MiB, against ~0.1 ms for the others; set at 32 sessions, p99 1.29 -> 1.15 ms).
    pub zero_ahead_bytes: u64,
    /// A purged or truncated segment leaves the log at once (renamed `log.<index>.<salt>.purged`, the
    /// rename durable), and its file is unlinked on a thread of its own (`true`, the default) or on the
    /// caller's (`false`). Unlinking a written 64 MiB segment takes ~13 ms here (the kernel drops its
    /// cached pages and frees its blocks): on the log's thread, every write queued behind a purge waited
    /// for it. Files left by a crash are unlinked at the next `open`.
    pub unlink_purged_in_background: bool,
    /// Segments are written around the page cache where the file system allows it (`Disk::open_log`:
    /// O_DIRECT on `RealDisk`), `true` by default: an fdatasync then only flushes the device's cache
    /// (session 38: set at 32 sessions +7%, create +5%; see `disk::DirectWrites`).
    pub direct_writes: bool,
    /// The next segment is made ready on a thread of its own while the log fills the current one:
    /// preallocated and overwritten with zeros through its whole length, durably, so that no batch in it
    /// changes the file's block map (`wal::spare`). `true` by default; `false` creates every segment at
    /// its roll (and zeroes it ahead, `zero_ahead_bytes`), on the caller's thread only.
    pub prepare_segments: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            batch_bytes_max: 1 << 20,
            batch_entries_max: 4096,
            no_space_retry_min: Duration::from_millis(100),
            no_space_retry_max: Duration::from_secs(1),
            sync_each_batch: true,
            lazy_sync_after: Duration::from_secs(1),
            zero_ahead_bytes: 256 << 10,
            unlink_purged_in_background: true,
            direct_writes: true,
            prepare_segments: true,
        }
    }
}

/// What `Wal::open` found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Index of `entries[0]`: the first entry still in the log after purges. 0 when `entries` is empty.
    pub first_index: u64,
    /// Every entry in the log, consecutive, oldest first.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Where a torn or unsynced last batch was cut off: segment file and byte offset. Nothing cut off
    /// was ever acknowledged. `None` when the log ended cleanly.
    pub truncated_tail: Option<(PathBuf, u64)>,
}

impl Recovered {
    pub fn last_index(&self) -> Option<u64> {
        self.entries.last().map(|(index, _)| *index)
    }
}

/// One segment file. Only the last segment keeps its file open.
pub(crate) struct Segment<F> {
    pub path: PathBuf,
    /// The index in the file name: its first entry.
    pub first_index: u64,
    /// Its last live entry (later ones may have been dropped by a truncate batch).
    pub last_index: u64,
    pub salt: u64,
    /// Byte offset where the next batch goes.
    pub end: u64,
    /// Bytes in `end..dirty_end` may hold what a write that failed for lack of space left behind
    /// (unsynced); they are zeroed before anything durable follows them. Equal to `end` otherwise, and
    /// always in every segment but the last.
    pub dirty_end: u64,
    /// Bytes before this offset have been written (with entries or with zeros) by this process or
    /// before: a batch written there does not change the file's block map. Never below `end`.
    pub zeroed_end: u64,
    /// The file's length (its preallocation): zeroing ahead stops there.
    pub len: u64,
    pub file: Option<F>,
    /// `file` is (re)opened with `Disk::open_log` (`WalOptions::direct_writes`), not `Disk::open`.
    pub direct_writes: bool,
    /// Held by every `LogView` that opened the file as well: a purged file with views alive is not
    /// shrunk under them (`shrink_gently`), only unlinked.
    pub readers: Arc<()>,
}

impl<F> Segment<F> {
    /// A segment just made, with its header and no entry, `len` bytes long, written (with zeros, or its
    /// header) up to `zeroed_end`.
    fn fresh(
        path: PathBuf,
        first_index: u64,
        salt: u64,
        (len, zeroed_end): (u64, u64),
        file: F,
        direct_writes: bool,
    ) -> Self {
        let end = SEGMENT_HEADER_BYTES as u64;
        Segment {
            path,
            first_index,
            last_index: first_index,
            salt,
            end,
            dirty_end: end,
            zeroed_end: zeroed_end.max(end),
            len,
            file: Some(file),
            direct_writes,
            readers: Arc::default(),
        }
    }
}

/// The write-ahead log. See the module docs.
pub struct Wal<D: Disk> {
    disk: D,
    dir: PathBuf,
    opts: WalOptions,
    /// Oldest first; every segment holds at least one live entry.
    segments: Vec<Segment<D::File>>,
    /// The last index known to be on disk: advanced only after a successful fdatasync. Behind
    /// `last_index` only between `append`s with `WalOptions::sync_each_batch` off.
    synced_index: Option<u64>,
    /// The error that stopped the log. After a failed write or fdatasync the state of the file is
    /// unknown (the kernel may have dropped dirty pages after EIO), so no later write may be
    /// acknowledged. ENOSPC (`WalError::NoSpace`) does not stop it: the failed call left the segment
    /// list and `end` as they were, and a retry writes at the same offset.
    stopped: Option<WalError>,
    /// Scratch space for encoding one batch.
    buf: Vec<u8>,
    /// The thread unlinking purged segment files (`WalOptions::unlink_purged_in_background`), started at
    /// the first purge.
    unlinker: Option<Unlinker>,
    /// The thread preparing the next segment (`WalOptions::prepare_segments`), started at the first write
    /// (`preparer_started`: once, whether it could start or not).
    preparer: Option<spare::Preparer<D::File>>,
    preparer_started: bool,
}

/// Unlinks the files it is sent, in order, until its sender is dropped: each first shrunk a step at a
/// time (`shrink_gently`).
struct Unlinker {
    files: mpsc::Sender<Purged>,
    /// Set when the log is dropped: what is left is unlinked at once.
    hurry: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl<D: Disk> Drop for Wal<D> {
    /// Waits for the files already purged to be unlinked (at once now, not gently).
    fn drop(&mut self) {
        if let Some(Unlinker {
            files,
            hurry,
            thread,
        }) = self.unlinker.take()
        {
            hurry.store(true, Ordering::Relaxed);
            drop(files);
            let _ = thread.join();
        }
    }
}

/// The name a purged segment file takes: no segment's (recovery skips it), unique (a segment of the
/// same first index may be truncated again before the first is unlinked).
fn purged_path(segment: &Path, salt: u64) -> PathBuf {
    let mut name = segment.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{salt:016x}{PURGED_SUFFIX}"));
    segment.with_file_name(name)
}

const PURGED_SUFFIX: &str = ".purged";

/// A purged segment file to unlink, with its readers' token (`Segment::readers`).
type Purged = (PathBuf, Arc<()>);

/// Whether `path` names a purged segment file (`purged_path`).
fn is_purged(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(format::SEGMENT_PREFIX) && n.ends_with(PURGED_SUFFIX))
}

impl<D: Disk> Wal<D> {
    /// Opens (creating if needed) the log in `dir`, recovering what is there: a torn or unsynced last
    /// batch is cut off and reported; damage to an earlier, durable batch is `WalError::Corrupt`.
    pub fn open(disk: D, dir: &Path, opts: WalOptions) -> Result<(Self, Recovered), WalError> {
        let (mut segments, recovered) = recovery::recover(&disk, dir, !opts.sync_each_batch)?;
        if opts.direct_writes {
            for segment in &mut segments {
                segment.direct_writes = true;
            }
            // Recovery read it through `Disk::open`: the first write opens it again, as a log.
            if let Some(last) = segments.last_mut() {
                last.file = None;
            }
        }
        // Purged segment files a crash left before their unlink: no longer part of the log. And a spare
        // segment (`wal::spare`): never part of it, and maybe not zeroed to its end.
        for path in disk.list(dir).map_err(WalError::at("listing", dir))? {
            if is_purged(&path) || spare::is_spare(&path) {
                if let Err(error) = disk.remove(&path) {
                    tracing::warn!(file = %path.display(), %error, "cannot remove a purged log segment or a spare");
                }
            }
        }
        let synced_index = segments.last().map(|s| s.last_index);
        let wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            opts,
            segments,
            synced_index,
            stopped: None,
            buf: Vec::new(),
            unlinker: None,
            preparer: None,
            preparer_started: false,
        };
        Ok((wal, recovered))
    }

    /// Appends consecutive entries, following the last one (any start when the log is empty), as one
    /// batch and one fdatasync (none with `WalOptions::sync_each_batch` off). Returns only when they are
    /// durable (written). No entries: does nothing.
    pub fn append(&mut self, entries: &[(u64, &[u8])]) -> Result<(), WalError> {
        self.append_iter(entries.iter().copied()).map(|_| ())
    }

    /// `append` over any iterator; returns the index of the last entry written, if any.
    pub(crate) fn append_iter<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<Option<u64>, WalError> {
        self.check_running()?;
        let expected = self.next_index()?;
        let Some(encoded) = format::encode_entries(&mut self.buf, expected, entries)? else {
            return Ok(None);
        };
        let last_before = self.last_index();
        let synced_before = self.synced_index;
        match self.write_entries(encoded.first_index, encoded.last_index) {
            Ok(()) => Ok(Some(encoded.last_index)),
            Err(error) if error.is_no_space() => {
                // Out of space, nothing may have moved: a retry must find the log where it was.
                if self.last_index() != last_before || self.synced_index != synced_before {
                    let invariant = "a failed append moved the end of the log";
                    return Err(self.stop(WalError::Invariant(invariant)));
                }
                Err(error)
            }
            Err(error) => Err(self.stop(error)),
        }
    }

    fn write_entries(&mut self, first_index: u64, last_index: u64) -> Result<(), WalError> {
        let len = self.buf.len() as u64;
        let sync = self.opts.sync_each_batch;
        if self.opts.prepare_segments && !self.preparer_started {
            self.preparer_started = true;
            self.preparer = spare::Preparer::start(
                self.disk.clone(),
                &self.dir,
                self.opts.segment_bytes,
                self.opts.direct_writes,
            );
        }
        let roll = match self.segments.last() {
            None => true,
            // A segment not zeroed to its end (created at its roll, or recovered) gives way to a spare as
            // soon as one is ready: from then on no batch changes a block map.
            Some(segment) => {
                segment.end + len > self.opts.segment_bytes
                    || (segment.zeroed_end < segment.len
                        && self.preparer.as_ref().is_some_and(|p| p.is_ready()))
            }
        };
        if roll {
            // The last segment stops being the last one: bytes a failed write left past its end would
            // then read as damage to durable data, so they are zeroed before the new segment exists.
            // Unsynced entries in it are synced first: only the last segment may hold any.
            if let Some(previous) = self.segments.last_mut() {
                Self::zero_dirty_tail(&self.disk, previous)?;
                if self.synced_index != Some(previous.last_index) {
                    Self::sync(&self.disk, previous)?;
                    self.synced_index = Some(previous.last_index);
                }
            }
            let mut segment = match self.roll_into_spare(first_index, len)? {
                Some(segment) => segment,
                None => self.create_segment(first_index, len)?,
            };
            let ahead = self.opts.zero_ahead_bytes;
            if let Err(error) =
                Self::write_batch(&self.disk, &mut segment, &mut self.buf, sync, ahead)
            {
                let path = segment.path.clone();
                drop(segment);
                return Err(self.discard_segment_file(&path, error));
            }
            segment.last_index = last_index;
            if let Some(previous) = self.segments.last_mut() {
                previous.file = None;
            }
            self.segments.push(segment);
        } else {
            let segment = self
                .segments
                .last_mut()
                .expect("not rolling: there is a segment");
            let ahead = self.opts.zero_ahead_bytes;
            Self::write_batch(&self.disk, segment, &mut self.buf, sync, ahead)?;
            segment.last_index = last_index;
        }
        if sync {
            self.synced_index = Some(last_index);
        }
        Ok(())
    }

    /// Makes every written entry durable (one fdatasync of the last segment) if some are not yet: the
    /// lazy sync of `WalOptions::sync_each_batch` off. A failure stops the log.
    pub fn sync_written(&mut self) -> Result<(), WalError> {
        self.check_running()?;
        let last = self.last_index();
        if self.synced_index == last {
            return Ok(());
        }
        let Some(segment) = self.segments.last_mut() else {
            return Ok(());
        };
        Self::sync(&self.disk, segment).map_err(|e| self.stop(e))?;
        self.synced_index = last;
        Ok(())
    }

    /// Whether written entries await `sync_written`.
    pub fn has_unsynced(&self) -> bool {
        self.stopped.is_none() && self.synced_index != self.last_index()
    }

    /// The last entry that may be acknowledged: the last synced one, or with `sync_each_batch` off
    /// the last written one.
    pub fn acknowledgeable_index(&self) -> Option<u64> {
        if self.opts.sync_each_batch {
            self.synced_index
        } else {
            self.last_index()
        }
    }

    /// Creates, preallocates and durably names a segment whose first batch has `batch_len` bytes. Out
    /// of space, the file is removed again, so a retry (or a later roll at another index) starts clean.
    fn create_segment(
        &mut self,
        first_index: u64,
        batch_len: u64,
    ) -> Result<Segment<D::File>, WalError> {
        let path = self.dir.join(format::segment_file_name(first_index));
        let mut file = open_segment(&self.disk, &path, true, self.opts.direct_writes)
            .map_err(WalError::at("creating", &path))?;
        let size = self
            .opts
            .segment_bytes
            .max(SEGMENT_HEADER_BYTES as u64 + batch_len);
        let salt = fresh_salt();
        let header = SegmentHeader { first_index, salt }.encode();
        if let Err(error) = self.init_segment(&mut file, &path, size, &header) {
            drop(file);
            return Err(self.discard_segment_file(&path, error));
        }
        let direct = self.opts.direct_writes;
        Ok(Segment::fresh(
            path,
            first_index,
            salt,
            (size, 0),
            file,
            direct,
        ))
    }

    /// The new segment made of the ready spare (`wal::spare`), if there is one and the batch fits: its
    /// header written and synced, the file renamed to the segment's name, the directory synced (so, as
    /// with `create_segment`, the header is durable before any batch and the name before any entry).
    fn roll_into_spare(
        &mut self,
        first_index: u64,
        batch_len: u64,
    ) -> Result<Option<Segment<D::File>>, WalError> {
        let Some(preparer) = &self.preparer else {
            return Ok(None);
        };
        if SEGMENT_HEADER_BYTES as u64 + batch_len > self.opts.segment_bytes {
            return Ok(None);
        }
        let Some(spare::Spare { mut file, len }) = preparer.take() else {
            // None ready: one is being made, or the last attempt failed (then this asks again).
            preparer.want();
            return Ok(None);
        };
        let spare = spare::spare_path(&self.dir);
        let path = self.dir.join(format::segment_file_name(first_index));
        let salt = fresh_salt();
        let header = SegmentHeader { first_index, salt }.encode();
        if let Err(error) = file.write_at(0, &header) {
            drop(file);
            if let Err(error) = self.disk.remove(&spare) {
                tracing::warn!(file = %spare.display(), %error, "cannot remove a spare log segment (the next start removes it)");
            }
            preparer.want();
            return Err(WalError::io("writing", &spare, error));
        }
        file.sync_data()
            .map_err(WalError::fatal_at("syncing", &spare))?;
        self.disk
            .rename(&spare, &path)
            .map_err(WalError::fatal_at("renaming", &spare))?;
        // The spare's name is free again (a new one cannot be this file).
        preparer.want();
        self.disk
            .sync_dir(&self.dir)
            .map_err(WalError::fatal_at("syncing directory", &self.dir))?;
        let direct = self.opts.direct_writes;
        Ok(Some(Segment::fresh(
            path,
            first_index,
            salt,
            (len, len),
            file,
            direct,
        )))
    }

    fn init_segment(
        &self,
        file: &mut D::File,
        path: &Path,
        size: u64,
        header: &[u8],
    ) -> Result<(), WalError> {
        // A file of this name can only be left over from an earlier failed attempt.
        file.set_len(0).map_err(WalError::at("truncating", path))?;
        file.allocate(size)
            .map_err(WalError::at("preallocating", path))?;
        file.write_at(0, header)
            .map_err(WalError::at("writing", path))?;
        // The header is durable before any batch is written, so a segment whose header is damaged but
        // which holds data is corruption, never a torn creation.
        file.sync_data()
            .map_err(WalError::fatal_at("syncing", path))?;
        self.disk
            .sync_dir(&self.dir)
            .map_err(WalError::fatal_at("syncing directory", &self.dir))
    }

    /// After `error` while creating or first writing the segment file at `path` (not in `segments`):
    /// out of space, removes the file, so no segment without entries is left between two others should
    /// the log next roll at a different index. Returns the error to report.
    fn discard_segment_file(&mut self, path: &Path, error: WalError) -> WalError {
        if !error.is_no_space() {
            // The log stops; recovery removes a last segment that holds no durable entry.
            return error;
        }
        let removed = self
            .disk
            .remove(path)
            .map_err(WalError::fatal_at("removing an unfinished segment", path))
            .and_then(|()| {
                self.disk
                    .sync_dir(&self.dir)
                    .map_err(WalError::fatal_at("syncing directory", &self.dir))
            });
        match removed {
            Ok(()) => error,
            Err(fatal) => fatal,
        }
    }

    /// Seals the encoded batch in `buf` for `segment`, writes it at the segment's end, fdatasyncs if
    /// `sync`. Zeroes the segment `zero_ahead` bytes ahead of the batch first when the zeroed part
    /// ends less than half that past it.
    fn write_batch(
        disk: &D,
        segment: &mut Segment<D::File>,
        buf: &mut [u8],
        sync: bool,
        zero_ahead: u64,
    ) -> Result<(), WalError> {
        format::seal(buf, segment.salt);
        // The debris of a failed write is zeroed by a write of its own, before the batch: a write cut
        // short then only ever holds part of one batch, never a whole batch behind a call that failed
        // (which a power loss could otherwise bring back after the caller moved on).
        Self::zero_debris(disk, segment)?;
        Self::zero_ahead(disk, segment, buf.len() as u64, zero_ahead)?;
        Self::write_at_end(disk, segment, buf)?;
        if sync {
            Self::sync(disk, segment)?;
        }
        segment.end += buf.len() as u64;
        segment.dirty_end = segment.end;
        Ok(())
    }

    /// Overwrites with zeros, not yet durably, the segment from `zeroed_end` to `ahead` bytes past a
    /// batch of `batch_len` bytes at its end (page-aligned, within the file), if the zeroed part ends
    /// less than `ahead / 2` past that batch. Bytes past `end` hold zeros already (preallocation,
    /// recovery's cut), so this changes no content: a power loss at any point leaves the same log.
    fn zero_ahead(
        disk: &D,
        segment: &mut Segment<D::File>,
        batch_len: u64,
        ahead: u64,
    ) -> Result<(), WalError> {
        let batch_end = segment.end + batch_len;
        if ahead == 0
            || segment.zeroed_end >= segment.len
            || segment.zeroed_end >= batch_end + ahead / 2
        {
            return Ok(());
        }
        let start = segment.zeroed_end.max(segment.end);
        let to = (batch_end + ahead)
            .next_multiple_of(PAGE_BYTES)
            .min(segment.len);
        // One write for the usual stretch (`zero_ahead_bytes` and a batch): a direct write waits for the
        // device, so each call is a round trip to it.
        Self::file(disk, segment)?
            .write_zeros(start, to - start)
            .map_err(WalError::at("zeroing ahead in", &segment.path))?;
        segment.zeroed_end = to;
        Ok(())
    }

    /// Zeroes, durably, what a failed write left past the end of `segment`.
    fn zero_dirty_tail(disk: &D, segment: &mut Segment<D::File>) -> Result<(), WalError> {
        if segment.dirty_end == segment.end {
            return Ok(());
        }
        Self::zero_debris(disk, segment)?;
        Self::sync(disk, segment)?;
        segment.dirty_end = segment.end;
        Ok(())
    }

    /// Overwrites `end..dirty_end` with zeros, not yet durably (`dirty_end` stays until a sync).
    fn zero_debris(disk: &D, segment: &mut Segment<D::File>) -> Result<(), WalError> {
        if segment.dirty_end == segment.end {
            return Ok(());
        }
        let zeros = vec![0u8; to_usize(segment.dirty_end - segment.end)];
        Self::write_at_end(disk, segment, &zeros)
    }

    /// Writes `bytes` at the end of `segment`, leaving `end` as it is. A failed write may have left any
    /// prefix of `bytes` behind: `dirty_end` covers them.
    fn write_at_end(
        disk: &D,
        segment: &mut Segment<D::File>,
        bytes: &[u8],
    ) -> Result<(), WalError> {
        let end = segment.end;
        if let Err(error) = Self::file(disk, segment)?.write_at(end, bytes) {
            segment.dirty_end = segment.dirty_end.max(end + bytes.len() as u64);
            return Err(WalError::io("writing", &segment.path, error));
        }
        Ok(())
    }

    /// fdatasync of the segment. Any failure is fatal: the kernel may have dropped the dirty pages.
    fn sync(disk: &D, segment: &mut Segment<D::File>) -> Result<(), WalError> {
        Self::file(disk, segment)?
            .sync_data()
            .map_err(WalError::fatal_at("syncing", &segment.path))
    }

    /// The segment's open file, opened now if it was closed.
    fn file<'s>(disk: &D, segment: &'s mut Segment<D::File>) -> Result<&'s mut D::File, WalError> {
        match &mut segment.file {
            Some(file) => Ok(file),
            none => Ok(none.insert(
                open_segment(disk, &segment.path, false, segment.direct_writes)
                    .map_err(WalError::at("opening", &segment.path))?,
            )),
        }
    }

    /// Drops every entry after `index`, durably: later segments are removed newest first (so a crash
    /// never leaves a hole) and a truncate batch marks the cut inside the segment holding `index`.
    /// Nothing to drop when `index` is at or past the last entry, but what an append that failed for
    /// lack of space left past the end is zeroed, durably, so no power loss can bring it back.
    pub fn truncate_after(&mut self, index: u64) -> Result<(), WalError> {
        self.check_running()?;
        let result = match self.last_index() {
            Some(last) if index < last => self.truncate_inner(Some(index)),
            _ => match self.segments.last_mut() {
                Some(segment) => Self::zero_dirty_tail(&self.disk, segment),
                None => Ok(()),
            },
        };
        result.map_err(|e| self.fail(e))
    }

    /// Drops every entry, durably (openraft's `truncate_after(None)`). The next append may start at
    /// any index.
    pub fn clear(&mut self) -> Result<(), WalError> {
        self.check_running()?;
        self.truncate_inner(None).map_err(|e| self.fail(e))
    }

    fn truncate_inner(&mut self, keep_upto: Option<u64>) -> Result<(), WalError> {
        while let Some(segment) = self.segments.last() {
            if keep_upto.is_some_and(|index| segment.first_index <= index) {
                break;
            }
            let segment = self.segments.pop().expect("checked above");
            self.synced_index = self.segments.last().map(|s| s.last_index);
            self.remove_segment(segment)?;
        }
        let (Some(index), Some(segment)) = (keep_upto, self.segments.last_mut()) else {
            self.synced_index = None;
            return Ok(());
        };
        if segment.last_index > index {
            format::encode_truncate(&mut self.buf, index + 1);
            let ahead = self.opts.zero_ahead_bytes;
            Self::write_batch(&self.disk, segment, &mut self.buf, true, ahead)?;
            segment.last_index = index;
        }
        self.synced_index = Some(index);
        Ok(())
    }

    /// Removes whole segments, oldest first, whose entries are all `<= index` (the last segment too,
    /// which leaves the log empty). Entries `<= index` that share a segment with later ones stay.
    pub fn purge_upto(&mut self, index: u64) -> Result<(), WalError> {
        self.check_running()?;
        while self.segments.first().is_some_and(|s| s.last_index <= index) {
            let segment = self.segments.remove(0);
            if self.segments.is_empty() {
                self.synced_index = None;
            }
            self.remove_segment(segment).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Takes a segment file out of the log (renamed to `purged_path`) and makes that durable before
    /// anything else happens, so removals reach the disk in the order they were made; then has the file
    /// unlinked (`WalOptions::unlink_purged_in_background`).
    fn remove_segment(&mut self, segment: Segment<D::File>) -> Result<(), WalError> {
        drop(segment.file);
        let purged = purged_path(&segment.path, segment.salt);
        self.disk
            .rename(&segment.path, &purged)
            .map_err(WalError::fatal_at("removing", &segment.path))?;
        self.disk
            .sync_dir(&self.dir)
            .map_err(WalError::fatal_at("syncing directory", &self.dir))?;
        self.unlink((purged, segment.readers));
        Ok(())
    }

    /// Unlinks a purged segment file, on the unlinking thread (started here the first time) or, without
    /// one, now. A failure leaves the file to the next `open`: it is no longer part of the log.
    fn unlink(&mut self, purged: Purged) {
        if self.opts.unlink_purged_in_background && self.unlinker.is_none() {
            self.unlinker = self.start_unlinker();
        }
        let purged = match &self.unlinker {
            Some(unlinker) => match unlinker.files.send(purged) {
                Ok(()) => return,
                Err(mpsc::SendError(purged)) => purged,
            },
            None => purged,
        };
        unlink_purged(&self.disk, &purged.0);
    }

    fn start_unlinker(&self) -> Option<Unlinker> {
        let (files, rx) = mpsc::channel::<Purged>();
        let disk = self.disk.clone();
        let hurry = Arc::new(AtomicBool::new(false));
        let hurried = Arc::clone(&hurry);
        let spawned = std::thread::Builder::new()
            .name("oxkeeper-wal-unlink".into())
            .spawn(move || {
                for (path, readers) in rx {
                    // A view still reading the file keeps it whole: the unlink alone (its blocks are
                    // freed when the view closes it). A failure here is left to the unlink, which
                    // reports it.
                    if Arc::strong_count(&readers) == 1 {
                        let _ = shrink_gently(&disk, &path, &hurried);
                    }
                    unlink_purged(&disk, &path);
                }
            });
        match spawned {
            Ok(thread) => Some(Unlinker {
                files,
                hurry,
                thread,
            }),
            Err(error) => {
                tracing::warn!(%error, "cannot start the thread that unlinks purged log segments: unlinking them on the log's thread");
                None
            }
        }
    }

    /// A view of the segments holding entries `from..=to` (all written ones), to read without the
    /// log's lock (`LogView::read`). Entries outside the log are an error.
    pub fn view(&self, from: u64, to: u64) -> Result<LogView<D::File>, WalError> {
        let (Some(first), Some(last)) = (self.first_index(), self.last_index()) else {
            return Err(WalError::NotInLog {
                from,
                to,
                first: None,
                last: None,
            });
        };
        if from < first || to > last || from > to {
            return Err(WalError::NotInLog {
                from,
                to,
                first: Some(first),
                last: Some(last),
            });
        }
        let mut segments = Vec::new();
        for segment in &self.segments {
            if segment.last_index < from || segment.first_index > to {
                continue;
            }
            let file = self
                .disk
                .open(&segment.path, false)
                .map_err(WalError::at("opening", &segment.path))?;
            segments.push(ViewedSegment {
                path: segment.path.clone(),
                file,
                first_index: segment.first_index,
                end: segment.end,
                salt: segment.salt,
                _readers: Arc::clone(&segment.readers),
            });
        }
        Ok(LogView { from, to, segments })
    }

    /// The last entry in the log.
    pub fn last_index(&self) -> Option<u64> {
        self.segments.last().map(|s| s.last_index)
    }

    /// The last entry known to be durable. Equal to `last_index` whenever no call is in progress, unless
    /// `sync_each_batch` is off.
    pub fn synced_index(&self) -> Option<u64> {
        self.synced_index
    }

    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The first entry in the log (the first segment's first entry).
    pub fn first_index(&self) -> Option<u64> {
        self.segments.first().map(|s| s.first_index)
    }

    pub fn options(&self) -> &WalOptions {
        &self.opts
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The error that stopped the log, if one did.
    pub fn stopped(&self) -> Option<&WalError> {
        self.stopped.as_ref()
    }

    /// The index the next append must start at; `None` when the log is empty (any start).
    pub(crate) fn next_index(&self) -> Result<Option<u64>, WalError> {
        match self.last_index() {
            None => Ok(None),
            Some(last) => last
                .checked_add(1)
                .map(Some)
                .ok_or_else(|| WalError::TooLarge {
                    what: "log index space exhausted".into(),
                }),
        }
    }

    fn check_running(&self) -> Result<(), WalError> {
        match &self.stopped {
            None => Ok(()),
            Some(cause) => Err(WalError::Stopped(Box::new(cause.clone()))),
        }
    }

    /// A write-path call failed. Out of space, the log is where a retry can continue (segments removed
    /// by a truncation stay removed; the rest is as before the call); anything else stops it.
    fn fail(&mut self, error: WalError) -> WalError {
        if error.is_no_space() {
            error
        } else {
            self.stop(error)
        }
    }

    /// Records a write-path failure: from now on every call fails with `Stopped`.
    pub(crate) fn stop(&mut self, error: WalError) -> WalError {
        tracing::error!(dir = %self.dir.display(), %error, "write-ahead log stopped");
        self.stopped.get_or_insert_with(|| error.clone());
        error
    }
}

/// The page size zeroing ahead rounds to.
const PAGE_BYTES: u64 = 4096;

/// A segment's file, to write: with `Disk::open_log` if `direct`.
fn open_segment<D: Disk>(
    disk: &D,
    path: &Path,
    create: bool,
    direct: bool,
) -> std::io::Result<D::File> {
    if direct {
        disk.open_log(path, create)
    } else {
        disk.open(path, create)
    }
}

fn unlink_purged<D: Disk>(disk: &D, path: &Path) {
    if let Err(error) = disk.remove(path) {
        tracing::warn!(file = %path.display(), %error, "cannot remove a purged log segment (the next start removes it)");
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("a dirty tail is no longer than one batch in memory")
}

/// A random salt for a new segment. Not cryptographic: it only has to differ between segments and be
/// unknowable to whoever chose the entry bytes.
fn fresh_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}
