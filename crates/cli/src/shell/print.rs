//! How zkCli 3.8 prints things: a Stat (`StatPrinter`, dates as Java's `Date.toString()`), an ACL entry (the jute
//! record's `toString()`), a watch event (`WatchedEvent.toString()`), Java lists, and the error messages of
//! `KeeperException` and zkCli's `CliWrapperException`. Pure formatting: every function returns a string.

use oxkeeper_client::{Acl, Error, EventType, Id, KeeperState, Stat, State};
use oxkeeper_proto::ErrorCode;

use super::zone::Zone;

/// The eleven `name = value` lines of zkCli's StatPrinter, each ending in a newline.
pub fn stat(s: &Stat, zone: &Zone) -> String {
    format!(
        "cZxid = 0x{:x}\nctime = {}\nmZxid = 0x{:x}\nmtime = {}\npZxid = 0x{:x}\ncversion = {}\n\
         dataVersion = {}\naclVersion = {}\nephemeralOwner = 0x{:x}\ndataLength = {}\nnumChildren = {}\n",
        s.czxid,
        java_date(s.ctime, zone),
        s.mzxid,
        java_date(s.mtime, zone),
        s.pzxid,
        s.cversion,
        s.version,
        s.aversion,
        s.ephemeral_owner,
        s.data_length,
        s.num_children,
    )
}

/// Milliseconds since the epoch as Java's `Date.toString()` in the local zone: `Sat Nov 21 16:33:43 UTC 2026`.
pub fn java_date(ms: i64, zone: &Zone) -> String {
    let (offset, abbrev) = zone.at(ms.div_euclid(1000));
    oxkeeper_proto::javadate::java_date(ms, i64::from(offset), abbrev)
}

/// A jute string as the record's `toString()` writes it: a leading quote, some characters escaped.
fn jute_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\0' => out.push_str("%00"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            ',' => out.push_str("%2C"),
            '}' => out.push_str("%7D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out
}

/// An `Id` as its jute `toString()`: `'world,'anyone` and a newline.
pub fn id(id: &Id) -> String {
    format!("{},{}\n", jute_string(&id.scheme), jute_string(&id.id))
}

/// `ZKUtil.getPermString`: the letters of `perms` in the order c d r w a.
pub fn perms(perms: i32) -> String {
    use oxkeeper_client::perms::{ADMIN, CREATE, DELETE, READ, WRITE};
    [
        (CREATE, 'c'),
        (DELETE, 'd'),
        (READ, 'r'),
        (WRITE, 'w'),
        (ADMIN, 'a'),
    ]
    .iter()
    .filter(|(bit, _)| perms & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

/// The lines getAcl prints for one entry: `'world,'anyone` then `: cdrwa`.
pub fn acl_entry(a: &Acl) -> String {
    format!("{}: {}\n", id(&a.id), perms(a.perms))
}

/// A Java `List.toString()`: `[a, b]`.
pub fn java_list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// `Watcher.Event.KeeperState` names.
pub fn keeper_state(s: KeeperState) -> &'static str {
    match s {
        KeeperState::Unknown => "Unknown",
        KeeperState::Disconnected => "Disconnected",
        KeeperState::NoSyncConnected => "NoSyncConnected",
        KeeperState::SyncConnected => "SyncConnected",
        KeeperState::AuthFailed => "AuthFailed",
        KeeperState::ConnectedReadOnly => "ConnectedReadOnly",
        KeeperState::SaslAuthenticated => "SaslAuthenticated",
        KeeperState::Expired => "Expired",
        KeeperState::Closed => "Closed",
    }
}

/// `Watcher.Event.EventType` names.
pub fn event_type(t: EventType) -> &'static str {
    match t {
        EventType::None => "None",
        EventType::NodeCreated => "NodeCreated",
        EventType::NodeDeleted => "NodeDeleted",
        EventType::NodeDataChanged => "NodeDataChanged",
        EventType::NodeChildrenChanged => "NodeChildrenChanged",
        EventType::DataWatchRemoved => "DataWatchRemoved",
        EventType::ChildWatchRemoved => "ChildWatchRemoved",
        EventType::PersistentWatchRemoved => "PersistentWatchRemoved",
    }
}

/// The state event zkCli's watcher is given for a session state transition; `None` for transitions Java's
/// client does not report (it has no event for "connecting").
pub fn state_event(s: State) -> Option<KeeperState> {
    match s {
        State::Connecting => None,
        State::Connected => Some(KeeperState::SyncConnected),
        State::ConnectedReadOnly => Some(KeeperState::ConnectedReadOnly),
        State::Disconnected => Some(KeeperState::Disconnected),
        State::Expired => Some(KeeperState::Expired),
        State::AuthFailed => Some(KeeperState::AuthFailed),
        State::Closed => Some(KeeperState::Closed),
    }
}

/// The Java client's `ZooKeeper.States` name, which zkCli's prompt shows.
pub fn prompt_state(s: State) -> &'static str {
    match s {
        State::Connecting | State::Disconnected => "CONNECTING",
        State::Connected => "CONNECTED",
        State::ConnectedReadOnly => "CONNECTEDREADONLY",
        State::Expired | State::Closed => "CLOSED",
        State::AuthFailed => "AUTH_FAILED",
    }
}

