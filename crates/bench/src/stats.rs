//! Latency recording: HDR histograms in microseconds (3 significant digits), a per-second timeline, and the
//! error table.
//!
//! Session tasks record into a [`Local`] buffer that is flushed into the shared [`Latency`] once per second
//! (or every few thousand samples), so the hot path takes no lock and memory does not grow with sessions.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency tracked exactly: one hour, in microseconds (larger values are clamped to it).
const MAX_TRACKED_US: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;
/// The per-second histograms need less precision; they are many.
const TIMELINE_SIGNIFICANT_DIGITS: u8 = 2;
/// Samples a [`Local`] buffers before it takes the lock.
const LOCAL_BUFFER_SAMPLES: usize = 1024;

pub fn new_histogram(digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, digits).expect("valid histogram bounds")
}

/// Microseconds, at least 1 (the histogram's lowest value).
pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

struct Inner {
    total: Histogram<u64>,
    /// Index = second since the start of the measured window.
    timeline: Vec<Histogram<u64>>,
}

/// One latency figure of a workload, shared by every task that records it.
pub struct Latency {
    pub name: String,
    start: Instant,
    with_timeline: bool,
    inner: Mutex<Inner>,
    /// Completed samples (for the progress bar; exact once every [`Local`] is flushed).
    pub completed: AtomicU64,
}

impl Latency {
    pub fn new(name: &str, start: Instant, with_timeline: bool) -> Latency {
        Latency {
            name: name.to_string(),
            start,
            with_timeline,
            inner: Mutex::new(Inner {
                total: new_histogram(SIGNIFICANT_DIGITS),
                timeline: Vec::new(),
            }),
            completed: AtomicU64::new(0),
        }
    }

    pub fn local(&self) -> Local<'_> {
        Local {
            shared: self,
            second: 0,
            buf: Vec::with_capacity(LOCAL_BUFFER_SAMPLES),
        }
    }

    /// Records one sample directly (for low-rate figures).
    pub fn record(&self, at: Instant, latency: Duration) {
        self.record_many(self.second_of(at), &[micros(latency)]);
    }

    fn second_of(&self, at: Instant) -> usize {
        at.saturating_duration_since(self.start).as_secs() as usize
    }

    fn record_many(&self, second: usize, samples_us: &[u64]) {
        if samples_us.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().expect("no panic while holding the lock");
        for &v in samples_us {
            inner.total.saturating_record(v);
        }
        if self.with_timeline {
            while inner.timeline.len() <= second {
                inner
                    .timeline
                    .push(new_histogram(TIMELINE_SIGNIFICANT_DIGITS));
            }
            for &v in samples_us {
                inner.timeline[second].saturating_record(v);
            }
        }
        drop(inner);
        self.completed
            .fetch_add(samples_us.len() as u64, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Summary {
        let inner = self.inner.lock().expect("no panic while holding the lock");
        Summary::of(&self.name, &inner.total)
    }

    pub fn timeline(&self) -> Vec<SecondRow> {
        let inner = self.inner.lock().expect("no panic while holding the lock");
        inner
            .timeline
            .iter()
            .enumerate()
            .map(|(second, h)| SecondRow::of(second, h))
            .collect()
    }
}

/// A task's buffer in front of a shared [`Latency`]. Flushed on drop.
pub struct Local<'a> {
    shared: &'a Latency,
    second: usize,
    buf: Vec<u64>,
}

impl Local<'_> {
    /// Records a sample completed at `at`.
    pub fn record(&mut self, at: Instant, latency: Duration) {
        let second = self.shared.second_of(at);
        if second != self.second || self.buf.len() >= LOCAL_BUFFER_SAMPLES {
            self.flush();
            self.second = second;
        }
        self.buf.push(micros(latency));
    }

    pub fn flush(&mut self) {
        self.shared.record_many(self.second, &self.buf);
        self.buf.clear();
    }
}

impl Drop for Local<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub name: String,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Summary {
    pub fn of(name: &str, h: &Histogram<u64>) -> Summary {
        let empty = h.is_empty();
        let q = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        Summary {
            name: name.to_string(),
            count: h.len(),
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if empty { 0 } else { h.max() },
            mean_us: if empty { 0.0 } else { h.mean() },
        }
    }
}

/// One second of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondRow {
    pub second: usize,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl SecondRow {
    fn of(second: usize, h: &Histogram<u64>) -> SecondRow {
        let s = Summary::of("", h);
        SecondRow {
            second,
            count: s.count,
            p50_us: s.p50_us,
            p99_us: s.p99_us,
            max_us: s.max_us,
        }
    }
}

/// Error replies and failures, by kind; shared by every task of a workload.
#[derive(Default)]
pub struct Errors {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Errors {
    pub fn add(&self, key: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut counts = self.counts.lock().expect("no panic while holding the lock");
        *counts.entry(key.to_string()).or_insert(0) += n;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .expect("no panic while holding the lock")
            .clone()
    }
}

/// A duration in microseconds as people read it: `850µs`, `12.3ms`, `4.06s`.
pub fn format_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_known_distribution() {
        let mut h = new_histogram(SIGNIFICANT_DIGITS);
        for v in 1..=1000 {
            h.record(v).expect("in range");
        }
        let s = Summary::of("get", &h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 0.5);
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = Summary::of("x", &new_histogram(3));
        assert_eq!((s.count, s.p99_us, s.max_us), (0, 0, 0));
    }

    #[test]
    fn local_buffers_land_in_their_second() {
        let start = Instant::now();
        let lat = Latency::new("get", start, true);
        {
            let mut local = lat.local();
            local.record(start, Duration::from_micros(100));
            local.record(
                start + Duration::from_millis(1500),
                Duration::from_micros(300),
            );
            local.record(
                start + Duration::from_millis(1600),
                Duration::from_micros(500),
            );
        }
        let tl = lat.timeline();
        assert_eq!(tl.len(), 2);
        assert_eq!((tl[0].count, tl[0].max_us), (1, 100));
        assert_eq!(tl[1].count, 2);
        assert_eq!(lat.summary().count, 3);
        assert_eq!(lat.completed.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let lat = Latency::new("x", Instant::now(), false);
        lat.record(Instant::now(), Duration::from_secs(100_000));
        assert_eq!(lat.summary().count, 1);
    }

    #[test]
    fn durations_are_formatted_with_their_unit() {
        assert_eq!(format_us(850), "850µs");
        assert_eq!(format_us(1_234), "1.23ms");
        assert_eq!(format_us(12_345), "12.3ms");
        assert_eq!(format_us(4_060_000), "4.06s");
    }
}
