//! Reads an Apache ZooKeeper data directory, as `oxkeeper import-zookeeper` needs it: the newest valid
//! `version-2/snapshot.<zxid>`, then the `log.<zxid>` transactions after it (ZooKeeper 3.4 to 3.9
//! layouts: with or without the 3.6+ digests and `CloseSessionTxn`), replayed with ZooKeeper's own rules
//! ([`oxkeeper_core::import::ZkReplay`]) into a [`ZkImage`]. `StateMachine::from_zookeeper` turns its
//! image into oxkeeper's state.
//!
//! Only reads: the ZooKeeper files are never changed. Corrupt input is an [`ImportError`] naming the
//! file and the byte offset, never a panic.

mod adler32;
mod digest;
mod error;
mod restore;
mod snapshot;
#[cfg(test)]
mod tests;
mod txn;
mod txnlog;

pub use error::ImportError;
pub use oxkeeper_core::import::{ImportedNode, ImportedSession, ZooKeeperImage};

use std::path::{Path, PathBuf};

/// What was read from a ZooKeeper data directory.
#[derive(Clone, Debug)]
pub struct ZkImage {
    /// Nodes, sessions and last zxid, for `StateMachine::from_zookeeper`.
    pub image: ZooKeeperImage,
    /// Warnings for the operator: skipped snapshots, torn log tails, missing transactions, digest
    /// mismatches, what ZooKeeper's load would also have cleaned up.
    pub notes: Vec<String>,
    /// The snapshot the import started from and the zxid in its name.
    pub snapshot: PathBuf,
    pub snapshot_zxid: i64,
    /// The log files read, oldest first.
    pub logs: Vec<PathBuf>,
    pub txns_applied: u64,
    /// The zxid after which the imported tree's digest equalled the one ZooKeeper recorded (3.6+ data):
    /// proof that the replay rebuilt ZooKeeper's tree exactly. `None` if the data has no digest to
    /// compare with, or if they differ (then `notes` says so).
    pub digest_verified_at: Option<i64>,
}

impl ZkImage {
    pub fn nodes(&self) -> &[ImportedNode] {
        &self.image.nodes
    }

    pub fn sessions(&self) -> &[ImportedSession] {
        &self.image.sessions
    }

    pub fn last_zxid(&self) -> i64 {
        self.image.last_zxid
    }
}

/// Reads a ZooKeeper `dataDir` (the folder holding `version-2`, or `version-2` itself) whose
/// transaction logs are in the same place.
pub fn read_zookeeper_dir(dir: &Path) -> Result<ZkImage, ImportError> {
    read_zookeeper_dirs(dir, dir)
}

/// Reads a ZooKeeper `dataDir` whose transaction logs are in a separate `dataLogDir`.
pub fn read_zookeeper_dirs(data_dir: &Path, data_log_dir: &Path) -> Result<ZkImage, ImportError> {
    let snap_dir = version_2(data_dir);
    let log_dir = version_2(data_log_dir);
    let snapshots = list(&snap_dir, "snapshot")?;
    let logs = list(&log_dir, "log")?;
    restore::restore(&snap_dir, &snapshots, &logs, &mut |path| {
        std::fs::read(path).map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// ZooKeeper keeps its files in `<dataDir>/version-2`.
fn version_2(dir: &Path) -> PathBuf {
    let v2 = dir.join("version-2");
    if v2.is_dir() {
        v2
    } else {
        dir.to_path_buf()
    }
}

/// The files of `dir` named `prefix.<hex zxid>...`, by zxid.
fn list(dir: &Path, prefix: &str) -> Result<Vec<restore::Named>, ImportError> {
    let io = |source| ImportError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(zxid) = entry
            .file_name()
            .to_str()
            .and_then(|n| restore::zxid_from_name(n, prefix))
        else {
            continue;
        };
        if entry.file_type().map_err(io)?.is_file() {
            out.push((zxid, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}
