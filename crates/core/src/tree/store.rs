//! The compact store under the DataTree. Each node is one variable-length record in the byte arena of
//! a chunk of 256 nodes, named by a u32 id (chunk, slot); a path index maps a path's hash to its id;
//! the ACL lists are each kept once with the number of nodes using them. Chunks and index shards are
//! copy-on-write (`Arc::make_mut`) in persistent vectors: a clone of the store is a point-in-time
//! snapshot in O(1), and a chunk is copied only when first written after it. The index is member-local
//! in nature (a snapshot is serialized by walking the records, never the index). No I/O.
//!
//! A record: parent, next and previous sibling (12 fixed bytes, patched in place), the name, then
//! varints: first child, child count, flags, ACL id, czxid and ctime (as differences from the chunk's
//! first record), the stat fields that differ from a fresh node's (mzxid = pzxid = czxid, mtime =
//! ctime, versions and owner 0), and the data (inline up to [`INLINE_DATA_MAX`] bytes, else shared
//! beside the chunk). A small node's record is ~71 bytes where a general structure costs several
//! hundred.

use super::NodeStat;
use hashbrown::HashTable;
use oxkeeper_proto::Acl;
use std::hash::BuildHasher;
use std::sync::Arc;

/// A node's id in the store.
pub(super) type Id = u32;
/// No node (an empty link).
pub(super) const NONE: Id = u32::MAX;
/// The root's id: it is the first node stored and never removed.
pub(super) const ROOT: Id = 0;

const CHUNK_BITS: u32 = 8;
const CHUNK_NODES: usize = 1 << CHUNK_BITS;
/// Records a chunk holds before its arena is sized for the rest by their average (`Chunk::append`).
const FILL_ESTIMATE_AFTER: usize = 4;
/// The most that estimate reserves at once: a chunk of small nodes is ~20-40 KiB full; a few records with
/// names of hundreds of KiB must not have it reserve hundreds of MiB for the rest.
const FILL_ESTIMATE_MAX: usize = 256 << 10;
/// Ids run below this; a free slot holds the next free id under `FREE_BIT`, and this ends the list.
const ID_LIMIT: u32 = 0x7FFF_FFFF;
const FREE_BIT: u32 = 0x8000_0000;
/// Data up to this size lives in its record; longer data in its own shared allocation, so that copying
/// a chunk (the first write after a snapshot) or compacting it never copies big data.
pub(super) const INLINE_DATA_MAX: usize = 128;
/// The largest record (in practice, the longest name) the store takes. With it a chunk's arena stays
/// below 2 GiB, so offsets fit in 31 bits.
pub(super) const RECORD_BYTES_MAX: usize = 4 << 20;
/// A chunk's arena is compacted when more than a quarter of it (half, after a node's removal) and at
/// least this much is garbage.
const COMPACT_GARBAGE_MIN: usize = 1024;

/// The most bytes a record's varints take (name and data lengths, links, flags, ACL, times and the
/// stat fields: 15 varints of at most 10 bytes), so that a record is encoded into one allocation.
const RECORD_VARINTS_MAX: usize = 150;
/// How much an updated record can grow beyond its old length (every optional stat field newly set).
const RECORD_GROWTH_MAX: usize = 80;

/// The links patched in place (parent, next and previous sibling); the first child and the child count
/// are varints further on (a leaf's are one byte each, and they change only with the node's stat).
const FIXED_LEN: usize = 12;

/// Values a chunk's records store their czxid and ctime against (those of its first record): nodes
/// created together are stored together, so the differences take two or three bytes, not five and six.
type Base = (i64, i64);

/// A node's place in the tree: parent, children (first child, then a sibling list) and child count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Links {
    pub parent: Id,
    pub first_child: Id,
    pub next: Id,
    pub prev: Id,
    pub children: u32,
}

impl Links {
    pub(super) fn leaf(parent: Id, next: Id) -> Self {
        Links {
            parent,
            first_child: NONE,
            next,
            prev: NONE,
            children: 0,
        }
    }

    /// The links of a record and its name's bytes (UTF-8, as written: callers that hand the name out as a
    /// `&str` check it), and where the varint part goes on.
    fn read(b: &[u8]) -> Option<(Links, &[u8], usize)> {
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                b.get(i * 4..i * 4 + 4)?.try_into().ok()?,
            ))
        };
        let mut r = Reader { b, at: FIXED_LEN };
        let name = r.name_bytes()?;
        let first_child = u32::try_from(r.varint()?).ok()?.wrapping_sub(1);
        let children = u32::try_from(r.varint()?).ok()?;
        let links = Links {
            parent: word(0)?,
            next: word(1)?,
            prev: word(2)?,
            first_child,
            children,
        };
        Some((links, name, r.at))
    }

    fn write_fixed(&self, b: &mut [u8]) {
        for (dst, w) in b
            .chunks_exact_mut(4)
            .zip([self.parent, self.next, self.prev])
        {
            dst.copy_from_slice(&w.to_le_bytes());
        }
    }
}

