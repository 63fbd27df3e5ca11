//! Tests of `Wal` and its recovery on `SimDisk`, power loss included.

use super::*;
use crate::disk::{RealDisk, SHRINK_STEP_BYTES};
use crate::format::{BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};
use crate::sim::{SimDisk, SimFault};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn dir() -> PathBuf {
    PathBuf::from("/data/wal")
}

/// Purged files unlinked and every segment created on the caller's thread: every disk operation happens
/// in the test's order (the crash countdown counts them). The unlinking and preparing threads have tests
/// of their own.
fn small(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        unlink_purged_in_background: false,
        prepare_segments: false,
        ..WalOptions::default()
    }
}

/// `small`, with purged files unlinked on the log's own thread (the default).
fn unlinking_in_background(opts: WalOptions) -> WalOptions {
    WalOptions {
        unlink_purged_in_background: true,
        ..opts
    }
}

/// Waits (up to a generous deadline) until no purged file is left in the log's directory: the unlinking
/// thread has dealt with every one, in its own time (not in a hurry, as when the log is dropped).
fn wait_for_purged_files_to_go(disk: &SimDisk) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while file_names(disk).iter().any(|n| n.ends_with(".purged")) {
        assert!(
            std::time::Instant::now() < deadline,
            "purged files left: {:?}",
            file_names(disk)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every file in the log's directory, by name.
fn file_names(disk: &SimDisk) -> Vec<String> {
    let mut names: Vec<String> = disk
        .list(&dir())
        .unwrap()
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
        .collect();
    names.sort();
    names
}

fn open(disk: &SimDisk, opts: &WalOptions) -> (Wal<SimDisk>, Recovered) {
    Wal::open(disk.clone(), &dir(), opts.clone()).expect("recovery succeeds")
}

fn reopen(disk: &SimDisk, opts: &WalOptions) -> Recovered {
    open(disk, opts).1
}

fn entry(index: u64) -> Vec<u8> {
    format!("entry number {index}").into_bytes()
}

fn append_range(wal: &mut Wal<SimDisk>, indices: std::ops::RangeInclusive<u64>) {
    let owned: Vec<(u64, Vec<u8>)> = indices.map(|i| (i, entry(i))).collect();
    let borrowed: Vec<(u64, &[u8])> = owned.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    wal.append(&borrowed).unwrap();
}

fn expected(indices: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    indices.map(|i| (i, entry(i))).collect()
}

fn segment_path(first_index: u64) -> PathBuf {
    dir().join(format::segment_file_name(first_index))
}

fn segment_names(disk: &SimDisk) -> Vec<u64> {
    let mut names: Vec<u64> = disk
        .list(&dir())
        .unwrap()
        .iter()
        .filter_map(|p| format::parse_segment_file_name(p.file_name()?.to_str()?))
        .collect();
    names.sort();
    names
}

/// Bytes a batch of `entries` takes on disk.
fn batch_len(entries: &[Vec<u8>]) -> u64 {
    (BATCH_HEADER_BYTES
        + entries
            .iter()
            .map(|e| RECORD_HEADER_BYTES + e.len())
            .sum::<usize>()) as u64
}

/// Overwrites bytes of a file durably, as damage on the medium would.
fn poke(disk: &SimDisk, path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = disk.open(path, false).unwrap();
    file.write_at(offset, bytes).unwrap();
    file.sync_data().unwrap();
}

fn flip(disk: &SimDisk, path: &Path, offset: u64) {
    let mut byte = [0u8];
    disk.open(path, false)
        .unwrap()
        .read_at(offset, &mut byte)
        .unwrap();
    poke(disk, path, offset, &[byte[0] ^ 0x01]);
}

#[test]
fn appended_entries_are_recovered_after_reopen() {
    let disk = SimDisk::new();
    let opts = small(256);
    let (mut wal, recovered) = open(&disk, &opts);
    assert_eq!(recovered, Recovered::default());
    for i in 1..=40 {
        append_range(&mut wal, i..=i);
    }
    append_range(&mut wal, 41..=45);
    assert_eq!(wal.last_index(), Some(45));
    assert_eq!(wal.synced_index(), Some(45));
    drop(wal);
    let recovered = reopen(&disk, &opts);
    assert_eq!(recovered.first_index, 1);
    assert_eq!(recovered.entries, expected(1..=45));
    assert_eq!(recovered.truncated_tail, None);
    assert!(segment_names(&disk).len() > 3, "small segments roll");
}

/// The same on the real file system, written around the page cache where it allows that
/// (`WalOptions::direct_writes`, the default), through both segment rolls and zeroing ahead, and after a
/// reopen (the block the log ends in is then read back, not kept): and both ways agree.
#[test]
fn a_log_on_the_real_disk_reads_back_whether_written_around_the_page_cache_or_not() {
    for direct_writes in [true, false] {
        let dir = std::env::temp_dir().join(format!(
            "oxkeeper-wal-direct-{direct_writes}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        RealDisk.create_dir_all(&dir).unwrap();
        let opts = WalOptions {
            segment_bytes: 96 << 10,
            zero_ahead_bytes: 16 << 10,
            direct_writes,
            ..small(0)
        };
        let batch = |from: u64, to: u64| -> Vec<(u64, Vec<u8>)> {
            (from..=to)
                .map(|i| {
                    (
                        i,
                        format!("{i:>width$}", width = (i % 300) as usize).into_bytes(),
                    )
                })
                .collect()
        };
        let append = |wal: &mut Wal<RealDisk>, from: u64, to: u64| {
            let owned = batch(from, to);
            let borrowed: Vec<(u64, &[u8])> =
                owned.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            wal.append(&borrowed).unwrap();
        };
        let (mut wal, _) = Wal::open(RealDisk, &dir, opts.clone()).unwrap();
        let mut next = 1;
        for n in (1..400).map(|k| k % 7 + 1) {
            append(&mut wal, next, next + n - 1);
            next += n;
        }
        drop(wal);
        let (mut wal, recovered) = Wal::open(RealDisk, &dir, opts.clone()).unwrap();
        assert_eq!(
            recovered.entries,
            batch(1, next - 1),
            "direct_writes {direct_writes}"
        );
        assert_eq!(recovered.truncated_tail, None);
        for n in (1..100).map(|k| k % 5 + 1) {
            append(&mut wal, next, next + n - 1);
            next += n;
        }
        let segments = wal.segment_count();
        drop(wal);
        let (_, recovered) = Wal::open(RealDisk, &dir, opts).unwrap();
        assert_eq!(
            recovered.entries,
            batch(1, next - 1),
            "direct_writes {direct_writes}"
        );
        assert!(segments > 3, "{segments} segments: the log rolled");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn one_append_is_one_batch_and_one_fdatasync() {
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=1); // creates the segment
    let before = disk.sync_data_calls();
    append_range(&mut wal, 2..=50);
    assert_eq!(disk.sync_data_calls() - before, 1);
}

/// Appends `batches` one-entry batches after the last entry; returns the fdatasyncs that committed a
/// change of the segment's block map (`SimDisk::block_map_syncs`) and the bytes appended.
fn block_map_syncs_of(disk: &SimDisk, wal: &mut Wal<SimDisk>, batches: u64) -> (u64, u64) {
    let first = wal.last_index().map_or(1, |last| last + 1);
    let before = disk.block_map_syncs();
    let mut bytes = 0;
    for i in first..first + batches {
        append_range(wal, i..=i);
        bytes += batch_len(&[entry(i)]);
    }
    (disk.block_map_syncs() - before, bytes)
}

#[test]
fn zeroing_ahead_keeps_batches_off_pages_the_segment_never_wrote() {
    const AHEAD: u64 = 32 << 10;
    let with = |zero_ahead_bytes| WalOptions {
        zero_ahead_bytes,
        ..small(4 << 20)
    };
    // Without zeroing ahead every page the log reaches changes the block map (the counter works).
    let disk = SimDisk::new();
    let (mut wal, _) = open(&disk, &with(0));
    let (syncs, bytes) = block_map_syncs_of(&disk, &mut wal, 3000);
    assert!(
        bytes > 4 * AHEAD,
        "the log must cross several chunks: {bytes} B"
    );
    assert!(
        syncs >= bytes / 4096,
        "{syncs} block map syncs for {bytes} B"
    );

    // With it, only the fdatasync after each zeroing does, about one per half chunk.
    let disk = SimDisk::new();
    let opts = with(AHEAD);
    let (mut wal, _) = open(&disk, &opts);
    let (syncs, bytes) = block_map_syncs_of(&disk, &mut wal, 3000);
    let most = 2 + bytes / (AHEAD / 2);
    assert!(
        syncs <= most,
        "{syncs} block map syncs for {bytes} B, at most {most} expected"
    );
    // The zeros change no content: everything past the last batch still reads as the end of the log.
    drop(wal);
    let recovered = reopen(&disk, &opts);
    assert_eq!(recovered.entries, expected(1..=3000));
    assert_eq!(recovered.truncated_tail, None);

    // A reopened log zeroes ahead of where recovery found its end.
    let (mut wal, _) = open(&disk, &opts);
    let (syncs, bytes) = block_map_syncs_of(&disk, &mut wal, 3000);
    assert!(
        syncs <= most,
        "after reopening: {syncs} block map syncs for {bytes} B"
    );
    drop(wal);
    assert_eq!(reopen(&disk, &opts).entries, expected(1..=6000));
}

#[test]
fn appends_must_continue_the_log_but_an_empty_log_starts_anywhere() {
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 100..=101);
    let gap = wal.append(&[(103, b"x".as_slice())]).unwrap_err();
    assert!(matches!(
        gap,
        WalError::NotConsecutive {
            expected: 102,
            got: 103
        }
    ));
    let inner_gap = wal.append(&[(102, b"x".as_slice()), (104, b"y".as_slice())]);
    assert!(matches!(inner_gap, Err(WalError::NotConsecutive { .. })));
    // A refused append is the caller's mistake, not the disk's: the log keeps working.
    append_range(&mut wal, 102..=102);
    wal.append(&[]).unwrap();
    drop(wal);
    let recovered = reopen(&disk, &opts);
    assert_eq!(recovered.first_index, 100);
    assert_eq!(recovered.entries, expected(100..=102));
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let disk = SimDisk::new();
    let opts = small(200);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=1);
    let big = vec![7u8; 1000];
    wal.append(&[(2, big.as_slice())]).unwrap();
    append_range(&mut wal, 3..=3);
    drop(wal);
    assert_eq!(segment_names(&disk), [1, 2, 3]);
    let recovered = reopen(&disk, &opts);
    assert_eq!(recovered.entries[1], (2, big));
    assert_eq!(recovered.entries.len(), 3);
}

#[test]
fn truncate_after_drops_later_entries_durably() {
    let disk = SimDisk::new();
    let (mut wal, opts) = in_threes_on_300_byte_segments(&disk, 60);
    let segments_before = segment_names(&disk);
    // Index 29 is in the middle of batch 28..=30, in an earlier segment.
    wal.truncate_after(29).unwrap();
    assert_eq!(wal.last_index(), Some(29));
    assert_eq!(wal.synced_index(), Some(29));
    assert!(segment_names(&disk).len() < segments_before.len());
    // Power loss right after: the truncation holds, whatever was not synced.
    drop(wal);
    disk.power_loss(&mut StdRng::seed_from_u64(3));
    let (mut wal, recovered) = open(&disk, &opts);
    assert_eq!(recovered.entries, expected(1..=29));
    let replaced = b"a different entry 30".to_vec();
    wal.append(&[(30, replaced.as_slice())]).unwrap();
    append_range(&mut wal, 31..=40);
    // Truncating at or past the end does nothing.
    wal.truncate_after(40).unwrap();
    wal.truncate_after(1000).unwrap();
    drop(wal);
    let recovered = reopen(&disk, &opts);
    let mut want = expected(1..=40);
    want[29].1 = replaced;
    assert_eq!(recovered.entries, want);
}

#[test]
fn clear_drops_every_entry_and_the_next_append_starts_anywhere() {
    let disk = SimDisk::new();
    let opts = small(200);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=20);
    append_range(&mut wal, 21..=21);
    wal.clear().unwrap();
    assert_eq!(wal.last_index(), None);
    assert!(segment_names(&disk).is_empty());
    append_range(&mut wal, 500..=501);
    drop(wal);
    assert_eq!(reopen(&disk, &opts).entries, expected(500..=501));
}

/// Entries 1..=9 as single-entry batches, two per segment (entries 1..=9 have the same length): segments
/// 1, 3, 5, 7 and 9.
fn nine_entries_two_per_segment(disk: &SimDisk) -> (Wal<SimDisk>, WalOptions) {
    let one = batch_len(&[entry(1)]);
    let opts = small(SEGMENT_HEADER_BYTES as u64 + 2 * one);
    let (mut wal, _) = open(disk, &opts);
    for i in 1..=9 {
        append_range(&mut wal, i..=i);
    }
    (wal, opts)
}

/// A log of 300-byte segments holding entries `1..=last` (a multiple of 3) appended three to a batch.
fn in_threes_on_300_byte_segments(disk: &SimDisk, last: u64) -> (Wal<SimDisk>, WalOptions) {
    let opts = small(300);
    let (mut wal, _) = open(disk, &opts);
    for i in (1..=last).step_by(3) {
        append_range(&mut wal, i..=i + 2);
    }
    (wal, opts)
}

#[test]
fn purge_removes_only_whole_segments_of_purged_entries() {
    let disk = SimDisk::new();
    let (mut wal, opts) = nine_entries_two_per_segment(&disk);
    assert_eq!(segment_names(&disk), [1, 3, 5, 7, 9]);
    wal.purge_upto(4).unwrap();
    assert_eq!(segment_names(&disk), [5, 7, 9]);
    assert_eq!(wal.first_index(), Some(5));
    // Entry 5 shares a segment with 6: it stays.
    wal.purge_upto(5).unwrap();
    assert_eq!(segment_names(&disk), [5, 7, 9]);
    drop(wal);
    let (mut wal, recovered) = open(&disk, &opts);
    assert_eq!(recovered.first_index, 5);
    assert_eq!(recovered.entries, expected(5..=9));
    // Purging past the end removes everything; the next append may start anywhere (after a snapshot).
    wal.purge_upto(100).unwrap();
    assert_eq!(wal.last_index(), None);
    assert!(segment_names(&disk).is_empty());
    append_range(&mut wal, 101..=102);
    drop(wal);
    assert_eq!(reopen(&disk, &opts).entries, expected(101..=102));
}

#[test]
fn a_torn_last_batch_is_cut_off_and_reported() {
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=3);
    append_range(&mut wal, 4..=5);
    drop(wal);
    let path = segment_path(1);
    let torn_at = SEGMENT_HEADER_BYTES as u64 + batch_len(&[entry(1), entry(2), entry(3)]);
    // Half of a batch made it to disk: cut the second batch short by zeroing its end.
    let second = batch_len(&[entry(4), entry(5)]);
    poke(
        &disk,
        &path,
        torn_at + second / 2,
        &vec![0; (second - second / 2) as usize],
    );
    let (mut wal, recovered) = open(&disk, &opts);
    assert_eq!(recovered.entries, expected(1..=3));
    assert_eq!(recovered.truncated_tail, Some((path.clone(), torn_at)));
    // The cut region is zeroed, so the log continues cleanly where the torn batch was.
    append_range(&mut wal, 4..=4);
    drop(wal);
    let recovered = reopen(&disk, &opts);
    assert_eq!(recovered.entries, expected(1..=4));
    assert_eq!(recovered.truncated_tail, None);
}

#[test]
fn a_damaged_earlier_batch_is_corruption_naming_file_and_offset() {
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=3);
    append_range(&mut wal, 4..=5);
    drop(wal);
    let path = segment_path(1);
    let first_batch = SEGMENT_HEADER_BYTES as u64;
    for offset in [first_batch + 1, first_batch + 9, first_batch + 40] {
        let disk = disk.clone();
        flip(&disk, &path, offset);
        let error = Wal::open(disk.clone(), &dir(), opts.clone())
            .err()
            .expect("corruption is refused");
        match &error {
            WalError::Corrupt {
                file, offset: at, ..
            } => {
                assert_eq!(file, &path);
                assert_eq!(*at, first_batch);
            }
            other => panic!("expected Corrupt, got {other}"),
        }
        let text = error.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("offset 32"),
            "{text}"
        );
        flip(&disk, &path, offset);
    }
    // Undamaged again: it opens, and nothing was cut.
    assert_eq!(reopen(&disk, &opts).entries, expected(1..=5));
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_corruption() {
    let disk = SimDisk::new();
    let opts = small(100);
    let (mut wal, _) = open(&disk, &opts);
    for i in 1..=3 {
        append_range(&mut wal, i..=i);
    }
    drop(wal);
    assert_eq!(segment_names(&disk), [1, 2, 3]);
    // Damage to the last batch of segment 2: on its own it would look torn, but segment 3 exists.
    let path = segment_path(2);
    flip(&disk, &path, SEGMENT_HEADER_BYTES as u64 + 20);
    let error = Wal::open(disk.clone(), &dir(), opts.clone()).err().unwrap();
    assert!(
        matches!(&error, WalError::Corrupt { file, .. } if file == &path),
        "{error}"
    );
    flip(&disk, &path, SEGMENT_HEADER_BYTES as u64 + 20);
    // Damage to a segment header.
    flip(&disk, &path, 3);
    let error = Wal::open(disk.clone(), &dir(), opts.clone()).err().unwrap();
    assert!(
        matches!(&error, WalError::Corrupt { file, offset: 0, .. } if file == &path),
        "{error}"
    );
}

