//! One client connection: framing in, one outbound FIFO out.
//!
//! The reader decodes frames and hands requests to the executor in arrival order; it answers pings itself,
//! at once, so a slow write can never make a client miss its read timeout. Replies are written straight to
//! the socket by whoever produces them (the executor, or the reader for a ping), without a hop through
//! another task: only when the socket's send buffer is full does the rest wait in the connection's queue,
//! drained by a writer task made for that backlog and gone when it is written. A queue that fills up (a
//! client that does not read) closes the connection instead of stalling the executor. A connection's first
//! frame is a ConnectRequest or a four-letter word.
//!
//! An idle connection has no task: when nothing more has arrived, the reader's task parks the connection
//! (its state goes into the connection's record, which is itself the waker left with the socket's read
//! readiness) and ends; the next bytes, the client's end of stream, or a cancel by the server start a task
//! again (`park`, `OutInner::unpark`). Tens of thousands of idle sessions then cost no tasks. A connection
//! whose last run read only pings (its client is idle) also leaves tokio's reactor while parked: its socket
//! waits in the server's own epoll set (`crate::cold`), and its registration with the runtime is made again
//! when the client sends something, or when a reply does not fit in the socket's send buffer.

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oxkeeper_core::watches::watch_for_read;
use oxkeeper_proto::frame::{encode_reply, four_letter_word};
use oxkeeper_proto::records::{ConnectRequest, Record, Request, RequestHeader, Response};
use oxkeeper_proto::{xid, ErrorCode, OpCode, Reader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use crate::executor::{ExecMsg, Shared};
use crate::home::Home;
use crate::stats::{ConnInfo, Counter};
use tokio::runtime::Handle;

pub type ConnId = u64;

/// The executor's handle on a connection's outbound side. One allocation per connection: every idle
/// connection pays for what is here.
#[derive(Clone, Debug)]
pub struct Outbound {
    inner: Arc<OutInner>,
}

#[derive(Debug)]
pub(crate) struct OutInner {
    /// The socket: registered with the runtime while the connection is in use, out of it while idle.
    io: Mutex<Io>,
    /// The connection as the server's tables know it (id, address, session, figures).
    info: Arc<ConnInfo>,
    state: Mutex<OutState>,
    /// Messages the queue may hold before the connection is closed as a client that does not read.
    max_queued: u32,
    /// The connection is being torn down (write error, a client that does not read, the end of a close):
    /// its tasks stop. Never unset.
    cancelled: AtomicBool,
    /// The server closes the connection (it decided to, or a closeSession was read): an end of stream from
    /// the client after this is not a drop.
    closing: AtomicBool,
    /// Signalled when the queue has been written out (or given up) and when `cancelled` is set; waiters
    /// check their own condition.
    changed: Notify,
    /// An idle connection has no task: its reader's state waits here, and the socket's read readiness
    /// (or a cancel) starts a task for it again (see `park`).
    parked: Mutex<Option<Parked>>,
    /// This record itself, for the cancel of a parked connection (which must start its task).
    me: std::sync::Weak<OutInner>,
    /// In the apply thread's set of parked connections (`Homes::remember`): only such a connection takes
    /// that set's lock when its reader starts.
    pub(crate) remembered: AtomicBool,
}

// Every connection holds one: with the reference counts (16 B) it must stay within jemalloc's 192-byte class.
const _: () = assert!(std::mem::size_of::<OutInner>() <= 176);

impl crate::stats::Keyed for OutInner {
    fn key(&self) -> &u64 {
        &self.info.id
    }
}

/// Where a connection's socket is.
#[derive(Debug)]
enum Io {
    /// Registered with the reactor of one of the server's runtimes (`crate::home`). The reader's task and a
    /// backlog writer hold clones while they run.
    Warm(Arc<TcpStream>, Home),
    /// Idle, out of the reactor, in the server's set of cold connections (`crate::cold`): a parked
    /// connection whose client only pings. Replies are written to it directly (non-blocking); a reply that
    /// does not fit in the send buffer, or anything from the client, warms it again (`OutInner::warm`).
    Cold {
        sock: std::net::TcpStream,
        set: Arc<crate::cold::ColdSet>,
    },
    /// Registering the socket again failed: the connection is closing.
    Gone,
}

/// What a connection's reader owns between frames, kept while it has no task.
struct Parked {
    shared: Arc<Shared>,
    handoff: Handoff,
    slot: crate::server::IpSlot,
}

#[derive(Debug, Default)]
struct OutState {
    /// What could not be written yet, in order; the front may be partly written (`front_written`).
    queue: VecDeque<Out>,
    /// 32 bits: a frame's length is an i32 on the wire.
    front_written: u32,
    /// A writer task is draining `queue`.
    writer: bool,
    /// In the executor's outbox: `queue` holds replies to write at its next flush.
    dirty: bool,
    /// The write side is shut down (after a Close, or an error): nothing more is written.
    done: bool,
    /// Bytes in `queue` not written yet.
    bytes: usize,
    /// The reader waits for `bytes` to fall to `OUTBOUND_RESUME_BYTES` (see `Outbound::drained`).
    throttled: bool,
}

/// A connection whose unwritten replies exceed this many bytes is not read until they fall to
/// `OUTBOUND_RESUME_BYTES`: a client that sends requests without reading the replies meets TCP's own
/// backpressure instead of growing the server's memory. 8000 pipelined reads of a 1 MB node, unread, took
/// this server from 64 MB to 1.5 GB in seconds before; now, as ZooKeeper 3.8 (~105 MB), it stays put.
pub const OUTBOUND_PAUSE_BYTES: usize = 4 << 20;
/// See `OUTBOUND_PAUSE_BYTES`.
pub const OUTBOUND_RESUME_BYTES: usize = 1 << 20;

#[derive(Debug)]
enum Out {
    Bytes(Vec<u8>),
    /// Shut the write side down once everything before it is written.
    Close,
}

/// What one attempt to write the queue's front achieved.
enum Progress {
    /// The queue is empty (or the write side is done).
    Empty,
    /// The socket's send buffer is full: wait until it is writable.
    Blocked,
}

/// Connections the executor writes itself at the end of a pass; beyond this the flushers write them. A pass
/// under read load has replies for one or two connections: a hand-off to a flusher (a task woken, often on
/// the other worker) cost more than the write. Measured, get at 32 sessions, alternating runs: p99 0.70-0.78
/// -> 0.51 ms, throughput +2..9%, server CPU per get 7.8 -> 7.1 us; set at 32 sessions (~14 connections per
/// pass, still the flushers') and at 1 session, and session establishment, unchanged.
const OUTBOX_INLINE_MAX: usize = 4;

/// Replies gathered into one write call at most.
const GATHER_MAX: usize = 64;

impl OutState {
    /// Writes as much of the queue as the socket takes now, in order: replies queued together go out in
    /// one call (a gathering write).
    fn write_queued(&mut self, conn: &OutInner) -> Progress {
        loop {
            let mut slices: [std::io::IoSlice<'_>; GATHER_MAX] =
                std::array::from_fn(|_| std::io::IoSlice::new(&[]));
            let mut count = 0;
            for out in self.queue.iter().take(GATHER_MAX) {
                let Out::Bytes(b) = out else { break };
                let from = if count == 0 {
                    self.front_written as usize
                } else {
                    0
                };
                slices[count] = std::io::IoSlice::new(&b[from..]);
                count += 1;
            }
            if count == 0 {
                if self.queue.is_empty() {
                    return Progress::Empty;
                }
                // A Close, with everything before it written.
                conn.shutdown_write();
                self.give_up(conn);
                return Progress::Empty;
            }
            let result = conn.write_vectored(&slices[..count]);
            match result {
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Progress::Blocked,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.give_up(conn);
                    return Progress::Empty;
                }
            }
        }
    }

    /// Drops `n` written bytes from the front of the queue.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(Out::Bytes(b)) = self.queue.front() else {
                return;
            };
            let left = b.len() - self.front_written as usize;
            if n < left {
                // n < left <= the frame's length, which fits 32 bits.
                self.front_written += n as u32;
                self.bytes -= n;
                return;
            }
            n -= left;
            self.bytes -= left;
            self.queue.pop_front();
            crate::executor::release_if_empty(&mut self.queue);
            self.front_written = 0;
        }
    }

    /// The reader waits for the queue to drain, and it has: it must be woken (this clears the flag).
    fn resumes(&mut self) -> bool {
        let resumes = self.throttled && self.bytes <= OUTBOUND_RESUME_BYTES;
        if resumes {
            self.throttled = false;
        }
        resumes
    }

    fn give_up(&mut self, cancel: &OutInner) {
        self.done = true;
        self.bytes = 0;
        self.queue.clear();
        self.queue.shrink_to_fit();
        self.front_written = 0;
        cancel.cancel();
    }
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked").finish_non_exhaustive()
    }
}

