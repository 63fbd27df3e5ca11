//! Segments made ready ahead of need (`WalOptions::prepare_segments`).
//!
//! A segment created at the roll is preallocated, which leaves unwritten extents: a batch that is the
//! first write into a page changes the file's block map, and that batch's fdatasync must then write the
//! block map too (on ext4 a journal commit, or without a journal the inode's extent tree: one more device
//! round trip, in line). Zeroing ahead (`WalOptions::zero_ahead_bytes`) gathers that cost into one batch
//! in every ~half chunk, but that batch still writes the chunk of zeros and the block map before its own
//! bytes: at set at 32 sessions (bench/RESULTS.md, session 41) one batch in ~53 took over 280 us against
//! ~105 (p50), and the requests in it and queued behind it made the p99.
//!
//! Here a thread of its own makes the next segment while the log fills the current one: it preallocates
//! a file under a name no segment has (`SPARE_NAME`, which recovery skips and `Wal::open` removes),
//! overwrites all of it with zeros, a chunk at a time with a pause after each (`PACE`) so that the log's
//! own writes keep the device, and fdatasyncs it. The roll takes it ready (`Wal::roll_into_spare`):
//! writes its header, syncs it, renames it to the segment's name and syncs the directory, the same
//! durable steps as a segment created in place, whose content (a header and zeros) it then has. Every
//! batch in it lands on written blocks of a file whose size never changes, so every fdatasync flushes
//! only data. Without a spare ready the roll creates the segment in place as before, and a spare that
//! becomes ready while the last segment is not zeroed to its end (created in place, or recovered) is
//! rolled into at the next append.
//!
//! The spare's zeros need no ordering against the log's writes (another file), and a crash at any point
//! leaves at most a spare file that `Wal::open` removes: it never held an entry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::disk::{Disk, DiskFile};
use crate::error::WalError;

/// The spare's file name in the log's directory: `log.` and no index, so never a segment's.
pub(crate) const SPARE_NAME: &str = "log.spare";

/// Bytes of zeros per write while preparing a spare, and the pause after each (`PACE`): 4 MiB every 80
/// ms, ~50 MB/s, so a 64 MiB spare takes ~1.3 s, and a log written by a 2 KB batch every ~130 us (set at
/// 32 sessions here) fills a segment in ~4 s. Few large writes rather than many small ones: each write
/// that the log's own write or flush meets delays that batch, so a few delayed batches land beyond the
/// p99 where many would make it. Measured (bench/RESULTS.md, session 43; set at 32 sessions per pair
/// against creating segments at the roll): 512 KiB every 10 ms 1.022 (5 of 6), p99 x1.03; 4 MiB every
/// 80 ms 1.050 (5 of 6), p99 x0.90, and again (from the shared buffer of zeros) 1.042 (6 of 6), p99
/// x0.92. The first spare after a start is paced too: unpaced (~50 ms here, seconds on a slow disk), it
/// made the server's first writes slow enough for the apply thread to hand them to the log's own thread
/// (tests/apply_thread.rs found 6 of 20).
const CHUNK: usize = 4 << 20;
const PACE: Duration = Duration::from_millis(80);

/// A spare ready to roll into: its open file, zeroed through `len` bytes, durably.
pub(crate) struct Spare<F> {
    pub file: F,
    pub len: u64,
}

/// The thread preparing spares, one at a time: a new one each time the last is taken.
pub(crate) struct Preparer<F> {
    shared: Arc<Shared<F>>,
    thread: Option<JoinHandle<()>>,
}

struct Shared<F> {
    state: Mutex<State<F>>,
    wake: Condvar,
}

struct State<F> {
    ready: Option<Spare<F>>,
    /// Another spare is wanted (`Preparer::want`; cleared when the thread begins it).
    wanted: bool,
    stop: bool,
}

