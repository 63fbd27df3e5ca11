//! A cache of a subtree: path → data + Stat for every node under a root (the root included), kept current
//! by one persistent recursive watch on the root (Curator's `CuratorCache`).
//!
//! Algorithm: the watch is added first, then the tree is walked, so every change after a node was read
//! brings an event. An event is only a hint: the node it names is read again (data and Stat; gone means it
//! and its descendants are removed), and so is its parent when a node was created or deleted (its
//! `numChildren`, `cversion` and `pzxid` changed, and recursive watches send no child events). Reading
//! after the event, in order, makes the last read of a node follow its last change: the cache converges.
//!
//! Connection loss: events of the time offline are lost (ZooKeeper re-adds persistent watches without
//! catch-up events); the client then reports [`PersistentEvent::Resync`](crate::PersistentEvent), and the
//! whole subtree is walked again and compared with the cache, which emits what differs as ordinary events,
//! then [`CacheEvent::Resynced`]. Session expiry ends the cache ([`CacheEvent::Ended`]): start a new one
//! with a new client. Not seen: ACL changes (they fire no watch), so a cached `aversion` may be stale.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::recipes::retry::{retry, session_end_error};
use crate::{
    AddWatchMode, Client, Error, EventType, PersistentEvent, PersistentWatch, Result, Stat,
};

/// Events a slow subscriber may fall behind by before it gets [`CacheEvent::Lagged`].
const EVENTS_BUFFERED_MAX: usize = 4096;
/// Reads in flight at once while walking the tree.
const WALK_READS_IN_FLIGHT_MAX: usize = 32;

/// A cached node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedNode {
    pub data: Vec<u8>,
    pub stat: Stat,
}

/// A change of the cache, in the order it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// The first walk of the tree is done (no Added events for what it found: see
    /// [`TreeCache::snapshot_and_events`]).
    Initialized,
    Added {
        path: String,
        node: CachedNode,
    },
    Updated {
        path: String,
        old: CachedNode,
        node: CachedNode,
    },
    Removed {
        path: String,
        node: CachedNode,
    },
    /// A walk after a reconnection is done; what differed was reported just before.
    Resynced,
    /// This subscriber fell behind and missed some events: read a snapshot again.
    Lagged {
        missed: u64,
    },
    /// The cache stopped (the session ended, or the server refused a read): no more events.
    Ended(Error),
}

/// A subscription to a cache's events.
pub struct CacheEvents {
    rx: broadcast::Receiver<CacheEvent>,
}

impl CacheEvents {
    /// The next event; `None` once the cache stopped and every event was read.
    pub async fn next(&mut self) -> Option<CacheEvent> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(CacheEvent::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Where the cache stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Loading,
    Running,
    Ended(Error),
}

/// What the handle and the task share. Events are sent while the map is locked for writing, so that a
/// subscriber taken with a snapshot (under the read lock) sees exactly the changes after it.
struct Shared {
    nodes: RwLock<BTreeMap<String, CachedNode>>,
    events: Mutex<Option<broadcast::Sender<CacheEvent>>>,
    phase: watch::Sender<Phase>,
}

impl Shared {
    fn emit(&self, event: CacheEvent) {
        if let Some(tx) = &*self.events.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(event);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, CachedNode>> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, CachedNode>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets `path` to `node` (or removes it and its descendants), emitting what changed.
    fn apply(&self, path: &str, node: Option<CachedNode>) {
        let mut nodes = self.write();
        match node {
            Some(node) => match nodes.insert(path.to_string(), node.clone()) {
                None => self.emit(CacheEvent::Added {
                    path: path.to_string(),
                    node,
                }),
                Some(old) if old != node => self.emit(CacheEvent::Updated {
                    path: path.to_string(),
                    old,
                    node,
                }),
                Some(_) => {}
            },
            None => {
                let gone: Vec<String> = std::iter::once(path.to_string())
                    .filter(|p| nodes.contains_key(p))
                    .chain(descendants(&nodes, path).map(|(p, _)| p.clone()))
                    .collect();
                // Deepest first, as the server deletes them.
                for p in gone.into_iter().rev() {
                    if let Some(node) = nodes.remove(&p) {
                        self.emit(CacheEvent::Removed { path: p, node });
                    }
                }
            }
        }
    }

    /// Replaces the whole map with `fresh`, emitting what differs (nothing for the first load).
    fn replace(&self, fresh: BTreeMap<String, CachedNode>, first: bool) {
        let mut nodes = self.write();
        if !first {
            let gone: Vec<String> = nodes
                .keys()
                .filter(|p| !fresh.contains_key(*p))
                .cloned()
                .collect();
            for p in gone.into_iter().rev() {
                if let Some(node) = nodes.remove(&p) {
                    self.emit(CacheEvent::Removed { path: p, node });
                }
            }
            for (p, node) in &fresh {
                match nodes.get(p) {
                    None => self.emit(CacheEvent::Added {
                        path: p.clone(),
                        node: node.clone(),
                    }),
                    Some(old) if old != node => self.emit(CacheEvent::Updated {
                        path: p.clone(),
                        old: old.clone(),
                        node: node.clone(),
                    }),
                    Some(_) => {}
                }
            }
        }
        *nodes = fresh;
        self.emit(if first {
            CacheEvent::Initialized
        } else {
            CacheEvent::Resynced
        });
    }

    fn end(&self, error: Error) {
        let _nodes = self.write();
        // Ended before the event, so that whoever reads the event sees it.
        self.phase.send_replace(Phase::Ended(error.clone()));
        self.emit(CacheEvent::Ended(error));
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The entries strictly below `path`.
fn descendants<'a>(
    nodes: &'a BTreeMap<String, CachedNode>,
    path: &str,
) -> impl Iterator<Item = (&'a String, &'a CachedNode)> + 'a {
    let prefix = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    nodes
        .range(prefix.clone()..)
        .take_while(move |(p, _)| p.starts_with(&prefix))
        .filter(|(p, _)| p.as_str() != "/")
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&path[..i]),
    }
}

