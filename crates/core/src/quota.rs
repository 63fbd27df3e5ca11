//! ZooKeeper's quota statistics, kept by the tree at apply exactly as ZooKeeper 3.8's `DataTree` keeps
//! them (replicated state; deterministic, no I/O).
//!
//! A client sets a quota on `/p` by writing ordinary nodes (`zkCli.sh setquota`): `/zookeeper/quota/p`,
//! then `/zookeeper/quota/p/zookeeper_limits` (the limits, e.g. `count=10,bytes=-1=;byteHardLimit=-1;
//! countHardLimit=-1`), then `/zookeeper/quota/p/zookeeper_stats` (`count=0,bytes=0`). The server then
//! keeps the stats node's data up to date. The rules, from `DataTree` (`createNode`, `deleteNode`,
//! `setData`, `updateQuotaStat`, `updateQuotaForPath`, `getCounts`, `getMaxPrefixWithQuota`), `PathTrie`,
//! `Quotas` and `StatsTrack` of ZooKeeper 3.8.0:
//!
//! - **Quota prefixes** (ZooKeeper's `pTrie`): creating a node named `zookeeper_limits` whose parent path
//!   starts with `/zookeeper/quota` (a string prefix) registers the parent path minus that prefix;
//!   deleting it unregisters it. Setting a limits node's data changes nothing. The trie splits paths on
//!   `/` and drops components that are blank after Java's `trim()`, so a prefix is keyed by its
//!   normalized form (`/a/ /b` and `/a/b` are the same prefix; `/zookeeper/quotax/zookeeper_limits`
//!   registers `/x`). Here the set of prefixes is derived from the tree (see [`QuotaIndex`]), so it is
//!   rebuilt when a snapshot is loaded and never serialized.
//! - **The governing prefix** of a path (`getMaxPrefixWithQuota`) is the deepest registered prefix among
//!   the path's own normalized components (component-wise: `/ab` is not under `/a`), the path itself
//!   included; nested quotas therefore update only the innermost one.
//! - **Creating the stats node** (`zookeeper_stats` under a parent starting with `/zookeeper/quota`)
//!   makes the server recount the subtree (`updateQuotaForPath`): the node count (the quota root
//!   included) and the sum of data lengths (null data counts 0) of the real path (the parent minus
//!   `/zookeeper/quota`; `""` is the root; a path that does not exist counts `count=0,bytes=0`), written
//!   into the new stats node as `count=N,bytes=M`. This happens when the *stats* node is created, not the
//!   limits node (the client creates the limits node first, then the stats node).
//! - **Every create, delete and setData** of a node then adds (+1, +data length), (−1, −data length) or
//!   (0, new length − old length) to the stats node of the path's governing prefix
//!   (`updateQuotaStat`): its data is parsed as a `StatsTrack`, count and bytes are added to (an absent
//!   field reads as −1), and it is written back with every other field kept. The stats node's Stat does
//!   not change (ZooKeeper assigns `node.data` directly: same version, mzxid, mtime; the client sees only
//!   the new dataLength), no transaction is logged for it and no watch fires. A missing stats node is
//!   skipped. In a create, the stats-node recount happens first, then the governing prefix's update.
//!
//! Where ZooKeeper 3.8.0 throws on the apply path (its transaction thread dies), oxkeeper does nothing
//! instead: stats data that does not parse as a `StatsTrack`, or is null, is left as it is; a limits node
//! directly under `/zookeeper/quota` (ZooKeeper's `PathTrie.addPath("")` throws) registers nothing; and
//! deleting a `zookeeper_limits` node under another `/zookeeper…` parent (ZooKeeper's `deleteNode` checks
//! the prefix `/zookeeper` and then cuts 16 characters off the parent) unregisters nothing. ZooKeeper's
//! trie is a set of booleans, so of two limits nodes with the same normalized prefix, deleting one clears
//! it; here a prefix stays registered while any of its limits nodes exists. ZooKeeper recounts every
//! quota when it loads a snapshot (`setupQuota`); oxkeeper does not, so every member keeps exactly the
//! state the log produced. The stats updates keep `approximate_data_size` exact (ZooKeeper's counter
//! misses them until it restarts).
//!
//! Enforcement (`zookeeper.enforceQuota`, off by default; `ZooKeeperServer.checkQuota`, called by
//! PrepRequestProcessor) is [`check_quota`]: it needs a replicated setting to be wired into apply.

use crate::path;
use crate::tree::DataTree;
use imbl::OrdMap;
use oxkeeper_proto::ErrorCode;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `Quotas.limitNode`.
pub const LIMIT_NODE: &str = "zookeeper_limits";
/// `Quotas.statNode`.
pub const STAT_NODE: &str = "zookeeper_stats";

const COUNT: &str = "count";
const BYTES: &str = "bytes";
const COUNT_HARD_LIMIT: &str = "countHardLimit";
const BYTE_HARD_LIMIT: &str = "byteHardLimit";

/// `Quotas.limitPath`: `/zookeeper/quota` + path + `/zookeeper_limits`.
pub fn limit_path(path: &str) -> String {
    format!("{}{path}/{LIMIT_NODE}", path::QUOTA)
}

/// `Quotas.statPath`: `/zookeeper/quota` + path + `/zookeeper_stats`.
pub fn stat_path(path: &str) -> String {
    format!("{}{path}/{STAT_NODE}", path::QUOTA)
}

/// ZooKeeper's `path.substring(0, lastSlash)` and `path.substring(lastSlash + 1)` (the parent of `/x`
/// is `""`).
fn split_last(path: &str) -> Option<(&str, &str)> {
    let slash = path.rfind('/')?;
    Some((&path[..slash], &path[slash + 1..]))
}