// Flags: which stat fields differ from a fresh node's, and where the data is.
const F_MZXID: u64 = 1 << 0;
const F_MTIME: u64 = 1 << 1;
const F_VERSION: u64 = 1 << 2;
const F_CVERSION: u64 = 1 << 3;
const F_PZXID: u64 = 1 << 4;
const F_OWNER: u64 = 1 << 5;
const F_NULL_DATA: u64 = 1 << 6;
const F_AVERSION: u64 = 1 << 7;
const F_SHARED_DATA: u64 = 1 << 8;

/// A node's data as stored.
#[derive(Clone, Copy, Debug)]
pub(super) enum DataAt<'a> {
    Null,
    Inline(&'a [u8]),
    /// In the chunk's shared data, by slot.
    Shared,
}

/// A decoded record.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rec<'a> {
    pub links: Links,
    pub name: &'a str,
    pub acl: u32,
    pub stat: NodeStat,
    pub data: Option<&'a [u8]>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Encodes a record (links, name, then the varint part) into `out`.
fn encode(
    out: &mut Vec<u8>,
    links: &Links,
    name: &str,
    acl: u32,
    s: &NodeStat,
    data: DataAt<'_>,
    base: Base,
) {
    let start = out.len();
    out.resize(start + FIXED_LEN, 0);
    links.write_fixed(&mut out[start..]);
    put_varint(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    put_varint(out, u64::from(links.first_child.wrapping_add(1)));
    put_varint(out, u64::from(links.children));
    let optional = [
        (F_MZXID, s.mzxid != s.czxid, s.mzxid),
        (F_MTIME, s.mtime != s.ctime, s.mtime),
        (F_VERSION, s.version != 0, i64::from(s.version)),
        (F_CVERSION, s.cversion != 0, i64::from(s.cversion)),
        (F_PZXID, s.pzxid != s.czxid, s.pzxid),
        (F_OWNER, s.ephemeral_owner != 0, s.ephemeral_owner),
        (F_AVERSION, s.aversion != 0, i64::from(s.aversion)),
    ];
    let mut flags = optional
        .iter()
        .filter(|(_, present, _)| *present)
        .fold(0, |f, (bit, _, _)| f | bit);
    flags |= match data {
        DataAt::Null => F_NULL_DATA,
        DataAt::Inline(_) => 0,
        DataAt::Shared => F_SHARED_DATA,
    };
    put_varint(out, flags);
    put_varint(out, u64::from(acl));
    put_varint(out, zigzag(s.czxid.wrapping_sub(base.0)));
    put_varint(out, zigzag(s.ctime.wrapping_sub(base.1)));
    for (_, present, v) in optional {
        if present {
            put_varint(out, zigzag(v));
        }
    }
    if let DataAt::Inline(d) = data {
        put_varint(out, d.len() as u64);
        out.extend_from_slice(d);
    }
}

/// Reads a record's fields in order; any overrun makes the whole decode fail (a bug: the store only
/// reads what it wrote).
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn name_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.bytes(n)
    }
}

/// A decoded record and its length in bytes. Shared data comes back as `DataAt::Shared`.
fn decode(b: &[u8], base: Base) -> Option<(Links, &str, u32, NodeStat, DataAt<'_>, usize)> {
    let (links, name, at) = Links::read(b)?;
    let name = std::str::from_utf8(name).ok()?;
    let mut r = Reader { b, at };
    let flags = r.varint()?;
    let acl = u32::try_from(r.varint()?).ok()?;
    let czxid = unzigzag(r.varint()?).wrapping_add(base.0);
    let ctime = unzigzag(r.varint()?).wrapping_add(base.1);
    let mut field = |bit: u64, default: i64| -> Option<i64> {
        Some(if flags & bit != 0 {
            unzigzag(r.varint()?)
        } else {
            default
        })
    };
    let int = |v: i64| i32::try_from(v).ok();
    let stat = NodeStat {
        czxid,
        ctime,
        mzxid: field(F_MZXID, czxid)?,
        mtime: field(F_MTIME, ctime)?,
        version: int(field(F_VERSION, 0)?)?,
        cversion: int(field(F_CVERSION, 0)?)?,
        pzxid: field(F_PZXID, czxid)?,
        ephemeral_owner: field(F_OWNER, 0)?,
        aversion: int(field(F_AVERSION, 0)?)?,
    };
    let data = if flags & F_NULL_DATA != 0 {
        DataAt::Null
    } else if flags & F_SHARED_DATA != 0 {
        DataAt::Shared
    } else {
        let n = usize::try_from(r.varint()?).ok()?;
        DataAt::Inline(r.bytes(n)?)
    };
    Some((links, name, acl, stat, data, r.at))
}

/// The length of the record at the start of `b`, read without decoding it (no UTF-8 check of the name, no
/// stat): what a compaction and a rewrite need of every record they move or replace.
fn record_len(b: &[u8]) -> Option<usize> {
    let mut r = Reader { b, at: FIXED_LEN };
    let name = usize::try_from(r.varint()?).ok()?;
    r.bytes(name)?;
    r.varint()?; // first child
    r.varint()?; // child count
    let flags = r.varint()?;
    // ACL, czxid, ctime, then one varint per optional stat field present.
    let optional = F_MZXID | F_MTIME | F_VERSION | F_CVERSION | F_PZXID | F_OWNER | F_AVERSION;
    for _ in 0..3 + (flags & optional).count_ones() {
        r.varint()?;
    }
    if flags & (F_NULL_DATA | F_SHARED_DATA) == 0 {
        let n = usize::try_from(r.varint()?).ok()?;
        r.bytes(n)?;
    }
    Some(r.at)
}

