//! The SessionTracker: when each session of this member expires (member-local, never replicated).
//!
//! Deadlines sit in an `ExpiryQueue` of tick-wide buckets, as in ZooKeeper: a deadline is rounded up to
//! the next tick boundary, so a session expires between `timeout` and `timeout + tick` after its last
//! touch. Touching is O(1) when the bucket does not change, and an expiry pass costs only what expires.
//! Time comes in as `now_ms`, a monotonic clock in milliseconds; nothing here reads a clock.

use std::collections::BTreeMap;
use std::hash::Hash;

use rustc_hash::{FxHashMap, FxHashSet};

/// Elements bucketed by deadline (`ExpiryQueue`). A bucket whose elements all moved stays, empty, until
/// its time passes, as ZooKeeper's does (the `dump` four-letter word shows it).
#[derive(Debug, Clone)]
pub struct ExpiryQueue<E> {
    interval_ms: u64,
    /// Element → its bucket time. Polled elements keep their entry until removed, as in ZooKeeper.
    /// Session ids are allocated by the server, never chosen by a client, so a fast hash is safe here.
    elems: FxHashMap<E, u64>,
    /// Bucket time → its elements. There are few buckets (timeout / tick of them), so the ordered map costs
    /// O(1) in practice; the sets are hash sets so moving an element between buckets is O(1).
    buckets: BTreeMap<u64, FxHashSet<E>>,
}

/// A snapshot of an expiry queue for the `dump` four-letter word: `Sets (<buckets>)/(<elements>):`, then
/// each bucket with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDump<E> {
    pub buckets: Vec<(u64, Vec<E>)>,
    pub elements: usize,
}

impl<E: Copy + Eq + Hash + Ord> ExpiryQueue<E> {
    /// A queue with buckets `interval_ms` wide (at least 1 ms).
    pub fn new(interval_ms: u64) -> Self {
        ExpiryQueue {
            interval_ms: interval_ms.max(1),
            elems: FxHashMap::default(),
            buckets: BTreeMap::new(),
        }
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// `((time / interval) + 1) * interval`: the next bucket boundary strictly after `time`.
    pub fn round_up(&self, time_ms: u64) -> u64 {
        (time_ms / self.interval_ms)
            .saturating_add(1)
            .saturating_mul(self.interval_ms)
    }

    /// Moves `elem` to the bucket of `now + timeout`. Returns the new deadline, or `None` when the bucket
    /// did not change (then nothing was done).
    pub fn update(&mut self, elem: E, timeout_ms: u64, now_ms: u64) -> Option<u64> {
        let deadline = self.round_up(now_ms.saturating_add(timeout_ms));
        let previous = match self.elems.get_mut(&elem) {
            Some(d) if *d == deadline => return None, // the common touch: nothing to do
            Some(d) => Some(std::mem::replace(d, deadline)),
            None => {
                self.elems.insert(elem, deadline);
                None
            }
        };
        self.buckets.entry(deadline).or_default().insert(elem);
        if let Some(prev) = previous {
            if let Some(bucket) = self.buckets.get_mut(&prev) {
                bucket.remove(&elem);
            }
        }
        Some(deadline)
    }

    /// Forgets `elem`; returns its deadline.
    pub fn remove(&mut self, elem: E) -> Option<u64> {
        let deadline = self.elems.remove(&elem)?;
        if let Some(bucket) = self.buckets.get_mut(&deadline) {
            bucket.remove(&elem);
        }
        Some(deadline)
    }

    pub fn deadline(&self, elem: E) -> Option<u64> {
        self.elems.get(&elem).copied()
    }

    /// The earliest bucket time (possibly of an empty bucket): when the next `poll` may return something.
    pub fn next_expiration(&self) -> Option<u64> {
        self.buckets.keys().next().copied()
    }

    /// Takes every bucket whose time is ≤ `now_ms` and returns its elements, in bucket then element
    /// order. Costs only the buckets taken.
    pub fn poll(&mut self, now_ms: u64) -> Vec<E> {
        let mut out = Vec::new();
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > now_ms {
                break;
            }
            let start = out.len();
            out.extend(entry.remove());
            out[start..].sort_unstable();
        }
        out
    }

