//! The SessionTracker: when each session of this member expires (member-local, never replicated).
//!
//! Deadlines are tick-wide buckets, as in ZooKeeper's `ExpiryQueue`: a deadline is rounded up to the next
//! tick boundary, so a session expires between `timeout` and `timeout + tick` after its last touch. Time
//! comes in as `now_ms`, a monotonic clock in milliseconds; nothing here reads a clock.
//!
//! Unlike ZooKeeper's queue, a touch does not move the session between buckets: it only writes the new
//! deadline in the session's entry. Each session is filed in exactly one list of the `due` map, under a
//! time at or before its deadline; when that time comes, the expiry pass reads the deadline and either
//! expires the session or files it again under its current deadline. A touch is one table lookup, a
//! session costs one 24-byte table entry and 8 bytes in a list (ZooKeeper's layout, a hash set per bucket
//! plus the map of deadlines, cost ~120 B per idle session here), and a session that pings is filed again
//! about once per timeout instead of once per bucket change.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

/// A snapshot of the expiry buckets for the `dump` four-letter word: `Sets (<buckets>)/(<elements>):`,
/// then each bucket with its time and its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDump<E> {
    pub buckets: Vec<(u64, Vec<E>)>,
    pub elements: usize,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    /// The session's deadline (a tick boundary).
    deadline: u64,
    /// The timeout touches extend by (the connection's negotiated one; a protocol timeout is an i32, so
    /// it fits in 31 bits), and in the top bit whether the session is closing.
    timeout_closing: u32,
    /// Where the session is filed in `due`: its list's time is `deadline - filed * interval`. `NOT_FILED`
    /// for an expired session (taken by a pass) until it is tracked again. An id found in any other list
    /// (the session was filed again under an earlier time, or removed and tracked again) is stale there.
    filed: u32,
}

const CLOSING: u32 = 1 << 31;
const NOT_FILED: u32 = u32::MAX;

impl Tracked {
    fn timeout_ms(&self) -> u64 {
        u64::from(self.timeout_closing & !CLOSING)
    }

    fn closing(&self) -> bool {
        self.timeout_closing & CLOSING != 0
    }
}

/// How many filed sessions one `expire_within` call of the server looks at: a cohort of sessions that
/// connected together and ping together is filed again in one pass, and at a million sessions that is
/// ~100 ms of table lookups, which are spread over passes this size (a few ms each) instead.
pub const EXPIRY_PASS_BUDGET: usize = 32_768;

/// Deadlines of the sessions this member tracks (`SessionTrackerImpl` without its thread: the caller asks
/// for `next_expiration` and calls `expire` when that time comes).
#[derive(Debug, Clone)]
pub struct SessionTracker {
    interval_ms: u64,
    /// Session id → its entry (16 B). Expired sessions keep theirs until removed, as in ZooKeeper.
    /// Session ids are allocated by the server, never chosen by a client, so a fast hash is safe here.
    sessions: FxHashMap<i64, Tracked>,
    /// Time → the sessions filed under it, each at or before its deadline (lists may also hold stale ids,
    /// skipped when read). The lists are taken in time order.
    due: BTreeMap<u64, Vec<i64>>,
    /// ZooKeeper's buckets, for `dump` and `next_expiration`: each deadline not yet passed by an expiry
    /// pass, with the number of sessions whose deadline it is. A bucket whose sessions all moved on stays,
    /// empty, until its time passes, as ZooKeeper's does (the `dump` four-letter word shows it). There are
    /// few (timeout / tick of them).
    buckets: BTreeMap<u64, u32>,
}

impl SessionTracker {
    /// A tracker with `tick_ms`-wide buckets (ZooKeeper's tickTime; at least 1 ms).
    pub fn new(tick_ms: u64) -> Self {
        SessionTracker {
            interval_ms: tick_ms.max(1),
            sessions: FxHashMap::default(),
            due: BTreeMap::new(),
            buckets: BTreeMap::new(),
        }
    }

    pub fn tick_ms(&self) -> u64 {
        self.interval_ms
    }

    /// `((time / interval) + 1) * interval`: the next bucket boundary strictly after `time`.
    pub fn round_up(&self, time_ms: u64) -> u64 {
        round_up(time_ms, self.interval_ms)
    }

