//! For tests of this crate and of the crates above it that run a server in their own process.

use std::time::Duration;

/// How long a test may hold a server before `Watchdog` ends the process (`$OXK_TEST_WATCHDOG_SECS` sets
/// another): well above the longest test that holds one (the server crate's mass expiry load, ~2 min).
pub const WATCHDOG: Duration = Duration::from_secs(420);

/// Ends the test process if the server it guards is still held after `WATCHDOG`. A deadlock in the server
/// can also stall the test (its task queued behind a worker thread that never comes back), and then no
/// timeout inside the runtime fires: without this the run would hang until CI's limit. Session 27 saw it:
/// tests/group_commit.rs hung for minutes past its own 10 s deadlines when a change left the executor
/// behind a worker blocked in the test's held fdatasync. Dropping it disarms it.
pub struct Watchdog {
    _armed: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    pub fn arm() -> Watchdog {
        let limit = std::env::var("OXK_TEST_WATCHDOG_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(WATCHDOG, Duration::from_secs);
        let test = std::thread::current()
            .name()
            .unwrap_or("a test")
            .to_string();
        let (armed, disarmed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
                // Straight to the stream: `eprintln!` here would go to the test's captured output,
                // which nobody prints once the process exits.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "watchdog: {test} has held its server for {limit:?}: it is stuck (a deadlock?); \
                     ending the test process"
                );
                std::process::exit(101);
            }
        });
        Watchdog { _armed: armed }
    }
}
