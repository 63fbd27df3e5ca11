//! ZooKeeper's restore (`FileTxnSnapLog.restore`): which snapshot and which logs are read, in what
//! order, and how the transactions reach [`ZkReplay`].
//!
//! - Snapshots, newest first (`FileSnap.deserialize`): one that does not end with a seal is skipped, one
//!   that fails to read (bad checksum, truncated) is noted and the next older one is tried.
//! - Logs (`FileTxnIterator`): every `log.<zxid>` named at or after the snapshot's zxid + 1, plus the
//!   newest one named before it, oldest first; the records before zxid + 1 are skipped, every record
//!   after that is applied in log order.
//! - The tree digest ZooKeeper 3.6+ stores in the snapshot and in each transaction is compared with the
//!   imported tree's where ZooKeeper compares it (after the snapshot's digest zxid, at the last
//!   transaction).

use crate::digest::{tree_digest, DIGEST_VERSION};
use crate::error::ImportError;
use crate::snapshot::{self, ZxidDigest};
use crate::txnlog::{self, LogEnd};
use crate::ZkImage;
use oxkeeper_core::import::ZkReplay;
use std::path::{Path, PathBuf};

/// `FileSnap.findNValidSnapshots(100)`: how many complete-looking snapshots ZooKeeper tries.
const SNAPSHOTS_TRIED_MAX: usize = 100;

/// A ZooKeeper file with the zxid its name carries.
pub(crate) type Named = (i64, PathBuf);

/// `Util.getZxidFromName`: `prefix.<hex zxid>[.anything]`.
pub(crate) fn zxid_from_name(name: &str, prefix: &str) -> Option<i64> {
    let mut parts = name.split('.');
    if parts.next()? != prefix {
        return None;
    }
    i64::from_str_radix(parts.next()?, 16)
        .ok()
        .filter(|z| *z >= 0)
}

/// The compression a snapshot's name says (`SnapStream.getStreamMode`), if any.
fn compression(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let last = name.rsplit('.').next()?;
    ["gz", "snappy"]
        .iter()
        .find(|m| m.eq_ignore_ascii_case(last))
        .map(|m| (*m).to_owned())
}

/// `FileTxnIterator.init`: the logs named at or after `target`, plus the newest named before it.
fn select_logs(logs: &[Named], target: i64) -> Vec<&Named> {
    let mut out = Vec::new();
    for log in logs.iter().rev() {
        out.push(log);
        if log.0 < target {
            break;
        }
    }
    out.reverse();
    out
}

fn epoch(zxid: i64) -> i64 {
    zxid >> 32
}