impl OutInner {
    fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.changed.notify_waiters();
            // A parked reader has no task to see the flag: start one (it closes the connection).
            if let Some(me) = self.me.upgrade() {
                me.unpark();
            }
        }
    }

    fn io(&self) -> std::sync::MutexGuard<'_, Io> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One non-blocking gathering write, wherever the socket is. A warm socket's would-block clears its
    /// write readiness (a backlog writer then waits for the next).
    fn write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match &*self.io() {
            Io::Warm(sock, _) => sock.try_write_vectored(bufs),
            Io::Cold { sock, .. } => std::io::Write::write_vectored(&mut &*sock, bufs),
            Io::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Shuts the socket's write side down (the client reads the end of the stream after our last bytes).
    fn shutdown_write(&self) {
        let _ = match &*self.io() {
            Io::Warm(sock, _) => {
                socket2::SockRef::from(&**sock).shutdown(std::net::Shutdown::Write)
            }
            Io::Cold { sock, .. } => sock.shutdown(std::net::Shutdown::Write),
            Io::Gone => Ok(()),
        };
    }

    /// The socket, registered with a runtime's reactor: where it is if it is, else (taken out of the cold
    /// set) with the calling thread's. An error if it cannot be registered: the connection is then closing
    /// (its socket is closed).
    fn warm(&self) -> std::io::Result<Arc<TcpStream>> {
        self.warm_at(Home::here(), None)
    }

    /// As `warm`, but with the socket registered at `home`, whose runtime is `to`: moved there if it is
    /// elsewhere and nobody else holds it (a backlog writer waiting on it keeps it where it is). Without
    /// `to` (`home` is the calling thread's), a warm socket stays where it is.
    fn warm_at(&self, home: Home, to: Option<&Handle>) -> std::io::Result<Arc<TcpStream>> {
        let mut io = self.io();
        match (std::mem::replace(&mut *io, Io::Gone), to) {
            (Io::Warm(sock, at), None) => {
                *io = Io::Warm(Arc::clone(&sock), at);
                Ok(sock)
            }
            (Io::Warm(sock, at), Some(_)) if at == home => {
                *io = Io::Warm(Arc::clone(&sock), at);
                Ok(sock)
            }
            (Io::Warm(sock, at), Some(to)) => match Arc::try_unwrap(sock) {
                Err(sock) => {
                    *io = Io::Warm(Arc::clone(&sock), at);
                    Ok(sock)
                }
                Ok(sock) => {
                    // Out of one reactor, into the other's (`from_std` registers with the entered one).
                    let sock = sock.into_std()?;
                    let _at = to.enter();
                    let sock = Arc::new(TcpStream::from_std(sock)?);
                    *io = Io::Warm(Arc::clone(&sock), home);
                    Ok(sock)
                }
            },
            (Io::Cold { sock, set }, to) => {
                // The set's reference to this record: dropped after the lock (it is never the last one:
                // the caller holds one).
                let _set_ref = set.remove(self.info.id, std::os::fd::AsRawFd::as_raw_fd(&sock));
                let _at = to.map(Handle::enter);
                let sock = Arc::new(TcpStream::from_std(sock)?);
                *io = Io::Warm(Arc::clone(&sock), home);
                Ok(sock)
            }
            (Io::Gone, _) => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Where the socket is registered (the workers' for one that is not: a cold one's reader is started
    /// there).
    fn home(&self) -> Home {
        match &*self.io() {
            Io::Warm(_, home) => *home,
            _ => Home::Workers,
        }
    }

    /// Moves an idle connection's socket out of the reactor into `set` (see `crate::cold`); false if it
    /// stays warm (someone else is using the socket, or the set refused it).
    fn make_cold(self: &Arc<Self>, set: &Arc<crate::cold::ColdSet>) -> bool {
        let mut io = self.io();
        let Io::Warm(sock, home) = std::mem::replace(&mut *io, Io::Gone) else {
            return false;
        };
        let sock = match Arc::try_unwrap(sock) {
            Ok(sock) => sock,
            Err(sock) => {
                // A backlog writer is waiting on it.
                *io = Io::Warm(sock, home);
                return false;
            }
        };
        let sock = match sock.into_std() {
            Ok(sock) => sock,
            Err(e) => {
                // Deregistration failed and the socket is lost with it: the connection closes.
                tracing::debug!(conn = self.info.id, "cannot park a connection: {e}");
                drop(io);
                self.cancel();
                return false;
            }
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        if set.add(self.info.id, fd, self) {
            *io = Io::Cold {
                sock,
                set: Arc::clone(set),
            };
            return true;
        }
        match TcpStream::from_std(sock) {
            Ok(sock) => *io = Io::Warm(Arc::new(sock), Home::here()),
            Err(e) => {
                tracing::debug!(
                    conn = self.info.id,
                    "cannot register a connection again: {e}"
                );
                drop(io);
                self.cancel();
            }
        }
        false
    }

    /// The parked reader's state, if it is parked: whoever takes it runs the reader (or parks it again).
    fn take_parked(&self) -> Option<Parked> {
        let parked = self.parked.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(p) = &parked {
            p.shared.homes.forget(self);
        }
        parked
    }

    /// Starts a task for the parked reader, if it is parked (whoever takes the parked state starts it:
    /// a readiness wake-up and a cancel may race, and a stale wake-up finds nothing). On the runtime whose
    /// reactor has its socket (the workers while the apply thread is held: `crate::home`).
    pub(crate) fn unpark(self: &Arc<Self>) {
        if let Some(parked) = self.take_parked() {
            let homes = &parked.shared.homes;
            let runtime = homes.handle(homes.choose(self.home())).clone();
            runtime.spawn(drive(
                Outbound {
                    inner: Arc::clone(self),
                },
                parked,
                false,
            ));
        }
    }
}

/// The waker a parked connection leaves with its socket's read readiness: it is the connection itself (no
/// allocation), and waking it starts the reader's task again.
impl std::task::Wake for OutInner {
    fn wake(self: Arc<Self>) {
        self.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.unpark();
    }
}

impl Outbound {
    fn new(sock: TcpStream, info: Arc<ConnInfo>, max_queued: u32) -> Outbound {
        Outbound {
            inner: Arc::new_cyclic(|me| OutInner {
                io: Mutex::new(Io::Warm(Arc::new(sock), Home::Workers)),
                info,
                state: Mutex::new(OutState::default()),
                max_queued,
                cancelled: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                changed: Notify::new(),
                parked: Mutex::new(None),
                me: me.clone(),
                remembered: AtomicBool::new(false),
            }),
        }
    }

    fn cancel(&self) {
        self.inner.cancel();
    }

    /// The connection as the server's tables know it.
    pub fn info(&self) -> &Arc<ConnInfo> {
        &self.inner.info
    }

    fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Resolves once the connection is cancelled. 72 bytes: it is part of every connection's future.
    fn cancelled(&self) -> Cancelled<'_> {
        Cancelled {
            inner: &self.inner,
            notified: self.inner.changed.notified(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bytes` after everything sent before; false (and the connection is closing) if the queue is
    /// full or the connection gone.
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        self.push(Out::Bytes(bytes))
    }

    fn push(&self, out: Out) -> bool {
        let Some(st) = self.admit(out) else {
            return false;
        };
        if !st.writer {
            self.write_now(st);
        }
        true
    }

    /// Appends `out` to the queue and returns the locked state; `None` (and the connection is closing) if
    /// the queue is full or the connection gone.
    fn admit(&self, out: Out) -> Option<std::sync::MutexGuard<'_, OutState>> {
        let mut st = self.state();
        if st.done {
            return None;
        }
        if st.queue.len() >= self.inner.max_queued as usize {
            drop(st);
            tracing::warn!("outbound queue full: closing a connection whose client does not read");
            self.cancel();
            return None;
        }
        if let Out::Bytes(b) = &out {
            st.bytes += b.len();
        }
        st.queue.push_back(out);
        Some(st)
    }

    /// Queues `bytes` to be written at the executor's next `Outbox::flush`, so that the replies one pass of
    /// the executor makes for a connection leave in one write call. False (and the connection is closing)
    /// if the queue is full or the connection gone.
    pub fn queue(&self, bytes: Vec<u8>, outbox: &Outbox) -> bool {
        let Some(mut st) = self.admit(Out::Bytes(bytes)) else {
            return false;
        };
        if !st.writer && !st.dirty {
            st.dirty = true;
            drop(st);
            outbox.push(self.clone());
        }
        true
    }

    /// Queues `bytes` behind everything queued before, to be written by the next `flush` (or by the writer
    /// task, if one is draining the queue). False (and the connection is closing) if the queue is full or
    /// the connection gone.
    fn queue_unwritten(&self, bytes: Vec<u8>) -> bool {
        self.admit(Out::Bytes(bytes)).is_some()
    }

    /// Writes what `queue` left for later.
    fn flush(&self) {
        let mut st = self.state();
        st.dirty = false;
        if st.writer || st.done {
            return;
        }
        self.write_now(st);
    }

    /// Writes the queue now, on this thread (nothing waits before it); a writer task takes over what the
    /// socket does not accept yet.
    fn write_now(&self, mut st: std::sync::MutexGuard<'_, OutState>) {
        if let Progress::Blocked = st.write_queued(&self.inner) {
            st.writer = true;
            drop(st);
            crate::home::spawn_on_workers(write_backlog(self.clone()));
            return;
        }
        let wake = st.done || st.resumes();
        drop(st);
        if wake {
            self.inner.changed.notify_waiters();
        }
    }

    /// Closes after everything queued so far is written.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Release);
        if !self.push(Out::Close) {
            self.cancel();
        }
    }

    pub fn queued(&self) -> usize {
        self.state().queue.len()
    }

    /// Whether the unwritten replies exceed `OUTBOUND_PAUSE_BYTES`: the reader stops until `drained`.
    fn backlogged(&self) -> bool {
        self.state().bytes > OUTBOUND_PAUSE_BYTES
    }

    /// Waits until the unwritten replies are down to `OUTBOUND_RESUME_BYTES` (or the write side is done);
    /// `progress` runs whenever some were written meanwhile (the client is reading: it is alive). Boxed:
    /// rare, and kept out of every connection's future.
    fn drained<'a>(
        &'a self,
        mut progress: impl FnMut() + Send + 'a,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let mut last = usize::MAX;
            loop {
                let notified = self.inner.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let mut st = self.state();
                    if st.done || st.bytes <= OUTBOUND_RESUME_BYTES {
                        st.throttled = false;
                        return;
                    }
                    if st.bytes < last {
                        if last != usize::MAX {
                            progress();
                        }
                        last = st.bytes;
                    }
                    st.throttled = true;
                }
                // Woken when drained (`OutState::resumes`), or by a cancel; the timeout lets writes that do
                // not drain the queue yet count as the client's sign of life.
                let _ = tokio::time::timeout(BACKLOG_CHECK, notified).await;
            }
        })
    }

    /// Waits until what was queued is written, or the connection has given up on it.
    async fn flushed(&self) {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.state();
                if st.done || (st.queue.is_empty() && !st.writer) {
                    return;
                }
            }
            notified.await;
        }
    }
}

pin_project_lite::pin_project! {
    /// `Outbound::cancelled`.
    struct Cancelled<'a> {
        inner: &'a OutInner,
        #[pin]
        notified: tokio::sync::futures::Notified<'a>,
    }
}

impl std::future::Future for Cancelled<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let mut this = self.project();
        loop {
            // `notified` was made before this check, so a cancel after it wakes the poll below.
            if this.inner.cancelled.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            match this.notified.as_mut().poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                // Another change (the queue drained): wait for the next one.
                std::task::Poll::Ready(()) => this.notified.set(this.inner.changed.notified()),
            }
        }
    }
}

/// The connections the executor queued replies for in its current pass, each written with one call at the
/// end of the pass. A few (`OUTBOX_INLINE_MAX`) are written there and then, by the executor; more are handed,
/// in one message, to the flusher tasks (one per core), so that many connections are written in parallel
/// with the executor's next pass.
#[derive(Debug)]
pub struct Outbox {
    dirty: Mutex<Vec<Outbound>>,
    flushers: Vec<mpsc::UnboundedSender<Vec<Outbound>>>,
    next: AtomicUsize,
}

impl Outbox {
    /// Starts the flusher tasks on the current runtime.
    pub fn start() -> Outbox {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let flushers = (0..n)
            .map(|_| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Outbound>>();
                tokio::spawn(async move {
                    while let Some(batch) = rx.recv().await {
                        oxkeeper_storage::hoptrace::hop("flusher");
                        for out in batch {
                            out.flush();
                        }
                        oxkeeper_storage::hoptrace::hop("written");
                    }
                });
                tx
            })
            .collect();
        Outbox {
            dirty: Mutex::default(),
            flushers,
            next: AtomicUsize::new(0),
        }
    }

    fn push(&self, out: Outbound) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(out);
    }

    /// Hands every connection queued in this pass to the flushers (spread over them).
    pub fn flush(&self) {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        if dirty.is_empty() {
            return;
        }
        oxkeeper_storage::hoptrace::hop("outbox");
        if dirty.len() <= OUTBOX_INLINE_MAX {
            dirty.iter().for_each(Outbound::flush);
            return;
        }
        // Round robin from a rotating start, so that lone connections do not all land on one flusher.
        let k = self.flushers.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut shards: Vec<Vec<Outbound>> = (0..k.min(dirty.len())).map(|_| Vec::new()).collect();
        let n = shards.len();
        for (j, out) in dirty.into_iter().enumerate() {
            shards[j % n].push(out);
        }
        for (j, shard) in shards.into_iter().enumerate() {
            self.hand((start + j) % k, shard);
        }
    }

    fn hand(&self, i: usize, batch: Vec<Outbound>) {
        match self.flushers.get(i) {
            Some(tx) => {
                if let Err(mpsc::error::SendError(batch)) = tx.send(batch) {
                    // The runtime is shutting down: write here.
                    batch.iter().for_each(Outbound::flush);
                }
            }
            None => batch.iter().for_each(Outbound::flush),
        }
    }
}

/// Drains a connection's backlog as the socket becomes writable, then ends.
async fn write_backlog(out: Outbound) {
    let was_cold = matches!(*out.inner.io(), Io::Cold { .. });
    let sock = out.inner.warm();
    if was_cold {
        // Its parked reader was waiting in the cold set, which the socket has left: it needs a task to wait
        // for the client again (it finds nothing, and parks warm while this writer holds the socket).
        out.inner.unpark();
    }
    let Ok(sock) = sock else {
        let mut st = out.state();
        st.give_up(&out.inner);
        st.writer = false;
        drop(st);
        out.inner.changed.notify_waiters();
        return;
    };
    loop {
        tokio::select! {
            r = sock.writable() => if r.is_err() {
                let mut st = out.state();
                st.give_up(&out.inner);
                st.writer = false;
                break;
            },
            _ = out.cancelled() => {
                let mut st = out.state();
                st.give_up(&out.inner);
                st.writer = false;
                break;
            }
        }
        let mut st = out.state();
        let progress = st.write_queued(&out.inner);
        if st.resumes() {
            out.inner.changed.notify_waiters();
        }
        if let Progress::Empty = progress {
            st.writer = false;
            // A queue that grew large while the client was slow gives its memory back.
            if st.queue.capacity() > 64 {
                st.queue.shrink_to_fit();
            }
            break;
        }
    }
    out.inner.changed.notify_waiters();
}

pub fn ping_reply(zxid: i64) -> Vec<u8> {
    encode_reply(xid::PING, zxid, 0, &Response::Empty)
}

/// Serves one client connection until it closes. `slot` (its place in the `maxClientCnxns` count) is given
/// back as soon as the connection is closed, before the close linger.
///
/// A plain function that sets the connection up and returns the future: an `async fn` keeps its arguments
/// twice in its state (as arguments and as locals), and this future is what every idle connection costs.
pub fn serve(
    stream: TcpStream,
    conn: ConnId,
    remote: SocketAddr,
    shared: Arc<Shared>,
    slot: crate::server::IpSlot,
) -> impl std::future::Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    let sessionless_ms = shared.config.sessionless_cnxn_timeout_ms;
    let info = ConnInfo::new(conn, remote, crate::executor::wall_ms(), sessionless_ms);
    shared
        .stats
        .cnxn_opened(info.clone(), sessionless_ms, shared.now_ms());
    let max_queued = u32::try_from(shared.config.outbound_queue_max.max(16)).unwrap_or(u32::MAX);
    let out = Outbound::new(stream, info, max_queued);
    let parked = Parked {
        shared,
        handoff: Handoff::default(),
        slot,
    };
    drive(out, parked, true)
}

/// How a run of the reader's task ended.
enum Outcome {
    /// The connection is over: close it (`true`: the server's decision).
    Closed(bool),
    /// Idle: the reader's state is parked and the task ends (see `park`).
    Parked(Idle),
}

/// Why a reader stopped without the connection ending.
enum Ended {
    /// A four-letter word was answered: the connection closes.
    FourLetterWord,
    /// Nothing more to read: the connection parks (see `park`).
    Idle(Idle),
}

/// An idle connection, as its last run left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Idle {
    /// It read nothing (it was woken for no frame): that says nothing of the client, and the socket stays
    /// where it is.
    Unchanged,
    /// It read requests (or its handshake): its client is at work, and the socket stays registered, at
    /// `Home::Apply` if the run handed something to the executor, else at `Home::Workers` (see
    /// `crate::home`).
    Busy(Home),
    /// It read only pings: its client is idle, and the socket leaves the reactor (see `crate::cold`).
    Pinging,
}

impl Idle {
    /// The run so far, after one more request (not a ping), which went `to_executor` or was answered by
    /// the reader: a run that handed anything to the executor parks on the apply thread (`crate::home`).
    fn after_request(self, to_executor: bool) -> Idle {
        match (to_executor, self) {
            (true, _) | (_, Idle::Busy(Home::Apply)) => Idle::Busy(Home::Apply),
            _ => Idle::Busy(Home::Workers),
        }
    }
}

/// The reader's task: the handshake first (`handshake`), then frames until the connection goes idle (the
/// task then parks it and ends; readiness starts a new one) or ends.
fn drive(
    out: Outbound,
    parked: Parked,
    handshake: bool,
) -> impl std::future::Future<Output = ()> + Send {
    let Parked {
        shared,
        mut handoff,
        slot,
    } = parked;
    let (conn, remote) = (out.info().id, out.info().remote());
    async move {
        // Read from this thread's reactor (the socket is moved here if it is elsewhere: a new connection
        // accepted on the workers, or one whose home was held, `crate::home`).
        let here = Home::here();
        let to = (out.inner.home() != here).then(|| shared.homes.handle(here).clone());
        let mut rd = match out.inner.warm_at(here, to.as_ref()) {
            Ok(sock) => FrameReader::new(sock),
            Err(e) => {
                tracing::debug!(conn, %remote, "connection closed: {e}");
                out.cancel();
                shared.stats.cnxn_closed(conn, shared.now_ms());
                let closing: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                    Box::pin(close(conn, shared, handoff, slot, out, None, true));
                closing.await;
                return;
            }
        };
        if !handshake {
            // A cancel may have started this task while the connection's own waker is still registered
            // with the socket's readiness: the connection would then hold itself (record -> socket ->
            // registration -> waker -> record) and never be freed. Replaced by one that holds nothing; the
            // reader's polls register this task's waker.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = rd.sock.poll_read_ready(&mut cx);
        }
        let outcome = tokio::select! {
            r = read_loop(&mut rd, &shared, &out, &mut handoff, handshake) => match r {
                Ok(Ended::Idle(idle)) => Outcome::Parked(idle),
                Ok(Ended::FourLetterWord) => Outcome::Closed(false),
                Err(e) => {
                    tracing::debug!(conn, %remote, "connection closed: {e}");
                    match e {
                        ConnError::SessionlessTimeout => shared.stats.count(Counter::SessionlessConnectionExpired),
                        e if e.is_end_of_stream()
                            && !out.is_cancelled()
                            && !out.inner.closing.load(Ordering::Acquire) =>
                        {
                            shared.stats.count(Counter::ConnectionDrop)
                        }
                        _ => {}
                    }
                    Outcome::Closed(false)
                }
            },
            _ = out.cancelled() => Outcome::Closed(true),
        };
        let closed_by_us = match outcome {
            Outcome::Parked(idle) => {
                drop(rd);
                let parked = Parked {
                    shared,
                    handoff,
                    slot,
                };
                park(&out.inner, parked, idle);
                return;
            }
            Outcome::Closed(by_us) => by_us,
        };
        shared.stats.cnxn_closed(conn, shared.now_ms());
        // The closing steps' futures (timers) live in their own allocation, not in every connection's.
        let closing: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(
            close(conn, shared, handoff, slot, out, Some(rd), closed_by_us),
        );
        closing.await;
    }
}

/// Leaves an idle connection without a task: its reader's state goes into the connection's record, and
/// the record itself is the waker given to the socket's read readiness. Whatever comes first of readiness
/// and a cancel takes the state back and starts a task (`OutInner::unpark`). An idle connection then costs
/// no task (~500 B) and no future. A client that only pings has its socket leave the reactors too, for the
/// cold set (`crate::cold`), which starts the task when something arrives; any other stays registered, with
/// the apply thread's reactor if its last run handed something to the executor, else the workers'
/// (`crate::home`).
///
/// Ordering: the state is stored before the readiness is polled (or the socket added to the cold set,
/// which reports data already there) and before the cancel flag is checked, so a wake-up or a cancel that
/// happens at any point after finds it; one that happened before is seen here. A connection that parks on
/// the apply thread is remembered there before its state is stored, so that whoever takes the state
/// forgets it.
fn park(conn: &Arc<OutInner>, parked: Parked, idle: Idle) {
    let homes = &parked.shared.homes;
    let home = match idle {
        Idle::Pinging => {
            let cold = Arc::clone(&parked.shared.cold);
            *conn.parked.lock().unwrap_or_else(|p| p.into_inner()) = Some(parked);
            if conn.make_cold(&cold) {
                if conn.cancelled.load(Ordering::Acquire) {
                    conn.unpark();
                }
                return;
            }
            // Stays warm where it is (a backlog writer holds the socket).
            watch_readiness(conn, None);
            return;
        }
        Idle::Busy(wants) => homes.choose(wants),
        Idle::Unchanged => homes.choose(conn.home()),
    };
    if home == Home::Apply {
        homes.remember(conn);
    }
    // A move needs the other runtime's handle, taken while this reader still holds the server's state.
    let to = (conn.home() != home).then(|| homes.handle(home).clone());
    *conn.parked.lock().unwrap_or_else(|p| p.into_inner()) = Some(parked);
    watch_readiness(conn, to.map(|to| (home, to)));
}

/// A parked connection's socket registered (at `to`'s home, moved there if it is elsewhere), with the
/// connection as the waker of its read readiness (started at once if it is ready already, or cancelled).
fn watch_readiness(conn: &Arc<OutInner>, to: Option<(Home, Handle)>) {
    let sock = match &to {
        Some((home, handle)) => conn.warm_at(*home, Some(handle)),
        None => conn.warm(),
    };
    let ready = match sock {
        Ok(sock) => {
            let waker = std::task::Waker::from(Arc::clone(conn));
            let mut cx = std::task::Context::from_waker(&waker);
            sock.poll_read_ready(&mut cx).is_ready()
        }
        // Closing: the task started below closes it.
        Err(_) => true,
    };
    if ready || conn.cancelled.load(Ordering::Acquire) {
        conn.unpark();
    }
}

/// Moves a parked connection's socket to `home`'s reactor, still parked (`crate::home`: the apply thread
/// is held); false if it was not parked (its reader runs, and parks where it chooses).
pub(crate) fn repark(conn: &Arc<OutInner>, home: Home) -> bool {
    let Some(parked) = conn.take_parked() else {
        return false;
    };
    let to = parked.shared.homes.handle(home).clone();
    *conn.parked.lock().unwrap_or_else(|p| p.into_inner()) = Some(parked);
    watch_readiness(conn, Some((home, to)));
    true
}

/// After the reader stopped: tells the executor, lets queued replies out, shuts the socket down.
async fn close(
    conn: ConnId,
    shared: Arc<Shared>,
    mut handoff: Handoff,
    slot: crate::server::IpSlot,
    out: Outbound,
    rd: Option<FrameReader>,
    closed_by_us: bool,
) {
    // Behind the requests the client sent before it went (some may still be held).
    if let Ok(Some(msg)) = handoff.try_send(&shared, ExecMsg::Closed { conn }) {
        let _ = handoff.boxed_hold(&shared, msg).await;
    }
    drop(handoff);
    drop(slot);
    // Let what the executor queued (e.g. a closeSession reply) be written, then shut the write side down.
    out.close();
    let _ = tokio::time::timeout(CLOSE_LINGER, out.flushed()).await;
    out.cancel();
    if let (true, Some(mut rd)) = (closed_by_us, rd) {
        // Closing a socket whose receive buffer holds unread bytes makes the kernel send RST, which can
        // destroy our last replies (an AUTHFAILED, a closeSession reply) before the client reads them.
        // Our side is shut down; read and discard until the client closes too, for a bounded time.
        let _ = tokio::time::timeout(CLOSE_LINGER, rd.discard_until_closed()).await;
    }
}

/// While a reader waits for its connection's replies to drain: how often it looks whether the client read
/// some (then its session is touched, as a request would).
const BACKLOG_CHECK: Duration = Duration::from_millis(250);

/// How long a closing connection waits for its queue to be written, and then for the client to close its
/// side.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Bytes read from the socket at most per read call (on the stack, never held across an await).
const READ_CHUNK: usize = 16 * 1024;

/// A connection's incoming bytes cut into frames. One read call takes whatever has arrived (often several
/// pipelined frames); bytes of an incomplete frame wait in `buf`, which an idle connection keeps empty.
struct FrameReader {
    /// The connection's socket, registered with the runtime while this reader lives.
    sock: Arc<TcpStream>,
    buf: Vec<u8>,
    /// Where the unconsumed bytes of `buf` start.
    pos: usize,
}

impl FrameReader {
    fn new(sock: Arc<TcpStream>) -> FrameReader {
        FrameReader {
            sock,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The next frame's payload length from its prefix, once the prefix is buffered: `Err` with the
    /// prefix if it is negative or above `max`.
    fn next_len(&self, max: usize) -> Option<Result<usize, i32>> {
        let a = self.available();
        let len = i32::from_be_bytes(a.get(..4)?.try_into().ok()?);
        Some(usize::try_from(len).ok().filter(|&n| n <= max).ok_or(len))
    }

    /// Whether a whole frame (with a length `max` allows) is buffered: the next `frame` takes it without
    /// reading.
    fn has_frame(&self, max: usize) -> bool {
        matches!(self.next_len(max), Some(Ok(n)) if self.available().len() >= 4 + n)
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
            // A buffer grown for a large frame is not kept by an idle connection.
            if self.buf.capacity() > READ_CHUNK {
                self.buf = Vec::new();
            }
        }
    }

    /// Reads what has arrived, waiting until something has. `Ok(false)` at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        loop {
            self.sock.readable().await?;
            match self.read_now() {
                Ok(n) => return Ok(n > 0),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One non-blocking read into `buf` (the chunk lives on the stack of this synchronous call only).
    ///
    /// A read that does not fill the chunk took everything the socket held: the socket's readiness is
    /// cleared then, as a read that would block clears it, without that second read (one system call less
    /// per request). Safe against data arriving meanwhile: the runtime clears only the readiness event this
    /// read started from, and new data brings a new one (edge-triggered epoll), which wakes the reader.
    fn read_now(&mut self) -> std::io::Result<usize> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // Not zeroed first: a read of a small request used to clear all 16 KiB of it (1.3% of the apply
        // thread's time at create at 32 sessions, and as much on the workers for every read request).
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut got = 0;
        let sock = &self.sock;
        let read = sock.try_io(tokio::io::Interest::READABLE, || {
            let mut free: &mut [MaybeUninit<u8>] = &mut chunk;
            let n = sock.try_read_buf(&mut free)?;
            got = n;
            if n > 0 && n < READ_CHUNK {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match read {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => got,
            r => r?,
        };
        let filled = chunk.get(..n).unwrap_or_default();
        // SAFETY: the read wrote (initialized) the first `n` bytes of `chunk`, the count it returned, and
        // `MaybeUninit<u8>` has the layout of `u8`.
        let filled =
            unsafe { std::slice::from_raw_parts(filled.as_ptr().cast::<u8>(), filled.len()) };
        self.buf.extend_from_slice(filled);
        Ok(n)
    }

    /// Waits until at least `n` bytes are available. `Err(ClientClosed)` if the stream ends first (before
    /// any byte of them: `UnexpectedEof` within).
    async fn need(&mut self, n: usize) -> Result<(), ConnError> {
        while self.available().len() < n {
            let before = self.available().len();
            if !self.fill().await? {
                return Err(if before == 0 {
                    ConnError::ClientClosed
                } else {
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
                });
            }
        }
        Ok(())
    }

    /// The next frame's payload (its length prefix checked against `max`). Polled by hand rather than
    /// built from `readable().await`: the future every idle connection keeps is then a few words, not a
    /// few hundred bytes of nested futures.
    async fn frame(&mut self, max: usize) -> Result<Vec<u8>, ConnError> {
        std::future::poll_fn(|cx| self.poll_frame(cx, max)).await
    }

    /// `frame`, or `None` at once if no frame has arrived and no part of one is buffered (the reader's
    /// task may then end: readiness is registered with the task's waker until `park` replaces it).
    async fn frame_or_idle(&mut self, max: usize) -> Result<Option<Vec<u8>>, ConnError> {
        std::future::poll_fn(|cx| match self.poll_frame(cx, max) {
            std::task::Poll::Pending if self.available().is_empty() => {
                std::task::Poll::Ready(Ok(None))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(r) => std::task::Poll::Ready(r.map(Some)),
        })
        .await
    }

    fn poll_frame(
        &mut self,
        cx: &mut std::task::Context<'_>,
        max: usize,
    ) -> std::task::Poll<Result<Vec<u8>, ConnError>> {
        use std::task::Poll;
        loop {
            match self.next_len(max) {
                Some(Err(len)) => return Poll::Ready(Err(ConnError::BadLength(len))),
                // Grows with what actually arrives: a client announcing 1 MiB and then stalling pins no
                // memory.
                Some(Ok(len)) if self.available().len() >= 4 + len => {
                    let payload = self.available()[4..4 + len].to_vec();
                    self.consume(4 + len);
                    return Poll::Ready(Ok(payload));
                }
                _ => {}
            }
            // As `fill`: wait until readable, then one read; would-block clears the readiness.
            if let Err(e) = std::task::ready!(self.sock.poll_read_ready(cx)) {
                return Poll::Ready(Err(e.into()));
            }
            let before = self.available().len();
            match self.read_now() {
                Ok(0) => {
                    return Poll::Ready(Err(if before == 0 {
                        ConnError::ClientClosed
                    } else {
                        std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
                    }))
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    async fn discard_until_closed(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
        loop {
            match self.fill().await {
                Ok(true) => {
                    self.buf.clear();
                }
                _ => return,
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client closed the connection")]
    ClientClosed,
    #[error("invalid frame length {0}")]
    BadLength(i32),
    #[error("no ConnectRequest within the sessionless connection timeout")]
    SessionlessTimeout,
    #[error("malformed ConnectRequest: {0}")]
    BadConnect(String),
    #[error("executor stopped")]
    ExecutorGone,
}

impl ConnError {
    /// The client closed its side, between frames or within one (ZooKeeper's `connection_drop_count`).
    fn is_end_of_stream(&self) -> bool {
        match self {
            ConnError::ClientClosed => true,
            ConnError::Io(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }
}

/// ZooKeeper's counters of a parsed ConnectRequest: every one is a connection request; one that names a
/// session is a revalidation unless it is refused first for a lastZxidSeen ahead of ours (the executor
/// refuses those). From here on the connection's timeout is the session timeout it will get.
fn count_connect_request(shared: &Shared, info: &ConnInfo, req: &ConnectRequest) {
    let stats = &shared.stats;
    stats.count(Counter::ConnectionRequest);
    if req.last_zxid_seen > shared.last_zxid() {
        return;
    }
    if req.session_id != 0 {
        stats.count(Counter::ConnectionRevalidate);
    }
    let cfg = &shared.config;
    let timeout_ms = (req.timeout_ms.max(0) as u64)
        .max(cfg.min_session_timeout_ms())
        .min(cfg.max_session_timeout_ms());
    stats.cnxn_session_timeout(info, timeout_ms, shared.now_ms());
}

/// Requests of one connection read while the member is at `globalOutstandingLimit` and not yet handed to
/// the executor. Up to this many, the reader goes on reading, so the connection's pings are still answered
/// while its requests wait; beyond it the reader stops, as ZooKeeper's does at the limit.
const HELD_REQUESTS: usize = 16;

/// Hands a connection's requests to the executor in order, each only once the requests outstanding over
/// all connections are below `globalOutstandingLimit` (ZooKeeper's throttle). Pings never pass here: the
/// reader answers them itself, so a member at its limit (a stalled disk, a flood of closes) still answers
/// every connection's pings as long as that connection holds fewer than `HELD_REQUESTS` requests.
/// Hands a connection's messages to the executor, in order. Directly while the member is below
/// `globalOutstandingLimit`; at the limit they are held, in order, by a forwarder task (made on first need, so
/// an idle connection costs no task and no queue) that waits for room, while the reader goes on.
#[derive(Default)]
struct Handoff {
    /// The forwarder's queue, and how many messages it holds that the executor has not been given yet.
    /// Boxed messages: a queue allocates room for 32 at once, which for `ExecMsg` itself (~150 B) was
    /// ~4.9 KB per connection that held anything; when 19,000 clients closed at once past the limit, that
    /// was 90 MiB (a box is one pointer in that block: ~0.3 KB, plus the message while it is held).
    held: Option<(mpsc::Sender<Box<ExecMsg>>, Arc<AtomicUsize>)>,
}

impl Handoff {
    /// Hands `msg` to the executor unless it must be held (the member is at its limit, or earlier
    /// messages of this connection are held): then it is given back, for `hold`. Not async, so that the
    /// reader's future (which every idle connection keeps) has no room for a message in flight.
    fn try_send(
        &mut self,
        shared: &Arc<Shared>,
        msg: ExecMsg,
    ) -> Result<Option<ExecMsg>, ConnError> {
        let counted = !matches!(msg, ExecMsg::Closed { .. });
        let holding = self
            .held
            .as_ref()
            .is_some_and(|(_, n)| n.load(Ordering::Acquire) > 0);
        // Only when nothing is held: a message must never overtake one of the same connection.
        if !holding && (!counted || shared.outstanding() < shared.config.global_outstanding_limit) {
            if counted {
                shared.request_started();
            }
            shared.exec.send(msg).map_err(|_| ConnError::ExecutorGone)?;
            return Ok(None);
        }
        Ok(Some(msg))
    }

    /// `hold`, boxed by a plain function (see `boxed_handshake`).
    fn boxed_hold<'a>(
        &'a mut self,
        shared: &'a Arc<Shared>,
        msg: ExecMsg,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ConnError>> + Send + 'a>>
    {
        Box::pin(self.hold(shared, msg))
    }

    /// Queues `msg` behind the held ones for the forwarder (started on first need).
    async fn hold(&mut self, shared: &Arc<Shared>, msg: ExecMsg) -> Result<(), ConnError> {
        let (tx, n) = self.held.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(HELD_REQUESTS);
            let n = Arc::new(AtomicUsize::new(0));
            tokio::spawn(forward(rx, shared.clone(), n.clone()));
            (tx, n)
        });
        n.fetch_add(1, Ordering::AcqRel);
        tx.send(Box::new(msg))
            .await
            .map_err(|_| ConnError::ExecutorGone)
    }
}

async fn forward(
    mut rx: mpsc::Receiver<Box<ExecMsg>>,
    shared: Arc<Shared>,
    held: Arc<AtomicUsize>,
) {
    while let Some(m) = rx.recv().await {
        if !matches!(*m, ExecMsg::Closed { .. }) {
            shared.wait_below_outstanding_limit().await;
            shared.request_started();
        }
        if shared.exec.send(*m).is_err() {
            return;
        }
        // After the executor has it: the reader's next message may then go directly, behind this one.
        held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads requests until the connection ends (a four-letter word was answered) or goes idle (nothing left
/// to read, no partial frame: park it; `Idle::Pinging` if this run read pings and nothing else): pings
/// answered here, everything else handed to the executor. `handshake`: this is the connection's first run,
/// which reads its first frame.
/// A plain function returning the loop's future, for the reason `serve` is one: no second copy of the
/// arguments in every idle connection's state.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn read_loop<'a>(
    rd: &'a mut FrameReader,
    shared: &'a Arc<Shared>,
    out: &'a Outbound,
    handoff: &'a mut Handoff,
    handshake: bool,
) -> impl std::future::Future<Output = Result<Ended, ConnError>> + Send + 'a {
    async move {
        let info = out.info();
        let conn = info.id;
        // The handshake's futures (timers, the first frame) live in their own allocation, freed when it is
        // done: they would otherwise take room in every idle connection's future.
        if handshake && !boxed_handshake(rd, shared, out).await? {
            return Ok(Ended::FourLetterWord);
        }
        // Until a frame other than a ping is read (a run that reads nothing was woken for no frame: it
        // says nothing of the client, and keeps the socket where it is). The handshake went to the
        // executor.
        let mut idle = if handshake {
            Idle::Busy(Home::Apply)
        } else {
            Idle::Pinging
        };
        let mut frames = 0u32;
        let max = shared.config.max_buffer_bytes;
        let stats = &shared.stats;
        // Replies this reader queued itself (`answer_read`) and has not written: they go out in one write
        // once the frames that have arrived are read.
        let mut unwritten = false;
        loop {
            if unwritten && !rd.has_frame(max) {
                out.flush();
                unwritten = false;
            }
            // The frame and what is decoded from it live in this block only: they are gone before the
            // (rare) wait below, so no idle connection's future keeps room for them.
            let wait = {
                // Nothing more has arrived: the task ends and the connection parks (see `park`).
                let Some(payload) = rd.frame_or_idle(max).await? else {
                    return Ok(Ended::Idle(if frames == 0 && !handshake {
                        Idle::Unchanged
                    } else {
                        idle
                    }));
                };
                frames = frames.saturating_add(1);
                stats.cnxn_touched(info, shared.now_ms());
                stats.add(Counter::BytesReceived, 4 + payload.len() as u64);
                let mut r = Reader::new(&payload);
                let msg = match RequestHeader::decode(&mut r) {
                    Err(_) => Some(ExecMsg::Malformed { conn, xid: 0 }),
                    Ok(header) => {
                        let body = &payload[r.position()..];
                        if header.op == OpCode::CloseSession as i32 {
                            // The server closes after the reply; a client that closes as soon as it has
                            // the reply is not dropping the connection (ZooKeeper queues the close before
                            // writing the reply).
                            out.inner.closing.store(true, Ordering::Release);
                        }
                        if header.op == OpCode::Ping as i32 {
                            let sid = info.session_id();
                            if sid != 0 {
                                // Answered here, at once; dropped (no reply) if the session is unknown or
                                // closing.
                                let started = Instant::now();
                                stats.packet_received();
                                if shared.touch(sid) {
                                    let zxid = shared.last_zxid();
                                    out.send(ping_reply(zxid));
                                    stats.packet_sent();
                                    stats.latency(started.elapsed());
                                    info.answered_here(
                                        OpCode::Ping,
                                        xid::PING,
                                        zxid,
                                        started.elapsed(),
                                    );
                                }
                                continue;
                            }
                        }
                        match Request::decode(header.op, body) {
                            Ok(req) if answer_read(shared, out, header.xid, &req) => {
                                unwritten = true;
                                None
                            }
                            Ok(req) => Some(ExecMsg::Request {
                                conn,
                                xid: header.xid,
                                req,
                            }),
                            Err(oxkeeper_proto::RequestDecodeError::UnknownOpcode(op)) => {
                                Some(ExecMsg::Unknown {
                                    conn,
                                    xid: header.xid,
                                    op,
                                })
                            }
                            Err(e) => {
                                tracing::debug!(conn, remote = %info.remote(), op = header.op, "malformed request: {e}");
                                Some(ExecMsg::Malformed {
                                    conn,
                                    xid: header.xid,
                                })
                            }
                        }
                    }
                };
                idle = idle.after_request(msg.is_some());
                oxkeeper_storage::hoptrace::hop("recv");
                match msg {
                    // At the outstanding limit only, the message waits in a boxed future (see
                    // `Handoff::try_send`; the message is never held across an await here, where it would
                    // take room in every idle connection's future).
                    Some(msg) => {
                        info.handed_to_executor();
                        handoff
                            .try_send(shared, msg)?
                            .map(|msg| handoff.boxed_hold(shared, msg))
                    }
                    None => None,
                }
            };
            if let Some(wait) = wait {
                wait.await?;
            }
            if out.backlogged() {
                if unwritten {
                    out.flush();
                    unwritten = false;
                }
                out.drained(|| {
                    let sid = info.session_id();
                    if sid != 0 {
                        shared.touch(sid);
                    }
                })
                .await;
            }
        }
    }
}

/// Answers a read — getData, exists, getChildren or getChildren2, with or without a watch — in the
/// connection's reader, without the executor, when the executor has queued the reply of every earlier
/// request of this connection (or dropped it). The reply is queued behind those (the caller writes it),
/// so replies still leave in request order, and the read runs after the connection's earlier writes are
/// applied. The state is read under the read lock that the executor's apply holds for writing while it
/// changes the state and fires and queues the watch events of the change; the read's watch is added to
/// the table and its reply queued before the read lock is let go. So a reply never shows a change before
/// the event that announces it, its zxid is that of the state read, and a watch set by a read misses no
/// change after the data it returned (apply fires it) and sees none before (the reply showed that one).
/// The watch is added before the executor can learn that the connection closed (the reader sends that,
/// after it stops), so the executor's removal of the connection's watches always comes after it.
///
/// False when the executor must run it: one the ACL refuses without identities (the executor checks it
/// with the connection's: more identities only grant more, so any other outcome is the same; no watch is
/// set on NoAuth, as in ZooKeeper), one on a connection the server is closing, or before the session is
/// established.
fn answer_read(shared: &Shared, out: &Outbound, xid: i32, req: &Request) -> bool {
    let read = matches!(
        req,
        Request::Exists(_)
            | Request::GetData(_)
            | Request::GetChildren(_)
            | Request::GetChildren2(_)
    );
    let info = out.info();
    let session = info.session_id();
    if !read || session == 0 || !info.executor_done() || out.inner.closing.load(Ordering::Acquire) {
        return false;
    }
    let started = Instant::now();
    if !shared.touch(session) {
        // An unknown or closing session: dropped without a reply, as the executor drops it.
        shared.stats.packet_received();
        info.figures().received += 1;
        return true;
    }
    let state = shared.state();
    let (err, resp) = state.read(session, req, &[]);
    if err == ErrorCode::NoAuth as i32 {
        return false;
    }
    if let Some((path, kind)) = watch_for_read(req, err) {
        shared.watches().add(info.id, path, kind);
    }
    let zxid = shared.last_zxid();
    out.queue_unwritten(encode_reply(xid, zxid, err, &resp));
    drop(state);
    shared.stats.packet_received();
    shared.stats.packet_sent();
    shared.stats.latency(started.elapsed());
    info.answered_here(req.opcode(), xid, zxid, started.elapsed());
    true
}

/// `handshake`, boxed by a plain function: built inside an async function, the future would still get a
/// slot in the caller's state (rustc keeps room for such temporaries).
fn boxed_handshake<'a>(
    rd: &'a mut FrameReader,
    shared: &'a Arc<Shared>,
    out: &'a Outbound,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, ConnError>> + Send + 'a>> {
    Box::pin(handshake(rd, shared, out))
}

/// Reads the connection's first bytes: a four-letter word (handed to the executor, which answers and
/// closes: false) or a ConnectRequest (handed to the executor: true), each within the sessionless timeout.
async fn handshake(
    rd: &mut FrameReader,
    shared: &Arc<Shared>,
    out: &Outbound,
) -> Result<bool, ConnError> {
    let info = out.info();
    let (conn, remote) = (info.id, info.remote());
    let max = shared.config.max_buffer_bytes;
    let sessionless = Duration::from_millis(shared.config.sessionless_cnxn_timeout_ms);
    let stats = &shared.stats;
    match tokio::time::timeout(sessionless, rd.need(4)).await {
        Err(_) => return Err(ConnError::SessionlessTimeout),
        Ok(r) => r?,
    }
    stats.cnxn_touched(info, shared.now_ms());
    let a = rd.available();
    if let Some(word) = four_letter_word([a[0], a[1], a[2], a[3]]) {
        // A packet of 4 bytes in and, once the text is written, one out, as ZooKeeper counts them.
        info.set_four_letter();
        stats.add(Counter::BytesReceived, 4);
        stats.packet_received();
        if crate::fourlw::lists_connections(word) {
            shared
                .exec
                .send(ExecMsg::FourLetter {
                    conn,
                    remote,
                    word,
                    out: out.clone(),
                })
                .map_err(|_| ConnError::ExecutorGone)?;
        } else {
            crate::fourlw::answer(shared, word, (conn, remote), out.clone(), Vec::new());
        }
        // The text is written and the socket closed, whatever the client does meanwhile (`nc` half-closes
        // right after sending the word).
        out.cancelled().await;
        stats.packet_sent();
        return Ok(false);
    }
    let payload = match tokio::time::timeout(sessionless, rd.frame(max)).await {
        Err(_) => return Err(ConnError::SessionlessTimeout),
        Ok(r) => r?,
    };
    stats.cnxn_touched(info, shared.now_ms());
    stats.add(Counter::BytesReceived, 4 + payload.len() as u64);
    // Trailing bytes are ignored, as ZooKeeper's reader ignores them.
    let req =
        ConnectRequest::from_prefix(&payload).map_err(|e| ConnError::BadConnect(e.to_string()))?;
    count_connect_request(shared, info, &req);
    shared
        .exec
        .send(ExecMsg::Connect {
            conn,
            remote,
            req,
            out: out.clone(),
        })
        .map_err(|_| ConnError::ExecutorGone)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The home a run asks for: the apply thread once it handed anything to the executor, else the workers
    /// (a run of reads the reader answered); a run of pings only stays `Pinging`, the handshake's `Apply`.
    #[test]
    fn a_run_asks_for_the_apply_thread_once_it_hands_anything_to_the_executor() {
        use Home::{Apply, Workers};
        let run = |start: Idle, to_executor: &[bool]| {
            to_executor
                .iter()
                .fold(start, |idle, &handed| idle.after_request(handed))
        };
        assert_eq!(run(Idle::Pinging, &[]), Idle::Pinging);
        assert_eq!(run(Idle::Pinging, &[false, false]), Idle::Busy(Workers));
        assert_eq!(run(Idle::Pinging, &[true]), Idle::Busy(Apply));
        assert_eq!(run(Idle::Pinging, &[false, true, false]), Idle::Busy(Apply));
        // After a handshake (handed to the executor), reads the reader answers still park it there.
        assert_eq!(run(Idle::Busy(Apply), &[false]), Idle::Busy(Apply));
    }

    /// Frames of every size about the read chunk's, pipelined and cut into pieces of odd sizes on the wire,
    /// come out of the reader byte for byte.
    #[tokio::test]
    async fn frames_come_out_whole_however_their_bytes_arrive() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut reader = FrameReader::new(Arc::new(server));
        let sizes = [
            1,
            3,
            100,
            0,
            READ_CHUNK - 4,
            READ_CHUNK,
            READ_CHUNK + 1,
            40_000,
            7,
        ];
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| (i * 31 + k * 7 + i / 256) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for p in &payloads {
            wire.extend_from_slice(&(p.len() as i32).to_be_bytes());
            wire.extend_from_slice(p);
        }
        let writer = tokio::spawn(async move {
            let mut rest = &wire[..];
            let mut piece = 1;
            while !rest.is_empty() {
                let (now, later) = rest.split_at(piece.min(rest.len()));
                client.write_all(now).await.expect("write");
                client.flush().await.expect("flush");
                tokio::task::yield_now().await;
                rest = later;
                piece = piece * 7 % 9001 + 1;
            }
            client
        });
        for (k, p) in payloads.iter().enumerate() {
            let got = reader.frame(1 << 20).await.expect("a frame");
            assert!(got == *p, "frame {k} of {} bytes differs", p.len());
        }
        drop(writer.await.expect("the writer ran"));
    }

    /// A connected pair: the server side as an `Outbound`, the client side as a plain stream.
    async fn pair() -> (Outbound, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, remote) = listener.accept().await.expect("accept");
        let info = ConnInfo::new(1, remote, 0, 10_000);
        (Outbound::new(server, info, 100_000), client)
    }

    /// The client's side of `pair` as a plain non-blocking socket: read without the runtime (whose
    /// readiness this single-threaded test never lets it update).
    async fn plain_pair() -> (Outbound, std::net::TcpStream) {
        let (out, client) = pair().await;
        let client = client.into_std().expect("deregister");
        client.set_nonblocking(true).expect("non-blocking");
        (out, client)
    }

    /// Reads `n` bytes if they are there or arrive within `wait` (a blocking wait: nothing else runs on
    /// this single-threaded runtime meanwhile).
    fn read_within(client: &std::net::TcpStream, n: usize, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        let deadline = Instant::now() + wait;
        while got < n {
            match std::io::Read::read(&mut &*client, &mut buf[got..]) {
                Ok(0) => return None,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return None,
            }
        }
        Some(buf)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_pass_with_few_connections_is_written_by_the_executor_and_more_by_the_flushers() {
        let outbox = Outbox::start();
        let reply = vec![5u8; 100];
        // Few connections: written by `flush` itself, before anything else runs on this runtime.
        let (out, client) = plain_pair().await;
        assert!(out.queue(reply.clone(), &outbox));
        assert!(
            read_within(&client, 1, Duration::from_millis(50)).is_none(),
            "written before the flush"
        );
        outbox.flush();
        assert_eq!(
            read_within(&client, reply.len(), Duration::from_secs(5)).as_ref(),
            Some(&reply),
            "not written by the flush"
        );
        // More than the executor writes: handed to the flusher tasks, which run only once this task yields.
        let mut many = Vec::new();
        for _ in 0..OUTBOX_INLINE_MAX + 1 {
            let (out, client) = plain_pair().await;
            assert!(out.queue(reply.clone(), &outbox));
            many.push((out, client));
        }
        outbox.flush();
        for (_, client) in &many {
            assert!(
                read_within(client, 1, Duration::from_millis(50)).is_none(),
                "written by the executor"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, client) in &many {
            // Bytes are kept across polls: a reply that arrives in parts is still read whole.
            let mut got = Vec::new();
            while got.len() < reply.len() {
                assert!(Instant::now() < deadline, "never written by the flushers");
                // Lets the flushers run.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut buf = [0u8; 256];
                match std::io::Read::read(&mut &*client, &mut buf) {
                    Ok(0) => panic!("closed"),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
            assert_eq!(got, reply);
        }
    }

    #[tokio::test]
    async fn a_backlog_of_unread_replies_pauses_the_reader_until_the_client_reads() {
        let (out, mut client) = pair().await;
        let reply = vec![7u8; 256 << 10];
        let mut sent = 0usize;
        // The client reads nothing: the kernel's buffers fill, then the queue grows past the mark.
        while !out.backlogged() {
            assert!(out.send(reply.clone()), "the connection stays open");
            sent += reply.len();
            assert!(sent < 256 << 20, "never backlogged");
        }
        // Well past the mark, so that what the client reads below cannot bring it down to the resume mark.
        for _ in 0..32 {
            assert!(out.send(reply.clone()), "the connection stays open");
            sent += reply.len();
        }
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let drained = out.drained(|| {
            calls.fetch_add(1, Ordering::Relaxed);
        });
        tokio::pin!(drained);
        // Still backlogged while the client reads nothing.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), drained.as_mut())
                .await
                .is_err(),
            "the reader resumed with the backlog unread"
        );
        // The client reads 1 MiB and stops: the backlog shrinks but stays above the resume mark, and the
        // waiting reader sees that the client is alive (`progress`: its session is touched).
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        while got < buf.len() {
            let n = client.read(&mut buf[got..]).await.expect("read");
            assert!(n > 0, "closed early");
            assert!(buf[got..got + n].iter().all(|&b| b == 7));
            got += n;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::Relaxed) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a client that reads some of its replies was not seen as alive"
            );
            assert!(
                tokio::time::timeout(Duration::from_millis(20), drained.as_mut())
                    .await
                    .is_err(),
                "the reader resumed with most of the backlog unread"
            );
        }
        // The client reads the rest: the reader resumes, and every byte arrives.
        let reading = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            while got < sent {
                let n = client.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed early");
                assert!(buf[..n].iter().all(|&b| b == 7));
                got += n;
            }
            got
        });
        tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .expect("the reader resumes once the client has read");
        assert!(!out.backlogged());
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), reading)
                .await
                .expect("the client reads it all")
                .expect("the reading task"),
            sent
        );
    }
}
