//! The log on real files: the golden segment, torn tails and corruption as an operator would meet them.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oxkeeper_storage::{read_file, write_atomic, RealDisk, Recovered, Wal, WalError, WalOptions};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "oxkeeper-storage-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(unique);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Every segment created at its roll: these tests place their batches in known segments, which a spare
/// made ready meanwhile would move to a segment of its own (the log rolls into a ready spare early).
fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 1 << 20,
        prepare_segments: false,
        ..WalOptions::default()
    }
}

fn open(dir: &Path) -> Result<(Wal<RealDisk>, Recovered), WalError> {
    Wal::open(RealDisk, dir, opts())
}

fn entry(index: u64) -> Vec<u8> {
    format!("real entry {index}").into_bytes()
}

fn append(wal: &mut Wal<RealDisk>, indices: std::ops::RangeInclusive<u64>) {
    let owned: Vec<(u64, Vec<u8>)> = indices.map(|i| (i, entry(i))).collect();
    let borrowed: Vec<(u64, &[u8])> = owned.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    wal.append(&borrowed).unwrap();
}

fn expected(indices: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    indices.map(|i| (i, entry(i))).collect()
}

/// Hex digits, ignoring whitespace and `#` comments.
fn parse_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&digits[at..at + 2], 16).unwrap())
        .collect()
}

const SEGMENT_HEADER: u64 = 32;
const BATCH_HEADER: u64 = 32;

/// Bytes of a batch holding `entries`.
fn batch_len(entries: std::ops::RangeInclusive<u64>) -> u64 {
    BATCH_HEADER + entries.map(|i| 4 + entry(i).len() as u64).sum::<u64>()
}

fn segment(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("log.{first_index:016x}"))
}

/// Writes entries 1..=3, 4..=6 and 7..=8 as three batches; returns the offset of each batch.
fn three_batches(dir: &Path) -> [u64; 3] {
    let (mut wal, _) = open(dir).unwrap();
    append(&mut wal, 1..=3);
    append(&mut wal, 4..=6);
    append(&mut wal, 7..=8);
    let first = SEGMENT_HEADER;
    let second = first + batch_len(1..=3);
    [first, second, second + batch_len(4..=6)]
}

fn flip(path: &Path, offset: u64) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x80], offset).unwrap();
}

#[test]
fn the_golden_segment_opens_as_a_log() {
    let dir = TempDir::new("golden");
    let golden = parse_hex(include_str!("fixtures/segment-v1.hex"));
    fs::write(segment(&dir.0, 1), &golden).unwrap();
    let (mut wal, recovered) = open(&dir.0).unwrap();
    assert_eq!(
        recovered.entries,
        vec![(1, b"hello".to_vec()), (2, vec![]), (3, b"again".to_vec())]
    );
    assert_eq!(recovered.first_index, 1);
    assert_eq!(recovered.truncated_tail, None);
    // It continues where the fixture ends.
    wal.append(&[(4, b"more".as_slice())]).unwrap();
    drop(wal);
    let (_, recovered) = open(&dir.0).unwrap();
    assert_eq!(recovered.entries.len(), 4);
    assert_eq!(recovered.entries[3], (4, b"more".to_vec()));
}

#[test]
fn a_segment_cut_short_in_its_last_batch_loses_only_that_batch() {
    let dir = TempDir::new("short");
    let [_, _, third] = three_batches(&dir.0);
    let path = segment(&dir.0, 1);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(third + 10)
        .unwrap();
    let (mut wal, recovered) = open(&dir.0).unwrap();
    assert_eq!(recovered.entries, expected(1..=6));
    assert_eq!(recovered.truncated_tail, Some((path, third)));
    append(&mut wal, 7..=7);
    drop(wal);
    let (_, recovered) = open(&dir.0).unwrap();
    assert_eq!(recovered.entries, expected(1..=7));
    assert_eq!(recovered.truncated_tail, None);
}

#[test]
fn a_flipped_byte_in_the_last_batch_cuts_it_off() {
    let dir = TempDir::new("flip-last");
    let [_, _, third] = three_batches(&dir.0);
    let path = segment(&dir.0, 1);
    flip(&path, third + BATCH_HEADER + 6);
    let (_, recovered) = open(&dir.0).unwrap();
    assert_eq!(recovered.entries, expected(1..=6));
    assert_eq!(recovered.truncated_tail, Some((path, third)));
}