#[test]
fn a_missing_segment_is_corruption() {
    let disk = SimDisk::new();
    let opts = small(100);
    let (mut wal, _) = open(&disk, &opts);
    for i in 1..=3 {
        append_range(&mut wal, i..=i);
    }
    drop(wal);
    disk.remove(&segment_path(2)).unwrap();
    let error = Wal::open(disk.clone(), &dir(), opts.clone()).err().unwrap();
    assert!(
        matches!(&error, WalError::Corrupt { file, .. } if file == &segment_path(3)),
        "{error}"
    );
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn a_newer_format_version_is_refused_by_name() {
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=1);
    drop(wal);
    let path = segment_path(1);
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    disk.open(&path, false)
        .unwrap()
        .read_at(0, &mut header)
        .unwrap();
    header[8] = 9;
    header[12..16].fill(0);
    let crc = crc32fast::hash(&header);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    poke(&disk, &path, 0, &header);
    let error = Wal::open(disk.clone(), &dir(), opts).err().unwrap();
    assert!(
        matches!(error, WalError::UnsupportedVersion { version: 9, .. }),
        "{error}"
    );
}

#[test]
fn an_interrupted_segment_roll_leaves_no_empty_segment_behind() {
    let opts = small(100); // one batch of these per segment
    let mut rng = StdRng::seed_from_u64(0);
    // Crash at each step of the roll: create, truncate, preallocate, header, sync, sync_dir, batch...
    for crash_at in 0..9 {
        for _ in 0..10 {
            let disk = SimDisk::new();
            let (mut wal, _) = open(&disk, &opts);
            append_range(&mut wal, 1..=1);
            disk.crash_after(crash_at);
            let acknowledged = wal.append(&[(2, b"maybe".as_slice())]).is_ok();
            drop(wal);
            disk.power_loss(&mut rng);
            let (wal, recovered) = open(&disk, &opts);
            let last = recovered.last_index().unwrap();
            assert!(
                last == 2 || (last == 1 && !acknowledged),
                "crash at {crash_at}"
            );
            assert_eq!(segment_names(&disk), (1..=last).collect::<Vec<_>>());
            assert_eq!(wal.last_index(), Some(last));
        }
    }
}

