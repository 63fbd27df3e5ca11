//! The apply thread: the executor, openraft's core and state machine tasks, the log's writes, and the
//! readers of the connections whose clients write (`crate::home`), on one thread of their own
//! (`oxkeeper-apply`, a current-thread tokio runtime), while the other connections' readers, the flushers
//! and the backlog writers stay on the multi-threaded runtime.
//!
//! Why: a write at 32 sessions used to be handed on seven times between tasks on the runtime's two workers
//! and the log's thread (reader -> executor -> openraft's core -> the log's thread for the write and
//! fdatasync -> back to the core, the state machine task and the executor -> the flushers), many of them a
//! wake-up of a sleeping thread, which on the VMs we measure on costs more than the work it hands over
//! (bench/RESULTS.md, sessions 26-28: no single crossing was worth removing on its own). Here the executor
//! proposes, openraft appends, the log writes and syncs on this same thread (`LogStore::append` calls
//! `WalWriter::submit_now`), and the completion, the commit and the apply follow on it without a wake-up.
//! Measured (session 29, alternating rounds against the build before, bench/RESULTS.md): set at 32 sessions
//! +10% and its p99 -10% (5 of 5 rounds), create at 32 sessions +9% (median; noisy), the mix's p99 -17% (5
//! of 5). Since session 35 the readers of writing clients live here too: the request that wakes this
//! thread's own wait for events is handed to the executor on it, where it used to be a wake-up of this
//! thread by a worker; what comes in during an fdatasync is read when the executor yields after it
//! (`Executor::run`) and goes out as the next entry. Standalone is still an ensemble of one through
//! openraft: only where its tasks run changed.
//!
//! What it costs: while this thread is in an fdatasync, the executor waits for it too, so requests that
//! need the executor (writes, reads queued behind a write of the same connection, handshakes, the
//! four-letter words that list connections; the other words are answered by the readers, `fourlw::answer`)
//! wait up to one fdatasync more, and so do the readers that live here. A disk that turns slow is left to
//! the log's own thread again (`WalWriter::is_idle_and_quick`), so only the write that found it slow holds
//! this thread; while it does (more than `home::WATCH_PERIOD`), a watchdog moves the readers parked here to
//! the workers (`blocking` marks the call for it), so pings and the common reads are answered meanwhile.
//!
//! The thread lives as long as the runtime that started it: `ApplyThread` is held by a task of that runtime,
//! and dropping it (the runtime shutting down) stops this thread's runtime, dropping its tasks (the executor
//! and openraft: nothing writes to the log after them), and waits until it has: a server restarted on the
//! same data directory in the same process (tests) never finds the old one still writing.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::home::BlockingMark;

thread_local! {
    /// Set on the apply thread: blocking on the disk here holds up only this server's writes.
    static ON_APPLY_THREAD: Cell<bool> = const { Cell::new(false) };
    /// On the apply thread: its mark around calls that may block it (`blocking`).
    static MARK: RefCell<Option<Arc<BlockingMark>>> = const { RefCell::new(None) };
}

/// Runs `f`, which may block the calling thread for long (the log's fdatasync); on the apply thread, marked
/// as such for the watchdog that moves the connections off it meanwhile (`crate::home`).
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match MARK.with(|m| m.borrow().clone()) {
        Some(mark) => mark.around(f),
        None => f(),
    }
}

/// Whether the caller runs on an apply thread (where the log's writes may block: see the module doc).
pub fn on_apply_thread() -> bool {
    ON_APPLY_THREAD.with(Cell::get)
}

/// The apply thread and its runtime; dropping it stops both and waits for the thread to end.
pub struct ApplyThread {
    handle: Handle,
    mark: Arc<BlockingMark>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApplyThread {
    /// Starts the thread, which runs `on_start` first (thread-locals of its own).
    pub fn start(on_start: impl FnOnce() + Send + 'static) -> std::io::Result<ApplyThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("oxkeeper-apply-io")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let mark = Arc::new(BlockingMark::default());
        let thread_mark = Arc::clone(&mark);
        let thread = std::thread::Builder::new()
            .name("oxkeeper-apply".into())
            .spawn(move || {
                ON_APPLY_THREAD.with(|on| on.set(true));
                on_start();
                MARK.with(|m| *m.borrow_mut() = Some(thread_mark));
                // Either a stop or the sender dropped without one: both mean stop.
                let _ = runtime.block_on(stopped);
                // Drops every task here and now (the executor, openraft, the log and its thread); does not
                // wait for blocking-pool work (a four-letter word's text, a read of older log entries).
                runtime.shutdown_background();
            })?;
        Ok(ApplyThread {
            handle,
            mark,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The apply thread's runtime, to spawn the executor and openraft's tasks on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The mark this thread sets around its blocking calls (`blocking`).
    pub fn mark(&self) -> &Arc<BlockingMark> {
        &self.mark
    }
}

impl Drop for ApplyThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                // A panic there has been reported by the panic hook already.
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_run_on_the_apply_thread_after_its_start_hook() {
        let (hook_tx, hook_rx) = std::sync::mpsc::channel();
        let apply = ApplyThread::start(move || {
            let _ = hook_tx.send(std::thread::current().name().map(str::to_owned));
        })
        .expect("start");
        let (name, on) = apply
            .handle()
            .spawn(async {
                let name = std::thread::current().name().map(str::to_owned);
                (name, on_apply_thread())
            })
            .await
            .expect("the apply task ran");
        assert_eq!(name.as_deref(), Some("oxkeeper-apply"));
        assert!(on);
        let hooked = hook_rx
            .try_recv()
            .expect("the start hook ran before the task");
        assert_eq!(hooked.as_deref(), Some("oxkeeper-apply"));
        assert!(!on_apply_thread(), "set on a runtime worker");
    }

    /// Dropping the `ApplyThread` drops its tasks and ends the thread before `drop` returns.
    #[test]
    fn dropping_it_stops_its_tasks_and_ends_the_thread() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let apply = ApplyThread::start(|| {}).expect("start");
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let (started_tx, started) = std::sync::mpsc::channel();
        apply.handle().spawn(async move {
            let _flag = flag;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        });
        started
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the task started");
        drop(apply);
        assert!(dropped.load(Ordering::SeqCst), "the task outlived the drop");
    }
}
