//! A token bucket that paces background work of the leader (session expiry, the container reaper) so that
//! a mass event becomes a steady trickle of log entries instead of a flood ahead of clients' requests.
//!
//! Time is injected (milliseconds of a monotonic clock), so the pacing is tested without sleeping.

/// Admits work at `rate` units per second. At most one pass's worth (`rate × period`, and at least one
/// unit) is saved up, so an idle stretch never turns into a burst. A unit of work bigger than the budget
/// still goes out whole when the budget is positive; the debt is paid by later passes.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_per_s: f64,
    cap: f64,
    budget: f64,
    refilled_ms: Option<u64>,
}

impl Pacer {
    /// `rate_per_s` units per second, for passes that run every `period_ms`.
    pub fn new(rate_per_s: f64, period_ms: u64) -> Self {
        let rate_per_s = rate_per_s.max(f64::MIN_POSITIVE);
        Pacer {
            rate_per_s,
            cap: (rate_per_s * period_ms as f64 / 1000.0).max(1.0),
            budget: 0.0,
            refilled_ms: None,
        }
    }

    /// Adds what accrued since the last refill. The first refill grants one pass's worth.
    pub fn refill(&mut self, now_ms: u64) {
        let accrued = match self.refilled_ms {
            None => self.cap,
            Some(last) => self.rate_per_s * now_ms.saturating_sub(last) as f64 / 1000.0,
        };
        self.refilled_ms = Some(now_ms);
        self.budget = (self.budget + accrued).min(self.cap);
    }

    /// May one more unit of work start now?
    pub fn admits(&self) -> bool {
        self.budget >= 1.0
    }

    /// Records work of `cost` units (the budget may go negative).
    pub fn spend(&mut self, cost: f64) {
        self.budget -= cost;
    }

    /// Nothing is waiting: any debt is forgiven (it was paid for by the wait of the work that caused it).
    pub fn idle(&mut self) {
        self.budget = self.budget.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs passes every `period` ms for `duration` ms with an endless backlog of `cost`-unit jobs;
    /// returns the jobs started per pass.
    fn run(p: &mut Pacer, period: u64, duration: u64, cost: f64) -> Vec<u32> {
        let mut out = Vec::new();
        let mut now = 0;
        while now <= duration {
            p.refill(now);
            let mut n = 0;
            while p.admits() {
                p.spend(cost);
                n += 1;
            }
            out.push(n);
            now += period;
        }
        out
    }

    #[test]
    fn a_backlog_is_drained_at_the_rate() {
        let mut p = Pacer::new(1000.0, 100);
        let per_pass = run(&mut p, 100, 10_000, 1.0);
        let total: u32 = per_pass.iter().sum();
        // 10 s at 1000/s, plus the first pass's grant.
        assert!((10_000..=10_100).contains(&total), "{total}");
        assert!(
            per_pass.iter().all(|&n| n <= 100),
            "never more than one pass's worth"
        );
    }

    #[test]
    fn big_jobs_go_out_whole_and_their_debt_slows_the_next_ones() {
        // 100 units/s; every job costs 1 + 499 ephemerals.
        let mut p = Pacer::new(100.0, 100);
        let per_pass = run(&mut p, 100, 20_000, 500.0);
        let total: u32 = per_pass.iter().sum();
        // 20 s at 100 units/s = 2000 units = 4 jobs (the first starts at once).
        assert!((4..=5).contains(&total), "{total}");
        assert!(per_pass.iter().all(|&n| n <= 1));
    }

    #[test]
    fn idle_time_does_not_become_a_burst() {
        let mut p = Pacer::new(50.0, 100);
        p.refill(0);
        p.refill(60_000);
        let mut n = 0;
        while p.admits() {
            p.spend(1.0);
            n += 1;
        }
        assert_eq!(n, 5, "one pass's worth (50/s × 0.1 s)");
    }

    #[test]
    fn a_slow_rate_still_admits_one_job_per_pass_when_due() {
        // The reaper at 1/min with 10 ms passes: one deletion, then nothing for a minute.
        let mut p = Pacer::new(1.0 / 60.0, 10);
        let per_pass = run(&mut p, 10, 125_000, 1.0);
        let total: u32 = per_pass.iter().sum();
        assert_eq!(total, 3, "at 0 s, ~60 s and ~120 s");
    }

    #[test]
    fn forgiving_debt_when_idle() {
        let mut p = Pacer::new(10.0, 100);
        p.refill(0);
        p.spend(1000.0);
        assert!(!p.admits());
        p.idle();
        p.refill(100);
        assert!(p.admits());
    }
}