/// A subtree cache. Dropping it stops the task (the server keeps sending the watch's events to this
/// session until its next reconnection; the client discards them).
pub struct TreeCache {
    root: String,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TreeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeCache")
            .field("root", &self.root)
            .field("phase", &*self.phase.borrow())
            .finish()
    }
}

impl TreeCache {
    /// Adds the watch on `root` (which need not exist yet) and starts loading the tree in the background:
    /// see [`TreeCache::initialized`].
    pub async fn start(client: &Client, root: &str) -> Result<TreeCache> {
        let watch = retry(|| client.add_watch(root, AddWatchMode::PersistentRecursive)).await?;
        let (phase_tx, phase) = watch::channel(Phase::Loading);
        let (events_tx, _) = broadcast::channel(EVENTS_BUFFERED_MAX);
        let shared = Arc::new(Shared {
            nodes: RwLock::new(BTreeMap::new()),
            events: Mutex::new(Some(events_tx)),
            phase: phase_tx,
        });
        let task = tokio::spawn(run(client.clone(), root.to_string(), watch, shared.clone()));
        Ok(TreeCache {
            root: root.to_string(),
            shared,
            phase,
            task,
        })
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Waits for the first walk of the tree; fails if the cache stopped first.
    pub async fn initialized(&self) -> Result<()> {
        let mut phase = self.phase.clone();
        let result = phase
            .wait_for(|p| *p != Phase::Loading)
            .await
            .map(|p| p.clone());
        match result {
            Ok(Phase::Ended(e)) => Err(e),
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Why the cache stopped, if it did.
    pub fn ended(&self) -> Option<Error> {
        match &*self.phase.borrow() {
            Phase::Ended(e) => Some(e.clone()),
            _ => None,
        }
    }

    pub fn get(&self, path: &str) -> Option<CachedNode> {
        self.shared.read().get(path).cloned()
    }

    /// The names of `path`'s children, sorted; `None` if `path` is not cached.
    pub fn children(&self, path: &str) -> Option<Vec<String>> {
        let nodes = self.shared.read();
        if !nodes.contains_key(path) {
            return None;
        }
        let depth = if path == "/" { 1 } else { path.len() + 1 };
        Some(
            descendants(&nodes, path)
                .map(|(p, _)| &p[depth..])
                .filter(|rest| !rest.contains('/'))
                .map(str::to_string)
                .collect(),
        )
    }

    /// Every cached node.
    pub fn snapshot(&self) -> BTreeMap<String, CachedNode> {
        self.shared.read().clone()
    }

    /// The events from now on.
    pub fn events(&self) -> CacheEvents {
        self.snapshot_and_events().1
    }

    /// A snapshot and the events that follow it, exactly.
    pub fn snapshot_and_events(&self) -> (BTreeMap<String, CachedNode>, CacheEvents) {
        let nodes = self.shared.read();
        let rx = match &*self.shared.events.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.subscribe(),
            // Stopped: a stream with nothing more to say.
            None => broadcast::channel(1).1,
        };
        (nodes.clone(), CacheEvents { rx })
    }
}

impl Drop for TreeCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The cache's task: the first walk, then events, until the session ends.
async fn run(client: Client, root: String, mut watch: PersistentWatch, shared: Arc<Shared>) {
    let error = match follow(&client, &root, &mut watch, &shared).await {
        Ok(()) => Error::Closed,
        Err(e) => e,
    };
    tracing::debug!(%root, %error, "tree cache stopped");
    shared.end(error);
}

async fn follow(
    client: &Client,
    root: &str,
    watch: &mut PersistentWatch,
    shared: &Shared,
) -> Result<()> {
    shared.replace(walk(client, root).await?, true);
    shared.phase.send_replace(Phase::Running);
    loop {
        // Take every event already queued: a node changed many times is read once, after all of them.
        let Some(first) = watch.next().await else {
            return Err(Error::Closed);
        };
        let mut batch = vec![first];
        while let Some(more) = watch.try_next() {
            batch.push(more);
        }
        let mut resync = false;
        let mut stale = BTreeSet::new();
        for event in batch {
            match event {
                PersistentEvent::Resync => resync = true,
                PersistentEvent::Event(e) => match e.event_type {
                    EventType::None => return Err(session_end_error(e.state)),
                    EventType::PersistentWatchRemoved => return Err(Error::NoWatcher),
                    EventType::NodeCreated | EventType::NodeDeleted => {
                        if e.path != root {
                            if let Some(p) = parent(&e.path) {
                                stale.insert(p.to_string());
                            }
                        }
                        stale.insert(e.path);
                    }
                    _ => {
                        stale.insert(e.path);
                    }
                },
            }
        }
        if resync {
            tracing::debug!(%root, "re-reading the tree after a reconnection");
            shared.replace(walk(client, root).await?, false);
            continue;
        }
        // Parents sort before their children: a new subtree appears top down.
        for path in stale {
            let node = match retry(|| client.get_data(&path)).await {
                Ok((data, stat)) => Some(CachedNode { data, stat }),
                Err(Error::NoNode) => None,
                Err(e) => return Err(e),
            };
            shared.apply(&path, node);
        }
    }
}

/// Reads the whole subtree under `root`, level by level, several reads in flight. A node that vanishes
/// meanwhile is left out (its deletion event follows).
async fn walk(client: &Client, root: &str) -> Result<BTreeMap<String, CachedNode>> {
    let mut out = BTreeMap::new();
    let mut level = vec![root.to_string()];
    while !level.is_empty() {
        let mut next = Vec::new();
        let mut reads = JoinSet::new();
        let mut todo = level.into_iter();
        loop {
            while reads.len() < WALK_READS_IN_FLIGHT_MAX {
                let Some(path) = todo.next() else { break };
                let client = client.clone();
                reads.spawn(async move {
                    let read = read_node(&client, &path).await;
                    (path, read)
                });
            }
            let Some(joined) = reads.join_next().await else {
                break;
            };
            let (path, read) = joined.map_err(|e| Error::Protocol(format!("walk task: {e}")))?;
            if let Some((node, children)) = read? {
                for child in children {
                    next.push(crate::recipes::protected::child_path(&path, &child));
                }
                out.insert(path, node);
            }
        }
        level = next;
    }
    Ok(out)
}

/// A node's data, Stat and children; `None` if it does not exist.
async fn read_node(client: &Client, path: &str) -> Result<Option<(CachedNode, Vec<String>)>> {
    let (data, stat) = match retry(|| client.get_data(path)).await {
        Ok(r) => r,
        Err(Error::NoNode) => return Ok(None),
        Err(e) => return Err(e),
    };
    let children = match retry(|| client.get_children(path)).await {
        Ok(c) => c,
        Err(Error::NoNode) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some((CachedNode { data, stat }, children)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: i32) -> CachedNode {
        CachedNode {
            data: vec![],
            stat: Stat {
                version: v,
                ..Stat::default()
            },
        }
    }

    #[test]
    fn descendants_and_parents() {
        let mut m = BTreeMap::new();
        for p in ["/a", "/a/b", "/a/b/c", "/a-x", "/ab", "/a/d"] {
            m.insert(p.to_string(), node(0));
        }
        let d: Vec<&str> = descendants(&m, "/a").map(|(p, _)| p.as_str()).collect();
        assert_eq!(d, vec!["/a/b", "/a/b/c", "/a/d"]);
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
    }

    #[test]
    fn removal_takes_the_subtree_deepest_first() {
        let (phase, _) = watch::channel(Phase::Running);
        let (tx, rx) = broadcast::channel(16);
        let shared = Shared {
            nodes: RwLock::new(BTreeMap::new()),
            events: Mutex::new(Some(tx)),
            phase,
        };
        let mut events = CacheEvents { rx };
        for p in ["/r", "/r/a", "/r/a/b", "/r/c"] {
            shared.apply(p, Some(node(0)));
        }
        shared.apply("/r/a", None);
        let keys: Vec<String> = shared.read().keys().cloned().collect();
        assert_eq!(keys, vec!["/r", "/r/c"]);
        let mut removed = Vec::new();
        while let Ok(e) = events.rx.try_recv() {
            if let CacheEvent::Removed { path, .. } = e {
                removed.push(path);
            }
        }
        assert_eq!(removed, vec!["/r/a/b", "/r/a"]);
    }
}
