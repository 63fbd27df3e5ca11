//! The write-ahead log (segments, batches, group commit, recovery) and small durable files.
//!
//! Everything goes through the `Disk` trait so tests can simulate power loss (`SimDisk`, with
//! `cfg(test)` or the `sim` feature). Knows nothing of Raft or ZooKeeper: it stores opaque entries by
//! `u64` index. `Wal` is the synchronous log, `WalWriter` the group-commit thread that owns one,
//! `write_atomic`/`read_file` the small metadata files (vote, committed index).

mod atomic_file;
mod disk;
mod error;
mod format;
pub mod hoptrace;
mod reader;
mod recovery;
#[cfg(any(test, feature = "sim"))]
mod sim;
pub mod snapshot;
#[doc(hidden)]
pub mod testing;
mod wal;
mod writer;

pub use atomic_file::{read_file, write_atomic, write_atomic_waiting_for_space};
pub use disk::{Disk, DiskFile, RealDisk, RealFile};
pub use error::WalError;
pub use reader::LogView;
#[cfg(any(test, feature = "sim"))]
pub use sim::{SimDisk, SimFault, SimFile};
pub use wal::{Recovered, Wal, WalOptions};
pub use writer::{Completion, WalHealth, WalWriter, WalWriterStats};
