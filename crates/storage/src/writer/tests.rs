//! Tests of `WalWriter`: group commit, ordering, power loss, and the disk faults (ENOSPC, EIO).

use super::*;
use crate::sim::{SimDisk, SimFault};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::mpsc;
use std::sync::mpsc::RecvTimeoutError;

/// Generous: a test waits this long for something that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// Small segments: cheap in memory, and the tests roll through many of them. Each created at its roll, so
/// that the disk's counters count the log's own work (the random power losses keep the spares).
fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 16 << 10,
        prepare_segments: false,
        ..WalOptions::default()
    }
}

/// Retries out of space every few milliseconds rather than every 100 ms to 1 s.
fn fast_retry(opts: WalOptions) -> WalOptions {
    WalOptions {
        no_space_retry_min: Duration::from_millis(1),
        no_space_retry_max: Duration::from_millis(4),
        ..opts
    }
}

/// Polls `condition` until it holds; panics naming `what` after `PATIENCE`.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
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
    assert_eq!(writer.synced_index(), Some(total));
    writer.shutdown();
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), small()).unwrap();
    let expected: Vec<(u64, Vec<u8>)> = (1..=total).map(|i| (i, entry(i))).collect();
    assert_eq!(recovered.entries, expected);
}

#[test]
fn submit_now_writes_on_the_caller_when_idle_and_keeps_order_with_the_thread() {
    let disk = SimDisk::new();
    let writer = WalWriter::spawn(open(&disk, small()));
    // Idle: written, synced and completed on this thread before submit_now returns.
    let caller = std::thread::current().id();
    let (tx, rx) = mpsc::channel();
    writer.submit_now(
        vec![(1, entry(1))],
        Box::new(move |result| {
            let _ = tx.send((std::thread::current().id(), result));
        }),
    );
    let (thread, result) = rx.try_recv().expect("completed before submit_now returned");
    assert_eq!(thread, caller);
    assert!(result.is_ok(), "{result:?}");
    assert!(writer.is_idle());
    let stats = writer.stats();
    assert_eq!((stats.batches, stats.caller_batches), (1, 1));

    // Many submitters, each way in at random: one order, every entry once, no lost wake-up.
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 300;
    let next = Mutex::new(2u64);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (writer, next, tx) = (&writer, &next, tx.clone());
            scope.spawn(move || {
                let mut rng = StdRng::seed_from_u64(t);
                for _ in 0..PER_THREAD {
                    let (done_tx, done_rx) = mpsc::channel();
                    {
                        let mut next = next.lock().unwrap();
                        let index = *next;
                        *next += 1;
                        let tx = tx.clone();
                        let done: Completion = Box::new(move |result| {
                            let _ = tx.send((index, result));
                            let _ = done_tx.send(());
                        });
                        if rng.gen_bool(0.5) {
                            writer.submit_now(vec![(index, entry(index))], done);
                        } else {
                            writer.submit(vec![(index, entry(index))], done);
                        }
                    }
                    done_rx
                        .recv_timeout(PATIENCE)
                        .expect("a submission never completed");
                }
            });
        }
    });
    drop(tx);
    let completed: Vec<(u64, Result<(), WalError>)> = rx.iter().collect();
    let total = 1 + THREADS * PER_THREAD;
    assert_eq!(completed.len() as u64, total - 1);
    for (k, (index, result)) in completed.iter().enumerate() {
        assert_eq!(*index, k as u64 + 2, "completions out of submission order");
        assert!(result.is_ok(), "{result:?}");
    }
    assert_eq!(writer.stats().submissions, total);
    writer.shutdown();
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), small()).unwrap();
    let expected: Vec<(u64, Vec<u8>)> = (1..=total).map(|i| (i, entry(i))).collect();
    assert_eq!(recovered.entries, expected);
}

