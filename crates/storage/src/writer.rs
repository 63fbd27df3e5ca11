//! `WalWriter`: group commit. A dedicated thread owns the `Wal` and turns everything queued into as few
//! batches (and fdatasyncs) as the limits allow.
//!
//! `submit` never waits: it hands over entries with a completion callback. The thread drains the
//! queue into one batch (up to `WalOptions::batch_bytes_max` / `batch_entries_max`), writes it, does
//! one fdatasync, then runs the completions of that batch in submission order. A completion runs only
//! when its entries are durable; the thread checks this before every acknowledgement.
//!
//! `submit_now` is the same but, when the log is idle, writes on the caller's thread instead (in order
//! with the thread: one flag says who writes), saving the two thread wake-ups of the hand-off.
//!
//! Disk faults never reach the callers as ENOSPC: out of space, the thread holds the batch (and
//! everything queued behind it) unacknowledged and retries it until it is durable, reporting
//! `WalHealth::OutOfSpace` meanwhile. Anything else (EIO, any failed fdatasync) is fatal:
//! `WalHealth::Failed`, and every request fails from then on.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::disk::Disk;
use crate::error::WalError;
use crate::format::RECORD_HEADER_BYTES;
use crate::wal::{Wal, WalOptions};

/// Called once with the outcome, on the writer thread: it must be quick and must not block on the
/// writer (e.g. by submitting and waiting).
pub type Completion = Box<dyn FnOnce(Result<(), WalError>) + Send>;

/// Counters of a `WalWriter`, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalWriterStats {
    /// `submit` calls accepted.
    pub submissions: u64,
    /// Entries batches written (one fdatasync each).
    pub batches: u64,
    /// Entries written.
    pub entries: u64,
    /// Bytes of entries written (payload only).
    pub entry_bytes: u64,
    /// Time spent writing and syncing batches, in microseconds (so `write_us / batches` is the mean cost of
    /// one group commit).
    pub write_us: u64,
    /// Attempts that failed for lack of space and were retried (or given up at shutdown).
    pub no_space_retries: u64,
    /// Of `batches`, those written on a caller's thread (`submit_now`) rather than the writer's.
    pub caller_batches: u64,
}

/// Whether the log is writing, as `WalWriter::health` reports it.
#[derive(Debug, Clone)]
pub enum WalHealth {
    /// Writing and acknowledging normally.
    Ok,
    /// The device is full (ENOSPC or EDQUOT on a write, a preallocation or a segment create). The batch
    /// being written is held unacknowledged and retried every `WalOptions::no_space_retry_min..max`
    /// until it is durable; requests queue behind it. Nothing is lost and nothing fails: once space is
    /// freed, acknowledgements resume in order by themselves. Meanwhile the server should refuse new
    /// writes (they would only queue) and keep serving reads.
    OutOfSpace {
        /// When the first attempt of this episode failed.
        since: Instant,
        /// Failed attempts so far in this episode.
        attempts: u64,
        /// The latest failure: operation and file.
        error: WalError,
    },
    /// Stopped for good: an I/O error on a write, any failed fdatasync (the kernel may have dropped the
    /// unsynced pages, so retrying it would be unsafe), a broken invariant, or the writer thread died.
    /// Nothing more is acknowledged. The process should exit; at restart, recovery cuts off whatever
    /// was not synced, none of which was acknowledged.
    Failed(WalError),
}

impl WalHealth {
    pub fn is_ok(&self) -> bool {
        matches!(self, WalHealth::Ok)
    }

    pub fn is_out_of_space(&self) -> bool {
        matches!(self, WalHealth::OutOfSpace { .. })
    }

    pub fn is_failed(&self) -> bool {
        matches!(self, WalHealth::Failed(_))
    }
}

