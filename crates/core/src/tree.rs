//! The DataTree: every znode with its data, ACL, stat and children (replicated state).
//!
//! Nodes live in a compact copy-on-write store ([`store`]: ~90 bytes for a small node), so cloning
//! the tree is cheap and a clone is a point-in-time snapshot that shares everything with the live tree
//! while apply goes on. The tree only stores and indexes; the checks a write must pass (ACLs,
//! versions, sessions) are made by `state` before it calls the mutators here. No I/O.

mod store;

use crate::path::{self, child_name, parent_of};
use crate::quota::{self, QuotaIndex};
use imbl::OrdSet;
use oxkeeper_proto::{Acl, ErrorCode, Stat, CONTAINER_EPHEMERAL_OWNER, TTL_EPHEMERAL_OWNER_MASK};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use store::{AclTable, Id, Links, PathIndex, Store, NONE, ROOT};

/// Mask of the TTL value inside a TTL node's ephemeralOwner (`EphemeralType.EXTENDED_FEATURE_VALUE_MASK`).
const TTL_VALUE_MASK: i64 = 0x0000_00FF_FFFF_FFFF;

/// A node's persisted stat (`StatPersisted`): what the tree stores, not what clients see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeStat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    /// The number of children ever created under this node (ZooKeeper's internal cversion). It is the
    /// sequential suffix of the next child; clients see `2 * cversion - numChildren` instead.
    pub cversion: i32,
    pub aversion: i32,
    /// 0, a session id, `CONTAINER_EPHEMERAL_OWNER` or `0xFF << 56 | ttl`.
    pub ephemeral_owner: i64,
    pub pzxid: i64,
}

impl NodeStat {
    /// `DataTree.createStat`.
    pub fn created(zxid: i64, time_ms: i64, ephemeral_owner: i64) -> Self {
        NodeStat {
            czxid: zxid,
            mzxid: zxid,
            ctime: time_ms,
            mtime: time_ms,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner,
            pzxid: zxid,
        }
    }
}

/// What a node's ephemeralOwner says it is (`EphemeralType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Persistent,
    /// An ordinary ephemeral of this session.
    Ephemeral(i64),
    Container,
    /// A TTL node with this TTL in ms.
    Ttl(i64),
}

impl NodeKind {
    pub fn from_owner(owner: i64) -> Self {
        if owner == 0 {
            NodeKind::Persistent
        } else if owner == CONTAINER_EPHEMERAL_OWNER {
            NodeKind::Container
        } else if owner & TTL_EPHEMERAL_OWNER_MASK == TTL_EPHEMERAL_OWNER_MASK {
            NodeKind::Ttl(owner & TTL_VALUE_MASK)
        } else {
            NodeKind::Ephemeral(owner)
        }
    }
}

/// A node as stored, read through the tree: stat, data, ACL and children. Cheap to copy; it borrows the
/// tree.
#[derive(Clone, Copy)]
pub struct NodeRef<'a> {
    tree: &'a DataTree,
    id: Id,
    links: Links,
    name: &'a str,
    acl_id: u32,
    acl: &'a Arc<Vec<Acl>>,
    stat: NodeStat,
    data: Option<&'a [u8]>,
}

impl std::fmt::Debug for NodeRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("stat", &self.stat)
            .field("data", &self.data)
            .field("acl", &self.acl)
            .field("children", &self.links.children)
            .finish()
    }
}

/// A node `DataTree::link` added: its id, its stat and data length as stored.
struct Linked {
    id: Id,
    stat: NodeStat,
    data_len: usize,
}

/// A node's place in the store, taken from a `NodeRef` so that a change can name the node without looking
/// its path up again. Valid until the tree next changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeAt(Id);

impl<'a> NodeRef<'a> {
    pub(crate) fn at(&self) -> NodeAt {
        NodeAt(self.id)
    }

    pub fn stat(&self) -> NodeStat {
        self.stat
    }

    /// `None` when the client sent null data (it reads back as null, with dataLength 0).
    pub fn data(&self) -> Option<&'a [u8]> {
        self.data
    }

    pub fn acl(&self) -> &'a Arc<Vec<Acl>> {
        self.acl
    }

    /// The last component of the node's path ("" for the root).
    pub fn name(&self) -> &'a str {
        self.name
    }

    pub fn num_children(&self) -> usize {
        self.links.children as usize
    }

    pub fn has_children(&self) -> bool {
        self.links.children != 0
    }

    /// The children's names, in no particular order (the newest first).
    pub fn children(&self) -> impl Iterator<Item = &'a str> + 'a {
        let store = &self.tree.store;
        let mut next = self.links.first_child;
        std::iter::from_fn(move || {
            let (name, links) = store.name_and_links(next)?;
            next = links.next;
            Some(name)
        })
    }

    /// The children's names in name order (what getChildren returns; ZooKeeper returns its hash set's
    /// order, which clients may not rely on).
    pub fn sorted_children(&self) -> Vec<&'a str> {
        let mut names: Vec<&str> = self.children().collect();
        names.sort_unstable();
        names
    }

    pub fn kind(&self) -> NodeKind {
        NodeKind::from_owner(self.stat.ephemeral_owner)
    }

    pub fn data_len(&self) -> usize {
        self.data.map_or(0, <[u8]>::len)
    }

    /// The data as a client reads it.
    pub fn data_vec(&self) -> Option<Vec<u8>> {
        self.data.map(<[u8]>::to_vec)
    }

    /// The Stat clients see (`DataNode.copyStat`).
    pub fn client_stat(&self) -> Stat {
        client_stat(&self.stat, self.num_children(), self.data_len())
    }
}

/// The Stat clients see (`DataNode.copyStat`): cversion counts creations and deletions
/// (`2 * internal - numChildren`), containers and TTL nodes show ephemeralOwner 0, null data has
/// dataLength 0.
fn client_stat(stat: &NodeStat, num_children: usize, data_len: usize) -> Stat {
    let num_children = i32::try_from(num_children).unwrap_or(i32::MAX);
    Stat {
        czxid: stat.czxid,
        mzxid: stat.mzxid,
        ctime: stat.ctime,
        mtime: stat.mtime,
        version: stat.version,
        cversion: stat.cversion.wrapping_mul(2).wrapping_sub(num_children),
        aversion: stat.aversion,
        ephemeral_owner: match NodeKind::from_owner(stat.ephemeral_owner) {
            NodeKind::Ephemeral(owner) => owner,
            _ => 0,
        },
        data_length: i32::try_from(data_len).unwrap_or(i32::MAX),
        num_children,
        pzxid: stat.pzxid,
    }
}

/// What a create made: the new node's Stat as clients see it, its ACL list and its parent's.
#[derive(Clone, Debug)]
pub struct Created {
    pub stat: Stat,
    pub acl: Arc<Vec<Acl>>,
    pub parent_acl: Arc<Vec<Acl>>,
}

/// What a delete removed: the node's owner field, data length and ACL list, and its parent's ACL.
#[derive(Clone, Debug)]
pub struct Removed {
    pub ephemeral_owner: i64,
    pub data_len: usize,
    pub acl: Arc<Vec<Acl>>,
    pub parent_acl: Arc<Vec<Acl>>,
}

impl Removed {
    pub fn kind(&self) -> NodeKind {
        NodeKind::from_owner(self.ephemeral_owner)
    }
}

/// What a setData or setACL left: the node's Stat as clients see it and its ACL list.
#[derive(Clone, Debug)]
pub struct Changed {
    pub stat: Stat,
    pub acl: Arc<Vec<Acl>>,
}

/// `checkAndIncVersion`'s increment: Java int overflow, and -1 (which means "any version") skipped to 0
/// (ZOOKEEPER-4743).
pub fn next_version(current: i32) -> i32 {
    match current.wrapping_add(1) {
        -1 => 0,
        v => v,
    }
}

