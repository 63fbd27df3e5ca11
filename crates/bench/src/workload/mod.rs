//! The workloads (one file each) and what they share: a unique root per run, connecting many sessions,
//! keeping an idle control session alive, and deleting what a run created.

pub mod expiry;
pub mod idle;
pub mod ops;
pub mod sessions;
pub mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxkeeper_proto::{perms, Acl, CreateMode, CreateRequest, Id, OpCode, PathVersion, Request};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::BenchError;
use crate::session::Session;

/// Requests in flight while preparing or deleting nodes outside the measured window.
pub const PREPARE_DEPTH: usize = 512;

/// A root no other run uses: `/oxk-bench-<pid>-<time>`.
pub fn unique_root() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/oxk-bench-{}-{t:x}", std::process::id())
}

pub fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

pub fn create(path: String, data: &[u8], mode: CreateMode) -> Request {
    Request::Create {
        op: OpCode::Create,
        req: CreateRequest {
            path,
            data: Some(data.to_vec()),
            acl: open_acl(),
            flags: mode.as_i32(),
            ttl: -1,
        },
    }
}

pub fn delete(path: String) -> Request {
    Request::Delete(PathVersion { path, version: -1 })
}

/// Connects `n` sessions with at most `concurrency` handshakes at a time; `progress` counts them. Sessions
/// are returned in no particular order; the first failure stops the lot.
pub async fn connect_many(
    addr: &str,
    n: usize,
    timeout_ms: u32,
    concurrency: usize,
    progress: Arc<AtomicU64>,
) -> Result<Vec<Session>, BenchError> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permits = permits.clone();
        let addr = addr.to_string();
        let progress = progress.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let s = Session::connect(&addr, timeout_ms).await;
            progress.fetch_add(1, Ordering::Relaxed);
            s
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(s)) => out.push(s),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(BenchError::Usage(format!("connect task failed: {e}"))),
        }
    }
    Ok(out)
}

/// Closes every session in parallel; returns how many closes failed.
pub async fn close_all(sessions: Vec<Session>) -> u64 {
    let mut tasks = JoinSet::new();
    for s in sessions {
        tasks.spawn(s.close());
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            failed += 1;
        }
    }
    failed
}

/// Deletes `paths` in order, pipelined. NoNode is fine (the node may never have been created); returns the
/// number of other failures.
pub async fn delete_paths(s: &mut Session, paths: Vec<String>) -> Result<u64, BenchError> {
    let errs = s
        .pipeline(paths.into_iter().map(delete), PREPARE_DEPTH)
        .await?;
    let no_node = oxkeeper_proto::ErrorCode::NoNode.as_i32();
    Ok(errs.iter().filter(|&&e| e != 0 && e != no_node).count() as u64)
}

/// Awaits `f` while keeping `s` alive with a ping every third of its timeout (a control session sits idle
/// during a measured window). Replies it reads meanwhile are discarded.
pub async fn hold<T>(s: &mut Session, f: impl Future<Output = T>) -> T {
    tokio::pin!(f);
    let period = Duration::from_millis(u64::from(s.timeout_ms / 3).max(10));
    let mut alive = true;
    loop {
        enum Ev {
            Ping,
            Read(Result<(), BenchError>),
        }
        let ev = tokio::select! {
            v = &mut f => return v,
            _ = tokio::time::sleep(period), if alive => Ev::Ping,
            r = s.fill(), if alive => Ev::Read(r),
        };
        match ev {
            Ev::Ping => alive = s.ping().await.is_ok(),
            Ev::Read(Ok(())) => alive = s.drain_replies(|_, _| Ok(())).is_ok(),
            Ev::Read(Err(_)) => alive = false,
        }
    }
}

/// Splits `total` into `parts` nearly equal shares (the first ones get the remainder).
pub fn share(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts.max(1) as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_total() {
        for (total, parts) in [(10, 3), (0, 4), (5, 8), (1000, 32)] {
            let sum: u64 = (0..parts).map(|i| share(total, parts, i)).sum();
            assert_eq!(sum, total, "{total} over {parts}");
        }
        assert_eq!(share(10, 3, 0), 4);
        assert_eq!(share(10, 3, 2), 3);
    }

    #[test]
    fn roots_are_unique() {
        assert_ne!(unique_root(), unique_root());
    }
}
