//! `WalWriter`: group commit. A dedicated thread owns the `Wal` and turns everything queued into as few
//! batches (and fdatasyncs) as the limits allow.
//!
//! Submitters never wait: they hand over entries with a completion callback. The thread drains the
//! queue into one batch (up to `WalOptions::batch_bytes_max` / `batch_entries_max`), writes it, does
//! one fdatasync, then runs the completions of that batch in submission order. A completion runs only
//! when its entries are durable; the thread checks this before every acknowledgement.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

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
}

/// The handle of the group-commit thread. Dropping it is `shutdown`.
pub struct WalWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
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
    entries: AtomicU64,
    entry_bytes: AtomicU64,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Request>,
    /// `shutdown` was called: finish what is queued, then exit.
    closing: bool,
    /// The thread has exited (or died): requests are refused.
    closed: bool,
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            submissions: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            entry_bytes: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("oxkeeper-wal".into())
            .spawn(move || run(wal, &thread_shared))?;
        Ok(WalWriter {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues consecutive entries (following those submitted before). `done` runs once they are
    /// durable, after the completions of every earlier request.
    pub fn submit(&self, entries: Vec<(u64, Vec<u8>)>, done: Completion) {
        self.shared.submissions.fetch_add(1, Ordering::Relaxed);
        self.shared.push(Request::Append(entries, done));
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
            entries: load(&self.shared.entries),
            entry_bytes: load(&self.shared.entry_bytes),
        }
    }

    /// Finishes everything queued (running its completions), then stops the thread.
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

/// What the thread takes from the queue in one go.
enum Work {
    /// Consecutive appends that fit one batch.
    Appends(Vec<(Entries, Completion)>),
    TruncateAfter(u64, Completion),
    PurgeUpto(u64, Completion),
    Clear(Completion),
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
        for request in orphans {
            request.complete(Err(WalError::Closed));
        }
    }
}

