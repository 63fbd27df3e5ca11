//! The watch table: which connection watches which path, and which events a write fires (member-local).
//!
//! Mirrors ZooKeeper 3.8's two `WatchManager`s. The data table holds exists/getData watches, the child
//! table getChildren watches; persistent and persistent-recursive watches sit in both. Each (connection,
//! path) has one mode per table, replaced by the latest watch set there. Standard watches are one-shot;
//! persistent ones stay until removed or the connection closes.
//! Never serialized: watches belong to connections, and clients set them again with SetWatches.

use crate::path::self_and_ancestors;
use crate::state::Trigger;
use crate::tree::DataTree;
use crate::ConnId;
use oxkeeper_proto::{
    ErrorCode, EventType, KeeperState, Request, SetWatches, WatcherEvent, WatcherType,
};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The tables hash with foldhash: paths come from clients, and SipHash's cost showed in every trigger (a
/// session's cleanup looks each deleted path and its ancestors up in both tables). Seeded per table at
/// random, as std's is.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::quality::RandomState>;

/// The kind of watch a request sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// One-shot, data table (exists, getData).
    Data,
    /// One-shot, child table (getChildren, getChildren2).
    Child,
    /// addWatch PERSISTENT: both tables, never consumed.
    Persistent,
    /// addWatch PERSISTENT_RECURSIVE: data table, fires for the path and every descendant.
    PersistentRecursive,
}

impl WatchKind {
    /// The kind for an addWatch mode (`AddWatchMode`: 0 persistent, 1 persistent-recursive).
    pub fn from_add_watch_mode(mode: i32) -> Option<Self> {
        match mode {
            0 => Some(WatchKind::Persistent),
            1 => Some(WatchKind::PersistentRecursive),
            _ => None,
        }
    }
}

/// The watch a read sets, if any: exists sets a data watch whether or not the node exists (but not on
/// NoAuth or BadArguments); getData and getChildren(2) only when they succeed.
pub fn watch_for_read(req: &Request, err: i32) -> Option<(&str, WatchKind)> {
    let ok = err == 0;
    match req {
        Request::Exists(r) if r.watch && (ok || err == i32::from(ErrorCode::NoNode)) => {
            Some((&r.path, WatchKind::Data))
        }
        Request::GetData(r) if r.watch && ok => Some((&r.path, WatchKind::Data)),
        Request::GetChildren(r) | Request::GetChildren2(r) if r.watch && ok => {
            Some((&r.path, WatchKind::Child))
        }
        _ => None,
    }
}

/// A watch's mode in one table (`WatcherMode`); ZooKeeper 3.8 keeps one mode per (connection, path), and
/// setting a watch replaces the mode (a standard watch set over a persistent one makes it one-shot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Standard,
    Persistent,
    PersistentRecursive,
}

impl Mode {
    fn is_persistent(self) -> bool {
        self != Mode::Standard
    }
    fn is_recursive(self) -> bool {
        self == Mode::PersistentRecursive
    }
}

/// One of the two tables (ZooKeeper 3.8's `WatchManager`).
#[derive(Debug, Default)]
struct Manager {
    /// `watchTable`: path → watching connections.
    by_path: HashMap<Arc<str>, BTreeSet<ConnId>>,
    /// `watch2Paths`: connection → its paths. As in ZooKeeper, a connection whose one-shot watches all
    /// fired keeps an empty entry (it still counts in `wchs`) until it closes.
    by_conn: HashMap<ConnId, HashSet<Arc<str>>>,
    /// `WatcherModeManager`: the modes other than standard, per (connection, path).
    modes: HashMap<(ConnId, Arc<str>), Mode>,
    /// Number of (connection, path) pairs with the recursive mode: when 0, ancestors need no visit.
    recursive: usize,
}

impl Manager {
    fn mode(&self, conn: ConnId, path: &Arc<str>) -> Mode {
        self.modes
            .get(&(conn, path.clone()))
            .copied()
            .unwrap_or(Mode::Standard)
    }

