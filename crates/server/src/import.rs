//! `oxkeeper import-zookeeper`: turns an Apache ZooKeeper data directory (3.4-3.9 snapshots and logs) into a
//! new oxkeeper data directory — one snapshot holding ZooKeeper's whole state — that a member then starts
//! from: every node with its data, ACL and Stat, the live sessions (keeping ZooKeeper's password derivation,
//! so their clients reconnect without noticing), and zxids continuing above ZooKeeper's.

use std::path::{Path, PathBuf};

use oxkeeper_core::state::{ApplySettings, StateMachine};
use rand::RngCore;

use crate::config::Config;
use crate::executor::encode_state;
use crate::replication::write_seed_snapshot;

/// What an import did, for the operator.
#[derive(Debug)]
pub struct ImportReport {
    pub snapshot: PathBuf,
    pub zookeeper_snapshot: PathBuf,
    pub logs: Vec<PathBuf>,
    pub txns_applied: u64,
    pub nodes: usize,
    pub sessions: usize,
    pub last_zxid: i64,
    pub digest_verified_at: Option<i64>,
    pub notes: Vec<String>,
}

/// Reads ZooKeeper's `zk_data_dir` (and `zk_log_dir`, its dataLogDir, if separate) and writes the oxkeeper
/// data directory of `config` (dataDir, dataLogDir), which must hold no data yet.
pub fn import_zookeeper(
    zk_data_dir: &Path,
    zk_log_dir: Option<&Path>,
    config: &Config,
) -> Result<ImportReport, String> {
    let snapshot_dir = config.data_dir.join("snapshots");
    for (what, dir) in [
        ("snapshots", &snapshot_dir),
        ("log", &config.data_log_dir.join("log")),
    ] {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(format!(
                "{} already holds oxkeeper {what}: import into an empty data directory",
                dir.display()
            ));
        }
    }
    let img =
        oxkeeper_zkimport::read_zookeeper_dirs(zk_data_dir, zk_log_dir.unwrap_or(zk_data_dir))
            .map_err(|e| e.to_string())?;
    // TTL nodes need extended types; a zoo.cfg that enables them keeps them enabled (a member replicates its
    // config's setting at start anyway).
    let has_ttl = img.image.nodes.iter().any(|n| {
        let owner = n.stat.ephemeral_owner;
        owner & oxkeeper_proto::TTL_EPHEMERAL_OWNER_MASK == oxkeeper_proto::TTL_EPHEMERAL_OWNER_MASK
            && owner != -1
    });
    let settings = ApplySettings {
        extended_types_enabled: config.extended_types_enabled || has_ttl,
    };
    let mut secret = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let nodes = img.image.nodes.len();
    let sessions = img.image.sessions.len();
    let last_zxid = img.image.last_zxid;
    let sm = StateMachine::from_zookeeper(img.image, secret, 1, settings)?;
    std::fs::create_dir_all(&snapshot_dir)
        .map_err(|e| format!("{}: {e}", snapshot_dir.display()))?;
    let snapshot =
        write_seed_snapshot(&snapshot_dir, 1, &encode_state(&sm)).map_err(|e| e.to_string())?;
    Ok(ImportReport {
        snapshot,
        zookeeper_snapshot: img.snapshot,
        logs: img.logs,
        txns_applied: img.txns_applied,
        nodes,
        sessions,
        last_zxid,
        digest_verified_at: img.digest_verified_at,
        notes: img.notes,
    })
}
