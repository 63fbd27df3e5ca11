//! The replicated session table's entries, session id allocation and session passwords.
//!
//! Passwords are HMAC-SHA256(cluster secret, id as 8 big-endian bytes) truncated to 16 bytes, compared
//! in constant time. Sessions imported from ZooKeeper may keep ZooKeeper's `java.util.Random` derivation
//! (flagged per session) so that their clients survive a migration. Pure functions, no I/O.

use hmac::{Hmac, Mac};
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Length of a session password on the wire (the C client requires exactly 16).
pub const PASSWORD_LEN: usize = 16;
/// The bits of a session id below the member byte.
pub(crate) const ID_LOW_BITS: u64 = 0x00FF_FFFF_FFFF_FFFF;

/// Who currently serves a session: a member and one of its connections. Connection ids are never 0, which
/// makes an `Option<Owner>` (in every session's entry) 16 bytes instead of 24; serialized as a u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub member: u64,
    pub conn: std::num::NonZeroU64,
}

/// One live session in the replicated session table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The timeout negotiated when the session was created (restarts and new leaders track it again
    /// with this value).
    pub timeout_ms: i32,
    /// Paths of the session's ordinary ephemerals.
    pub ephemerals: Ephemerals,
    /// The member and connection the session is attached to: set by its creation and by every successful
    /// revalidation (reconnect); a write from anywhere else fails with SessionMoved. `None` only for a
    /// session imported from ZooKeeper that has not been used since.
    pub owner: Option<Owner>,
    /// The password is ZooKeeper's `java.util.Random` derivation (a session imported from ZooKeeper).
    pub legacy_password: bool,
}

impl SessionInfo {
    pub fn new(timeout_ms: i32) -> Self {
        SessionInfo {
            timeout_ms,
            ephemerals: Ephemerals::default(),
            owner: None,
            legacy_password: false,
        }
    }
}

/// A session's ordinary ephemerals, in path order: boxed, and only while there are any. Every session's
/// entry in the replicated table holds this field, and most sessions own no ephemeral: 8 bytes instead of
/// the set's 24 (with `Owner`'s niche, an entry of the table is 40 bytes instead of 64). Serialized as the
/// set itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ephemerals(Option<Box<OrdSet<Arc<str>>>>);

