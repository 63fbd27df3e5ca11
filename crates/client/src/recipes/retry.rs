//! Retrying calls that failed without an answer (connection loss, throttling). The client queues calls made
//! while it reconnects, so a retry waits for the new connection by itself; the session's end bounds it.

use std::future::Future;
use std::time::Duration;

use crate::{Error, KeeperState, Result};

/// The first pause between two attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Exponential backoff with jitter, from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    pub async fn wait(&mut self) {
        let jitter_ms = rand::random::<u64>() % (self.next.as_millis() as u64 / 2 + 1);
        tokio::time::sleep(self.next + Duration::from_millis(jitter_ms)).await;
        self.next = (self.next * 2).min(BACKOFF_MAX);
    }
}

/// Runs `op` until it returns something other than a retryable error. Only for calls that are idempotent
/// (reads, deletes of our own nodes): a create must find out whether its first attempt happened.
pub(crate) async fn retry<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new();
    loop {
        match op().await {
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "recipe call failed; retrying");
                backoff.wait().await
            }
            r => return r,
        }
    }
}

/// The error a watch that ended with the session (`EventType::None`) stands for.
pub(crate) fn session_end_error(state: KeeperState) -> Error {
    match state {
        KeeperState::Expired => Error::SessionExpired,
        KeeperState::AuthFailed => Error::AuthFailed,
        _ => Error::Closed,
    }
}

/// Whether `e` means the session is over for good (every later call fails the same way).
pub(crate) fn is_terminal(e: &Error) -> bool {
    matches!(e, Error::SessionExpired | Error::Closed | Error::AuthFailed)
}