/// The bytes of the segment at `first_index` from `from` on, as the running system sees them.
fn bytes_after(disk: &SimDisk, first_index: u64, from: u64) -> Vec<u8> {
    disk.contents(&segment_path(first_index)).unwrap()[from as usize..].to_vec()
}

#[test]
fn no_space_while_preallocating_leaves_the_log_as_it_was_and_a_retry_succeeds() {
    for fault in [SimFault::NoSpace, SimFault::NoSpaceTorn] {
        let disk = SimDisk::new();
        let opts = small(100); // every append rolls
        let (mut wal, _) = open(&disk, &opts);
        append_range(&mut wal, 1..=1);
        let segment_one = disk.contents(&segment_path(1)).unwrap();
        disk.set_fault(Some(fault));
        for _ in 0..3 {
            let error = wal.append(&[(2, b"x".as_slice())]).unwrap_err();
            assert!(
                matches!(
                    error,
                    WalError::NoSpace {
                        op: "preallocating",
                        ..
                    }
                ),
                "{fault:?}: {error}"
            );
            assert!(wal.stopped().is_none(), "out of space is not fatal");
            assert_eq!(wal.last_index(), Some(1));
            assert_eq!(wal.synced_index(), Some(1));
            // The half-made segment is gone again, and the current one is untouched.
            assert_eq!(segment_names(&disk), [1], "{fault:?}");
            assert_eq!(disk.contents(&segment_path(1)).unwrap(), segment_one);
        }
        disk.set_fault(None);
        wal.append(&[(2, b"x".as_slice())]).unwrap();
        append_range(&mut wal, 3..=3);
        drop(wal);
        disk.power_loss(&mut StdRng::seed_from_u64(0));
        let recovered = reopen(&disk, &opts);
        assert_eq!(recovered.entries.len(), 3);
        assert_eq!(recovered.entries[1], (2, b"x".to_vec()));
        assert_eq!(recovered.truncated_tail, None);
    }
}