/// Every znode, by path.
/// Serialized as [`wire`] describes; deserialized node by node as it is read (no copy of the whole tree).
#[derive(Clone)]
pub struct DataTree {
    /// The nodes' records by id (see [`store`]).
    store: Store,
    /// Path → id for every node but the root.
    index: PathIndex,
    /// The nodes' ACL lists, each once.
    acls: AclTable,
    /// Paths of container nodes (rebuilt from ephemeralOwner on load, as ZooKeeper does).
    containers: OrdSet<Arc<str>>,
    /// Paths of TTL nodes.
    ttls: OrdSet<Arc<str>>,
    /// Σ (path length + data length), as ZooKeeper's `approximateDataSize`.
    approximate_data_size: i64,
    /// Quota prefixes (ZooKeeper's `pTrie`), derived from the `zookeeper_limits` nodes.
    quotas: QuotaIndex,
}

impl Default for DataTree {
    fn default() -> Self {
        Self::new()
    }
}

fn node_size(path: &str, data_len: usize) -> i64 {
    i64::try_from(path.len() + data_len).unwrap_or(i64::MAX)
}

/// Two trees are equal when they hold the same nodes (paths, stats, data, ACL lists).
impl PartialEq for DataTree {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.iter().zip(other.iter()).all(|((p, a), (q, b))| {
                p == q && a.stat == b.stat && a.data == b.data && a.acl == b.acl
            })
    }
}

impl std::fmt::Debug for DataTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl DataTree {
    /// No nodes at all (not even the root): what `new` and `from_loaded` fill.
    fn empty() -> Self {
        DataTree {
            store: Store::new(),
            index: PathIndex::new(),
            acls: AclTable::default(),
            containers: OrdSet::new(),
            ttls: OrdSet::new(),
            approximate_data_size: 0,
            quotas: QuotaIndex::default(),
        }
    }

    /// ZooKeeper's initial tree: `/`, `/zookeeper`, `/zookeeper/quota` (world:anyone ALL) and
    /// `/zookeeper/config` (world:anyone READ, aversion -1 because ZooKeeper sets its ACL with version
    /// -1). Every stat is zero and every data is empty (not null).
    pub fn new() -> Self {
        let open = Arc::new(crate::acl::open_acl_unsafe());
        let empty: Option<Arc<[u8]>> = Some(Arc::from(&[][..]));
        let mut tree = DataTree::empty();
        for p in [path::ROOT, path::ZOOKEEPER, path::QUOTA] {
            tree.add_loaded(p, empty.clone(), open.clone(), NodeStat::default());
        }
        let config_stat = NodeStat {
            aversion: -1,
            ..NodeStat::default()
        };
        tree.add_loaded(
            path::CONFIG,
            empty,
            Arc::new(crate::acl::read_acl_unsafe()),
            config_stat,
        );
        tree
    }

    /// The id of the node at `path`.
    fn lookup(&self, path: &str) -> Option<Id> {
        if path == path::ROOT {
            return (self.store.len() > 0).then_some(ROOT);
        }
        let hash = self.index.hash(path);
        self.index.find(hash, |id| self.has_path(id, path))
    }

    /// Is `path` the path of node `id`? Compares names from the node up to the root.
    fn has_path(&self, mut id: Id, path: &str) -> bool {
        let mut rest = path.as_bytes();
        loop {
            let Some((name, links)) = self.store.name_bytes_and_links(id) else {
                return false;
            };
            let Some(above) = rest.strip_suffix(name).and_then(|r| r.strip_suffix(b"/")) else {
                return false;
            };
            if links.parent == ROOT {
                return above.is_empty();
            }
            if above.is_empty() || links.parent == NONE {
                return false;
            }
            rest = above;
            id = links.parent;
        }
    }

