//! The open-loop schedule: when each request is meant to be sent, independent of when replies come back.
//!
//! `R` requests per second in total over `N` sessions: session `i` sends its `k`-th request at
//! `(k·N + i) / R` seconds after the start, so the sessions interleave evenly and the schedule never drifts
//! (every time is computed from its index, never accumulated). Latency is measured from these intended
//! times, so a server stall shows up in the latency of every request it delayed (no coordinated omission).
//! Pure: no clock here.

use std::time::Duration;

/// How early a request may be sent: the timer's resolution (tokio's timer wheel ticks every millisecond).
/// A request sent early is measured from its actual send time, a late one from its intended time.
pub const SEND_AHEAD: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate_per_s: f64,
    sessions: u64,
    index: u64,
}

impl Schedule {
    /// The schedule of session `index` of `sessions`, for `rate_per_s` requests per second in total.
    pub fn new(rate_per_s: f64, sessions: usize, index: usize) -> Schedule {
        assert!(
            rate_per_s > 0.0 && rate_per_s.is_finite(),
            "rate must be positive"
        );
        assert!(index < sessions, "session index within the sessions");
        Schedule {
            rate_per_s,
            sessions: sessions as u64,
            index: index as u64,
        }
    }

    /// Offset from the start at which request `k` of this session is due.
    pub fn intended(&self, k: u64) -> Duration {
        let slot = k as f64 * self.sessions as f64 + self.index as f64;
        Duration::from_secs_f64(slot / self.rate_per_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_interleave_evenly_at_the_total_rate() {
        let rate = 1000.0;
        let sessions: Vec<Schedule> = (0..4).map(|i| Schedule::new(rate, 4, i)).collect();
        let mut all: Vec<Duration> = sessions
            .iter()
            .flat_map(|s| (0..250).map(|k| s.intended(k)))
            .collect();
        all.sort();
        for (n, t) in all.iter().enumerate() {
            let want = Duration::from_micros(n as u64 * 1000);
            let diff = t.abs_diff(want);
            assert!(
                diff < Duration::from_nanos(10),
                "slot {n}: {t:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn the_schedule_does_not_drift_over_a_long_run() {
        let s = Schedule::new(33_333.0, 7, 3);
        let k = 10_000_000;
        let expected = (k as f64 * 7.0 + 3.0) / 33_333.0;
        assert!((s.intended(k).as_secs_f64() - expected).abs() < 1e-6);
    }
}
