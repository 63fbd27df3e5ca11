//! Test support for this crate's and other crates' tests (the server never calls it): a small tmpfs to
//! fill up, so that a full device is met on a real file system.
//!
//! Mounting needs root (CAP_SYS_ADMIN). A test that cannot mount prints why and passes, unless
//! `OXKEEPER_REQUIRE_MOUNT_TESTS=1` says it must run (`mount_or_skip`).

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A tmpfs of a given size mounted on a fresh directory; unmounted and removed on drop.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` on a new directory under the system's temp dir.
    pub fn mount(size_bytes: u64) -> Result<Tmpfs, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root, so no tmpfs can be mounted".into());
        }
        let dir = std::env::temp_dir().join(format!(
            "oxkeeper-tmpfs-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let target = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| format!("a NUL in {}", dir.display()))?;
        let options =
            CString::new(format!("size={size_bytes},mode=0700")).map_err(|e| e.to_string())?;
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

    /// `mount`, or `None` after printing why `test` is skipped, if mounting is not allowed here and
    /// `OXKEEPER_REQUIRE_MOUNT_TESTS` is not set. Panics if it is set and mounting fails.
    pub fn mount_or_skip(size_bytes: u64, test: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(size_bytes) {
            Ok(mount) => Some(mount),
            Err(reason) if std::env::var_os("OXKEEPER_REQUIRE_MOUNT_TESTS").is_none() => {
                eprintln!("skipped {test}: {reason}");
                None
            }
            Err(reason) => panic!("OXKEEPER_REQUIRE_MOUNT_TESTS is set, but {reason}"),
        }
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path; MNT_DETACH unmounts even if a file is still open.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir(&self.0);
    }
}

/// Fills what is left of the file system holding `dir` with one file (`dir/ballast`), and returns its
/// path: remove it to give the space back.
pub fn fill(dir: &Path) -> io::Result<PathBuf> {
    let path = dir.join("ballast");
    let mut file = fs::File::create(&path)?;
    let chunk = vec![0xBAu8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}