    /// Number of elements (including polled ones not yet removed).
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    pub fn dump(&self) -> QueueDump<E> {
        QueueDump {
            buckets: self
                .buckets
                .iter()
                .map(|(t, set)| {
                    let mut elems: Vec<E> = set.iter().copied().collect();
                    elems.sort_unstable();
                    (*t, elems)
                })
                .collect(),
            elements: self.elems.len(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    /// The timeout touches extend by (the connection's negotiated one; a protocol timeout is an i32, and
    /// 32 bits keep the entry, one per session, at 8 bytes).
    timeout_ms: u32,
    closing: bool,
}

/// Deadlines of the sessions this member tracks (`SessionTrackerImpl` without its thread: the caller asks
/// for `next_expiration` and calls `expire` when that time comes).
#[derive(Debug, Clone)]
pub struct SessionTracker {
    queue: ExpiryQueue<i64>,
    sessions: FxHashMap<i64, Tracked>,
}

impl SessionTracker {
    /// A tracker with `tick_ms`-wide buckets (ZooKeeper's tickTime).
    pub fn new(tick_ms: u64) -> Self {
        SessionTracker {
            queue: ExpiryQueue::new(tick_ms),
            sessions: FxHashMap::default(),
        }
    }

    pub fn tick_ms(&self) -> u64 {
        self.queue.interval_ms()
    }

    /// `trackSession`: starts tracking `id` if it is new, and (re)sets its deadline to `now + timeout`.
    /// The timeout becomes the one later touches use (a reconnect may negotiate another). A closing
    /// session stays closing. Returns whether the session was new.
    pub fn track(&mut self, id: i64, timeout_ms: u64, now_ms: u64) -> bool {
        let timeout_ms = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
        let added = match self.sessions.get_mut(&id) {
            Some(t) => {
                t.timeout_ms = timeout_ms;
                false
            }
            None => {
                self.sessions.insert(
                    id,
                    Tracked {
                        timeout_ms,
                        closing: false,
                    },
                );
                true
            }
        };
        self.queue.update(id, u64::from(timeout_ms), now_ms);
        added
    }

    /// `touchSession`: pushes the deadline to `now + timeout`. False (and nothing done) if the session is
    /// unknown or closing: the caller then drops the request without a reply.
    pub fn touch(&mut self, id: i64, now_ms: u64) -> bool {
        match self.sessions.get(&id) {
            Some(t) if !t.closing => {
                self.queue.update(id, u64::from(t.timeout_ms), now_ms);
                true
            }
            _ => false,
        }
    }

    /// `setSessionClosing`: later touches fail; the session stays tracked until `remove`.
    pub fn set_closing(&mut self, id: i64) {
        if let Some(t) = self.sessions.get_mut(&id) {
            t.closing = true;
        }
    }

    pub fn is_closing(&self, id: i64) -> bool {
        self.sessions.get(&id).is_some_and(|t| t.closing)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.sessions.contains_key(&id)
    }

    /// `removeSession`: forget the session (its close was applied).
    pub fn remove(&mut self, id: i64) {
        self.sessions.remove(&id);
        self.queue.remove(id);
    }

    /// The current deadline of `id` (a tick boundary).
    pub fn deadline(&self, id: i64) -> Option<u64> {
        self.queue.deadline(id)
    }

    /// When `expire` should next be called (the earliest bucket, perhaps empty).
    pub fn next_expiration(&self) -> Option<u64> {
        self.queue.next_expiration()
    }

    /// The sessions whose deadline is ≤ `now_ms`, marked closing (the caller proposes CloseSession for
    /// each). A session already closing is returned again when its deadline passes, as in ZooKeeper, so
    /// a close that was lost is retried; closing it twice is harmless.
    pub fn expire(&mut self, now_ms: u64) -> Vec<i64> {
        let expired: Vec<i64> = self
            .queue
            .poll(now_ms)
            .into_iter()
            .filter(|id| self.sessions.contains_key(id))
            .collect();
        for id in &expired {
            self.set_closing(*id);
        }
        expired
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The buckets, for the `dump` four-letter word and for tests.
    pub fn dump(&self) -> QueueDump<i64> {
        self.queue.dump()
    }

    /// The tracker part of the `dump` four-letter word, in ZooKeeper's format:
    /// `Session Sets (<buckets>)/(<sessions>):`, then per bucket `<n> expire at <date>:` and one
    /// `\t0x<id>` line per session. `date` turns a bucket time (this tracker's monotonic ms) into the
    /// text to show (ZooKeeper prints a `java.util.Date`).
    pub fn dump_text(&self, date: impl Fn(u64) -> String) -> String {
        use std::fmt::Write as _;
        let d = self.queue.dump();
        let mut s = format!("Session Sets ({})/({}):\n", d.buckets.len(), d.elements);
        for (time, ids) in d.buckets {
            let _ = writeln!(s, "{} expire at {}:", ids.len(), date(time));
            for id in ids {
                let _ = writeln!(s, "\t0x{id:x}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: u64 = 2000;

    #[test]
    fn deadline_rounds_up_to_the_next_tick() {
        let q: ExpiryQueue<i64> = ExpiryQueue::new(TICK);
        assert_eq!(q.round_up(0), 2000);
        assert_eq!(q.round_up(1999), 2000);
        assert_eq!(q.round_up(2000), 4000);
        assert_eq!(q.round_up(u64::MAX), u64::MAX);
    }

    #[test]
    fn session_expires_after_timeout_and_before_timeout_plus_tick() {
        for timeout in [4000u64, 5000, 6999, 30_000] {
            for start in [0u64, 1, 999, 1999, 2000, 12_345] {
                let mut t = SessionTracker::new(TICK);
                t.track(1, timeout, start);
                let mut now = start;
                let expired_at = loop {
                    if !t.expire(now).is_empty() {
                        break now;
                    }
                    now += 1;
                };
                let age = expired_at - start;
                assert!(age > timeout, "expired early: {age} <= {timeout}");
                assert!(age <= timeout + TICK, "expired late: {age}");
                assert!(t.is_closing(1));
            }
        }
    }

    #[test]
    fn touch_postpones_expiry_from_the_last_touch() {
        let mut t = SessionTracker::new(TICK);
        t.track(7, 6000, 0);
        let mut now = 0;
        // Touch every second for a minute: never expires.
        while now < 60_000 {
            now += 1000;
            assert!(t.expire(now).is_empty());
            assert!(t.touch(7, now));
        }
        let last = now;
        while t.expire(now).is_empty() {
            now += 1;
            assert!(now - last <= 6000 + TICK);
        }
        assert!(now - last > 6000);
    }

    #[test]
    fn touch_in_the_same_bucket_changes_nothing() {
        let mut t = SessionTracker::new(TICK);
        t.track(1, 4000, 100);
        let d = t.deadline(1);
        assert_eq!(d, Some(6000));
        assert!(t.touch(1, 1999));
        assert_eq!(t.deadline(1), d);
        assert_eq!(t.dump().buckets.len(), 1);
        assert!(t.touch(1, 2000));
        assert_eq!(t.deadline(1), Some(8000));
    }

    #[test]
    fn unknown_and_closing_sessions_cannot_be_touched() {
        let mut t = SessionTracker::new(TICK);
        assert!(!t.touch(1, 0));
        t.track(1, 4000, 0);
        t.set_closing(1);
        assert!(!t.touch(1, 10));
        assert!(t.contains(1));
        t.remove(1);
        assert!(!t.contains(1));
        assert!(t.expire(u64::MAX).is_empty());
    }

    #[test]
    fn expire_returns_only_due_sessions() {
        let mut t = SessionTracker::new(TICK);
        t.track(1, 4000, 0);
        t.track(2, 10_000, 0);
        t.track(3, 4000, 1000);
        assert_eq!(t.next_expiration(), Some(6000));
        assert!(t.expire(5999).is_empty());
        assert_eq!(t.expire(6000), vec![1, 3]);
        assert!(!t.is_closing(2));
        assert_eq!(t.next_expiration(), Some(12_000));
        assert_eq!(t.expire(20_000), vec![2]);
        assert_eq!(t.next_expiration(), None);
    }

    #[test]
    fn a_closing_session_is_still_expired_when_due() {
        let mut t = SessionTracker::new(TICK);
        t.track(1, 4000, 0);
        t.set_closing(1);
        assert_eq!(t.expire(6000), vec![1]);
        // Polled but not removed: still tracked until its close is applied.
        assert_eq!(t.dump().elements, 1);
        t.remove(1);
        assert_eq!(t.dump().elements, 0);
    }

    #[test]
    fn dump_keeps_empty_buckets_until_their_time() {
        let mut t = SessionTracker::new(TICK);
        t.track(1, 4000, 0);
        t.track(2, 4000, 0);
        t.touch(1, 5000);
        let d = t.dump();
        assert_eq!(d.elements, 2);
        assert_eq!(d.buckets, vec![(6000, vec![2]), (10_000, vec![1])]);
        t.touch(2, 5000);
        assert_eq!(t.dump().buckets, vec![(6000, vec![]), (10_000, vec![1, 2])]);
        assert_eq!(
            t.dump_text(|ms| format!("t{ms}")),
            "Session Sets (2)/(2):\n0 expire at t6000:\n2 expire at t10000:\n\t0x1\n\t0x2\n"
        );
        assert!(t.expire(6000).is_empty());
        assert_eq!(t.dump().buckets, vec![(10_000, vec![1, 2])]);
    }

    #[test]
    fn track_again_uses_the_new_timeout_and_keeps_closing() {
        let mut t = SessionTracker::new(TICK);
        assert!(t.track(1, 4000, 0));
        assert!(!t.track(1, 20_000, 0));
        assert_eq!(t.deadline(1), Some(22_000));
        assert!(t.touch(1, 1000));
        assert_eq!(t.deadline(1), Some(22_000));
        t.set_closing(1);
        t.track(1, 4000, 0);
        assert!(t.is_closing(1));
        t.track(2, 0, 100);
        assert_eq!(t.deadline(2), Some(2000));
    }
}