/// 256 nodes: their records in one arena.
#[derive(Clone, Default)]
struct Chunk {
    /// Per slot: the record's offset in `bytes`, or `FREE_BIT | the next free id`.
    at: Vec<u32>,
    bytes: Vec<u8>,
    /// Bytes of `bytes` that no record uses (left by records rewritten or removed).
    garbage: usize,
    /// Data longer than [`INLINE_DATA_MAX`], by slot.
    shared: Vec<(u8, Arc<[u8]>)>,
    base: Base,
}

impl Chunk {
    fn offset(&self, slot: usize) -> Option<usize> {
        let at = *self.at.get(slot)?;
        (at & FREE_BIT == 0).then_some(at as usize)
    }

    fn record(&self, slot: usize) -> Option<&[u8]> {
        self.bytes.get(self.offset(slot)?..)
    }

    fn record_len(&self, slot: usize) -> Option<usize> {
        record_len(self.record(slot)?)
    }

    fn shared(&self, slot: usize) -> Option<&Arc<[u8]>> {
        self.shared
            .iter()
            .find(|(s, _)| usize::from(*s) == slot)
            .map(|(_, d)| d)
    }

    fn set_shared(&mut self, slot: usize, data: Option<Arc<[u8]>>) {
        self.shared.retain(|(s, _)| usize::from(*s) != slot);
        if let Some(d) = data {
            // A slot index is below CHUNK_NODES = 256.
            self.shared.push((slot as u8, d));
        }
    }

    /// Stores `rec` as the slot's record: over the old one when it fits, else at the arena's end.
    fn write(&mut self, slot: usize, rec: &[u8]) {
        let old = self.offset(slot).zip(self.record_len(slot));
        match old {
            Some((at, len)) if rec.len() <= len => {
                self.bytes[at..at + rec.len()].copy_from_slice(rec);
                self.garbage += len - rec.len();
            }
            _ => {
                if let Some((_, len)) = old {
                    self.garbage += len;
                }
                self.append(slot, rec);
            }
        }
        self.compact_if_wasteful(4);
    }

    fn append(&mut self, slot: usize, rec: &[u8]) {
        // Grow by an eighth, not by doubling: a full arena then wastes ~6%, not ~25%.
        if self.bytes.capacity() - self.bytes.len() < rec.len() {
            let mut more = rec.len().max(self.bytes.len() / 8).max(256);
            let used = self.at.len();
            if slot == used && used >= FILL_ESTIMATE_AFTER {
                // A chunk being filled (new nodes take its slots in order): room for the slots still
                // free at the size of those so far, so that it is not copied a few dozen times on its way
                // to full (each growth by an eighth copies all of it; ~1 KiB of copying per create).
                let rest = self.bytes.len() / used * (CHUNK_NODES - used);
                more = more.max(rest.min(FILL_ESTIMATE_MAX));
            }
            self.bytes.reserve_exact(more);
        }
        let at = self.bytes.len() as u32;
        self.bytes.extend_from_slice(rec);
        if slot == self.at.len() {
            self.at.push(at);
            if self.at.len() == CHUNK_NODES
                && self.bytes.capacity() - self.bytes.len() > self.bytes.len() / 8
            {
                // Full, and the estimate was generous (later records were shorter): give the rest back.
                self.bytes
                    .shrink_to(self.bytes.len() + self.bytes.len() / 16);
            }
        } else {
            self.at[slot] = at;
        }
    }

    fn free(&mut self, slot: usize, next_free: u32) {
        if let Some(len) = self.record_len(slot) {
            self.garbage += len;
        }
        self.at[slot] = FREE_BIT | next_free;
        self.set_shared(slot, None);
        // Half, not a quarter: a chunk whose nodes all go (a closed session's ephemerals) is compacted
        // fewer times on its way to empty.
        self.compact_if_wasteful(2);
    }

    /// Compacts the arena when more than `1 / share` of it (and at least [`COMPACT_GARBAGE_MIN`]) is
    /// garbage.
    fn compact_if_wasteful(&mut self, share: usize) {
        if self.garbage < COMPACT_GARBAGE_MIN || self.garbage * share <= self.bytes.len() {
            return;
        }
        let mut bytes = Vec::with_capacity(self.bytes.len() - self.garbage);
        for slot in 0..self.at.len() {
            let Some((at, len)) = self.offset(slot).zip(self.record_len(slot)) else {
                continue;
            };
            self.at[slot] = bytes.len() as u32;
            bytes.extend_from_slice(&self.bytes[at..at + len]);
        }
        self.bytes = bytes;
        self.garbage = 0;
    }
}

/// The nodes' records by id.
#[derive(Clone)]
pub(super) struct Store {
    /// A persistent vector: a clone of the store costs O(1), and the first write to a chunk after it
    /// copies that chunk and the vector's path to it (a multi's rollback copy is taken per request).
    chunks: imbl::Vector<Arc<Chunk>>,
    /// The head of the list of freed ids (`ID_LIMIT` when empty).
    free: u32,
    /// Ids handed out so far, freed ones included.
    issued: u32,
    live: usize,
}

