//! Lingering: after the executor has written the replies of a log entry and has nothing else to do (no
//! entry waiting for the disk, nothing queued), the apply thread stays awake for a moment, polling its
//! sockets, instead of going to sleep at once: a client that writes in a closed loop sends its next request
//! one loopback round trip after its reply, and a thread that is still awake reads it at once, where a
//! sleeping one is woken first.
//!
//! Why: on the VMs we measure on, waking a thread whose CPU went idle costs both sides tens of microseconds
//! (the CPU's halt and its wake-up are exits to the hypervisor; the sender pays for its wake-up call too).
//! Measured (session 36, alternating rounds against the build before, bench/RESULTS.md): set at one
//! session +19% (p50 225 -> 184 us; 5 of 5 pairs), create +10%, with the server's CPU per write unchanged
//! (a CPU that does not sleep is not woken either); 4 to 32 sessions, reads and session establishment
//! unchanged.
//!
//! What it costs: up to `LINGER` of one CPU after an entry's replies when nothing comes, and only while
//! the clients come back quickly (`QUICK`): a server whose clients write now and then never lingers after
//! the first time, and an idle one never does.
//!
//! While it lingers with requests already in, it waits (at most `GATHER` after the first) for as many as
//! the entry just applied carried, so that they go out in one entry: several closed-loop clients answered
//! together come back within microseconds of each other, and one fdatasync for each of them would cost
//! more than the wait (where a sleeping thread's wake-up used to gather them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::executor::ExecMsg;

/// How long the apply thread stays awake after an entry's replies for the next request.
pub(crate) const LINGER: Duration = Duration::from_micros(100);

/// How long, from the first request that came in while it lingered, it waits for the others it expects.
pub(crate) const GATHER: Duration = Duration::from_micros(20);

/// Clients whose next request came within this long of the replies are worth lingering for.
pub(crate) const QUICK: Duration = Duration::from_micros(200);

/// The executor's record of how quickly its clients come back after their replies.
#[derive(Debug, Default)]
pub(crate) struct Linger {
    /// When it last went idle after writing an entry's replies, until the next request comes.
    idle_since: Option<Instant>,
    /// The clients' next request came within `QUICK` the last time.
    quick: bool,
}

/// One stretch of lingering, from `Linger::idle` until it stops.
#[derive(Debug)]
pub(crate) struct Lingering {
    until: Instant,
    /// Requests the replies just written may bring back.
    expected: usize,
    /// When the first request came in.
    first: Option<Instant>,
}

impl Linger {
    /// The executor wrote the replies of an entry of `commands` commands at `now` and has nothing else to
    /// do: how to linger, or `None` to sleep at once.
    pub(crate) fn idle(&mut self, now: Instant, commands: usize) -> Option<Lingering> {
        self.idle_since = Some(now);
        self.quick.then(|| Lingering {
            until: now + LINGER,
            expected: commands.max(1),
            first: None,
        })
    }

    /// A message reached the executor (`now` reads the time): a client's request (or handshake) tells how
    /// quickly the clients come back; anything else (a connection's end, a four-letter word) does not.
    pub(crate) fn request(&mut self, msg: &ExecMsg, now: impl FnOnce() -> Instant) {
        if !matches!(msg, ExecMsg::Request { .. } | ExecMsg::Connect { .. }) {
            return;
        }
        if let Some(since) = self.idle_since.take() {
            self.quick = now().saturating_duration_since(since) <= QUICK;
        }
    }
}

impl Lingering {
    /// Whether to stop lingering at `now`, with `queued` requests in.
    pub(crate) fn done(&mut self, now: Instant, queued: usize) -> bool {
        if queued >= self.expected || now >= self.until {
            return true;
        }
        if queued == 0 {
            return false;
        }
        let first = *self.first.get_or_insert(now);
        now >= first + GATHER
    }
}

/// How lingering went, since the start (`mntr`).
#[derive(Debug, Default)]
pub(crate) struct LingerCounts {
    caught: AtomicU64,
    missed: AtomicU64,
}

impl LingerCounts {
    /// One stretch ended: with a request in (`caught`), or without.
    pub(crate) fn record(&self, caught: bool) {
        let n = if caught { &self.caught } else { &self.missed };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// Stretches that ended with a request in.
    pub(crate) fn caught(&self) -> u64 {
        self.caught.load(Ordering::Relaxed)
    }

    /// Stretches that ended without one (the time was up, or openraft had something for the executor).
    pub(crate) fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn req() -> ExecMsg {
        ExecMsg::Request {
            conn: 1,
            xid: 1,
            req: oxkeeper_proto::Request::GetAcl("/".into()),
        }
    }

    #[test]
    fn it_lingers_only_for_clients_that_came_back_quickly_last_time() {
        let t0 = Instant::now();
        let mut l = Linger::default();
        assert!(l.idle(t0, 1).is_none(), "nothing known of the clients yet");
        l.request(&req(), || t0 + 150 * US);
        assert!(
            l.idle(t0 + 400 * US, 1).is_some(),
            "the last one came back in 150 us"
        );
        l.request(&req(), || t0 + 400 * US + QUICK + US);
        assert!(
            l.idle(t0 + 1000 * US, 1).is_none(),
            "the last one took longer"
        );
        // Measured after a time it did not linger too: the clients may have turned quick again.
        l.request(&req(), || t0 + 1000 * US + QUICK);
        assert!(
            l.idle(t0 + 2000 * US, 1).is_some(),
            "came back within QUICK"
        );
        // A request while it was not idle (more came in during the fdatasync) changes nothing.
        l.request(&req(), || t0 + 2000 * US + QUICK + US);
        l.request(&req(), || t0 + 2500 * US);
        assert!(l.idle(t0 + 3000 * US, 1).is_none());
        // Messages that are not requests (a connection's end) do not count.
        l.request(&ExecMsg::Closed { conn: 1 }, || t0 + 3010 * US);
        assert!(l.idle(t0 + 4000 * US, 1).is_none());
    }

    #[test]
    fn lingering_stops_when_the_expected_requests_are_in_or_the_time_is_up() {
        let t0 = Instant::now();
        let mut l = Linger {
            idle_since: None,
            quick: true,
        };
        // One client: its request is all there is to wait for.
        let mut one = l.idle(t0, 1).expect("lingers");
        assert!(!one.done(t0 + 10 * US, 0));
        assert!(one.done(t0 + 11 * US, 1));
        // Nothing comes.
        let mut none = l.idle(t0, 1).expect("lingers");
        assert!(!none.done(t0 + LINGER - US, 0));
        assert!(none.done(t0 + LINGER, 0));
        // Four clients answered together: the first request waits for the others, up to GATHER.
        let mut four = l.idle(t0, 4).expect("lingers");
        assert!(!four.done(t0 + 10 * US, 1));
        assert!(!four.done(t0 + 15 * US, 3));
        assert!(four.done(t0 + 16 * US, 4), "all four in");
        let mut late = l.idle(t0, 4).expect("lingers");
        assert!(!late.done(t0 + 10 * US, 1));
        assert!(!late.done(t0 + 10 * US + GATHER - US, 2));
        assert!(late.done(t0 + 10 * US + GATHER, 2), "the others are late");
        // An entry of internal commands only (no client waits) still lingers as for one.
        let mut internal = l.idle(t0, 0).expect("lingers");
        assert!(internal.done(t0 + US, 1));
    }
}