impl fmt::Display for WalHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalHealth::Ok => f.write_str("ok"),
            WalHealth::OutOfSpace {
                since,
                attempts,
                error,
            } => write!(
                f,
                "out of disk space for {} s ({attempts} attempts); writes are held, unacknowledged, \
                 and resume by themselves once space is freed: {error}",
                since.elapsed().as_secs()
            ),
            WalHealth::Failed(error) => write!(
                f,
                "the write-ahead log stopped and acknowledges nothing more: {error}. Restart this \
                 member; recovery cuts off what was not synced, none of which was acknowledged"
            ),
        }
    }
}

/// The handle of the group-commit thread. Dropping it is `shutdown`.
pub struct WalWriter {
    shared: Arc<Shared>,
    /// The log, for `submit_now` on the caller's thread; the writer thread holds another reference.
    log: Arc<dyn WriteNow>,
    thread: Option<JoinHandle<()>>,
}

/// The log behind a lock (always free: `Queue::busy` says who may write), type-erased for `WalWriter`.
struct Log<D: Disk>(Mutex<Wal<D>>);

impl<D: Disk> Log<D> {
    fn wal(&self) -> MutexGuard<'_, Wal<D>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

trait WriteNow: Send + Sync {
    /// One attempt at `work` (see `attempt`), recording a final failure in `shared`'s health.
    fn attempt_once(&self, shared: &Shared, work: &Work) -> Result<(), WalError>;
    /// `WalWriter::read`.
    fn read(&self, from: u64, to: u64) -> Result<Entries, WalError>;
}

impl<D: Disk> WriteNow for Log<D> {
    fn attempt_once(&self, shared: &Shared, work: &Work) -> Result<(), WalError> {
        let mut wal = self.wal();
        let result = attempt(&mut wal, shared, work);
        shared.publish_synced(&wal);
        if let Some(cause) = wal.stopped() {
            shared.set_health(WalHealth::Failed(cause.clone()));
        }
        result
    }

