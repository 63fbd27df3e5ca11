//! Microbenchmark of the SessionTracker at a million sessions: touch (same bucket, and moving to a later
//! bucket), an expiry pass with nothing due, and the pass that expires all of them.
//!
//! cargo run --release -p oxkeeper-core --example tracker_bench -- [sessions, default 1000000]
//!
//! A plain timing loop for now; issue 6 moves it under divan/criterion in `benches/`.

use std::hint::black_box;
use std::time::Instant;

use oxkeeper_core::tracker::SessionTracker;

const TICK_MS: u64 = 2000;
const TIMEOUT_MS: u64 = 30_000;

fn per_op(label: &str, n: usize, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{label:<44} {ns:>10.1} ns/op   ({n} ops)");
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let ids: Vec<i64> = (0..n as i64).map(|i| (1 << 56) | i).collect();
    let mut tracker = SessionTracker::new(TICK_MS);
    per_op("track (new session)", n, || {
        for &id in &ids {
            tracker.track(id, TIMEOUT_MS, 0);
        }
    });
    per_op("touch, same bucket (nothing to do)", n, || {
        for &id in &ids {
            black_box(tracker.touch(id, 10));
        }
    });
    per_op("touch, moves to the next bucket", n, || {
        for &id in &ids {
            black_box(tracker.touch(id, TICK_MS + 10));
        }
    });
    let mut now = TICK_MS + 10;
    per_op("touch, spread over 15 buckets", n, || {
        for (i, &id) in ids.iter().enumerate() {
            now = TICK_MS * (2 + (i as u64 % 15));
            black_box(tracker.touch(id, now));
        }
    });
    let passes = 10_000;
    per_op("expiry pass, nothing due", passes, || {
        for _ in 0..passes {
            black_box(tracker.expire(TICK_MS));
        }
    });
    let t = Instant::now();
    let expired = tracker.expire(u64::MAX / 2);
    let took = t.elapsed();
    println!(
        "{:<44} {:>10.1} ns/session ({} sessions in {:.1} ms)",
        "expiry pass that expires every session",
        took.as_nanos() as f64 / expired.len().max(1) as f64,
        expired.len(),
        took.as_secs_f64() * 1e3
    );
    assert_eq!(
        expired.len(),
        n,
        "every session expires once its deadline has passed"
    );
}