#[test]
fn submit_now_out_of_space_leaves_the_batch_to_the_thread() {
    let disk = SimDisk::new();
    let opts = fast_retry(small());
    let writer = WalWriter::spawn(open(&disk, opts.clone()));
    let (tx, rx) = mpsc::channel();
    disk.set_fault(Some(SimFault::NoSpace));
    writer.submit_now(vec![(1, entry(1))], report(&tx, 1));
    // Not acknowledged, not failed: the thread holds it and retries.
    assert!(rx.try_recv().is_err());
    wait_until("the writer thread retries the batch", || {
        writer.stats().no_space_retries >= 3
    });
    assert!(!writer.is_idle());
    // Behind it, both ways in queue.
    writer.submit_now(vec![(2, entry(2))], report(&tx, 2));
    writer.submit(vec![(3, entry(3))], report(&tx, 3));
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    ));
    disk.set_fault(None);
    let done: Vec<u64> = rx
        .iter()
        .take(3)
        .map(|(tag, r)| r.map(|()| tag).unwrap())
        .collect();
    assert_eq!(done, [1, 2, 3]);
    wait_until("the writer is idle again", || writer.is_idle());
    // All three were written by the writer's thread, none by the callers.
    assert_eq!(writer.stats().caller_batches, 0);
    writer.shutdown();
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap();
    assert_eq!(
        recovered.entries,
        (1..=3).map(|i| (i, entry(i))).collect::<Vec<_>>()
    );
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
            // Both ways in: the writer thread's batches and writes on the caller's thread.
            if rng.gen_bool(0.5) {
                writer.submit_now(vec![(index, entry(index))], report(&tx, index));
            } else {
                writer.submit(vec![(index, entry(index))], report(&tx, index));
            }
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
        let want: Vec<(u64, Vec<u8>)> = (1..=last.unwrap_or(0)).map(|i| (i, entry(i))).collect();
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

/// fsyncgate: after a failed fdatasync the kernel may have dropped the dirty pages and marked them
/// clean, so a second fdatasync could succeed without them. The writer never retries one: the batch
/// fails, the health turns `Failed` for good, and nothing is acknowledged again.
#[test]
fn a_failed_fdatasync_fails_the_batch_and_every_later_request() {
    let disk = SimDisk::new();
    let writer = WalWriter::spawn(open(&disk, small()));
    let (tx, rx) = mpsc::channel();
    writer.submit(vec![(1, entry(1))], report(&tx, 1));
    assert!(rx.recv().unwrap().1.is_ok());
    assert!(writer.health().is_ok());
    disk.set_fault(Some(SimFault::SyncIo));
    writer.submit(vec![(2, entry(2))], report(&tx, 2));
    let (_, result) = rx.recv().unwrap();
    let error = result.unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    assert!(!error.is_no_space());
    let WalHealth::Failed(cause) = writer.health() else {
        panic!("expected Failed, got {}", writer.health());
    };
    assert_eq!(cause.raw_os_error(), Some(libc::EIO));
    let text = writer.health().to_string();
    assert!(
        text.contains("syncing") && text.contains("Restart"),
        "{text}"
    );
    disk.set_fault(None);
    writer.submit(vec![(3, entry(3))], report(&tx, 3));
    writer.truncate_after(1, report(&tx, 100));
    for _ in 0..2 {
        let (tag, result) = rx.recv().unwrap();
        assert!(
            matches!(result, Err(WalError::Stopped(_))),
            "{tag}: {result:?}"
        );
    }
    assert!(writer.health().is_failed());
    assert_eq!(writer.stats().no_space_retries, 0);
}

#[test]
fn an_io_error_on_a_write_is_fatal_too() {
    let disk = SimDisk::new();
    let writer = WalWriter::spawn(open(&disk, fast_retry(small())));
    let (tx, rx) = mpsc::channel();
    disk.set_fault_times(SimFault::WriteIo, 1);
    for index in 1..=3 {
        writer.submit(vec![(index, entry(index))], report(&tx, index));
    }
    writer.shutdown();
    let results: Vec<_> = rx.try_iter().collect();
    assert_eq!(results.len(), 3);
    assert!(
        results.iter().all(|(_, result)| result.is_err()),
        "{results:?}"
    );
    assert_eq!(
        results[0].1.as_ref().unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
}

#[test]
fn out_of_space_holds_acknowledgements_then_resumes_them_in_order() {
    let disk = SimDisk::new();
    let opts = fast_retry(small());
    let writer = WalWriter::spawn(open(&disk, opts.clone()));
    let (tx, rx) = mpsc::channel();
    for index in 1..=5 {
        writer.submit(vec![(index, entry(index))], report(&tx, index));
    }
    let first: Vec<u64> = rx
        .iter()
        .take(5)
        .map(|(tag, r)| r.map(|()| tag).unwrap())
        .collect();
    assert_eq!(first, [1, 2, 3, 4, 5]);

    disk.set_fault(Some(SimFault::NoSpace));
    for index in 6..=30 {
        writer.submit(vec![(index, entry(index))], report(&tx, index));
    }
    wait_until("the writer has retried a few times", || {
        writer.stats().no_space_retries >= 5
    });
    let health = writer.health();
    let WalHealth::OutOfSpace {
        since,
        attempts,
        error,
    } = &health
    else {
        panic!("expected OutOfSpace, got {health}");
    };
    assert!(error.is_no_space(), "{error}");
    assert!(*attempts >= 5 && since.elapsed() < PATIENCE, "{health:?}");
    assert!(health.to_string().contains("out of disk space"), "{health}");
    // Nothing acknowledged, and nothing failed either: the callers just wait.
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(50)),
        Err(RecvTimeoutError::Timeout)
    ));

    disk.set_fault(None);
    let resumed: Vec<u64> = rx
        .iter()
        .take(25)
        .map(|(tag, r)| r.map(|()| tag).unwrap())
        .collect();
    assert_eq!(resumed, (6..=30).collect::<Vec<_>>());
    assert!(writer.health().is_ok(), "{}", writer.health());
    assert_eq!(writer.stats().entries, 30);
    writer.shutdown();
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap();
    assert_eq!(
        recovered.entries,
        (1..=30).map(|i| (i, entry(i))).collect::<Vec<_>>()
    );
}

