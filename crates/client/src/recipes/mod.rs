//! Coordination recipes built on the public API only: a lock, leader election, and a subtree cache.
