//! Where a connection's reader lives: on the apply thread while its client writes, on the runtime's workers
//! otherwise, and on the workers for as long as the apply thread is held in an fdatasync.
//!
//! A connection's socket is registered with one runtime's reactor, and its reader's task is started on that
//! runtime when the socket has something to read (`connection::park`, `OutInner::unpark`). A client whose
//! last requests went to the executor (writes, handshakes, reads queued behind a write) has its socket on
//! the apply thread (`crate::apply_thread`): the apply thread's own wait for events sees its next request,
//! and the reader hands it to the executor on the same thread, where it used to be a wake-up of the apply
//! thread by a worker (session 34: 12.8 us p50 of a write at one session, 35 us p90). Requests that come in
//! while the log's fdatasync runs are read when the executor yields after it (`Executor::run`) and go out
//! in the next entry. A client whose last run was answered by the reader itself (reads, pings) stays on the
//! workers: its requests never wait for the executor, and several workers read in parallel. Its client
//! idle (pings only), a connection leaves the reactors for the cold set (`crate::cold`), whose watcher runs
//! on the workers.
//!
//! The apply thread blocks in the log's fdatasync (`LogStore::append`), and with it its reactor: pings,
//! reads and four-letter words of the connections whose sockets are there would wait for the disk. So a
//! watchdog thread looks at the apply thread every `WATCH_PERIOD`, and when it finds it inside the same
//! blocking call twice in a row, moves every connection parked there to the workers (`Homes::sweep`) and
//! keeps new ones there (`Homes::away`) until the call has returned. Each such connection moves back when
//! its client next writes.
//!
//! Moving a socket is two system calls (out of one epoll set, into the other); it happens when a client
//! turns from writes to reads or back (and once after each handshake, which is read on the workers: a task
//! started on a held apply thread could not be moved), not per request.
//!
//! Measured (session 35, alternating rounds against the build before, bench/RESULTS.md): writes at 1 and 8
//! sessions +17-25%, at 32 sessions +5-6% with a lower p99; reads and session establishment unchanged.

// The set's keys hash and compare by the connection's id, which never changes (`ById`).
#![allow(clippy::mutable_key_type)]

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::runtime::Handle;

use crate::connection::OutInner;
use crate::executor::Shared;
use crate::stats::ById;

/// How often the watchdog looks at the apply thread: a ping that comes in while the apply thread is held
/// in an fdatasync is answered after at most about twice this (ZooKeeper answers it after the fsync).
pub const WATCH_PERIOD: Duration = Duration::from_millis(20);

thread_local! {
    /// On the apply thread: the workers' runtime (`Homes::workers`), for tasks spawned there that belong
    /// on the workers (`spawn_on_workers`).
    static WORKERS: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Makes `workers` the runtime `spawn_on_workers` uses on the calling thread (the apply thread, at its
/// start: it runs a current-thread runtime of its own).
pub(crate) fn set_workers_here(workers: Handle) {
    WORKERS.with(|w| *w.borrow_mut() = Some(workers));
}

/// Spawns a connection's task that must not take turns with apply (a backlog writer) on the workers, also
/// when called from the apply thread.
pub(crate) fn spawn_on_workers<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match WORKERS.with(|w| w.borrow().clone()) {
        Some(workers) => drop(workers.spawn(task)),
        None => drop(tokio::spawn(task)),
    }
}

/// The runtime a connection's socket is registered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Home {
    /// The multi-threaded runtime's workers.
    Workers,
    /// The apply thread's current-thread runtime.
    Apply,
}

impl Home {
    /// The runtime the calling thread runs.
    pub(crate) fn here() -> Home {
        if crate::apply_thread::on_apply_thread() {
            Home::Apply
        } else {
            Home::Workers
        }
    }
}

/// A server's two runtimes, and the connections parked on the apply thread's.
#[derive(Debug)]
pub(crate) struct Homes {
    workers: Handle,
    /// Set once the apply thread runs (a server without one keeps every connection on the workers).
    apply: OnceLock<Handle>,
    /// The apply thread is held in a blocking call: connections live on the workers meanwhile.
    away: AtomicBool,
    /// The connections parked with their sockets registered on the apply thread, each holding itself here
    /// until its reader runs again (`forget`) or the watchdog moves it (`sweep`).
    parked: Mutex<HashSet<ById<OutInner>, foldhash::fast::RandomState>>,
    /// Connections the watchdog moved off a held apply thread, since the start (`mntr`).
    moved: AtomicU64,
    /// The apply thread has stopped (`close`).
    closed: AtomicBool,
}

