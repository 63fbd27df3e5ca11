//! Coordination recipes built on the public API only: a lock, leader election, and a subtree cache.
//!
//! - [`Lock`]: ZooKeeper's lock recipe as Curator's `InterProcessMutex` does it (no herd effect).
//! - [`LeaderElection`]: Curator's `LeaderLatch`, keeping its place in line across connection loss.
//! - [`TreeCache`]: path → data + Stat for a whole subtree, kept current by one persistent recursive watch.
//!
//! Every recipe survives connection loss (calls are retried; the client queues them until it has
//! reconnected) and reports session expiry as final: a recipe never opens a new session itself. The lock
//! and the election create "protected" nodes (`_c_<guid>-<name><sequence>`, Curator's format, so both can
//! share a directory with Curator clients): when a create's reply is lost the node may exist anyway, and the
//! GUID is how we find it instead of creating a second one that nobody would ever delete.

mod cache;
mod election;
mod lock;
mod protected;
mod retry;

pub use cache::{CacheEvent, CacheEvents, CachedNode, TreeCache};
pub use election::{Candidacy, LeaderElection, Participant, Role};
pub use lock::{Lock, LockGuard, Ownership};
