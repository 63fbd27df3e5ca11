//! Snapshot files: one durable, checksummed file per snapshot, named after the log index it covers.
//!
//! A file is written to a temporary name, fsynced, renamed into place, and the directory fsynced
//! (`write_atomic`), so after a power loss a snapshot file is either complete or absent. The contents are
//! still checked (a CRC over everything) because disks rot. Opaque to this crate: `meta` and `data` are
//! whatever the caller encoded (the server puts Raft's snapshot metadata and the serialized state there).
//!
//! Layout, little endian:
//! ```text
//!   0  magic    8 bytes "OXKSNAP\0"
//!   8  version  u32 (FORMAT_VERSION)
//!  12  meta_len u32
//!  16  data_len u64
//!  24  crc      u32 crc32 of bytes 0..24 and of meta and data
//!  28  meta, then data
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::atomic_file::{read_file, write_atomic_with};
use crate::disk::{shrink_gently, Disk, DiskFile};

const MAGIC: &[u8; 8] = b"OXKSNAP\0";
/// The version of the snapshot file layout (not of what the caller puts inside).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 28;
const PREFIX: &str = "snapshot.";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a valid snapshot file ({why})")]
    Invalid { path: PathBuf, why: String },
}

/// A snapshot read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub index: u64,
    pub path: PathBuf,
    pub meta: Vec<u8>,
    pub data: Vec<u8>,
}

/// The file name of the snapshot that covers the log up to `index`: `snapshot.<index, 20 digits>`, so names
/// sort by index.
pub fn snapshot_name(index: u64) -> String {
    format!("{PREFIX}{index:020}")
}

/// Encodes a snapshot file's bytes.
pub fn encode_snapshot(meta: &[u8], data: &[u8]) -> Vec<u8> {
    let meta_len = u32::try_from(meta.len()).expect("snapshot metadata under 4 GiB");
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out);
    h.update(meta);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(data);
    out
}

/// Decodes a snapshot file's bytes into (meta, data), checking magic, version, lengths and CRC. The data
/// is the file's own buffer with the header and metadata taken off the front (no second copy of a
/// snapshot of hundreds of megabytes).
pub fn decode_snapshot(mut bytes: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let version = u32_at(8);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this binary reads {SNAPSHOT_FORMAT_VERSION}"
        ));
    }
    let meta_len = u32_at(12) as usize;
    let mut data_len = [0u8; 8];
    data_len.copy_from_slice(&bytes[16..24]);
    let data_len = u64::from_le_bytes(data_len);
    let expected = (HEADER_LEN as u64)
        .checked_add(meta_len as u64)
        .and_then(|n| n.checked_add(data_len));
    if expected != Some(bytes.len() as u64) {
        return Err(format!(
            "lengths say {meta_len} + {data_len} bytes after the header, the file has {}",
            bytes.len() - HEADER_LEN
        ));
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..24]);
    h.update(&bytes[HEADER_LEN..]);
    if h.finalize() != u32_at(24) {
        return Err("checksum mismatch".into());
    }
    let meta = bytes[HEADER_LEN..HEADER_LEN + meta_len].to_vec();
    bytes.drain(..HEADER_LEN + meta_len);
    Ok((meta, bytes))
}

/// Writes the snapshot covering the log up to `index` into `dir`, durably and atomically.
pub fn write_snapshot<D: Disk>(
    disk: &D,
    dir: &Path,
    index: u64,
    meta: &[u8],
    data: &[u8],
) -> Result<PathBuf, SnapshotError> {
    write_snapshot_with(disk, dir, index, meta, |w| w.write_all(data)).map(|(path, _)| path)
}

/// [`write_snapshot`] with the data written by `write_data` in pieces, straight into the file (a
/// large state is never held in memory serialized). Returns the file and the data's length.
pub fn write_snapshot_with<D: Disk>(
    disk: &D,
    dir: &Path,
    index: u64,
    meta: &[u8],
    write_data: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> Result<(PathBuf, u64), SnapshotError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { path, source }
    };
    disk.create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(snapshot_name(index));
    let meta_len = u32::try_from(meta.len()).map_err(|_| SnapshotError::Invalid {
        path: path.clone(),
        why: "snapshot metadata of 4 GiB or more".into(),
    })?;
    let mut data_len = 0;
    write_atomic_with(disk, &path, |file| {
        // The body first (meta, then data), its CRC running; then the header, which holds the
        // lengths and the CRC of the header's first 24 bytes followed by the body.
        let mut body = BodyWriter {
            file,
            at: HEADER_LEN as u64,
            buf: Vec::with_capacity(BODY_BUFFER_BYTES),
            crc: crc32fast::Hasher::new(),
        };
        io::Write::write_all(&mut body, meta)?;
        write_data(&mut body)?;
        io::Write::flush(&mut body)?;
        data_len = body.at - HEADER_LEN as u64 - u64::from(meta_len);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&meta_len.to_le_bytes());
        header.extend_from_slice(&data_len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.combine(&body.crc);
        header.extend_from_slice(&crc.finalize().to_le_bytes());
        body.file.write_at(0, &header)
    })
    .map_err(io(&path))?;
    Ok((path, data_len))
}