impl Homes {
    pub(crate) fn new(workers: Handle) -> Homes {
        Homes {
            workers,
            apply: OnceLock::new(),
            away: AtomicBool::new(false),
            parked: Mutex::default(),
            moved: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Connections whose clients write live on `apply` from now on.
    pub(crate) fn set_apply(&self, apply: Handle) {
        let _ = self.apply.set(apply);
    }

    /// Where a connection whose last run was `wants` goes: the apply thread only if there is one and it is
    /// not held.
    pub(crate) fn choose(&self, wants: Home) -> Home {
        match wants {
            Home::Apply
                if self.apply.get().is_some()
                    && !self.away.load(Ordering::Acquire)
                    && !self.closed.load(Ordering::Acquire) =>
            {
                Home::Apply
            }
            _ => Home::Workers,
        }
    }

    /// The workers' runtime (connections, the flushers, four-letter words' text).
    pub(crate) fn workers(&self) -> &Handle {
        &self.workers
    }

    pub(crate) fn handle(&self, home: Home) -> &Handle {
        match (home, self.apply.get()) {
            (Home::Apply, Some(apply)) => apply,
            _ => &self.workers,
        }
    }

    /// A connection about to park with its socket on the apply thread (called before its parked state is
    /// stored, so that whoever takes that state finds it here to `forget`).
    pub(crate) fn remember(&self, conn: &Arc<OutInner>) {
        let mut parked = self.lock();
        if !self.closed.load(Ordering::Acquire) {
            conn.remembered.store(true, Ordering::Release);
            parked.insert(ById(Arc::clone(conn)));
        }
    }

    /// The apply thread has stopped (the server is going away): its connections are let go, and nothing is
    /// remembered any more. (Each holds the server's state: kept here, they and their sockets would
    /// outlive it.)
    pub(crate) fn close(&self) {
        let conns: Vec<ById<OutInner>> = {
            let mut parked = self.lock();
            self.closed.store(true, Ordering::Release);
            parked.drain().collect()
        };
        drop(conns);
    }

    /// A connection whose parked state was taken (its reader is started, or it moves).
    pub(crate) fn forget(&self, conn: &OutInner) {
        if conn.remembered.load(Ordering::Acquire) {
            let id = crate::stats::Keyed::key(conn);
            let entry = {
                let mut parked = self.lock();
                conn.remembered.store(false, Ordering::Release);
                parked.take(id)
            };
            // Dropped after the lock: never the last reference (the caller holds one).
            drop(entry);
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashSet<ById<OutInner>, foldhash::fast::RandomState>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections parked with their sockets on the apply thread now.
    pub(crate) fn parked(&self) -> usize {
        self.lock().len()
    }

    /// Connections moved off a held apply thread so far.
    pub(crate) fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    fn set_away(&self, away: bool) {
        self.away.store(away, Ordering::Release);
    }

    /// Moves every connection parked on the apply thread to the workers (their readiness is then seen
    /// there); returns how many moved.
    fn sweep(&self) -> usize {
        let conns: Vec<ById<OutInner>> = {
            let mut parked = self.lock();
            parked
                .drain()
                .inspect(|ById(c)| c.remembered.store(false, Ordering::Release))
                .collect()
        };
        let moved = conns
            .into_iter()
            .filter(|ById(conn)| crate::connection::repark(conn, Home::Workers))
            .count();
        self.moved.fetch_add(moved as u64, Ordering::Relaxed);
        moved
    }
}

/// The apply thread's mark around a call that may block it (the log's fdatasync): a counter of such calls
/// times two, plus one while inside one. The watchdog, seeing the same odd value twice, knows that one call
/// has lasted at least a `WATCH_PERIOD`.
#[derive(Debug, Default)]
pub struct BlockingMark(AtomicU64);

impl BlockingMark {
    /// Runs `f`, marked as a blocking call.
    pub fn around<R>(&self, f: impl FnOnce() -> R) -> R {
        self.0.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.0);
        f()
    }

    fn read(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Leaves the blocking call, even if it panicked.
struct Leave<'a>(&'a AtomicU64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// The watchdog's judgement from successive readings of a `BlockingMark`.
#[derive(Debug, Default)]
struct StallWatch {
    last: u64,
}

impl StallWatch {
    /// Whether the apply thread is held: inside the same blocking call as at the reading before.
    fn held(&mut self, reading: u64) -> bool {
        let held = reading % 2 == 1 && reading == self.last;
        self.last = reading;
        held
    }
}

/// Starts the watchdog thread of a server: it ends when the server's shared state is gone.
pub(crate) fn start_watchdog(mark: Arc<BlockingMark>, shared: Weak<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("oxkeeper-apply-watch".into())
        .spawn(move || {
            let mut watch = StallWatch::default();
            let mut away = false;
            loop {
                std::thread::sleep(WATCH_PERIOD);
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let held = watch.held(mark.read());
                if held == away {
                    continue;
                }
                away = held;
                shared.homes.set_away(held);
                if held {
                    let moved = shared.homes.sweep();
                    tracing::debug!(
                        moved,
                        "the apply thread is held in an fdatasync: its connections move to the workers"
                    );
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_sees_a_hold_only_inside_one_call_across_two_readings() {
        let mark = BlockingMark::default();
        let mut watch = StallWatch::default();
        assert!(!watch.held(mark.read()), "idle");
        assert!(!watch.held(mark.read()), "still idle");
        mark.around(|| {
            assert!(!watch.held(mark.read()), "a call just begun");
            assert!(watch.held(mark.read()), "the same call, one reading later");
            assert!(watch.held(mark.read()), "and later still");
        });
        assert!(!watch.held(mark.read()), "the call returned");
        // Calls that come and go between readings are never a hold, however many.
        for _ in 0..3 {
            mark.around(|| {});
            assert!(!watch.held(mark.read()));
        }
        mark.around(|| assert!(!watch.held(mark.read()), "a new call, first seen"));
    }

    /// Writers go to the apply thread only while there is one, it is not held, and the server runs.
    #[tokio::test]
    async fn the_apply_thread_is_chosen_only_while_it_runs_unheld() {
        let homes = Homes::new(Handle::current());
        assert_eq!(homes.choose(Home::Apply), Home::Workers, "no apply thread");
        homes.set_apply(Handle::current());
        assert_eq!(homes.choose(Home::Apply), Home::Apply);
        assert_eq!(homes.choose(Home::Workers), Home::Workers);
        homes.set_away(true);
        assert_eq!(homes.choose(Home::Apply), Home::Workers, "held");
        homes.set_away(false);
        assert_eq!(homes.choose(Home::Apply), Home::Apply);
        homes.close();
        assert_eq!(homes.choose(Home::Apply), Home::Workers, "stopped");
    }

    /// A task the apply thread spawns on the workers runs there, not on the apply thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spawn_on_workers_from_the_apply_thread_runs_on_the_workers() {
        let workers = Handle::current();
        let apply = crate::apply_thread::ApplyThread::start(move || set_workers_here(workers))
            .expect("start");
        let (on_apply, spawned_on_apply) = apply
            .handle()
            .spawn(async {
                let (tx, rx) = tokio::sync::oneshot::channel();
                spawn_on_workers(async move {
                    let _ = tx.send(crate::apply_thread::on_apply_thread());
                });
                (
                    crate::apply_thread::on_apply_thread(),
                    rx.await.expect("the task ran"),
                )
            })
            .await
            .expect("the apply task ran");
        assert!(on_apply, "spawned from the apply thread");
        assert!(
            !spawned_on_apply,
            "the workers' task ran on the apply thread"
        );
    }

    #[test]
    fn a_panicking_call_still_leaves_the_mark() {
        let mark = BlockingMark::default();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            mark.around(|| panic!("the call fails"))
        }));
        assert!(r.is_err());
        assert_eq!(mark.read() % 2, 0, "outside any call");
    }
}