    fn read(&self, from: u64, to: u64) -> Result<Entries, WalError> {
        // The lock only while the view is taken (the files opened); the reading is done without it.
        let view = self.wal().view(from, to)?;
        view.read()
    }
}

/// Entries of one submission: consecutive `(index, bytes)`.
type Entries = Vec<(u64, Vec<u8>)>;

enum Request {
    Append(Entries, Completion),
    TruncateAfter(u64, Completion),
    PurgeUpto(u64, Completion),
    Clear(Completion),
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    submissions: AtomicU64,
    batches: AtomicU64,
    write_us: AtomicU64,
    /// How long the last batch took to write and sync, in microseconds.
    last_write_us: AtomicU64,
    entries: AtomicU64,
    entry_bytes: AtomicU64,
    no_space_retries: AtomicU64,
    caller_batches: AtomicU64,
    /// `Wal::synced_index` + 1 (0: none) after the latest write, sync or truncation.
    synced: AtomicU64,
    /// `WalOptions::sync_each_batch` is off: the thread syncs what is written lazily, so it must hear of
    /// writes made on callers' threads (`submit_now`) too.
    lazy_sync: bool,
    /// Which `WalHealth` variant `health` holds (`HEALTH_*`), so the common case is read without a lock.
    health_kind: AtomicU8,
    health: Mutex<WalHealth>,
}

const HEALTH_OK: u8 = 0;
const HEALTH_OUT_OF_SPACE: u8 = 1;
const HEALTH_FAILED: u8 = 2;

/// See `WalWriter::is_idle_and_quick`.
const QUICK_WRITE: Duration = Duration::from_millis(1);

/// How often a long out-of-space episode is logged again.
const NO_SPACE_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Queue {
    requests: VecDeque<Request>,
    /// `shutdown` was called: finish what is queued, then exit.
    closing: bool,
    /// The thread has exited (or died): requests are refused.
    closed: bool,
    /// Someone (the thread, or a caller of `submit_now`) is writing: nobody else may take work.
    busy: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is plain data, consistent between statements; a panic elsewhere cannot break it.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `request`, or refuses it at once if the thread is gone.
    fn push(&self, request: Request) {
        let mut queue = self.lock();
        if queue.closed {
            drop(queue);
            request.complete(Err(WalError::Closed));
            return;
        }
        queue.requests.push_back(request);
        drop(queue);
        self.wake.notify_one();
    }

    fn health(&self) -> WalHealth {
        if self.health_kind.load(Ordering::Acquire) == HEALTH_OK {
            return WalHealth::Ok;
        }
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records `health`, unless the log has already failed: that is final.
    fn set_health(&self, health: WalHealth) {
        let mut current = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.is_failed() {
            return;
        }
        let kind = match &health {
            WalHealth::Ok => HEALTH_OK,
            WalHealth::OutOfSpace { .. } => HEALTH_OUT_OF_SPACE,
            WalHealth::Failed(_) => HEALTH_FAILED,
        };
        *current = health;
        self.health_kind.store(kind, Ordering::Release);
    }

    fn publish_synced<D: Disk>(&self, wal: &Wal<D>) {
        let synced = wal
            .synced_index()
            .map_or(0, |index| index.saturating_add(1));
        self.synced.store(synced, Ordering::Release);
    }

    /// Sleeps for `delay`, or less if `shutdown` is called. False if it was.
    fn pause(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut queue = self.lock();
        loop {
            if queue.closing {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            // Submissions wake the condvar too; only shutdown or the deadline end the pause.
            queue = self
                .wake
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

impl Request {
    fn complete(self, result: Result<(), WalError>) {
        match self {
            Request::Append(_, done)
            | Request::TruncateAfter(_, done)
            | Request::PurgeUpto(_, done)
            | Request::Clear(done) => done(result),
        }
    }
}

impl WalWriter {
    /// Starts the writer thread, which owns `wal` from now on.
    ///
    /// # Panics
    /// If the OS refuses to start a thread (see `try_spawn`).
    pub fn spawn<D: Disk>(wal: Wal<D>) -> Self {
        Self::try_spawn(wal).expect("the OS refused to start the write-ahead log thread")
    }

    pub fn try_spawn<D: Disk>(wal: Wal<D>) -> std::io::Result<Self> {
        let lazy_sync = !wal.options().sync_each_batch;
        let log = Arc::new(Log(Mutex::new(wal)));
        let thread_log = Arc::clone(&log);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            submissions: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            write_us: AtomicU64::new(0),
            last_write_us: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            entry_bytes: AtomicU64::new(0),
            no_space_retries: AtomicU64::new(0),
            caller_batches: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            lazy_sync,
            health_kind: AtomicU8::new(HEALTH_OK),
            health: Mutex::new(WalHealth::Ok),
        });
        shared.publish_synced(&log.wal());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("oxkeeper-wal".into())
            .spawn(move || run(&thread_log, &thread_shared))?;
        Ok(WalWriter {
            shared,
            log,
            thread: Some(thread),
        })
    }

    /// Queues consecutive entries (following those submitted before). `done` runs once they are
    /// durable, after the completions of every earlier request. Out of space it waits (see
    /// `WalHealth::OutOfSpace`); it fails only when the log has stopped for good or the caller broke
    /// the contract (`NotConsecutive`, `TooLarge`).
    pub fn submit(&self, entries: Vec<(u64, Vec<u8>)>, done: Completion) {
        self.shared.submissions.fetch_add(1, Ordering::Relaxed);
        self.shared.push(Request::Append(entries, done));
    }

    /// Whether nothing is being written or queued: `submit_now` would write on the caller's thread.
    pub fn is_idle(&self) -> bool {
        let queue = self.shared.lock();
        !queue.busy && queue.requests.is_empty() && !queue.closing && !queue.closed
    }

    /// Whether a caller that must not block for long (an async task) should use `submit_now`: the log is
    /// idle and its last batch was written and synced within `QUICK_WRITE` (a disk that has turned
    /// slow, e.g. while a snapshot is written, is left to the thread).
    pub fn is_idle_and_quick(&self) -> bool {
        self.shared.last_write_us.load(Ordering::Relaxed) < QUICK_WRITE.as_micros() as u64
            && self.is_idle()
    }

    /// As `submit`, but if nothing is being written or queued, writes (and syncs) the entries on the
    /// calling thread and runs `done` before returning: no hand-off to the writer thread and back, which
    /// on a lightly loaded machine costs more than the write (each is a wake-up of a sleeping thread).
    /// Otherwise, or if this one attempt runs out of space (the thread then retries it), it queues.
    pub fn submit_now(&self, entries: Vec<(u64, Vec<u8>)>, done: Completion) {
        self.shared.submissions.fetch_add(1, Ordering::Relaxed);
        let request = Request::Append(entries, done);
        {
            let mut queue = self.shared.lock();
            let idle = !queue.busy && queue.requests.is_empty() && !queue.closing;
            if queue.closed || !idle || !self.shared.health().is_ok() {
                drop(queue);
                self.shared.push(request);
                return;
            }
            queue.busy = true;
        }
        // Gives the turn back (to the thread, if anything queued meanwhile), even if a completion panics.
        let _turn = Turn(&self.shared);
        let Request::Append(entries, done) = request else {
            unreachable!("built as an append above");
        };
        let work = Work::Appends(vec![(entries, done)]);
        crate::hoptrace::hop("wal_start");
        let result = self.log.attempt_once(&self.shared, &work);
        crate::hoptrace::hop("wal_done");
        if matches!(&result, Err(error) if error.is_no_space()) {
            // The thread owns out-of-space episodes (retries, health, logging): hand it the batch,
            // ahead of anything queued since.
            let Work::Appends(appends) = work else {
                unreachable!("built as appends above");
            };
            let mut queue = self.shared.lock();
            for (entries, done) in appends.into_iter().rev() {
                queue.requests.push_front(Request::Append(entries, done));
            }
            return;
        }
        if result.is_ok() {
            self.shared.caller_batches.fetch_add(1, Ordering::Relaxed);
        }
        work.complete(result);
    }

    /// Reads entries `from..=to` back from the files, on the calling thread (blocking: file reads of
    /// whole segments; a cold path, for entries a caller no longer keeps in memory). Only written
    /// entries are there: asking for one not yet written, or purged, is `WalError::NotInLog`. The writer
    /// waits only while the segments are opened, not while they are read.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        self.log.read(from, to)
    }

    /// Queues `Wal::truncate_after`, ordered after everything submitted before.
    pub fn truncate_after(&self, index: u64, done: Completion) {
        self.shared.push(Request::TruncateAfter(index, done));
    }

    /// Queues `Wal::purge_upto`, ordered after everything submitted before.
    pub fn purge_upto(&self, index: u64, done: Completion) {
        self.shared.push(Request::PurgeUpto(index, done));
    }

    /// Queues `Wal::clear`, ordered after everything submitted before.
    pub fn clear(&self, done: Completion) {
        self.shared.push(Request::Clear(done));
    }

    pub fn stats(&self) -> WalWriterStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WalWriterStats {
            submissions: load(&self.shared.submissions),
            batches: load(&self.shared.batches),
            write_us: load(&self.shared.write_us),
            entries: load(&self.shared.entries),
            entry_bytes: load(&self.shared.entry_bytes),
            no_space_retries: load(&self.shared.no_space_retries),
            caller_batches: load(&self.shared.caller_batches),
        }
    }

    /// The last entry known to be durable (fdatasynced), as of the latest write, sync or truncation. Behind
    /// the acknowledged entries only with `WalOptions::sync_each_batch` off; `None` until something is
    /// written or synced.
    pub fn synced_index(&self) -> Option<u64> {
        self.shared.synced.load(Ordering::Acquire).checked_sub(1)
    }

    /// Whether the log is writing, out of space (writes held, retried) or stopped for good. Cheap: one
    /// atomic load while all is well. See `WalHealth` for what the server should do in each state.
    pub fn health(&self) -> WalHealth {
        self.shared.health()
    }

    /// Finishes everything queued (running its completions), then stops the thread. Out of space, it
    /// gives up instead of waiting: what is held fails with `WalError::NoSpace` and what is queued
    /// behind it with `WalError::Stopped`, unacknowledged.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for WalWriter {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic on the writer thread came from a completion; the exit guard has already
            // refused what was queued, so there is nothing left to do with it here.
            let _ = thread.join();
        }
    }
}

