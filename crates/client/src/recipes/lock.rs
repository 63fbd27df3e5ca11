//! A distributed mutex: ZooKeeper's lock recipe, as Curator's `InterProcessMutex` does it.
//!
//! Algorithm: each contender creates a protected ephemeral-sequential node `<dir>/_c_<guid>-lock-<seq>` and
//! lists the directory. The lowest sequence number holds the lock. Any other contender watches only the
//! node just below its own (`get_data_w`, which leaves no watch behind when that node is already gone),
//! and re-lists when it changes or goes: one waiter wakes per release, never the whole herd. The GUID
//! makes a create retried after connection loss find the node its lost reply had created.
//!
//! Guarantees and failures: while the session lives, its node exists and nobody else holds the lock, even
//! across connection loss (calls wait for the reconnection). When the connection drops, the holder cannot
//! know whether the server is about to expire its session, so [`LockGuard::lost`] resolves at once with
//! [`Ownership::Suspended`] (stop touching the protected resource; it is [`Ownership::Held`] again if the
//! session survives), and with [`Ownership::Lost`] once the session expired or the node was deleted. The
//! client gives a silent connection up after 2/3 of the session timeout, before the server may expire the
//! session (after the whole timeout): a holder that stops at `Suspended` has stopped before anyone else
//! can get the lock.
//! A waiter whose session ends gets `Err(SessionExpired)` (or `Closed`). An acquire that fails, times out
//! or is cancelled deletes its node. Not reentrant.

use std::time::Duration;

use tokio::time::Instant;

use crate::recipes::protected::{delete_if_exists, node_name, sort_by_sequence, ProtectedNode};
use crate::recipes::retry::{is_terminal, retry, session_end_error, Backoff};
use crate::{Acl, Client, Error, EventType, Result, State};

/// What precedes the sequence number in a lock node's name (Curator's).
const LOCK_NAME: &str = "lock-";

/// A lock on a directory; each [`Lock::acquire`] is one contender. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lock {
    client: Client,
    dir: String,
    data: Vec<u8>,
    acl: Vec<Acl>,
}

/// Whether a [`LockGuard`] still holds its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ownership {
    /// Connected, and the node is ours: nobody else holds the lock.
    Held,
    /// The connection is down (or read-only): the session may be expiring on the server. Stop using the
    /// protected resource until it is `Held` again.
    Suspended,
    /// The session ended or the node was deleted: the lock is gone for good.
    Lost,
}

fn ownership_in(state: State) -> Ownership {
    match state {
        State::Connected => Ownership::Held,
        s if s.is_terminal() => Ownership::Lost,
        _ => Ownership::Suspended,
    }
}

impl Lock {
    /// A lock whose nodes live in `dir` (created, as containers, on first use).
    pub fn new(client: &Client, dir: &str) -> Lock {
        Lock {
            client: client.clone(),
            dir: dir.to_string(),
            data: Vec::new(),
            acl: crate::acl::open_unsafe(),
        }
    }

    /// The data stored in each contender's node (e.g. who it is).
    pub fn with_data(mut self, data: &[u8]) -> Lock {
        self.data = data.to_vec();
        self
    }

    /// The ACL of each contender's node (open by default).
    pub fn with_acl(mut self, acl: &[Acl]) -> Lock {
        self.acl = acl.to_vec();
        self
    }

    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Waits for the lock as long as it takes. Fails only when the session ends or the server refuses.
    pub async fn acquire(&self) -> Result<LockGuard> {
        match self.acquire_until(None).await? {
            Some(guard) => Ok(guard),
            None => unreachable!("an acquire without a deadline does not time out"),
        }
    }

    /// Waits at most `wait` for the holders before us to go; `None` if they did not (our node is then
    /// deleted). The calls themselves are not cut short: they end with the session at the latest.
    pub async fn acquire_timeout(&self, wait: Duration) -> Result<Option<LockGuard>> {
        self.acquire_until(Some(Instant::now() + wait)).await
    }

