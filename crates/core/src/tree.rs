//! The DataTree: every znode with its data, ACL, stat and children (replicated state).
//!
//! Nodes live in persistent maps (`imbl`), so cloning the tree is O(1) and a clone is a point-in-time
//! snapshot that shares structure with the live tree while apply goes on. The tree only stores and
//! indexes; the checks a write must pass (ACLs, versions, sessions) are made by `state` before it calls
//! the mutators here. No I/O.

use crate::path::{self, child_name, parent_of};
use crate::quota::{self, QuotaIndex};
use imbl::{OrdMap, OrdSet};
use oxkeeper_proto::{Acl, ErrorCode, Stat, CONTAINER_EPHEMERAL_OWNER, TTL_EPHEMERAL_OWNER_MASK};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

/// A name in a node's children set: the child's whole path (the very allocation that keys the child in
/// the node map, so a name costs no allocation of its own: ~48 B less per node) and where the last
/// component starts in it. It reads, compares and is looked up as that last component.
#[derive(Clone, Debug)]
pub struct ChildName {
    path: Arc<str>,
    at: usize,
}

impl ChildName {
    fn new(path: Arc<str>) -> Self {
        let at = path.rfind('/').map_or(0, |slash| slash + 1);
        ChildName { path, at }
    }

    pub fn as_str(&self) -> &str {
        &self.path[self.at..]
    }
}

impl std::ops::Deref for ChildName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for ChildName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ChildName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ChildName {}

impl PartialOrd for ChildName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ChildName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Display for ChildName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One znode.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// `None` when the client sent null data (it reads back as null, with dataLength 0).
    pub data: Option<Arc<[u8]>>,
    pub acl: Arc<Vec<Acl>>,
    pub stat: NodeStat,
    /// Child names (last components), ordered.
    pub children: OrdSet<ChildName>,
}

impl Node {
    fn new(data: Option<Arc<[u8]>>, acl: Arc<Vec<Acl>>, stat: NodeStat) -> Self {
        Node {
            data,
            acl,
            stat,
            children: OrdSet::new(),
        }
    }

    pub fn kind(&self) -> NodeKind {
        NodeKind::from_owner(self.stat.ephemeral_owner)
    }

