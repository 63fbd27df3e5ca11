//! The log on a real file system that fills up: a 1 MiB tmpfs mounted for the test.
//!
//! Mounting needs root (CAP_SYS_ADMIN); where it is not allowed the test prints why and passes, unless
//! `OXKEEPER_REQUIRE_MOUNT_TESTS=1` says it must run (CI, which runs as root).

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oxkeeper_storage::{RealDisk, Wal, WalError, WalHealth, WalOptions, WalWriter};

/// A tmpfs of `size_bytes` mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size_bytes: u64) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root, so no tmpfs can be mounted".into());
        }
        let dir = std::env::temp_dir().join(format!("oxkeeper-full-disk-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let target = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in a temp path");
        let options = CString::new(format!("size={size_bytes},mode=0700")).expect("no NUL");
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"oxkeeper-test".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let error = io::Error::last_os_error();
            let _ = fs::remove_dir(&dir);
            return Err(format!(
                "mounting a tmpfs on {} failed: {error}",
                dir.display()
            ));
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).expect("no NUL in a temp path");
        // SAFETY: a NUL-terminated path; MNT_DETACH unmounts even if a file is still open.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = fs::remove_dir(&self.0);
    }
}

/// Fills what is left of the file system with one file, and returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = fs::File::create(&path).unwrap();
    let chunk = vec![0xBAu8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    path
}

fn entry(index: u64) -> Vec<u8> {
    let mut bytes = format!("entry {index} ").into_bytes();
    bytes.resize(1000, b'.');
    bytes
}

#[test]
fn a_full_tmpfs_holds_acknowledgements_until_space_is_freed() {
    let mount = match Tmpfs::mount(1 << 20) {
        Ok(mount) => mount,
        Err(reason) if std::env::var_os("OXKEEPER_REQUIRE_MOUNT_TESTS").is_none() => {
            eprintln!("skipped a_full_tmpfs_holds_acknowledgements_until_space_is_freed: {reason}");
            return;
        }
        Err(reason) => panic!("OXKEEPER_REQUIRE_MOUNT_TESTS is set, but {reason}"),
    };
    let dir = mount.0.join("log");
    let opts = WalOptions {
        segment_bytes: 256 << 10,
        no_space_retry_min: Duration::from_millis(5),
        no_space_retry_max: Duration::from_millis(20),
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
    let ballast = fill(&mount.0);

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