fn split(id: Id) -> (usize, usize) {
    ((id >> CHUNK_BITS) as usize, id as usize & (CHUNK_NODES - 1))
}

impl Store {
    pub(super) fn new() -> Self {
        Store {
            chunks: imbl::Vector::new(),
            free: ID_LIMIT,
            issued: 0,
            live: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.live
    }

    fn chunk(&self, id: Id) -> Option<(&Chunk, usize)> {
        let (c, slot) = split(id);
        Some((self.chunks.get(c)?, slot))
    }

    fn chunk_mut(&mut self, id: Id) -> Option<(&mut Chunk, usize)> {
        let (c, slot) = split(id);
        Some((Arc::make_mut(self.chunks.get_mut(c)?), slot))
    }

    /// The record of `id`, decoded.
    pub(super) fn get(&self, id: Id) -> Option<Rec<'_>> {
        let (chunk, slot) = self.chunk(id)?;
        let (links, name, acl, stat, data, _) = decode(chunk.record(slot)?, chunk.base)?;
        let data = match data {
            DataAt::Null => None,
            DataAt::Inline(d) => Some(d),
            DataAt::Shared => Some(&**chunk.shared(slot)?),
        };
        Some(Rec {
            links,
            name,
            acl,
            stat,
            data,
        })
    }

    /// The name and links alone (what walks of the tree read).
    pub(super) fn name_and_links(&self, id: Id) -> Option<(&str, Links)> {
        let (name, links) = self.name_bytes_and_links(id)?;
        Some((std::str::from_utf8(name).ok()?, links))
    }

    /// `name_and_links` with the name's bytes, unchecked: for walks that only compare or hash names (a
    /// path lookup reads a record per level; checking each name's UTF-8 there was measurable).
    pub(super) fn name_bytes_and_links(&self, id: Id) -> Option<(&[u8], Links)> {
        let (chunk, slot) = self.chunk(id)?;
        let (links, name, _) = Links::read(chunk.record(slot)?)?;
        Some((name, links))
    }

    pub(super) fn links(&self, id: Id) -> Option<Links> {
        self.name_bytes_and_links(id).map(|(_, links)| links)
    }

    /// Makes the first byte of a node's name invalid UTF-8: its links still read, its whole record no
    /// longer decodes (a damaged record, for tests of what the tree does then).
    #[cfg(test)]
    pub(super) fn damage_name(&mut self, id: Id) {
        let (chunk, slot) = self.chunk_mut(id).expect("a live id");
        let at = chunk.offset(slot).expect("a live slot");
        // A name shorter than 128 bytes has a one-byte length after the fixed part.
        chunk.bytes[at + FIXED_LEN + 1] = 0xFF;
    }

    /// The data of `id` as a shared allocation, if it is stored as one.
    #[cfg(test)]
    fn shared_data(&self, id: Id) -> Option<&Arc<[u8]>> {
        let (chunk, slot) = self.chunk(id)?;
        chunk.shared(slot)
    }

    /// Adds a node; None when its record is too big or the ids are used up.
    pub(super) fn insert(
        &mut self,
        links: &Links,
        name: &str,
        acl: u32,
        stat: &NodeStat,
        data: Option<Arc<[u8]>>,
    ) -> Option<Id> {
        let id = if self.free != ID_LIMIT {
            self.free
        } else if self.issued < ID_LIMIT {
            self.issued
        } else {
            return None;
        };
        let (c, slot) = split(id);
        if c == self.chunks.len() {
            self.chunks.push_back(Arc::new(Chunk {
                base: (stat.czxid, stat.ctime),
                ..Chunk::default()
            }));
        }
        let base = self.chunks.get(c)?.base;
        let (rec, shared) = record(links, name, acl, stat, data, base);
        if rec.len() > RECORD_BYTES_MAX {
            return None;
        }
        let chunk = Arc::make_mut(self.chunks.get_mut(c)?);
        if id == self.free {
            self.free = chunk.at[slot] & !FREE_BIT;
        } else {
            self.issued += 1;
        }
        chunk.append(slot, &rec);
        chunk.set_shared(slot, shared);
        self.live += 1;
        Some(id)
    }

    /// Rewrites a node's record: `change` may alter links, ACL id and stat; `data` replaces the data
    /// when given. Returns false if there is no such node.
    pub(super) fn update(
        &mut self,
        id: Id,
        data: Option<Option<Arc<[u8]>>>,
        change: impl FnOnce(&mut Links, &mut u32, &mut NodeStat),
    ) -> bool {
        let Some((chunk, slot)) = self.chunk(id) else {
            return false;
        };
        let Some((mut links, name, mut acl, mut stat, old_data, old_len)) =
            chunk.record(slot).and_then(|rec| decode(rec, chunk.base))
        else {
            return false;
        };
        change(&mut links, &mut acl, &mut stat);
        let (rec, shared) = match data {
            Some(data) => record(&links, name, acl, &stat, data, chunk.base),
            None => {
                // Room for the changed varints too: the record is made in one allocation.
                let mut rec = Vec::with_capacity(old_len + RECORD_GROWTH_MAX);
                encode(&mut rec, &links, name, acl, &stat, old_data, chunk.base);
                let shared = chunk.shared(slot).cloned();
                (rec, shared)
            }
        };
        let Some((chunk, slot)) = self.chunk_mut(id) else {
            return false;
        };
        chunk.write(slot, &rec);
        chunk.set_shared(slot, shared);
        true
    }