#[test]
fn a_truncation_out_of_space_waits_for_space_too() {
    let disk = SimDisk::new();
    let opts = fast_retry(small());
    let writer = WalWriter::spawn(open(&disk, opts.clone()));
    let (tx, rx) = mpsc::channel();
    writer.submit((1..=10).map(|i| (i, entry(i))).collect(), report(&tx, 10));
    assert!(rx.recv().unwrap().1.is_ok());
    disk.set_fault(Some(SimFault::NoSpaceTorn));
    writer.truncate_after(5, report(&tx, 100));
    writer.submit(vec![(6, b"six again".to_vec())], report(&tx, 6));
    wait_until("the truncation is held", || {
        writer.health().is_out_of_space()
    });
    assert!(rx.try_recv().is_err());
    disk.set_fault(None);
    let tags: Vec<u64> = rx
        .iter()
        .take(2)
        .map(|(tag, r)| r.map(|()| tag).unwrap())
        .collect();
    assert_eq!(tags, [100, 6]);
    assert!(writer.health().is_ok());
    writer.shutdown();
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap();
    let mut want: Vec<(u64, Vec<u8>)> = (1..=5).map(|i| (i, entry(i))).collect();
    want.push((6, b"six again".to_vec()));
    assert_eq!(recovered.entries, want);
}

#[test]
fn a_failed_fdatasync_while_retrying_out_of_space_is_still_fatal() {
    let disk = SimDisk::new();
    let writer = WalWriter::spawn(open(&disk, fast_retry(small())));
    let (tx, rx) = mpsc::channel();
    disk.set_fault(Some(SimFault::NoSpace));
    writer.submit(vec![(1, entry(1))], report(&tx, 1));
    wait_until("out of space", || writer.health().is_out_of_space());
    // Space returns, but the disk now fails its fdatasync.
    disk.set_fault(Some(SimFault::SyncIo));
    let (_, result) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(writer.health().is_failed());
    disk.set_fault(None);
    writer.submit(vec![(1, entry(1))], report(&tx, 2));
    assert!(matches!(rx.recv().unwrap().1, Err(WalError::Stopped(_))));
    assert!(writer.health().is_failed(), "Failed is final");
}

#[test]
fn shutdown_while_out_of_space_gives_up_without_acknowledging() {
    let disk = SimDisk::new();
    // The default backoff: shutdown must not wait for it.
    let writer = WalWriter::spawn(open(&disk, small()));
    let (tx, rx) = mpsc::channel();
    writer.submit(vec![(1, entry(1))], report(&tx, 1));
    assert!(rx.recv().unwrap().1.is_ok());
    disk.set_fault(Some(SimFault::NoSpace));
    for index in 2..=4 {
        writer.submit(vec![(index, entry(index))], report(&tx, index));
    }
    wait_until("out of space", || writer.health().is_out_of_space());
    // Not merged with the batch held: each is a request of its own.
    writer.truncate_after(1, report(&tx, 100));
    writer.submit(vec![(2, entry(2))], report(&tx, 5));
    let started = Instant::now();
    writer.shutdown();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let results: Vec<_> = rx.try_iter().collect();
    let tags: Vec<u64> = results.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(tags, [2, 3, 4, 100, 5]);
    // The batch held (entry 2, and 3 and 4 if they were merged into it) fails as it failed...
    let held = results
        .iter()
        .take_while(|(_, result)| result.as_ref().is_err_and(WalError::is_no_space))
        .count();
    assert!((1..=3).contains(&held), "{results:?}");
    // ... and what queued behind it is refused, never written past the hole.
    for (tag, result) in &results[held..] {
        assert!(
            matches!(result, Err(WalError::Stopped(_))),
            "{tag}: {result:?}"
        );
    }
    disk.set_fault(None);
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), small()).unwrap();
    assert_eq!(recovered.entries, [(1, entry(1))]);
}