#[test]
fn a_write_cut_short_by_a_full_disk_is_rewritten_whole_at_the_same_offset() {
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=3);
    let end = SEGMENT_HEADER_BYTES as u64 + batch_len(&[entry(1), entry(2), entry(3)]);
    disk.set_fault_times(SimFault::NoSpaceTorn, 1);
    let owned: Vec<(u64, Vec<u8>)> = (4..=6).map(|i| (i, entry(i))).collect();
    let borrowed: Vec<(u64, &[u8])> = owned.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    let error = wal.append(&borrowed).unwrap_err();
    assert!(
        matches!(error, WalError::NoSpace { op: "writing", .. }),
        "{error}"
    );
    assert!(
        bytes_after(&disk, 1, end).iter().any(|&b| b != 0),
        "half a batch was left behind"
    );
    // Space is back (the fault was for one write): the retry writes the whole batch where it was.
    wal.append(&borrowed).unwrap();
    append_range(&mut wal, 7..=7);
    drop(wal);
    let recovered = reopen(&disk, &opts);
    assert_eq!(recovered.entries, expected(1..=7));
    assert_eq!(recovered.truncated_tail, None);
}

#[test]
fn a_shorter_batch_after_a_cut_short_write_zeroes_what_that_write_left() {
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=1);
    let end = SEGMENT_HEADER_BYTES as u64 + batch_len(&[entry(1)]);
    disk.set_fault_times(SimFault::NoSpaceTorn, 1);
    let big = vec![0xEEu8; 600];
    wal.append(&[(2, big.as_slice())]).unwrap_err();
    // A different, shorter batch at the same offset: its write also zeroes the rest of the debris.
    append_range(&mut wal, 2..=2);
    let after = end + batch_len(&[entry(2)]);
    assert!(bytes_after(&disk, 1, after).iter().all(|&b| b == 0));
    // ... durably: whatever a power loss keeps, the log ends cleanly after entry 2.
    drop(wal);
    for seed in 0..8 {
        disk.power_loss(&mut StdRng::seed_from_u64(seed));
        let recovered = reopen(&disk, &opts);
        assert_eq!(recovered.entries, expected(1..=2));
        assert_eq!(recovered.truncated_tail, None);
    }
}

#[test]
fn a_roll_after_a_cut_short_write_zeroes_the_old_segment_first() {
    let disk = SimDisk::new();
    let one = batch_len(&[entry(1)]);
    // Room for two single-entry batches: the failed one fits, the larger retry does not.
    let opts = small(SEGMENT_HEADER_BYTES as u64 + 2 * one);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=1);
    disk.set_fault_times(SimFault::NoSpaceTorn, 1);
    wal.append(&[(2, entry(2).as_slice())]).unwrap_err();
    // The retry carries more entries (the writer may merge what queued meanwhile) and rolls. The
    // debris would otherwise sit in a segment that is no longer the last: corruption at the next start.
    append_range(&mut wal, 2..=5);
    assert_eq!(segment_names(&disk), [1, 2]);
    drop(wal);
    assert_eq!(reopen(&disk, &opts).entries, expected(1..=5));
    for seed in 0..8 {
        disk.power_loss(&mut StdRng::seed_from_u64(seed));
        assert_eq!(reopen(&disk, &opts).entries, expected(1..=5));
    }
}

#[test]
fn a_truncation_out_of_space_can_be_retried() {
    let disk = SimDisk::new();
    let (mut wal, opts) = in_threes_on_300_byte_segments(&disk, 30);
    disk.set_fault(Some(SimFault::NoSpace));
    let error = wal.truncate_after(4).unwrap_err();
    assert!(error.is_no_space(), "{error}");
    assert!(wal.stopped().is_none());
    disk.set_fault(None);
    wal.truncate_after(4).unwrap();
    assert_eq!(wal.last_index(), Some(4));
    append_range(&mut wal, 5..=6);
    drop(wal);
    assert_eq!(reopen(&disk, &opts).entries, expected(1..=6));
}

#[test]
fn an_io_error_on_a_write_or_an_fdatasync_stops_the_log() {
    for fault in [SimFault::WriteIo, SimFault::SyncIo] {
        let disk = SimDisk::new();
        let opts = small(4096);
        let (mut wal, _) = open(&disk, &opts);
        append_range(&mut wal, 1..=1);
        disk.set_fault_times(fault, 1);
        let error = wal.append(&[(2, b"x".as_slice())]).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EIO), "{fault:?}: {error}");
        assert!(!error.is_no_space());
        assert!(wal.stopped().is_some());
        // The disk works again, but what the kernel did with the unsynced pages is unknown.
        let error = wal.append(&[(2, b"x".as_slice())]).unwrap_err();
        assert!(matches!(error, WalError::Stopped(_)), "{fault:?}: {error}");
        assert!(!error.is_no_space());
        assert!(wal.truncate_after(0).is_err() && wal.purge_upto(0).is_err());
        drop(wal);
        let recovered = reopen(&disk, &opts);
        assert!(recovered.last_index() <= Some(2));
        assert_eq!(recovered.entries[0], (1, entry(1)));
    }
}

