//! ZooKeeper's snapshot files (`FileSnap`, `SnapStream` uncompressed): `FileHeader` ("ZKSN"), the
//! session table, the ACL table (`ReferenceCountedACLCache`), every node in pre-order (`DataTree`, the
//! root named `""`, ended by the path `"/"`), then a seal (the Adler-32 of everything before it, and
//! `"/"`). From 3.6 on a `ZxidDigest` and a second seal follow; newer versions may add the last
//! processed zxid and a third seal.

use crate::adler32::Adler32;
use crate::error::ImportError;
use oxkeeper_core::acl::open_acl_unsafe;
use oxkeeper_core::import::{ImportedNode, ImportedSession};
use oxkeeper_core::NodeStat;
use oxkeeper_proto::records::Record;
use oxkeeper_proto::{Acl, DecodeError, Reader};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// `FileSnap.SNAP_MAGIC`: "ZKSN".
pub(crate) const SNAP_MAGIC: i32 = 0x5a4b_534e;
/// A node whose ACL is this index has world:anyone ALL (`ReferenceCountedACLCache.OPEN_UNSAFE_ACL_ID`).
const OPEN_UNSAFE_ACL_ID: i64 = -1;
/// `DataTree.DigestCalculator`'s digest version (3.6+); earlier ones stored the digest as hex text.
const DIGEST_VERSION_TEXT_BELOW: i32 = 2;

/// `DataTree.ZxidDigest`: ZooKeeper's digest of the tree as of `zxid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ZxidDigest {
    pub zxid: i64,
    pub version: i32,
    pub digest: i64,
}

#[derive(Debug)]
pub(crate) struct Snapshot {
    pub sessions: Vec<ImportedSession>,
    /// In the file's order: parents first, the root (as `/`) first.
    pub nodes: Vec<ImportedNode>,
    pub digest: Option<ZxidDigest>,
    pub notes: Vec<String>,
}

/// `SnapStream.isValidCheckedStream`: at least 10 bytes, ending with a seal's `"/"` (int 1, `'/'`).
/// ZooKeeper skips snapshots that fail it (a snapshot cut short while being written).
pub(crate) fn looks_complete(bytes: &[u8]) -> bool {
    bytes.len() >= 10 && bytes[bytes.len() - 5..] == [0, 0, 0, 1, b'/']
}

/// The cursor and the running checksum of what it has read.
struct Snap<'a> {
    file: &'a Path,
    bytes: &'a [u8],
    r: Reader<'a>,
    checksum: Adler32,
    summed: usize,
}

impl<'a> Snap<'a> {
    fn err(&self, e: DecodeError) -> ImportError {
        ImportError::decode(self.file, 0, e)
    }

    fn corrupt(&self, offset: usize, what: impl Into<String>) -> ImportError {
        ImportError::corrupt(self.file, offset as u64, what)
    }

    /// `SnapStream.checkSealIntegrity`: the checksum of everything read so far, then `"/"`.
    fn seal(&mut self) -> Result<(), ImportError> {
        let at = self.r.position();
        self.checksum.update(&self.bytes[self.summed..at]);
        self.summed = at;
        let stored = self.r.i64().map_err(|e| self.err(e))? as u64;
        self.r.ustring_opt().map_err(|e| self.err(e))?;
        let computed = self.checksum.value();
        if stored != computed {
            return Err(ImportError::Checksum {
                file: self.file.to_path_buf(),
                offset: at as u64,
                stored,
                computed,
            });
        }
        Ok(())
    }
}

fn stat_persisted(r: &mut Reader<'_>) -> Result<NodeStat, DecodeError> {
    Ok(NodeStat {
        czxid: r.i64()?,
        mzxid: r.i64()?,
        ctime: r.i64()?,
        mtime: r.i64()?,
        version: r.i32()?,
        cversion: r.i32()?,
        aversion: r.i32()?,
        ephemeral_owner: r.i64()?,
        pzxid: r.i64()?,
    })
}

