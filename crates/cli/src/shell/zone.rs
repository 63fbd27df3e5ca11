//! The local time zone, for printing dates as Java's `Date.toString()` does: the offset and abbreviation in
//! force at an instant, read from the TZif file that `$TZ` or `/etc/localtime` names. Without one, UTC.
//! Instants after the file's last transition keep that transition's offset (Debian's files list transitions
//! up to 2037).

use std::sync::OnceLock;

/// A time zone: its transitions (seconds since the epoch, ascending) and the local-time types they switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    transitions: Vec<(i64, usize)>,
    /// (UTC offset in seconds, abbreviation).
    types: Vec<(i32, String)>,
    /// The type before the first transition.
    initial: usize,
}

/// TZif files larger than this are not time zones.
const TZIF_SIZE_BYTES_MAX: u64 = 1 << 20;

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            transitions: Vec::new(),
            types: vec![(0, "UTC".to_string())],
            initial: 0,
        }
    }

    /// The process's zone, loaded once.
    pub fn local() -> &'static Zone {
        static LOCAL: OnceLock<Zone> = OnceLock::new();
        LOCAL.get_or_init(|| Zone::load().unwrap_or_else(Zone::utc))
    }

    fn load() -> Option<Zone> {
        let path = match std::env::var("TZ") {
            Ok(tz) if !tz.is_empty() => {
                let tz = tz.trim_start_matches(':');
                if tz.starts_with('/') {
                    tz.to_string()
                } else if tz.contains("..") {
                    return None;
                } else {
                    format!("/usr/share/zoneinfo/{tz}")
                }
            }
            _ => "/etc/localtime".to_string(),
        };
        let file = std::fs::File::open(path).ok()?;
        if file.metadata().ok()?.len() > TZIF_SIZE_BYTES_MAX {
            return None;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, TZIF_SIZE_BYTES_MAX),
            &mut bytes,
        )
        .ok()?;
        Zone::from_tzif(&bytes)
    }

    /// Parses a TZif file (RFC 8536), using the 64-bit data of version 2+ files.
    pub fn from_tzif(b: &[u8]) -> Option<Zone> {
        let header = |at: usize| -> Option<[usize; 6]> {
            if b.get(at..at + 4)? != b"TZif" {
                return None;
            }
            let mut counts = [0usize; 6];
            for (i, c) in counts.iter_mut().enumerate() {
                let o = at + 20 + 4 * i;
                *c = u32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?) as usize;
            }
            Some(counts)
        };
        let [isut, isstd, leap, time, typ, chars] = header(0)?;
        let v1_len = time * 5 + typ * 6 + chars + leap * 8 + isstd + isut;
        let (at, time_size, counts) = if b.get(4).is_some_and(|v| *v >= b'2') {
            let at = 44 + v1_len;
            (at, 8, header(at)?)
        } else {
            (0, 4, [isut, isstd, leap, time, typ, chars])
        };
        let [_, _, _, time, typ, chars] = counts;
        if typ == 0 {
            return None;
        }
        let mut p = at + 44;
        let mut times = Vec::with_capacity(time);
        for _ in 0..time {
            let raw = b.get(p..p + time_size)?;
            times.push(if time_size == 8 {
                i64::from_be_bytes(raw.try_into().ok()?)
            } else {
                i64::from(i32::from_be_bytes(raw.try_into().ok()?))
            });
            p += time_size;
        }
        let indices = b.get(p..p + time)?;
        p += time;
        let infos = b.get(p..p + typ * 6)?;
        p += typ * 6;
        let abbrevs = b.get(p..p + chars)?;
        let mut types = Vec::with_capacity(typ);
        let mut first_standard = None;
        for (i, info) in infos.chunks_exact(6).enumerate() {
            let offset = i32::from_be_bytes(info[..4].try_into().ok()?);
            let is_dst = info[4] != 0;
            let start = usize::from(info[5]);
            let tail = abbrevs.get(start..)?;
            let end = tail.iter().position(|c| *c == 0).unwrap_or(tail.len());
            let abbrev = String::from_utf8_lossy(&tail[..end]).into_owned();
            if !is_dst && first_standard.is_none() {
                first_standard = Some(i);
            }
            types.push((offset, abbrev));
        }
        let mut transitions = Vec::with_capacity(time);
        for (t, i) in times.into_iter().zip(indices) {
            let i = usize::from(*i);
            if i >= typ {
                return None;
            }
            transitions.push((t, i));
        }
        Some(Zone {
            transitions,
            types,
            initial: first_standard.unwrap_or(0),
        })
    }

    /// The UTC offset (seconds) and abbreviation in force at `t` (seconds since the epoch).
    pub fn at(&self, t: i64) -> (i32, &str) {
        let n = self.transitions.partition_point(|(start, _)| *start <= t);
        let i = match n {
            0 => self.initial,
            n => self.transitions[n - 1].1,
        };
        let (offset, abbrev) = &self.types[i];
        (*offset, abbrev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 TZif file: standard time "AST" (-4h) switching to "ADT" (-3h) at t = 1000.
    fn sample_v1() -> Vec<u8> {
        let mut b = b"TZif".to_vec();
        b.push(0);
        b.extend([0u8; 15]);
        for c in [0u32, 0, 0, 1, 2, 8] {
            b.extend(c.to_be_bytes());
        }
        b.extend(1000i32.to_be_bytes());
        b.push(1);
        b.extend((-4 * 3600i32).to_be_bytes());
        b.extend([0, 0]);
        b.extend((-3 * 3600i32).to_be_bytes());
        b.extend([1, 4]);
        b.extend(b"AST\0ADT\0");
        b
    }

    #[test]
    fn tzif_transitions() {
        let z = Zone::from_tzif(&sample_v1()).unwrap_or_else(Zone::utc);
        assert_eq!(z.at(0), (-4 * 3600, "AST"));
        assert_eq!(z.at(999), (-4 * 3600, "AST"));
        assert_eq!(z.at(1000), (-3 * 3600, "ADT"));
        assert_eq!(z.at(i64::MAX), (-3 * 3600, "ADT"));
    }

    #[test]
    fn garbage_is_not_a_zone() {
        assert_eq!(Zone::from_tzif(b"not a zone"), None);
        let mut truncated = sample_v1();
        truncated.truncate(50);
        assert_eq!(Zone::from_tzif(&truncated), None);
    }

    #[test]
    fn system_zone_files_parse() {
        for f in [
            "/usr/share/zoneinfo/Etc/UTC",
            "/usr/share/zoneinfo/Europe/Paris",
        ] {
            let Ok(bytes) = std::fs::read(f) else {
                continue; // no tzdata here
            };
            let z = Zone::from_tzif(&bytes);
            assert!(z.is_some(), "{f}");
            if f.ends_with("Paris") {
                let z = z.unwrap_or_else(Zone::utc);
                // 2026-01-15 and 2026-07-15, noon UTC.
                assert_eq!(z.at(1_768_478_400), (3600, "CET"));
                assert_eq!(z.at(1_784_116_800), (7200, "CEST"));
            }
        }
    }
}