/// `submit_now`'s turn at writing: ends it, and wakes the thread if work queued meanwhile.
struct Turn<'a>(&'a Shared);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        queue.busy = false;
        let more = !queue.requests.is_empty() || queue.closing || self.0.lazy_sync;
        drop(queue);
        if more {
            self.0.wake.notify_one();
        }
    }
}

/// What the thread takes from the queue in one go.
enum Work {
    /// Consecutive appends that fit one batch.
    Appends(Vec<(Entries, Completion)>),
    TruncateAfter(u64, Completion),
    PurgeUpto(u64, Completion),
    Clear(Completion),
}

impl Work {
    fn complete(self, result: Result<(), WalError>) {
        match self {
            Work::Appends(appends) => {
                for (_, done) in appends {
                    done(result.clone());
                }
            }
            Work::TruncateAfter(_, done) | Work::PurgeUpto(_, done) | Work::Clear(done) => {
                done(result)
            }
        }
    }
}

/// On exit, normal or by a panic in a completion: refuse everything still queued and later.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let orphans: Vec<Request> = {
            let mut queue = self.0.lock();
            queue.closed = true;
            queue.requests.drain(..).collect()
        };
        if std::thread::panicking() {
            self.0.set_health(WalHealth::Failed(WalError::Closed));
        }
        for request in orphans {
            request.complete(Err(WalError::Closed));
        }
    }
}

