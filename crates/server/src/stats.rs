//! Counters behind `srvr`, `stat`, `cons` and `mntr`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use oxkeeper_proto::OpCode;

#[derive(Default)]
pub struct ServerStats {
    packets_received: AtomicU64,
    packets_sent: AtomicU64,
    latency_count: AtomicU64,
    latency_total_ms: AtomicU64,
    latency_min_ms: AtomicI64,
    latency_max_ms: AtomicI64,
}

impl ServerStats {
    pub fn packet_received(&self) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
    }
    pub fn packet_sent(&self) {
        self.packets_sent.fetch_add(1, Ordering::Relaxed);
    }
    pub fn latency(&self, d: Duration) {
        let ms = d.as_millis() as i64;
        let n = self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_total_ms
            .fetch_add(ms as u64, Ordering::Relaxed);
        if n == 0 {
            self.latency_min_ms.store(ms, Ordering::Relaxed);
        } else {
            self.latency_min_ms.fetch_min(ms, Ordering::Relaxed);
        }
        self.latency_max_ms.fetch_max(ms, Ordering::Relaxed);
    }
    pub fn received(&self) -> u64 {
        self.packets_received.load(Ordering::Relaxed)
    }
    pub fn sent(&self) -> u64 {
        self.packets_sent.load(Ordering::Relaxed)
    }
    /// (min, avg, max) in ms, ZooKeeper's `Latency min/avg/max`.
    pub fn latency_min_avg_max(&self) -> (i64, f64, i64) {
        let n = self.latency_count.load(Ordering::Relaxed);
        if n == 0 {
            return (0, 0.0, 0);
        }
        let total = self.latency_total_ms.load(Ordering::Relaxed) as f64;
        (
            self.latency_min_ms.load(Ordering::Relaxed),
            total / n as f64,
            self.latency_max_ms.load(Ordering::Relaxed),
        )
    }
    pub fn reset(&self) {
        self.packets_received.store(0, Ordering::Relaxed);
        self.packets_sent.store(0, Ordering::Relaxed);
        self.latency_count.store(0, Ordering::Relaxed);
        self.latency_total_ms.store(0, Ordering::Relaxed);
        self.latency_min_ms.store(0, Ordering::Relaxed);
        self.latency_max_ms.store(0, Ordering::Relaxed);
    }
}

/// Per-connection figures for `cons`.
#[derive(Debug, Clone)]
pub struct ConnStats {
    pub received: u64,
    pub sent: u64,
    pub established_ms: i64,
    pub last_op: &'static str,
    pub last_cxid: i64,
    pub last_zxid: i64,
    pub last_response_ms: i64,
    pub last_latency_ms: i64,
    pub min_latency_ms: i64,
    pub max_latency_ms: i64,
    pub total_latency_ms: i64,
    pub count: i64,
}

impl ConnStats {
    pub fn new(now_wall_ms: i64) -> Self {
        ConnStats {
            received: 0,
            sent: 0,
            established_ms: now_wall_ms,
            last_op: "NA",
            last_cxid: -1,
            last_zxid: -1,
            last_response_ms: 0,
            last_latency_ms: 0,
            min_latency_ms: i64::MAX,
            max_latency_ms: 0,
            total_latency_ms: 0,
            count: 0,
        }
    }
    pub fn session_established(&mut self, _id: i64, _timeout: i32) {
        self.last_op = "SESS";
    }
    pub fn completed(&mut self, op: OpCode, xid: i32, zxid: i64, took: Duration) {
        let ms = took.as_millis() as i64;
        self.last_op = last_op_name(op);
        if xid >= 0 {
            self.last_cxid = xid as i64;
        }
        self.last_zxid = zxid;
        self.last_response_ms = crate::executor::wall_ms();
        self.last_latency_ms = ms;
        self.min_latency_ms = self.min_latency_ms.min(ms);
        self.max_latency_ms = self.max_latency_ms.max(ms);
        self.total_latency_ms += ms;
        self.count += 1;
    }
    pub fn reset(&mut self) {
        let est = self.established_ms;
        *self = ConnStats::new(est);
    }
}

/// ZooKeeper's four-letter names of the last operation (`Request.op2String` abbreviations in `cons`).
pub fn last_op_name(op: OpCode) -> &'static str {
    match op {
        OpCode::Ping => "PING",
        OpCode::CreateSession => "SESS",
        OpCode::Create | OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => "CREA",
        OpCode::Delete | OpCode::DeleteContainer => "DELE",
        OpCode::SetData => "SETD",
        OpCode::SetAcl => "SETA",
        OpCode::GetData => "GETD",
        OpCode::GetChildren | OpCode::GetChildren2 => "GETC",
        OpCode::GetAcl => "GETA",
        OpCode::Exists => "EXIS",
        OpCode::Sync => "SYNC",
        OpCode::Check => "CHEC",
        OpCode::Multi => "MULT",
        OpCode::MultiRead => "MLTR",
        OpCode::CloseSession => "CLOS",
        OpCode::SetWatches => "SETW",
        OpCode::SetWatches2 => "STW2",
        OpCode::AddWatch => "ADDW",
        OpCode::CheckWatches => "CHKW",
        OpCode::RemoveWatches => "REMW",
        OpCode::WhoAmI => "HOMI",
        OpCode::GetEphemerals => "GETE",
        OpCode::GetAllChildrenNumber => "GETACN",
        OpCode::Reconfig => "RECO",
        _ => "NA",
    }
}