    /// `trackSession`: starts tracking `id` if it is new, and (re)sets its deadline to `now + timeout`.
    /// The timeout becomes the one later touches use (a reconnect may negotiate another). A closing
    /// session stays closing. Returns whether the session was new.
    pub fn track(&mut self, id: i64, timeout_ms: u64, now_ms: u64) -> bool {
        let timeout = u32::try_from(timeout_ms.min(u64::from(!CLOSING))).unwrap_or(!CLOSING);
        let deadline = round_up(now_ms.saturating_add(u64::from(timeout)), self.interval_ms);
        let mut added = false;
        let t = self.sessions.entry(id).or_insert_with(|| {
            added = true;
            Tracked {
                deadline,
                timeout_closing: 0,
                filed: NOT_FILED,
            }
        });
        t.timeout_closing = timeout | (t.timeout_closing & CLOSING);
        let previous = (!added).then_some(t.deadline);
        move_deadline(id, t, deadline, self.interval_ms, &mut self.due);
        if previous != Some(deadline) {
            move_bucket(&mut self.buckets, previous, deadline);
        }
        added
    }

    /// `touchSession`: pushes the deadline to `now + timeout`. False (and nothing done) if the session is
    /// unknown or closing: the caller then drops the request without a reply.
    pub fn touch(&mut self, id: i64, now_ms: u64) -> bool {
        let Some(t) = self.sessions.get_mut(&id) else {
            return false;
        };
        if t.closing() {
            return false;
        }
        let deadline = round_up(now_ms.saturating_add(t.timeout_ms()), self.interval_ms);
        if deadline != t.deadline {
            // Only counted in its new bucket: the session stays filed where it is (module comment).
            let previous = t.deadline;
            move_deadline(id, t, deadline, self.interval_ms, &mut self.due);
            move_bucket(&mut self.buckets, Some(previous), deadline);
        }
        true
    }

    /// `setSessionClosing`: later touches fail; the session stays tracked until `remove`.
    pub fn set_closing(&mut self, id: i64) {
        if let Some(t) = self.sessions.get_mut(&id) {
            t.timeout_closing |= CLOSING;
        }
    }

    pub fn is_closing(&self, id: i64) -> bool {
        self.sessions.get(&id).is_some_and(Tracked::closing)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.sessions.contains_key(&id)
    }

    /// `removeSession`: forget the session (its close was applied). Its id stays in its list, stale, until
    /// that list's time comes.
    pub fn remove(&mut self, id: i64) {
        if let Some(t) = self.sessions.remove(&id) {
            if let Some(n) = self.buckets.get_mut(&t.deadline) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The current deadline of `id` (a tick boundary).
    pub fn deadline(&self, id: i64) -> Option<u64> {
        self.sessions.get(&id).map(|t| t.deadline)
    }

    /// When `expire` should next be called: the earliest bucket (perhaps empty), or the earliest list
    /// still to be looked at if a pass ran out of budget.
    pub fn next_expiration(&self) -> Option<u64> {
        let bucket = self.buckets.keys().next().copied();
        let list = self.due.keys().next().copied();
        match (bucket, list) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, l) => b.or(l),
        }
    }

    /// The sessions whose deadline is ≤ `now_ms`, marked closing (the caller proposes CloseSession for
    /// each): list by list in time order, by id within each list (a list may hold sessions of several
    /// past deadlines). A session already closing is returned when its
    /// deadline passes too, as in ZooKeeper, so a close that was lost is retried; closing it twice is
    /// harmless.
    pub fn expire(&mut self, now_ms: u64) -> Vec<i64> {
        self.expire_within(now_ms, usize::MAX)
    }

