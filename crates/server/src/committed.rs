//! The committed-index record: a small file beside the log (`<dataLogDir>/committed`) saying up to which
//! entry the log was committed and durable. At start, a log that ends before that entry has lost its end
//! (a segment deleted or truncated by something other than oxkeeper: the log itself never cuts off a synced
//! batch), and the member refuses to start instead of serving without acknowledged writes.
//!
//! The record follows the log, never leads it: a thread writes `min(committed, synced)` once a second when
//! it moved (`write_atomic`: three fdatasyncs, once a second at most), so neither a crash nor forceSync=no
//! (whose acknowledged entries are not synced yet) can leave it ahead of what recovery will find. It may lag
//! by a second: losing only the last second of the log goes unnoticed, as it would without the record.
//!
//! Format (21 bytes): `OXKCOMT\0`, version (1), the entry index (u64, little-endian), CRC32 of the 17 bytes
//! before it (little-endian).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use oxkeeper_storage::{read_file, write_atomic, RealDisk, WalWriter};

pub const FILE_NAME: &str = "committed";
const MAGIC: &[u8; 8] = b"OXKCOMT\0";
const VERSION: u8 = 1;
const LEN: usize = 21;
/// How often the record is brought up to date.
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

pub fn encode(index: u64) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8] = VERSION;
    out[9..17].copy_from_slice(&index.to_le_bytes());
    let crc = crc32fast::hash(&out[..17]);
    out[17..].copy_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() != LEN || &bytes[..8] != MAGIC {
        return Err(format!(
            "not a committed-index record ({} bytes)",
            bytes.len()
        ));
    }
    if bytes[8] != VERSION {
        return Err(format!(
            "committed-index record version {} (this oxkeeper reads {VERSION})",
            bytes[8]
        ));
    }
    let crc = u32::from_le_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]);
    if crc != crc32fast::hash(&bytes[..17]) {
        return Err("committed-index record: checksum mismatch".into());
    }
    let mut index = [0u8; 8];
    index.copy_from_slice(&bytes[9..17]);
    Ok(u64::from_le_bytes(index))
}

/// What the record should say: the committed entry, but never past the durable log.
pub fn to_record(committed: Option<u64>, synced: Option<u64>) -> Option<u64> {
    Some(committed?.min(synced?))
}

/// The record of one log directory. `committed` is told by openraft (`save_committed`); a thread of its own
/// writes the file.
#[derive(Debug)]
pub struct CommittedRecord {
    path: PathBuf,
    /// The committed index + 1 (0: none yet).
    committed: AtomicU64,
    /// What the file says + 1 (0: no file).
    written: AtomicU64,
}