/// Reads the newest usable snapshot, then the logs after it. `snapshots` and `logs` are sorted by
/// the zxid in their names; `read` gives a file's bytes.
pub(crate) fn restore(
    dir: &Path,
    snapshots: &[Named],
    logs: &[Named],
    read: &mut dyn FnMut(&Path) -> Result<Vec<u8>, ImportError>,
) -> Result<ZkImage, ImportError> {
    if snapshots.is_empty() {
        return Err(if logs.is_empty() {
            ImportError::NoData {
                dir: dir.to_path_buf(),
            }
        } else {
            ImportError::NoSnapshot {
                dir: dir.to_path_buf(),
            }
        });
    }
    let mut notes = Vec::new();
    let mut reasons = Vec::new();
    let mut chosen = None;
    let mut tried = 0;
    for (zxid, path) in snapshots.iter().rev() {
        if tried == SNAPSHOTS_TRIED_MAX {
            break;
        }
        if let Some(method) = compression(path) {
            return Err(ImportError::Compressed {
                file: path.clone(),
                method,
            });
        }
        let bytes = match read(path) {
            Ok(b) => b,
            Err(e) => {
                notes.push(format!("{e}: snapshot skipped"));
                reasons.push(e.to_string());
                continue;
            }
        };
        if !snapshot::looks_complete(&bytes) {
            let why = format!(
                "{}: incomplete (it does not end with a seal), skipped as ZooKeeper skips it",
                path.display()
            );
            notes.push(why.clone());
            reasons.push(why);
            continue;
        }
        tried += 1;
        match snapshot::parse(path, &bytes) {
            Ok(s) => {
                chosen = Some((*zxid, path.clone(), s));
                break;
            }
            Err(e) => {
                notes.push(format!(
                    "{e}: snapshot unusable, an older one is used as ZooKeeper would"
                ));
                reasons.push(e.to_string());
            }
        }
    }
    let Some((snapshot_zxid, snapshot_path, snap)) = chosen else {
        return Err(ImportError::NoValidSnapshot {
            dir: dir.to_path_buf(),
            reasons,
        });
    };
    notes.extend(snap.notes);
    let mut replay = ZkReplay::from_snapshot(snap.nodes, &snap.sessions, snapshot_zxid)
        .map_err(|what| ImportError::corrupt(&snapshot_path, 0, what))?;

    // The tree digests (3.6+), compared where ZooKeeper compares them. `None`: nothing to compare
    // (another digest version).
    let mut verified = None;
    let mut compare = |replay: &ZkReplay, zxid: i64, version: i32, expected: i64| {
        if version != DIGEST_VERSION {
            return None;
        }
        let actual = tree_digest(replay.tree());
        verified = (actual == expected).then_some(zxid);
        Some((actual == expected).then_some(()).ok_or_else(|| {
            format!(
                "ZooKeeper's digest of its tree after {zxid:#x} is {expected:#x}, the imported tree's \
                 is {actual:#x}: some node may differ from what ZooKeeper had"
            )
        }))
    };
    // DataTree.deserializeZxidDigest: a digest older than the snapshot's zxid is not used; until the
    // replay reaches the digest's zxid the tree may be fuzzy and logged digests are not compared.
    // The snapshot's own digest can disagree with its tree even then: ZooKeeper records a
    // transaction's digest only after applying it, so a snapshot written meanwhile holds the change
    // but not its digest. So that mismatch only matters when no later digest confirms the result.
    let mut fuzzy_until: Option<ZxidDigest> = snap.digest.filter(|d| d.zxid >= snapshot_zxid);
    let mut snapshot_mismatch = None;
    if let Some(d) = fuzzy_until.filter(|d| d.zxid == snapshot_zxid) {
        if let Some(Err(m)) = compare(&replay, d.zxid, d.version, d.digest) {
            snapshot_mismatch = Some(m);
        }
        fuzzy_until = None;
    }

    let target = snapshot_zxid.saturating_add(1);
    let selected = select_logs(logs, target);
    let mut fast_forward = true;
    let mut previous = snapshot_zxid;
    let mut last_digest = None;
    let mut txns_applied = 0u64;
    let mut logs_read = Vec::new();
    for (i, (_, path)) in selected.iter().enumerate() {
        let bytes = read(path)?;
        let Some(log) = txnlog::parse(path, &bytes)? else {
            if i + 1 == selected.len() {
                notes.push(format!(
                    "{}: empty (ZooKeeper deletes an empty last log)",
                    path.display()
                ));
                continue;
            }
            return Err(ImportError::corrupt(
                path,
                0,
                "an empty transaction log that is not the last one",
            ));
        };
        logs_read.push(path.clone());
        for rec in log.records {
            let zxid = rec.txn.hdr.zxid;
            if fast_forward {
                if zxid < target {
                    continue;
                }
                fast_forward = false;
            }
            if zxid <= previous {
                notes.push(format!(
                    "{} offset {}: zxid {zxid:#x} is not above {previous:#x}; applied anyway, as \
                     ZooKeeper applies it",
                    path.display(),
                    rec.offset
                ));
            } else {
                let missing_from = if epoch(zxid) == epoch(previous) {
                    previous + 1
                } else {
                    zxid & !0xffff_ffff | 1
                };
                if zxid > missing_from {
                    notes.push(format!(
                        "{} offset {}: transactions {missing_from:#x} to {:#x} are missing from the \
                         logs (purged or lost); what they changed is not imported",
                        path.display(),
                        rec.offset,
                        zxid - 1
                    ));
                }
            }
            previous = previous.max(zxid);
            replay
                .apply(&rec.txn.hdr, &rec.txn.txn)
                .map_err(|what| ImportError::Replay {
                    file: path.clone(),
                    offset: rec.offset,
                    zxid,
                    what,
                })?;
            txns_applied += 1;
            match fuzzy_until {
                Some(d) if d.zxid == zxid => {
                    if let Some(Err(m)) = compare(&replay, d.zxid, d.version, d.digest) {
                        snapshot_mismatch = Some(m);
                    }
                    fuzzy_until = None;
                }
                Some(_) => {}
                None => last_digest = rec.txn.digest.map(|d| (zxid, d)),
            }
        }
        match log.end {
            LogEnd::Eof | LogEnd::Padding { stray: 0, .. } => {}
            LogEnd::Padding { offset, stray } => notes.push(format!(
                "{} offset {offset}: {stray} non-zero byte(s) in the padding after the last record \
                 ignored, as ZooKeeper ignores them",
                path.display()
            )),
            LogEnd::Torn { offset, reason } => notes.push(format!(
                "{} offset {offset}: {reason} (a write cut short); it and the rest of the file \
                 ({} byte(s)) are ignored, as ZooKeeper ignores them",
                path.display(),
                bytes.len() as u64 - offset
            )),
        }
    }
    match last_digest.and_then(|(zxid, d)| compare(&replay, zxid, d.version, d.tree_digest)) {
        Some(Ok(())) => {}
        Some(Err(m)) => notes.push(m),
        None => notes.extend(snapshot_mismatch.map(|m| {
            format!(
                "{m} (no later digest to check the result against: the snapshot may have been \
                 written while ZooKeeper applied a transaction, or be damaged)"
            )
        })),
    }
    let (image, replay_notes) = replay
        .finish()
        .map_err(|what| ImportError::corrupt(&snapshot_path, 0, what))?;
    notes.extend(replay_notes);
    Ok(ZkImage {
        image,
        notes,
        snapshot: snapshot_path,
        snapshot_zxid,
        logs: logs_read,
        txns_applied,
        digest_verified_at: verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_util_get_zxid_from_name() {
        assert_eq!(zxid_from_name("log.1f", "log"), Some(0x1f));
        assert_eq!(
            zxid_from_name("snapshot.100000002", "snapshot"),
            Some(0x1_0000_0002)
        );
        assert_eq!(zxid_from_name("snapshot.2a.gz", "snapshot"), Some(0x2a));
        assert_eq!(zxid_from_name("snapshot.2a", "log"), None);
        assert_eq!(zxid_from_name("log.", "log"), None);
        assert_eq!(zxid_from_name("log.xyz", "log"), None);
        assert_eq!(zxid_from_name("logs.1", "log"), None);
        assert_eq!(
            compression(Path::new("/d/snapshot.2a.gz")).as_deref(),
            Some("gz")
        );
        assert_eq!(
            compression(Path::new("snapshot.2a.SNAPPY")).as_deref(),
            Some("snappy")
        );
        assert_eq!(compression(Path::new("snapshot.2a")), None);
    }

    #[test]
    fn logs_are_chosen_as_file_txn_iterator_chooses_them() {
        let logs: Vec<Named> = [1, 0x10, 0x20, 0x30]
            .iter()
            .map(|z| (*z, PathBuf::from(format!("log.{z:x}"))))
            .collect();
        let zxids = |t| {
            select_logs(&logs, t)
                .iter()
                .map(|l| l.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(zxids(0x15), [0x10, 0x20, 0x30]);
        assert_eq!(zxids(0x20), [0x10, 0x20, 0x30]);
        assert_eq!(zxids(0x21), [0x20, 0x30]);
        assert_eq!(zxids(0x99), [0x30]);
        assert_eq!(zxids(1), [1, 0x10, 0x20, 0x30]);
        assert!(select_logs(&[], 5).is_empty());
    }
}