/// `String.split` with limit 0, as Java does it: no separator → the whole string; otherwise the pieces,
/// a leading empty one kept and trailing empty ones dropped. `runs` makes a run of separators one
/// separator (the regex `[,;]+`).
fn java_split(s: &str, is_sep: impl Fn(char) -> bool, runs: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut found = false;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !is_sep(c) {
            continue;
        }
        found = true;
        parts.push(&s[start..i]);
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek().filter(|&&(_, d)| runs && is_sep(d)) {
            end = j + d.len_utf8();
            chars.next();
        }
        start = end;
    }
    if !found {
        return vec![s];
    }
    parts.push(&s[start..]);
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts
}

/// Java's `String.compareTo`: by UTF-16 code units.
fn java_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// `StatsTrack`: the `key=long` pairs of a limits or stats node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsTrack {
    stats: BTreeMap<String, i64>,
}

impl StatsTrack {
    /// `new StatsTrack(byte[])`: the data as UTF-8 (malformed bytes read as U+FFFD), pairs separated by
    /// runs of `,` and `;`, each split on `=`; an empty value reads as -1, a repeated key keeps its last
    /// value. `None` where Java throws: a pair with no value (`count`, `count=`, a leading separator),
    /// or a value that is not a Java long (only ASCII digits are read as digits here).
    pub fn parse(data: &[u8]) -> Option<StatsTrack> {
        let text = String::from_utf8_lossy(data);
        let mut stats = BTreeMap::new();
        if text.is_empty() {
            return Some(StatsTrack { stats });
        }
        for pair in java_split(&text, |c| c == ',' || c == ';', true) {
            let kv = java_split(pair, |c| c == '=', false);
            let key = kv.first()?;
            let value = kv.get(1)?;
            let value = if value.is_empty() {
                -1
            } else {
                value.parse::<i64>().ok()?
            };
            stats.insert((*key).to_owned(), value);
        }
        Some(StatsTrack { stats })
    }

    fn get(&self, key: &str) -> i64 {
        self.stats.get(key).copied().unwrap_or(-1)
    }

    pub fn count(&self) -> i64 {
        self.get(COUNT)
    }

    pub fn bytes(&self) -> i64 {
        self.get(BYTES)
    }

    pub fn count_hard_limit(&self) -> i64 {
        self.get(COUNT_HARD_LIMIT)
    }

    pub fn byte_hard_limit(&self) -> i64 {
        self.get(BYTE_HARD_LIMIT)
    }

    pub fn set_count(&mut self, count: i64) {
        self.stats.insert(COUNT.to_owned(), count);
    }

    pub fn set_bytes(&mut self, bytes: i64) {
        self.stats.insert(BYTES.to_owned(), bytes);
    }

    /// `getStatsBytes`.
    pub fn to_bytes(&self) -> Arc<[u8]> {
        Arc::from(self.to_string().into_bytes())
    }
}

/// `StatsTrack.toString`: `count=C,bytes=B`, then, if there are other keys, `=` and `;key=value` for
/// each in Java string order (`count=10,bytes=-1=;byteHardLimit=-1;countHardLimit=-1`).
impl std::fmt::Display for StatsTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{COUNT}={},{BYTES}={}", self.count(), self.bytes())?;
        let mut others: Vec<(&String, &i64)> = self
            .stats
            .iter()
            .filter(|(k, _)| k.as_str() != COUNT && k.as_str() != BYTES)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        others.sort_by(|a, b| java_cmp(a.0, b.0));
        f.write_str("=")?;
        for (k, v) in others {
            write!(f, ";{k}={v}")?;
        }
        Ok(())
    }
}

/// The key `PathTrie` files a path under: `/` + the components that are not blank after Java's
/// `trim()`, joined by `/`; `None` when there is none (the trie's root, which never governs a path).
fn trie_key(path: &str) -> Option<String> {
    let mut key = String::new();
    for c in path.split('/').filter(|c| c.chars().any(|ch| ch > ' ')) {
        key.push('/');
        key.push_str(c);
    }
    (!key.is_empty()).then_some(key)
}

/// The quota prefix a node at `path` registers, if it is a limits node (`createNode`): its parent path
/// starts with `/zookeeper/quota`, and the rest, normalized, is not empty.
fn registered_prefix(path: &str) -> Option<String> {
    let (parent, child) = split_last(path)?;
    if child != LIMIT_NODE {
        return None;
    }
    trie_key(parent.strip_prefix(path::QUOTA)?)
}

/// ZooKeeper's `pTrie`, derived from the tree: every normalized quota prefix with the number of limits
/// nodes that register it. Kept by [`DataTree`] next to its container and TTL indexes and rebuilt when
/// a tree is loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaIndex {
    prefixes: OrdMap<Arc<str>, u32>,
}

impl QuotaIndex {
    /// A node was added at `path` (created or loaded).
    pub(crate) fn node_added(&mut self, path: &str) {
        if let Some(prefix) = registered_prefix(path) {
            *self.prefixes.entry(Arc::from(prefix)).or_insert(0) += 1;
        }
    }

    /// The node at `path` was deleted.
    pub(crate) fn node_removed(&mut self, path: &str) {
        if let Some(prefix) = registered_prefix(path) {
            if let Some(n) = self.prefixes.get_mut(prefix.as_str()) {
                *n -= 1;
                if *n == 0 {
                    self.prefixes.remove(prefix.as_str());
                }
            }
        }
    }