#[test]
fn entries_ending_in_zeros_are_not_mistaken_for_a_clean_end() {
    // A valid batch whose last bytes are zeros ends after the last non-zero byte; damage before it
    // must still be found.
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=1);
    let zeros = vec![0u8; 100];
    wal.append(&[(2, zeros.as_slice())]).unwrap();
    drop(wal);
    flip(&disk, &segment_path(1), SEGMENT_HEADER_BYTES as u64 + 2);
    let error = Wal::open(disk.clone(), &dir(), opts).err().unwrap();
    assert!(
        matches!(error, WalError::Corrupt { offset: 32, .. }),
        "{error}"
    );
}

/// What the log may hold after a power loss: the acknowledged entries, by index, and which must be
/// there. Entries below `must_from` may or may not be (purges remove whole segments only).
#[derive(Clone, Debug, Default)]
struct Model {
    entries: BTreeMap<u64, Vec<u8>>,
    last: Option<u64>,
    must_from: u64,
}

/// An operation that was in progress when the power failed: its effect may or may not be on disk.
enum InFlight {
    Append(Vec<(u64, Vec<u8>)>),
    Truncate(u64),
    Purge(u64),
    Clear,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InFlight::Append(batch) => write!(
                f,
                "Append({:?}..={:?})",
                batch[0].0,
                batch[batch.len() - 1].0
            ),
            InFlight::Truncate(index) => write!(f, "Truncate({index})"),
            InFlight::Purge(index) => write!(f, "Purge({index})"),
            InFlight::Clear => write!(f, "Clear"),
        }
    }
}

impl Model {
    fn append(&mut self, batch: &[(u64, Vec<u8>)]) {
        if self.last.is_none() {
            self.must_from = batch[0].0;
        }
        self.entries.extend(batch.iter().cloned());
        self.last = batch.last().map(|(i, _)| *i);
    }

    fn truncate(&mut self, index: u64) {
        if self.last.is_some_and(|last| index < last) {
            self.entries.retain(|i, _| *i <= index);
            self.last = Some(index);
        }
    }

    fn purge(&mut self, index: u64) {
        match self.last {
            Some(last) if index >= last => *self = Model::default(),
            Some(_) => self.must_from = self.must_from.max(index + 1),
            None => {}
        }
    }

    /// Is `found` a contiguous run of known entries, with the right bytes?
    fn known_run(&self, found: &Recovered) -> bool {
        found.entries.windows(2).all(|w| w[1].0 == w[0].0 + 1)
            && found
                .entries
                .iter()
                .all(|(i, bytes)| self.entries.get(i) == Some(bytes))
    }

    /// Does `found` hold exactly what this model says must be there?
    fn allows(&self, found: &Recovered) -> bool {
        match self.last {
            None => found.entries.is_empty(),
            Some(last) => {
                found.last_index() == Some(last)
                    && found.first_index <= self.must_from
                    && self.known_run(found)
            }
        }
    }

    fn allows_with(&self, found: &Recovered, in_flight: &Option<InFlight>) -> bool {
        let Some(op) = in_flight else {
            return self.allows(found);
        };
        let mut after = self.clone();
        match op {
            InFlight::Append(batch) => {
                after.append(batch);
                self.allows(found) || after.allows(found)
            }
            // Removed newest first, then cut inside one segment: the log ends anywhere in between.
            InFlight::Truncate(index) => (*index..=self.last.unwrap_or(0)).any(|j| {
                let mut after = self.clone();
                after.truncate(j);
                after.allows(found)
            }),
            // Removed oldest first: any later first index, the same last one (or nothing after a
            // purge of everything).
            InFlight::Purge(index) => {
                let last = self.last.unwrap_or(0);
                after.must_from = self.must_from.max((*index + 1).min(last));
                after.allows(found) || (*index >= last && found.entries.is_empty())
            }
            // Removed newest first: any prefix of the segments.
            InFlight::Clear => {
                found.entries.is_empty()
                    || (self.known_run(found)
                        && found.first_index <= self.must_from
                        && found.last_index() <= self.last)
            }
        }
    }

    fn from_recovered(found: &Recovered) -> Model {
        Model {
            entries: found.entries.iter().cloned().collect(),
            last: found.last_index(),
            must_from: found.first_index,
        }
    }
}

fn random_entry<R: Rng>(rng: &mut R) -> Vec<u8> {
    let len = rng.gen_range(0..=120);
    if rng.gen_bool(0.2) {
        vec![0; len]
    } else {
        (0..len).map(|_| rng.gen()).collect()
    }
}

#[derive(Default, Debug)]
struct Seen {
    recoveries: u32,
    torn_tails: u32,
    in_flight_appends_kept: u32,
    in_flight_appends_lost: u32,
    crashes_during_recovery: u32,
    /// Calls that failed for lack of space and were retried...
    no_space_retried: u32,
    /// ... or, for appends, given up: the log went on with other calls.
    no_space_abandoned: u32,
}

fn perform(wal: &mut Wal<SimDisk>, op: &InFlight) -> Result<(), WalError> {
    match op {
        InFlight::Append(batch) => {
            let borrowed: Vec<(u64, &[u8])> =
                batch.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            wal.append(&borrowed)
        }
        InFlight::Truncate(index) => wal.truncate_after(*index),
        InFlight::Purge(index) => wal.purge_upto(*index),
        InFlight::Clear => wal.clear(),
    }
}

