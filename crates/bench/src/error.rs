//! The one error type of the load generator: what stopped a workload (not what it counts: error replies and
//! lost connections during a measured window are counted in the report, never raised).

use oxkeeper_proto::frame::FrameError;
use oxkeeper_proto::{DecodeError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    ConnectionLost,
    #[error("the server refused the session (timeout 0 in its handshake reply)")]
    SessionRefused,
    #[error("malformed reply: {0}")]
    Decode(#[from] DecodeError),
    #[error("bad reply frame: {0}")]
    Frame(#[from] FrameError),
    #[error("reply out of order: expected xid {expected}, got {got}")]
    OutOfOrder { expected: i32, got: i32 },
    #[error("{what}: {}", error_name(*code))]
    Server { what: String, code: i32 },
    #[error("timed out after {seconds:.1} s waiting for {what}")]
    Timeout { what: String, seconds: f64 },
    #[error("{0}")]
    Usage(String),
}

impl BenchError {
    /// The key this error is counted under in a report's error table.
    pub fn count_key(&self) -> String {
        match self {
            BenchError::Connect { .. } => "connect failed".into(),
            BenchError::Io(_) | BenchError::ConnectionLost => "connection lost".into(),
            BenchError::SessionRefused => "session refused".into(),
            BenchError::Decode(_) | BenchError::Frame(_) | BenchError::OutOfOrder { .. } => {
                "protocol error".into()
            }
            BenchError::Server { code, .. } => error_name(*code),
            BenchError::Timeout { .. } => "timeout".into(),
            BenchError::Usage(_) => "usage".into(),
        }
    }
}

/// ZooKeeper's name for an error code (`NoNode`), or the number when it is unknown.
pub fn error_name(code: i32) -> String {
    match ErrorCode::from_i32(code) {
        Some(c) => format!("{c:?}"),
        None => format!("error {code}"),
    }
}