/// How much of a snapshot's body is gathered before a write to the file.
const BODY_BUFFER_BYTES: usize = 1 << 20;

/// Writes a snapshot's body into its file from `at` on, in buffered pieces, keeping its CRC.
struct BodyWriter<'a, F: DiskFile> {
    file: &'a mut F,
    at: u64,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl<F: DiskFile> io::Write for BodyWriter<'_, F> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > BODY_BUFFER_BYTES {
            self.flush()?;
        }
        if bytes.len() >= BODY_BUFFER_BYTES {
            self.crc.update(bytes);
            self.file.write_at(self.at, bytes)?;
            self.file.write_behind(self.at, bytes.len() as u64)?;
            self.at += bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.crc.update(&self.buf);
            self.file.write_at(self.at, &self.buf)?;
            // Out to the device piece by piece rather than all at the final fdatasync: a write-ahead
            // log's fdatasync issued meanwhile waits behind whatever the device has queued (session
            // 28: a 90 MB snapshot every second, set at 32 sessions: p99.9 13-27 -> 7.5-8.4 ms, together
            // with the snapshot thread's low priority; see bench/RESULTS.md).
            self.file.write_behind(self.at, self.buf.len() as u64)?;
            self.at += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// The snapshot files in `dir` with their indexes, newest first. Other names (temporary files) are ignored.
pub fn list_snapshots<D: Disk>(disk: &D, dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let entries = match disk.list(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let digits = name.strip_prefix(PREFIX)?;
            if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((digits.parse().ok()?, p))
        })
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

/// Reads and checks one snapshot file.
pub fn read_snapshot<D: Disk>(
    disk: &D,
    index: u64,
    path: &Path,
) -> Result<SnapshotFile, SnapshotError> {
    let bytes = read_file(disk, path)
        .map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| SnapshotError::Invalid {
            path: path.to_path_buf(),
            why: "vanished".into(),
        })?;
    let (meta, data) = decode_snapshot(bytes).map_err(|why| SnapshotError::Invalid {
        path: path.to_path_buf(),
        why,
    })?;
    Ok(SnapshotFile {
        index,
        path: path.to_path_buf(),
        meta,
        data,
    })
}