    fn node(&self, id: Id) -> Option<NodeRef<'_>> {
        let rec = self.store.get(id)?;
        let acl = self.acls.get(rec.acl);
        debug_assert!(acl.is_some(), "node {:?} names a missing ACL", rec.name);
        Some(NodeRef {
            tree: self,
            id,
            links: rec.links,
            name: rec.name,
            acl_id: rec.acl,
            acl: acl?,
            stat: rec.stat,
            data: rec.data,
        })
    }

    /// Adds a node whose parent is already present, without touching the parent's stat: building the
    /// initial tree and ZooKeeper's `addConfigNode` (which the import uses for system nodes an old
    /// snapshot lacks). Returns false if the parent is missing or the path taken.
    pub(crate) fn add_loaded(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: Arc<Vec<Acl>>,
        stat: NodeStat,
    ) -> bool {
        let acl = self.acls.intern(acl);
        if path == path::ROOT {
            return self.add_root(data, acl, stat);
        }
        self.link(path, data, acl, stat, None, None).is_ok()
    }

    /// Adds the root to an empty tree. `acl` is interned with one user counted for the root (released
    /// if it is not added). Returns false if the tree is not empty.
    fn add_root(&mut self, data: Option<Arc<[u8]>>, acl: u32, stat: NodeStat) -> bool {
        let data_len = data.as_ref().map_or(0, |d| d.len());
        let root = Links::leaf(NONE, NONE);
        if !self.is_empty() || self.store.insert(&root, "", acl, &stat, data) != Some(ROOT) {
            self.acls.release(acl);
            return false;
        }
        self.note_added(path::ROOT, stat.ephemeral_owner, data_len);
        true
    }

    /// Adds a node under its existing parent; `parent_change` (if given) is applied to the parent's stat.
    /// `acl` is an interned list with one user counted for this node (released if the node is not
    /// added). `parent`, if given, must be the id of the node at `parent_of(path)` (a loader that knows
    /// it saves the lookup). Returns what it added (`Linked`).
    fn link(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: u32,
        stat: NodeStat,
        parent_change: Option<&dyn Fn(&mut NodeStat)>,
        parent: Option<Id>,
    ) -> Result<Linked, ErrorCode> {
        let linked = self.link_interned(path, data, acl, stat, parent_change, parent);
        if linked.is_err() {
            self.acls.release(acl);
        }
        linked
    }

    fn link_interned(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: u32,
        stat: NodeStat,
        parent_change: Option<&dyn Fn(&mut NodeStat)>,
        parent: Option<Id>,
    ) -> Result<Linked, ErrorCode> {
        let parent_path = parent_of(path).ok_or(ErrorCode::BadArguments)?;
        let hash = self.index.hash(path);
        if self
            .index
            .find(hash, |id| self.has_path(id, path))
            .is_some()
        {
            return Err(ErrorCode::NodeExists);
        }
        let parent = match parent {
            Some(id) => id,
            None => self.lookup(parent_path).ok_or(ErrorCode::NoNode)?,
        };
        let first = self
            .store
            .links(parent)
            .ok_or(ErrorCode::NoNode)?
            .first_child;
        let data_len = data.as_ref().map_or(0, |d| d.len());
        let Some(id) = self.store.insert(
            &Links::leaf(parent, first),
            child_name(path),
            acl,
            &stat,
            data,
        ) else {
            // Only a record too big for the store (a name of megabytes) or 2^31 ids get here.
            return Err(ErrorCode::BadArguments);
        };
        if first != NONE {
            self.store.set_links(first, |l| l.prev = id);
        }
        let parent_updated = self.store.update(parent, None, |links, _, stat| {
            links.first_child = id;
            links.children += 1;
            if let Some(change) = parent_change {
                change(stat);
            }
        });
        if !parent_updated {
            // The parent's record was read just above, so this cannot happen in a working store; if it
            // does, the node is taken out again rather than left in a tree whose reply says NoNode.
            if first != NONE {
                self.store.set_links(first, |l| l.prev = NONE);
            }
            self.store.remove(id);
            return Err(ErrorCode::NoNode);
        }
        self.index.insert(hash, id);
        self.note_added(path, stat.ephemeral_owner, data_len);
        // Nothing fails past the parent's update: `link` releases the ACL of a node it did not add.
        Ok(Linked { id, stat, data_len })
    }

    fn note_added(&mut self, path: &str, owner: i64, data_len: usize) {
        match NodeKind::from_owner(owner) {
            NodeKind::Container => {
                self.containers.insert(Arc::from(path));
            }
            NodeKind::Ttl(_) => {
                self.ttls.insert(Arc::from(path));
            }
            _ => {}
        }
        self.approximate_data_size += node_size(path, data_len);
        self.quotas.node_added(path);
    }

    pub fn get(&self, path: &str) -> Option<NodeRef<'_>> {
        self.node(self.lookup(path)?)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.lookup(path).is_some()
    }

    /// The number of znodes, the root included.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.len() == 0
    }

    /// The node count ZooKeeper reports (`srvr`, `mntr`): one more than [`DataTree::len`], because its
    /// node map holds the root twice (under "" and "/"). A fresh tree reports 5.
    pub fn node_count(&self) -> usize {
        self.len() + 1
    }

    /// `approximate_data_size` of `mntr`.
    pub fn approximate_data_size(&self) -> i64 {
        self.approximate_data_size
    }

    pub fn containers(&self) -> impl Iterator<Item = &str> {
        self.containers.iter().map(|p| &**p)
    }

    pub fn ttls(&self) -> impl Iterator<Item = &str> {
        self.ttls.iter().map(|p| &**p)
    }

    /// The children of `id` as (name, id), in name order.
    fn sorted_children(&self, id: Id) -> Vec<(&str, Id)> {
        let mut out = Vec::new();
        let mut next = self.store.links(id).map_or(NONE, |l| l.first_child);
        while let Some((name, links)) = self.store.name_and_links(next) {
            out.push((name, next));
            next = links.next;
        }
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Every node in pre-order (a parent before its children, children in name order), with its path.
    pub fn iter(&self) -> impl Iterator<Item = (Arc<str>, NodeRef<'_>)> + '_ {
        let mut stack: Vec<(Arc<str>, Id)> = if self.is_empty() {
            Vec::new()
        } else {
            vec![(Arc::from(path::ROOT), ROOT)]
        };
        std::iter::from_fn(move || loop {
            let (path, id) = stack.pop()?;
            let Some(node) = self.node(id) else {
                continue;
            };
            for (name, child) in self.sorted_children(id).into_iter().rev() {
                stack.push((Arc::from(path::join(&path, name)), child));
            }
            return Some((path, node));
        })
    }

    /// Calls `visit` with every node in pre-order (a parent before its children), with its path and
    /// record: what a snapshot's serialization walks, every node of a large tree. A node's children come
    /// oldest first (its child list backwards), not by name as in [`DataTree::iter`]: the walk then
    /// holds one cursor per level and one path buffer, where sorting would hold every child of a node at
    /// once (a node with a million children: 32 MB, and a sort of a million names). The loader puts each
    /// child first in its parent's list, so a tree loaded from this order has the same lists, and
    /// serializes to the same bytes again.
    fn walk_records<E>(
        &self,
        mut visit: impl FnMut(&str, &store::Rec<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(root) = self.store.get(ROOT) else {
            return Ok(());
        };
        let mut path = String::from(path::ROOT);
        visit(&path, &root)?;
        // Per level below the root: the next child to visit (walking back from the last), and the
        // length of the parent's path.
        let mut levels: Vec<(Id, usize)> = vec![(self.last_child(&root.links), path.len())];
        while let Some(&(id, parent_len)) = levels.last() {
            let Some(rec) = self.store.get(id) else {
                // NONE: this level is done.
                levels.pop();
                continue;
            };
            if let Some(level) = levels.last_mut() {
                level.0 = rec.links.prev;
            }
            path.truncate(parent_len);
            if parent_len != 1 {
                path.push('/');
            }
            path.push_str(rec.name);
            visit(&path, &rec)?;
            if rec.links.first_child != NONE {
                levels.push((self.last_child(&rec.links), path.len()));
            }
        }
        Ok(())
    }

    /// The last of a node's children in its child list (the oldest), or NONE.
    fn last_child(&self, links: &Links) -> Id {
        let mut last = NONE;
        let mut next = links.first_child;
        while let Some(child) = self.store.links(next) {
            last = next;
            next = child.next;
        }
        last
    }

    /// The number of nodes below `path` (`getAllChildrenNumber`); for `/`, every node but the root.
    pub fn descendant_count(&self, path: &str) -> usize {
        match self.lookup(path) {
            Some(ROOT) => self.len() - 1,
            Some(id) => {
                let mut count = 0;
                self.walk_below(id, |_| count += 1);
                count
            }
            None => 0,
        }
    }

    /// ZooKeeper's `getCounts`: the nodes of the subtree at `path` (itself included) and the sum of
    /// their data lengths; (0, 0) if there is no such node.
    pub fn subtree_counts(&self, path: &str) -> (i64, i64) {
        let Some(id) = self.lookup(path) else {
            return (0, 0);
        };
        let data_len = |id| {
            self.store
                .get(id)
                .and_then(|r| r.data)
                .map_or(0, <[u8]>::len)
        };
        let (mut count, mut bytes) = (1i64, data_len(id) as i64);
        self.walk_below(id, |child| {
            count += 1;
            bytes = bytes.saturating_add(data_len(child) as i64);
        });
        (count, bytes)
    }

    /// Calls `visit` with every node below `id` (not `id` itself).
    fn walk_below(&self, id: Id, mut visit: impl FnMut(Id)) {
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            let mut next = self.store.links(id).map_or(NONE, |l| l.first_child);
            while let Some(links) = self.store.links(next) {
                visit(next);
                stack.push(next);
                next = links.next;
            }
        }
    }

    /// Adds a node under an existing parent, bumping the parent's internal cversion and pzxid
    /// (`DataTree.createNode`). Returns what clients see of the new node and the ACL lists.
    pub(crate) fn create(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: Arc<Vec<Acl>>,
        ephemeral_owner: i64,
        zxid: i64,
        time_ms: i64,
    ) -> Result<Created, ErrorCode> {
        self.create_under(path, data, acl, ephemeral_owner, zxid, time_ms, None)
    }

    /// `create`, with the parent's place if the caller has already looked it up (it must be the parent of
    /// `path`, looked up since the tree last changed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_under(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: Arc<Vec<Acl>>,
        ephemeral_owner: i64,
        zxid: i64,
        time_ms: i64,
        parent: Option<NodeAt>,
    ) -> Result<Created, ErrorCode> {
        if path == path::ROOT {
            return Err(ErrorCode::NodeExists);
        }
        let stat = NodeStat::created(zxid, time_ms, ephemeral_owner);
        let bump = |s: &mut NodeStat| {
            s.cversion = s.cversion.wrapping_add(1);
            s.pzxid = zxid;
        };
        let data_len = data.as_ref().map_or(0, |d| d.len());
        let parent = match parent {
            Some(p) => p.0,
            None => {
                let parent_path = parent_of(path).ok_or(ErrorCode::BadArguments)?;
                self.lookup(parent_path).ok_or(ErrorCode::NoNode)?
            }
        };
        // Everything the reply needs is read before the tree changes, so nothing can fail once the node
        // is in (a node that exists has a parent, so NodeExists still comes before this NoNode).
        let parent_acl = self
            .store
            .get(parent)
            .and_then(|rec| self.acls.get(rec.acl))
            .ok_or(ErrorCode::NoNode)?
            .clone();
        let interned = self.acls.intern(acl.clone());
        let linked = self.link(path, data, interned, stat, Some(&bump), Some(parent))?;
        // What the new node holds is known: no need to read its record back.
        let created = Created {
            stat: client_stat(&linked.stat, 0, linked.data_len),
            acl,
            parent_acl,
        };
        quota::node_created(self, path, data_len);
        Ok(created)
    }

    /// Removes a node (which must have no children) and its name from its parent, setting the parent's
    /// pzxid (`DataTree.deleteNode`; the parent's cversion does not change). Returns what was removed.
    pub(crate) fn delete(&mut self, path: &str, zxid: i64) -> Option<Removed> {
        if path == path::ROOT {
            return None;
        }
        let hash = self.index.hash(path);
        let id = self.index.find(hash, |id| self.has_path(id, path))?;
        let node = self.node(id)?;
        if node.has_children() {
            return None;
        }
        let links = node.links;
        let parent = self.node(links.parent)?;
        let removed = Removed {
            ephemeral_owner: node.stat.ephemeral_owner,
            data_len: node.data_len(),
            acl: node.acl.clone(),
            parent_acl: parent.acl.clone(),
        };
        let acl_id = node.acl_id;
        if links.prev != NONE {
            self.store.set_links(links.prev, |l| l.next = links.next);
        }
        if links.next != NONE {
            self.store.set_links(links.next, |l| l.prev = links.prev);
        }
        self.store.update(links.parent, None, |l, _, stat| {
            if l.first_child == id {
                l.first_child = links.next;
            }
            l.children -= 1;
            if zxid > stat.pzxid {
                stat.pzxid = zxid;
            }
        });
        self.store.remove(id);
        self.index.remove(hash, id);
        self.acls.release(acl_id);
        match removed.kind() {
            NodeKind::Container => {
                self.containers.remove(path);
            }
            NodeKind::Ttl(_) => {
                self.ttls.remove(path);
            }
            _ => {}
        }
        self.approximate_data_size -= node_size(path, removed.data_len);
        self.quotas.node_removed(path);
        quota::node_deleted(self, path, removed.data_len);
        Some(removed)
    }

    /// `DataTree.setData`: new data, mtime, mzxid and version.
    pub(crate) fn set_data(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        version: i32,
        zxid: i64,
        time_ms: i64,
    ) -> Option<Changed> {
        let node = self.get(path)?;
        let (at, old_len) = (node.at(), node.data_len());
        self.set_data_at(at, old_len, path, data, version, zxid, time_ms)
    }

    /// [`DataTree::set_data`] of the node at `path`, found at `at` holding `old_len` bytes (a `NodeRef`
    /// taken since the tree last changed): the path is not looked up, nor the record read, again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn set_data_at(
        &mut self,
        at: NodeAt,
        old_len: usize,
        path: &str,
        data: Option<Arc<[u8]>>,
        version: i32,
        zxid: i64,
        time_ms: i64,
    ) -> Option<Changed> {
        let new_len = data.as_ref().map_or(0, |d| d.len());
        let mut after = None;
        let updated = self.store.update(at.0, Some(data), |links, acl, stat| {
            stat.mtime = time_ms;
            stat.mzxid = zxid;
            stat.version = version;
            after = Some((client_stat(stat, links.children as usize, new_len), *acl));
        });
        let (stat, acl_id) = after.filter(|_| updated)?;
        let acl = self.acls.get(acl_id)?.clone();
        self.approximate_data_size += node_size("", new_len) - node_size("", old_len);
        quota::data_set(self, path, old_len, new_len);
        Some(Changed { stat, acl })
    }

    /// Replaces a node's data and nothing else (ZooKeeper's quota code assigns `node.data` directly:
    /// no version, mzxid or mtime change). Returns false if there is no such node.
    pub(crate) fn set_data_keep_stat(&mut self, path: &str, data: Option<Arc<[u8]>>) -> bool {
        let Some(id) = self.lookup(path) else {
            return false;
        };
        let old_len = self.node(id).map_or(0, |n| n.data_len());
        let new_len = data.as_ref().map_or(0, |d| d.len());
        self.store.update(id, Some(data), |_, _, _| {});
        self.approximate_data_size += node_size("", new_len) - node_size("", old_len);
        true
    }

    /// The quota prefixes, kept as ZooKeeper's `pTrie` (see [`crate::quota`]).
    pub fn quotas(&self) -> &QuotaIndex {
        &self.quotas
    }

    /// `DataTree.setACL`: new ACL and aversion (mzxid does not change).
    pub(crate) fn set_acl(
        &mut self,
        path: &str,
        acl: Arc<Vec<Acl>>,
        aversion: i32,
    ) -> Option<Changed> {
        let id = self.lookup(path)?;
        let old = self.node(id)?.acl_id;
        let new = self.acls.intern(acl);
        self.store.update(id, None, |_, acl, stat| {
            *acl = new;
            stat.aversion = aversion;
        });
        self.acls.release(old);
        let node = self.node(id)?;
        Some(Changed {
            stat: node.client_stat(),
            acl: node.acl.clone(),
        })
    }

    /// A tree of exactly these nodes, given parents first (the root first), each as it is stored: no
    /// parent stat changes, no quota updates (the ZooKeeper import, [`crate::import`]). The container,
    /// TTL and quota indexes and the data size are derived from the nodes.
    pub(crate) fn from_loaded(
        nodes: impl IntoIterator<Item = (String, Option<Arc<[u8]>>, Arc<Vec<Acl>>, NodeStat)>,
    ) -> Result<DataTree, TreeLoadError> {
        let mut loader = Loader::new(0);
        for (path, data, acl, stat) in nodes {
            let acl = loader.tree.acls.intern(acl);
            loader.add(&path, data, acl, stat)?;
        }
        loader.finish()
    }

    /// Room for `nodes` more nodes in the path index (before a load).
    fn reserve(&mut self, nodes: usize) {
        self.index.reserve(nodes);
    }

    /// Sets a node's internal cversion and pzxid (ZooKeeper's `setCversionPzxid` and the parent update
    /// of `createNode` as a replay applies them, [`crate::import`]). Returns false if there is no such
    /// node.
    pub(crate) fn set_cversion_pzxid(&mut self, path: &str, cversion: i32, pzxid: i64) -> bool {
        let Some(id) = self.lookup(path) else {
            return false;
        };
        self.store.update(id, None, |_, _, stat| {
            stat.cversion = cversion;
            stat.pzxid = pzxid;
        })
    }

    /// Changes a node's stat directly, for tests that need stats no sequence of writes reaches quickly.
    #[cfg(test)]
    pub(crate) fn change_stat(&mut self, path: &str, change: impl FnOnce(&mut NodeStat)) -> bool {
        let Some(id) = self.lookup(path) else {
            return false;
        };
        self.store.update(id, None, |_, _, stat| change(stat))
    }

    /// Checks the tree's invariants: every node but the root sits in its parent's child list and is
    /// found by its path, child counts and sibling links agree, the ACL lists' user counts, the
    /// container/TTL indexes and the data size match the nodes.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.store.links(ROOT).is_none() {
            return Err("no root".into());
        }
        let mut containers = OrdSet::new();
        let mut ttls = OrdSet::new();
        let mut size = 0;
        let mut quotas = QuotaIndex::default();
        let mut acl_users: std::collections::HashMap<u32, u64> = Default::default();
        let mut seen = 0usize;
        for (p, n) in self.iter() {
            seen += 1;
            quotas.node_added(&p);
            *acl_users.entry(n.acl_id).or_default() += 1;
            if self.lookup(&p).and_then(|id| self.node(id)).map(|m| m.name) != Some(n.name) {
                return Err(format!("{p} is not found by its path"));
            }
            let mut count = 0u32;
            let mut prev = NONE;
            let mut next = n.links.first_child;
            while next != NONE {
                let child = self
                    .store
                    .links(next)
                    .ok_or_else(|| format!("{p} lists missing child #{next}"))?;
                if child.prev != prev {
                    return Err(format!("{p}: sibling links disagree at #{next}"));
                }
                if child.parent != n.id {
                    return Err(format!("{p}: child #{next} names another parent"));
                }
                count += 1;
                prev = next;
                next = child.next;
            }
            if count != n.links.children {
                return Err(format!(
                    "{p} counts {} children but lists {count}",
                    n.links.children
                ));
            }
            match n.kind() {
                NodeKind::Container => {
                    containers.insert(p.clone());
                }
                NodeKind::Ttl(_) => {
                    ttls.insert(p.clone());
                }
                _ => {}
            }
            size += node_size(&p, n.data_len());
        }
        if seen != self.len() || self.index.len() + 1 != self.len() {
            return Err(format!(
                "{seen} nodes reachable, {} stored, {} indexed",
                self.len(),
                self.index.len()
            ));
        }
        if self
            .acls
            .users()
            .any(|(id, users)| acl_users.get(&id) != Some(&users))
            || acl_users.len() != self.acls.users().count()
        {
            return Err("ACL user counts out of date".into());
        }
        if containers != self.containers || ttls != self.ttls {
            return Err("container/TTL index out of date".into());
        }
        if quotas != self.quotas {
            return Err("quota index out of date".into());
        }
        if size != self.approximate_data_size {
            return Err(format!(
                "data size {} but nodes add up to {size}",
                self.approximate_data_size
            ));
        }
        Ok(())
    }
}