    /// `expire`, looking at no more than about `budget` filed sessions (whole lists are taken, and a list
    /// over the budget is split): what is left is looked at by the next call, and `next_expiration` stays
    /// at or before `now_ms` until it has been.
    pub fn expire_within(&mut self, now_ms: u64, budget: usize) -> Vec<i64> {
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > now_ms {
                break;
            }
            entry.remove();
        }
        let mut out = Vec::new();
        let mut looked = 0usize;
        while looked < budget {
            let Some(mut entry) = self.due.first_entry() else {
                break;
            };
            let time = *entry.key();
            if time > now_ms {
                break;
            }
            let list = entry.get_mut();
            let take = list.len().min(budget - looked);
            let ids: Vec<i64> = if take == list.len() {
                entry.remove()
            } else {
                list.drain(list.len() - take..).collect()
            };
            looked += ids.len();
            let start = out.len();
            for id in ids {
                let Some(t) = self.sessions.get_mut(&id) else {
                    continue; // removed since it was filed
                };
                if t.filed == NOT_FILED || filed_at(t, self.interval_ms) != time {
                    continue; // stale: the session is filed elsewhere, or not at all
                }
                if t.deadline <= now_ms {
                    t.filed = NOT_FILED;
                    t.timeout_closing |= CLOSING;
                    out.push(id);
                } else {
                    t.filed = 0;
                    self.due.entry(t.deadline).or_default().push(id);
                }
            }
            out[start..].sort_unstable();
        }
        out
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The buckets, for the `dump` four-letter word and for tests: each bucket not yet passed, with the
    /// sessions whose deadline it is (ids in order); `elements` counts every tracked session, expired ones
    /// not yet removed included.
    pub fn dump(&self) -> QueueDump<i64> {
        let mut buckets: BTreeMap<u64, Vec<i64>> =
            self.buckets.keys().map(|t| (*t, Vec::new())).collect();
        for (id, t) in &self.sessions {
            if let Some(ids) = buckets.get_mut(&t.deadline) {
                ids.push(*id);
            }
        }
        QueueDump {
            buckets: buckets
                .into_iter()
                .map(|(t, mut ids)| {
                    ids.sort_unstable();
                    (t, ids)
                })
                .collect(),
            elements: self.sessions.len(),
        }
    }

    /// The tracker part of the `dump` four-letter word, in ZooKeeper's format:
    /// `Session Sets (<buckets>)/(<sessions>):`, then per bucket `<n> expire at <date>:` and one
    /// `\t0x<id>` line per session. `date` turns a bucket time (this tracker's monotonic ms) into the
    /// text to show (ZooKeeper prints a `java.util.Date`).
    pub fn dump_text(&self, date: impl Fn(u64) -> String) -> String {
        self.dump().text(date)
    }
}

impl QueueDump<i64> {
    /// ZooKeeper's `dump` text of the session sets, with each time printed by `date`. A dump is plain
    /// data: the four-letter word takes it under the tracker's lock and formats it after.
    pub fn text(&self, date: impl Fn(u64) -> String) -> String {
        use std::fmt::Write as _;
        let mut s = format!(
            "Session Sets ({})/({}):\n",
            self.buckets.len(),
            self.elements
        );
        for (time, ids) in &self.buckets {
            let _ = writeln!(s, "{} expire at {}:", ids.len(), date(*time));
            for id in ids {
                let _ = writeln!(s, "\t0x{id:x}");
            }
        }
        s
    }
}

fn round_up(time_ms: u64, interval_ms: u64) -> u64 {
    (time_ms / interval_ms)
        .saturating_add(1)
        .saturating_mul(interval_ms)
}

/// The time of the list `t` is filed in (`t` is filed).
fn filed_at(t: &Tracked, interval_ms: u64) -> u64 {
    t.deadline
        .saturating_sub(u64::from(t.filed).saturating_mul(interval_ms))
}

/// Sets a session's deadline, keeping it filed at or before it: a session not filed, or whose new deadline
/// is before its list's time (a shorter timeout) or too far after it to note, is filed under its deadline
/// (its old list then holds it stale).
fn move_deadline(
    id: i64,
    t: &mut Tracked,
    deadline: u64,
    interval_ms: u64,
    due: &mut BTreeMap<u64, Vec<i64>>,
) {
    let at = (t.filed != NOT_FILED).then(|| filed_at(t, interval_ms));
    t.deadline = deadline;
    let steps = at
        .filter(|at| *at <= deadline)
        .and_then(|at| u32::try_from((deadline - at) / interval_ms).ok())
        .filter(|steps| *steps != NOT_FILED);
    match steps {
        Some(steps) => t.filed = steps,
        None => {
            t.filed = 0;
            due.entry(deadline).or_default().push(id);
        }
    }
}