impl<F> Shared<F> {
    fn lock(&self) -> MutexGuard<'_, State<F>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<F: DiskFile> Preparer<F> {
    /// Starts the thread, which begins on the first spare at once. `direct`: opened as a log's
    /// file (`Disk::open_log`). `None` if the thread cannot start (the log then creates every segment in
    /// place).
    pub fn start<D: Disk<File = F>>(disk: D, dir: &Path, len: u64, direct: bool) -> Option<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ready: None,
                wanted: true,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let path = dir.join(SPARE_NAME);
        let theirs = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("oxkeeper-wal-spare".into())
            .spawn(move || run(&disk, &path, len, direct, &theirs));
        match spawned {
            Ok(thread) => Some(Preparer {
                shared,
                thread: Some(thread),
            }),
            Err(error) => {
                tracing::warn!(%error, "cannot start the thread that prepares log segments: creating them at each roll");
                None
            }
        }
    }

    /// A preparer without a thread, holding `spare` ready: tests that count the roll's own disk steps.
    #[cfg(test)]
    pub fn holding(spare: Spare<F>) -> Self {
        Preparer {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    ready: Some(spare),
                    wanted: false,
                    stop: false,
                }),
                wake: Condvar::new(),
            }),
            thread: None,
        }
    }

    /// Whether a spare is ready to take.
    pub fn is_ready(&self) -> bool {
        self.shared.lock().ready.is_some()
    }

    /// The ready spare, if any. The thread makes the next one when asked (`want`): only once this one's
    /// file no longer has the spare's name, which the next one takes.
    pub fn take(&self) -> Option<Spare<F>> {
        self.shared.lock().ready.take()
    }

    /// Has the thread make another spare (once the one taken is renamed, or removed).
    pub fn want(&self) {
        self.shared.lock().wanted = true;
        self.shared.wake.notify_all();
    }
}

impl<F> Drop for Preparer<F> {
    /// Stops the thread (a spare half made is left to the next `Wal::open`) and waits for it.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run<D: Disk>(disk: &D, path: &Path, len: u64, direct: bool, shared: &Shared<D::File>) {
    loop {
        {
            let mut state = shared.lock();
            let work = |s: &State<D::File>| s.stop || (s.wanted && s.ready.is_none());
            while !work(&state) {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.stop {
                return;
            }
            state.wanted = false;
        }
        match prepare(disk, path, len, direct, shared) {
            Ok(Some(file)) => shared.lock().ready = Some(Spare { file, len }),
            Ok(None) => return,
            Err(error) => {
                // Left to the roll, which creates its segment in place (and reports what fails there);
                // the next roll asks for a spare again.
                tracing::warn!(%error, "cannot prepare the next log segment: the next roll creates it in place");
                let _ = disk.remove(path);
            }
        }
    }
}

/// Makes the spare at `path`: preallocated, zeroed, synced. `None` if told to stop meanwhile.
fn prepare<D: Disk>(
    disk: &D,
    path: &Path,
    len: u64,
    direct: bool,
    shared: &Shared<D::File>,
) -> Result<Option<D::File>, WalError> {
    let mut file = super::open_segment(disk, path, true, direct)
        .map_err(WalError::at("creating the spare segment", path))?;
    file.set_len(0)
        .map_err(WalError::at("truncating the spare segment", path))?;
    file.allocate(len)
        .map_err(WalError::at("preallocating the spare segment", path))?;
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK as u64);
        file.write_zeros(at, n)
            .map_err(WalError::at("zeroing the spare segment", path))?;
        // Written through the page cache (no O_DIRECT here): sent to the device chunk by chunk as well,
        // not all at the fdatasync below.
        file.write_behind(at, n)
            .map_err(WalError::at("zeroing the spare segment", path))?;
        at += n;
        let state = shared.lock();
        let state = if at < len {
            shared
                .wake
                .wait_timeout_while(state, PACE, |s| !s.stop)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0
        } else {
            state
        };
        if state.stop {
            return Ok(None);
        }
    }
    file.sync_data()
        .map_err(WalError::at("syncing the spare segment", path))?;
    Ok(Some(file))
}

/// Whether `path` names a spare (`SPARE_NAME`).
pub(crate) fn is_spare(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == SPARE_NAME)
}

/// The spare's path in `dir`.
pub(crate) fn spare_path(dir: &Path) -> PathBuf {
    dir.join(SPARE_NAME)
}
