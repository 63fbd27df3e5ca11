//! Starting a member: open the log, recover the state, bootstrap a new cluster, then accept clients.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxkeeper_core::state::ApplySettings;
use oxkeeper_storage::{Disk, RealDisk};
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::apply_thread::ApplyThread;
use crate::config::Config;
use crate::executor::{Executor, Shared};
use crate::replication::{LogOptions, Replicator};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Replication(#[from] crate::replication::ReplicationError),
    #[error("cannot start the apply thread: {0}")]
    Thread(std::io::Error),
    #[error("recovery: {0}")]
    Recovery(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The member can no longer serve (`Shared::failed`): it stops, so that clients move to another.
    #[error("this member can no longer serve: {0}")]
    Failed(Arc<str>),
}

/// A member that is serving clients.
pub struct Running {
    pub local_addr: SocketAddr,
    pub shared: Arc<Shared>,
}

/// Starts a standalone member and serves until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let (running, accept) = start(config).await?;
    tracing::info!(addr = %running.local_addr, "serving clients");
    // The accept loop runs as a task on a runtime worker, not on the thread that blocks on `run` (outside
    // the workers): there, every accept was a wake-up of that thread by the worker driving I/O, and every
    // connection's task a wake-up of a worker by it (two thread switches per connection).
    let accept = tokio::spawn(accept);
    tokio::select! {
        _ = accept => {}
        reason = running.shared.failed() => {
            // Fail-stop: acknowledged writes are durable, and recovery at the next start cuts off whatever
            // was not synced (none of it acknowledged); clients reconnect elsewhere (or here, restarted).
            tracing::error!("this member exits: {reason}");
            return Err(ServerError::Failed(reason));
        }
        _ = shutdown => tracing::info!("shutting down (sessions stay open: clients reconnect within their timeout)"),
    }
    Ok(())
}

/// Lets go of the connections parked on the apply thread when dropped (after it).
struct LetGo(Arc<Shared>);

impl Drop for LetGo {
    fn drop(&mut self) {
        self.0.homes.close();
    }
}

/// How often `watch_member` looks at the log's and openraft's health.
const MEMBER_CHECK: Duration = Duration::from_millis(200);

