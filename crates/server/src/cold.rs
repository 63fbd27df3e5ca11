//! Idle connections kept out of tokio's reactor.
//!
//! tokio's registration of a socket (its `ScheduledIo`: readiness, wakers; 256 B, aligned to cache lines)
//! is the largest record an idle connection holds. A connection whose client only pings (an idle client:
//! ZooKeeper clients ping only when they have sent nothing else for a third of the session timeout) leaves
//! the reactor when its reader parks: the socket is deregistered and added instead to this set, one epoll
//! instance of our own whose entries cost the process nothing but a slot in `parked` (a pointer). Its fd is
//! itself registered with the runtime; the watcher task (`watch`) reads its events and starts the reader
//! of each connection that has something to read (or has ended), which registers the socket with the
//! reactor again (`connection::OutInner::warm`).
//!
//! Each entry is registered `EPOLLONESHOT`: it reports once and is then disarmed, until the connection
//! warms (and removes it) or parks here again. Entries are named by connection id (never reused), so an
//! event that arrives for a connection that has already warmed finds no entry and is ignored.

// The set's keys hash and compare by the connection's id, which never changes (`ById`).
#![allow(clippy::mutable_key_type)]

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::connection::{ConnId, OutInner};
use crate::stats::ById;

/// The set of cold connections of one server.
#[derive(Debug)]
pub struct ColdSet {
    /// The epoll instance (None if it could not be made: connections then park warm).
    epoll: Option<OwnedFd>,
    parked: Mutex<Parked>,
}

#[derive(Debug, Default)]
struct Parked {
    /// The cold connections by id, each holding itself here until it warms.
    conns: HashSet<ById<OutInner>, foldhash::fast::RandomState>,
    /// The watcher has stopped (the runtime is shutting down): nothing parks here any more.
    closed: bool,
}

/// Events taken from the set per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

impl ColdSet {
    pub fn new() -> ColdSet {
        // SAFETY: epoll_create1 takes no pointers; a valid fd is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let epoll = if fd >= 0 {
            // SAFETY: `fd` is a new descriptor nobody else owns.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        } else {
            tracing::warn!(
                "epoll_create1: {}: idle connections stay registered with the runtime",
                std::io::Error::last_os_error()
            );
            None
        };
        ColdSet {
            epoll,
            parked: Mutex::new(Parked::default()),
        }
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection's socket (already out of the reactor) to the set; false if it cannot be (the set
    /// is closed, or epoll refused): the caller keeps it warm.
    pub fn add(&self, id: ConnId, fd: RawFd, conn: &Arc<OutInner>) -> bool {
        let Some(epoll) = &self.epoll else {
            return false;
        };
        let mut parked = self.parked();
        if parked.closed {
            return false;
        }
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: id,
        };
        // SAFETY: `ev` lives across the call; `fd` is an open socket the caller owns.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            tracing::debug!(
                "epoll_ctl ADD: {}: the connection stays warm",
                std::io::Error::last_os_error()
            );
            return false;
        }
        parked.conns.insert(ById(Arc::clone(conn)));
        true
    }

    /// Takes a connection out of the set (it is warming). Its entry may already be gone (its event
    /// arrived); the returned record, if any, is the set's reference to it.
    pub fn remove(&self, id: ConnId, fd: RawFd) -> Option<Arc<OutInner>> {
        let conn = self.parked().conns.take(&id).map(|c| c.0);
        if let Some(epoll) = &self.epoll {
            // SAFETY: no pointers but the (ignored, since Linux 2.6.9) event; `fd` is open.
            unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            };
        }
        conn
    }

    /// Cold connections now.
    pub fn len(&self) -> usize {
        self.parked().conns.len()
    }

    /// A connection the set reported: start its reader (which warms it).
    fn wake(&self, id: ConnId) {
        let conn = self.parked().conns.take(&id);
        if let Some(ById(conn)) = conn {
            conn.unpark();
        }
    }
}

impl Default for ColdSet {
    fn default() -> Self {
        ColdSet::new()
    }
}

/// On the watcher's end (the runtime shutting down, or an error): every cold connection gets its reader
/// back (on a runtime that is shutting down the task is dropped, and the connection with it: its socket is
/// closed as a warm one's would be), and nothing parks here any more.
struct CloseOnDrop(Arc<ColdSet>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let conns = {
            let mut parked = self.0.parked();
            parked.closed = true;
            std::mem::take(&mut parked.conns)
        };
        for ById(conn) in conns {
            conn.unpark();
        }
    }
}

/// An epoll fd for the reactor (a duplicate of the set's: deregistered and closed with the `AsyncFd`,
/// whatever the order in which the set goes).
#[derive(Debug)]
struct EpollFd(OwnedFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Reads the set's events until the runtime shuts down; spawned once per server.
pub async fn watch(set: Arc<ColdSet>) {
    let _close = CloseOnDrop(Arc::clone(&set));
    let Some(epoll) = set.epoll.as_ref().and_then(|fd| fd.try_clone().ok()) else {
        return;
    };
    // SAFETY (register's contract: the fd stays open while registered): the AsyncFd owns the fd.
    let afd = match unsafe { AsyncFd::register_with_interest(EpollFd(epoll), Interest::READABLE) } {
        Ok(afd) => afd,
        Err(e) => {
            tracing::warn!("cannot watch idle connections: {e}");
            return;
        }
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
    loop {
        let Ok(mut guard) = afd.readable().await else {
            return;
        };
        loop {
            // SAFETY: `events` has room for EVENTS_PER_WAIT entries; timeout 0 never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    afd.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS_PER_WAIT as i32,
                    0,
                )
            };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::warn!(
                    "epoll_wait on idle connections: {}",
                    std::io::Error::last_os_error()
                );
                return;
            }
            let n = n as usize;
            for ev in &events[..n] {
                set.wake(ev.u64);
            }
            if n < EVENTS_PER_WAIT {
                break;
            }
        }
        // Cleared only if no new event arrived since the guard was taken (tokio compares the readiness's
        // tick): an event after the last epoll_wait above is seen on the next turn.
        guard.clear_ready();
    }
}