    pub fn data_len(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.len())
    }

    /// The data as a client reads it.
    pub fn data_vec(&self) -> Option<Vec<u8>> {
        self.data.as_ref().map(|d| d.to_vec())
    }

    /// The Stat clients see (`DataNode.copyStat`): cversion counts creations and deletions
    /// (`2 * internal - numChildren`), containers and TTL nodes show ephemeralOwner 0, null data has
    /// dataLength 0.
    pub fn client_stat(&self) -> Stat {
        let num_children = i32::try_from(self.children.len()).unwrap_or(i32::MAX);
        Stat {
            czxid: self.stat.czxid,
            mzxid: self.stat.mzxid,
            ctime: self.stat.ctime,
            mtime: self.stat.mtime,
            version: self.stat.version,
            cversion: self
                .stat
                .cversion
                .wrapping_mul(2)
                .wrapping_sub(num_children),
            aversion: self.stat.aversion,
            ephemeral_owner: match self.kind() {
                NodeKind::Ephemeral(owner) => owner,
                _ => 0,
            },
            data_length: i32::try_from(self.data_len()).unwrap_or(i32::MAX),
            num_children,
            pzxid: self.stat.pzxid,
        }
    }
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "wire::Tree", try_from = "wire::Tree")]
pub struct DataTree {
    /// A persistent B-tree: ~59 B per entry where imbl's hash trie took ~134 B (a lookup costs ~0.1 µs
    /// more); iterating it visits parents before their children. Its keys are the allocations the
    /// parents' `ChildName`s share.
    nodes: OrdMap<Arc<str>, Arc<Node>>,
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

impl DataTree {
    /// No nodes at all (not even the root): what `new` and `from_loaded` fill.
    fn empty() -> Self {
        DataTree {
            nodes: OrdMap::new(),
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
        tree.insert_loaded(
            path::ROOT,
            Node::new(empty.clone(), open.clone(), NodeStat::default()),
        );
        for p in [path::ZOOKEEPER, path::QUOTA] {
            tree.insert_loaded(
                p,
                Node::new(empty.clone(), open.clone(), NodeStat::default()),
            );
        }
        let config_stat = NodeStat {
            aversion: -1,
            ..NodeStat::default()
        };
        tree.insert_loaded(
            path::CONFIG,
            Node::new(empty, Arc::new(crate::acl::read_acl_unsafe()), config_stat),
        );
        tree
    }

    /// Inserts a node whose parent is already present, without touching the parent's stat (building the
    /// initial tree and loading a snapshot). Returns false if the parent is missing or the path taken.
    fn insert_loaded(&mut self, path: &str, node: Node) -> bool {
        if self.nodes.contains_key(path) {
            return false;
        }
        let key: Arc<str> = Arc::from(path);
        if path != path::ROOT {
            let Some(parent) = parent_of(path).and_then(|p| self.nodes.get_mut(p)) else {
                return false;
            };
            Arc::make_mut(parent)
                .children
                .insert(ChildName::new(key.clone()));
        }
        self.index(path, &node);
        self.nodes.insert(key, Arc::new(node));
        true
    }

    fn index(&mut self, path: &str, node: &Node) {
        match node.kind() {
            NodeKind::Container => {
                self.containers.insert(Arc::from(path));
            }
            NodeKind::Ttl(_) => {
                self.ttls.insert(Arc::from(path));
            }
            _ => {}
        }
        self.approximate_data_size += node_size(path, node.data_len());
        self.quotas.node_added(path);
    }

    pub fn get(&self, path: &str) -> Option<&Arc<Node>> {
        self.nodes.get(path)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// The number of znodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node count ZooKeeper reports (`srvr`, `mntr`): one more than [`DataTree::len`], because its
    /// node map holds the root twice (under "" and "/"). A fresh tree reports 5.
    pub fn node_count(&self) -> usize {
        self.nodes.len() + 1
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

    /// Every node in pre-order (a parent before its children, children in name order), with its path.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<Node>)> {
        let mut stack: Vec<(&Arc<str>, &Arc<Node>)> =
            self.nodes.get_key_value(path::ROOT).into_iter().collect();
        std::iter::from_fn(move || {
            let (path, node) = stack.pop()?;
            for name in node.children.iter().rev() {
                let child = path::join(path, name);
                if let Some(entry) = self.nodes.get_key_value(child.as_str()) {
                    stack.push(entry);
                }
            }
            Some((path, node))
        })
    }

    /// The number of nodes below `path` (`getAllChildrenNumber`); for `/`, every node but the root.
    pub fn descendant_count(&self, path: &str) -> usize {
        let Some(node) = self.nodes.get(path) else {
            return 0;
        };
        if path == path::ROOT {
            return self.nodes.len() - 1;
        }
        let mut count = 0;
        let mut stack: Vec<(String, &Arc<Node>)> = vec![(path.to_owned(), node)];
        while let Some((p, n)) = stack.pop() {
            for name in n.children.iter() {
                let child = path::join(&p, name);
                if let Some(c) = self.nodes.get(child.as_str()) {
                    count += 1;
                    stack.push((child, c));
                }
            }
        }
        count
    }

    /// Adds a node under an existing parent, bumping the parent's internal cversion and pzxid
    /// (`DataTree.createNode`). Returns the new node and the parent's ACL.
    pub(crate) fn create(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: Arc<Vec<Acl>>,
        ephemeral_owner: i64,
        zxid: i64,
        time_ms: i64,
    ) -> Result<(Arc<Node>, Arc<Vec<Acl>>), ErrorCode> {
        if path == path::ROOT || self.nodes.contains_key(path) {
            return Err(ErrorCode::NodeExists);
        }
        let parent_path = parent_of(path).ok_or(ErrorCode::BadArguments)?;
        let parent = self.nodes.get_mut(parent_path).ok_or(ErrorCode::NoNode)?;
        let parent = Arc::make_mut(parent);
        parent.stat.cversion = parent.stat.cversion.wrapping_add(1);
        parent.stat.pzxid = zxid;
        let key: Arc<str> = Arc::from(path);
        parent.children.insert(ChildName::new(key.clone()));
        let parent_acl = parent.acl.clone();
        let node = Node::new(data, acl, NodeStat::created(zxid, time_ms, ephemeral_owner));
        self.index(path, &node);
        let node = Arc::new(node);
        self.nodes.insert(key, node.clone());
        quota::node_created(self, path, node.data_len());
        Ok((node, parent_acl))
    }

    /// Removes a node (which must have no children) and its name from its parent, setting the parent's
    /// pzxid (`DataTree.deleteNode`; the parent's cversion does not change). Returns the removed node
    /// and the parent's ACL.
    pub(crate) fn delete(&mut self, path: &str, zxid: i64) -> Option<(Arc<Node>, Arc<Vec<Acl>>)> {
        if path == path::ROOT {
            return None;
        }
        let parent_path = parent_of(path)?;
        // Removed first and put back in the rare refusal: one walk of the map less per delete (a
        // session's close deletes all its ephemerals in one apply).
        let (key, node) = self.nodes.remove_with_key(path)?;
        if !node.children.is_empty() {
            self.nodes.insert(key, node);
            return None;
        }
        let parent = match self.nodes.get_mut(parent_path) {
            Some(parent) => Arc::make_mut(parent),
            None => {
                // Every node's parent exists (`check_invariants`); should it not, change nothing.
                self.nodes.insert(key, node);
                return None;
            }
        };
        parent.children.remove(child_name(path));
        if zxid > parent.stat.pzxid {
            parent.stat.pzxid = zxid;
        }
        let parent_acl = parent.acl.clone();
        match node.kind() {
            NodeKind::Container => {
                self.containers.remove(path);
            }
            NodeKind::Ttl(_) => {
                self.ttls.remove(path);
            }
            _ => {}
        }
        self.approximate_data_size -= node_size(path, node.data_len());
        self.quotas.node_removed(path);
        quota::node_deleted(self, path, node.data_len());
        Some((node, parent_acl))
    }

    /// `DataTree.setData`: new data, mtime, mzxid and version.
    pub(crate) fn set_data(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        version: i32,
        zxid: i64,
        time_ms: i64,
    ) -> Option<Arc<Node>> {
        let slot = self.nodes.get_mut(path)?;
        let node = Arc::make_mut(slot);
        let old_len = node.data_len();
        node.data = data;
        node.stat.mtime = time_ms;
        node.stat.mzxid = zxid;
        node.stat.version = version;
        let new_len = node.data_len();
        let node = slot.clone();
        self.approximate_data_size += node_size("", new_len) - node_size("", old_len);
        quota::data_set(self, path, old_len, new_len);
        Some(node)
    }

    /// Replaces a node's data and nothing else (ZooKeeper's quota code assigns `node.data` directly:
    /// no version, mzxid or mtime change). Returns false if there is no such node.
    pub(crate) fn set_data_keep_stat(&mut self, path: &str, data: Option<Arc<[u8]>>) -> bool {
        let Some(slot) = self.nodes.get_mut(path) else {
            return false;
        };
        let node = Arc::make_mut(slot);
        let old_len = node.data_len();
        node.data = data;
        let new_len = node.data_len();
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
    ) -> Option<Arc<Node>> {
        let slot = self.nodes.get_mut(path)?;
        let node = Arc::make_mut(slot);
        node.acl = acl;
        node.stat.aversion = aversion;
        Some(slot.clone())
    }

    /// A tree of exactly these nodes, given parents first (the root first), each as it is stored: no
    /// parent stat changes, no quota updates (the ZooKeeper import, [`crate::import`]). The container,
    /// TTL and quota indexes and the data size are derived from the nodes.
    pub(crate) fn from_loaded(
        nodes: impl IntoIterator<Item = (String, Option<Arc<[u8]>>, Arc<Vec<Acl>>, NodeStat)>,
    ) -> Result<DataTree, TreeLoadError> {
        let mut tree = DataTree::empty();
        for (path, data, acl, stat) in nodes {
            if tree.nodes.is_empty() != (path == path::ROOT) {
                return Err(if tree.nodes.is_empty() {
                    TreeLoadError::NoRoot(path)
                } else {
                    TreeLoadError::Duplicate(path)
                });
            }
            if tree.nodes.contains_key(path.as_str()) {
                return Err(TreeLoadError::Duplicate(path));
            }
            if !tree.insert_loaded(&path, Node::new(data, acl, stat)) {
                return Err(TreeLoadError::Orphan(path));
            }
        }
        if tree.nodes.is_empty() {
            return Err(TreeLoadError::NoRoot(String::new()));
        }
        Ok(tree)
    }

    /// Adds a node under an existing parent without touching the parent's stat (ZooKeeper's
    /// `addConfigNode`, which the import uses for system nodes an old snapshot lacks). Returns false if
    /// the parent is missing or the path taken.
    pub(crate) fn add_loaded(
        &mut self,
        path: &str,
        data: Option<Arc<[u8]>>,
        acl: Arc<Vec<Acl>>,
        stat: NodeStat,
    ) -> bool {
        self.insert_loaded(path, Node::new(data, acl, stat))
    }

    /// Sets a node's internal cversion and pzxid (ZooKeeper's `setCversionPzxid` and the parent update
    /// of `createNode` as a replay applies them, [`crate::import`]). Returns false if there is no such
    /// node.
    pub(crate) fn set_cversion_pzxid(&mut self, path: &str, cversion: i32, pzxid: i64) -> bool {
        let Some(slot) = self.nodes.get_mut(path) else {
            return false;
        };
        let node = Arc::make_mut(slot);
        node.stat.cversion = cversion;
        node.stat.pzxid = pzxid;
        true
    }

    /// Direct access to a node, for tests that need stats no sequence of writes reaches quickly.
    #[cfg(test)]
    pub(crate) fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path).map(Arc::make_mut)
    }

