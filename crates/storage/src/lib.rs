//! The write-ahead log (segments, batches, group commit, recovery) and snapshot files.
//!
//! Everything goes through the `Disk` trait so tests can simulate power loss. Knows nothing of Raft or
//! ZooKeeper: it stores opaque entries by index.
