//! Spike: the write path without ZooKeeper semantics — our WAL (group commit) + openraft as a one-member
//! cluster + a state machine that does nothing. N concurrent writers, each waiting for its write to be
//! applied before sending the next. Two modes: `entry` (one openraft entry per write, client_write) and
//! `batch` (writers hand commands to one proposer task that packs whatever is queued into one entry, as the
//! executor does). Reports writes/s and process CPU per write.
//!
//! cargo run --release -p oxkeeper-server --example spike_raft -- [entry|batch] [writers] [seconds] [dir]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxkeeper_server::replication::{Payload, Replicator, ToExecutor};
use tokio::sync::{mpsc, oneshot};

fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_else(|| "batch".into());
    let writers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| format!("/tmp/oxk-spike-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Replicator::start_standalone(std::path::Path::new(&dir), 1)
        .await
        .expect("start");
    let rep = started.replicator.clone();
    let mut committed = started.committed;
    let applied = Arc::new(AtomicU64::new(0));
    // No-op state machine: count and ack. In batch mode each payload's first 8 bytes name how many commands
    // it carries; completions are matched by sequence number.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u64>();
    {
        let applied = applied.clone();
        tokio::spawn(async move {
            while let Some(m) = committed.recv().await {
                let ToExecutor::Committed(c) = m else {
                    continue; // snapshots are off here
                };
                for (_, p) in &c.entries {
                    let n = u64::from_be_bytes(p.0[..8].try_into().expect("8 bytes"));
                    applied.fetch_add(n, Ordering::Relaxed);
                    let _ = done_tx.send(n);
                }
                let _ = c.applied.send(());
            }
        });
    }
    let payload = |n: u64| {
        let mut v = n.to_be_bytes().to_vec();
        v.extend(std::iter::repeat_n(7u8, 100 * n as usize));
        Payload(v.into())
    };
    let stop = Instant::now() + Duration::from_secs(seconds);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let completed = Arc::new(AtomicU64::new(0));
    match mode.as_str() {
        "entry" => {
            // Completion through openraft's own client_write.
            tokio::spawn(async move { while done_rx.recv().await.is_some() {} });
            let mut tasks = Vec::new();
            for _ in 0..writers {
                let rep = rep.clone();
                let completed = completed.clone();
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < stop {
                        rep.raft().client_write(payload(1)).await.expect("write");
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        _ => {
            // One proposer packs whatever is queued into one entry; applies complete waiters in order.
            let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
            let waiters = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<
                oneshot::Sender<()>,
            >::new()));
            {
                let waiters = waiters.clone();
                tokio::spawn(async move {
                    while let Some(n) = done_rx.recv().await {
                        let mut w = waiters.lock().expect("lock");
                        for _ in 0..n {
                            if let Some(s) = w.pop_front() {
                                let _ = s.send(());
                            }
                        }
                    }
                });
            }
            {
                let rep = rep.clone();
                let waiters = waiters.clone();
                tokio::spawn(async move {
                    while let Some(first) = rx.recv().await {
                        let mut batch = vec![first];
                        while let Ok(more) = rx.try_recv() {
                            batch.push(more);
                        }
                        let n = batch.len() as u64;
                        waiters.lock().expect("lock").extend(batch);
                        rep.propose(payload(n)).await.expect("propose");
                    }
                });
            }
            let mut tasks = Vec::new();
            for _ in 0..writers {
                let tx = tx.clone();
                let completed = completed.clone();
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < stop {
                        let (s, r) = oneshot::channel();
                        tx.send(s).expect("proposer alive");
                        r.await.expect("applied");
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let ws = rep.wal_stats();
    println!(
        "wal: batches={} ({:.0}/s) entries={} submissions={}",
        ws.batches,
        ws.batches as f64 / secs,
        ws.entries,
        ws.submissions
    );
    let cpu = cpu_seconds() - cpu0;
    let n = completed.load(Ordering::Relaxed);
    println!(
        "mode={mode} writers={writers} writes={n} writes/s={:.0} cpu_us/write={:.1} cpu_util={:.2} cores",
        n as f64 / secs,
        cpu * 1e6 / n.max(1) as f64,
        cpu / secs
    );
    rep.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
