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
        Ok(RealFile { file })
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

impl DiskFile for RealFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
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
            0 => Ok(()),
            // File systems without fallocate (musl does not emulate it): a sparse extension still
            // gives the segment its length, only without the early ENOSPC.
            libc::EOPNOTSUPP | libc::EINVAL => {
                if self.len()? < len {
                    self.file.set_len(len)?;
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