    /// Changes a node's links: in place when only the parent or siblings change.
    pub(super) fn set_links(&mut self, id: Id, change: impl FnOnce(&mut Links)) {
        let Some(old) = self.links(id) else {
            return;
        };
        let mut new = old;
        change(&mut new);
        if (new.first_child, new.children) != (old.first_child, old.children) {
            self.update(id, None, |links, _, _| *links = new);
            return;
        }
        let Some((chunk, slot)) = self.chunk_mut(id) else {
            return;
        };
        let Some(at) = chunk.offset(slot) else {
            return;
        };
        if let Some(fixed) = chunk.bytes.get_mut(at..at + FIXED_LEN) {
            new.write_fixed(fixed);
        }
    }

    /// Removes a node's record and frees its id (the caller unlinks it first).
    pub(super) fn remove(&mut self, id: Id) {
        let next_free = self.free;
        let Some((chunk, slot)) = self.chunk_mut(id) else {
            return;
        };
        if chunk.offset(slot).is_none() {
            return;
        }
        chunk.free(slot, next_free);
        self.free = id;
        self.live -= 1;
    }
}

/// A record's bytes and its shared data, if the data is too long to keep inline.
fn record(
    links: &Links,
    name: &str,
    acl: u32,
    stat: &NodeStat,
    data: Option<Arc<[u8]>>,
    base: Base,
) -> (Vec<u8>, Option<Arc<[u8]>>) {
    let inline = data.as_ref().map_or(0, |d| {
        if d.len() <= INLINE_DATA_MAX {
            d.len()
        } else {
            0
        }
    });
    let mut rec = Vec::with_capacity(FIXED_LEN + RECORD_VARINTS_MAX + name.len() + inline);
    let (at, shared) = match &data {
        None => (DataAt::Null, None),
        Some(d) if d.len() <= INLINE_DATA_MAX => (DataAt::Inline(d), None),
        Some(d) => (DataAt::Shared, Some(d.clone())),
    };
    encode(&mut rec, links, name, acl, stat, at, base);
    (rec, shared)
}

const SHARD_BITS: u32 = 10;
/// The hash bits that pick a shard: clear of the 32 that place a path within it (`tag_of`).
const SHARD_SHIFT: u32 = 32;

/// Path → id for every node but the root, in one of 1024 shards chosen by the path's hash. A bucket holds
/// the id and 32 other bits of the hash (its tag: 8 bytes and a control byte); a hit is confirmed by the
/// tag, then by walking the node's names up to the root, so the index holds no path bytes. A table that
/// grows places its ids again by their tags alone: it used to hash each id's path again from its records,
/// the first touch of each record a cache miss, 6.6% of the apply thread's time while creates grew the tree
/// (session 39: create at 32 sessions +6.5%, p99 -12%; a million nodes take 11 MB more, 8%). A 16-bit tag
/// in a packed 6-byte slot took half that memory, but set at 32 sessions measured 0.91-0.93 against it.
#[derive(Clone)]
pub(super) struct PathIndex {
    /// Persistent, as the store's chunks: a clone costs O(1).
    shards: imbl::Vector<Arc<HashTable<Slot>>>,
    hasher: PathHasher,
    len: usize,
}

/// A node's id and its path's tag (`tag_of`).
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: Id,
    tag: u32,
}

/// The bits of a path's hash that place it within its shard: clear of those that pick the shard.
fn tag_of(hash: u64) -> u32 {
    hash as u32
}