/// Removes all but the `keep` newest snapshots (at least one is always kept), and leftover temporary files.
pub fn retain_snapshots<D: Disk>(disk: &D, dir: &Path, keep: usize) -> Result<(), SnapshotError> {
    let all = list_snapshots(disk, dir)?;
    // Temporary files of snapshots that never completed (a crash or an exit while one was written). Only one
    // snapshot is written at a time and this runs after it, so none of them is being written now.
    let leftovers = disk
        .list(dir)
        .map_err(|source| SnapshotError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .into_iter()
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(PREFIX) && (n.ends_with(".tmp") || n.ends_with(REMOVED_SUFFIX))
            })
        });
    for path in leftovers {
        disk.remove(&path).map_err(|source| SnapshotError::Io {
            path: path.clone(),
            source,
        })?;
    }
    // Old snapshots leave the list at once (renamed, durably); then each is freed a step at a time and
    // unlinked, as this runs beside the log's writes (see `shrink_gently`). What a crash leaves of them
    // goes with the leftovers above, next time.
    let mut removed = Vec::new();
    for (_, path) in all.iter().skip(keep.max(1)) {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(REMOVED_SUFFIX);
        let to = path.with_file_name(name);
        disk.rename(path, &to).map_err(|source| SnapshotError::Io {
            path: path.clone(),
            source,
        })?;
        removed.push(to);
    }
    disk.sync_dir(dir).map_err(|source| SnapshotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for path in removed {
        // What a failure to shrink leaves, the unlink frees.
        let _ = shrink_gently(disk, &path, &AtomicBool::new(false));
        disk.remove(&path).map_err(|source| SnapshotError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The name an old snapshot takes once it is no longer listed, until it is unlinked.
const REMOVED_SUFFIX: &str = ".removed";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimDisk;
    use rand::{Rng, SeedableRng};

    #[test]
    fn encode_decode_round_trip_and_every_damage_is_caught() {
        let bytes = encode_snapshot(b"meta", b"the data");
        assert_eq!(
            decode_snapshot(bytes.clone()).unwrap(),
            (b"meta".to_vec(), b"the data".to_vec())
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_snapshot(bad).is_err(), "flip at {i} not caught");
        }
        for len in 0..bytes.len() {
            assert!(
                decode_snapshot(bytes[..len].to_vec()).is_err(),
                "cut at {len} not caught"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_snapshot(longer).is_err());
    }

    /// The data comes back in the file's own buffer: a snapshot of hundreds of megabytes is not held
    /// twice while a member starts.
    #[test]
    fn decoded_data_keeps_the_files_buffer() {
        let data = vec![7u8; 100_000];
        let bytes = encode_snapshot(b"meta", &data);
        let buffer = bytes.as_ptr();
        let (meta, back) = decode_snapshot(bytes).unwrap();
        assert_eq!(
            (meta.as_slice(), back.as_slice()),
            (&b"meta"[..], &data[..])
        );
        assert_eq!(back.as_ptr(), buffer);
    }

    #[test]
    fn a_snapshot_written_in_pieces_is_the_same_file_as_one_written_whole() {
        let disk = SimDisk::new();
        let dir = Path::new("/snap");
        // Past the write buffer, in pieces of every size from one byte to more than the buffer.
        let data: Vec<u8> = (0..3 * BODY_BUFFER_BYTES + 12345)
            .map(|i| (i * 31) as u8)
            .collect();
        let (path, len) = write_snapshot_with(&disk, dir, 9, b"meta", |w| {
            let mut rest = &data[..];
            let mut piece = 1;
            while !rest.is_empty() {
                let n = piece.min(rest.len());
                w.write_all(&rest[..n])?;
                rest = &rest[n..];
                piece = if piece > BODY_BUFFER_BYTES {
                    1
                } else {
                    piece * 7
                };
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(len, data.len() as u64);
        let back = read_snapshot(&disk, 9, &path).unwrap();
        assert_eq!((back.meta, back.data), (b"meta".to_vec(), data.clone()));
        let whole = read_file(&disk, &path).unwrap().unwrap();
        assert_eq!(whole, encode_snapshot(b"meta", &data));
    }

    #[test]
    fn golden_file_layout() {
        let golden: &[u8] = include_bytes!("../tests/fixtures/snapshot-v1.bin");
        assert_eq!(
            encode_snapshot(b"{meta}", b"\x00\x01data\xff"),
            golden,
            "the snapshot file layout changed: bump SNAPSHOT_FORMAT_VERSION and keep reading the old one"
        );
    }

    #[test]
    fn newest_first_and_retention() {
        let disk = SimDisk::new();
        let dir = Path::new("/snap");
        for i in [5u64, 100, 20] {
            write_snapshot(&disk, dir, i, b"m", &i.to_le_bytes()).unwrap();
        }
        disk.create_dir_all(dir).unwrap();
        let listed: Vec<u64> = list_snapshots(&disk, dir)
            .unwrap()
            .iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(listed, vec![100, 20, 5]);
        let leftover = dir.join(format!("{}.tmp", snapshot_name(7)));
        disk.open(&leftover, true).unwrap();
        // What a crash leaves of a snapshot being removed.
        let removed = dir.join(format!("{}{REMOVED_SUFFIX}", snapshot_name(3)));
        disk.open(&removed, true).unwrap();
        retain_snapshots(&disk, dir, 2).unwrap();
        assert!(
            !disk.list(dir).unwrap().contains(&leftover),
            "temporary leftovers removed"
        );
        assert!(
            !disk.list(dir).unwrap().contains(&removed),
            "removed leftovers removed"
        );
        assert!(
            disk.list(dir)
                .unwrap()
                .iter()
                .all(|p| !p.to_string_lossy().ends_with(REMOVED_SUFFIX)),
            "every old snapshot unlinked"
        );
        let listed: Vec<u64> = list_snapshots(&disk, dir)
            .unwrap()
            .iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(listed, vec![100, 20]);
        let (i, p) = list_snapshots(&disk, dir).unwrap()[0].clone();
        assert_eq!(
            read_snapshot(&disk, i, &p).unwrap().data,
            100u64.to_le_bytes()
        );
    }

    /// A power loss at any point while snapshots are written and old ones removed: afterwards every listed
    /// snapshot reads back whole, and the newest acknowledged one (write_snapshot returned) is there.
    #[test]
    fn power_loss_never_leaves_a_damaged_or_missing_acknowledged_snapshot() {
        let dir = Path::new("/data/snapshots");
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let disk = SimDisk::new();
            disk.crash_after(rng.gen_range(1..200));
            let mut acked = None;
            for index in 1..=20u64 {
                let data = vec![index as u8; rng.gen_range(0..5000)];
                if write_snapshot(&disk, dir, index * 10, b"meta", &data).is_err() {
                    break;
                }
                acked = Some((index * 10, data));
                if retain_snapshots(&disk, dir, 2).is_err() {
                    break;
                }
            }
            disk.power_loss(&mut rng);
            let listed = list_snapshots(&disk, dir).unwrap();
            for (i, p) in &listed {
                let s = read_snapshot(&disk, *i, p)
                    .unwrap_or_else(|e| panic!("seed {seed}: listed snapshot {i} is damaged: {e}"));
                assert_eq!(
                    s.data.first().copied().unwrap_or((*i / 10) as u8),
                    (*i / 10) as u8
                );
            }
            if let Some((index, data)) = acked {
                let (i, p) = listed
                    .iter()
                    .find(|(i, _)| *i == index)
                    .unwrap_or_else(|| panic!("seed {seed}: acknowledged snapshot {index} lost"));
                assert_eq!(
                    read_snapshot(&disk, *i, p).unwrap().data,
                    data,
                    "seed {seed}"
                );
            }
        }
    }
}
