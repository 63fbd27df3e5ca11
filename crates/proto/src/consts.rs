//! Numeric constants of the protocol: opcodes, error codes, event types, states, create modes, perms, xids.

use serde::{Deserialize, Serialize};

/// Special xids (`RequestHeader.xid` / `ReplyHeader.xid`).
pub mod xid {
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
    pub const AUTH: i32 = -4;
    pub const SET_WATCHES: i32 = -8;
}

macro_rules! int_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident = $val:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[repr(i32)]
        pub enum $name { $($var = $val),* }
        impl $name {
            pub fn from_i32(v: i32) -> Option<Self> {
                match v { $($val => Some($name::$var),)* _ => None }
            }
            pub fn as_i32(self) -> i32 { self as i32 }
        }
        impl From<$name> for i32 { fn from(v: $name) -> i32 { v as i32 } }
    };
}

int_enum!(
    /// `ZooDefs.OpCode`.
    OpCode {
        Notification = 0, Create = 1, Delete = 2, Exists = 3, GetData = 4, SetData = 5, GetAcl = 6, SetAcl = 7,
        GetChildren = 8, Sync = 9, Ping = 11, GetChildren2 = 12, Check = 13, Multi = 14, Create2 = 15,
        Reconfig = 16, CheckWatches = 17, RemoveWatches = 18, CreateContainer = 19, DeleteContainer = 20,
        CreateTtl = 21, MultiRead = 22, Auth = 100, SetWatches = 101, Sasl = 102, GetEphemerals = 103,
        GetAllChildrenNumber = 104, SetWatches2 = 105, AddWatch = 106, WhoAmI = 107,
        CreateSession = -10, CloseSession = -11, Error = -1,
    }
);

int_enum!(
    /// `KeeperException.Code`.
    ErrorCode {
        Ok = 0, SystemError = -1, RuntimeInconsistency = -2, DataInconsistency = -3, ConnectionLoss = -4,
        MarshallingError = -5, Unimplemented = -6, OperationTimeout = -7, BadArguments = -8,
        UnknownSession = -12, NewConfigNoQuorum = -13, ReconfigInProgress = -14, ApiError = -100, NoNode = -101,
        NoAuth = -102, BadVersion = -103, NoChildrenForEphemerals = -108, NodeExists = -110, NotEmpty = -111,
        SessionExpired = -112, InvalidCallback = -113, InvalidAcl = -114, AuthFailed = -115, SessionMoved = -118,
        NotReadOnly = -119, EphemeralOnLocalSession = -120, NoWatcher = -121, RequestTimeout = -122,
        ReconfigDisabled = -123, SessionClosedRequireSaslAuth = -124, QuotaExceeded = -125, ThrottledOp = -127,
    }
);

int_enum!(
    /// `Watcher.Event.EventType`.
    EventType {
        None = -1, NodeCreated = 1, NodeDeleted = 2, NodeDataChanged = 3, NodeChildrenChanged = 4,
        DataWatchRemoved = 5, ChildWatchRemoved = 6, PersistentWatchRemoved = 7,
    }
);

int_enum!(
    /// `Watcher.Event.KeeperState`.
    KeeperState {
        Unknown = -1, Disconnected = 0, NoSyncConnected = 1, SyncConnected = 3, AuthFailed = 4,
        ConnectedReadOnly = 5, SaslAuthenticated = 6, Expired = -112, Closed = 7,
    }
);

int_enum!(
    /// `Watcher.WatcherType` (checkWatches / removeWatches).
    WatcherType { Children = 1, Data = 2, Any = 3, Persistent = 4, PersistentRecursive = 5 }
);

int_enum!(
    /// `AddWatchMode`.
    AddWatchMode { Persistent = 0, PersistentRecursive = 1 }
);

int_enum!(
    /// `CreateMode` flags.
    CreateMode {
        Persistent = 0, Ephemeral = 1, PersistentSequential = 2, EphemeralSequential = 3, Container = 4,
        PersistentWithTtl = 5, PersistentSequentialWithTtl = 6,
    }
);

impl CreateMode {
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }
    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }
    pub fn is_container(self) -> bool {
        self == CreateMode::Container
    }
}

/// `ZooDefs.Perms`.
pub mod perms {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;
}

/// `ephemeralOwner` markers of containers and TTL nodes (`EphemeralType`).
pub const CONTAINER_EPHEMERAL_OWNER: i64 = i64::MIN;
pub const TTL_EPHEMERAL_OWNER_MASK: i64 = 0xFF00_0000_0000_0000u64 as i64;
/// Largest TTL that fits beside the 0xFF marker byte.
pub const TTL_MAX_MS: i64 = 0x00FF_FFFF_FFFF;