/// Moves the count of a session from bucket `from` (if that bucket has not passed) to `to`.
fn move_bucket(buckets: &mut BTreeMap<u64, u32>, from: Option<u64>, to: u64) {
    if let Some(n) = from.and_then(|from| buckets.get_mut(&from)) {
        *n = n.saturating_sub(1);
    }
    *buckets.entry(to).or_insert(0) += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: u64 = 2000;

    #[test]
    fn deadline_rounds_up_to_the_next_tick() {
        let q = SessionTracker::new(TICK);
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

    /// Every session is filed in exactly one list, however often it is touched (what keeps an idle
    /// session's cost at one entry and one list slot).
    #[test]
    fn touches_do_not_file_a_session_again() {
        let mut t = SessionTracker::new(TICK);
        for id in 0..100 {
            t.track(id, 6000, 0);
        }
        let mut now = 0;
        while now < 120_000 {
            now += 500;
            assert!(t.expire(now).is_empty());
            for id in 0..100 {
                assert!(t.touch(id, now));
            }
            let filed: usize = t.due.values().map(Vec::len).sum();
            assert_eq!(filed, 100, "at {now}");
            assert!(t.due.keys().all(|k| *k > now));
        }
        // The buckets are ZooKeeper's: every session's deadline, and the past ones gone.
        let d = t.dump();
        let empty = |time| (time, vec![]);
        assert_eq!(
            d.buckets,
            vec![
                empty(122_000),
                empty(124_000),
                empty(126_000),
                (128_000, (0..100).collect())
            ]
        );
    }

    /// A shorter timeout files the session again, earlier; its old filing is stale and dropped when its
    /// time comes, even when the session is filed again in that same list meanwhile.
    #[test]
    fn a_stale_filing_is_dropped() {
        let mut t = SessionTracker::new(TICK);
        t.track(1, 20_000, 0);
        t.track(1, 4000, 0);
        assert_eq!(t.deadline(1), Some(6000));
        let mut now = 0;
        while now < 40_000 {
            now += 1000;
            assert!(t.expire(now).is_empty());
            assert!(t.touch(1, now));
        }
        let copies: usize = t.due.values().flatten().filter(|id| **id == 1).count();
        assert_eq!(copies, 1);
        assert_eq!(t.due.len(), 1);
    }

    #[test]
    fn a_pass_over_budget_leaves_the_rest_for_the_next() {
        let mut t = SessionTracker::new(TICK);
        for id in 0..10 {
            t.track(id, 4000, 0);
        }
        // Half of them touched into a later bucket: their filing is still at 6000.
        for id in 0..5 {
            t.touch(id, 3000);
        }
        let mut expired = Vec::new();
        let mut passes = 0;
        loop {
            expired.extend(t.expire_within(6000, 3));
            passes += 1;
            if t.next_expiration().is_some_and(|n| n > 6000) {
                break;
            }
            assert!(passes < 10, "the passes never finish");
        }
        expired.sort_unstable();
        assert_eq!(expired, vec![5, 6, 7, 8, 9]);
        assert_eq!(passes, 4);
        assert_eq!(t.next_expiration(), Some(8000));
        let mut later = t.expire_within(8000, 3);
        assert_eq!(later.len(), 3);
        later.extend(t.expire_within(8000, 3));
        later.sort_unstable();
        assert_eq!(later, vec![0, 1, 2, 3, 4]);
        assert_eq!(t.next_expiration(), None);
    }

    #[test]
    fn a_session_expired_then_tracked_again_is_filed_again() {
        let mut t = SessionTracker::new(TICK);
        t.track(1, 4000, 0);
        assert_eq!(t.expire(6000), vec![1]);
        assert!(t.is_closing(1));
        // Tracked again (e.g. a new leader tracks every session it has): it is due again, still closing.
        t.track(1, 4000, 7000);
        assert_eq!(t.next_expiration(), Some(12_000));
        assert!(t.expire(11_999).is_empty());
        assert_eq!(t.expire(12_000), vec![1]);
        t.remove(1);
        t.track(1, 4000, 13_000);
        assert_eq!(t.expire(18_000), vec![1]);
        assert!(t.expire(u64::MAX).is_empty());
    }

    mod model {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::super::SessionTracker;

        #[derive(Debug, Clone)]
        enum Op {
            Track(i64, u64),
            Touch(i64),
            Close(i64),
            Remove(i64),
            Advance(u64),
            Expire(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..8i64, 0..9000u64).prop_map(|(id, t)| Op::Track(id, t)),
                (0..8i64).prop_map(Op::Touch),
                (0..8i64).prop_map(Op::Close),
                (0..8i64).prop_map(Op::Remove),
                (0..5000u64).prop_map(Op::Advance),
                (1..4usize).prop_map(Op::Expire),
            ]
        }

        /// ZooKeeper's tracker, naively: id -> (deadline, timeout, closing, due). A session is due until an
        /// expiry pass returns it, and again once tracked.
        #[derive(Default)]
        struct Model(BTreeMap<i64, (u64, u64, bool, bool)>);

        proptest! {
            #[test]
            fn the_tracker_expires_what_zookeepers_would(ops in proptest::collection::vec(op(), 1..200)) {
                const TICK: u64 = 1000;
                let round_up = |t: u64| (t / TICK + 1) * TICK;
                let mut t = SessionTracker::new(TICK);
                let mut m = Model::default();
                let mut now = 0u64;
                for op in ops {
                    match op {
                        Op::Track(id, timeout) => {
                            let new = t.track(id, timeout, now);
                            prop_assert_eq!(new, !m.0.contains_key(&id));
                            let e = m.0.entry(id).or_insert((0, 0, false, true));
                            *e = (round_up(now + timeout), timeout, e.2, true);
                        }
                        Op::Touch(id) => {
                            let ok = t.touch(id, now);
                            let want = match m.0.get_mut(&id) {
                                Some(e) if !e.2 => {
                                    e.0 = round_up(now + e.1);
                                    true
                                }
                                _ => false,
                            };
                            prop_assert_eq!(ok, want);
                        }
                        Op::Close(id) => {
                            t.set_closing(id);
                            if let Some(e) = m.0.get_mut(&id) {
                                e.2 = true;
                            }
                        }
                        Op::Remove(id) => {
                            t.remove(id);
                            m.0.remove(&id);
                        }
                        Op::Advance(ms) => now += ms,
                        Op::Expire(budget) => {
                            let mut got = Vec::new();
                            // Passes until nothing before `now` is left to look at.
                            for _ in 0..64 {
                                got.extend(t.expire_within(now, budget));
                                if t.next_expiration().is_none_or(|n| n > now) {
                                    break;
                                }
                            }
                            prop_assert!(t.next_expiration().is_none_or(|n| n > now));
                            got.sort_unstable();
                            let mut want = Vec::new();
                            for (id, e) in m.0.iter_mut() {
                                if e.3 && e.0 <= now {
                                    e.3 = false;
                                    e.2 = true;
                                    want.push(*id);
                                }
                            }
                            prop_assert_eq!(got, want);
                        }
                    }
                    for (id, e) in &m.0 {
                        prop_assert_eq!(t.deadline(*id), Some(e.0));
                        prop_assert_eq!(t.is_closing(*id), e.2);
                    }
                    prop_assert_eq!(t.len(), m.0.len());
                    // Each session not yet expired is in the list its entry names.
                    for (id, s) in &t.sessions {
                        if s.filed != super::super::NOT_FILED {
                            let at = super::super::filed_at(s, TICK);
                            let filed = t.due.get(&at).is_some_and(|l| l.contains(id));
                            prop_assert!(filed, "session {} not in its list {}", id, at);
                        }
                    }
                    // dump: every bucket after the last pass holds exactly the sessions whose deadline it is.
                    for (time, ids) in t.dump().buckets {
                        let want: Vec<i64> =
                            m.0.iter().filter(|(_, e)| e.0 == time).map(|(id, _)| *id).collect();
                        prop_assert_eq!(ids, want);
                    }
                }
            }
        }
    }
}