impl CommittedRecord {
    /// Reads the record in `dir`: the record and what the file says, if there is one.
    pub fn open(dir: &Path) -> Result<(Arc<CommittedRecord>, Option<u64>), String> {
        let path = dir.join(FILE_NAME);
        let recorded = match read_file(&RealDisk, &path) {
            Ok(None) => None,
            Ok(Some(bytes)) => {
                Some(decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let record = CommittedRecord {
            path,
            committed: AtomicU64::new(0),
            written: AtomicU64::new(recorded.map_or(0, |i| i + 1)),
        };
        Ok((Arc::new(record), recorded))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// openraft committed up to `index`.
    pub fn committed(&self, index: u64) {
        self.committed.fetch_max(index + 1, Ordering::AcqRel);
    }

    /// Brings the file up to date with the log synced up to `synced`; what it now says if it was written.
    pub fn persist(&self, synced: Option<u64>) -> io::Result<Option<u64>> {
        let committed = self.committed.load(Ordering::Acquire).checked_sub(1);
        let Some(target) = to_record(committed, synced) else {
            return Ok(None);
        };
        if target < self.written.load(Ordering::Acquire) {
            return Ok(None);
        }
        write_atomic(&RealDisk, &self.path, &encode(target))?;
        self.written.store(target + 1, Ordering::Release);
        Ok(Some(target))
    }

    /// Starts the thread that keeps the file up to date with `wal`; it ends once either is dropped.
    pub fn spawn_persister(self: &Arc<Self>, wal: &Arc<WalWriter>) -> io::Result<()> {
        let (record, wal): (Weak<CommittedRecord>, Weak<WalWriter>) =
            (Arc::downgrade(self), Arc::downgrade(wal));
        std::thread::Builder::new()
            .name("oxkeeper-committed".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::sleep(PERSIST_INTERVAL);
                    let (Some(record), Some(wal)) = (record.upgrade(), wal.upgrade()) else {
                        return;
                    };
                    match record.persist(wal.synced_index()) {
                        Ok(_) if failing => {
                            failing = false;
                            tracing::info!(file = %record.path.display(), "committed-index record written again");
                        }
                        Ok(_) => {}
                        // A full device or the like: the record lags (it may, safely) until it works.
                        Err(error) if !failing => {
                            failing = true;
                            tracing::warn!(file = %record.path.display(), %error,
                                "cannot write the committed-index record; retrying every second");
                        }
                        Err(_) => {}
                    }
                }
            })?;
        Ok(())
    }
}

/// At start: an error naming what is missing if the log (with the snapshot) ends before the recorded entry.
pub fn check_log_end(
    dir: &Path,
    recorded: Option<u64>,
    last_in_log: Option<u64>,
) -> Result<(), String> {
    let Some(recorded) = recorded else {
        return Ok(());
    };
    if last_in_log.is_some_and(|last| last >= recorded) {
        return Ok(());
    }
    let file = dir.join(FILE_NAME);
    let (ends, way_out) = match last_in_log {
        Some(last) => (
            format!("ends at entry {last}"),
            format!(
                "To start with what is left (every write after entry {last} lost), remove {}.",
                file.display()
            ),
        ),
        // With neither log nor snapshot the member cannot even rejoin its own one-member cluster.
        None => (
            "is empty".to_string(),
            "Nothing is left to start from: to start empty (every write lost), move the data directory \
             aside."
                .to_string(),
        ),
    };
    Err(format!(
        "the log in {} {ends}, but entry {recorded} was committed and durable ({}): the end of the log \
         is missing (a log segment deleted or truncated). Restore this member's data directory from a \
         backup. {way_out}",
        dir.display(),
        file.display(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_fixed() {
        // A golden value: a change here is a change of the on-disk format (and needs a new version).
        assert_eq!(
            hex::encode(encode(0x0102_0304_0506_0708)),
            "4f584b434f4d5400010807060504030201378575eb"
        );
        assert_eq!(decode(&encode(42)), Ok(42));
        let mut bad = encode(42);
        bad[12] ^= 1;
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        let mut newer = encode(42);
        newer[8] = 2;
        assert!(decode(&newer).unwrap_err().contains("version 2"));
        assert!(decode(b"short").is_err());
    }

    #[test]
    fn the_record_never_leads_the_durable_log() {
        assert_eq!(to_record(Some(10), Some(7)), Some(7));
        assert_eq!(to_record(Some(5), Some(7)), Some(5));
        assert_eq!(to_record(Some(5), None), None);
        assert_eq!(to_record(None, Some(5)), None);
    }

    #[test]
    fn persist_writes_only_what_moved_and_never_past_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (record, recorded) = CommittedRecord::open(dir.path()).unwrap();
        assert_eq!(recorded, None);
        assert_eq!(
            record.persist(Some(3)).unwrap(),
            None,
            "nothing committed yet"
        );
        record.committed(9);
        assert_eq!(record.persist(Some(4)).unwrap(), Some(4));
        assert_eq!(record.persist(Some(4)).unwrap(), None, "unchanged");
        assert_eq!(record.persist(Some(20)).unwrap(), Some(9));
        let (_, recorded) = CommittedRecord::open(dir.path()).unwrap();
        assert_eq!(recorded, Some(9));
    }

    #[test]
    fn a_log_that_ends_before_the_record_is_refused() {
        let dir = Path::new("/data/log");
        assert!(check_log_end(dir, None, None).is_ok());
        assert!(check_log_end(dir, Some(5), Some(5)).is_ok());
        assert!(check_log_end(dir, Some(5), Some(9)).is_ok());
        let err = check_log_end(dir, Some(9), Some(5)).unwrap_err();
        assert!(
            err.contains("ends at entry 5")
                && err.contains("entry 9")
                && err.contains("/data/log/committed"),
            "{err}"
        );
        assert!(check_log_end(dir, Some(0), None)
            .unwrap_err()
            .contains("is empty"));
    }
}
