//! The bytes of a log segment: segment header, batch header, records. Pure encoding and decoding, no I/O.
//!
//! A segment file is named `log.<index of its first entry, 16 lowercase hex digits>` and is preallocated
//! with zeros. All integers are little-endian. Changing anything here changes the format: bump
//! `FORMAT_VERSION` and keep a decoder for the old one (the golden tests fail otherwise).
//!
//! ```text
//! segment header, 32 bytes:
//!    0  magic        8   "OXK-WAL\n"
//!    8  version      u16 FORMAT_VERSION (1)
//!   10  reserved     u16 0
//!   12  crc          u32 crc32 of these 32 bytes with this field zeroed
//!   16  first_index  u64 index of the segment's first entry (the file name says the same)
//!   24  salt         u64 random per segment; seeds every batch checksum in it
//! then batches, back to back, each one write and one fdatasync:
//!    0  magic        4   "OXKB"
//!    4  version      u16 FORMAT_VERSION (1)
//!    6  kind         u16 1 = entries, 2 = truncate
//!    8  body_len     u32 bytes of body after this 32-byte header
//!   12  crc          u32 crc32 (crc32fast) of: salt (u64), this header with crc zeroed, body
//!   16  first_index  u64 entries: index of the first record; truncate: entries from here on are dropped
//!   24  count        u32 records in the body (0 for truncate)
//!   28  reserved     u32 0
//!   32  body         count x { len u32, len bytes }; record i holds entry first_index + i
//! ```
//! The salt makes a batch valid only in the segment it was written to, so entry bytes that happen to
//! contain an encoded batch can never pass for one when recovery scans a damaged region.

use crate::error::WalError;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"OXK-WAL\n";
pub(crate) const BATCH_MAGIC: [u8; 4] = *b"OXKB";
pub(crate) const FORMAT_VERSION: u16 = 1;
pub(crate) const SEGMENT_HEADER_BYTES: usize = 32;
pub(crate) const BATCH_HEADER_BYTES: usize = 32;
pub(crate) const RECORD_HEADER_BYTES: usize = 4;

pub(crate) const SEGMENT_PREFIX: &str = "log.";
const CRC_FIELD: std::ops::Range<usize> = 12..16;
const KIND_ENTRIES: u16 = 1;
const KIND_TRUNCATE: u16 = 2;

/// `log.0000000000000001` for the segment whose first entry is 1.
pub(crate) fn segment_file_name(first_index: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_index:016x}")
}

/// The first index in a segment file name, or `None` for any other file.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(SEGMENT_PREFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub first_index: u64,
    pub salt: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Torn, never written, or damaged: magic or checksum wrong.
    Damaged(&'static str),
    UnsupportedVersion(u16),
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        out[24..32].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out[CRC_FIELD].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let Some(header) = buf.get(..SEGMENT_HEADER_BYTES) else {
            return Err(HeaderError::Damaged(
                "the file is shorter than a segment header",
            ));
        };
        if header[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Damaged("bad segment magic"));
        }
        let mut zeroed = [0u8; SEGMENT_HEADER_BYTES];
        zeroed.copy_from_slice(header);
        zeroed[CRC_FIELD].fill(0);
        if crc32fast::hash(&zeroed) != u32_at(header, 12) {
            return Err(HeaderError::Damaged("bad segment header checksum"));
        }
        let version = u16_at(header, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        Ok(SegmentHeader {
            first_index: u64_at(header, 16),
            salt: u64_at(header, 24),
        })
    }
}

/// What an encoded batch holds, for the caller's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EncodedEntries {
    pub first_index: u64,
    pub last_index: u64,
    pub count: u32,
}