#[test]
fn a_thread_that_died_reports_failed_health() {
    let disk = SimDisk::new();
    let mut writer = WalWriter::spawn(open(&disk, small()));
    writer.submit(
        vec![(1, entry(1))],
        Box::new(|_| panic!("a completion that panics")),
    );
    let thread = writer.thread.take().unwrap();
    assert!(thread.join().is_err());
    assert!(matches!(
        writer.health(),
        WalHealth::Failed(WalError::Closed)
    ));
}

/// What one seed of `nothing_acknowledged_is_lost_across_out_of_space_episodes_and_a_power_loss`
/// saw.
#[derive(Debug, Default)]
struct EpisodeSeen {
    no_space_retries: u64,
    out_of_space_observed: u32,
    acknowledged_after_an_episode: u32,
    crashed: u32,
}

/// Submissions stream in while the device fills up and empties again (whole writes refused, writes
/// cut short, preallocations failing at segment rolls), and the power fails at a random point. After
/// recovery the log holds every acknowledged entry, byte for byte, and the acknowledgements came in
/// submission order: a run of successes, then (after the crash) only failures.
#[test]
fn nothing_acknowledged_is_lost_across_out_of_space_episodes_and_a_power_loss() {
    let seeds: u64 = std::env::var("WAL_NO_SPACE_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    let mut seen = EpisodeSeen::default();
    for seed in 0..seeds {
        run_no_space_seed(seed, &mut seen);
    }
    assert!(seen.no_space_retries > 100, "{seen:?}");
    assert!(seen.out_of_space_observed > 10, "{seen:?}");
    assert!(seen.acknowledged_after_an_episode > 10, "{seen:?}");
    assert!(seen.crashed > 10, "{seen:?}");
}

fn run_no_space_seed(seed: u64, seen: &mut EpisodeSeen) {
    const ENTRIES: u64 = 300;
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::new();
    let opts = fast_retry(WalOptions {
        segment_bytes: rng.gen_range(200..3000),
        ..WalOptions::default()
    });
    let writer = WalWriter::spawn(open(&disk, opts.clone()));
    let crash_at = rng.gen_range(0..ENTRIES + 50);
    let (tx, rx) = mpsc::channel();
    // Submissions left in the current "until space returns" episode, and the index after which the
    // first such episode ended.
    let mut holding: Option<u32> = None;
    let mut first_episode_end = None;
    for index in 1..=ENTRIES {
        if index == crash_at {
            disk.crash_after(rng.gen_range(0..20));
        }
        if holding.is_none() && rng.gen_bool(0.04) {
            let fault = if rng.gen_bool(0.5) {
                SimFault::NoSpace
            } else {
                SimFault::NoSpaceTorn
            };
            if rng.gen_bool(0.6) {
                disk.set_fault_times(fault, rng.gen_range(1..10));
            } else {
                disk.set_fault(Some(fault));
                holding = Some(rng.gen_range(1..6));
            }
        }
        let bytes = if rng.gen_bool(0.2) {
            vec![0u8; rng.gen_range(0..80)]
        } else {
            (0..rng.gen_range(0..80)).map(|_| rng.gen()).collect()
        };
        let (tx, expected) = (tx.clone(), bytes.clone());
        writer.submit(
            vec![(index, bytes)],
            Box::new(move |result| {
                let _ = tx.send((index, expected, result));
            }),
        );
        if let Some(left) = holding {
            // Space stays gone until the writer has noticed, and a few more submissions queued.
            wait_until(
                "the writer reports the full disk and retries",
                || match writer.health() {
                    WalHealth::OutOfSpace { attempts, .. } => attempts >= 2,
                    health => health.is_failed(),
                },
            );
            seen.out_of_space_observed += u32::from(writer.health().is_out_of_space());
            holding = left.checked_sub(1).filter(|&left| left > 0);
            if holding.is_none() {
                disk.set_fault(None);
                first_episode_end.get_or_insert(index);
            }
        }
    }
    // Space returns before shutdown, which would otherwise give up on what is held.
    disk.set_fault(None);
    seen.no_space_retries += writer.stats().no_space_retries;
    writer.shutdown();
    seen.crashed += u32::from(disk.crashed());
    disk.power_loss(&mut rng);
    let results: Vec<(u64, Vec<u8>, Result<(), WalError>)> = rx.try_iter().collect();
    assert_eq!(
        results.len() as u64,
        ENTRIES,
        "seed {seed}: every request completes"
    );
    // Completions in submission order; successes first, then only failures.
    assert!(results
        .iter()
        .enumerate()
        .all(|(k, (index, _, _))| *index == k as u64 + 1));
    let acknowledged = results.iter().take_while(|(_, _, r)| r.is_ok()).count();
    assert!(
        results[acknowledged..].iter().all(|(_, _, r)| r.is_err()),
        "seed {seed}: an acknowledgement after a failure"
    );
    for (index, _, result) in &results[acknowledged..] {
        let error = result.as_ref().unwrap_err();
        assert!(
            !error.is_no_space(),
            "seed {seed}: entry {index} failed with ENOSPC instead of waiting: {error}"
        );
    }
    if first_episode_end.is_some_and(|end| acknowledged as u64 > end) {
        seen.acknowledged_after_an_episode += 1;
    }
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts)
        .unwrap_or_else(|e| panic!("seed {seed}: recovery failed: {e}"));
    let last = recovered.last_index().unwrap_or(0);
    assert!(
        last >= acknowledged as u64,
        "seed {seed}: acknowledged up to {acknowledged}, recovered up to {last}"
    );
    let want: Vec<(u64, Vec<u8>)> = results[..last as usize]
        .iter()
        .map(|(index, bytes, _)| (*index, bytes.clone()))
        .collect();
    assert_eq!(recovered.entries, want, "seed {seed}");
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

/// Appends entry `index` alone, on the caller's thread (`submit_now`) or through the writer's, and waits
/// for its acknowledgement.
fn append_acked(writer: &WalWriter, index: u64, on_caller: bool) {
    let (tx, rx) = mpsc::channel();
    let entries = vec![(index, entry(index))];
    if on_caller {
        writer.submit_now(entries, report(&tx, index));
    } else {
        writer.submit(entries, report(&tx, index));
    }
    let (tag, result) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(tag, index);
    assert!(result.is_ok(), "entry {index}: {result:?}");
}

/// Entries 1..=n as `entry` makes them.
fn entries_upto(n: u64) -> Vec<(u64, Vec<u8>)> {
    (1..=n).map(|i| (i, entry(i))).collect()
}

/// forceSync=no: `sync_each_batch` off, with a lazy sync that never comes during the test.
fn no_force_sync(lazy_sync_after: Duration) -> WalOptions {
    WalOptions {
        sync_each_batch: false,
        lazy_sync_after,
        ..small()
    }
}

#[test]
fn without_force_sync_batches_are_acknowledged_unsynced_and_survive_a_process_crash() {
    let disk = SimDisk::new();
    let opts = no_force_sync(Duration::from_secs(3600));
    let writer = WalWriter::spawn(open(&disk, opts.clone()));
    // The first batch creates the segment, whose header is synced before any batch.
    append_acked(&writer, 1, false);
    let syncs_before = disk.sync_data_calls();
    for index in 2..=40 {
        append_acked(&writer, index, index % 2 == 0);
    }
    assert_eq!(
        disk.sync_data_calls(),
        syncs_before,
        "an fdatasync with forceSync=no before the lazy sync was due"
    );
    assert_eq!(
        writer.synced_index(),
        None,
        "nothing was synced but the segment's header"
    );
    // A crash of the process (the page cache survives): every acknowledged entry is there.
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts.clone()).unwrap();
    let want = entries_upto(40);
    assert_eq!(recovered.entries, want);
    // Shutdown syncs what was written: a power loss after it loses nothing.
    writer.shutdown();
    assert!(
        disk.sync_data_calls() > syncs_before,
        "no fdatasync at shutdown"
    );
    disk.power_loss(&mut StdRng::seed_from_u64(1));
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap();
    assert_eq!(recovered.entries, want);
}

