//! The progress bar on stderr (indicatif), fed from a completion counter by a ticker task. Hidden when
//! stderr is not a terminal or with `--quiet`, so scripted runs print only their report.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TICK: Duration = Duration::from_millis(200);

pub struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

/// What the bar measures its length in.
pub enum Goal {
    /// Completed units out of a total.
    Count(u64),
    /// Elapsed time out of a duration (the counter still shows as a rate).
    Time(Duration),
}

impl Progress {
    /// A bar labelled `what`, advancing with `counter` (units completed). Must run inside a runtime.
    pub fn start(quiet: bool, what: &str, goal: Goal, counter: Arc<AtomicU64>) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        let (len, template) = match goal {
            Goal::Count(n) => (n, "{prefix} {bar:40} {pos}/{len} {msg} [{elapsed}]"),
            Goal::Time(d) => (
                d.as_millis() as u64,
                "{prefix} {bar:40} {msg} [{elapsed}/{duration}]",
            ),
        };
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
        bar.set_prefix(what.to_string());
        let by_time = matches!(goal, Goal::Time(_));
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (start, 0u64);
            loop {
                tokio::time::sleep(TICK).await;
                let now = Instant::now();
                let done = counter.load(Ordering::Relaxed);
                let rate =
                    (done - last.1.min(done)) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, done);
                b.set_message(format!("{rate:.0}/s"));
                b.set_position(if by_time {
                    now.duration_since(start).as_millis() as u64
                } else {
                    done
                });
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }

    pub fn finish(self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