/// Random appends, truncations and purges, with the power failing at a random operation (in the
/// middle of a write, between a write and its fdatasync, during a segment roll, during recovery...)
/// and the device filling up now and then (writes and preallocations failing whole or cut short).
/// After each failure recovery must succeed and hold every acknowledged entry, byte for byte, and
/// nothing that was never written.
#[test]
fn power_loss_at_random_points_never_loses_an_acknowledged_entry() {
    // More for a soak run: WAL_POWER_LOSS_SEEDS=100000 cargo test --release -p oxkeeper-storage power_loss
    let seeds: u64 = std::env::var("WAL_POWER_LOSS_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let mut seen = Seen::default();
    for seed in 0..seeds {
        run_power_loss_seed(seed, &mut seen);
    }
    // The test is only as good as the situations it reaches.
    assert!(seen.torn_tails > 50, "{seen:?}");
    assert!(
        seen.in_flight_appends_kept > 20 && seen.in_flight_appends_lost > 20,
        "{seen:?}"
    );
    assert!(seen.crashes_during_recovery > 5, "{seen:?}");
    assert!(
        seen.no_space_retried > 50 && seen.no_space_abandoned > 20,
        "{seen:?}"
    );
}

fn run_power_loss_seed(seed: u64, seen: &mut Seen) {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::new();
    let opts = small(rng.gen_range(100..1500));
    let mut model = Model::default();
    let mut in_flight: Option<InFlight> = None;
    // Appends given up out of space: like a call a crash interrupted, each one's batch may turn up
    // after a power loss, until an append, truncation or clear succeeds after them.
    let mut abandoned: Vec<Vec<(u64, Vec<u8>)>> = Vec::new();
    for _ in 0..5 {
        let (mut wal, found) = loop {
            if rng.gen_bool(0.3) {
                disk.crash_after(rng.gen_range(0..4));
            }
            match Wal::open(disk.clone(), &dir(), opts.clone()) {
                Ok(opened) => break opened,
                Err(error) => {
                    assert!(
                        disk.crashed(),
                        "seed {seed}: recovery failed on its own: {error}"
                    );
                    seen.crashes_during_recovery += 1;
                    disk.power_loss(&mut rng);
                }
            }
        };
        disk.cancel_crash();
        seen.recoveries += 1;
        seen.torn_tails += u32::from(found.truncated_tail.is_some());
        let with_abandoned = abandoned.iter().any(|batch| {
            let mut model = model.clone();
            model.append(batch);
            model.allows_with(&found, &in_flight)
        });
        assert!(
            model.allows_with(&found, &in_flight) || with_abandoned,
            "seed {seed}: after {in_flight:?}, recovered {:?}..={:?} but the model is {:?}..={:?} (must from {})",
            found.entries.first().map(|e| e.0),
            found.last_index(),
            model.entries.keys().next(),
            model.last,
            model.must_from,
        );
        if let Some(InFlight::Append(batch)) = &in_flight {
            if found.last_index() == batch.last().map(|(i, _)| *i) {
                seen.in_flight_appends_kept += 1;
            } else {
                seen.in_flight_appends_lost += 1;
            }
        }
        assert_eq!(wal.last_index(), found.last_index());
        model = Model::from_recovered(&found);
        in_flight = None;
        abandoned.clear();

        disk.crash_after(rng.gen_range(0..80));
        for _ in 0..rng.gen_range(1..40) {
            if rng.gen_bool(0.15) {
                let fault = if rng.gen_bool(0.5) {
                    SimFault::NoSpace
                } else {
                    SimFault::NoSpaceTorn
                };
                disk.set_fault_times(fault, rng.gen_range(1..4));
            }
            let next = model.last.map_or(rng.gen_range(1..1000), |last| last + 1);
            let roll = rng.gen_range(0..100);
            let op = if roll < 75 || model.last.is_none() {
                let batch: Vec<(u64, Vec<u8>)> = (0..rng.gen_range(1..=5u64))
                    .map(|k| (next + k, random_entry(&mut rng)))
                    .collect();
                InFlight::Append(batch)
            } else if roll < 88 {
                InFlight::Truncate(rng.gen_range(model.must_from..next))
            } else if roll < 98 {
                InFlight::Purge(rng.gen_range(model.must_from.saturating_sub(1)..next + 2))
            } else {
                InFlight::Clear
            };
            // Out of space, an append may be retried or given up (it was never acknowledged); a
            // truncation, which may have removed segments already, is retried as `WalWriter` does.
            let result = loop {
                match perform(&mut wal, &op) {
                    Err(error) if error.is_no_space() => {
                        assert!(wal.stopped().is_none(), "seed {seed}: {error}");
                        if let (InFlight::Append(batch), true) = (&op, rng.gen_bool(0.5)) {
                            seen.no_space_abandoned += 1;
                            abandoned.push(batch.clone());
                            break None;
                        }
                        seen.no_space_retried += 1;
                    }
                    result => break Some(result),
                }
            };
            let Some(result) = result else {
                continue;
            };
            match result {
                Ok(()) => match op {
                    InFlight::Append(batch) => {
                        model.append(&batch);
                        abandoned.clear();
                    }
                    InFlight::Truncate(index) => {
                        model.truncate(index);
                        abandoned.clear();
                    }
                    InFlight::Purge(index) => {
                        model.purge(index);
                        if model.last.is_none() {
                            abandoned.clear();
                        }
                    }
                    InFlight::Clear => {
                        model = Model::default();
                        abandoned.clear();
                    }
                },
                Err(error) => {
                    assert!(
                        disk.crashed(),
                        "seed {seed}: {op:?} failed on its own: {error}"
                    );
                    in_flight = Some(op);
                    break;
                }
            }
        }
        drop(wal);
        disk.power_loss(&mut rng);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reading entries back while the log runs (`Wal::view`, `LogView::read`)

fn read(wal: &Wal<SimDisk>, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    wal.view(from, to)?.read()
}

#[test]
fn entries_read_back_across_segments_are_what_was_appended() {
    let disk = SimDisk::new();
    let (wal, opts) = in_threes_on_300_byte_segments(&disk, 60);
    assert!(segment_names(&disk).len() > 3, "the range spans segments");
    for (from, to) in [(1, 60), (1, 1), (60, 60), (2, 59), (17, 44), (28, 30)] {
        assert_eq!(
            read(&wal, from, to).unwrap(),
            expected(from..=to),
            "{from}..={to}"
        );
    }
    // Outside the log: not written yet, or nothing.
    assert!(matches!(read(&wal, 59, 61), Err(WalError::NotInLog { .. })));
    assert!(matches!(read(&wal, 0, 3), Err(WalError::NotInLog { .. })));
    let (empty, _) = open(&SimDisk::new(), &opts);
    assert!(matches!(
        read(&empty, 1, 1),
        Err(WalError::NotInLog { first: None, .. })
    ));
}

#[test]
fn a_read_sees_entries_rewritten_after_a_truncation_and_not_the_dropped_ones() {
    let disk = SimDisk::new();
    let (mut wal, _) = in_threes_on_300_byte_segments(&disk, 60);
    // 29 lies inside batch 28..=30: the segment keeps the batch and gets a truncate batch after it.
    wal.truncate_after(29).unwrap();
    let replaced = b"a different entry 30".to_vec();
    wal.append(&[(30, replaced.as_slice())]).unwrap();
    append_range(&mut wal, 31..=33);
    let mut want = expected(20..=33);
    want[10].1 = replaced;
    assert_eq!(read(&wal, 20, 33).unwrap(), want);
    assert!(matches!(read(&wal, 20, 34), Err(WalError::NotInLog { .. })));
}

#[test]
fn a_view_taken_before_a_purge_still_reads_and_a_later_one_is_refused() {
    let disk = SimDisk::new();
    let (mut wal, _) = nine_entries_two_per_segment(&disk);
    let view = wal.view(1, 6).unwrap();
    wal.purge_upto(4).unwrap();
    assert_eq!(segment_names(&disk), [5, 7, 9]);
    // The files were open: their unlink does not take the entries from under the reader.
    assert_eq!(view.read().unwrap(), expected(1..=6));
    assert!(matches!(
        read(&wal, 1, 6),
        Err(WalError::NotInLog { first: Some(5), .. })
    ));
    assert_eq!(read(&wal, 5, 9).unwrap(), expected(5..=9));
}

#[test]
fn a_view_does_not_see_what_is_written_after_it() {
    let disk = SimDisk::new();
    let (mut wal, _) = open(&disk, &small(4096));
    append_range(&mut wal, 1..=5);
    let view = wal.view(2, 5).unwrap();
    append_range(&mut wal, 6..=9);
    wal.truncate_after(3).unwrap();
    assert_eq!(view.read().unwrap(), expected(2..=5));
}

#[test]
fn a_view_whose_files_lack_entries_of_its_range_reports_how_many_it_found() {
    let disk = SimDisk::new();
    let (mut wal, _) = open(&disk, &small(4096));
    append_range(&mut wal, 1..=5);
    // What a view would meet if its segments lost entries the log's index said they held (files changed
    // under the log, or a bug): its range reaches past what the files it opened hold.
    let mut view = wal.view(2, 5).unwrap();
    view.to = 7;
    let error = view.read().unwrap_err();
    assert!(
        matches!(
            error,
            WalError::ReadShort {
                from: 2,
                to: 7,
                found: 4
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_corrupt(), "not damage to restore from: {error}");
    assert!(wal.stopped().is_none());
}

#[test]
fn damage_found_by_a_read_is_reported_to_the_reader_and_does_not_stop_the_log() {
    let disk = SimDisk::new();
    let opts = small(4096);
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=3);
    append_range(&mut wal, 4..=6);
    // A byte inside the second batch's records.
    let first_batch: Vec<Vec<u8>> = (1..=3).map(entry).collect();
    let second_batch_at = SEGMENT_HEADER_BYTES as u64 + batch_len(&first_batch);
    flip(
        &disk,
        &segment_path(1),
        second_batch_at + BATCH_HEADER_BYTES as u64 + 6,
    );
    match read(&wal, 4, 6) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, segment_path(1));
            assert_eq!(offset, second_batch_at);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Every batch of a segment read is checked, not only those in the range.
    assert!(read(&wal, 1, 3).unwrap_err().is_corrupt());
    // The log takes writes as before.
    append_range(&mut wal, 7..=7);
    assert_eq!(wal.last_index(), Some(7));
    assert!(wal.stopped().is_none());
}

#[test]
fn a_purged_segment_leaves_the_log_at_once_and_a_thread_unlinks_its_file() {
    let disk = SimDisk::new();
    let (wal, opts) = nine_entries_two_per_segment(&disk);
    drop(wal);
    let opts = unlinking_in_background(opts);
    let (mut wal, _) = open(&disk, &opts);
    let syncs = disk.sync_dir_calls();
    wal.purge_upto(4).unwrap();
    // Out of the log, durably, before purge_upto returns (the names recovery reads are gone).
    assert_eq!(segment_names(&disk), [5, 7, 9]);
    assert!(disk.sync_dir_calls() >= syncs + 2, "each removal is synced");
    assert_eq!(wal.first_index(), Some(5));
    // The thread unlinks the files while the log goes on.
    wait_for_purged_files_to_go(&disk);
    assert_eq!(file_names(&disk).len(), 3);
    append_range(&mut wal, 10..=10);
    // Dropping the log waits for the thread (here with a file still to unlink).
    wal.purge_upto(6).unwrap();
    drop(wal);
    assert!(
        file_names(&disk).iter().all(|n| !n.ends_with(".purged")),
        "{:?}",
        file_names(&disk)
    );
    assert_eq!(segment_names(&disk), [7, 9, 10]);
    let recovered = reopen(&disk, &opts);
    assert_eq!(recovered.first_index, 7);
    assert_eq!(recovered.entries, expected(7..=10));
}

#[test]
fn purged_files_a_crash_left_behind_are_removed_at_open_and_never_read_as_segments() {
    let disk = SimDisk::new();
    let (wal, opts) = nine_entries_two_per_segment(&disk);
    drop(wal);
    // A purged file as the rename leaves it (here: garbage, which as a segment would be corruption).
    let left = dir().join("log.0000000000000001.00000000000000ab.purged");
    let mut file = disk.open(&left, true).unwrap();
    file.write_at(0, b"not a segment").unwrap();
    file.sync_data().unwrap();
    disk.sync_dir(&dir()).unwrap();
    let (wal, recovered) = open(&disk, &opts);
    assert_eq!(recovered.entries, expected(1..=9));
    assert!(
        !file_names(&disk).iter().any(|n| n.ends_with(".purged")),
        "{:?}",
        file_names(&disk)
    );
    drop(wal);
}

#[test]
fn a_view_still_reading_a_purged_file_keeps_it_whole() {
    let disk = SimDisk::new();
    let (wal, opts) = nine_entries_two_per_segment(&disk);
    drop(wal);
    let (mut wal, _) = open(&disk, &unlinking_in_background(opts));
    let view = wal.view(1, 6).unwrap();
    wal.purge_upto(4).unwrap();
    // The thread unlinked the purged files without shrinking them under the view.
    wait_for_purged_files_to_go(&disk);
    assert_eq!(view.read().unwrap(), expected(1..=6));
    drop(wal);
}

#[test]
fn shrinking_gently_frees_a_file_step_by_step_and_stops_in_a_hurry() {
    let disk = SimDisk::new();
    disk.create_dir_all(&dir()).unwrap();
    let path = dir().join("f");
    let mut file = disk.open(&path, true).unwrap();
    file.write_at(0, &vec![7u8; (3 * SHRINK_STEP_BYTES + 10) as usize])
        .unwrap();
    shrink_gently(&disk, &path, &AtomicBool::new(true)).unwrap();
    assert_eq!(file.len().unwrap(), 3 * SHRINK_STEP_BYTES + 10);
    shrink_gently(&disk, &path, &AtomicBool::new(false)).unwrap();
    assert_eq!(file.len().unwrap(), 0);
}

/// `small`, with the next segment prepared on a thread of its own (`wal::spare`, the default outside
/// these tests).
fn with_spares(opts: WalOptions) -> WalOptions {
    WalOptions {
        prepare_segments: true,
        ..opts
    }
}

/// Waits (up to a generous deadline) until the log has a spare ready to roll into.
fn wait_for_spare(wal: &Wal<SimDisk>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !wal.preparer.as_ref().is_some_and(|p| p.is_ready()) {
        assert!(std::time::Instant::now() < deadline, "no spare made");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Opens the log and appends entry 1 in a segment created in place (zeroed ahead as `opts` say), and only
/// then starts the preparer: the first spare may otherwise be ready before that first roll.
fn first_segment_in_place(disk: &SimDisk, opts: &WalOptions) -> Wal<SimDisk> {
    let (mut wal, _) = open(disk, opts);
    wal.preparer_started = true;
    append_range(&mut wal, 1..=1);
    wal.preparer = spare::Preparer::start(disk.clone(), &dir(), opts.segment_bytes, false);
    wal
}

#[test]
fn a_roll_into_a_prepared_segment_leaves_every_batch_on_written_pages() {
    // No zeroing ahead: in a segment created at its roll every page a batch reaches changes the block
    // map (`zeroing_ahead_keeps_batches_off_pages_the_segment_never_wrote`).
    let opts = with_spares(WalOptions {
        zero_ahead_bytes: 0,
        ..small(256 << 10)
    });
    let disk = SimDisk::new();
    let mut wal = first_segment_in_place(&disk, &opts);
    wait_for_spare(&wal);
    // The last segment is not zeroed to its end and a spare is ready: the next append rolls into it.
    append_range(&mut wal, 2..=2);
    assert_eq!(segment_names(&disk), vec![1, 2]);
    wait_for_spare(&wal); // the next one, so that its own fdatasync is not counted below
    assert!(file_names(&disk).contains(&spare::SPARE_NAME.to_string()));
    let (syncs, bytes) = block_map_syncs_of(&disk, &mut wal, 2000);
    assert!(
        bytes > 16 * 4096,
        "the batches must cross many pages: {bytes} B"
    );
    assert_eq!(
        syncs, 0,
        "block map syncs in a prepared segment ({bytes} B)"
    );
    assert_eq!(segment_names(&disk), vec![1, 2]);
    drop(wal);

    // The spare left over is removed at open and never read as a segment; the log goes on.
    let (mut wal, recovered) = open(&disk, &opts);
    assert_eq!(recovered.entries, expected(1..=2002));
    assert_eq!(recovered.truncated_tail, None);
    assert!(!file_names(&disk).contains(&spare::SPARE_NAME.to_string()));
    append_range(&mut wal, 2003..=2003);
    drop(wal);
    assert_eq!(reopen(&disk, &opts).entries, expected(1..=2003));
}

#[test]
fn a_full_segment_rolls_into_the_spare_and_a_batch_too_large_for_it_gets_a_segment_of_its_own() {
    // Not zeroed ahead: only a segment made of a spare is written to its end from the start.
    let opts = with_spares(WalOptions {
        zero_ahead_bytes: 0,
        ..small(4096)
    });
    let disk = SimDisk::new();
    let (mut wal, _) = open(&disk, &opts);
    append_range(&mut wal, 1..=1); // the preparer starts at the first write
    let mut next = 2;
    for _ in 0..5 {
        wait_for_spare(&wal);
        // Fill the last segment until the next batch rolls.
        let segments = segment_names(&disk).len();
        while segment_names(&disk).len() == segments {
            append_range(&mut wal, next..=next);
            next += 1;
        }
        let last = wal.segments.last().unwrap();
        assert_eq!(
            last.zeroed_end,
            last.len,
            "the roll to {} took no spare",
            next - 1
        );
    }
    wait_for_spare(&wal);
    let big = vec![7u8; 6000];
    wal.append(&[(next, big.as_slice())]).unwrap();
    // Too large for a spare: a segment of its own, made in place; the spare is kept for the next roll.
    let last = wal.segments.last().unwrap();
    assert!(last.len > 4096 && last.zeroed_end < last.len);
    assert!(wal.preparer.as_ref().is_some_and(|p| p.is_ready()));
    drop(wal);
    let recovered = reopen(&disk, &opts);
    let mut want = expected(1..=next - 1);
    want.push((next, big));
    assert_eq!(recovered.entries, want);
    assert_eq!(recovered.truncated_tail, None);
}

#[test]
fn an_interrupted_roll_into_a_spare_loses_nothing_acknowledged() {
    // Not zeroed ahead: the first segment is not zeroed to its end, so the next append rolls into the
    // spare.
    let opts = with_spares(WalOptions {
        zero_ahead_bytes: 0,
        ..small(4096)
    });
    let mut rng = StdRng::seed_from_u64(43);
    // Crash at each step of the roll: header, sync, rename, sync_dir, batch, its sync, and after.
    for crash_at in 0..8 {
        for _ in 0..10 {
            let disk = SimDisk::new();
            let mut wal = first_segment_in_place(&disk, &opts);
            wait_for_spare(&wal);
            // Stop the preparer first, so that the countdown counts the roll's own steps.
            let preparer = wal.preparer.take();
            let spare = preparer.as_ref().and_then(|p| p.take());
            drop(preparer);
            wal.preparer = Some(spare::Preparer::holding(spare.expect("a spare was ready")));
            disk.crash_after(crash_at);
            let acknowledged = wal.append(&[(2, b"maybe".as_slice())]).is_ok();
            drop(wal);
            disk.power_loss(&mut rng);
            let (mut wal, recovered) = open(&disk, &opts);
            let last = recovered.last_index().unwrap();
            assert!(
                last == 2 || (last == 1 && !acknowledged),
                "crash at {crash_at}"
            );
            assert_eq!(recovered.entries[0], (1, entry(1)), "crash at {crash_at}");
            assert_eq!(
                segment_names(&disk),
                (1..=last).collect::<Vec<_>>(),
                "crash at {crash_at}: {:?}",
                file_names(&disk)
            );
            append_range(&mut wal, last + 1..=last + 1);
            drop(wal);
            assert_eq!(reopen(&disk, &opts).last_index(), Some(last + 1));
        }
    }
}

#[test]
fn a_spare_that_could_not_be_made_is_asked_for_again_at_the_next_roll() {
    let opts = with_spares(WalOptions {
        zero_ahead_bytes: 0,
        ..small(4096)
    });
    let disk = SimDisk::new();
    let (mut wal, _) = open(&disk, &opts);
    // The device is full: the first segment cannot be created, nor can the spare (the thread starts at
    // this first write and fails, once or twice as the roll's request meets it; it leaves no file behind
    // and then waits to be asked again).
    disk.set_fault(Some(SimFault::NoSpace));
    let error = wal.append(&[(1, entry(1).as_slice())]).unwrap_err();
    assert!(error.is_no_space(), "{error}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while disk.fault_hits() < 2 || file_names(&disk).contains(&spare::SPARE_NAME.to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the spare's attempt never failed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    disk.set_fault(None);
    // Space again: the retried append creates its segment (in place, or in a spare the thread's second
    // try made) and asks for a spare again, which is made.
    append_range(&mut wal, 1..=1);
    wait_for_spare(&wal);
    append_range(&mut wal, 2..=2);
    drop(wal);
    assert_eq!(reopen(&disk, &opts).entries, expected(1..=2));
}
