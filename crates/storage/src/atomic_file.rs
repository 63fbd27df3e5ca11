//! Small durable files (the Raft vote, the committed index), always replaced whole.
//!
//! `write_atomic` writes a temporary file next to the target, fsyncs it, renames it over the target and
//! fsyncs the directory: after a crash the file holds the old bytes or the new ones, never a mix.
//! No format here: the caller's bytes carry their own format version.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::disk::{Disk, DiskFile};

/// Replaces the contents of `path` with `bytes`, durably and atomically. The temporary file is
/// `path` + `.tmp`; one left behind by a crash is overwritten by the next call.
pub fn write_atomic<D: Disk>(disk: &D, path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(disk, path, |file| file.write_at(0, bytes))
}

/// [`write_atomic`] for contents that `fill` writes into the (emptied) temporary file itself, in
/// pieces: a large file need not be held in memory whole.
pub fn write_atomic_with<D: Disk>(
    disk: &D,
    path: &Path,
    fill: impl FnOnce(&mut D::File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_path(path)?;
    let mut file = disk.open(&tmp, true)?;
    file.set_len(0)?;
    fill(&mut file)?;
    file.sync_data()?;
    drop(file);
    disk.rename(&tmp, path)?;
    disk.sync_dir(parent(path))
}

/// `write_atomic`, waiting out a full device: on ENOSPC or EDQUOT (in any step, fdatasync included:
/// every attempt writes the temporary file whole again, so pages a failed fdatasync dropped are never
/// trusted) it calls `on_full` with the error and the attempt number, sleeps `retry_min`, doubling up
/// to `retry_max`, and tries again, for as long as it takes. Any other error is returned. Blocks the
/// calling thread.
pub fn write_atomic_waiting_for_space<D: Disk>(
    disk: &D,
    path: &Path,
    bytes: &[u8],
    (retry_min, retry_max): (Duration, Duration),
    mut on_full: impl FnMut(&io::Error, u64),
) -> io::Result<()> {
    let mut delay = retry_min;
    let mut attempt = 0;
    loop {
        match write_atomic(disk, path, bytes) {
            Err(error) if crate::error::is_no_space(&error) => {
                attempt += 1;
                on_full(&error, attempt);
                std::thread::sleep(delay);
                delay = (delay * 2).min(retry_max);
            }
            result => return result,
        }
    }
}

/// The contents of `path`, or `None` if it does not exist.
pub fn read_file<D: Disk>(disk: &D, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match disk.open(path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large for memory"))?;
    let mut bytes = vec![0u8; len];
    file.read_at(0, &mut bytes)?;
    Ok(Some(bytes))
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        ));
    };
    let mut tmp = OsString::from(name);
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimDisk;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn missing_file_reads_as_none_and_written_file_reads_back() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/m")).unwrap();
        let path = Path::new("/m/vote");
        assert_eq!(read_file(&disk, path).unwrap(), None);
        write_atomic(&disk, path, b"term 3").unwrap();
        write_atomic(&disk, path, b"term 4, voted 2").unwrap();
        assert_eq!(read_file(&disk, path).unwrap().unwrap(), b"term 4, voted 2");
    }

    #[test]
    fn a_full_device_is_waited_out_and_other_errors_are_returned() {
        use crate::sim::SimFault;
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/m")).unwrap();
        let path = Path::new("/m/vote");
        let quick = (Duration::from_millis(1), Duration::from_millis(2));
        disk.set_fault_times(SimFault::NoSpace, 3);
        let mut seen = Vec::new();
        write_atomic_waiting_for_space(&disk, path, b"term 5", quick, |error, attempt| {
            assert!(crate::error::is_no_space(error), "{error}");
            seen.push(attempt);
        })
        .unwrap();
        assert_eq!(seen, vec![1, 2, 3]);
        assert_eq!(read_file(&disk, path).unwrap().unwrap(), b"term 5");
        disk.set_fault(Some(SimFault::WriteIo));
        let error = write_atomic_waiting_for_space(&disk, path, b"term 6", quick, |_, _| {
            panic!("EIO is not a full device")
        })
        .unwrap_err();
        assert!(!crate::error::is_no_space(&error));
        disk.set_fault(None);
        assert_eq!(read_file(&disk, path).unwrap().unwrap(), b"term 5");
    }

    #[test]
    fn power_loss_during_write_atomic_leaves_old_or_new_whole() {
        let old: &[u8] = b"old contents";
        let new: &[u8] = b"new contents, longer than the old";
        let path = Path::new("/m/committed");
        let (mut saw_old, mut saw_new) = (false, false);
        for seed in 0..200u64 {
            let disk = SimDisk::new();
            disk.create_dir_all(Path::new("/m")).unwrap();
            write_atomic(&disk, path, old).unwrap();
            disk.crash_after(seed % 7);
            let finished = write_atomic(&disk, path, new).is_ok();
            disk.power_loss(&mut StdRng::seed_from_u64(seed));
            let after = read_file(&disk, path)
                .unwrap()
                .expect("the file never vanishes");
            assert!(
                after == old || after == new,
                "seed {seed}: torn file {after:?}"
            );
            if finished {
                assert_eq!(after, new, "seed {seed}: a completed write was lost");
            }
            saw_old |= after == old;
            saw_new |= after == new;
        }
        assert!(saw_old && saw_new);
    }
}