/// Completes when this member can no longer serve, with the reason: its executor ended (it runs for the
/// member's life; a panic ends it, and so does openraft's state machine going away), its log failed, or
/// openraft's core stopped. Nothing restarts any of them, and a member without them would go on accepting
/// connections and reads while every write and handshake waited forever: it must stop instead.
async fn watch_member(executor: tokio::task::JoinHandle<()>, shared: &Shared) -> String {
    let mut check = tokio::time::interval(MEMBER_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(executor);
    loop {
        tokio::select! {
            ended = &mut executor => {
                // The replication core's own reason, if it stopped first, says more.
                if let Some(reason) = shared.replicator.stopped() {
                    return reason;
                }
                return match ended {
                    Ok(()) => "the executor stopped".to_string(),
                    Err(e) if e.is_panic() => {
                        format!("the executor panicked: {}", panic_message(e.into_panic()))
                    }
                    Err(e) => format!("the executor ended: {e}"),
                };
            }
            _ = check.tick() => {
                if let Some(reason) = shared.replicator.stopped() {
                    return reason;
                }
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |s| s.to_string()),
    }
}

/// Recovers and binds; returns the running member and its accept loop.
pub async fn start(config: Config) -> Result<(Running, impl Future<Output = ()>), ServerError> {
    start_on(config, RealDisk).await
}

/// `start`, with the log's WAL on `disk`: tests wrap `RealDisk` to stall its fdatasync.
pub async fn start_on<D: Disk>(
    config: Config,
    disk: D,
) -> Result<(Running, impl Future<Output = ()>), ServerError> {
    let opts = LogOptions {
        log_dir: config.data_log_dir.clone(),
        snapshot_dir: config.data_dir.join("snapshots"),
        snap_count: Some(config.snap_count),
        snap_retain: config.snap_retain_count,
        force_sync: config.force_sync,
        lazy_sync_after: Duration::from_millis(config.lazy_sync_ms),
        direct_writes: config.log_direct_writes,
        prepare_segments: config.log_prepare_segments,
    };
    // openraft's tasks are spawned where `Raft::new` runs: on the apply thread, with the executor below.
    // The backlog writers it starts go to this runtime's workers (`home::spawn_on_workers`).
    let workers = tokio::runtime::Handle::current();
    let apply = ApplyThread::start(move || crate::home::set_workers_here(workers))
        .map_err(ServerError::Thread)?;
    let started = apply
        .handle()
        .spawn(async move { Replicator::start_standalone_on(disk, &opts, 1).await })
        .await
        .map_err(|e| ServerError::Recovery(format!("starting replication: {e}")))??;
    let (exec_tx, exec_rx) = mpsc::unbounded_channel();
    let settings = ApplySettings {
        extended_types_enabled: config.extended_types_enabled,
    };
    let shared = Arc::new(Shared::new(config, exec_tx, started.replicator.clone()));
    let mut executor = Executor::new(shared.clone(), started.replicator.clone());
    let mut committed = started.committed;
    // The snapshot's bytes go as soon as the state is built from them.
    if let Some((index, state)) = started.snapshot {
        executor
            .restore(index, &state)
            .map_err(ServerError::Recovery)?;
        tracing::info!(index, "state restored from the newest snapshot");
    }
    executor
        .recover(&mut committed, started.recovered_index)
        .await
        .map_err(ServerError::Recovery)?;
    if !executor.state().is_bootstrapped() {
        let mut secret = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        executor
            .bootstrap(&mut committed, secret, settings.clone())
            .await
            .map_err(ServerError::Recovery)?;
    }
    if *executor.state().settings() != settings {
        // Apply settings live in the replicated state, so members cannot diverge; a changed zoo.cfg reaches
        // it through the log, as one command.
        tracing::info!(
            ?settings,
            "zoo.cfg changes the apply settings: replicating them"
        );
        executor
            .update_settings(&mut committed, settings)
            .await
            .map_err(ServerError::Recovery)?;
    }
    executor.track_recovered_sessions();
    let addr = shared.config.client_addr();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let executor = apply.handle().spawn(executor.run(exec_rx, committed));
    // The readers of clients that write live on the apply thread from now on, and a watchdog moves them
    // off it while it is held in an fdatasync (`crate::home`).
    shared.homes.set_apply(apply.handle().clone());
    crate::home::start_watchdog(Arc::clone(apply.mark()), Arc::downgrade(&shared))
        .map_err(ServerError::Thread)?;
    // The apply thread lives as long as this runtime: dropping the task (the runtime shutting down) stops it.
    // Meanwhile the task watches the member's health.
    let watched = shared.clone();
    tokio::spawn(async move {
        // Dropped in reverse order: the apply thread stops first, then the connections parked on it are
        // let go (`Homes::close`).
        let _let_go = LetGo(watched.clone());
        let _apply = apply;
        let reason = watch_member(executor, &watched).await;
        watched.fail(reason);
        std::future::pending::<()>().await
    });
    let accept = accept_loop(listener, shared.clone());
    Ok((Running { local_addr, shared }, accept))
}

/// The connections of each client address (`maxClientCnxns`): a record per address that its connections
/// share, found here while any holds it.
type PerIp = Mutex<HashMap<IpAddr, std::sync::Weak<IpCount>>>;

/// One address's connections: as many as hold it (its strong count).
struct IpCount {
    ip: IpAddr,
    table: Arc<PerIp>,
}

impl Drop for IpCount {
    /// The address's last connection is gone: its entry goes too, unless a new record has replaced it.
    fn drop(&mut self) {
        let mut m = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&self.ip).is_some_and(|w| w.strong_count() == 0) {
            m.remove(&self.ip);
        }
    }
}

/// One connection's place in the per-address count (`maxClientCnxns`), given back when dropped. A pointer
/// to its address's shared record: every idle connection holds one, 8 bytes instead of an address and a
/// pointer (32).
pub struct IpSlot(#[allow(dead_code)] Arc<IpCount>);

/// A place for a new connection from `ip`, or `None` if it already has `max` (0: no limit).
fn take_ip_slot(per_ip: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<IpSlot> {
    let count = {
        let mut m = per_ip.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(&ip).and_then(std::sync::Weak::upgrade) {
            Some(count) => count,
            None => {
                let count = Arc::new(IpCount {
                    ip,
                    table: Arc::clone(per_ip),
                });
                m.insert(ip, Arc::downgrade(&count));
                count
            }
        }
    };
    // Dropped (if refused) after the lock: the last reference's drop takes it.
    let others = Arc::strong_count(&count) - 1;
    (max == 0 || others < max).then_some(IpSlot(count))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let per_ip: Arc<PerIp> = Arc::default();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                shared
                    .stats
                    .count(crate::stats::Counter::ConnectionRejected);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let max = shared.config.max_client_cnxns;
        let Some(slot) = take_ip_slot(&per_ip, remote.ip(), max) else {
            tracing::warn!(%remote, max, "too many connections from this address (maxClientCnxns): closing");
            shared
                .stats
                .count(crate::stats::Counter::ConnectionRejected);
            continue;
        };
        let shared = shared.clone();
        let conn = shared.next_conn_id();
        // Read first here, on the workers: a new connection's task started on the apply thread while that
        // thread is held in an fdatasync would wait for the disk (a four-letter word, a handshake), and only
        // parked connections are moved off it (`crate::home`). After its handshake it parks there.
        tokio::spawn(crate::connection::serve(stream, conn, remote, shared, slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_max_slots_and_its_entry_goes_with_the_last() {
        let per_ip: Arc<PerIp> = Arc::default();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let first = take_ip_slot(&per_ip, a, 2).expect("a first slot");
        let second = take_ip_slot(&per_ip, a, 2).expect("a second slot");
        assert!(take_ip_slot(&per_ip, a, 2).is_none(), "a third is refused");
        let other = take_ip_slot(&per_ip, b, 2).expect("another address counts apart");
        drop(first);
        let third = take_ip_slot(&per_ip, a, 2).expect("a slot given back is taken again");
        assert!(take_ip_slot(&per_ip, a, 0).is_some(), "0: no limit");
        drop((second, third, other));
        assert!(
            per_ip.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
            "addresses without connections leave the table"
        );
    }
}