impl Ephemerals {
    pub fn iter(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.0.iter().flat_map(|set| set.iter())
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn insert(&mut self, path: Arc<str>) {
        self.0.get_or_insert_with(Box::default).insert(path);
    }

    /// Removes `path`; the set goes when its last path does.
    pub fn remove(&mut self, path: &str) {
        if let Some(set) = &mut self.0 {
            set.remove(path);
            if set.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl Serialize for Ephemerals {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(set) => set.serialize(serializer),
            None => OrdSet::<Arc<str>>::new().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Ephemerals {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let set = OrdSet::<Arc<str>>::deserialize(deserializer)?;
        Ok(Ephemerals((!set.is_empty()).then(|| Box::new(set))))
    }
}

/// A session id as the session table's key, ordered by its bits reversed. Ids are handed out in
/// increasing order, and imbl's B-tree splits a full leaf in the middle: keyed by the id itself, every leaf
/// but the last stayed half full (8 of 16 entries in a 768 B allocation: 96 B per session measured). In
/// reversed-bit order consecutive ids land all over the tree and leaves fill as with random keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct SessionKey(i64);

impl Ord for SessionKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0 as u64)
            .reverse_bits()
            .cmp(&(other.0 as u64).reverse_bits())
    }
}

impl PartialOrd for SessionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The replicated session table: id → entry, structurally shared (a snapshot or a multi's rollback copy
/// is O(1)). Iteration order is the table's own (see `SessionKey`), the same on every member; callers
/// that show sessions sort them. Serialized as a map of id → entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionTable(OrdMap<SessionKey, SessionInfo>);

impl SessionTable {
    pub fn new() -> Self {
        SessionTable::default()
    }

    pub fn get(&self, id: &i64) -> Option<&SessionInfo> {
        self.0.get(&SessionKey(*id))
    }

    pub fn get_mut(&mut self, id: &i64) -> Option<&mut SessionInfo> {
        self.0.get_mut(&SessionKey(*id))
    }

    pub fn contains_key(&self, id: &i64) -> bool {
        self.0.contains_key(&SessionKey(*id))
    }

    pub fn insert(&mut self, id: i64, info: SessionInfo) -> Option<SessionInfo> {
        self.0.insert(SessionKey(id), info)
    }

    pub fn remove(&mut self, id: &i64) -> Option<SessionInfo> {
        self.0.remove(&SessionKey(*id))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every session, in the table's order (not by id).
    pub fn iter(&self) -> impl Iterator<Item = (&i64, &SessionInfo)> + '_ {
        self.0.iter().map(|(k, v)| (&k.0, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &SessionInfo> + '_ {
        self.0.values()
    }
}

/// A change of the session table that the member must act on (track, untrack, answer, close).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionChange {
    Created {
        id: i64,
        timeout_ms: i32,
        passwd: [u8; PASSWORD_LEN],
    },
    /// The session ended; `owner` served it last (the member closes that connection if it is one of
    /// its own).
    Closed { id: i64, owner: Option<Owner> },
    /// A reconnect succeeded: the command's origin now owns the session; `previous` owned it before.
    Revalidated {
        id: i64,
        timeout_ms: i32,
        passwd: [u8; PASSWORD_LEN],
        previous: Option<Owner>,
    },
    /// A reconnect was refused: the session is gone or the password is wrong (the owner is untouched).
    RevalidateFailed { id: i64 },
}

/// The first value of the next-session counter: ZooKeeper's `initializeNextSessionId` with the leader's
/// wall clock instead of a monotonic one (40 low bits of the time in bits 16..55, zeros below).
pub(crate) fn initial_session_counter(time_ms: i64) -> u64 {
    ((time_ms << 24) as u64) >> 8
}

/// The session id for counter value `counter` on a cluster bootstrapped by `member_id`.
pub(crate) fn session_id(member_id: u8, counter: u64) -> i64 {
    ((u64::from(member_id) << 56) | (counter & ID_LOW_BITS)) as i64
}

/// HMAC-SHA256(secret, id as 8 big-endian bytes), truncated to 16 bytes.
pub fn hmac_password(secret: &[u8], id: i64) -> [u8; PASSWORD_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(&id.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; PASSWORD_LEN];
    out.copy_from_slice(&full[..PASSWORD_LEN]);
    out
}

/// ZooKeeper's own password: `new java.util.Random(id ^ 0xB3415C00L).nextBytes(byte[16])`.
pub fn zookeeper_password(id: i64) -> [u8; PASSWORD_LEN] {
    const MULTIPLIER: u64 = 0x5_DEEC_E66D;
    const MASK: u64 = (1 << 48) - 1;
    let mut seed = ((id ^ 0xB341_5C00) as u64 ^ MULTIPLIER) & MASK;
    let mut out = [0u8; PASSWORD_LEN];
    for chunk in out.chunks_mut(4) {
        seed = (seed.wrapping_mul(MULTIPLIER).wrapping_add(0xB)) & MASK;
        let mut r = (seed >> 16) as u32;
        for b in chunk {
            *b = r as u8;
            r >>= 8;
        }
    }
    out
}

/// Constant-time equality of a password the client sent with the expected one.
pub(crate) fn password_matches(expected: &[u8; PASSWORD_LEN], got: &[u8]) -> bool {
    bool::from(expected.as_slice().ct_eq(got))
}

#[cfg(test)]
mod tests {
    use super::*;

    mod table {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn the_session_table_is_a_map(ops in proptest::collection::vec((0..64i64, 0..3u8), 1..300)) {
                let mut t = SessionTable::new();
                let mut m = BTreeMap::new();
                for (low, op) in ops {
                    let id = (1 << 56) | low;
                    match op {
                        0 => prop_assert_eq!(
                            t.insert(id, SessionInfo::new(low as i32)),
                            m.insert(id, SessionInfo::new(low as i32))
                        ),
                        1 => prop_assert_eq!(t.remove(&id), m.remove(&id)),
                        _ => {
                            if let Some(s) = t.get_mut(&id) {
                                s.legacy_password = true;
                            }
                            if let Some(s) = m.get_mut(&id) {
                                s.legacy_password = true;
                            }
                        }
                    }
                    prop_assert_eq!(t.get(&id), m.get(&id));
                    prop_assert_eq!(t.contains_key(&id), m.contains_key(&id));
                    prop_assert_eq!(t.len(), m.len());
                }
                let mut all: Vec<(i64, SessionInfo)> = t.iter().map(|(id, s)| (*id, s.clone())).collect();
                all.sort_unstable_by_key(|(id, _)| *id);
                prop_assert_eq!(all, m.into_iter().collect::<Vec<_>>());
            }
        }

        /// A snapshot written when the table was keyed by the id itself (sessions in id order) reads back.
        #[test]
        fn a_table_serialized_in_id_order_reads_back() {
            let mut old: OrdMap<i64, SessionInfo> = OrdMap::new();
            for low in 0..100 {
                old.insert((1 << 56) | low, SessionInfo::new(4000 + low as i32));
            }
            let bytes = postcard::to_allocvec(&old).expect("serializes");
            let table: SessionTable = postcard::from_bytes(&bytes).expect("deserializes");
            assert_eq!(table.len(), 100);
            for (id, s) in old.iter() {
                assert_eq!(table.get(id), Some(s));
            }
            // And the table's own serialization is the same map (in another order).
            let again: OrdMap<i64, SessionInfo> =
                postcard::from_bytes(&postcard::to_allocvec(&table).expect("serializes"))
                    .expect("deserializes");
            assert_eq!(again, old);
        }
    }

    #[test]
    fn zookeeper_password_matches_java_random() {
        let hex = |p: [u8; 16]| p.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(zookeeper_password(0x1000000000000)),
            "f22acd4a97e69d6d20a49bb638eadb38"
        );
        assert_eq!(
            hex(zookeeper_password(0x100a1b2c3d40000)),
            "ce09faed4372c2725ca437a7c4ebcd12"
        );
        assert_eq!(
            hex(zookeeper_password(1)),
            "054cc74a37327db215e702e20c73f005"
        );
    }

    #[test]
    fn session_ids_follow_initialize_next_session_id() {
        // myid 1, clock 123456789 ms → 0x100075bcd150000 (the reference's example).
        let c = initial_session_counter(123_456_789);
        assert_eq!(session_id(1, c), 0x0100_075b_cd15_0000);
        assert_eq!(session_id(1, c + 1), 0x0100_075b_cd15_0001);
        // The counter never spills into the member byte.
        assert_eq!(session_id(2, ID_LOW_BITS + 1), 0x0200_0000_0000_0000);
        // Negative times still leave the member byte alone.
        assert_eq!(session_id(1, initial_session_counter(-1)) >> 56, 1);
    }

    #[test]
    fn hmac_passwords_depend_on_secret_and_id() {
        let a = hmac_password(b"secret", 1);
        assert_eq!(a, hmac_password(b"secret", 1));
        assert_ne!(a, hmac_password(b"secret", 2));
        assert_ne!(a, hmac_password(b"other", 1));
        assert!(password_matches(&a, &a));
        assert!(!password_matches(&a, &a[..15]));
        assert!(!password_matches(&a, &[0u8; 16]));
    }
}
