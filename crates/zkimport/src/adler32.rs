//! Adler-32 (RFC 1950), the checksum of ZooKeeper's log records and snapshot seals
//! (`java.util.zip.Adler32`).

const MOD: u32 = 65_521;
/// The most bytes that can be summed before `b` may overflow 32 bits (zlib's NMAX).
const CHUNK: usize = 5552;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Adler32 {
    a: u32,
    b: u32,
}

impl Adler32 {
    pub(crate) fn new() -> Self {
        Adler32 { a: 1, b: 0 }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        for chunk in data.chunks(CHUNK) {
            for &byte in chunk {
                self.a += u32::from(byte);
                self.b += self.a;
            }
            self.a %= MOD;
            self.b %= MOD;
        }
    }

    /// The value Java's `Checksum.getValue()` returns.
    pub(crate) fn value(&self) -> u64 {
        u64::from((self.b << 16) | self.a)
    }
}

pub(crate) fn adler32(data: &[u8]) -> u64 {
    let mut a = Adler32::new();
    a.update(data);
    a.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        // Long input: exercises the chunked reduction.
        let big = vec![0xffu8; 100_000];
        let mut a = 1u64;
        let mut b = 0u64;
        for &x in &big {
            a = (a + u64::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        assert_eq!(adler32(&big), (b << 16) | a);
        let mut split = Adler32::new();
        split.update(&big[..777]);
        split.update(&big[777..]);
        assert_eq!(split.value(), adler32(&big));
    }
}