#[test]
fn without_force_sync_a_full_segment_is_synced_before_the_next_one_starts() {
    for seed in 0..100 {
        let disk = SimDisk::new();
        let opts = WalOptions {
            segment_bytes: 1 << 10,
            ..no_force_sync(Duration::from_secs(3600))
        };
        let writer = WalWriter::spawn(open(&disk, opts.clone()));
        for index in 1..=200 {
            append_acked(&writer, index, false);
        }
        // A power loss now (no shutdown): only the last segment's entries may be lost.
        disk.power_loss(&mut StdRng::seed_from_u64(seed));
        drop(writer);
        let (wal, recovered) = match Wal::open(disk.clone(), Path::new("/wal"), opts) {
            Ok(opened) => opened,
            Err(error) => panic!("seed {seed}: {error}"),
        };
        let last = recovered.last_index().unwrap_or(0);
        let want = entries_upto(last);
        assert_eq!(recovered.entries, want);
        let rolled = wal.segment_count();
        assert!(
            rolled > 5,
            "only {rolled} segments: the test rolls too little"
        );
        // 200 entries in >5 segments: a segment holds < 40, so at most that many are lost.
        assert!(
            last > 160,
            "recovered only up to {last}: a full segment was not synced"
        );
    }
}

#[test]
fn without_force_sync_written_entries_are_synced_once_the_log_is_idle() {
    let disk = SimDisk::new();
    let opts = no_force_sync(Duration::from_millis(20));
    let writer = WalWriter::spawn(open(&disk, opts.clone()));
    for index in 1..=10 {
        // Written on this thread (the log is idle) or by the writer's: the lazy sync follows both.
        append_acked(&writer, index, index % 2 == 0);
    }
    let syncs = disk.sync_data_calls();
    wait_until("the lazy sync ran", || disk.sync_data_calls() > syncs);
    wait_until("the synced index caught up", || {
        writer.synced_index() == Some(10)
    });
    // Synced without a shutdown: a power loss now loses nothing.
    disk.power_loss(&mut StdRng::seed_from_u64(3));
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap();
    let want = entries_upto(10);
    assert_eq!(recovered.entries, want);
    drop(writer);
}