    /// Checks the tree's invariants: every node but the root sits in its parent's children, every child
    /// exists, the container/TTL indexes and the data size match the nodes.
    pub fn check_invariants(&self) -> Result<(), String> {
        if !self.nodes.contains_key(path::ROOT) {
            return Err("no root".into());
        }
        let mut containers = OrdSet::new();
        let mut ttls = OrdSet::new();
        let mut size = 0;
        let mut quotas = QuotaIndex::default();
        for (p, n) in self.nodes.iter() {
            quotas.node_added(p);
            if &**p != path::ROOT {
                let parent = parent_of(p)
                    .and_then(|pp| self.nodes.get(pp))
                    .ok_or_else(|| format!("{p} has no parent"))?;
                if !parent.children.contains(child_name(p)) {
                    return Err(format!("{p} missing from its parent's children"));
                }
            }
            for c in n.children.iter() {
                if !self.nodes.contains_key(path::join(p, c).as_str()) {
                    return Err(format!("{p} lists missing child {c}"));
                }
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
            size += node_size(p, n.data_len());
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

/// The serialized form of the tree: nodes in pre-order (parents first, so children lists need not be
/// stored) and each distinct ACL list once.
mod wire {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub struct Tree {
        pub(super) acls: Vec<Arc<Vec<Acl>>>,
        pub(super) nodes: Vec<WireNode>,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct WireNode {
        pub(super) path: Arc<str>,
        pub(super) data: Option<Arc<[u8]>>,
        pub(super) acl: u32,
        pub(super) stat: NodeStat,
    }

    impl From<DataTree> for Tree {
        fn from(tree: DataTree) -> Self {
            let mut acl_index: std::collections::HashMap<Arc<Vec<Acl>>, u32> =
                std::collections::HashMap::new();
            let mut acls = Vec::new();
            let mut nodes = Vec::with_capacity(tree.len());
            for (path, node) in tree.iter() {
                let next = u32::try_from(acls.len()).expect("fewer than 2^32 distinct ACLs");
                let acl = *acl_index.entry(node.acl.clone()).or_insert_with(|| {
                    acls.push(node.acl.clone());
                    next
                });
                nodes.push(WireNode {
                    path: path.clone(),
                    data: node.data.clone(),
                    acl,
                    stat: node.stat,
                });
            }
            Tree { acls, nodes }
        }
    }

    impl TryFrom<Tree> for DataTree {
        type Error = TreeLoadError;

        fn try_from(wire: Tree) -> Result<Self, Self::Error> {
            let mut tree = DataTree {
                nodes: OrdMap::new(),
                containers: OrdSet::new(),
                ttls: OrdSet::new(),
                approximate_data_size: 0,
                quotas: QuotaIndex::default(),
            };
            for (i, n) in wire.nodes.into_iter().enumerate() {
                if (i == 0) != (&*n.path == path::ROOT) {
                    return Err(if i == 0 {
                        TreeLoadError::NoRoot(n.path.to_string())
                    } else {
                        TreeLoadError::Duplicate(n.path.to_string())
                    });
                }
                let acl = wire
                    .acls
                    .get(n.acl as usize)
                    .ok_or_else(|| TreeLoadError::BadAclIndex {
                        path: n.path.to_string(),
                        index: n.acl,
                    })?
                    .clone();
                if tree.nodes.contains_key(&*n.path) {
                    return Err(TreeLoadError::Duplicate(n.path.to_string()));
                }
                if !tree.insert_loaded(&n.path, Node::new(n.data, acl, n.stat)) {
                    return Err(TreeLoadError::Orphan(n.path.to_string()));
                }
            }
            if tree.nodes.is_empty() {
                return Err(TreeLoadError::NoRoot(String::new()));
            }
            Ok(tree)
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
        assert_eq!(root.data.as_deref(), Some(&[][..]));
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
    fn create_bumps_parent_cversion_and_pzxid() {
        let mut t = DataTree::new();
        let (n, parent_acl) = t.create("/a", None, open(), 0, 5, 100).unwrap();
        assert_eq!(*parent_acl, crate::acl::open_acl_unsafe());
        let s = n.client_stat();
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
        let (c, _) = t
            .create("/c", None, open(), CONTAINER_EPHEMERAL_OWNER, 1, 0)
            .unwrap();
        assert_eq!(c.kind(), NodeKind::Container);
        assert_eq!(c.client_stat().ephemeral_owner, 0);
        let ttl_owner = TTL_EPHEMERAL_OWNER_MASK | 5000;
        let (t1, _) = t.create("/t", None, open(), ttl_owner, 2, 0).unwrap();
        assert_eq!(t1.kind(), NodeKind::Ttl(5000));
        assert_eq!(t1.client_stat().ephemeral_owner, 0);
        let (e, _) = t
            .create("/e", None, open(), 0x0100_0000_0000_0001, 3, 0)
            .unwrap();
        assert_eq!(e.client_stat().ephemeral_owner, 0x0100_0000_0000_0001);
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
        let (n, _) = t.create("/n", None, open(), 0, 1, 0).unwrap();
        assert_eq!(n.client_stat().data_length, 0);
        assert_eq!(n.data_vec(), None);
        let n = t
            .set_data("/n", Some(Arc::from(&b"abc"[..])), 1, 2, 9)
            .unwrap();
        assert_eq!(n.client_stat().data_length, 3);
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
        assert_eq!(snap.get("/a").unwrap().data.as_deref(), Some(&b"1"[..]));
        assert!(!snap.contains("/b"));
        assert_eq!(snap.get("/").unwrap().children.len(), 2);
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

    #[test]
    fn loading_refuses_orphans_duplicates_and_bad_acl_indexes() {
        let node = |p: &str, acl: u32| wire::WireNode {
            path: Arc::from(p),
            data: None,
            acl,
            stat: NodeStat::default(),
        };
        let load = |nodes| {
            DataTree::try_from(wire::Tree {
                acls: vec![open()],
                nodes,
            })
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
}
