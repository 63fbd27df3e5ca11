//! Jute primitives: big-endian ints, length-prefixed buffers and strings (-1 = null), vectors.

use thiserror::Error;

/// Default `jute.maxbuffer`: the largest frame either side accepts.
pub const MAX_BUFFER_BYTES_DEFAULT: usize = 0xfffff;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("invalid length {len} at offset {offset}")]
    BadLength { offset: usize, len: i32 },
    #[error("invalid UTF-8 in string at offset {offset}")]
    BadUtf8 { offset: usize },
    #[error("unknown {what} value {value}")]
    BadValue { what: &'static str, value: i32 },
    #[error("{0} trailing bytes after record")]
    Trailing(usize),
}

/// A cursor over one frame's payload.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    /// Fails unless the whole payload was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    /// Jute booleans: any non-zero byte is true.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? != 0)
    }
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    /// A length prefix: -1 means null; any other negative value, or one longer than what is left, is an error.
    fn len(&mut self) -> Result<Option<usize>, DecodeError> {
        let offset = self.pos;
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            return Err(DecodeError::BadLength { offset, len });
        }
        Ok(Some(len as usize))
    }
    /// `buffer`: `None` for null (-1).
    pub fn buffer(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.len()? {
            None => Ok(None),
            Some(n) => Ok(Some(self.bytes(n)?.to_vec())),
        }
    }
    /// `ustring`: `None` for null (-1). Java's writer emits CESU-8 for non-BMP characters, which is not valid
    /// UTF-8; such strings are decoded lossily only if strict decoding fails.
    pub fn ustring_opt(&mut self) -> Result<Option<String>, DecodeError> {
        let offset = self.pos;
        match self.len()? {
            None => Ok(None),
            Some(n) => {
                let b = self.bytes(n)?;
                match std::str::from_utf8(b) {
                    Ok(s) => Ok(Some(s.to_owned())),
                    Err(_) => decode_cesu8(b)
                        .map(Some)
                        .ok_or(DecodeError::BadUtf8 { offset }),
                }
            }
        }
    }
    /// `ustring` where null and empty mean the same (kazoo writes "" as -1).
    pub fn ustring(&mut self) -> Result<String, DecodeError> {
        Ok(self.ustring_opt()?.unwrap_or_default())
    }
    /// `vector<ustring>` where a null vector and null elements read as empty.
    pub fn ustring_vec(&mut self) -> Result<Vec<String>, DecodeError> {
        Ok(self.vec(4, Self::ustring)?.unwrap_or_default())
    }
    /// `vector<T>`: `None` for null (-1). The count is checked against the bytes left (each element is at
    /// least `min_elem_bytes` long) before anything is allocated.
    pub fn vec<T>(
        &mut self,
        min_elem_bytes: usize,
        mut elem: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        let offset = self.pos;
        let Some(n) = self.len()? else {
            return Ok(None);
        };
        if n.saturating_mul(min_elem_bytes.max(1)) > self.remaining() {
            return Err(DecodeError::BadLength {
                offset,
                len: n as i32,
            });
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(elem(self)?);
        }
        Ok(Some(v))
    }
}

/// Decodes Java's "modified UTF-8"/CESU-8 surrogate pairs (each half encoded as 3 bytes).
fn decode_cesu8(b: &[u8]) -> Option<String> {
    let mut units: Vec<u16> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x80 {
            units.push(c as u16);
            i += 1;
        } else if c & 0xE0 == 0xC0 && i + 1 < b.len() {
            units.push((((c & 0x1F) as u16) << 6) | (b[i + 1] & 0x3F) as u16);
            i += 2;
        } else if c & 0xF0 == 0xE0 && i + 2 < b.len() {
            units.push(
                (((c & 0x0F) as u16) << 12)
                    | (((b[i + 1] & 0x3F) as u16) << 6)
                    | (b[i + 2] & 0x3F) as u16,
            );
            i += 3;
        } else if c & 0xF8 == 0xF0 && i + 3 < b.len() {
            let cp = (((c & 0x07) as u32) << 18)
                | (((b[i + 1] & 0x3F) as u32) << 12)
                | (((b[i + 2] & 0x3F) as u32) << 6)
                | (b[i + 3] & 0x3F) as u32;
            let mut buf = [0u16; 2];
            units.extend_from_slice(char::from_u32(cp)?.encode_utf16(&mut buf));
            i += 4;
        } else {
            return None;
        }
    }
    String::from_utf16(&units).ok()
}

/// What a frame is allocated with at first: a reply header and a Stat (setData, exists, create2) fit, so
/// most frames are made in one allocation instead of growing from 4 bytes through five reallocations.
const FRAME_CAPACITY: usize = 128;

/// Appends jute primitives to a byte vector.
#[derive(Default, Debug, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    /// Starts a frame: reserves the 4-byte length prefix, filled in by [`Writer::finish_frame`].
    pub fn frame() -> Self {
        Self::frame_with_capacity(FRAME_CAPACITY)
    }
    /// Starts a frame with room for `capacity` bytes (length prefix included) before it must grow.
    pub fn frame_with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(4));
        buf.extend_from_slice(&[0; 4]);
        Writer { buf }
    }
    pub fn finish_frame(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4) as i32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub fn buffer(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.i32(-1),
            Some(b) => {
                self.i32(b.len() as i32);
                self.raw(b);
            }
        }
    }
    pub fn ustring(&mut self, s: &str) {
        self.buffer(Some(s.as_bytes()));
    }
    pub fn ustring_opt(&mut self, s: Option<&str>) {
        self.buffer(s.map(str::as_bytes));
    }
    /// `vector<ustring>`, never null.
    pub fn ustring_vec(&mut self, v: &[String]) {
        self.vec(Some(v), |w, s| w.ustring(s));
    }
    pub fn vec<T>(&mut self, v: Option<&[T]>, mut elem: impl FnMut(&mut Self, &T)) {
        match v {
            None => self.i32(-1),
            Some(items) => {
                self.i32(items.len() as i32);
                for it in items {
                    elem(self, it);
                }
            }
        }
    }
}