    /// `setWatcherMode`: standard removes the entry.
    fn set_mode(&mut self, conn: ConnId, path: Arc<str>, mode: Mode) {
        let old = if mode == Mode::Standard {
            self.modes.remove(&(conn, path))
        } else {
            self.modes.insert((conn, path), mode)
        }
        .unwrap_or(Mode::Standard);
        match (old.is_recursive(), mode.is_recursive()) {
            (false, true) => self.recursive += 1,
            (true, false) => self.recursive -= 1,
            _ => {}
        }
    }

    fn add(&mut self, path: &str, conn: ConnId, mode: Mode) {
        let key: Arc<str> = match self.by_path.get_key_value(path) {
            Some((k, _)) => k.clone(),
            None => Arc::from(path),
        };
        self.by_path.entry(key.clone()).or_default().insert(conn);
        self.by_conn.entry(conn).or_default().insert(key.clone());
        self.set_mode(conn, key, mode);
    }

    fn remove_conn(&mut self, conn: ConnId) {
        let Some(paths) = self.by_conn.remove(&conn) else {
            return;
        };
        for p in paths {
            if let Some(conns) = self.by_path.get_mut(&p) {
                conns.remove(&conn);
                if conns.is_empty() {
                    self.by_path.remove(&p);
                }
            }
            self.set_mode(conn, p, Mode::Standard);
        }
    }

    /// `WatchManager.triggerWatch` (3.8): every watcher of `path` fires, a standard one being consumed;
    /// a recursive watcher of the path or of an ancestor fires unless the event is NodeChildrenChanged.
    /// Returns the connections that fired.
    fn trigger(&mut self, path: &str, children_changed: bool) -> BTreeSet<ConnId> {
        let mut fired = BTreeSet::new();
        // Only recursive watchers look at descendants, and they ignore NodeChildrenChanged.
        let levels = if self.recursive > 0 && !children_changed {
            usize::MAX
        } else {
            1
        };
        for (level, p) in self_and_ancestors(path).take(levels).enumerate() {
            let Some((key, conns)) = self.by_path.get_key_value(p) else {
                continue;
            };
            let key = key.clone();
            let mut consumed = Vec::new();
            for &conn in conns.iter() {
                let mode = self.mode(conn, &key);
                if mode.is_recursive() {
                    if !children_changed {
                        fired.insert(conn);
                    }
                } else if level == 0 {
                    fired.insert(conn);
                    if !mode.is_persistent() {
                        consumed.push(conn);
                    }
                }
            }
            for conn in consumed {
                if let Some(paths) = self.by_conn.get_mut(&conn) {
                    paths.remove(p);
                }
                if let Some(conns) = self.by_path.get_mut(p) {
                    conns.remove(&conn);
                }
            }
            if self.by_path.get(p).is_some_and(BTreeSet::is_empty) {
                self.by_path.remove(p);
            }
        }
        fired
    }

    /// `containsWatcher` as ZooKeeper 3.8.0 has it: true when *any* connection watches `path` in this
    /// table (the loop returns at the leaf as soon as the path has watchers, without looking for `conn`).
    fn contains(&self, path: &str, _conn: ConnId) -> bool {
        self.by_path.contains_key(path)
    }

    /// `removeWatcher(path, watcher)`: drops the connection's watch on `path` whatever its mode; true if
    /// there was one.
    fn remove(&mut self, path: &str, conn: ConnId) -> bool {
        let Some(paths) = self.by_conn.get_mut(&conn) else {
            return false;
        };
        let Some(key) = paths.take(path) else {
            return false;
        };
        let Some(conns) = self.by_path.get_mut(path) else {
            return false;
        };
        if !conns.remove(&conn) {
            return false;
        }
        if conns.is_empty() {
            self.by_path.remove(path);
        }
        self.set_mode(conn, key, Mode::Standard);
        true
    }

    /// Number of (path, connection) pairs (`WatchManager.size`).
    fn size(&self) -> usize {
        self.by_path.values().map(BTreeSet::len).sum()
    }
}

/// Every watch of this member's connections.
#[derive(Debug, Default)]
pub struct WatchTable {
    data: Manager,
    child: Manager,
}