fn run<D: Disk>(log: &Log<D>, shared: &Shared) {
    let _guard = ExitGuard(shared);
    // With `sync_each_batch` off (forceSync=no): how long written entries may stay unsynced.
    let lazy_sync = {
        let wal = log.wal();
        let opts = wal.options();
        (!opts.sync_each_batch).then_some(opts.lazy_sync_after)
    };
    let mut last_sync = Instant::now();
    loop {
        let work = {
            let mut queue = shared.lock();
            loop {
                // Not busy: nobody else holds the log, so looking at it here does not wait.
                let unsynced = lazy_sync.is_some() && !queue.busy && log.wal().has_unsynced();
                if let (Some(after), true) = (lazy_sync, unsynced) {
                    let waited = last_sync.elapsed();
                    if waited >= after || queue.closing {
                        queue.busy = true;
                        drop(queue);
                        sync_written(log, shared);
                        last_sync = Instant::now();
                        queue = shared.lock();
                        queue.busy = false;
                        continue;
                    }
                    if queue.requests.is_empty() {
                        queue = shared
                            .wake
                            .wait_timeout(queue, after - waited)
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .0;
                        continue;
                    }
                }
                if !queue.busy && (!queue.requests.is_empty() || queue.closing) {
                    break;
                }
                let all_synced = !queue.busy && !unsynced;
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if all_synced {
                    // Unsynced entries written from now on are the oldest.
                    last_sync = Instant::now();
                }
            }
            if queue.requests.is_empty() {
                return;
            }
            queue.busy = true;
            take_work(&mut queue.requests, &log.wal())
        };
        crate::hoptrace::hop("wal_start");
        let result = {
            let mut wal = log.wal();
            let result = perform(&mut wal, shared, &work);
            shared.publish_synced(&wal);
            result
        };
        crate::hoptrace::hop("wal_done");
        work.complete(result);
        shared.lock().busy = false;
    }
}