/// Encodes an entries batch into `out` (cleared first), checksum left zero until `seal`. Entries must
/// be consecutive and start at `expected_first` when given. `Ok(None)` and an empty `out` for no entries.
pub(crate) fn encode_entries<'a>(
    out: &mut Vec<u8>,
    expected_first: Option<u64>,
    entries: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Result<Option<EncodedEntries>, WalError> {
    out.clear();
    let mut first = None;
    let mut next = expected_first;
    let mut count: u32 = 0;
    for (index, bytes) in entries {
        if let Some(expected) = next {
            if index != expected {
                return Err(WalError::NotConsecutive {
                    expected,
                    got: index,
                });
            }
        }
        if first.is_none() {
            first = Some(index);
            out.resize(BATCH_HEADER_BYTES, 0);
        }
        let len = u32::try_from(bytes.len()).map_err(|_| WalError::TooLarge {
            what: format!("entry {index} has {} bytes", bytes.len()),
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
        count = count.checked_add(1).ok_or_else(|| WalError::TooLarge {
            what: "more than 2^32 entries in one batch".into(),
        })?;
        next = Some(index.checked_add(1).ok_or_else(|| WalError::TooLarge {
            what: "log index space exhausted".into(),
        })?);
    }
    let Some(first_index) = first else {
        return Ok(None);
    };
    let body_len =
        u32::try_from(out.len() - BATCH_HEADER_BYTES).map_err(|_| WalError::TooLarge {
            what: format!("batch of {} bytes", out.len()),
        })?;
    write_batch_header(
        &mut out[..BATCH_HEADER_BYTES],
        KIND_ENTRIES,
        body_len,
        first_index,
        count,
    );
    Ok(Some(EncodedEntries {
        first_index,
        last_index: first_index + u64::from(count) - 1,
        count,
    }))
}

/// Encodes a truncate batch (drop every entry from `next_index` on) into `out`; checksum left for `seal`.
pub(crate) fn encode_truncate(out: &mut Vec<u8>, next_index: u64) {
    out.clear();
    out.resize(BATCH_HEADER_BYTES, 0);
    write_batch_header(out, KIND_TRUNCATE, 0, next_index, 0);
}

fn write_batch_header(header: &mut [u8], kind: u16, body_len: u32, first_index: u64, count: u32) {
    header[0..4].copy_from_slice(&BATCH_MAGIC);
    header[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&kind.to_le_bytes());
    header[8..12].copy_from_slice(&body_len.to_le_bytes());
    header[CRC_FIELD].fill(0);
    header[16..24].copy_from_slice(&first_index.to_le_bytes());
    header[24..28].copy_from_slice(&count.to_le_bytes());
    header[28..32].fill(0);
}

/// Fills in the checksum of an encoded batch for the segment with `salt`.
pub(crate) fn seal(batch: &mut [u8], salt: u64) {
    let crc = batch_crc(batch, salt);
    batch[CRC_FIELD].copy_from_slice(&crc.to_le_bytes());
}

fn batch_crc(batch: &[u8], salt: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(&batch[..CRC_FIELD.start]);
    hasher.update(&[0; 4]);
    hasher.update(&batch[CRC_FIELD.end..]);
    hasher.finalize()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchKind {
    Entries,
    /// Drops every entry from `first_index` on.
    Truncate,
}

/// A batch that passed its checksum, borrowed from the segment's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch<'a> {
    pub kind: BatchKind,
    pub first_index: u64,
    pub count: u32,
    body: &'a [u8],
}

/// Why the bytes at some offset are not a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchError {
    /// Torn or never written: what a crash leaves at the end of the log. Damage if a batch follows.
    Invalid(&'static str),
    /// The checksum holds but the version is unknown: written by a newer format.
    UnsupportedVersion(u16),
    /// The checksum holds but the contents are inconsistent: written wrong, never torn.
    Malformed(&'static str),
}

impl<'a> Batch<'a> {
    /// Decodes the batch at the start of `buf` (which runs to the end of the segment).
    pub(crate) fn decode(buf: &'a [u8], salt: u64) -> Result<Batch<'a>, BatchError> {
        let Some(header) = buf.get(..BATCH_HEADER_BYTES) else {
            return Err(BatchError::Invalid(
                "batch header runs past the end of the file",
            ));
        };
        if header[0..4] != BATCH_MAGIC {
            return Err(BatchError::Invalid("bad batch magic"));
        }
        let body_len = u32_at(header, 8) as usize;
        let Some(whole) = buf.get(..BATCH_HEADER_BYTES + body_len) else {
            return Err(BatchError::Invalid("batch runs past the end of the file"));
        };
        if batch_crc(whole, salt) != u32_at(header, 12) {
            return Err(BatchError::Invalid("bad batch checksum"));
        }
        let version = u16_at(header, 4);
        if version != FORMAT_VERSION {
            return Err(BatchError::UnsupportedVersion(version));
        }
        let kind = match u16_at(header, 6) {
            KIND_ENTRIES => BatchKind::Entries,
            KIND_TRUNCATE => BatchKind::Truncate,
            _ => return Err(BatchError::Malformed("unknown batch kind")),
        };
        if u32_at(header, 28) != 0 {
            return Err(BatchError::Malformed("reserved header field is not zero"));
        }
        let batch = Batch {
            kind,
            first_index: u64_at(header, 16),
            count: u32_at(header, 24),
            body: &whole[BATCH_HEADER_BYTES..],
        };
        batch.check_body()?;
        Ok(batch)
    }

    fn check_body(&self) -> Result<(), BatchError> {
        match self.kind {
            BatchKind::Truncate if self.count != 0 || !self.body.is_empty() => {
                return Err(BatchError::Malformed("truncate batch with records"));
            }
            BatchKind::Truncate => return Ok(()),
            BatchKind::Entries if self.count == 0 => {
                return Err(BatchError::Malformed("entries batch without records"));
            }
            BatchKind::Entries => {}
        }
        if self
            .first_index
            .checked_add(u64::from(self.count))
            .is_none()
        {
            return Err(BatchError::Malformed("entry indices overflow"));
        }
        let mut rest = self.body;
        for _ in 0..self.count {
            let Some(len) = rest.get(..RECORD_HEADER_BYTES) else {
                return Err(BatchError::Malformed(
                    "record header past the end of the batch",
                ));
            };
            let len = u32_at(len, 0) as usize;
            let Some(after) = rest.get(RECORD_HEADER_BYTES + len..) else {
                return Err(BatchError::Malformed("record past the end of the batch"));
            };
            rest = after;
        }
        if !rest.is_empty() {
            return Err(BatchError::Malformed("bytes after the last record"));
        }
        Ok(())
    }

    /// Bytes the batch takes in the segment, header included.
    pub(crate) fn len(&self) -> usize {
        BATCH_HEADER_BYTES + self.body.len()
    }

    /// Index of the entry after the last one of this batch.
    pub(crate) fn end_index(&self) -> u64 {
        self.first_index + u64::from(self.count)
    }

    /// `(index, bytes)` of each record.
    pub(crate) fn records(&self) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        let mut rest = self.body;
        (self.first_index..self.end_index()).map(move |index| {
            // `decode` checked that every record lies inside the body.
            let len = u32_at(rest, 0) as usize;
            let bytes = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
            rest = &rest[RECORD_HEADER_BYTES + len..];
            (index, bytes)
        })
    }
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(buf[at..at + 2].try_into().expect("2-byte slice"))
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The golden segment: header, two entries batches, a truncate, one more entries batch.
    pub(crate) const GOLDEN_HEX: &str = include_str!("../tests/fixtures/segment-v1.hex");
    pub(crate) const GOLDEN_SALT: u64 = 0x0123_4567_89ab_cdef;

    /// Hex digits, ignoring whitespace and `#` comments to the end of the line.
    pub(crate) fn parse_hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .flat_map(|line| line.bytes().filter(|b| !b.is_ascii_whitespace()))
            .collect();
        assert!(digits.len() % 2 == 0, "odd number of hex digits");
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ascii");
                u8::from_str_radix(pair, 16).expect("hex digit")
            })
            .collect()
    }

    fn encode_golden() -> Vec<u8> {
        let salt = GOLDEN_SALT;
        let mut file = SegmentHeader {
            first_index: 1,
            salt,
        }
        .encode()
        .to_vec();
        let mut batch = Vec::new();
        let first: [(u64, &[u8]); 2] = [(1, b"hello"), (2, b"")];
        encode_entries(&mut batch, Some(1), first).unwrap();
        seal(&mut batch, salt);
        file.extend_from_slice(&batch);
        encode_entries(&mut batch, Some(3), [(3, &b"world!"[..])]).unwrap();
        seal(&mut batch, salt);
        file.extend_from_slice(&batch);
        encode_truncate(&mut batch, 3);
        seal(&mut batch, salt);
        file.extend_from_slice(&batch);
        encode_entries(&mut batch, Some(3), [(3, &b"again"[..])]).unwrap();
        seal(&mut batch, salt);
        file.extend_from_slice(&batch);
        file
    }

    #[test]
    fn encoding_matches_the_golden_segment_byte_for_byte() {
        let golden = parse_hex(GOLDEN_HEX);
        let encoded = encode_golden();
        assert_eq!(
            encoded, golden,
            "the segment format changed; if on purpose, bump FORMAT_VERSION, keep reading version 1, \
             and add a new fixture"
        );
    }

    #[test]
    fn golden_segment_decodes() {
        let golden = parse_hex(GOLDEN_HEX);
        let header = SegmentHeader::decode(&golden).unwrap();
        assert_eq!(
            header,
            SegmentHeader {
                first_index: 1,
                salt: GOLDEN_SALT
            }
        );
        let mut at = SEGMENT_HEADER_BYTES;
        let mut seen = Vec::new();
        while at < golden.len() {
            let batch = Batch::decode(&golden[at..], header.salt).unwrap();
            let records: Vec<(u64, Vec<u8>)> =
                batch.records().map(|(i, b)| (i, b.to_vec())).collect();
            seen.push((batch.kind, batch.first_index, records));
            at += batch.len();
        }
        assert_eq!(
            seen,
            vec![
                (
                    BatchKind::Entries,
                    1,
                    vec![(1, b"hello".to_vec()), (2, vec![])]
                ),
                (BatchKind::Entries, 3, vec![(3, b"world!".to_vec())]),
                (BatchKind::Truncate, 3, vec![]),
                (BatchKind::Entries, 3, vec![(3, b"again".to_vec())]),
            ]
        );
    }

    #[test]
    fn a_batch_only_checks_out_in_its_own_segment() {
        let mut batch = Vec::new();
        encode_entries(&mut batch, None, [(7, &b"x"[..])]).unwrap();
        seal(&mut batch, 1);
        assert!(Batch::decode(&batch, 1).is_ok());
        assert_eq!(
            Batch::decode(&batch, 2).unwrap_err(),
            BatchError::Invalid("bad batch checksum")
        );
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let mut batch = Vec::new();
        let entries: [(u64, &[u8]); 2] = [(5, b"abc"), (6, b"defgh")];
        encode_entries(&mut batch, Some(5), entries).unwrap();
        seal(&mut batch, 9);
        for at in 0..batch.len() {
            let mut damaged = batch.clone();
            damaged[at] ^= 0x40;
            assert!(
                Batch::decode(&damaged, 9).is_err(),
                "flip at {at} went unnoticed"
            );
        }
    }

    #[test]
    fn unknown_version_with_a_good_checksum_is_reported_as_such() {
        let mut batch = Vec::new();
        encode_truncate(&mut batch, 4);
        batch[4] = 2;
        seal(&mut batch, 0);
        assert_eq!(
            Batch::decode(&batch, 0).unwrap_err(),
            BatchError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn non_consecutive_entries_are_refused() {
        let mut batch = Vec::new();
        let gap: [(u64, &[u8]); 2] = [(1, b"a"), (3, b"b")];
        assert!(matches!(
            encode_entries(&mut batch, None, gap),
            Err(WalError::NotConsecutive {
                expected: 2,
                got: 3
            })
        ));
        assert!(matches!(
            encode_entries(&mut batch, Some(2), [(1, &b"a"[..])]),
            Err(WalError::NotConsecutive {
                expected: 2,
                got: 1
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_entries_batch_decodes_to_what_was_encoded(
            first in 0u64..u64::MAX / 2,
            salt: u64,
            entries in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 1..20),
        ) {
            let mut batch = Vec::new();
            let indexed = entries.iter().enumerate().map(|(k, e)| (first + k as u64, e.as_slice()));
            let encoded = encode_entries(&mut batch, Some(first), indexed).unwrap().unwrap();
            seal(&mut batch, salt);
            let decoded = Batch::decode(&batch, salt).unwrap();
            proptest::prop_assert_eq!(decoded.len(), batch.len());
            proptest::prop_assert_eq!(decoded.end_index(), encoded.last_index + 1);
            let records: Vec<Vec<u8>> = decoded.records().map(|(_, bytes)| bytes.to_vec()).collect();
            proptest::prop_assert_eq!(records, entries);
        }
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(1), "log.0000000000000001");
        assert_eq!(segment_file_name(u64::MAX), "log.ffffffffffffffff");
        assert_eq!(parse_segment_file_name("log.00000000000000ff"), Some(255));
        assert_eq!(parse_segment_file_name("log.ff"), None);
        assert_eq!(parse_segment_file_name("log.000000000000000g"), None);
        assert_eq!(parse_segment_file_name("vote"), None);
    }
}
