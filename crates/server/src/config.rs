//! Member configuration: defaults, and ZooKeeper's own `zoo.cfg` format (key=value lines).
//!
//! Settings ZooKeeper reads as `zookeeper.*` system properties are accepted in zoo.cfg with or without that
//! prefix, as ZooKeeper itself accepts them. Unknown keys are warned about, never fatal.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: invalid value {value:?} for {key}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tick_ms: u64,
    pub data_dir: PathBuf,
    pub data_log_dir: PathBuf,
    pub client_port: u16,
    pub client_port_address: IpAddr,
    /// Session timeout bounds; `None` means the ZooKeeper default of 2 and 20 ticks.
    pub min_session_timeout_ms: Option<u64>,
    pub max_session_timeout_ms: Option<u64>,
    /// Connections per client IP; 0 = unlimited.
    pub max_client_cnxns: usize,
    pub global_outstanding_limit: usize,
    pub max_buffer_bytes: usize,
    /// `None` = `*` (every command); default `srvr` only, as ZooKeeper.
    pub four_letter_whitelist: Option<Vec<String>>,
    pub super_digest: Option<String>,
    pub extended_types_enabled: bool,
    pub sessionless_cnxn_timeout_ms: u64,
    /// `forceSync`: fdatasync every log batch before acknowledging it. `no` (standalone only): a write
    /// is acknowledged once written to the file, and the log is synced `lazy_sync_ms` after its first
    /// unsynced write, when a segment fills, and at shutdown.
    pub force_sync: bool,
    /// With `forceSync=no`: how long written log entries may stay unsynced (not a zoo.cfg key).
    pub lazy_sync_ms: u64,
    /// `logDirectWrites` (oxkeeper's own, default yes): the log's segments are written around the page
    /// cache (O_DIRECT) where the file system allows it, so that each fdatasync only flushes the device's
    /// cache (`oxkeeper_storage::WalOptions::direct_writes`).
    pub log_direct_writes: bool,
    /// `logPrepareSegments` (oxkeeper's own, default yes): the log's next segment is made ready, zeroed
    /// through, on a thread of its own (`oxkeeper_storage::WalOptions::prepare_segments`).
    pub log_prepare_segments: bool,
    /// Outbound messages queued per connection before that connection is closed as too slow.
    pub outbound_queue_max: usize,
    pub container_check_interval_ms: u64,
    /// Containers and TTL nodes the reaper deletes per minute at most (`znode.container.maxPerMinute`).
    pub container_max_per_minute: u32,
    /// `sessionExpiryRate` (oxkeeper's own): how many nodes expiry may remove per second, counting each
    /// expired session as one plus its ephemerals. Mass expiry is spread out at this rate so that live
    /// sessions' pings and requests are never starved.
    pub session_expiry_rate: u64,
    /// `snapCount`: a snapshot is taken every this many transactions (a log entry holds one or more).
    pub snap_count: u64,
    /// `autopurge.snapRetainCount`: snapshots kept (at least 3, as ZooKeeper).
    pub snap_retain_count: usize,
    pub unknown_keys: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick_ms: 2000,
            data_dir: PathBuf::from("oxkeeper-data"),
            data_log_dir: PathBuf::from("oxkeeper-data"),
            client_port: 2181,
            client_port_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            min_session_timeout_ms: None,
            max_session_timeout_ms: None,
            max_client_cnxns: 60,
            global_outstanding_limit: 1000,
            max_buffer_bytes: oxkeeper_proto::codec::MAX_BUFFER_BYTES_DEFAULT,
            four_letter_whitelist: Some(vec!["srvr".to_string()]),
            super_digest: None,
            extended_types_enabled: false,
            sessionless_cnxn_timeout_ms: 10_000,
            force_sync: true,
            lazy_sync_ms: 1000,
            log_direct_writes: true,
            log_prepare_segments: true,
            outbound_queue_max: 100_000,
            container_check_interval_ms: 60_000,
            container_max_per_minute: 10_000,
            session_expiry_rate: 100_000,
            snap_count: 100_000,
            snap_retain_count: 3,
            unknown_keys: Vec::new(),
        }
    }
}