/// The lazy fdatasync of `WalOptions::sync_each_batch` off. A failure stops the log for good.
fn sync_written<D: Disk>(log: &Log<D>, shared: &Shared) {
    let mut wal = log.wal();
    if wal.stopped().is_some() {
        return;
    }
    let result = wal.sync_written();
    shared.publish_synced(&wal);
    if result.is_err() {
        if let Some(cause) = wal.stopped() {
            shared.set_health(WalHealth::Failed(cause.clone()));
        }
    }
}

/// Does `work`, retrying it for as long as the device is full. The result is final: `NoSpace` only
/// when shutdown came first.
fn perform<D: Disk>(wal: &mut Wal<D>, shared: &Shared, work: &Work) -> Result<(), WalError> {
    let (retry_min, retry_max) = {
        let opts = wal.options();
        (opts.no_space_retry_min, opts.no_space_retry_max)
    };
    let mut delay = retry_min;
    let mut episode: Option<Episode> = None;
    let mut last_attempt = false;
    loop {
        let result = attempt(wal, shared, work);
        let error = match result {
            Err(error) if error.is_no_space() => error,
            result => {
                if let Some(cause) = wal.stopped() {
                    shared.set_health(WalHealth::Failed(cause.clone()));
                } else if let Some(episode) = episode {
                    tracing::warn!(
                        dir = %wal.dir().display(),
                        after_s = episode.since.elapsed().as_secs_f64(),
                        attempts = episode.attempts,
                        "disk space is back: the write-ahead log writes and acknowledges again"
                    );
                    shared.set_health(WalHealth::Ok);
                }
                return result;
            }
        };
        shared.no_space_retries.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let current = match episode {
            None => {
                tracing::error!(
                    dir = %wal.dir().display(),
                    %error,
                    "the device is full: the write-ahead log holds this batch unacknowledged and \
                     retries it until space is freed; writes wait, reads go on"
                );
                Episode {
                    since: now,
                    attempts: 1,
                    logged: now,
                }
            }
            Some(mut episode) => {
                episode.attempts += 1;
                if now - episode.logged >= NO_SPACE_LOG_INTERVAL {
                    tracing::error!(
                        dir = %wal.dir().display(),
                        %error,
                        for_s = (now - episode.since).as_secs(),
                        "the device is still full: the write-ahead log is waiting for space"
                    );
                    episode.logged = now;
                }
                episode
            }
        };
        episode = Some(current);
        shared.set_health(WalHealth::OutOfSpace {
            since: current.since,
            attempts: current.attempts,
            error: error.clone(),
        });
        if last_attempt {
            // Nothing queued behind this may be written now, or the log would have a hole.
            tracing::warn!(
                "shutting down while out of disk space: unacknowledged writes are dropped"
            );
            return Err(wal.stop(error));
        }
        // Shutdown: one more attempt at once, then give up.
        last_attempt = !shared.pause(delay);
        delay = (delay * 2).min(retry_max);
    }
}

/// An out-of-space episode: from the first failed attempt to the first one that succeeds.
#[derive(Clone, Copy)]
struct Episode {
    since: Instant,
    attempts: u64,
    /// When it was last logged.
    logged: Instant,
}

/// One attempt at `work`. Out of space, `Wal` leaves the log where a retry continues.
fn attempt<D: Disk>(wal: &mut Wal<D>, shared: &Shared, work: &Work) -> Result<(), WalError> {
    match work {
        Work::Appends(appends) => write_appends(wal, shared, appends),
        Work::TruncateAfter(index, _) => wal.truncate_after(*index),
        Work::PurgeUpto(index, _) => wal.purge_upto(*index),
        Work::Clear(_) => wal.clear(),
    }
}

