//! Microbenchmark of the SessionTracker at a million sessions, with an injected clock: tracking a new
//! session, touch (same bucket, moving to the next bucket, moving to one of 15), an expiry pass with
//! nothing due, and the pass that expires all of them (per session). The touches sweep over every
//! session, so the figures include the cache misses of a large table.
//!
//! cargo bench -p oxkeeper-core --bench tracker
//!
//! Under `cargo test --all-targets` divan runs each benchmark once; the trackers are then built with
//! 10,000 sessions instead of 1,000,000 so the test run stays short.

use std::hint::black_box;

use divan::counter::ItemsCount;
use divan::Bencher;
use oxkeeper_core::tracker::SessionTracker;

const TICK_MS: u64 = 2000;
const TIMEOUT_MS: u64 = 30_000;

fn main() {
    divan::main();
}

/// 1,000,000 under `cargo bench` (divan gets `--bench`, and no `--test`), 10,000 when run as a test.
fn sessions() -> usize {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test") {
        1_000_000
    } else {
        10_000
    }
}

fn ids(n: usize) -> Vec<i64> {
    (0..n as i64).map(|i| (1 << 56) | i).collect()
}

/// A tracker holding `ids`, all tracked at time 0 (so all in one bucket).
fn tracker_with(ids: &[i64]) -> SessionTracker {
    let mut tracker = SessionTracker::new(TICK_MS);
    for &id in ids {
        tracker.track(id, TIMEOUT_MS, 0);
    }
    tracker
}

/// Tracking every session into an empty tracker (per session).
#[divan::bench(sample_count = 10, sample_size = 1)]
fn track_new_sessions(bencher: Bencher) {
    let ids = ids(sessions());
    bencher
        .counter(ItemsCount::new(ids.len()))
        .with_inputs(|| SessionTracker::new(TICK_MS))
        .bench_local_refs(|tracker| {
            for &id in &ids {
                tracker.track(id, TIMEOUT_MS, 0);
            }
        });
}

/// The common touch: the deadline stays in the same bucket, nothing to do. One touch per iteration,
/// cycling over all the sessions (1,000 samples of 1,000 touches: one sweep over a million sessions).
#[divan::bench(sample_count = 1000, sample_size = 1000)]
fn touch_same_bucket(bencher: Bencher) {
    let ids = ids(sessions());
    let mut tracker = tracker_with(&ids);
    let mut next = 0;
    bencher.bench_local(|| {
        let id = ids[next];
        next = if next + 1 == ids.len() { 0 } else { next + 1 };
        black_box(tracker.touch(black_box(id), 10))
    });
}

/// A touch that moves the session to the next bucket (one sweep over a million sessions). The clock
/// advances one tick each time the cursor wraps, so every touch moves its session: the tracker writes the
/// new deadline and moves one count between buckets (the session stays filed where it is until that list
/// comes due, see `SessionTracker`).
#[divan::bench(sample_count = 1000, sample_size = 1000)]
fn touch_moves_bucket(bencher: Bencher) {
    let ids = ids(sessions());
    let mut tracker = tracker_with(&ids);
    let mut next = 0;
    let mut now = TICK_MS + 10;
    bencher.bench_local(|| {
        let id = ids[next];
        next += 1;
        let moved = tracker.touch(black_box(id), now);
        if next == ids.len() {
            next = 0;
            now += TICK_MS;
        }
        black_box(moved)
    });
}

/// Buckets the sessions spread over: a 30 s timeout at a 2 s tick.
const SPREAD_BUCKETS: u64 = 15;

/// A touch that moves the session to one of 15 later buckets, the `i`th session to the `i % 15`th (one
/// sweep over a million sessions): how a busy server's touches land. The clock moves on 15 ticks each time
/// the cursor wraps, so every touch moves its session.
#[divan::bench(sample_count = 1000, sample_size = 1000)]
fn touch_spread_over_15_buckets(bencher: Bencher) {
    let ids = ids(sessions());
    let mut tracker = tracker_with(&ids);
    let mut next = 0;
    let mut base = 2 * TICK_MS;
    bencher.bench_local(|| {
        let id = ids[next];
        let moved = tracker.touch(
            black_box(id),
            base + TICK_MS * (next as u64 % SPREAD_BUCKETS),
        );
        next += 1;
        if next == ids.len() {
            next = 0;
            base += TICK_MS * SPREAD_BUCKETS;
        }
        black_box(moved)
    });
}

/// A tracker whose sessions are spread over 15 buckets, the earliest at `2 * TICK_MS + TIMEOUT_MS` or so.
fn spread_tracker(ids: &[i64]) -> SessionTracker {
    let mut tracker = tracker_with(ids);
    for (i, &id) in ids.iter().enumerate() {
        tracker.touch(id, TICK_MS * (2 + (i as u64 % SPREAD_BUCKETS)));
    }
    tracker
}

/// An expiry pass with nothing due, sessions spread over 15 buckets (per pass).
#[divan::bench]
fn expiry_pass_nothing_due(bencher: Bencher) {
    let ids = ids(sessions());
    let mut tracker = spread_tracker(&ids);
    bencher.bench_local(|| {
        let expired = tracker.expire(black_box(TICK_MS));
        debug_assert!(expired.is_empty());
        expired
    });
}

/// The expiry pass that expires every session, spread over 15 buckets (per session expired). The
/// tracker and the list are dropped outside the timing.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn expiry_pass_expires_all(bencher: Bencher) {
    let ids = ids(sessions());
    let n = ids.len();
    bencher
        .counter(ItemsCount::new(n))
        .with_inputs(|| spread_tracker(&ids))
        .bench_local_values(|mut tracker| {
            let expired = tracker.expire(u64::MAX / 2);
            assert_eq!(
                expired.len(),
                n,
                "every session expires once its deadline has passed"
            );
            (tracker, expired)
        });
}