fn event(event: EventType, path: &str) -> WatcherEvent {
    WatcherEvent {
        event_type: event.into(),
        state: KeeperState::SyncConnected.into(),
        path: path.to_owned(),
    }
}

impl WatchTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a watch (again: a watch a connection already has is not doubled, but its mode is
    /// replaced, as in ZooKeeper 3.8). Persistent and persistent-recursive watches go in both tables.
    pub fn add(&mut self, conn: ConnId, path: &str, kind: WatchKind) {
        match kind {
            WatchKind::Data => self.data.add(path, conn, Mode::Standard),
            WatchKind::Child => self.child.add(path, conn, Mode::Standard),
            WatchKind::Persistent => {
                self.data.add(path, conn, Mode::Persistent);
                self.child.add(path, conn, Mode::Persistent);
            }
            WatchKind::PersistentRecursive => {
                self.data.add(path, conn, Mode::PersistentRecursive);
                self.child.add(path, conn, Mode::PersistentRecursive);
            }
        }
    }

    /// The notifications a write's trigger produces, one per connection at most, in connection order.
    /// NodeCreated and NodeDataChanged go to the data table; NodeChildrenChanged to the child table;
    /// NodeDeleted to both, a connection in both getting it once. One-shot watches are consumed.
    ///
    /// The caller must still check, per connection, that the connection can READ `trigger.acl`
    /// ([`crate::acl::check_acl`]) and drop the event silently if not; the watch is consumed either way,
    /// as in ZooKeeper (the CVE-2024-23944 fix of 3.8.4/3.9.2, which Debian's 3.8.0-11+deb12u2, the
    /// differential test's reference, has too). The notification's header zxid is `trigger.zxid`.
    pub fn trigger(&mut self, trigger: &Trigger) -> Vec<(ConnId, WatcherEvent)> {
        self.fired(trigger)
            .into_iter()
            .map(|c| (c, event(trigger.event, &trigger.path)))
            .collect()
    }

    /// [`WatchTable::trigger`] without the events: the connections a trigger fires for, in order (the
    /// caller encodes the event once for all of them).
    pub fn fired(&mut self, trigger: &Trigger) -> BTreeSet<ConnId> {
        let path = &*trigger.path;
        match trigger.event {
            EventType::NodeCreated | EventType::NodeDataChanged => self.data.trigger(path, false),
            EventType::NodeChildrenChanged => self.child.trigger(path, true),
            EventType::NodeDeleted => {
                let mut conns = self.data.trigger(path, false);
                conns.extend(self.child.trigger(path, false));
                conns
            }
            _ => BTreeSet::new(),
        }
    }

    /// Drops every watch of a closed connection (`DataTree.removeCnxn`).
    pub fn remove_conn(&mut self, conn: ConnId) {
        self.data.remove_conn(conn);
        self.child.remove_conn(conn);
    }

    /// checkWatches as ZooKeeper 3.8.0 answers it (`DataTree.containsWatcher`): the reply's err. Types
    /// other than Children (1), Data (2) and Any (3) are MarshallingError (3.8 has no persistent
    /// WatcherType); a path watched by no connection is NoWatcher. A path watched by *another*
    /// connection counts (3.8.0's `containsWatcher` does not look for the caller at the leaf).
    pub fn check_watches(&self, conn: ConnId, path: &str, watcher_type: i32) -> i32 {
        let found = match WatcherType::from_i32(watcher_type) {
            Some(WatcherType::Children) => self.child.contains(path, conn),
            Some(WatcherType::Data) => self.data.contains(path, conn),
            Some(WatcherType::Any) => {
                self.child.contains(path, conn) || self.data.contains(path, conn)
            }
            _ => return ErrorCode::MarshallingError.into(),
        };
        if found {
            0
        } else {
            ErrorCode::NoWatcher.into()
        }
    }

    /// removeWatches as ZooKeeper 3.8.0 answers it (`DataTree.removeWatch`): the reply's err. The
    /// connection's watch on `path` is dropped from the table(s) of the type whatever its mode.
    pub fn remove_watches(&mut self, conn: ConnId, path: &str, watcher_type: i32) -> i32 {
        let removed = match WatcherType::from_i32(watcher_type) {
            Some(WatcherType::Children) => self.child.remove(path, conn),
            Some(WatcherType::Data) => self.data.remove(path, conn),
            Some(WatcherType::Any) => {
                let a = self.child.remove(path, conn);
                let b = self.data.remove(path, conn);
                a || b
            }
            _ => return ErrorCode::MarshallingError.into(),
        };
        if removed {
            0
        } else {
            ErrorCode::NoWatcher.into()
        }
    }

    /// SetWatches / SetWatches2 (`DataTree.setWatches`), relative to the client's last zxid. Returns the
    /// catch-up events to send now, before the reply: for data watches NodeDeleted (node gone) or
    /// NodeDataChanged (mzxid newer), for exist watches NodeCreated (node exists), for child watches
    /// NodeDeleted or NodeChildrenChanged (pzxid newer); every other watch is registered. Persistent and
    /// recursive watches are registered with no event. These events carry header zxid -1 and are not
    /// filtered by ACL (ZooKeeper checks none here).
    pub fn set_watches(
        &mut self,
        conn: ConnId,
        req: &SetWatches,
        tree: &DataTree,
    ) -> Vec<WatcherEvent> {
        let rel = req.relative_zxid;
        let mut events = Vec::new();
        for path in &req.data_watches {
            match tree.get(path) {
                None => events.push(event(EventType::NodeDeleted, path)),
                Some(n) if n.stat().mzxid > rel => {
                    events.push(event(EventType::NodeDataChanged, path))
                }
                Some(_) => self.data.add(path, conn, Mode::Standard),
            }
        }
        for path in &req.exist_watches {
            if tree.contains(path) {
                events.push(event(EventType::NodeCreated, path));
            } else {
                self.data.add(path, conn, Mode::Standard);
            }
        }
        for path in &req.child_watches {
            match tree.get(path) {
                None => events.push(event(EventType::NodeDeleted, path)),
                Some(n) if n.stat().pzxid > rel => {
                    events.push(event(EventType::NodeChildrenChanged, path))
                }
                Some(_) => self.child.add(path, conn, Mode::Standard),
            }
        }
        for path in &req.persistent_watches {
            self.child.add(path, conn, Mode::Persistent);
            self.data.add(path, conn, Mode::Persistent);
        }
        for path in &req.persistent_recursive_watches {
            self.child.add(path, conn, Mode::PersistentRecursive);
            self.data.add(path, conn, Mode::PersistentRecursive);
        }
        events
    }

    /// `wchs` (`<connections> connections watching <paths> paths`, `Total watches:<total>`): the data
    /// table's connections, paths and (path, connection) pairs, as a tuple in that order.
    pub fn data_watch_summary(&self) -> (usize, usize, usize) {
        (
            self.data.by_conn.len(),
            self.data.by_path.len(),
            self.data.by_conn.values().map(HashSet::len).sum(),
        )
    }

    /// For `wchc`: each watching connection of the data table with its paths, unsorted. A copy (the paths
    /// are shared, not duplicated), so that the text is made after the table's lock is let go.
    pub fn data_watches_by_conn(&self) -> Vec<(ConnId, Vec<Arc<str>>)> {
        self.data
            .by_conn
            .iter()
            .map(|(c, paths)| (*c, paths.iter().cloned().collect()))
            .collect()
    }

    /// For `wchp`: each path of the data table with its watching connections (in connection order),
    /// unsorted. A copy, as `data_watches_by_conn`.
    pub fn data_watches_by_path(&self) -> Vec<(Arc<str>, Vec<ConnId>)> {
        self.data
            .by_path
            .iter()
            .map(|(p, conns)| (p.clone(), conns.iter().copied().collect()))
            .collect()
    }

    /// `watch_count` of `mntr`: (path, connection) pairs of both tables.
    pub fn total_watch_count(&self) -> usize {
        self.data.size() + self.child.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::open_acl_unsafe;
    use oxkeeper_proto::PathWatch;

    fn trig(path: &str, event: EventType) -> Trigger {
        Trigger {
            path: path.into(),
            event,
            zxid: 7,
            acl: Arc::new(open_acl_unsafe()),
        }
    }

    fn fired(w: &mut WatchTable, path: &str, e: EventType) -> Vec<ConnId> {
        let out = w.trigger(&trig(path, e));
        for (_, ev) in &out {
            assert_eq!(ev.path, path);
            assert_eq!(ev.event_type, i32::from(e));
            assert_eq!(ev.state, 3);
        }
        out.into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn data_watch_fires_once_on_created_deleted_or_changed() {
        for e in [
            EventType::NodeCreated,
            EventType::NodeDeleted,
            EventType::NodeDataChanged,
        ] {
            let mut w = WatchTable::new();
            w.add(1, "/a", WatchKind::Data);
            assert_eq!(
                fired(&mut w, "/a", EventType::NodeChildrenChanged),
                Vec::<u64>::new()
            );
            assert_eq!(fired(&mut w, "/a", e), [1]);
            assert_eq!(fired(&mut w, "/a", e), Vec::<u64>::new());
            assert_eq!(w.total_watch_count(), 0);
        }
    }

    #[test]
    fn child_watch_fires_on_children_changed_and_deleted_only() {
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::Child);
        assert!(fired(&mut w, "/a", EventType::NodeDataChanged).is_empty());
        assert!(fired(&mut w, "/a", EventType::NodeCreated).is_empty());
        assert_eq!(fired(&mut w, "/a", EventType::NodeChildrenChanged), [1]);
        assert!(fired(&mut w, "/a", EventType::NodeChildrenChanged).is_empty());
        w.add(1, "/a", WatchKind::Child);
        assert_eq!(fired(&mut w, "/a", EventType::NodeDeleted), [1]);
        assert_eq!(w.total_watch_count(), 0);
    }

    #[test]
    fn node_deleted_reaches_a_connection_once_even_with_both_watches() {
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::Data);
        w.add(1, "/a", WatchKind::Child);
        w.add(2, "/a", WatchKind::Child);
        w.add(3, "/", WatchKind::PersistentRecursive);
        w.add(3, "/a", WatchKind::Child);
        assert_eq!(fired(&mut w, "/a", EventType::NodeDeleted), [1, 2, 3]);
        // Only the recursive watch is left, in both tables (3.8 puts it in both).
        assert_eq!(w.total_watch_count(), 2);
    }

    #[test]
    fn watches_are_per_path_not_per_prefix() {
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::Data);
        assert!(fired(&mut w, "/a/b", EventType::NodeCreated).is_empty());
        assert!(fired(&mut w, "/ab", EventType::NodeCreated).is_empty());
        assert_eq!(fired(&mut w, "/a", EventType::NodeCreated), [1]);
    }

    #[test]
    fn persistent_watch_fires_every_time_from_both_tables() {
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::Persistent);
        for _ in 0..2 {
            assert_eq!(fired(&mut w, "/a", EventType::NodeDataChanged), [1]);
            assert_eq!(fired(&mut w, "/a", EventType::NodeChildrenChanged), [1]);
            assert_eq!(fired(&mut w, "/a", EventType::NodeCreated), [1]);
            assert_eq!(fired(&mut w, "/a", EventType::NodeDeleted), [1]);
        }
        // Not for descendants.
        assert!(fired(&mut w, "/a/b", EventType::NodeCreated).is_empty());
        assert_eq!(w.total_watch_count(), 2);
    }

    #[test]
    fn recursive_watch_covers_descendants_but_never_children_changed() {
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::PersistentRecursive);
        for e in [
            EventType::NodeCreated,
            EventType::NodeDeleted,
            EventType::NodeDataChanged,
        ] {
            assert_eq!(fired(&mut w, "/a", e), [1]);
            assert_eq!(fired(&mut w, "/a/b", e), [1]);
            assert_eq!(fired(&mut w, "/a/b/c", e), [1]);
            assert!(fired(&mut w, "/ab", e).is_empty());
            assert!(fired(&mut w, "/", e).is_empty());
        }
        assert!(fired(&mut w, "/a", EventType::NodeChildrenChanged).is_empty());
        assert!(fired(&mut w, "/a/b", EventType::NodeChildrenChanged).is_empty());
        assert_eq!(w.total_watch_count(), 2);
        // A recursive watch on the root covers everything.
        w.add(2, "/", WatchKind::PersistentRecursive);
        assert_eq!(fired(&mut w, "/x/y", EventType::NodeCreated), [2]);
    }

    #[test]
    fn a_later_watch_replaces_the_mode_of_the_same_path() {
        // ZooKeeper 3.8 keeps one mode per (connection, path) and table: the last watch set wins.
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::Data);
        w.add(1, "/a", WatchKind::PersistentRecursive);
        for _ in 0..2 {
            assert_eq!(fired(&mut w, "/a", EventType::NodeDataChanged), [1]);
            assert_eq!(fired(&mut w, "/a/b", EventType::NodeCreated), [1]);
        }
        // A getData watch over the recursive one makes the data table's watch one-shot again ...
        w.add(1, "/a", WatchKind::Data);
        assert_eq!(fired(&mut w, "/a", EventType::NodeDataChanged), [1]);
        assert!(fired(&mut w, "/a", EventType::NodeDataChanged).is_empty());
        assert!(fired(&mut w, "/a/b", EventType::NodeCreated).is_empty());
        // ... while the child table still has the recursive one: deletes below /a still fire.
        assert_eq!(fired(&mut w, "/a/b", EventType::NodeDeleted), [1]);
        assert_eq!(w.check_watches(1, "/a", 2), NO_WATCHER);
        assert_eq!(w.check_watches(1, "/a", 1), 0);
        // A persistent watch set over a standard one is not consumed.
        w.add(2, "/p", WatchKind::Data);
        w.add(2, "/p", WatchKind::Persistent);
        assert_eq!(fired(&mut w, "/p", EventType::NodeDataChanged), [2]);
        assert_eq!(fired(&mut w, "/p", EventType::NodeDataChanged), [2]);
    }

    #[test]
    fn remove_conn_drops_everything() {
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::Data);
        w.add(1, "/b", WatchKind::Persistent);
        w.add(1, "/c", WatchKind::PersistentRecursive);
        w.add(2, "/a", WatchKind::Data);
        w.remove_conn(1);
        assert_eq!(w.total_watch_count(), 1);
        assert!(fired(&mut w, "/c/d", EventType::NodeCreated).is_empty());
        assert_eq!(fired(&mut w, "/a", EventType::NodeCreated), [2]);
        assert_eq!(w.data.recursive, 0);
    }

    const NO_WATCHER: i32 = ErrorCode::NoWatcher as i32;
    const MARSHALLING: i32 = ErrorCode::MarshallingError as i32;

    #[test]
    fn check_and_remove_follow_zookeeper_3_8_watcher_types() {
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::Data);
        assert_eq!(w.check_watches(1, "/a", 2), 0);
        assert_eq!(w.check_watches(1, "/a", 3), 0);
        assert_eq!(w.check_watches(1, "/a", 1), NO_WATCHER);
        assert_eq!(w.remove_watches(1, "/a", 1), NO_WATCHER);
        assert_eq!(w.remove_watches(1, "/a", 2), 0);
        assert_eq!(w.remove_watches(1, "/a", 2), NO_WATCHER);
        assert_eq!(w.check_watches(1, "/a", 3), NO_WATCHER);

        // 3.8 has no persistent WatcherType: 4 and 5 (and anything else) fail to convert.
        w.add(1, "/p", WatchKind::Persistent);
        for t in [0, 4, 5, 6, -1] {
            assert_eq!(w.check_watches(1, "/p", t), MARSHALLING);
            assert_eq!(w.remove_watches(1, "/p", t), MARSHALLING);
        }
        // A persistent watch sits in both tables: Children and Data find it, and removing it from one
        // table leaves the other.
        assert_eq!(w.check_watches(1, "/p", 1), 0);
        assert_eq!(w.check_watches(1, "/p", 2), 0);
        assert_eq!(w.remove_watches(1, "/p", 1), 0);
        assert_eq!(w.check_watches(1, "/p", 1), NO_WATCHER);
        assert!(fired(&mut w, "/p", EventType::NodeChildrenChanged).is_empty());
        assert_eq!(fired(&mut w, "/p", EventType::NodeDataChanged), [1]);
        assert_eq!(w.remove_watches(1, "/p", 3), 0);
        assert_eq!(w.total_watch_count(), 0);

        w.add(1, "/r", WatchKind::PersistentRecursive);
        assert_eq!(w.remove_watches(1, "/r", 3), 0);
        assert_eq!(w.data.recursive + w.child.recursive, 0);
        assert!(fired(&mut w, "/r/x", EventType::NodeCreated).is_empty());

        w.add(1, "/x", WatchKind::Data);
        w.add(1, "/x", WatchKind::Child);
        assert_eq!(w.remove_watches(1, "/x", 3), 0);
        assert_eq!(w.total_watch_count(), 0);
        assert_eq!(w.remove_watches(1, "/x", 3), NO_WATCHER);
    }

    #[test]
    fn check_watches_finds_another_connections_watch() {
        // ZooKeeper 3.8.0's containsWatcher answers true as soon as the path has any watcher.
        let mut w = WatchTable::new();
        w.add(2, "/a", WatchKind::Data);
        assert_eq!(w.check_watches(1, "/a", 2), 0);
        assert_eq!(w.check_watches(1, "/a", 3), 0);
        assert_eq!(w.check_watches(1, "/a", 1), NO_WATCHER);
        // removeWatches does look for the caller.
        assert_eq!(w.remove_watches(1, "/a", 2), NO_WATCHER);
        assert_eq!(w.remove_watches(2, "/a", 2), 0);
        assert_eq!(w.check_watches(1, "/a", 2), NO_WATCHER);
    }

    #[test]
    fn wchs_counts_only_the_data_table_and_keeps_fired_connections() {
        let mut w = WatchTable::new();
        w.add(1, "/a", WatchKind::Data);
        w.add(1, "/b", WatchKind::Data);
        w.add(2, "/a", WatchKind::Data);
        w.add(3, "/c", WatchKind::Child);
        assert_eq!(w.data_watch_summary(), (2, 2, 3));
        assert_eq!(w.total_watch_count(), 4);
        let mut by_conn: Vec<(ConnId, Vec<String>)> = w
            .data_watches_by_conn()
            .into_iter()
            .map(|(c, paths)| {
                let mut p: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
                p.sort();
                (c, p)
            })
            .collect();
        by_conn.sort();
        assert_eq!(
            by_conn,
            [
                (1, vec!["/a".to_string(), "/b".into()]),
                (2, vec!["/a".into()])
            ]
        );
        let mut by_path: Vec<(String, Vec<ConnId>)> = w
            .data_watches_by_path()
            .into_iter()
            .map(|(p, conns)| (p.to_string(), conns))
            .collect();
        by_path.sort();
        assert_eq!(
            by_path,
            [("/a".to_string(), vec![1, 2]), ("/b".into(), vec![1])]
        );
        fired(&mut w, "/a", EventType::NodeDataChanged);
        fired(&mut w, "/b", EventType::NodeDataChanged);
        // ZooKeeper keeps the emptied connection entries until the connection closes.
        assert_eq!(w.data_watch_summary(), (2, 0, 0));
        assert_eq!(w.data_watches_by_conn().len(), 2);
        assert!(w.data_watches_by_path().is_empty());
        w.remove_conn(1);
        w.remove_conn(2);
        assert_eq!(w.data_watch_summary(), (0, 0, 0));
    }

    #[test]
    fn set_watches_catches_up_in_zookeeper_order() {
        use crate::state::StateMachine;
        use crate::{ApplySettings, Command, CommandOp};
        use oxkeeper_proto::{CreateRequest, OpCode, SetDataRequest};
        let mut sm = StateMachine::new();
        let mut run = |session_id: i64, op: CommandOp| {
            sm.apply(&Command {
                session_id,
                cxid: 0,
                time_ms: 0,
                auth: vec![].into(),
                op,
            })
        };
        run(
            0,
            CommandOp::Bootstrap {
                secret: vec![1],
                member_id: 1,
                settings: ApplySettings::default(),
            },
        );
        let sid = match run(0, CommandOp::CreateSession { timeout_ms: 1000 }).session {
            Some(crate::SessionChange::Created { id, .. }) => id,
            other => panic!("{other:?}"),
        };
        let create = |p: &str| {
            CommandOp::Write(Request::Create {
                op: OpCode::Create,
                req: CreateRequest {
                    path: p.into(),
                    data: None,
                    acl: open_acl_unsafe(),
                    flags: 0,
                    ttl: -1,
                },
            })
        };
        for p in ["/same", "/changed", "/parent", "/quiet"] {
            run(sid, create(p));
        }
        let rel = run(sid, create("/parent/old")).zxid;
        run(
            sid,
            CommandOp::Write(Request::SetData(SetDataRequest {
                path: "/changed".into(),
                data: Some(b"x".to_vec()),
                version: -1,
            })),
        );
        run(sid, create("/parent/new"));
        let tree = sm.tree();

        let mut w = WatchTable::new();
        let req = SetWatches {
            relative_zxid: rel,
            data_watches: vec!["/same".into(), "/gone".into(), "/changed".into()],
            exist_watches: vec!["/missing".into(), "/same".into()],
            child_watches: vec!["/quiet".into(), "/gone".into(), "/parent".into()],
            persistent_watches: vec!["/p".into()],
            persistent_recursive_watches: vec!["/r".into()],
        };
        let got: Vec<(i32, String)> = w
            .set_watches(9, &req, tree)
            .into_iter()
            .map(|e| {
                assert_eq!(e.state, 3);
                (e.event_type, e.path)
            })
            .collect();
        let want = [
            (EventType::NodeDeleted, "/gone"),
            (EventType::NodeDataChanged, "/changed"),
            (EventType::NodeCreated, "/same"),
            (EventType::NodeDeleted, "/gone"),
            (EventType::NodeChildrenChanged, "/parent"),
        ]
        .map(|(e, p)| (i32::from(e), p.to_string()));
        assert_eq!(got, want);
        assert_eq!(w.check_watches(9, "/same", 2), 0);
        assert_eq!(w.check_watches(9, "/missing", 2), 0);
        assert_eq!(w.check_watches(9, "/quiet", 1), 0);
        assert_eq!(w.check_watches(9, "/parent", 1), NO_WATCHER);
        assert_eq!(w.check_watches(9, "/p", 1), 0);
        assert_eq!(w.check_watches(9, "/r", 1), 0);
        assert_eq!(fired(&mut w, "/r/x", EventType::NodeCreated), [9]);
        assert_eq!(fired(&mut w, "/r/x", EventType::NodeDeleted), [9]);
    }

    #[test]
    fn reads_set_the_right_watches() {
        let pw = |watch| PathWatch {
            path: "/a".into(),
            watch,
        };
        let no_node = i32::from(ErrorCode::NoNode);
        let no_auth = i32::from(ErrorCode::NoAuth);
        assert_eq!(
            watch_for_read(&Request::Exists(pw(true)), no_node),
            Some(("/a", WatchKind::Data))
        );
        assert_eq!(watch_for_read(&Request::Exists(pw(true)), no_auth), None);
        assert_eq!(watch_for_read(&Request::Exists(pw(false)), 0), None);
        assert_eq!(
            watch_for_read(&Request::GetData(pw(true)), 0),
            Some(("/a", WatchKind::Data))
        );
        assert_eq!(watch_for_read(&Request::GetData(pw(true)), no_node), None);
        assert_eq!(
            watch_for_read(&Request::GetChildren2(pw(true)), 0),
            Some(("/a", WatchKind::Child))
        );
        assert_eq!(
            watch_for_read(&Request::GetChildren(pw(true)), no_node),
            None
        );
        assert_eq!(
            WatchKind::from_add_watch_mode(0),
            Some(WatchKind::Persistent)
        );
        assert_eq!(
            WatchKind::from_add_watch_mode(1),
            Some(WatchKind::PersistentRecursive)
        );
        assert_eq!(WatchKind::from_add_watch_mode(2), None);
    }
}
