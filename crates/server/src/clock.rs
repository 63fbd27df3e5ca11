//! The member's session clock: monotonic milliseconds that do not advance while the member itself was
//! stalled, so that a stall of the server does not expire every session when it resumes.
//!
//! What counts as a stall: a gap of more than [`STALL_THRESHOLD_MS`] between two consecutive readings of
//! this clock. A dedicated thread (not a task: an overloaded async runtime must not look like a stall) reads
//! it every [`KEEPER_PERIOD_MS`], so such a gap means that no thread of the process ran for that long: the
//! process was stopped (SIGSTOP, a debugger), the machine or VM was frozen, or it was swapping so hard it
//! could not schedule a sleeping thread. Overload is not a stall: while the process runs, the keeper thread
//! keeps reading the clock and no time is discounted, so sessions whose pings the server could not read in
//! time expire as ZooKeeper's would.
//!
//! A stall of `gap` ms pushes every deadline back by `gap - KEEPER_PERIOD_MS` (the part of the gap the keeper
//! did not expect), in O(1): the session clock is the real monotonic clock minus the sum of all stalls.
//! Every reader — touches, the expiry pass, the keeper — goes through [`SessionClock::now_ms`], so whichever
//! runs first after the stall accounts for it before anything can be expired by it.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often the keeper thread reads the clock.
pub const KEEPER_PERIOD_MS: u64 = 50;
/// A gap between two readings longer than this is a stall of the member.
pub const STALL_THRESHOLD_MS: u64 = 500;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StallStats {
    /// Stalls seen since the member started.
    pub stalls: u64,
    /// Milliseconds discounted from the session clock, in total.
    pub stalled_ms: u64,
    /// The longest stall, in milliseconds.
    pub longest_ms: u64,
}

#[derive(Debug)]
struct Inner {
    /// The last real reading, in ms since `start`.
    last_real_ms: u64,
    stats: StallStats,
}

#[derive(Debug)]
pub struct SessionClock {
    start: Instant,
    inner: Mutex<Inner>,
}

impl Default for SessionClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionClock {
    pub fn new() -> Self {
        SessionClock {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                last_real_ms: 0,
                stats: StallStats::default(),
            }),
        }
    }

    /// Session-clock milliseconds: real monotonic time since start, minus every stall.
    pub fn now_ms(&self) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Read inside the lock, so readings are ordered and a gap is never negative.
        let real = self.start.elapsed().as_millis() as u64;
        observe(&mut g, real)
    }

    pub fn stall_stats(&self) -> StallStats {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).stats
    }

    /// Starts the keeper thread; it stops by itself once the clock is dropped.
    pub fn start_keeper(self: &Arc<Self>) {
        let weak: Weak<SessionClock> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("oxkeeper-clock".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(KEEPER_PERIOD_MS));
                match weak.upgrade() {
                    Some(clock) => {
                        clock.now_ms();
                    }
                    None => return,
                }
            });
        if let Err(e) = spawned {
            // Without the keeper, a busy runtime could be taken for a stall (deadlines then extend a little
            // late rather than early): worth a warning, not a failure.
            tracing::warn!("cannot start the session clock thread: {e}");
        }
    }
}

/// Accounts for the reading `real` and returns the session-clock time.
fn observe(g: &mut Inner, real: u64) -> u64 {
    let gap = real.saturating_sub(g.last_real_ms);
    if gap > STALL_THRESHOLD_MS {
        let stalled = gap - KEEPER_PERIOD_MS;
        g.stats.stalls += 1;
        g.stats.stalled_ms += stalled;
        g.stats.longest_ms = g.stats.longest_ms.max(stalled);
        tracing::warn!(
            stalled_ms = stalled,
            "this member was stalled (its clock thread did not run for {gap} ms): session deadlines are \
             extended by the stall"
        );
    }
    g.last_real_ms = g.last_real_ms.max(real);
    g.last_real_ms - g.stats.stalled_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner() -> Inner {
        Inner {
            last_real_ms: 0,
            stats: StallStats::default(),
        }
    }

    #[test]
    fn regular_readings_follow_real_time() {
        let mut g = inner();
        for real in (0..10_000).step_by(50) {
            assert_eq!(observe(&mut g, real), real);
        }
        // Up to the threshold, a late reading is not a stall.
        assert_eq!(
            observe(&mut g, 9_950 + STALL_THRESHOLD_MS),
            9_950 + STALL_THRESHOLD_MS
        );
        assert_eq!(g.stats, StallStats::default());
    }

    #[test]
    fn a_stall_is_discounted_once_and_later_time_runs_normally() {
        let mut g = inner();
        assert_eq!(
            observe(&mut g, 1_000),
            1_000 - 950,
            "the first reading, 1 s after start, is a stall"
        );
        let base = observe(&mut g, 1_050);
        assert_eq!(base, 100);
        // Stopped for 8 s: the clock moves on by only one keeper period.
        let after = observe(&mut g, 9_050);
        assert_eq!(after, base + KEEPER_PERIOD_MS);
        assert_eq!(observe(&mut g, 9_100), after + 50);
        assert_eq!(g.stats.stalls, 2);
        assert_eq!(g.stats.longest_ms, 8_000 - KEEPER_PERIOD_MS);
    }

    #[test]
    fn out_of_order_readings_never_go_back() {
        let mut g = inner();
        observe(&mut g, 100);
        let t = observe(&mut g, 150);
        assert_eq!(observe(&mut g, 120), t);
    }

    #[test]
    fn the_real_clock_with_its_keeper_sees_no_stall_when_nothing_stalls() {
        let clock = Arc::new(SessionClock::new());
        clock.start_keeper();
        let first = clock.now_ms();
        let deadline = Instant::now() + Duration::from_secs(5);
        while clock.now_ms() < first + 3 * KEEPER_PERIOD_MS {
            assert!(
                Instant::now() < deadline,
                "the session clock does not advance"
            );
            std::thread::yield_now();
        }
        assert_eq!(clock.stall_stats().stalls, 0);
    }
}
