//! The log on a real file system that fills up: a 1 MiB tmpfs mounted for the test (root only; see
//! `oxkeeper_storage::testing`).

use std::fs;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oxkeeper_storage::testing::{fill, Tmpfs};
use oxkeeper_storage::{RealDisk, Wal, WalError, WalHealth, WalOptions, WalWriter};

fn entry(index: u64) -> Vec<u8> {
    let mut bytes = format!("entry {index} ").into_bytes();
    bytes.resize(1000, b'.');
    bytes
}

#[test]
fn a_full_tmpfs_holds_acknowledgements_until_space_is_freed() {
    let Some(mount) = Tmpfs::mount_or_skip(
        1 << 20,
        "a_full_tmpfs_holds_acknowledgements_until_space_is_freed",
    ) else {
        return;
    };
    let dir = mount.path().join("log");
    let opts = WalOptions {
        segment_bytes: 256 << 10,
        no_space_retry_min: Duration::from_millis(5),
        no_space_retry_max: Duration::from_millis(20),
        // Every segment created at its roll, so that the roll's preallocation is what finds the device
        // full (a spare made ahead holds its space already: the roll into it succeeds).
        prepare_segments: false,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(RealDisk, &dir, opts.clone()).unwrap();
    let writer = WalWriter::spawn(wal);
    let (tx, rx) = mpsc::channel::<(u64, Result<(), WalError>)>();
    let submit = |indices: std::ops::RangeInclusive<u64>| {
        for index in indices {
            let tx = tx.clone();
            writer.submit(
                vec![(index, entry(index))],
                Box::new(move |result| {
                    let _ = tx.send((index, result));
                }),
            );
        }
    };
    let receive = |count: usize| -> Vec<u64> {
        (0..count)
            .map(|_| {
                let (index, result) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
                result.unwrap_or_else(|e| panic!("entry {index}: {e}"));
                index
            })
            .collect()
    };

    // The first segment (256 KiB, preallocated) takes these; then nothing is left on the device.
    submit(1..=150);
    assert_eq!(receive(150), (1..=150).collect::<Vec<_>>());
    let ballast = fill(mount.path()).unwrap();

    // 150 more entries in one submission do not fit what is left of the segment: the roll's
    // preallocation fails. More submissions queue behind.
    let tx_big = tx.clone();
    writer.submit(
        (151..=300).map(|i| (i, entry(i))).collect(),
        Box::new(move |result| {
            let _ = tx_big.send((300, result));
        }),
    );
    submit(301..=310);
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let health = writer.health();
        if matches!(&health, WalHealth::OutOfSpace { attempts, .. } if *attempts >= 3) {
            break health;
        }
        assert!(Instant::now() < deadline, "never out of space: {health}");
        std::thread::sleep(Duration::from_millis(5));
    };
    let WalHealth::OutOfSpace { error, .. } = &health else {
        unreachable!("matched above")
    };
    assert!(error.is_no_space(), "{error}");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    assert!(error.to_string().contains("preallocating"), "{error}");
    if let Ok((index, result)) = rx.recv_timeout(Duration::from_millis(100)) {
        panic!("entry {index} completed while the device is full: {result:?}");
    }

    fs::remove_file(&ballast).unwrap();
    assert_eq!(receive(11), (300..=310).collect::<Vec<_>>());
    assert!(writer.health().is_ok(), "{}", writer.health());
    assert!(writer.stats().no_space_retries >= 3);
    writer.shutdown();

    let (_, recovered) = Wal::open(RealDisk, &dir, opts).unwrap();
    let want: Vec<(u64, Vec<u8>)> = (1..=310).map(|i| (i, entry(i))).collect();
    assert_eq!(recovered.entries, want);
    assert_eq!(recovered.truncated_tail, None);
}
