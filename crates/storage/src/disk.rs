//! The small file-system trait the log is written against, and `RealDisk`, its `std::fs` implementation.
//!
//! The trait has only the operations the log needs, with their durability spelled out, so that
//! `SimDisk` can implement the same contract in memory and drop or tear whatever was not made durable
//! when a test pulls the plug. Nothing here knows about the log's format.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory tree of files. A file's contents become durable with `DiskFile::sync_data`; a create,
/// remove or rename becomes durable with `sync_dir` of the directory that holds the name.
/// Clones are handles on the same files (a purged segment is unlinked through one on another thread).
pub trait Disk: Clone + Send + Sync + 'static {
    type File: DiskFile;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the entries of `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Opens `path` for reading and writing; creates it (empty) if missing and `create` is true.
    fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    /// Opens, as `open` does, a file that is only ever written at or past the end of what it holds, and
    /// never read past that end: a write may leave zeros in the rest of the last block it touches (up
    /// to `DIRECT_BLOCK` bytes past its end) instead of what was there. `RealDisk` writes such a file
    /// around the page cache (O_DIRECT) where the file system allows it. The default is `open`.
    fn open_log(&self, path: &Path, create: bool) -> io::Result<Self::File> {
        self.open(path, create)
    }
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames atomically, replacing `to` if it exists. Both must be in the same directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creates, removes and renames of names in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Writes reach the disk durably only at `sync_data`.
pub trait DiskFile: Send + 'static {
    /// Reads exactly `buf.len()` bytes at `offset` (`UnexpectedEof` if the file is shorter).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file with zeros if needed.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// `write_at` of `len` zeros, in as few calls as the implementation can: the log zeroing ahead, and
    /// a spare segment zeroed through. `RealFile` writes whole blocks of a log's file around the page
    /// cache straight from one shared buffer of zeros (no copy, and no memory of the file's own).
    fn write_zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        write_zeros_in_pieces(self, offset, len)
    }
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// fdatasync: the data written so far, and the file length, are durable when this returns.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Reserves space so the file is at least `len` bytes long (zeros), never shrinking it. A full
    /// device fails here rather than in the middle of a later write.
    fn allocate(&mut self, len: u64) -> io::Result<()>;
    /// Starts writing `[offset, offset + len)` to the device, and waits until the range written
    /// before it (`[..offset)`, started by an earlier call) is written out: so a large file written
    /// in pieces keeps only about two pieces dirty in memory. A pace, not a promise: nothing is
    /// durable before `sync_data`. An error here is a write error of the file (report it: the
    /// kernel reports a writeback error once per open file, so a later `sync_data` may not see it).
    /// The default does nothing.
    fn write_behind(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

/// The real file system, through `std::fs` (and `posix_fallocate` for `allocate`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

/// A file of `RealDisk`.
#[derive(Debug)]
pub struct RealFile {
    file: fs::File,
    /// A log's file (`Disk::open_log`) on a file system that takes O_DIRECT: its writes go through it.
    direct: Option<Box<DirectWrites>>,
}

/// Offsets, lengths and memory of a write around the page cache are multiples of this: the page size,
/// and a multiple of every common device's logical block.
pub const DIRECT_BLOCK: usize = 4096;
const BLOCK: u64 = DIRECT_BLOCK as u64;

/// The writes of a log's file around the page cache (`Disk::open_log`). An fdatasync after a buffered
/// write has the kernel find the dirty page, lock it, mark it for writeback, write it and wait for it,
/// then flush the device's cache; after a direct write, which returns once the device has the block, only
/// the flush is left. Measured on session 38's machine (ext4, virtio, 1.5 KB batches appended to a
/// preallocated file, Python): 86-109 us and 36-43 us of CPU per durable batch (a direct write, then an
/// fdatasync), against 116-143 us and 51-54 us through the page cache. Every write covers whole blocks,
/// so the bytes of the first block that come before the write are kept from the block the last write
/// ended in (`tail`), or read back once (after an open); the rest of the last block is written as zeros
/// (the contract of `open_log`, which `SimDisk` keeps too, so the log's power-loss tests hold to it).
#[derive(Debug)]
struct DirectWrites {
    /// The same file opened write-only with O_DIRECT (the other descriptor serves reads, `set_len`,
    /// `allocate` and `sync_data`: an fdatasync covers the writes of every descriptor of the file).
    file: fs::File,
    /// The file's length: a write that would grow it goes through the page cache (rounded up to whole
    /// blocks it would grow it by more than it asked).
    len: u64,
    /// The offset of the block the last write ended inside, and what the file holds there.
    tail: Option<(u64, Vec<u8>)>,
    /// Room for one write, aligned (`aligned`).
    scratch: Vec<u8>,
}

impl DirectWrites {
    /// Writes `buf` at `offset` as whole blocks (see the type's docs); `buffered` serves the reads of a
    /// first block that is not `tail`. Returns `Ok(false)` when the write would grow the file (the caller
    /// writes it through the page cache: `written` keeps `tail` right).
    fn write_at(&mut self, buffered: &fs::File, offset: u64, buf: &[u8]) -> io::Result<bool> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(too_large)?;
        let start = offset - offset % BLOCK;
        let stop = end.next_multiple_of(BLOCK);
        if stop > self.len {
            return Ok(false);
        }
        let total = usize::try_from(stop - start).map_err(|_| too_large())?;
        let head = usize::try_from(offset - start).map_err(|_| too_large())?;
        let tail = self.tail.take();
        let block = aligned(&mut self.scratch, total);
        match &tail {
            _ if head == 0 => {}
            Some((at, bytes)) if *at == start => block[..head].copy_from_slice(&bytes[..head]),
            _ => read_up_to(buffered, start, &mut block[..head])?,
        }
        block[head..head + buf.len()].copy_from_slice(buf);
        block[head + buf.len()..].fill(0);
        let mut done = 0;
        while done < total {
            let at = start + done as u64;
            match self.file.write_at(&block[done..], at) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if n % DIRECT_BLOCK != 0 => {
                    return Err(io::Error::other("a direct write stopped inside a block"))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // The block the next write starts in, if this one ended inside it; else the one kept before, as
        // this write left it (a write that ends on a boundary, zeros ahead of the log, may cover it).
        self.tail = if end % BLOCK != 0 {
            // The kept block's buffer is used again: no allocation a write.
            let mut bytes = tail.map(|(_, bytes)| bytes).unwrap_or_default();
            bytes.clear();
            bytes.extend_from_slice(&block[total - DIRECT_BLOCK..]);
            Some((stop - BLOCK, bytes))
        } else {
            tail.map(|(at, mut bytes)| {
                if at >= start && at < stop {
                    let from = usize::try_from(at - start).unwrap_or(0);
                    bytes.copy_from_slice(&block[from..from + DIRECT_BLOCK]);
                }
                (at, bytes)
            })
        };
        Ok(true)
    }

    /// Writes `len` zeros at `offset`, whole blocks within the file, straight from `zero_buffer`.
    /// `Ok(false)`: not whole blocks within the file (the caller writes them some other way).
    fn write_zeros(&mut self, offset: u64, len: u64) -> io::Result<bool> {
        let end = offset.checked_add(len).ok_or_else(too_large)?;
        if offset % BLOCK != 0 || len % BLOCK != 0 || end > self.len {
            return Ok(false);
        }
        let zeros = zero_buffer();
        let mut at = offset;
        while at < end {
            let n = usize::try_from(end - at).map_or(zeros.len(), |n| n.min(zeros.len()));
            match self.file.write_at(&zeros[..n], at) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) if n % DIRECT_BLOCK != 0 => {
                    return Err(io::Error::other("a direct write stopped inside a block"))
                }
                Ok(n) => at += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Some((kept, bytes)) = &mut self.tail {
            if *kept >= offset && *kept < end {
                bytes.fill(0);
            }
        }
        Ok(true)
    }

    /// After a write through the page cache: `tail` takes what it wrote, and the file's new length.
    fn written(&mut self, offset: u64, buf: &[u8]) {
        let end = offset + buf.len() as u64;
        self.len = self.len.max(end);
        if let Some((at, bytes)) = &mut self.tail {
            let (lo, hi) = (offset.max(*at), end.min(*at + BLOCK));
            if lo < hi {
                let (from, to) = ((lo - *at) as usize, (hi - *at) as usize);
                let src = (lo - offset) as usize;
                bytes[from..to].copy_from_slice(&buf[src..src + (to - from)]);
            }
        }
    }
}

/// `DiskFile::write_zeros` as `write_at`s of a static block of zeros.
fn write_zeros_in_pieces<F: DiskFile + ?Sized>(
    file: &mut F,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    static ZEROS: [u8; 512 << 10] = [0; 512 << 10];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(ZEROS.len() as u64) as usize;
        file.write_at(offset + at, &ZEROS[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Bytes of the shared buffer of zeros that direct writes of zeros come from (`DirectWrites::write_zeros`).
const ZERO_BUFFER_BYTES: usize = 4 << 20;

/// The shared buffer of zeros, aligned for direct writes. Allocated zeroed and never written, so its pages
/// are the kernel's zero page and count in no process's memory.
fn zero_buffer() -> &'static [u8] {
    static BUFFER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let buffer = BUFFER.get_or_init(|| vec![0; ZERO_BUFFER_BYTES + DIRECT_BLOCK]);
    let skip = buffer.as_ptr().align_offset(DIRECT_BLOCK);
    &buffer[skip..skip + ZERO_BUFFER_BYTES]
}

/// `len` bytes of `scratch` (grown as needed) starting at a multiple of `DIRECT_BLOCK` in memory.
fn aligned(scratch: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if scratch.len() < len + DIRECT_BLOCK {
        *scratch = vec![0; len + DIRECT_BLOCK];
    }
    let skip = scratch.as_ptr().align_offset(DIRECT_BLOCK);
    &mut scratch[skip..skip + len]
}

/// Reads `buf.len()` bytes at `offset`; what lies past the end of the file reads as zeros.
fn read_up_to(file: &fs::File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

impl Disk for RealDisk {
    type File = RealFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect()
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<RealFile> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(RealFile { file, direct: None })
    }

    fn open_log(&self, path: &Path, create: bool) -> io::Result<RealFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = self.open(path, create)?;
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(direct) => {
                file.direct = Some(Box::new(DirectWrites {
                    file: direct,
                    len: file.file.metadata()?.len(),
                    tail: None,
                    scratch: Vec::new(),
                }))
            }
            // A file system without O_DIRECT (tmpfs before Linux 6.6, some FUSE ones): through the cache.
            Err(error) => {
                tracing::debug!(file = %path.display(), %error, "log written through the page cache")
            }
        }
        Ok(file)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }
}

impl RealFile {
    /// Runs `write` around the page cache if this file is written that way: whether it wrote (`false`: the
    /// caller writes through the page cache).
    fn try_direct(
        &mut self,
        write: impl FnOnce(&mut DirectWrites, &fs::File) -> io::Result<bool>,
    ) -> io::Result<bool> {
        let Some(direct) = &mut self.direct else {
            return Ok(false);
        };
        match write(direct, &self.file) {
            Ok(wrote) => Ok(wrote),
            // The file system takes O_DIRECT but not these blocks (a device with larger ones): this file is
            // written through the page cache from now on.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(%error, "a direct write refused: the log is written through the page cache");
                self.direct = None;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }
}

impl DiskFile for RealFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.try_direct(|direct, file| direct.write_at(file, offset, buf))? {
            return Ok(());
        }
        self.file.write_all_at(buf, offset)?;
        if let Some(direct) = &mut self.direct {
            direct.written(offset, buf);
        }
        Ok(())
    }

    fn write_zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.try_direct(|direct, _| direct.write_zeros(offset, len))? {
            return Ok(());
        }
        write_zeros_in_pieces(self, offset, len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if let Some(direct) = &mut self.direct {
            // What it held past `len` is gone (a later growth reads as zeros): forget the block kept.
            direct.tail = None;
            direct.len = len;
        }
        self.file.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn write_behind(&mut self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let range = |offset: u64, len: u64| {
            Ok::<_, io::Error>((
                libc::off64_t::try_from(offset).map_err(|_| too_large())?,
                libc::off64_t::try_from(len).map_err(|_| too_large())?,
            ))
        };
        let fd = self.file.as_raw_fd();
        let (start, count) = range(offset, len)?;
        // SAFETY: the descriptor is open for as long as `self.file` lives; the call only reads its args.
        if unsafe { libc::sync_file_range(fd, start, count, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if offset > 0 {
            let (start, count) = range(0, offset)?;
            let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: as above.
            if unsafe { libc::sync_file_range(fd, start, count, wait) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let len_off = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "allocation too large"))?;
        // SAFETY: the descriptor is open for as long as `self.file` lives; the call only reads its args.
        let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), 0, len_off) };
        match rc {
            0 => {
                if let Some(direct) = &mut self.direct {
                    direct.len = direct.len.max(len);
                }
                Ok(())
            }
            // File systems without fallocate (musl does not emulate it): a sparse extension still
            // gives the segment its length, only without the early ENOSPC.
            libc::EOPNOTSUPP | libc::EINVAL => {
                if self.len()? < len {
                    self.set_len(len)?;
                }
                Ok(())
            }
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "file range too large")
}

/// How much of a file one step of `shrink_gently` frees, and the pause after each step.
pub const SHRINK_STEP_BYTES: u64 = 1 << 20;
const SHRINK_STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Truncates the file at `path` a step at a time, pausing between steps, until it is empty or `hurry` is
/// set; then an unlink frees nothing more. Freeing a written 64 MiB file at once (an unlink, or a
/// truncation to 0) takes ~13 ms here, and an fdatasync of the log issued meanwhile, on any thread, waited
/// for all of it (the kernel's journal, and the cached pages it drops); a step of 1 MiB held one for at
/// most about a millisecond, as the disk's own jitter does. Only for a file nobody reads any more: a
/// reader that has it open sees it shrink (an unlink alone would leave it whole to them).
pub fn shrink_gently<D: Disk>(
    disk: &D,
    path: &Path,
    hurry: &std::sync::atomic::AtomicBool,
) -> io::Result<()> {
    let mut file = disk.open(path, false)?;
    let mut len = file.len()?;
    while len > 0 && !hurry.load(std::sync::atomic::Ordering::Relaxed) {
        len = len.saturating_sub(SHRINK_STEP_BYTES);
        file.set_len(len)?;
        std::thread::sleep(SHRINK_STEP_PAUSE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::os::unix::fs::OpenOptionsExt;

    /// A fresh directory on the file system of the system's temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("oxkeeper-disk-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn contents(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    /// Appends of every size, at every offset within a block, across reopenings (the block before the
    /// first write then read back), zeros written ahead (as bytes or by `write_zeros`) over the block the
    /// log ends in (kept, then
    /// written again by the next append), stretches written again further back, and one write past the
    /// file's end: the file holds what was written, with zeros in the rest of each write's last block
    /// (`Disk::open_log`'s contract), and grows only by a write past its end, by exactly that much.
    #[test]
    fn a_log_file_holds_what_was_appended_whichever_way_it_was_written() {
        let scratch = Scratch::new("log");
        let path = scratch.0.join("log");
        let size: usize = 1 << 20;
        let mut rng = StdRng::seed_from_u64(38);
        let mut file = RealDisk.open_log(&path, true).unwrap();
        file.allocate(size as u64).unwrap();
        let mut model = vec![0u8; size];
        let mut at = 0usize;
        let mut direct_seen = false;
        let mut step = 0;
        while at < size - 40_000 {
            step += 1;
            direct_seen |= file.direct.is_some();
            match rng.gen_range(0..10) {
                // Reopened: the block the log ends in is no longer kept in memory.
                0 => {
                    file.sync_data().unwrap();
                    file = RealDisk.open_log(&path, false).unwrap();
                }
                // Zeros ahead, from where the log ends or from the next block on, to a block boundary.
                1 => {
                    let from = if rng.gen() {
                        at
                    } else {
                        at.next_multiple_of(DIRECT_BLOCK)
                    };
                    let to = (from + rng.gen_range(1..20_000)).next_multiple_of(DIRECT_BLOCK);
                    // As bytes, or from the shared buffer of zeros (whole blocks: straight from it).
                    if rng.gen() {
                        file.write_at(from as u64, &vec![0; to - from]).unwrap();
                    } else {
                        file.write_zeros(from as u64, (to - from) as u64).unwrap();
                    }
                    model[from..to].fill(0);
                }
                // Written again, earlier in the file (a log does not, but the blocks kept must follow).
                2 if at > 0 => {
                    let off = at.saturating_sub(rng.gen_range(1..6000));
                    let len = rng.gen_range(1..3000);
                    let bytes: Vec<u8> = (0..len).map(|_| rng.gen_range(1..=255)).collect();
                    file.write_at(off as u64, &bytes).unwrap();
                    model[off..off + len].copy_from_slice(&bytes);
                    if file.direct.is_some() {
                        model[off + len..(off + len).next_multiple_of(DIRECT_BLOCK)].fill(0);
                    }
                    at = at.max(off + len);
                }
                _ => {
                    let len = match rng.gen_range(0..4) {
                        0 => rng.gen_range(1..16),
                        1 => DIRECT_BLOCK - at % DIRECT_BLOCK,
                        _ => rng.gen_range(1..9000),
                    };
                    let bytes: Vec<u8> = (0..len).map(|_| rng.gen_range(1..=255)).collect();
                    file.write_at(at as u64, &bytes).unwrap();
                    model[at..at + len].copy_from_slice(&bytes);
                    let block_end = (at + len).next_multiple_of(DIRECT_BLOCK);
                    if file.direct.is_some() {
                        model[at + len..block_end].fill(0);
                    }
                    at += len;
                }
            }
            if step % 16 == 0 {
                assert_eq!(contents(&path), model, "after step {step}");
            }
        }
        assert_eq!(contents(&path), model);
        // Past the file's end: through the page cache, and the file grows by exactly what was written.
        let tail: Vec<u8> = (0..1000).map(|i| (i % 250 + 1) as u8).collect();
        file.write_at(size as u64 - 10, &tail).unwrap();
        model.truncate(size - 10);
        model.extend_from_slice(&tail);
        assert_eq!(contents(&path), model);
        // And the block it ends in is known again to the next write around the cache.
        file.write_at(size as u64 + 990, b"end").unwrap();
        model.extend_from_slice(b"end");
        assert_eq!(contents(&path), model);
        if !direct_seen {
            eprintln!(
                "the temp dir's file system refuses O_DIRECT: only the buffered path was tested"
            );
        }
    }

    /// On a file system that takes O_DIRECT (the temp dir's, on these machines), a log file is written
    /// around the page cache: a test of the path above that would otherwise pass on the buffered one.
    #[test]
    fn a_log_file_is_written_around_the_page_cache_where_the_file_system_allows_it() {
        let scratch = Scratch::new("direct");
        let path = scratch.0.join("probe");
        let probe = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path);
        let mut file = RealDisk.open_log(&path, true).unwrap();
        assert_eq!(file.direct.is_some(), probe.is_ok(), "{probe:?}");
        file.allocate(8192).unwrap();
        file.write_at(100, b"abc").unwrap();
        assert_eq!(
            file.direct.is_some(),
            probe.is_ok(),
            "a write refused: {probe:?}"
        );
        assert!(RealDisk.open(&path, false).unwrap().direct.is_none());
    }
}