    /// The registered quota prefixes (normalized), in order.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.prefixes.keys().map(|k| &**k)
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// `getMaxPrefixWithQuota`: the deepest registered prefix among `path`'s normalized components.
    pub fn governing_prefix(&self, path: &str) -> Option<Arc<str>> {
        if self.prefixes.is_empty() {
            return None;
        }
        let key = trie_key(path)?;
        let ends = key
            .match_indices('/')
            .skip(1)
            .map(|(i, _)| i)
            .chain([key.len()]);
        let ends: Vec<usize> = ends.collect();
        ends.iter()
            .rev()
            .find_map(|&end| self.prefixes.get_key_value(&key[..end]))
            .map(|(k, _)| k.clone())
    }
}

/// `updateQuotaForPath`: recounts the subtree of `real` and writes `count=N,bytes=M` into its stats
/// node.
fn update_quota_for_path(tree: &mut DataTree, real: &str) {
    let (count, bytes) = tree.subtree_counts(if real.is_empty() { path::ROOT } else { real });
    let mut stats = StatsTrack::default();
    stats.set_bytes(bytes);
    stats.set_count(count);
    tree.set_data_keep_stat(&stat_path(real), Some(stats.to_bytes()));
}

/// `updateQuotaStat`: adds to the count and bytes of `prefix`'s stats node, keeping its other fields.
fn update_quota_stat(tree: &mut DataTree, prefix: &str, bytes_diff: i64, count_diff: i64) {
    let path = stat_path(prefix);
    let Some(stats) = tree
        .get(&path)
        .and_then(|n| n.data())
        .and_then(StatsTrack::parse)
    else {
        return;
    };
    let mut stats = stats;
    stats.set_count(stats.count().wrapping_add(count_diff));
    stats.set_bytes(stats.bytes().wrapping_add(bytes_diff));
    tree.set_data_keep_stat(&path, Some(stats.to_bytes()));
}

