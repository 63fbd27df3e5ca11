//! ZooKeeper's digest of a whole tree (3.6+, `DigestCalculator` version 2 added up by `AdHash`): the sum
//! of a CRC-32 per node over its path (`""` for the root), data and persisted stat, leaving out
//! everything below `/zookeeper/`. Comparing it with the digest ZooKeeper logged proves the replay
//! rebuilt exactly ZooKeeper's tree.

use oxkeeper_core::DataTree;

/// The digest version this computes (`DigestCalculator.DIGEST_VERSION`).
pub(crate) const DIGEST_VERSION: i32 = 2;
/// `ZooDefs.ZOOKEEPER_NODE_SUBTREE`: quota statistics change without transactions, so they are left out.
const SKIPPED_SUBTREE: &str = "/zookeeper/";

pub(crate) fn tree_digest(tree: &DataTree) -> i64 {
    let mut sum = 0i64;
    for (path, node) in tree.iter() {
        if path.starts_with(SKIPPED_SUBTREE) {
            continue;
        }
        let path: &str = if &*path == "/" { "" } else { &path };
        let s = node.stat();
        let mut fields = [0u8; 60];
        let longs_then_ints = [s.czxid, s.mzxid, s.pzxid, s.ctime, s.mtime];
        for (i, v) in longs_then_ints.iter().enumerate() {
            fields[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        for (i, v) in [s.version, s.cversion, s.aversion].iter().enumerate() {
            fields[40 + i * 4..44 + i * 4].copy_from_slice(&v.to_be_bytes());
        }
        fields[52..60].copy_from_slice(&s.ephemeral_owner.to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(path.as_bytes());
        if let Some(data) = node.data() {
            crc.update(data);
        }
        crc.update(&fields);
        sum = sum.wrapping_add(i64::from(crc.finalize()));
    }
    sum
}