/// What zkCli's watcher prints for an event: a blank line, `WATCHER::`, a blank line, the event. A state
/// event has no path (Java prints `null`).
pub fn watcher_block(state: KeeperState, event: EventType, path: Option<&str>) -> String {
    format!(
        "\nWATCHER::\n\nWatchedEvent state:{} type:{} path:{}\n",
        keeper_state(state),
        event_type(event),
        path.unwrap_or("null")
    )
}

/// The `KeeperException.Code` of an error.
pub fn error_code(e: &Error) -> ErrorCode {
    match e {
        Error::ConnectionLoss | Error::Closed => ErrorCode::ConnectionLoss,
        Error::SessionExpired => ErrorCode::SessionExpired,
        Error::SessionMoved => ErrorCode::SessionMoved,
        Error::AuthFailed => ErrorCode::AuthFailed,
        Error::NoNode => ErrorCode::NoNode,
        Error::NodeExists => ErrorCode::NodeExists,
        Error::BadVersion => ErrorCode::BadVersion,
        Error::NotEmpty => ErrorCode::NotEmpty,
        Error::NoAuth => ErrorCode::NoAuth,
        Error::NoChildrenForEphemerals => ErrorCode::NoChildrenForEphemerals,
        Error::InvalidAcl => ErrorCode::InvalidAcl,
        Error::BadArguments(_) => ErrorCode::BadArguments,
        Error::NotReadOnly => ErrorCode::NotReadOnly,
        Error::NoWatcher => ErrorCode::NoWatcher,
        Error::QuotaExceeded => ErrorCode::QuotaExceeded,
        Error::Throttled => ErrorCode::ThrottledOp,
        Error::Unimplemented => ErrorCode::Unimplemented,
        Error::Api(c) => *c,
        Error::Unknown(_) => ErrorCode::SystemError,
        Error::Protocol(_) => ErrorCode::MarshallingError,
        Error::Multi { error, .. } => error_code(error),
    }
}

/// `KeeperException.getCodeMessage`.
fn code_message(c: ErrorCode) -> String {
    let m = match c {
        ErrorCode::Ok => "ok",
        ErrorCode::SystemError => "SystemError",
        ErrorCode::RuntimeInconsistency => "RuntimeInconsistency",
        ErrorCode::DataInconsistency => "DataInconsistency",
        ErrorCode::ConnectionLoss => "ConnectionLoss",
        ErrorCode::MarshallingError => "MarshallingError",
        ErrorCode::NewConfigNoQuorum => "NewConfigNoQuorum",
        ErrorCode::ReconfigInProgress => "ReconfigInProgress",
        ErrorCode::Unimplemented => "Unimplemented",
        ErrorCode::OperationTimeout => "OperationTimeout",
        ErrorCode::BadArguments => "BadArguments",
        ErrorCode::ApiError => "APIError",
        ErrorCode::NoNode => "NoNode",
        ErrorCode::NoAuth => "NoAuth",
        ErrorCode::BadVersion => "BadVersion",
        ErrorCode::NoChildrenForEphemerals => "NoChildrenForEphemerals",
        ErrorCode::NodeExists => "NodeExists",
        ErrorCode::InvalidAcl => "InvalidACL",
        ErrorCode::AuthFailed => "AuthFailed",
        ErrorCode::NotEmpty => "Directory not empty",
        ErrorCode::SessionExpired => "Session expired",
        ErrorCode::InvalidCallback => "Invalid callback",
        ErrorCode::SessionMoved => "Session moved",
        ErrorCode::NotReadOnly => "Not a read-only call",
        ErrorCode::EphemeralOnLocalSession => "Ephemeral node on local session",
        ErrorCode::NoWatcher => "No such watcher",
        ErrorCode::ReconfigDisabled => "Reconfig is disabled",
        ErrorCode::SessionClosedRequireSaslAuth => {
            "Session closed because client failed to authenticate"
        }
        ErrorCode::QuotaExceeded => "Quota has exceeded",
        ErrorCode::ThrottledOp => "Op throttled due to high load",
        other => return format!("Unknown error {}", java_code_name(other)),
    };
    m.to_string()
}

/// The Java enum constant of the codes `getCodeMessage` has no text for.
fn java_code_name(c: ErrorCode) -> &'static str {
    match c {
        ErrorCode::UnknownSession => "UNKNOWNSESSION",
        ErrorCode::RequestTimeout => "REQUESTTIMEOUT",
        _ => "UNKNOWN",
    }
}

/// `KeeperException.getMessage()`: `KeeperErrorCode = NoAuth for /x`.
pub fn keeper_message(e: &Error, path: Option<&str>) -> String {
    if let Error::Protocol(why) = e {
        return format!("protocol error: {why}");
    }
    let code = code_message(error_code(e));
    match path {
        Some(p) if !p.is_empty() => format!("KeeperErrorCode = {code} for {p}"),
        _ => format!("KeeperErrorCode = {code}"),
    }
}