impl Config {
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.client_port_address, self.client_port)
    }
    pub fn min_session_timeout_ms(&self) -> u64 {
        self.min_session_timeout_ms.unwrap_or(2 * self.tick_ms)
    }
    pub fn max_session_timeout_ms(&self) -> u64 {
        self.max_session_timeout_ms.unwrap_or(20 * self.tick_ms)
    }
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
    pub fn four_letter_allowed(&self, word: &str) -> bool {
        match &self.four_letter_whitelist {
            None => true,
            Some(list) => list.iter().any(|w| w == word),
        }
    }

    /// Reads a ZooKeeper `zoo.cfg`. Relative paths are taken relative to the current directory, as ZooKeeper does.
    pub fn from_zoo_cfg(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        let mut data_log_dir_set = false;
        let mut entries = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                cfg.unknown_keys.push(line.to_string());
                continue;
            };
            entries.insert(k.trim().to_string(), (i + 1, v.trim().to_string()));
        }
        // forceSync=no acknowledges writes that a power loss can take back: a lone member may choose
        // that for itself, but an ensemble member would count such writes towards a quorum.
        let force_sync_no = entries.iter().find(|(key, (_, value))| {
            key.strip_prefix("zookeeper.").unwrap_or(key) == "forceSync"
                && matches!(value.to_ascii_lowercase().as_str(), "no" | "false")
        });
        if let Some((_, (line, value))) = force_sync_no {
            let (line, value) = (*line, value.clone());
            if let Some(member) = entries.keys().find(|key| key.starts_with("server.")) {
                return Err(ConfigError::Invalid {
                    path: path.into(),
                    line,
                    key: "forceSync".into(),
                    value,
                    reason: format!(
                        "forceSync=no is allowed standalone only, and {member} lists an ensemble \
                         member: a member would acknowledge writes a power loss can take back"
                    ),
                });
            }
        }
        for (key, (line, value)) in entries {
            let bad = |reason: &str| ConfigError::Invalid {
                path: path.into(),
                line,
                key: key.clone(),
                value: value.clone(),
                reason: reason.to_string(),
            };
            let num = || {
                value
                    .parse::<u64>()
                    .map_err(|_| bad("expected a non-negative integer"))
            };
            let flag = || match value.to_ascii_lowercase().as_str() {
                "true" | "yes" => Ok(true),
                "false" | "no" => Ok(false),
                _ => Err(bad("expected true/false or yes/no")),
            };
            let bare = key.strip_prefix("zookeeper.").unwrap_or(&key);
            match bare {
                "tickTime" => {
                    cfg.tick_ms = num()?;
                    if cfg.tick_ms == 0 {
                        return Err(bad("tickTime must be positive"));
                    }
                }
                "dataDir" => cfg.data_dir = PathBuf::from(&value),
                "dataLogDir" => {
                    cfg.data_log_dir = PathBuf::from(&value);
                    data_log_dir_set = true;
                }
                "clientPort" => {
                    cfg.client_port = value.parse().map_err(|_| bad("expected a port number"))?
                }
                "clientPortAddress" => {
                    cfg.client_port_address =
                        value.parse().map_err(|_| bad("expected an IP address"))?
                }
                "minSessionTimeout" => {
                    let v = value
                        .parse::<i64>()
                        .map_err(|_| bad("expected an integer"))?;
                    cfg.min_session_timeout_ms = (v >= 0).then_some(v as u64);
                }
                "maxSessionTimeout" => {
                    let v = value
                        .parse::<i64>()
                        .map_err(|_| bad("expected an integer"))?;
                    cfg.max_session_timeout_ms = (v >= 0).then_some(v as u64);
                }
                "maxClientCnxns" => cfg.max_client_cnxns = num()? as usize,
                "globalOutstandingLimit" => cfg.global_outstanding_limit = num()?.max(1) as usize,
                "jute.maxbuffer" => {
                    let v =
                        parse_jute_size(&value).ok_or_else(|| bad("expected a size in bytes"))?;
                    cfg.max_buffer_bytes = v;
                }
                "4lw.commands.whitelist" => {
                    let words: Vec<String> = value
                        .split(',')
                        .map(|w| w.trim().to_string())
                        .filter(|w| !w.is_empty())
                        .collect();
                    cfg.four_letter_whitelist = if words.iter().any(|w| w == "*") {
                        None
                    } else {
                        Some(words)
                    };
                }
                "DigestAuthenticationProvider.superDigest" => {
                    cfg.super_digest = Some(value.clone())
                }
                "extendedTypesEnabled" => cfg.extended_types_enabled = flag()?,
                "nio.sessionlessCnxnTimeout" => cfg.sessionless_cnxn_timeout_ms = num()?,
                "forceSync" => cfg.force_sync = flag()?,
                "logDirectWrites" => cfg.log_direct_writes = flag()?,
                "logPrepareSegments" => cfg.log_prepare_segments = flag()?,
                "znode.container.checkIntervalMs" => {
                    cfg.container_check_interval_ms = num()?.max(1)
                }
                "sessionExpiryRate" => cfg.session_expiry_rate = num()?.max(1),
                "snapCount" => cfg.snap_count = num()?.max(2),
                "autopurge.snapRetainCount" => {
                    cfg.snap_retain_count = usize::try_from(num()?.max(3)).map_err(|_| bad("too large"))?
                }
                "znode.container.maxPerMinute" => {
                    cfg.container_max_per_minute =
                        u32::try_from(num()?.max(1)).map_err(|_| bad("too large"))?
                }
                // Accepted for compatibility; they have no effect on a standalone oxkeeper member.
                "initLimit"
                | "syncLimit"
                | "admin.enableServer"
                | "admin.serverPort"
                | "standaloneEnabled"
                | "reconfigEnabled"
                // The log is purged as soon as a snapshot covers it (see DEVIATIONS.md).
                | "autopurge.purgeInterval"
                | "preAllocSize"
                | "clientPortListenBacklog"
                | "metricsProvider.className" => {}
                _ => {
                    tracing::warn!(key = %key, "unknown configuration key ignored");
                    cfg.unknown_keys.push(key.clone());
                }
            }
        }
        if !data_log_dir_set {
            cfg.data_log_dir = cfg.data_dir.clone();
        }
        Ok(cfg)
    }
}