fn run<D: Disk>(mut wal: Wal<D>, shared: &Shared) {
    let _guard = ExitGuard(shared);
    loop {
        let work = {
            let mut queue = shared.lock();
            while queue.requests.is_empty() && !queue.closing {
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if queue.requests.is_empty() {
                return;
            }
            take_work(&mut queue.requests, &wal)
        };
        match work {
            Work::Appends(appends) => write_appends(&mut wal, shared, appends),
            Work::TruncateAfter(index, done) => done(wal.truncate_after(index)),
            Work::PurgeUpto(index, done) => done(wal.purge_upto(index)),
            Work::Clear(done) => done(wal.clear()),
        }
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

fn write_appends<D: Disk>(wal: &mut Wal<D>, shared: &Shared, appends: Vec<(Entries, Completion)>) {
    let all = appends.iter().flat_map(|(entries, _)| {
        entries
            .iter()
            .map(|(index, bytes)| (*index, bytes.as_slice()))
    });
    let mut result = wal.append_iter(all);
    if let Ok(Some(_)) = result {
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
    // The one rule of a log: never acknowledge what is not durable. `Wal` only advances
    // `synced_index` after a successful fdatasync; check it rather than trust it.
    if let Ok(Some(last)) = result {
        let durable = wal.synced_index().is_some_and(|synced| synced >= last);
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
    let result = result.map(|_| ());
    for (_, done) in appends {
        done(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimDisk, SimFault};
    use std::path::Path;
    use std::sync::mpsc;

    /// Small segments: cheap in memory, and the tests roll through many of them.
    fn small() -> WalOptions {
        WalOptions {
            segment_bytes: 16 << 10,
            ..WalOptions::default()
        }
    }

    fn open(disk: &SimDisk, opts: WalOptions) -> Wal<SimDisk> {
        Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap().0
    }

    fn entry(index: u64) -> Vec<u8> {
        format!("entry {index}").into_bytes()
    }

    /// A completion that reports `(tag, result)` on `tx`.
    fn report(tx: &mpsc::Sender<(u64, Result<(), WalError>)>, tag: u64) -> Completion {
        let tx = tx.clone();
        Box::new(move |result| {
            let _ = tx.send((tag, result));
        })
    }

    #[test]
    fn concurrent_submitters_share_fdatasyncs_and_complete_in_order() {
        const THREADS: u64 = 16;
        const PER_THREAD: u64 = 200;
        let disk = SimDisk::new();
        let writer = WalWriter::spawn(open(&disk, small()));
        let syncs_before = disk.sync_data_calls();
        // Indices must follow submission order, so the index is taken and submitted under one lock
        // (as openraft does from its single log task); the write itself happens on the writer thread.
        let next = Mutex::new(1u64);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let (writer, next, tx) = (&writer, &next, tx.clone());
                scope.spawn(move || {
                    for _ in 0..PER_THREAD {
                        let (done_tx, done_rx) = mpsc::channel();
                        {
                            let mut next = next.lock().unwrap();
                            let index = *next;
                            *next += 1;
                            let tx = tx.clone();
                            writer.submit(
                                vec![(index, entry(index))],
                                Box::new(move |result| {
                                    let _ = tx.send((index, result));
                                    let _ = done_tx.send(());
                                }),
                            );
                        }
                        done_rx.recv().unwrap();
                    }
                });
            }
        });
        drop(tx);
        let completed: Vec<(u64, Result<(), WalError>)> = rx.iter().collect();
        let total = THREADS * PER_THREAD;
        assert_eq!(completed.len() as u64, total);
        for (k, (index, result)) in completed.iter().enumerate() {
            assert_eq!(*index, k as u64 + 1, "completions out of submission order");
            assert!(result.is_ok(), "{result:?}");
        }
        let syncs = disk.sync_data_calls() - syncs_before;
        let stats = writer.stats();
        assert_eq!(stats.submissions, total);
        assert_eq!(stats.entries, total);
        assert!(
            syncs < total,
            "{syncs} fdatasyncs for {total} submissions: no group commit"
        );
        assert!(stats.batches < total);
        writer.shutdown();
        let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), small()).unwrap();
        let expected: Vec<(u64, Vec<u8>)> = (1..=total).map(|i| (i, entry(i))).collect();
        assert_eq!(recovered.entries, expected);
    }

    #[test]
    fn no_completion_reports_an_entry_that_a_power_loss_then_loses() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        for seed in 0..40 {
            let mut rng = StdRng::seed_from_u64(seed);
            let disk = SimDisk::new();
            let opts = WalOptions {
                segment_bytes: rng.gen_range(200..2000),
                ..WalOptions::default()
            };
            let writer = WalWriter::spawn(open(&disk, opts.clone()));
            disk.crash_after(rng.gen_range(0..60));
            let (tx, rx) = mpsc::channel();
            for index in 1..=200 {
                writer.submit(vec![(index, entry(index))], report(&tx, index));
            }
            writer.shutdown();
            disk.power_loss(&mut rng);
            let acknowledged = rx
                .try_iter()
                .filter(|(_, result)| result.is_ok())
                .map(|(index, _)| index)
                .max();
            let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap();
            let last = recovered.last_index();
            assert!(
                acknowledged <= last,
                "seed {seed}: acknowledged {acknowledged:?}, recovered {last:?}"
            );
            let want: Vec<(u64, Vec<u8>)> =
                (1..=last.unwrap_or(0)).map(|i| (i, entry(i))).collect();
            assert_eq!(recovered.entries, want, "seed {seed}");
        }
    }

    #[test]
    fn queued_submissions_are_merged_into_one_batch_within_limits() {
        let disk = SimDisk::new();
        let opts = WalOptions {
            batch_entries_max: 4,
            ..small()
        };
        let wal = open(&disk, opts);
        let (tx, rx) = mpsc::channel();
        // Queue everything before the thread can look: hold the queue lock while submitting.
        let writer = WalWriter::spawn(wal);
        {
            let mut queue = writer.shared.lock();
            for index in 1..=10u64 {
                queue.requests.push_back(Request::Append(
                    vec![(index, entry(index))],
                    report(&tx, index),
                ));
            }
        }
        writer.shared.wake.notify_one();
        let order: Vec<u64> = rx
            .iter()
            .take(10)
            .map(|(tag, r)| r.map(|()| tag).unwrap())
            .collect();
        assert_eq!(order, (1..=10).collect::<Vec<_>>());
        // 10 entries, at most 4 per batch.
        assert_eq!(writer.stats().batches, 3);
    }

    #[test]
    fn a_non_consecutive_submission_fails_alone() {
        let disk = SimDisk::new();
        let writer = WalWriter::spawn(open(&disk, small()));
        let (tx, rx) = mpsc::channel();
        {
            let mut queue = writer.shared.lock();
            queue
                .requests
                .push_back(Request::Append(vec![(1, entry(1))], report(&tx, 1)));
            queue
                .requests
                .push_back(Request::Append(vec![(5, entry(5))], report(&tx, 5)));
            queue
                .requests
                .push_back(Request::Append(vec![(2, entry(2))], report(&tx, 2)));
        }
        writer.shared.wake.notify_one();
        let results: Vec<(u64, Result<(), WalError>)> = rx.iter().take(3).collect();
        assert!(results[0].1.is_ok());
        assert!(matches!(
            results[1].1,
            Err(WalError::NotConsecutive {
                expected: 2,
                got: 5
            })
        ));
        assert!(results[2].1.is_ok());
    }

    #[test]
    fn truncate_and_purge_are_ordered_with_appends() {
        let disk = SimDisk::new();
        let opts = WalOptions {
            segment_bytes: 128,
            ..small()
        };
        let writer = WalWriter::spawn(open(&disk, opts.clone()));
        let (tx, rx) = mpsc::channel();
        for index in 1..=10 {
            writer.submit(vec![(index, entry(index))], report(&tx, index));
        }
        writer.truncate_after(6, report(&tx, 100));
        writer.submit(vec![(7, b"seven again".to_vec())], report(&tx, 7));
        writer.purge_upto(3, report(&tx, 200));
        writer.shutdown();
        let tags: Vec<u64> = rx
            .try_iter()
            .map(|(tag, r)| r.map(|()| tag).unwrap())
            .collect();
        assert_eq!(tags, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 7, 200]);
        let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap();
        // Purging removes whole segments only, and how many entries share a segment depends on how
        // the submissions were batched: entries 4.. must remain, fewer may be gone.
        let first = recovered.first_index;
        assert!((1..=4).contains(&first), "{first}");
        let mut want: Vec<(u64, Vec<u8>)> = (first..=6).map(|i| (i, entry(i))).collect();
        want.push((7, b"seven again".to_vec()));
        assert_eq!(recovered.entries, want);
    }

    #[test]
    fn a_failed_fdatasync_fails_the_batch_and_every_later_request() {
        let disk = SimDisk::new();
        let writer = WalWriter::spawn(open(&disk, small()));
        let (tx, rx) = mpsc::channel();
        writer.submit(vec![(1, entry(1))], report(&tx, 1));
        assert!(rx.recv().unwrap().1.is_ok());
        disk.set_fault(Some(SimFault::SyncIo));
        writer.submit(vec![(2, entry(2))], report(&tx, 2));
        let (_, result) = rx.recv().unwrap();
        assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
        disk.set_fault(None);
        writer.submit(vec![(3, entry(3))], report(&tx, 3));
        let (_, result) = rx.recv().unwrap();
        assert!(matches!(result, Err(WalError::Stopped(_))), "{result:?}");
    }

    #[test]
    fn requests_after_the_thread_died_are_refused() {
        let disk = SimDisk::new();
        let writer = WalWriter::spawn(open(&disk, small()));
        writer.submit(
            vec![(1, entry(1))],
            Box::new(|_| panic!("a completion that panics")),
        );
        // The panic ends the thread; wait for it, then see that new requests are refused.
        let mut writer = writer;
        let thread = writer.thread.take().unwrap();
        assert!(thread.join().is_err());
        let (tx, rx) = mpsc::channel();
        writer.submit(vec![(2, entry(2))], report(&tx, 2));
        assert!(matches!(rx.recv().unwrap().1, Err(WalError::Closed)));
    }
}