/// The message zkCli prints for a failed call (`CliWrapperException`): its own words for the common errors, the
/// exception's message for the rest. Java prints a missing path as `null`.
pub fn cli_message(e: &Error, path: Option<&str>) -> String {
    let p = path.unwrap_or("null");
    match e {
        Error::NoNode => format!("Node does not exist: {p}"),
        Error::NoChildrenForEphemerals => format!("Ephemerals cannot have children: {p}"),
        Error::NodeExists => format!("Node already exists: {p}"),
        Error::NotEmpty => format!("Node not empty: {p}"),
        Error::NotReadOnly => format!("Not a read-only call: {p}"),
        Error::InvalidAcl => format!("Acl is not valid : {p}"),
        Error::NoAuth => format!("Insufficient permission : {p}"),
        Error::BadArguments(_) => format!("Arguments are not valid : {p}"),
        Error::BadVersion => format!("version No is not valid : {p}"),
        Error::QuotaExceeded => format!("Quota has exceeded : {p}"),
        Error::Api(ErrorCode::ReconfigInProgress) => {
            "Another reconfiguration is in progress -- concurrent reconfigs not supported (yet)"
                .into()
        }
        Error::Multi { error, .. } => cli_message(error, path),
        other => keeper_message(other, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_java() {
        let utc = Zone::utc();
        assert_eq!(java_date(0, &utc), "Thu Jan 01 00:00:00 UTC 1970");
        // 2026-11-21 16:33:43.999 UTC
        assert_eq!(
            java_date(1_795_278_823_999, &utc),
            "Sat Nov 21 16:33:43 UTC 2026"
        );
        assert_eq!(java_date(-1, &utc), "Wed Dec 31 23:59:59 UTC 1969");
        assert_eq!(
            java_date(951_782_400_000, &utc),
            "Tue Feb 29 00:00:00 UTC 2000"
        );
    }

    #[test]
    fn stat_lines() {
        let s = Stat {
            czxid: 0x4,
            mzxid: 0x1a,
            ctime: 0,
            mtime: 0,
            version: 2,
            cversion: 1,
            aversion: 0,
            ephemeral_owner: 0x1000_0abc,
            data_length: 5,
            num_children: 1,
            pzxid: 0x5,
        };
        assert_eq!(
            stat(&s, &Zone::utc()),
            "cZxid = 0x4\nctime = Thu Jan 01 00:00:00 UTC 1970\nmZxid = 0x1a\n\
             mtime = Thu Jan 01 00:00:00 UTC 1970\npZxid = 0x5\ncversion = 1\ndataVersion = 2\n\
             aclVersion = 0\nephemeralOwner = 0x10000abc\ndataLength = 5\nnumChildren = 1\n"
        );
        let negative = Stat {
            ephemeral_owner: i64::MIN,
            ..s
        };
        assert!(stat(&negative, &Zone::utc()).contains("ephemeralOwner = 0x8000000000000000\n"));
    }

    #[test]
    fn acl_lines() {
        let a = Acl {
            perms: oxkeeper_client::perms::ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        };
        assert_eq!(acl_entry(&a), "'world,'anyone\n: cdrwa\n");
        let d = Acl {
            perms: oxkeeper_client::perms::READ | oxkeeper_client::perms::ADMIN,
            id: Id {
                scheme: "digest".into(),
                id: "u:a,b%".into(),
            },
        };
        assert_eq!(acl_entry(&d), "'digest,'u:a%2Cb%25\n: ra\n");
        assert_eq!(perms(0), "");
    }

    #[test]
    fn events_and_lists() {
        assert_eq!(
            watcher_block(KeeperState::SyncConnected, EventType::None, None),
            "\nWATCHER::\n\nWatchedEvent state:SyncConnected type:None path:null\n"
        );
        assert_eq!(
            watcher_block(
                KeeperState::SyncConnected,
                EventType::NodeDataChanged,
                Some("/x")
            ),
            "\nWATCHER::\n\nWatchedEvent state:SyncConnected type:NodeDataChanged path:/x\n"
        );
        assert_eq!(java_list(&[]), "[]");
        assert_eq!(java_list(&["a".into(), "b".into()]), "[a, b]");
    }

    #[test]
    fn error_messages_read_as_zkcli() {
        assert_eq!(
            cli_message(&Error::NoNode, Some("/x")),
            "Node does not exist: /x"
        );
        assert_eq!(
            cli_message(&Error::NoAuth, Some("/x")),
            "Insufficient permission : /x"
        );
        assert_eq!(
            cli_message(&Error::InvalidAcl, None),
            "Acl is not valid : null"
        );
        assert_eq!(
            cli_message(&Error::NoWatcher, Some("/w")),
            "KeeperErrorCode = No such watcher for /w"
        );
        assert_eq!(
            cli_message(&Error::ConnectionLoss, Some("/")),
            "KeeperErrorCode = ConnectionLoss for /"
        );
        assert_eq!(
            keeper_message(&Error::InvalidAcl, None),
            "KeeperErrorCode = InvalidACL"
        );
        assert_eq!(
            keeper_message(&Error::NotEmpty, Some("/p")),
            "KeeperErrorCode = Directory not empty for /p"
        );
    }
}