/// `jute.maxbuffer` takes a plain number of bytes (ZooKeeper also accepts a `K`/`M` suffix via Integer.getInteger? it
/// does not; we accept a plain number and, leniently, hex).
fn parse_jute_size(v: &str) -> Option<usize> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        usize::from_str_radix(hex, 16).ok()
    } else {
        v.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zoo_cfg_with_and_without_zookeeper_prefix() {
        let text = "# comment\ntickTime=3000\ndataDir=/tmp/zk\nclientPort=2999\nclientPortAddress=0.0.0.0\n\
                    zookeeper.extendedTypesEnabled=true\nDigestAuthenticationProvider.superDigest=super:abc\n\
                    4lw.commands.whitelist=ruok, srvr,mntr\njute.maxbuffer=0x1000\nbogusKey=1\n";
        let c = Config::parse(Path::new("zoo.cfg"), text).expect("valid config");
        assert_eq!(c.tick_ms, 3000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/zk"));
        assert_eq!(c.data_log_dir, PathBuf::from("/tmp/zk"));
        assert_eq!(c.client_addr().to_string(), "0.0.0.0:2999");
        assert!(c.extended_types_enabled);
        assert_eq!(c.super_digest.as_deref(), Some("super:abc"));
        assert!(
            c.four_letter_allowed("mntr")
                && c.four_letter_allowed("ruok")
                && !c.four_letter_allowed("dump")
        );
        assert_eq!(c.max_buffer_bytes, 0x1000);
        assert_eq!(c.min_session_timeout_ms(), 6000);
        assert_eq!(c.max_session_timeout_ms(), 60000);
        assert_eq!(c.unknown_keys, vec!["bogusKey".to_string()]);
    }

    #[test]
    fn star_whitelist_allows_everything_and_default_allows_only_srvr() {
        let c = Config::parse(Path::new("z"), "4lw.commands.whitelist=*\n").expect("valid");
        assert!(c.four_letter_allowed("dump"));
        let d = Config::default();
        assert!(d.four_letter_allowed("srvr") && !d.four_letter_allowed("ruok"));
    }

    #[test]
    fn bad_values_name_the_line() {
        let err = Config::parse(Path::new("zoo.cfg"), "tickTime=abc\n").expect_err("invalid");
        assert!(err.to_string().contains("zoo.cfg:1"), "{err}");
    }

    #[test]
    fn the_log_is_written_around_the_page_cache_unless_told_not_to() {
        assert!(Config::default().log_direct_writes);
        let off = Config::parse(Path::new("zoo.cfg"), "logDirectWrites=no\n").expect("valid");
        assert!(!off.log_direct_writes);
        let on = Config::parse(Path::new("zoo.cfg"), "logDirectWrites=true\n").expect("valid");
        assert!(on.log_direct_writes && on.unknown_keys.is_empty());
    }

    #[test]
    fn the_next_segment_is_prepared_ahead_unless_told_not_to() {
        assert!(Config::default().log_prepare_segments);
        let off = Config::parse(Path::new("zoo.cfg"), "logPrepareSegments=no\n").expect("valid");
        assert!(!off.log_prepare_segments && off.unknown_keys.is_empty());
    }

    #[test]
    fn force_sync_no_is_for_a_lone_member_only() {
        let lone = Config::parse(Path::new("zoo.cfg"), "forceSync=no\n").expect("valid");
        assert!(!lone.force_sync);
        assert!(Config::default().force_sync);
        let text = "tickTime=2000\nforceSync=no\nserver.1=a:2888:3888\nserver.2=b:2888:3888\n";
        let err = Config::parse(Path::new("zoo.cfg"), text).expect_err("an ensemble");
        let message = err.to_string();
        assert!(
            message.contains("zoo.cfg:2") && message.contains("standalone only"),
            "{message}"
        );
        let prefixed = "zookeeper.forceSync=false\nserver.1=a:2888:3888\n";
        assert!(Config::parse(Path::new("zoo.cfg"), prefixed).is_err());
        let synced = "forceSync=yes\nserver.1=a:2888:3888\n";
        assert!(Config::parse(Path::new("zoo.cfg"), synced).is_ok());
    }
}