/// Why a serialized tree could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeLoadError {
    #[error("the first node of a serialized tree must be the root, found {0:?}")]
    NoRoot(String),
    #[error("node {0:?} comes before its parent or has none")]
    Orphan(String),
    #[error("node {0:?} appears twice")]
    Duplicate(String),
    #[error("node {path:?} names ACL #{index}, which does not exist")]
    BadAclIndex { path: String, index: u32 },
}

/// Builds a tree from nodes given parents first, the root first: a serialized tree's pre-order, or
/// ZooKeeper's. In a depth-first pre-order a node's parent is the node before it or one of that node's
/// ancestors, so the loader keeps that chain (each as the length of its path, a prefix of the last path)
/// and takes the parent from it without a lookup; any other parents-first order falls back to a lookup.
struct Loader {
    tree: DataTree,
    /// The path of the node added last.
    last: String,
    /// The node added last and its ancestors, root first: (length of its path, id).
    chain: Vec<(usize, Id)>,
}

impl Loader {
    /// A loader for about `nodes` nodes (room is made for them up front).
    fn new(nodes: usize) -> Loader {
        let mut tree = DataTree::empty();
        tree.reserve(nodes);
        Loader {
            tree,
            last: String::new(),
            chain: Vec::new(),
        }
    }

    /// Adds one node; `acl` is interned in the tree's table with one user counted for this node.
    fn add(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: u32,
        stat: NodeStat,
    ) -> Result<(), TreeLoadError> {
        let tree = &mut self.tree;
        let id = if tree.is_empty() || path == path::ROOT {
            if !tree.is_empty() {
                tree.acls.release(acl);
                return Err(TreeLoadError::Duplicate(path.to_owned()));
            }
            if path != path::ROOT {
                tree.acls.release(acl);
                return Err(TreeLoadError::NoRoot(path.to_owned()));
            }
            if !tree.add_root(data, acl, stat) {
                return Err(TreeLoadError::Orphan(path.to_owned()));
            }
            self.chain.clear();
            ROOT
        } else {
            let parent = parent_of(path).and_then(|p| {
                while let Some(&(len, id)) = self.chain.last() {
                    if len == p.len() && self.last.as_bytes().get(..len) == Some(p.as_bytes()) {
                        return Some(id);
                    }
                    self.chain.pop();
                }
                None
            });
            // No parent on the chain (not a depth-first order): `link` looks it up, and the chain starts
            // again from this node.
            match tree.link(path, data, acl, stat, None, parent) {
                Ok(linked) => linked.id,
                Err(ErrorCode::NodeExists) => {
                    return Err(TreeLoadError::Duplicate(path.to_owned()))
                }
                Err(_) => return Err(TreeLoadError::Orphan(path.to_owned())),
            }
        };
        self.chain.push((path.len(), id));
        self.last.clear();
        self.last.push_str(path);
        Ok(())
    }