    /// Takes the lock only if nobody holds it or waits for it.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        self.acquire_timeout(Duration::ZERO).await
    }

    async fn acquire_until(&self, deadline: Option<Instant>) -> Result<Option<LockGuard>> {
        let node = ProtectedNode::new(&self.dir, LOCK_NAME);
        let mut attempt = Attempt {
            client: self.client.clone(),
            node: node.clone(),
            armed: true,
        };
        let result = self.contend(&node, deadline).await;
        if let Ok(Some(path)) = result {
            attempt.armed = false;
            return Ok(Some(LockGuard {
                client: self.client.clone(),
                path,
                released: false,
            }));
        }
        // Still armed while deleting: if this is cancelled too, the drop deletes again (idempotent).
        if let Err(e) = node.delete_ours(&self.client).await {
            tracing::debug!(dir = %self.dir, error = %e, "could not delete an abandoned lock node");
        }
        attempt.armed = false;
        result.map(|_| None)
    }

    /// Creates our node and waits until it is the lowest: `Some(path)`, or `None` at the deadline.
    async fn contend(
        &self,
        node: &ProtectedNode,
        deadline: Option<Instant>,
    ) -> Result<Option<String>> {
        let client = &self.client;
        let ours = node.create(client, &self.data, &self.acl).await?;
        let our_name = node_name(&ours).to_string();
        loop {
            let children = retry(|| client.get_children(&self.dir)).await?;
            let sorted = sort_by_sequence(children, LOCK_NAME);
            let Some(i) = sorted.iter().position(|c| *c == our_name) else {
                // Only someone else deleting it, or the session's end (then every call fails), does this.
                tracing::warn!(path = %ours, "our lock node disappeared while waiting");
                return Err(Error::NoNode);
            };
            if i == 0 {
                return Ok(Some(ours));
            }
            let predecessor = crate::recipes::protected::child_path(&self.dir, &sorted[i - 1]);
            let watch = match retry(|| client.get_data_w(&predecessor)).await {
                Ok((_, _, watch)) => watch,
                Err(Error::NoNode) => continue,
                Err(e) => return Err(e),
            };
            let event = match deadline {
                None => watch.await,
                Some(d) => match tokio::time::timeout_at(d, watch).await {
                    Ok(event) => event,
                    Err(_) => return Ok(None),
                },
            };
            if event.event_type == EventType::None {
                return Err(session_end_error(event.state));
            }
        }
    }
}

/// An acquire in progress: if it is dropped before it finishes (its future was cancelled), a spawned task
/// deletes whatever node it created.
struct Attempt {
    client: Client,
    node: ProtectedNode,
    armed: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, node) = (self.client.clone(), self.node.clone());
        runtime.spawn(async move {
            if let Err(e) = node.delete_ours(&client).await {
                tracing::debug!(dir = %node.dir(), error = %e, "could not delete a cancelled lock node");
            }
        });
    }
}

/// A held lock. [`LockGuard::release`] gives it back; dropping the guard releases it in a spawned task.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    path: String,
    released: bool,
}

impl LockGuard {
    /// Our node's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the lock is held now, as far as the connection's state tells (see [`LockGuard::lost`]).
    pub fn ownership(&self) -> Ownership {
        ownership_in(self.client.state())
    }

    /// Resolves as soon as the lock is no longer certainly held: [`Ownership::Suspended`] when the
    /// connection drops (even if it came back since this was called), [`Ownership::Lost`] when the session
    /// ends or our node is deleted.
    pub async fn lost(&self) -> Ownership {
        let mut states = self.client.state_stream();
        let now = ownership_in(states.current());
        if now != Ownership::Held {
            return now;
        }
        let from_states = async {
            loop {
                match states.next().await {
                    Some(s) if ownership_in(s) == Ownership::Held => {}
                    Some(s) => return ownership_in(s),
                    None => return Ownership::Lost,
                }
            }
        };
        tokio::select! {
            o = from_states => o,
            () = node_gone(&self.client, &self.path) => Ownership::Lost,
        }
    }

    /// Deletes our node (retrying after connection loss). A session that already ended took the node with
    /// it, so that is success too.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        match delete_if_exists(&self.client, &self.path).await {
            Err(e) if is_terminal(&e) => Ok(()),
            r => r,
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, path) = (self.client.clone(), self.path.clone());
        runtime.spawn(async move {
            if let Err(e) = delete_if_exists(&client, &path).await {
                tracing::debug!(%path, error = %e, "could not release a dropped lock");
            }
        });
    }
}

/// Returns once `path` is deleted or the session ended; never on other errors.
pub(crate) async fn node_gone(client: &Client, path: &str) {
    let mut backoff = Backoff::new();
    loop {
        match client.get_data_w(path).await {
            Ok((_, _, watch)) => {
                let event = watch.await;
                if matches!(event.event_type, EventType::NodeDeleted | EventType::None) {
                    return;
                }
            }
            Err(Error::NoNode) => return,
            Err(e) if is_terminal(&e) => return,
            Err(e) if e.is_retryable() => backoff.wait().await,
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot watch a node");
                std::future::pending::<()>().await;
            }
        }
    }
}