fn len_i64(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// The quota work of `createNode`, after the node at `path` (with `data_len` bytes) is in the tree and
/// indexed.
pub(crate) fn node_created(tree: &mut DataTree, path: &str, data_len: usize) {
    if let Some((parent, child)) = split_last(path) {
        if child == STAT_NODE {
            if let Some(real) = parent.strip_prefix(path::QUOTA) {
                update_quota_for_path(tree, real);
            }
        }
    }
    if let Some(prefix) = tree.quotas().governing_prefix(path) {
        update_quota_stat(tree, &prefix, len_i64(data_len), 1);
    }
}

/// The quota work of `deleteNode`, after the node at `path` (which had `data_len` bytes) is gone and
/// unindexed.
pub(crate) fn node_deleted(tree: &mut DataTree, path: &str, data_len: usize) {
    if let Some(prefix) = tree.quotas().governing_prefix(path) {
        update_quota_stat(tree, &prefix, len_i64(data_len).wrapping_neg(), -1);
    }
}

/// The quota work of `setData`, after the node at `path` went from `old_len` to `new_len` bytes.
pub(crate) fn data_set(tree: &mut DataTree, path: &str, old_len: usize, new_len: usize) {
    if let Some(prefix) = tree.quotas().governing_prefix(path) {
        update_quota_stat(tree, &prefix, len_i64(new_len) - len_i64(old_len), 0);
    }
}

/// `ZooKeeperServer.checkQuota` (only when `zookeeper.enforceQuota` is on; PrepRequestProcessor calls it
/// for create after NoChildrenForEphemerals, with `(data length, 1)`, and for setData after the WRITE
/// check and before the version check, with `(new length − old length, 0)`): QuotaExceeded when the
/// governing prefix has a hard limit (`countHardLimit` / `byteHardLimit` > -1) that the change would
/// exceed; soft limits (`count` / `bytes`) are only logged by ZooKeeper. Limits or stats data that does not
/// parse (null included) is a MarshallingError, as ZooKeeper's prep fails with a non-Keeper exception; a
/// missing limits or stats node passes.
pub fn check_quota(
    tree: &DataTree,
    path: &str,
    bytes_diff: i64,
    count_diff: i64,
) -> Result<(), ErrorCode> {
    let Some(prefix) = tree.quotas().governing_prefix(path) else {
        return Ok(());
    };
    let parse = |p: &str| -> Option<Result<StatsTrack, ErrorCode>> {
        let node = tree.get(p)?;
        Some(
            node.data()
                .and_then(StatsTrack::parse)
                .ok_or(ErrorCode::MarshallingError),
        )
    };
    let Some(limits) = parse(&limit_path(&prefix)) else {
        return Ok(());
    };
    let limits = limits?;
    let check_count = count_diff != 0 && (limits.count() > -1 || limits.count_hard_limit() > -1);
    let check_bytes = bytes_diff != 0 && (limits.bytes() > -1 || limits.byte_hard_limit() > -1);
    if !check_count && !check_bytes {
        return Ok(());
    }
    let Some(current) = parse(&stat_path(&prefix)) else {
        return Ok(());
    };
    let current = current?;
    if check_count
        && limits.count_hard_limit() > -1
        && current.count().wrapping_add(count_diff) > limits.count_hard_limit()
    {
        return Err(ErrorCode::QuotaExceeded);
    }
    if check_bytes
        && limits.byte_hard_limit() > -1
        && current.bytes().wrapping_add(bytes_diff) > limits.byte_hard_limit()
    {
        return Err(ErrorCode::QuotaExceeded);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ApplySettings, Command, CommandOp, StateMachine};
    use oxkeeper_proto::{
        Acl, CreateRequest, MultiOp, OpCode, PathVersion, Request, SetDataRequest,
    };

    fn open() -> Arc<Vec<Acl>> {
        Arc::new(crate::acl::open_acl_unsafe())
    }

    fn bytes(s: &str) -> Option<Arc<[u8]>> {
        Some(Arc::from(s.as_bytes()))
    }

    /// A tree and a zxid counter, writing as the state machine would.
    struct T {
        tree: DataTree,
        zxid: i64,
    }

    impl T {
        fn new() -> Self {
            T {
                tree: DataTree::new(),
                zxid: 0,
            }
        }

        fn create(&mut self, path: &str, data: Option<&str>) {
            self.zxid += 1;
            self.tree
                .create(path, data.and_then(bytes), open(), 0, self.zxid, 1000)
                .unwrap();
            self.tree.check_invariants().unwrap();
        }

        fn delete(&mut self, path: &str) {
            self.zxid += 1;
            self.tree.delete(path, self.zxid).unwrap();
            self.tree.check_invariants().unwrap();
        }

        fn set(&mut self, path: &str, data: Option<&str>) {
            self.zxid += 1;
            let v = self.tree.get(path).unwrap().stat().version + 1;
            self.tree
                .set_data(path, data.and_then(bytes), v, self.zxid, 2000)
                .unwrap();
            self.tree.check_invariants().unwrap();
        }

        /// What `zkCli.sh setquota -n <n> <path>` writes (after creating the path's quota parents).
        fn setquota(&mut self, path: &str, n: i64) {
            let mut q = String::from(path::QUOTA);
            for c in path.split('/').skip(1) {
                q.push('/');
                q.push_str(c);
                if !self.tree.contains(&q) {
                    self.create(&q, None);
                }
            }
            let limits = format!("count={n},bytes=-1=;byteHardLimit=-1;countHardLimit=-1");
            self.create(&limit_path(path), Some(&limits));
            self.create(&stat_path(path), Some("count=0,bytes=0"));
        }

        fn data(&self, path: &str) -> Option<String> {
            let n = self.tree.get(path)?;
            n.data().map(|d| String::from_utf8(d.to_vec()).unwrap())
        }

        fn stats(&self, path: &str) -> Option<String> {
            self.data(&stat_path(path))
        }
    }

    #[test]
    fn paths_are_zookeepers() {
        assert_eq!(limit_path("/a/b"), "/zookeeper/quota/a/b/zookeeper_limits");
        assert_eq!(stat_path("/a"), "/zookeeper/quota/a/zookeeper_stats");
    }

    #[test]
    fn stats_track_formats_as_zookeeper() {
        let mut s = StatsTrack::default();
        assert_eq!(s.to_string(), "count=-1,bytes=-1");
        s.set_count(2);
        s.set_bytes(7);
        assert_eq!(s.to_string(), "count=2,bytes=7");
        let limits = "count=10,bytes=-1=;byteHardLimit=-1;countHardLimit=-1";
        let l = StatsTrack::parse(limits.as_bytes()).unwrap();
        assert_eq!(
            (
                l.count(),
                l.bytes(),
                l.count_hard_limit(),
                l.byte_hard_limit()
            ),
            (10, -1, -1, -1)
        );
        assert_eq!(l.to_string(), limits);
        // Other keys come after `=`, in Java string order: by UTF-16 units, so U+1F600 (a surrogate
        // pair, D83D DE00) sorts before U+FF5E, unlike in UTF-8 order.
        let s =
            StatsTrack::parse("z=1;bytes=3;\u{1F600}=2;\u{FF5E}=4;a=5;count=6".as_bytes()).unwrap();
        assert_eq!(
            s.to_string(),
            "count=6,bytes=3=;a=5;z=1;\u{1F600}=2;\u{FF5E}=4"
        );
    }

    #[test]
    fn stats_track_parses_as_java() {
        let p = |s: &str| StatsTrack::parse(s.as_bytes()).map(|t| t.to_string());
        assert_eq!(p("").as_deref(), Some("count=-1,bytes=-1"));
        assert_eq!(p(",,;").as_deref(), Some("count=-1,bytes=-1"));
        assert_eq!(p("count=1,,;bytes=2;;").as_deref(), Some("count=1,bytes=2"));
        assert_eq!(p("count=1,count=+4").as_deref(), Some("count=4,bytes=-1"));
        assert_eq!(p("count==5,bytes=1=2").as_deref(), Some("count=-1,bytes=1"));
        assert_eq!(p("=5").as_deref(), Some("count=-1,bytes=-1=;=5"));
        for bad in [
            "count",
            "count=",
            "=",
            ",count=1",
            "count=x",
            "count=1.5",
            "count=9223372036854775808",
            "count=-",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(
            p("count=-9223372036854775808").as_deref(),
            Some("count=-9223372036854775808,bytes=-1")
        );
    }

    #[test]
    fn java_split_keeps_a_leading_empty_piece_and_drops_trailing_ones() {
        let eq = |s| java_split(s, |c| c == '=', false);
        assert_eq!(eq(""), [""]);
        assert_eq!(eq("a"), ["a"]);
        assert_eq!(eq("a=b=c"), ["a", "b", "c"]);
        assert_eq!(eq("a=="), ["a"]);
        assert_eq!(eq("=a"), ["", "a"]);
        assert_eq!(eq("a==b"), ["a", "", "b"]);
        assert!(eq("==").is_empty());
        let pairs = |s| java_split(s, |c| c == ',' || c == ';', true);
        assert_eq!(pairs(",;a;,b,"), ["", "a", "b"]);
    }

    #[test]
    fn trie_keys_drop_blank_components() {
        assert_eq!(trie_key("/a/b").as_deref(), Some("/a/b"));
        assert_eq!(trie_key("a").as_deref(), Some("/a"));
        assert_eq!(trie_key("/a/ /b/\t").as_deref(), Some("/a/b"));
        assert_eq!(trie_key("/\u{a0}").as_deref(), Some("/\u{a0}"));
        assert_eq!(trie_key(""), None);
        assert_eq!(trie_key("/"), None);
        assert_eq!(trie_key("/ "), None);
        assert_eq!(
            registered_prefix("/zookeeper/quota/a/b/zookeeper_limits").as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            registered_prefix("/zookeeper/quotax/zookeeper_limits").as_deref(),
            Some("/x")
        );
        assert_eq!(registered_prefix("/zookeeper/quota/zookeeper_limits"), None);
        assert_eq!(registered_prefix("/zookeeper/a/zookeeper_limits"), None);
        assert_eq!(
            registered_prefix("/zookeeper/quota/a/zookeeper_stats"),
            None
        );
    }

    #[test]
    fn stats_node_creation_counts_the_existing_subtree() {
        let mut t = T::new();
        t.create("/t", Some("tdata"));
        t.create("/t/x", Some("xx"));
        t.create("/t/x/n", None);
        t.create("/tt", Some("not counted"));
        t.setquota("/t", 10);
        assert_eq!(t.stats("/t").as_deref(), Some("count=3,bytes=7"));
        assert_eq!(
            t.data(&limit_path("/t")).as_deref(),
            Some("count=10,bytes=-1=;byteHardLimit=-1;countHardLimit=-1")
        );
        // The stats node keeps the Stat of its creation; only its data (and dataLength) changed.
        let node = t.tree.get(&stat_path("/t")).unwrap();
        let s = node.client_stat();
        assert_eq!(
            (s.version, s.mzxid, s.czxid, s.mtime),
            (0, t.zxid, t.zxid, 1000)
        );
        assert_eq!(s.data_length, "count=3,bytes=7".len() as i32);
        assert_eq!(t.tree.quotas().prefixes().collect::<Vec<_>>(), ["/t"]);
    }

    #[test]
    fn creating_the_limits_node_alone_counts_nothing() {
        let mut t = T::new();
        t.create("/t", Some("abc"));
        t.create("/zookeeper/quota/t", None);
        t.create(&limit_path("/t"), Some("count=1"));
        // No stats node yet: updates are skipped.
        t.create("/t/a", Some("z"));
        assert_eq!(t.stats("/t"), None);
        // The stats node is recounted when it is created, whatever data it was created with.
        t.create(&stat_path("/t"), Some("garbage"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=2,bytes=4"));
        // A stats node without a limits node is recounted once, then never updated.
        t.create("/u", Some("u"));
        t.create("/zookeeper/quota/u", None);
        t.create(&stat_path("/u"), None);
        assert_eq!(t.stats("/u").as_deref(), Some("count=1,bytes=1"));
        t.create("/u/a", Some("a"));
        assert_eq!(t.stats("/u").as_deref(), Some("count=1,bytes=1"));
        // Recounting a path that does not exist gives zeros.
        t.create("/zookeeper/quota/gone", None);
        t.create(&stat_path("/gone"), Some("count=5,bytes=5"));
        assert_eq!(t.stats("/gone").as_deref(), Some("count=0,bytes=0"));
    }

    #[test]
    fn create_delete_and_set_data_update_the_stats() {
        let mut t = T::new();
        t.create("/t", Some("tdata"));
        t.setquota("/t", 10);
        assert_eq!(t.stats("/t").as_deref(), Some("count=1,bytes=5"));
        t.create("/t/x", Some("xx"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=2,bytes=7"));
        t.create("/t/x/y", Some("yyy"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=3,bytes=10"));
        t.set("/t/x", Some("x"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=3,bytes=9"));
        t.set("/t", Some("tdatatdata"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=3,bytes=14"));
        t.delete("/t/x/y");
        assert_eq!(t.stats("/t").as_deref(), Some("count=2,bytes=11"));
        // Outside the quota: nothing changes.
        t.create("/tx", Some("zzz"));
        t.create("/other", Some("zzz"));
        t.set("/other", None);
        assert_eq!(t.stats("/t").as_deref(), Some("count=2,bytes=11"));
        // The stats node's Stat never moves, however often its data is rewritten.
        let s = t.tree.get(&stat_path("/t")).unwrap().stat();
        assert_eq!(s.version, 0);
        assert!(s.mzxid < t.zxid);
        // Deleting the quota root itself is counted too.
        t.delete("/t/x");
        t.delete("/t");
        assert_eq!(t.stats("/t").as_deref(), Some("count=0,bytes=0"));
    }

    #[test]
    fn null_data_counts_zero_bytes() {
        let mut t = T::new();
        t.create("/t", None);
        t.create("/t/e", Some(""));
        t.setquota("/t", 10);
        assert_eq!(t.stats("/t").as_deref(), Some("count=2,bytes=0"));
        t.create("/t/n", None);
        assert_eq!(t.stats("/t").as_deref(), Some("count=3,bytes=0"));
        t.set("/t/n", Some("abcd"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=3,bytes=4"));
        t.set("/t/n", None);
        assert_eq!(t.stats("/t").as_deref(), Some("count=3,bytes=0"));
        t.delete("/t/n");
        assert_eq!(t.stats("/t").as_deref(), Some("count=2,bytes=0"));
    }

    #[test]
    fn nested_quotas_update_only_the_deepest_prefix() {
        let mut t = T::new();
        t.create("/a", Some("a"));
        t.create("/a/b", Some("bb"));
        t.create("/a/bc", None);
        t.setquota("/a", 10);
        assert_eq!(t.stats("/a").as_deref(), Some("count=3,bytes=3"));
        t.setquota("/a/b", 10);
        assert_eq!(t.stats("/a/b").as_deref(), Some("count=1,bytes=2"));
        t.create("/a/b/c", Some("ccc"));
        assert_eq!(t.stats("/a/b").as_deref(), Some("count=2,bytes=5"));
        assert_eq!(t.stats("/a").as_deref(), Some("count=3,bytes=3"));
        // Component-wise: /a/bc is under /a, not /a/b.
        t.create("/a/bc/d", Some("dddd"));
        assert_eq!(t.stats("/a").as_deref(), Some("count=4,bytes=7"));
        assert_eq!(t.stats("/a/b").as_deref(), Some("count=2,bytes=5"));
        assert_eq!(
            t.tree.quotas().governing_prefix("/a/b/c/d").as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            t.tree.quotas().governing_prefix("/a/bc").as_deref(),
            Some("/a")
        );
        assert_eq!(t.tree.quotas().governing_prefix("/"), None);
        assert_eq!(t.tree.quotas().governing_prefix("/b"), None);
    }

    #[test]
    fn deleting_the_limits_node_stops_the_updates() {
        let mut t = T::new();
        t.create("/a", Some("a"));
        t.create("/a/b", None);
        t.setquota("/a", 10);
        t.setquota("/a/b", 10);
        t.delete(&limit_path("/a/b"));
        // /a/b now falls under /a; its stats node stays, frozen.
        t.create("/a/b/c", Some("cc"));
        assert_eq!(t.stats("/a/b").as_deref(), Some("count=1,bytes=0"));
        assert_eq!(t.stats("/a").as_deref(), Some("count=3,bytes=3"));
        t.delete(&limit_path("/a"));
        assert!(t.tree.quotas().is_empty());
        t.create("/a/d", Some("d"));
        assert_eq!(t.stats("/a").as_deref(), Some("count=3,bytes=3"));
        // A new limits node resumes the updates from the stale stats, without a recount.
        t.create(&limit_path("/a"), Some("count=5"));
        t.create("/a/e", Some("e"));
        assert_eq!(t.stats("/a").as_deref(), Some("count=4,bytes=4"));
        // delquota-style removal of everything: no stats node, no update, no error.
        t.delete(&stat_path("/a"));
        t.create("/a/f", Some("f"));
        assert_eq!(t.stats("/a"), None);
    }

    #[test]
    fn prefixes_are_normalized_as_zookeepers_path_trie() {
        let mut t = T::new();
        t.create("/x", Some("1"));
        t.create("/x/ ", Some("22"));
        // /zookeeper/quotax/zookeeper_limits registers /x; its stats node is
        // /zookeeper/quota/x/zookeeper_stats.
        t.create("/zookeeper/quotax", None);
        t.create("/zookeeper/quotax/zookeeper_limits", Some("count=1"));
        t.create("/zookeeper/quota/x", None);
        t.create(&stat_path("/x"), None);
        assert_eq!(t.stats("/x").as_deref(), Some("count=2,bytes=3"));
        // /x/ /y is governed by /x.
        t.create("/x/ /y", Some("333"));
        assert_eq!(t.stats("/x").as_deref(), Some("count=3,bytes=6"));
        // A quota on "/x/ " is the same prefix: updates still go to /x's stats node.
        t.create("/zookeeper/quota/x/ ", None);
        t.create("/zookeeper/quota/x/ /zookeeper_limits", None);
        assert_eq!(t.tree.quotas().prefixes().collect::<Vec<_>>(), ["/x"]);
        t.create("/x/ /z", Some("4444"));
        assert_eq!(t.stats("/x").as_deref(), Some("count=4,bytes=10"));
        // A limits node directly under /zookeeper/quota governs nothing...
        t.create("/zookeeper/quota/zookeeper_limits", None);
        assert_eq!(t.tree.quotas().prefixes().collect::<Vec<_>>(), ["/x"]);
        // ...but a stats node there is recounted over the whole tree (root and itself included), as
        // ZooKeeper's getCounts("") does.
        let (count, bytes) = t.tree.subtree_counts("/");
        t.create("/zookeeper/quota/zookeeper_stats", None);
        assert_eq!(
            t.data("/zookeeper/quota/zookeeper_stats"),
            Some(format!("count={},bytes={bytes}", count + 1))
        );
    }

    #[test]
    fn unparsable_or_null_stats_are_left_alone() {
        let mut t = T::new();
        t.create("/t", Some("t"));
        t.setquota("/t", 10);
        t.set(&stat_path("/t"), Some("count=oops"));
        t.create("/t/a", Some("a"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=oops"));
        t.set(&stat_path("/t"), None);
        t.create("/t/b", Some("b"));
        assert_eq!(t.stats("/t"), None);
        // Empty data parses (as -1s), extra fields are kept.
        t.set(&stat_path("/t"), Some(""));
        t.create("/t/c", Some("cc"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=0,bytes=1"));
        t.set(&stat_path("/t"), Some("count=1;bytes=1;note=7"));
        t.delete("/t/c");
        assert_eq!(t.stats("/t").as_deref(), Some("count=0,bytes=-1=;note=7"));
    }

    #[test]
    fn the_index_is_rebuilt_when_a_tree_is_loaded() {
        let mut t = T::new();
        t.create("/a", Some("a"));
        t.setquota("/a", 3);
        t.create("/a/b", Some("b"));
        let bytes = postcard::to_allocvec(&t.tree).unwrap();
        let mut back: DataTree = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, t.tree);
        assert_eq!(back.quotas().prefixes().collect::<Vec<_>>(), ["/a"]);
        back.create("/a/c", Some(Arc::from(&b"cc"[..])), open(), 0, 100, 0)
            .unwrap();
        t.create("/a/c", Some("cc"));
        assert_eq!(t.stats("/a").as_deref(), Some("count=3,bytes=4"));
        assert_eq!(
            back.get(&stat_path("/a")).unwrap().data(),
            t.tree.get(&stat_path("/a")).unwrap().data()
        );
    }

    #[test]
    fn check_quota_enforces_hard_limits_only() {
        let mut t = T::new();
        t.create("/t", Some("abc"));
        t.setquota("/t", 1);
        // Soft count limit 1 exceeded: only logged by ZooKeeper.
        assert_eq!(check_quota(&t.tree, "/t/a", 0, 1), Ok(()));
        t.set(
            &limit_path("/t"),
            Some("count=-1,bytes=-1=;byteHardLimit=5;countHardLimit=2"),
        );
        assert_eq!(check_quota(&t.tree, "/t/a", 2, 1), Ok(()));
        t.create("/t/a", Some("xy"));
        assert_eq!(t.stats("/t").as_deref(), Some("count=2,bytes=5"));
        assert_eq!(
            check_quota(&t.tree, "/t/b", 0, 1),
            Err(ErrorCode::QuotaExceeded)
        );
        assert_eq!(
            check_quota(&t.tree, "/t/a", 1, 0),
            Err(ErrorCode::QuotaExceeded)
        );
        assert_eq!(check_quota(&t.tree, "/t/a", -1, 0), Ok(()));
        assert_eq!(check_quota(&t.tree, "/t/a", 0, 0), Ok(()));
        assert_eq!(check_quota(&t.tree, "/u", 100, 1), Ok(()));
        t.set(&stat_path("/t"), None);
        assert_eq!(
            check_quota(&t.tree, "/t/b", 0, 1),
            Err(ErrorCode::MarshallingError)
        );
        t.delete(&stat_path("/t"));
        assert_eq!(check_quota(&t.tree, "/t/b", 0, 1), Ok(()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Create(&'static str, Option<Vec<u8>>),
            Delete(&'static str),
            Set(&'static str, Option<Vec<u8>>),
        }

        const PLAIN: [&str; 8] = [
            "/a", "/a/b", "/a/b/c", "/a/b/c/d", "/a/c", "/a/c/d", "/ab", "/b",
        ];
        const QUOTA_NODES: [&str; 6] = [
            "/zookeeper/quota/a",
            "/zookeeper/quota/a/zookeeper_limits",
            "/zookeeper/quota/a/zookeeper_stats",
            "/zookeeper/quota/a/b",
            "/zookeeper/quota/a/b/zookeeper_limits",
            "/zookeeper/quota/a/b/zookeeper_stats",
        ];

        fn op(paths: &'static [&'static str]) -> impl Strategy<Value = Op> {
            let path = prop::sample::select(paths);
            let data = prop::option::of(prop::collection::vec(any::<u8>(), 0..5));
            prop_oneof![
                3 => (path.clone(), data.clone()).prop_map(|(p, d)| Op::Create(p, d)),
                2 => path.clone().prop_map(Op::Delete),
                2 => (path, data).prop_map(|(p, d)| Op::Set(p, d)),
            ]
        }

        fn run(t: &mut T, op: &Op) {
            t.zxid += 1;
            let z = t.zxid;
            match op {
                Op::Create(p, d) => {
                    let _ = t
                        .tree
                        .create(p, d.as_deref().map(Arc::from), open(), 0, z, 0);
                }
                Op::Delete(p) => {
                    let _ = t.tree.delete(p, z);
                }
                Op::Set(p, d) => {
                    let _ = t.tree.set_data(p, d.as_deref().map(Arc::from), 1, z, 0);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// With quotas set the zkCli.sh way, the stats always equal a recount, whatever happens to
            /// the data nodes (the quota roots deleted and created again included). /a's stats keep
            /// what /a/b's subtree held when the nested quota was set; later changes there go to /a/b.
            #[test]
            fn stats_always_equal_a_recount(
                before in prop::collection::vec(op(&PLAIN), 0..20),
                after in prop::collection::vec(op(&PLAIN), 0..40),
            ) {
                let mut t = T::new();
                for o in &before {
                    run(&mut t, o);
                }
                if !t.tree.contains("/a") {
                    t.create("/a", None);
                }
                t.setquota("/a", 1);
                t.setquota("/a/b", 1);
                let (base_count, base_bytes) = t.tree.subtree_counts("/a/b");
                for o in &after {
                    run(&mut t, o);
                    t.tree.check_invariants().map_err(TestCaseError::fail)?;
                    let (a_count, a_bytes) = t.tree.subtree_counts("/a");
                    let (b_count, b_bytes) = t.tree.subtree_counts("/a/b");
                    let a = format!(
                        "count={},bytes={}",
                        a_count - b_count + base_count,
                        a_bytes - b_bytes + base_bytes
                    );
                    prop_assert_eq!(t.stats("/a"), Some(a));
                    prop_assert_eq!(t.stats("/a/b"), Some(format!("count={b_count},bytes={b_bytes}")));
                }
            }

            /// Whatever is done to the quota nodes themselves, the index follows the tree, and a
            /// loaded snapshot equals the tree and goes on identically.
            #[test]
            fn the_index_follows_the_tree_and_snapshots_round_trip(
                ops in prop::collection::vec(prop_oneof![op(&PLAIN), op(&QUOTA_NODES)], 0..60),
            ) {
                let mut t = T::new();
                let (first, second) = ops.split_at(ops.len() / 2);
                for o in first {
                    run(&mut t, o);
                    t.tree.check_invariants().map_err(TestCaseError::fail)?;
                }
                let bytes = postcard::to_allocvec(&t.tree).unwrap();
                let back: DataTree = postcard::from_bytes(&bytes).unwrap();
                prop_assert_eq!(&back, &t.tree);
                let mut twin = T { tree: back, zxid: t.zxid };
                for o in second {
                    run(&mut t, o);
                    run(&mut twin, o);
                    t.tree.check_invariants().map_err(TestCaseError::fail)?;
                }
                prop_assert_eq!(&twin.tree, &t.tree);
            }
        }
    }

    // Through the state machine: the zkCli.sh setquota sequence, a multi, and a session close.

    fn cmd(session_id: i64, op: CommandOp) -> Command {
        Command {
            session_id,
            cxid: 0,
            time_ms: 1,
            auth: vec![].into(),
            op,
        }
    }

    fn create_req(path: &str, data: &str, flags: i32) -> CreateRequest {
        CreateRequest {
            path: path.into(),
            data: Some(data.as_bytes().to_vec()),
            acl: crate::acl::open_acl_unsafe(),
            flags,
            ttl: -1,
        }
    }

    fn write(sm: &mut StateMachine, s: i64, req: Request) {
        let applied = sm.apply(&cmd(s, CommandOp::Write(req)));
        assert_eq!(applied.err, 0, "{applied:?}");
        sm.check_invariants().unwrap();
    }

    fn create(sm: &mut StateMachine, s: i64, path: &str, data: &str, flags: i32) {
        write(
            sm,
            s,
            Request::Create {
                op: OpCode::Create,
                req: create_req(path, data, flags),
            },
        );
    }

    fn stats_of(sm: &StateMachine, path: &str) -> String {
        let n = sm.tree().get(&stat_path(path)).unwrap();
        String::from_utf8(n.data_vec().unwrap()).unwrap()
    }

    #[test]
    fn apply_keeps_the_stats_like_zookeeper() {
        let mut sm = StateMachine::new();
        sm.apply(&cmd(
            0,
            CommandOp::Bootstrap {
                secret: vec![7],
                member_id: 1,
                settings: ApplySettings::default(),
            },
        ));
        let s = match sm
            .apply(&cmd(0, CommandOp::CreateSession { timeout_ms: 30000 }))
            .session
        {
            Some(crate::SessionChange::Created { id, .. }) => id,
            other => panic!("{other:?}"),
        };
        create(&mut sm, s, "/r", "", 0);
        create(&mut sm, s, "/r/t", "tdata", 0);
        create(&mut sm, s, "/zookeeper/quota/r", "", 0);
        create(&mut sm, s, "/zookeeper/quota/r/t", "", 0);
        create(
            &mut sm,
            s,
            &limit_path("/r/t"),
            "count=10,bytes=-1=;byteHardLimit=-1;countHardLimit=-1",
            0,
        );
        create(&mut sm, s, &stat_path("/r/t"), "count=0,bytes=0", 0);
        let created = sm.tree().get(&stat_path("/r/t")).unwrap().stat();
        create(&mut sm, s, "/r/t/x", "xx", 0);
        assert_eq!(stats_of(&sm, "/r/t"), "count=2,bytes=7");
        // The stats node's stat is the one of its create; reading it shows the new dataLength.
        let (err, resp) = sm.read(
            s,
            &Request::GetData(oxkeeper_proto::PathWatch {
                path: stat_path("/r/t"),
                watch: false,
            }),
            &[],
        );
        assert_eq!(err, 0);
        match resp {
            oxkeeper_proto::Response::GetData { data, stat } => {
                assert_eq!(data.as_deref(), Some(&b"count=2,bytes=7"[..]));
                assert_eq!((stat.version, stat.mzxid), (0, created.mzxid));
                assert_eq!(stat.data_length, 15);
            }
            other => panic!("{other:?}"),
        }
        // A multi counts each op; a failed multi changes nothing.
        write(
            &mut sm,
            s,
            Request::Multi(vec![
                MultiOp::Create {
                    op: OpCode::Create,
                    req: create_req("/r/t/m", "mmm", 0),
                },
                MultiOp::SetData(SetDataRequest {
                    path: "/r/t/x".into(),
                    data: None,
                    version: -1,
                }),
            ]),
        );
        assert_eq!(stats_of(&sm, "/r/t"), "count=3,bytes=8");
        write(
            &mut sm,
            s,
            Request::Multi(vec![
                MultiOp::Delete(PathVersion {
                    path: "/r/t/m".into(),
                    version: -1,
                }),
                MultiOp::Delete(PathVersion {
                    path: "/r/t/missing".into(),
                    version: -1,
                }),
            ]),
        );
        assert_eq!(stats_of(&sm, "/r/t"), "count=3,bytes=8");
        // Ephemerals removed by a session close are counted out.
        create(&mut sm, s, "/r/t/e", "eeee", 1);
        assert_eq!(stats_of(&sm, "/r/t"), "count=4,bytes=12");
        let before = sm.tree().get(&stat_path("/r/t")).unwrap().stat();
        sm.apply(&cmd(s, CommandOp::CloseSession));
        sm.check_invariants().unwrap();
        assert_eq!(stats_of(&sm, "/r/t"), "count=3,bytes=8");
        assert_eq!(sm.tree().get(&stat_path("/r/t")).unwrap().stat(), before);
        assert_eq!(sm.tree().get(&stat_path("/r/t")).unwrap().stat(), created);
        // A snapshot round-trips and goes on identically.
        let bytes = postcard::to_allocvec(&sm).unwrap();
        let back: StateMachine = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, sm);
    }
}