#[test]
fn without_force_sync_writes_made_on_the_callers_thread_are_synced_lazily_too() {
    let disk = SimDisk::new();
    let opts = no_force_sync(Duration::from_millis(20));
    let writer = WalWriter::spawn(open(&disk, opts.clone()));
    // A first write, synced lazily: then the writer's thread has nothing left to do and sleeps.
    append_acked(&writer, 1, false);
    wait_until("the first lazy sync", || writer.synced_index() == Some(1));
    // The log is idle, so every one of these is written on this thread, never handed to the writer's.
    for index in 2..=5 {
        append_acked(&writer, index, true);
    }
    wait_until(
        "the lazy sync of writes made on the caller's thread",
        || writer.synced_index() == Some(5),
    );
    disk.power_loss(&mut StdRng::seed_from_u64(5));
    let (_, recovered) = Wal::open(disk.clone(), Path::new("/wal"), opts).unwrap();
    let want = entries_upto(5);
    assert_eq!(recovered.entries, want);
    drop(writer);
}

#[test]
fn entries_read_back_while_submissions_go_on_are_whole_and_in_order() {
    let disk = SimDisk::new();
    // Small batches, so that the queued submissions roll through many segments.
    let opts = WalOptions {
        batch_entries_max: 8,
        ..small()
    };
    let writer = WalWriter::spawn(open(&disk, opts));
    let (tx, rx) = mpsc::channel();
    const N: u64 = 3000;
    let submitter = {
        let tx = tx.clone();
        move |writer: &WalWriter| {
            for i in 1..=N {
                writer.submit(vec![(i, entry(i))], report(&tx, i));
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| submitter(&writer));
        // Read what is acknowledged so far, over and over, while the thread writes (and rolls segments).
        let mut acked = 0;
        let mut reads = 0;
        while acked < N {
            let (tag, result) = rx.recv_timeout(PATIENCE).unwrap();
            assert!(result.is_ok(), "entry {tag}: {result:?}");
            acked = tag;
            if tag % 97 == 0 {
                let from = tag.saturating_sub(500).max(1);
                let got = writer.read(from, tag).unwrap();
                let want: Vec<(u64, Vec<u8>)> = (from..=tag).map(|i| (i, entry(i))).collect();
                assert_eq!(got, want, "{from}..={tag}");
                reads += 1;
            }
        }
        assert!(reads >= 30);
    });
    let files = disk.list(Path::new("/wal")).unwrap();
    assert!(files.len() > 3, "several segments were read: {files:?}");
    assert!(matches!(
        writer.read(1, N + 1),
        Err(WalError::NotInLog { .. })
    ));
}