/// Takes the front request, and if it is an append, the appends behind it that continue its indices
/// and fit the batch limits. A submission that does not continue the indices goes alone, so the
/// `NotConsecutive` error it earns fails only its own completion.
fn take_work<D: Disk>(requests: &mut VecDeque<Request>, wal: &Wal<D>) -> Work {
    let WalOptions {
        batch_bytes_max,
        batch_entries_max,
        ..
    } = *wal.options();
    let (entries, done) = match requests.pop_front() {
        Some(Request::Append(entries, done)) => (entries, done),
        Some(Request::TruncateAfter(index, done)) => return Work::TruncateAfter(index, done),
        Some(Request::PurgeUpto(index, done)) => return Work::PurgeUpto(index, done),
        Some(Request::Clear(done)) => return Work::Clear(done),
        None => unreachable!("the caller checked the queue is not empty"),
    };
    let mut next = match wal.next_index() {
        Ok(next) => continues(&entries, next),
        Err(_) => None,
    };
    let (mut bytes, mut count) = size(&entries);
    let mut appends = vec![(entries, done)];
    while let (Some(expected), Some(Request::Append(entries, _))) = (next, requests.front()) {
        let Some(after) = continues(entries, Some(expected)) else {
            break;
        };
        let (more_bytes, more_count) = size(entries);
        if bytes + more_bytes > batch_bytes_max || count + more_count > batch_entries_max {
            break;
        }
        let Some(Request::Append(entries, done)) = requests.pop_front() else {
            unreachable!("the front request was just seen to be an append");
        };
        appends.push((entries, done));
        bytes += more_bytes;
        count += more_count;
        next = Some(after);
    }
    Work::Appends(appends)
}

/// If `entries` are consecutive and start at `expected` (any start when `None`): the index after
/// them, or `expected` itself when there are none.
fn continues(entries: &[(u64, Vec<u8>)], expected: Option<u64>) -> Option<u64> {
    let Some((first, _)) = entries.first() else {
        return expected;
    };
    if expected.is_some_and(|expected| expected != *first) {
        return None;
    }
    let consecutive = entries
        .iter()
        .enumerate()
        .all(|(k, (index, _))| first.checked_add(k as u64) == Some(*index));
    if !consecutive {
        return None;
    }
    first.checked_add(entries.len() as u64)
}

fn size(entries: &[(u64, Vec<u8>)]) -> (usize, usize) {
    let bytes = entries
        .iter()
        .map(|(_, bytes)| RECORD_HEADER_BYTES + bytes.len())
        .sum();
    (bytes, entries.len())
}

fn write_appends<D: Disk>(
    wal: &mut Wal<D>,
    shared: &Shared,
    appends: &[(Entries, Completion)],
) -> Result<(), WalError> {
    let all = appends.iter().flat_map(|(entries, _)| {
        entries
            .iter()
            .map(|(index, bytes)| (*index, bytes.as_slice()))
    });
    let started = std::time::Instant::now();
    let mut result = wal.append_iter(all);
    if let Ok(Some(_)) = result {
        let took = started.elapsed().as_micros() as u64;
        shared.write_us.fetch_add(took, Ordering::Relaxed);
        shared.last_write_us.store(took, Ordering::Relaxed);
        let (bytes, count) = appends.iter().fold((0, 0), |(bytes, count), (entries, _)| {
            let payload: usize = entries.iter().map(|(_, bytes)| bytes.len()).sum();
            (bytes + payload, count + entries.len())
        });
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared.entries.fetch_add(count as u64, Ordering::Relaxed);
        shared
            .entry_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
    // The one rule of a log: never acknowledge what is not durable (with forceSync=no: not written).
    // `Wal` only advances `synced_index` after a successful fdatasync; check it rather than trust it.
    if let Ok(Some(last)) = result {
        let durable = wal
            .acknowledgeable_index()
            .is_some_and(|synced| synced >= last);
        debug_assert!(
            durable,
            "acknowledging entry {last} beyond synced index {:?}",
            wal.synced_index()
        );
        if !durable {
            let error = WalError::Invariant("an acknowledged entry is beyond the last synced one");
            result = Err(wal.stop(error));
        }
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests;