#[test]
fn a_flipped_byte_in_an_earlier_batch_is_corruption_naming_file_and_offset() {
    let dir = TempDir::new("flip-early");
    let [_, second, _] = three_batches(&dir.0);
    let path = segment(&dir.0, 1);
    for offset in [second + 2, second + 20, second + BATCH_HEADER + 5] {
        flip(&path, offset);
        let error = open(&dir.0)
            .err()
            .expect("a damaged durable batch is refused");
        match &error {
            WalError::Corrupt {
                file,
                offset: at,
                reason,
            } => {
                assert_eq!(file, &path);
                assert_eq!(*at, second, "{reason}");
            }
            other => panic!("expected Corrupt, got {other}"),
        }
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(&format!("offset {second}")), "{message}");
        flip(&path, offset);
    }
    // Nothing was repaired or cut while refusing.
    let (_, recovered) = open(&dir.0).unwrap();
    assert_eq!(recovered.entries, expected(1..=8));
}

#[test]
fn segments_are_preallocated() {
    let dir = TempDir::new("prealloc");
    let (mut wal, _) = open(&dir.0).unwrap();
    append(&mut wal, 1..=1);
    let len = fs::metadata(segment(&dir.0, 1)).unwrap().len();
    assert_eq!(len, opts().segment_bytes);
}

#[test]
fn metadata_files_are_replaced_whole() {
    let dir = TempDir::new("meta");
    let path = dir.0.join("vote");
    assert_eq!(read_file(&RealDisk, &path).unwrap(), None);
    write_atomic(&RealDisk, &path, b"first").unwrap();
    write_atomic(&RealDisk, &path, b"second, longer").unwrap();
    assert_eq!(
        read_file(&RealDisk, &path).unwrap().unwrap(),
        b"second, longer"
    );
    assert!(!dir.0.join("vote.tmp").exists());
    // Metadata files next to the segments do not disturb the log.
    let (_, recovered) = open(&dir.0).unwrap();
    assert!(recovered.entries.is_empty());
}

#[test]
fn writing_behind_leaves_a_file_as_written() {
    use oxkeeper_storage::{Disk, DiskFile};
    let dir = TempDir::new("write-behind");
    let path = dir.0.join("file");
    let mut file = RealDisk.open(&path, true).unwrap();
    let pieces: Vec<Vec<u8>> = (0..5u8)
        .map(|k| vec![k + 1; 300_000 + 7 * k as usize])
        .collect();
    let mut at = 0;
    for piece in &pieces {
        file.write_at(at, piece).unwrap();
        file.write_behind(at, piece.len() as u64).unwrap();
        at += piece.len() as u64;
    }
    // A range past the end is no error (the kernel has nothing there to write).
    file.write_behind(at + 4096, 4096).unwrap();
    file.sync_data().unwrap();
    drop(file);
    assert_eq!(fs::read(&path).unwrap(), pieces.concat());
}

#[test]
fn a_snapshot_written_in_many_pieces_reads_back_whole() {
    use oxkeeper_storage::snapshot::{read_snapshot, write_snapshot_with};
    let dir = TempDir::new("snapshot-pieces");
    // Pieces smaller and larger than the writer's buffer (1 MiB), ~5 MiB in all: each goes out to the
    // device behind the next (`DiskFile::write_behind`).
    let data: Vec<u8> = (0..5_300_000u32).map(|i| (i % 251) as u8).collect();
    let (path, len) = write_snapshot_with(&RealDisk, &dir.0, 42, b"meta", |out| {
        for piece in data.chunks(700_000).chain(std::iter::once(&[][..])) {
            out.write_all(&piece[..piece.len() / 2])?;
            out.write_all(&piece[piece.len() / 2..])?;
        }
        out.write_all(&data[..1_500_000])
    })
    .unwrap();
    let read = read_snapshot(&RealDisk, 42, &path).unwrap();
    assert_eq!(read.meta, b"meta");
    assert_eq!(len, (data.len() + 1_500_000) as u64);
    assert_eq!(read.data.len(), data.len() + 1_500_000);
    assert!(read.data[..data.len()] == data[..] && read.data[data.len()..] == data[..1_500_000]);
}