/// `ZxidDigest.deserialize`; `Ok(None)` where ZooKeeper meets the end of the file (an older snapshot).
fn zxid_digest(r: &mut Reader<'_>) -> Result<Option<ZxidDigest>, DecodeError> {
    let read = |r: &mut Reader<'_>| -> Result<ZxidDigest, DecodeError> {
        let zxid = r.i64()?;
        let version = r.i32()?;
        let digest = if version < DIGEST_VERSION_TEXT_BELOW {
            r.ustring_opt()?
                .and_then(|d| u64::from_str_radix(&d, 16).ok())
                .unwrap_or(0) as i64
        } else {
            r.i64()?
        };
        Ok(ZxidDigest {
            zxid,
            version,
            digest,
        })
    };
    match read(r) {
        Ok(d) => Ok(Some(d)),
        Err(DecodeError::Truncated { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a whole uncompressed snapshot (`FileSnap.deserialize`), checking every seal.
pub(crate) fn parse(file: &Path, bytes: &[u8]) -> Result<Snapshot, ImportError> {
    let mut s = Snap {
        file,
        bytes,
        r: Reader::new(bytes),
        checksum: Adler32::new(),
        summed: 0,
    };
    let mut notes = Vec::new();
    let magic = s.r.i32().map_err(|e| s.err(e))?;
    if magic != SNAP_MAGIC {
        return Err(s.corrupt(
            0,
            format!("not a ZooKeeper snapshot (magic {magic:#010x}, expected \"ZKSN\")"),
        ));
    }
    let _version = s.r.i32().map_err(|e| s.err(e))?;
    let _dbid = s.r.i64().map_err(|e| s.err(e))?;

    // Sessions: `while (count > 0)`, so a negative count is none.
    let at = s.r.position();
    let count = usize::try_from(s.r.i32().map_err(|e| s.err(e))?).unwrap_or(0);
    if count.saturating_mul(12) > s.r.remaining() {
        return Err(s.corrupt(at, format!("{count} sessions do not fit in the file")));
    }
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        let id = s.r.i64().map_err(|e| s.err(e))?;
        let timeout_ms = s.r.i32().map_err(|e| s.err(e))?;
        sessions.push(ImportedSession { id, timeout_ms });
    }

    // The ACL table: index → list.
    let at = s.r.position();
    let count = usize::try_from(s.r.i32().map_err(|e| s.err(e))?).unwrap_or(0);
    if count.saturating_mul(12) > s.r.remaining() {
        return Err(s.corrupt(at, format!("{count} ACL lists do not fit in the file")));
    }
    let mut acls: HashMap<i64, Vec<Acl>> = HashMap::with_capacity(count);
    for _ in 0..count {
        let index = s.r.i64().map_err(|e| s.err(e))?;
        let at = s.r.position();
        let list =
            s.r.vec(12, Acl::decode)
                .map_err(|e| s.err(e))?
                .ok_or_else(|| s.corrupt(at, format!("ACL list #{index} is null")))?;
        acls.insert(index, list);
    }

    // The nodes, parents first, until the path "/".
    let mut nodes: Vec<ImportedNode> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let at = s.r.position();
        let name =
            s.r.ustring_opt()
                .map_err(|e| s.err(e))?
                .ok_or_else(|| s.corrupt(at, "null node path"))?;
        if name == "/" {
            break;
        }
        let data = s.r.buffer().map_err(|e| s.err(e))?;
        let acl_at = s.r.position();
        let acl_index = s.r.i64().map_err(|e| s.err(e))?;
        let stat = stat_persisted(&mut s.r).map_err(|e| s.err(e))?;
        let acl = if acl_index == OPEN_UNSAFE_ACL_ID {
            open_acl_unsafe()
        } else {
            acls.get(&acl_index).cloned().ok_or_else(|| {
                s.corrupt(
                    acl_at,
                    format!("node {name:?} names ACL list #{acl_index}, which the snapshot does not have"),
                )
            })?
        };
        // `DataTree.deserialize`: no `/` is the root; otherwise the parent must already be there.
        let path = match name.rfind('/') {
            None if name.is_empty() => "/".to_owned(),
            None => return Err(s.corrupt(at, format!("node path {name:?} has no '/'"))),
            Some(i) => {
                let parent = if i == 0 { "/" } else { &name[..i] };
                if !seen.contains(parent) {
                    return Err(s.corrupt(at, format!("node {name:?} comes before its parent")));
                }
                name
            }
        };
        if !seen.insert(path.clone()) {
            return Err(s.corrupt(at, format!("node {path:?} appears twice")));
        }
        nodes.push(ImportedNode {
            path,
            data,
            acl,
            stat,
        });
    }
    if nodes.is_empty() {
        return Err(s.corrupt(s.r.position(), "the snapshot has no root node"));
    }
    s.seal()?;

    // 3.6+: the digest of the tree, sealed again; then, in newer versions, the last processed zxid.
    let mut digest = None;
    if !s.r.is_empty() {
        if let Some(d) = zxid_digest(&mut s.r).map_err(|e| s.err(e))? {
            s.seal()?;
            digest = (d.zxid > 0).then_some(d);
            if s.r.remaining() >= 8 {
                s.r.i64().map_err(|e| s.err(e))?;
                s.seal()?;
            }
        }
    }
    if !s.r.is_empty() {
        notes.push(format!(
            "{}: {} byte(s) after offset {} ignored, as ZooKeeper ignores them",
            file.display(),
            s.r.remaining(),
            s.r.position()
        ));
    }
    Ok(Snapshot {
        sessions,
        nodes,
        digest,
        notes,
    })
}
