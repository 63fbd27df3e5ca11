//! The replicated state machine of oxkeeper and the member-local tables beside it.
//!
//! `DataTree`, the session table, the zxid counter and ACL checks are replicated: [`StateMachine::apply`]
//! is a pure function of (state, command). The watch table and the session tracker are member-local.
//! Time and inputs come in as arguments: no I/O, no clock, no randomness, no tokio here.

pub mod acl;
pub mod import;
pub mod pacer;
pub mod path;
pub mod quota;
pub mod session;
pub mod state;
pub mod tracker;
pub mod tree;
pub mod watches;

pub use session::{Owner, SessionChange, SessionInfo};
pub use state::{Applied, ApplySettings, Command, CommandOp, StateMachine, Trigger};
pub use tracker::SessionTracker;
pub use tree::{DataTree, NodeKind, NodeRef, NodeStat};
pub use watches::{WatchKind, WatchTable};

/// A connection on this member (member-local; watches belong to connections, not sessions).
pub type ConnId = u64;
/// A session id (`sessionId` on the wire).
pub type SessionId = i64;
/// A transaction id.
pub type Zxid = i64;
