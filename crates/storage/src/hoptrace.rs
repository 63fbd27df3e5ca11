//! A developer's trace of the hand-offs a request makes between threads and tasks (reader, executor,
//! openraft's core, the log's thread, the state machine, the flushers): `hop("name")` records the time
//! at each. Compiled in only with the `hoptrace` feature (a no-op otherwise); with it, the first
//! 400,000 hops are written to the file named by `$OXK_HOPTRACE` (one "nanoseconds name" per line).
//! `cargo build --release -p oxkeeper --bin oxkeeper --features hoptrace`.

#[cfg(feature = "hoptrace")]
mod imp {
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    const CAPACITY: usize = 400_000;

    struct Trace {
        start: Instant,
        events: Mutex<Vec<(u64, &'static str)>>,
    }

    fn trace() -> &'static Trace {
        static TRACE: OnceLock<Trace> = OnceLock::new();
        TRACE.get_or_init(|| Trace {
            start: Instant::now(),
            events: Mutex::new(Vec::with_capacity(CAPACITY)),
        })
    }

    pub fn hop(name: &'static str) {
        let t = trace();
        let ns = t.start.elapsed().as_nanos() as u64;
        let mut events = t.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() >= CAPACITY {
            return;
        }
        events.push((ns, name));
        if events.len() == CAPACITY {
            if let Some(path) = std::env::var_os("OXK_HOPTRACE") {
                if let Ok(mut f) = std::fs::File::create(path) {
                    for (ns, name) in events.iter() {
                        let _ = writeln!(f, "{ns} {name}");
                    }
                }
            }
        }
    }
}

/// Records that a request reached `name` (with the `hoptrace` feature; nothing otherwise).
#[inline(always)]
pub fn hop(_name: &'static str) {
    #[cfg(feature = "hoptrace")]
    imp::hop(_name);
}
