//! The client's error type: one variant per ZooKeeper error code a caller acts on, the rest by code.

use oxkeeper_proto::ErrorCode;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The connection dropped before the reply arrived; the operation may or may not have happened. Retry
    /// once the state stream says Connected again.
    #[error("connection lost")]
    ConnectionLoss,
    /// The session is gone (server said so, or no contact for 4/3 of the session timeout): start over.
    #[error("session expired")]
    SessionExpired,
    #[error("session moved to another server")]
    SessionMoved,
    #[error("authentication failed")]
    AuthFailed,
    #[error("the client was closed")]
    Closed,
    #[error("node does not exist")]
    NoNode,
    #[error("node already exists")]
    NodeExists,
    #[error("version mismatch")]
    BadVersion,
    #[error("node has children")]
    NotEmpty,
    #[error("not authorized")]
    NoAuth,
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals,
    #[error("invalid ACL")]
    InvalidAcl,
    #[error("bad arguments: {0}")]
    BadArguments(String),
    #[error("not a read-only operation")]
    NotReadOnly,
    #[error("no such watcher")]
    NoWatcher,
    #[error("quota exceeded")]
    QuotaExceeded,
    #[error("request throttled")]
    Throttled,
    #[error("unimplemented")]
    Unimplemented,
    /// Any other ZooKeeper error code.
    #[error("ZooKeeper error {0:?}")]
    Api(ErrorCode),
    /// A code this client does not know.
    #[error("unknown ZooKeeper error code {0}")]
    Unknown(i32),
    /// The server sent something this client could not decode.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A multi failed: `index` is the first operation that failed, `error` why.
    #[error("multi operation {index} failed: {error}")]
    Multi { index: usize, error: Box<Error> },
}

impl Error {
    /// The error for a non-zero reply code.
    pub fn from_code(code: i32) -> Error {
        let Some(c) = ErrorCode::from_i32(code) else {
            return Error::Unknown(code);
        };
        match c {
            ErrorCode::ConnectionLoss => Error::ConnectionLoss,
            ErrorCode::SessionExpired => Error::SessionExpired,
            ErrorCode::SessionMoved => Error::SessionMoved,
            ErrorCode::AuthFailed => Error::AuthFailed,
            ErrorCode::NoNode => Error::NoNode,
            ErrorCode::NodeExists => Error::NodeExists,
            ErrorCode::BadVersion => Error::BadVersion,
            ErrorCode::NotEmpty => Error::NotEmpty,
            ErrorCode::NoAuth => Error::NoAuth,
            ErrorCode::NoChildrenForEphemerals => Error::NoChildrenForEphemerals,
            ErrorCode::InvalidAcl => Error::InvalidAcl,
            ErrorCode::BadArguments => Error::BadArguments("rejected by the server".into()),
            ErrorCode::NotReadOnly => Error::NotReadOnly,
            ErrorCode::NoWatcher => Error::NoWatcher,
            ErrorCode::QuotaExceeded => Error::QuotaExceeded,
            ErrorCode::ThrottledOp => Error::Throttled,
            ErrorCode::Unimplemented => Error::Unimplemented,
            other => Error::Api(other),
        }
    }

    /// Whether the same call may succeed if retried after reconnecting.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::ConnectionLoss | Error::Throttled)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