    fn finish(self) -> Result<DataTree, TreeLoadError> {
        if self.tree.is_empty() {
            return Err(TreeLoadError::NoRoot(String::new()));
        }
        Ok(self.tree)
    }
}

/// The serialized form of the tree: nodes in pre-order (parents first, so children lists need not be
/// stored) and each distinct ACL list once.
mod wire {
    use super::*;
    use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
    use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

    #[derive(Deserialize)]
    pub(super) struct WireNode {
        pub(super) path: Arc<str>,
        pub(super) data: Option<Arc<[u8]>>,
        pub(super) acl: u32,
        pub(super) stat: NodeStat,
    }

    /// A node as [`WireNode`] reads it back, borrowed from the tree.
    #[derive(Serialize)]
    struct WireNodeRef<'a> {
        path: &'a str,
        data: Option<&'a [u8]>,
        acl: u32,
        stat: NodeStat,
    }

    /// The nodes in pre-order, serialized one by one as the tree is walked (no copy of the tree).
    struct Nodes<'a> {
        tree: &'a DataTree,
        /// The store's ACL id -> its index in the serialized list.
        acl_index: &'a std::collections::HashMap<u32, u32>,
    }

    impl Serialize for Nodes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.tree.len()))?;
            // Neighbours in the walk mostly share their ACL list: the last lookup is kept.
            let mut last: Option<(u32, u32)> = None;
            self.tree.walk_records(|path, rec| {
                let acl = match last {
                    Some((id, index)) if id == rec.acl => index,
                    _ => {
                        // A node whose list is not in the table is a broken tree: refuse to write a
                        // snapshot that the loader would refuse at the next start.
                        let Some(&index) = self.acl_index.get(&rec.acl) else {
                            return Err(serde::ser::Error::custom(format!(
                                "node {path}: ACL id {} is not in the ACL table",
                                rec.acl
                            )));
                        };
                        last = Some((rec.acl, index));
                        index
                    }
                };
                seq.serialize_element(&WireNodeRef {
                    path,
                    data: rec.data,
                    acl,
                    stat: rec.stat,
                })
            })?;
            seq.end()
        }
    }

    /// Each distinct ACL list once, in the lists' own order (one pass over the table; the ids' order
    /// would depend on the tree's history).
    impl Serialize for DataTree {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut acl_index = std::collections::HashMap::new();
            let mut acls: Vec<&Arc<Vec<Acl>>> = Vec::new();
            for (list, id) in self.acls.in_value_order() {
                let index = u32::try_from(acls.len()).expect("fewer than 2^32 distinct ACLs");
                acl_index.insert(id, index);
                acls.push(list);
            }
            let mut tree = s.serialize_struct("Tree", 2)?;
            tree.serialize_field("acls", &acls)?;
            tree.serialize_field(
                "nodes",
                &Nodes {
                    tree: self,
                    acl_index: &acl_index,
                },
            )?;
            tree.end()
        }
    }

    /// A serialized tree's nodes loaded as they are read, against its ACL lists.
    pub(super) struct WireLoader {
        loader: Loader,
        /// Each serialized list, with its id in the tree's table once a node has used it.
        acls: Vec<(Arc<Vec<Acl>>, Option<u32>)>,
    }

    impl WireLoader {
        /// `nodes`: how many nodes the input says it holds (room is made for at most 2^24 up front).
        pub(super) fn new(acls: Vec<Arc<Vec<Acl>>>, nodes: usize) -> WireLoader {
            WireLoader {
                loader: Loader::new(nodes.min(1 << 24)),
                acls: acls.into_iter().map(|a| (a, None)).collect(),
            }
        }

        pub(super) fn add(&mut self, n: WireNode) -> Result<(), TreeLoadError> {
            let table = &mut self.loader.tree.acls;
            let acl = match self.acls.get_mut(n.acl as usize) {
                Some((_, Some(id))) => {
                    table.add_user(*id);
                    *id
                }
                Some((list, id @ None)) => *id.insert(table.intern(list.clone())),
                None => {
                    return Err(TreeLoadError::BadAclIndex {
                        path: n.path.to_string(),
                        index: n.acl,
                    })
                }
            };
            self.loader.add(&n.path, n.data, acl, n.stat)
        }

        pub(super) fn finish(self) -> Result<DataTree, TreeLoadError> {
            self.loader.finish()
        }
    }

    impl<'de> Deserialize<'de> for DataTree {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_struct("Tree", &["acls", "nodes"], TreeVisitor)
        }
    }

    struct TreeVisitor;

    impl<'de> Visitor<'de> for TreeVisitor {
        type Value = DataTree;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a tree: its ACL lists, then its nodes in pre-order")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DataTree, A::Error> {
            let acls: Vec<Arc<Vec<Acl>>> = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(0, &self))?;
            seq.next_element_seed(NodesSeed(acls))?
                .ok_or_else(|| de::Error::invalid_length(1, &self))
        }
    }

    /// The `nodes` field, loaded into the tree one by one.
    struct NodesSeed(Vec<Arc<Vec<Acl>>>);

    impl<'de> DeserializeSeed<'de> for NodesSeed {
        type Value = DataTree;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DataTree, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for NodesSeed {
        type Value = DataTree;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a tree's nodes in pre-order")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DataTree, A::Error> {
            let mut loader = WireLoader::new(self.0, seq.size_hint().unwrap_or(0));
            while let Some(node) = seq.next_element::<WireNode>()? {
                loader.add(node).map_err(de::Error::custom)?;
            }
            loader.finish().map_err(de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxkeeper_proto::perms;

    fn open() -> Arc<Vec<Acl>> {
        Arc::new(crate::acl::open_acl_unsafe())
    }

    #[test]
    fn initial_tree_matches_zookeeper() {
        let t = DataTree::new();
        assert_eq!(t.len(), 4);
        assert_eq!(t.node_count(), 5);
        assert_eq!(t.approximate_data_size(), 44);
        let root = t.get("/").unwrap();
        assert_eq!(root.data, Some(&[][..]));
        assert_eq!(
            root.acl.as_slice(),
            crate::acl::open_acl_unsafe().as_slice()
        );
        // Internal cversion 0 with one child: clients see -1, as on a fresh ZooKeeper.
        assert_eq!(root.client_stat().cversion, -1);
        assert_eq!(root.client_stat().num_children, 1);
        assert_eq!(t.get("/zookeeper").unwrap().client_stat().cversion, -2);
        let config = t.get("/zookeeper/config").unwrap();
        assert_eq!(config.acl[0].perms, perms::READ);
        assert_eq!(config.stat.aversion, -1);
        assert_eq!(
            t.get("/zookeeper/quota").unwrap().client_stat(),
            Stat::default()
        );
        assert_eq!(t.descendant_count("/"), 3);
        assert_eq!(t.descendant_count("/zookeeper"), 2);
        t.check_invariants().unwrap();
    }

    #[test]
    fn create_under_a_damaged_parent_fails_without_adding_the_node() {
        let mut t = DataTree::new();
        t.create("/p", None, open(), 0, 1, 1).unwrap();
        let at = t.get("/p").unwrap().at();
        let (len, nodes) = (t.len(), t.node_count());
        let users: Vec<(u32, u64)> = t.acls.users().collect();
        t.store.damage_name(at.0);
        let result = t.create_under("/p/c", None, open(), 0, 2, 2, Some(at));
        assert_eq!(result.err(), Some(ErrorCode::NoNode));
        // The node is not in the store, the index or the parent's links, and no ACL user was kept for it.
        assert_eq!((t.len(), t.node_count()), (len, nodes));
        assert!(t.get("/p/c").is_none());
        assert_eq!(t.store.links(at.0).unwrap().children, 0);
        assert_eq!(t.acls.users().collect::<Vec<_>>(), users);
    }

    #[test]
    fn link_under_a_parent_whose_update_fails_takes_the_node_out_again() {
        // The loaders' way in (no read of the parent's whole record first): the insert happens, the
        // parent's update fails, and the node and its sibling link are undone.
        let mut t = DataTree::new();
        t.create("/p", None, open(), 0, 1, 1).unwrap();
        t.create("/p/a", None, open(), 0, 2, 2).unwrap();
        let parent = t.get("/p").unwrap().at().0;
        let sibling = t.get("/p/a").unwrap().at().0;
        let (len, nodes) = (t.len(), t.node_count());
        t.store.damage_name(parent);
        let acl = t.acls.intern(open());
        let stat = NodeStat::created(3, 3, 0);
        let linked = t.link("/p/b", None, acl, stat, None, Some(parent));
        assert_eq!(linked.err(), Some(ErrorCode::NoNode));
        assert_eq!((t.len(), t.node_count()), (len, nodes));
        assert!(t.get("/p/b").is_none());
        assert_eq!(t.store.links(sibling).unwrap().prev, NONE);
        assert_eq!(t.store.links(parent).unwrap().first_child, sibling);
    }

    #[test]
    fn create_bumps_parent_cversion_and_pzxid() {
        let mut t = DataTree::new();
        let created = t.create("/a", None, open(), 0, 5, 100).unwrap();
        assert_eq!(*created.parent_acl, crate::acl::open_acl_unsafe());
        let s = created.stat;
        assert_eq!((s.czxid, s.mzxid, s.pzxid), (5, 5, 5));
        assert_eq!((s.ctime, s.mtime), (100, 100));
        assert_eq!(s.data_length, 0);
        let root = t.get("/").unwrap();
        assert_eq!(root.stat.cversion, 1);
        assert_eq!(root.stat.pzxid, 5);
        assert_eq!(
            t.create("/a", None, open(), 0, 6, 100).unwrap_err(),
            ErrorCode::NodeExists
        );
        assert_eq!(
            t.create("/x/y", None, open(), 0, 6, 100).unwrap_err(),
            ErrorCode::NoNode
        );
        t.check_invariants().unwrap();
    }

    #[test]
    fn client_cversion_counts_creates_and_deletes() {
        let mut t = DataTree::new();
        t.create("/p", None, open(), 0, 1, 0).unwrap();
        t.create("/p/a", None, open(), 0, 2, 0).unwrap();
        t.create("/p/b", None, open(), 0, 3, 0).unwrap();
        t.delete("/p/a", 4).unwrap();
        let p = t.get("/p").unwrap();
        assert_eq!(p.stat.cversion, 2);
        assert_eq!(p.stat.pzxid, 4);
        assert_eq!(p.client_stat().cversion, 3);
        assert_eq!(p.client_stat().num_children, 1);
    }

    #[test]
    fn delete_refuses_root_and_non_empty_nodes() {
        let mut t = DataTree::new();
        t.create("/p", None, open(), 0, 1, 0).unwrap();
        t.create("/p/a", None, open(), 0, 2, 0).unwrap();
        assert!(t.delete("/p", 3).is_none());
        assert!(t.delete("/", 3).is_none());
        assert!(t.delete("/nope", 3).is_none());
    }

    #[test]
    fn client_stat_hides_container_and_ttl_owners() {
        let mut t = DataTree::new();
        let c = t
            .create("/c", None, open(), CONTAINER_EPHEMERAL_OWNER, 1, 0)
            .unwrap();
        assert_eq!(t.get("/c").unwrap().kind(), NodeKind::Container);
        assert_eq!(c.stat.ephemeral_owner, 0);
        let ttl_owner = TTL_EPHEMERAL_OWNER_MASK | 5000;
        let t1 = t.create("/t", None, open(), ttl_owner, 2, 0).unwrap();
        assert_eq!(t.get("/t").unwrap().kind(), NodeKind::Ttl(5000));
        assert_eq!(t1.stat.ephemeral_owner, 0);
        let e = t
            .create("/e", None, open(), 0x0100_0000_0000_0001, 3, 0)
            .unwrap();
        assert_eq!(e.stat.ephemeral_owner, 0x0100_0000_0000_0001);
        assert_eq!(t.containers().collect::<Vec<_>>(), ["/c"]);
        assert_eq!(t.ttls().collect::<Vec<_>>(), ["/t"]);
        t.delete("/c", 4).unwrap();
        t.delete("/t", 5).unwrap();
        assert_eq!(t.containers().count() + t.ttls().count(), 0);
        t.check_invariants().unwrap();
    }

    #[test]
    fn null_and_empty_data_both_have_length_zero() {
        let mut t = DataTree::new();
        let n = t.create("/n", None, open(), 0, 1, 0).unwrap();
        assert_eq!(n.stat.data_length, 0);
        assert_eq!(t.get("/n").unwrap().data_vec(), None);
        let n = t
            .set_data("/n", Some(Arc::from(&b"abc"[..])), 1, 2, 9)
            .unwrap();
        assert_eq!(n.stat.data_length, 3);
        assert_eq!(n.stat.mtime, 9);
        assert_eq!(n.stat.mzxid, 2);
        assert_eq!(n.stat.czxid, 1);
        assert_eq!(t.approximate_data_size(), 44 + 2 + 3);
        t.check_invariants().unwrap();
    }

    #[test]
    fn version_overflow_skips_minus_one() {
        assert_eq!(next_version(0), 1);
        assert_eq!(next_version(i32::MAX), i32::MIN);
        assert_eq!(next_version(-2), 0);
        assert_eq!(next_version(-1), 0);
    }

    #[test]
    fn descendant_count_counts_the_whole_subtree() {
        let mut t = DataTree::new();
        for (i, p) in ["/a", "/a/b", "/a/b/c", "/a/d", "/ab"].iter().enumerate() {
            t.create(p, None, open(), 0, i as i64 + 1, 0).unwrap();
        }
        assert_eq!(t.descendant_count("/a"), 3);
        assert_eq!(t.descendant_count("/a/b/c"), 0);
        assert_eq!(t.descendant_count("/"), 8);
        assert_eq!(t.descendant_count("/missing"), 0);
    }

    #[test]
    fn clone_is_a_point_in_time_snapshot() {
        let mut t = DataTree::new();
        t.create("/a", Some(Arc::from(&b"1"[..])), open(), 0, 1, 0)
            .unwrap();
        let snap = t.clone();
        t.set_data("/a", Some(Arc::from(&b"2"[..])), 1, 2, 0)
            .unwrap();
        t.create("/b", None, open(), 0, 3, 0).unwrap();
        assert_eq!(snap.get("/a").unwrap().data, Some(&b"1"[..]));
        assert!(!snap.contains("/b"));
        assert_eq!(snap.get("/").unwrap().num_children(), 2);
    }

    #[test]
    fn serialized_tree_round_trips() {
        let mut t = DataTree::new();
        t.create("/a", Some(Arc::from(&b"x"[..])), open(), 0, 1, 7)
            .unwrap();
        t.create("/a/b", None, open(), CONTAINER_EPHEMERAL_OWNER, 2, 7)
            .unwrap();
        t.create(
            "/t",
            None,
            Arc::new(crate::acl::read_acl_unsafe()),
            TTL_EPHEMERAL_OWNER_MASK | 9,
            3,
            7,
        )
        .unwrap();
        t.delete("/t", 4).unwrap();
        let bytes = postcard::to_allocvec(&t).unwrap();
        let back: DataTree = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, t);
        back.check_invariants().unwrap();
        // Serialization is deterministic: same tree, same bytes.
        assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
    }

    /// The loader takes a parent from the chain of the last node's ancestors when the order is
    /// depth-first and looks it up otherwise: both give the same tree, ACL user counts included.
    #[test]
    fn loading_takes_any_parents_first_order() {
        let read = Arc::new(crate::acl::read_acl_unsafe());
        let paths = ["/a", "/b", "/a/x", "/b/y", "/a/x/z", "/a/w", "/b/y/v", "/c"];
        let mut built = DataTree::empty();
        assert!(built.add_loaded("/", None, open(), NodeStat::default()));
        for (i, p) in paths.iter().enumerate() {
            let acl = if i % 2 == 0 { open() } else { read.clone() };
            let stat = NodeStat::created(i as i64 + 1, 10, 0);
            assert!(built.add_loaded(p, None, acl, stat), "{p}");
        }
        built.check_invariants().unwrap();
        let nodes = |order: &[&str]| {
            let mut v = vec![(String::from("/"), None, open(), NodeStat::default())];
            for p in order {
                let i = paths.iter().position(|q| q == p).unwrap();
                let acl = if i % 2 == 0 { open() } else { read.clone() };
                v.push((
                    p.to_string(),
                    None,
                    acl,
                    NodeStat::created(i as i64 + 1, 10, 0),
                ));
            }
            v
        };
        // Breadth-first (every parent found by a lookup), then depth-first in two sibling orders.
        for order in [
            &paths[..],
            &["/a", "/a/x", "/a/x/z", "/a/w", "/b", "/b/y", "/b/y/v", "/c"][..],
            &["/c", "/b", "/b/y", "/b/y/v", "/a", "/a/w", "/a/x", "/a/x/z"][..],
        ] {
            let loaded = DataTree::from_loaded(nodes(order)).unwrap();
            loaded.check_invariants().unwrap();
            assert!(loaded == built, "{order:?}");
        }
        // A node after a sibling's subtree whose parent is not on the chain any more: looked up.
        let mut late = nodes(&["/a", "/a/x", "/b", "/b/y"]);
        late.push((
            "/a/w".into(),
            None,
            read.clone(),
            NodeStat::created(6, 10, 0),
        ));
        let loaded = DataTree::from_loaded(late).unwrap();
        loaded.check_invariants().unwrap();
        assert!(loaded.contains("/a/w"));
        assert_eq!(loaded.get("/a").unwrap().num_children(), 2);
    }

    #[test]
    fn a_node_whose_acl_is_not_in_the_table_is_not_serialized() {
        let mut t = DataTree::new();
        let own = Arc::new(vec![Acl {
            perms: perms::ALL,
            id: crate::acl::id("digest", "u:x"),
        }]);
        t.create("/a", None, own, 0, 5, 100).unwrap();
        assert!(postcard::to_allocvec(&t).is_ok());
        // Break the tree: the list goes from the table while the node still names it.
        let acl = t.node(t.lookup("/a").unwrap()).unwrap().acl_id;
        t.acls.release(acl);
        assert!(
            postcard::to_allocvec(&t).is_err(),
            "a dangling ACL id must not be written"
        );
    }

    #[test]
    fn loading_refuses_orphans_duplicates_and_bad_acl_indexes() {
        let node = |p: &str, acl: u32| wire::WireNode {
            path: Arc::from(p),
            data: None,
            acl,
            stat: NodeStat::default(),
        };
        let load = |nodes: Vec<wire::WireNode>| {
            let mut loader = wire::WireLoader::new(vec![open()], nodes.len());
            for n in nodes {
                loader.add(n)?;
            }
            loader.finish()
        };
        assert!(load(vec![node("/", 0), node("/a", 0)]).is_ok());
        assert_eq!(load(vec![]), Err(TreeLoadError::NoRoot(String::new())));
        assert_eq!(
            load(vec![node("/a", 0)]),
            Err(TreeLoadError::NoRoot("/a".into()))
        );
        assert_eq!(
            load(vec![node("/", 0), node("/a/b", 0)]),
            Err(TreeLoadError::Orphan("/a/b".into()))
        );
        assert_eq!(
            load(vec![node("/", 0), node("/a", 0), node("/a", 0)]),
            Err(TreeLoadError::Duplicate("/a".into()))
        );
        assert_eq!(
            load(vec![node("/", 0), node("/", 0)]),
            Err(TreeLoadError::Duplicate("/".into()))
        );
        assert_eq!(
            load(vec![node("/", 1)]),
            Err(TreeLoadError::BadAclIndex {
                path: "/".into(),
                index: 1
            })
        );
    }

    #[test]
    fn thousands_of_nodes_span_chunks_and_survive_churn_and_clones() {
        let mut t = DataTree::new();
        t.create("/p", None, open(), 0, 1, 0).unwrap();
        for i in 0..2000 {
            let data: Arc<[u8]> = Arc::from(vec![i as u8; i % 200]);
            t.create(
                &format!("/p/n{i:04}"),
                Some(data),
                open(),
                0,
                2 + i as i64,
                0,
            )
            .unwrap();
        }
        let before = t.clone();
        for i in (0..2000).step_by(2) {
            t.delete(&format!("/p/n{i:04}"), 5000).unwrap();
        }
        for round in 0..5 {
            for i in (1..2000).step_by(2) {
                let data: Arc<[u8]> = Arc::from(vec![round as u8; (i * round) % 300]);
                t.set_data(&format!("/p/n{i:04}"), Some(data), round as i32, 6000, 0)
                    .unwrap();
            }
        }
        // Freed ids are taken again.
        for i in 0..500 {
            t.create(&format!("/p/m{i}"), None, open(), 0, 7000, 0)
                .unwrap();
        }
        t.check_invariants().unwrap();
        before.check_invariants().unwrap();
        assert_eq!(t.get("/p").unwrap().num_children(), 1500);
        assert_eq!(before.get("/p").unwrap().num_children(), 2000);
        let n = t.get("/p/n1999").unwrap();
        assert_eq!(n.data(), Some(&vec![4u8; (1999 * 4) % 300][..]));
        assert_eq!(n.stat().version, 4);
        assert_eq!(
            before.get("/p/n1999").unwrap().data().unwrap().len(),
            1999 % 200
        );
        assert!(before.contains("/p/n0000") && !t.contains("/p/n0000"));
        assert_eq!(t.descendant_count("/p"), 1500);
        assert_eq!(t.subtree_counts("/p").0, 1501);
    }

    /// The store against a plain model: random creates, deletes, setData and setACL (with data of every
    /// storage kind, several ACL lists, deep and wide trees), clones taken along the way; after every
    /// step each node reads back as the model holds it, and each clone still shows its point in time.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Clone, Debug)]
        enum Op {
            Create {
                parent: u8,
                name: u8,
                data: u8,
                acl: u8,
                owner: u8,
            },
            Delete(u8),
            SetData(u8, u8),
            SetAcl(u8, u8),
            Snapshot,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (any::<u8>(), 0..12u8, any::<u8>(), 0..3u8, 0..3u8).prop_map(
                    |(parent, name, data, acl, owner)| Op::Create { parent, name, data, acl, owner }
                ),
                3 => any::<u8>().prop_map(Op::Delete),
                2 => (any::<u8>(), any::<u8>()).prop_map(|(n, d)| Op::SetData(n, d)),
                1 => (any::<u8>(), 0..3u8).prop_map(|(n, a)| Op::SetAcl(n, a)),
                1 => Just(Op::Snapshot),
            ]
        }

        type Model = BTreeMap<String, (Option<Vec<u8>>, Vec<Acl>, NodeStat)>;

        fn acl_list(i: u8) -> Vec<Acl> {
            match i {
                0 => crate::acl::open_acl_unsafe(),
                1 => crate::acl::read_acl_unsafe(),
                _ => vec![crate::acl::entry(
                    oxkeeper_proto::perms::ALL,
                    "digest",
                    "u:x",
                )],
            }
        }

        /// Null, empty, inline and shared (longer than a record keeps inline) data.
        fn data_of(d: u8) -> Option<Vec<u8>> {
            match d % 4 {
                0 => None,
                1 => Some(Vec::new()),
                2 => Some(vec![d; usize::from(d) % 100]),
                _ => Some(vec![d; 129 + usize::from(d)]),
            }
        }

        fn pick(model: &Model, i: u8) -> String {
            let paths: Vec<&String> = model.keys().collect();
            paths[usize::from(i) % paths.len()].clone()
        }

        fn same(tree: &DataTree, model: &Model) -> Result<(), TestCaseError> {
            prop_assert_eq!(tree.len(), model.len());
            for (path, (data, acl, stat)) in model {
                let node = tree.get(path);
                prop_assert!(node.is_some(), "{} missing", path);
                let node = node.unwrap();
                prop_assert_eq!(node.stat(), *stat, "{}", path);
                prop_assert_eq!(node.data(), data.as_deref(), "{}", path);
                prop_assert_eq!(&**node.acl(), acl, "{}", path);
                let prefix = if path == "/" {
                    "/".to_owned()
                } else {
                    format!("{path}/")
                };
                let children: Vec<&str> = model
                    .range(prefix.clone()..)
                    .take_while(|(p, _)| p.starts_with(&prefix))
                    .map(|(p, _)| &p[prefix.len()..])
                    .filter(|rest| !rest.contains('/') && !rest.is_empty())
                    .collect();
                prop_assert_eq!(node.sorted_children(), children, "{}", path);
            }
            let order: Vec<String> = tree.iter().map(|(p, _)| p.to_string()).collect();
            prop_assert_eq!(order.len(), model.len());
            // The snapshot's walk: every node once, with its own record, in a depth-first pre-order
            // (each node's parent is the node before it or one of that node's ancestors).
            let mut walked: Vec<String> = Vec::new();
            let mut chain: Vec<String> = Vec::new();
            let mut records_match = true;
            tree.walk_records(|path, rec| {
                records_match &= tree.get(path).is_some_and(|n| {
                    n.stat() == rec.stat && n.data() == rec.data && n.acl_id == rec.acl
                });
                if let Some(parent) = parent_of(path).filter(|_| path != "/") {
                    while chain.last().is_some_and(|p| p != parent) {
                        chain.pop();
                    }
                    records_match &= !chain.is_empty();
                }
                chain.push(path.to_owned());
                walked.push(path.to_owned());
                Ok::<(), ()>(())
            })
            .unwrap();
            prop_assert!(
                records_match,
                "a record or the pre-order differs: {:?}",
                walked
            );
            walked.sort();
            let mut sorted = order;
            sorted.sort();
            prop_assert_eq!(walked, sorted);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn the_store_behaves_as_a_map_of_paths(ops in proptest::collection::vec(op(), 1..300)) {
                let mut tree = DataTree::new();
                let mut model: Model = tree
                    .iter()
                    .map(|(p, n)| (p.to_string(), (n.data_vec(), n.acl().to_vec(), n.stat())))
                    .collect();
                let mut snapshots = Vec::new();
                for (step, op) in ops.into_iter().enumerate() {
                    let zxid = step as i64 + 1;
                    match op {
                        Op::Create { parent, name, data, acl, owner } => {
                            let parent = pick(&model, parent);
                            if parent.starts_with("/zookeeper") {
                                // Nodes there are quota nodes, which change others: not modelled here.
                                continue;
                            }
                            let path = path::join(&parent, &format!("n{name}"));
                            let owner = [0, CONTAINER_EPHEMERAL_OWNER, TTL_EPHEMERAL_OWNER_MASK | 9]
                                [usize::from(owner)];
                            let data = data_of(data);
                            let made = tree.create(
                                &path,
                                data.as_deref().map(Arc::from),
                                Arc::new(acl_list(acl)),
                                owner,
                                zxid,
                                zxid * 10,
                            );
                            if model.contains_key(&path) {
                                prop_assert_eq!(made.err(), Some(ErrorCode::NodeExists));
                                continue;
                            }
                            prop_assert!(made.is_ok());
                            let p = model.get_mut(&parent).unwrap();
                            p.2.cversion += 1;
                            p.2.pzxid = zxid;
                            model.insert(
                                path,
                                (data, acl_list(acl), NodeStat::created(zxid, zxid * 10, owner)),
                            );
                        }
                        Op::Delete(i) => {
                            let path = pick(&model, i);
                            let has_children = model
                                .range(format!("{path}/")..)
                                .next()
                                .is_some_and(|(p, _)| p.starts_with(&format!("{path}/")));
                            let removed = tree.delete(&path, zxid);
                            if path == "/" || has_children {
                                prop_assert!(removed.is_none());
                                continue;
                            }
                            prop_assert!(removed.is_some());
                            model.remove(&path);
                            let parent = model.get_mut(parent_of(&path).unwrap()).unwrap();
                            parent.2.pzxid = parent.2.pzxid.max(zxid);
                        }
                        Op::SetData(i, d) => {
                            let path = pick(&model, i);
                            if path.starts_with("/zookeeper") {
                                continue;
                            }
                            let data = data_of(d);
                            prop_assert!(tree
                                .set_data(&path, data.as_deref().map(Arc::from), 7, zxid, zxid * 10)
                                .is_some());
                            let n = model.get_mut(&path).unwrap();
                            n.0 = data;
                            (n.2.version, n.2.mzxid, n.2.mtime) = (7, zxid, zxid * 10);
                        }
                        Op::SetAcl(i, a) => {
                            let path = pick(&model, i);
                            prop_assert!(tree.set_acl(&path, Arc::new(acl_list(a)), 3).is_some());
                            let n = model.get_mut(&path).unwrap();
                            n.1 = acl_list(a);
                            n.2.aversion = 3;
                        }
                        Op::Snapshot => snapshots.push((tree.clone(), model.clone())),
                    }
                    same(&tree, &model)?;
                    prop_assert_eq!(tree.check_invariants(), Ok(()));
                }
                for (snap, then) in &snapshots {
                    same(snap, then)?;
                    prop_assert_eq!(snap.check_invariants(), Ok(()));
                }
                let back: DataTree = postcard::from_bytes(&postcard::to_allocvec(&tree).unwrap()).unwrap();
                prop_assert!(back == tree);
                prop_assert_eq!(back.check_invariants(), Ok(()));
            }
        }
    }
}