/// What a shard's table is given as the hash of a tag: spread over 64 bits, as a table takes a bucket
/// from the low bits and a control byte from the top ones. A slot is always placed by this, whether it
/// is inserted, looked up or moved as its table grows.
fn table_hash(tag: u32) -> u64 {
    u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn slot_hash(slot: &Slot) -> u64 {
    table_hash(slot.tag)
}

/// Hashes a path, its bytes at once (every path hashed is a whole path: the tables place their ids by
/// the tags they keep, never by a hash made again from the records' names). Randomly seeded, so clients
/// cannot aim paths at one bucket.
#[derive(Clone, Default)]
pub(super) struct PathHasher(foldhash::quality::RandomState);

impl PathHasher {
    pub(super) fn of_path(&self, path: &str) -> u64 {
        self.0.hash_one(path.as_bytes())
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize & ((1 << SHARD_BITS) - 1)
}

impl PathIndex {
    pub(super) fn new() -> Self {
        let empty = Arc::new(HashTable::new());
        PathIndex {
            shards: (0..1 << SHARD_BITS).map(|_| empty.clone()).collect(),
            hasher: PathHasher::default(),
            len: 0,
        }
    }

    pub(super) fn hash(&self, path: &str) -> u64 {
        self.hasher.of_path(path)
    }

    /// The id with this path hash for which `is` says yes.
    pub(super) fn find(&self, hash: u64, mut is: impl FnMut(Id) -> bool) -> Option<Id> {
        let tag = tag_of(hash);
        self.shards
            .get(shard_of(hash))?
            .find(table_hash(tag), |s| s.tag == tag && is(s.id))
            .map(|s| s.id)
    }

    /// Adds `id` under `hash`.
    pub(super) fn insert(&mut self, hash: u64, id: Id) {
        let Some(table) = self.shards.get_mut(shard_of(hash)) else {
            return;
        };
        let tag = tag_of(hash);
        Arc::make_mut(table).insert_unique(table_hash(tag), Slot { id, tag }, slot_hash);
        self.len += 1;
    }

    pub(super) fn remove(&mut self, hash: u64, id: Id) {
        let Some(table) = self.shards.get_mut(shard_of(hash)) else {
            return;
        };
        let table = Arc::make_mut(table);
        if let Ok(found) = table.find_entry(table_hash(tag_of(hash)), |s| s.id == id) {
            found.remove();
            self.len -= 1;
            // Give back the room of a shard emptied by a mass delete.
            if table.capacity() > 64 && table.len() * 4 < table.capacity() {
                table.shrink_to(table.len() * 2, slot_hash);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `paths` more paths spread over the shards (a tree being loaded), so that the tables
    /// do not grow as they fill.
    pub(super) fn reserve(&mut self, paths: usize) {
        let per_shard = paths / (1 << SHARD_BITS);
        let room = per_shard + per_shard / 8 + 8;
        for table in self.shards.iter_mut() {
            Arc::make_mut(table).reserve(room, slot_hash);
        }
    }
}

/// Each distinct ACL list once, with the number of nodes that use it (ZooKeeper's
/// `ReferenceCountedACLCache`). Ids are member-local: a serialized tree lists the lists themselves.
#[derive(Clone, Default)]
pub(super) struct AclTable {
    by_id: imbl::OrdMap<u32, (Arc<Vec<Acl>>, u64)>,
    by_value: imbl::OrdMap<Arc<Vec<Acl>>, u32>,
    next: u32,
}

impl AclTable {
    /// The id of `acl` (added if new), counting one more user.
    pub(super) fn intern(&mut self, acl: Arc<Vec<Acl>>) -> u32 {
        if let Some(&id) = self.by_value.get(&acl) {
            self.add_user(id);
            return id;
        }
        while self.by_id.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1);
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        self.by_value.insert(acl.clone(), id);
        self.by_id.insert(id, (acl, 1));
        id
    }

    /// One more user of a list already interned (nothing if there is no such list).
    pub(super) fn add_user(&mut self, id: u32) {
        if let Some((_, users)) = self.by_id.get_mut(&id) {
            *users += 1;
        }
    }

    pub(super) fn get(&self, id: u32) -> Option<&Arc<Vec<Acl>>> {
        self.by_id.get(&id).map(|(acl, _)| acl)
    }

    /// One user less; the list goes when it has none.
    pub(super) fn release(&mut self, id: u32) {
        let Some((acl, users)) = self.by_id.get_mut(&id) else {
            return;
        };
        *users -= 1;
        if *users == 0 {
            let acl = acl.clone();
            self.by_id.remove(&id);
            self.by_value.remove(&acl);
        }
    }

    /// Every list with its id, in the lists' order.
    pub(super) fn in_value_order(&self) -> impl Iterator<Item = (&Arc<Vec<Acl>>, u32)> + '_ {
        self.by_value.iter().map(|(acl, id)| (acl, *id))
    }

    /// (id, users) of every list.
    pub(super) fn users(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.by_id.iter().map(|(id, (_, users))| (*id, *users))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(czxid: i64) -> NodeStat {
        NodeStat::created(czxid, 1_700_000_000_000, 0)
    }

    #[test]
    fn records_round_trip_every_stat_field_and_kind_of_data() {
        let links = Links {
            parent: 7,
            first_child: NONE,
            next: 9,
            prev: 3,
            children: 2,
        };
        let odd = NodeStat {
            czxid: 0x1_0000_0001,
            mzxid: 0x1_0000_0005,
            ctime: 1,
            mtime: -1,
            version: i32::MIN,
            cversion: -7,
            aversion: i32::MAX,
            ephemeral_owner: i64::MIN,
            pzxid: i64::MAX,
        };
        let long = [7u8; INLINE_DATA_MAX + 1];
        for s in [stat(5), odd, NodeStat::default()] {
            for data in [None, Some(&b""[..]), Some(&b"abc"[..]), Some(&long[..])] {
                let mut store = Store::new();
                let id = store
                    .insert(&links, "n-0001", 3, &s, data.map(Arc::from))
                    .unwrap();
                let rec = store.get(id).unwrap();
                assert_eq!(rec.links, links);
                assert_eq!((rec.name, rec.acl, rec.stat), ("n-0001", 3, s));
                assert_eq!(rec.data, data);
                assert_eq!(store.shared_data(id).is_some(), data == Some(&long[..]));
                // The length read without decoding is the decoded record's, with bytes after it.
                let (chunk, slot) = store.chunk(id).unwrap();
                let mut bytes = chunk.record(slot).unwrap().to_vec();
                let decoded = decode(&bytes, chunk.base).unwrap().5;
                bytes.extend_from_slice(&[0xff; 8]);
                assert_eq!(record_len(&bytes), Some(decoded));
                assert_eq!(record_len(&bytes[..decoded - 1]), None, "a cut record");
            }
        }
    }

    #[test]
    fn a_fresh_small_node_takes_few_bytes() {
        let mut rec = Vec::new();
        let s = NodeStat::created(0x1_0000_0001, 1_763_800_000_000, 0);
        // Created 100 transactions and 5 s after the first node of its chunk.
        let base = (s.czxid - 100, s.ctime - 5000);
        encode(
            &mut rec,
            &Links::leaf(1, 2),
            "n00003-0000012345",
            0,
            &s,
            DataAt::Inline(&[0x5a; 32]),
            base,
        );
        // 12 link bytes, 18 of name, 1 first child, 1 child count, 1 flags, 1 ACL, 2 czxid, 2 ctime,
        // 33 of data.
        assert_eq!(rec.len(), 71);
        let (links, name, acl, stat, _, len) = decode(&rec, base).unwrap();
        assert_eq!(
            (links, name, acl, stat, len),
            (Links::leaf(1, 2), "n00003-0000012345", 0, s, 71)
        );
    }

    #[test]
    fn freed_ids_are_reused_and_rewrites_compact_the_arena() {
        let mut store = Store::new();
        let ids: Vec<Id> = (0..300)
            .map(|i| {
                store
                    .insert(&Links::leaf(0, NONE), &format!("n{i}"), 0, &stat(i), None)
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, (0..300).collect::<Vec<_>>());
        store.remove(5);
        store.remove(260);
        assert_eq!(store.len(), 298);
        assert!(store.get(5).is_none());
        let again = store
            .insert(&Links::leaf(0, NONE), "again", 0, &stat(1), None)
            .unwrap();
        assert_eq!(again, 260);
        // Growing one record over and over leaves garbage that compaction reclaims.
        for round in 0..200usize {
            let data: Arc<[u8]> = Arc::from(vec![1u8; round % INLINE_DATA_MAX]);
            assert!(store.update(7, Some(Some(data)), |_, _, s| s.version += 1));
        }
        let chunk = &store.chunks[0];
        assert!(chunk.garbage * 4 <= chunk.bytes.len() || chunk.garbage < COMPACT_GARBAGE_MIN);
        assert_eq!(store.get(7).unwrap().stat.version, 200);
        assert_eq!(store.get(8).unwrap().name, "n8");
        assert_eq!(store.len(), 299);
    }

    #[test]
    fn a_chunk_filled_in_order_grows_a_few_times_and_ends_with_little_room_to_spare() {
        for data_len in [0usize, 40, INLINE_DATA_MAX] {
            let mut store = Store::new();
            let mut capacities = vec![];
            for i in 0..CHUNK_NODES {
                let data = (data_len > 0).then(|| Arc::from(vec![7u8; data_len]));
                let name = format!("n{i:05}");
                store
                    .insert(&Links::leaf(0, NONE), &name, 0, &stat(1), data)
                    .unwrap();
                let capacity = store.chunks[0].bytes.capacity();
                if capacities.last() != Some(&capacity) {
                    capacities.push(capacity);
                }
            }
            let chunk = &store.chunks[0];
            // Growth by an eighth alone took 20-40 steps to here.
            assert!(capacities.len() <= 5, "{data_len} B: {capacities:?}");
            assert!(
                chunk.bytes.capacity() - chunk.bytes.len() <= chunk.bytes.len() / 8,
                "{data_len} B: {} of {} bytes spare",
                chunk.bytes.capacity() - chunk.bytes.len(),
                chunk.bytes.capacity()
            );
        }
        // Records that shrink after the estimate: the full chunk gives the rest back.
        let mut store = Store::new();
        for i in 0..CHUNK_NODES {
            let data = (i < 32).then(|| Arc::from(vec![7u8; INLINE_DATA_MAX]));
            store
                .insert(&Links::leaf(0, NONE), "n", 0, &stat(1), data)
                .unwrap();
        }
        let chunk = &store.chunks[0];
        assert!(chunk.bytes.capacity() - chunk.bytes.len() <= chunk.bytes.len() / 8);
        // Records with long names first: the estimate is capped, not their average times the slots left.
        let mut store = Store::new();
        let long = "n".repeat(200 << 10);
        for _ in 0..FILL_ESTIMATE_AFTER + 1 {
            store
                .insert(&Links::leaf(0, NONE), &long, 0, &stat(1), None)
                .unwrap();
        }
        let chunk = &store.chunks[0];
        assert!(
            chunk.bytes.capacity() <= chunk.bytes.len() + FILL_ESTIMATE_MAX,
            "{} reserved for {} used",
            chunk.bytes.capacity(),
            chunk.bytes.len()
        );
    }

    #[test]
    fn a_clone_keeps_its_records_while_the_original_changes() {
        let mut store = Store::new();
        let id = store
            .insert(
                &Links::leaf(0, NONE),
                "a",
                0,
                &stat(1),
                Some(Arc::from(&b"1"[..])),
            )
            .unwrap();
        let snap = store.clone();
        store.update(id, Some(Some(Arc::from(&b"2"[..]))), |_, _, _| {});
        store.set_links(id, |l| l.children = 9);
        assert_eq!(snap.get(id).unwrap().data, Some(&b"1"[..]));
        assert_eq!(snap.get(id).unwrap().links.children, 0);
        assert_eq!(store.get(id).unwrap().data, Some(&b"2"[..]));
        assert_eq!(store.get(id).unwrap().links.children, 9);
    }

    #[test]
    fn the_index_finds_by_hash_and_check_grows_and_forgets_removed_ids() {
        // Nodes /n0 .. /n2999 under the root.
        let mut store = Store::new();
        let mut index = PathIndex::new();
        store.insert(&Links::leaf(NONE, NONE), "", 0, &stat(0), None);
        let ids: Vec<Id> = (0..3000)
            .map(|i| {
                let id = store
                    .insert(
                        &Links::leaf(ROOT, NONE),
                        &format!("n{i}"),
                        0,
                        &stat(i),
                        None,
                    )
                    .unwrap();
                index.insert(index.hash(&format!("/n{i}")), id);
                id
            })
            .collect();
        assert_ne!(index.hash("/n7"), index.hash("/n7/"));
        assert_ne!(index.hash("/d0/d1"), index.hash("/d1/d0"));
        assert_ne!(index.hash("/ab/c"), index.hash("/a/bc"));
        let snap = index.clone();
        for (i, &id) in ids.iter().enumerate() {
            let h = index.hash(&format!("/n{i}"));
            assert_eq!(index.find(h, |found| found == id), Some(id));
            if i % 3 != 0 {
                index.remove(h, id);
                assert_eq!(index.find(h, |found| found == id), None);
            }
        }
        assert_eq!((index.len(), snap.len()), (1000, 3000));
        let h = index.hash("/n2");
        assert_eq!(snap.find(h, |found| found == ids[2]), Some(ids[2]));
        assert_eq!(
            index.find(index.hash("/n3"), |found| found == ids[3]),
            Some(ids[3])
        );
    }

    /// One shard grown to 100,000 ids and emptied again, by the tags alone: every id is found by its hash
    /// at every size, ids whose whole hashes collide are told apart by the check, and ids whose tags
    /// collide (with other shard bits) by their shard.
    #[test]
    fn a_shard_grows_and_shrinks_by_its_tags_and_finds_every_id_throughout() {
        let mut index = PathIndex::new();
        let shard = 5u64 << SHARD_SHIFT;
        // Spread over the tags (an odd multiplier: distinct for distinct ids).
        let hash_of = |id: Id| shard | u64::from(id.wrapping_mul(0x9E37_79B1));
        let n: Id = 100_000;
        for id in 1..=n {
            index.insert(hash_of(id), id);
            if id % 4999 == 0 {
                for back in (1..=id).step_by(331) {
                    assert_eq!(index.find(hash_of(back), |f| f == back), Some(back));
                }
            }
        }
        // The same whole hash twice: the check decides.
        index.insert(hash_of(7), n + 1);
        assert_eq!(index.find(hash_of(7), |f| f == n + 1), Some(n + 1));
        assert_eq!(index.find(hash_of(7), |f| f == 7), Some(7));
        // The same tag in another shard is another entry: each shard answers for its own.
        let elsewhere = hash_of(9) ^ (1 << SHARD_SHIFT);
        index.insert(elsewhere, n + 2);
        assert_eq!(index.find(elsewhere, |f| f == n + 2), Some(n + 2));
        assert_eq!(index.find(elsewhere, |f| f == 9), None);
        assert_eq!(index.find(hash_of(9), |f| f == n + 2), None);
        index.remove(elsewhere, n + 2);
        index.remove(hash_of(7), n + 1);
        assert_eq!(index.find(hash_of(7), |f| f == n + 1), None);
        let full = index.clone();
        for id in 1..=n {
            if id % 50 != 0 {
                index.remove(hash_of(id), id);
            }
        }
        for id in 1..=n {
            let kept = (id % 50 == 0).then_some(id);
            assert_eq!(index.find(hash_of(id), |f| f == id), kept, "{id}");
            assert_eq!(full.find(hash_of(id), |f| f == id), Some(id));
        }
        assert_eq!((index.len(), full.len()), (2000, n as usize));
    }

    #[test]
    fn acl_lists_are_shared_and_dropped_with_their_last_user() {
        let open = Arc::new(crate::acl::open_acl_unsafe());
        let mut acls = AclTable::default();
        let a = acls.intern(open.clone());
        let b = acls.intern(Arc::new(crate::acl::open_acl_unsafe()));
        assert_eq!(a, b);
        let c = acls.intern(Arc::new(crate::acl::read_acl_unsafe()));
        assert_ne!(a, c);
        acls.release(a);
        assert!(acls.get(a).is_some());
        acls.release(a);
        assert!(acls.get(a).is_none());
        assert_eq!(acls.users().collect::<Vec<_>>(), [(c, 1)]);
    }
}
