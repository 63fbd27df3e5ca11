//! ACLs: the permission check, the fix-up of ACLs a client sets, and the `digest` and `ip` schemes.
//!
//! Mirrors `ZooKeeperServer.checkACL`, `PrepRequestProcessor.fixupACL`, `DigestAuthenticationProvider`
//! and `IPAuthenticationProvider`, with ZooKeeper's default provider registry (`ip` and `digest`).
//! Pure functions of their arguments; the caller supplies the connection's authenticated ids.

use base64::Engine as _;
use oxkeeper_proto::{perms, Acl, ErrorCode, Id};
use sha1::{Digest as _, Sha1};

pub const SCHEME_WORLD: &str = "world";
pub const SCHEME_AUTH: &str = "auth";
pub const SCHEME_DIGEST: &str = "digest";
pub const SCHEME_IP: &str = "ip";
pub const SCHEME_SUPER: &str = "super";
pub const ID_ANYONE: &str = "anyone";

/// The id `scheme:id`.
pub fn id(scheme: &str, id: &str) -> Id {
    Id {
        scheme: scheme.into(),
        id: id.into(),
    }
}

/// The ACL entry granting `perms` to `scheme:id`.
pub fn entry(perms: i32, scheme: &str, id: &str) -> Acl {
    Acl {
        perms,
        id: self::id(scheme, id),
    }
}

/// `world:anyone` with every permission (`ZooDefs.Ids.OPEN_ACL_UNSAFE`).
pub fn open_acl_unsafe() -> Vec<Acl> {
    vec![entry(perms::ALL, SCHEME_WORLD, ID_ANYONE)]
}

/// `world:anyone` with READ only (`ZooDefs.Ids.READ_ACL_UNSAFE`).
pub fn read_acl_unsafe() -> Vec<Acl> {
    vec![entry(perms::READ, SCHEME_WORLD, ID_ANYONE)]
}

/// The id a `digest` authentication of `user:password` yields: `user:` + base64(SHA-1(`user:password`)).
/// As in ZooKeeper, the user is the text before the first `:` (all of it if there is none), and the
/// hash covers the whole input.
pub fn digest_id(user_password: &str) -> String {
    let user = user_password
        .split_once(':')
        .map_or(user_password, |(user, _)| user);
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// The `user` whoAmI reports for an auth id (`AuthUtil.getUser`): a digest id's user name (the part
/// before the first `:`), an ip id as is, and `""` for schemes without an authentication provider
/// (`super`).
pub fn auth_user_name(id: &Id) -> String {
    match id.scheme.as_str() {
        "digest" => id.id.split(':').next().unwrap_or_default().to_owned(),
        "ip" => id.id.clone(),
        _ => String::new(),
    }
}

/// `ZooKeeperServer.checkACL`: may a connection with the ids `auth` do `perm` on a node whose ACL is `acl`?
///
/// An empty ACL allows everything, and so does any auth id of scheme `super`. Otherwise an entry sharing a
/// bit with `perm` must be `world:anyone` or match an auth id of the same scheme (`digest`: equal ids;
/// `ip`: address or CIDR match). Schemes without a provider (anything but `ip` and `digest`) never match.
pub fn check_acl(acl: &[Acl], perm: i32, auth: &[Id]) -> bool {
    if acl.is_empty() {
        return true;
    }
    if auth.iter().any(|a| a.scheme == SCHEME_SUPER) {
        return true;
    }
    acl.iter().any(|entry| {
        if entry.perms & perm == 0 {
            return false;
        }
        let id = &entry.id;
        if id.scheme == SCHEME_WORLD && id.id == ID_ANYONE {
            return true;
        }
        auth.iter()
            .any(|a| a.scheme == id.scheme && scheme_matches(&id.scheme, &a.id, &id.id))
    })
}

/// Does the authenticated id `auth_id` match the ACL expression `acl_id` under `scheme`'s provider?
fn scheme_matches(scheme: &str, auth_id: &str, acl_id: &str) -> bool {
    match scheme {
        SCHEME_DIGEST => auth_id == acl_id,
        SCHEME_IP => ip_matches(auth_id, acl_id),
        _ => false,
    }
}

/// Is there an authentication provider for `scheme`, and does it count as an authenticated identity for
/// the `auth` ACL scheme (`isAuthenticated`)? `None` when there is no provider.
fn provider_is_authenticated(scheme: &str) -> Option<bool> {
    match scheme {
        SCHEME_DIGEST => Some(true),
        SCHEME_IP => Some(false),
        _ => None,
    }
}

/// `isValid` of the scheme's provider; false when the scheme has none (`world` with an id other than
/// `anyone`, `super`, unknown schemes).
pub fn is_valid_id(scheme: &str, id: &str) -> bool {
    match scheme {
        SCHEME_DIGEST => java_split_len(id, ':') == 2,
        SCHEME_IP => ip_is_valid(id),
        _ => false,
    }
}

/// `PrepRequestProcessor.fixupACL`: drop exact duplicates, refuse an empty list, keep `world:anyone`,
/// expand `auth` into one entry per authenticated id of the caller (InvalidACL if it has none), and
/// keep any other entry only if its scheme's provider says the id is valid. Entries produced by the
/// `auth` expansion are not deduplicated again, as in ZooKeeper.
pub fn fixup_acl(acl: &[Acl], auth: &[Id]) -> Result<Vec<Acl>, ErrorCode> {
    let mut unique: Vec<&Acl> = Vec::with_capacity(acl.len());
    for a in acl {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    if unique.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut fixed = Vec::with_capacity(unique.len());
    for a in unique {
        let id = &a.id;
        if id.scheme == SCHEME_WORLD && id.id == ID_ANYONE {
            fixed.push(a.clone());
        } else if id.scheme == SCHEME_AUTH {
            let mut any = false;
            for cid in auth {
                if provider_is_authenticated(&cid.scheme) == Some(true) {
                    any = true;
                    fixed.push(Acl {
                        perms: a.perms,
                        id: cid.clone(),
                    });
                }
            }
            if !any {
                return Err(ErrorCode::InvalidAcl);
            }
        } else if is_valid_id(&id.scheme, &id.id) {
            fixed.push(a.clone());
        } else {
            return Err(ErrorCode::InvalidAcl);
        }
    }
    Ok(fixed)
}

/// The ACL getACL shows a caller without ADMIN: every `digest` id has its text from the first `:` to
/// the end of the line replaced with `:x` (Java `id.replaceAll(":.*", ":x")`).
pub fn mask_digest_ids(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| {
            if a.id.scheme == SCHEME_DIGEST {
                Acl {
                    perms: a.perms,
                    id: Id {
                        scheme: a.id.scheme.clone(),
                        id: java_mask_after_colon(&a.id.id),
                    },
                }
            } else {
                a.clone()
            }
        })
        .collect()
}

/// `s.replaceAll(":.*", ":x")`: `.` stops at Java's line terminators, and matching resumes after them.
fn java_mask_after_colon(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut skipping = false;
    for c in s.chars() {
        let line_end = matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}');
        if skipping {
            if line_end {
                skipping = false;
                out.push(c);
            }
        } else if c == ':' {
            out.push_str(":x");
            skipping = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// Length of Java's `s.split(sep)` (regex split without limit: trailing empty strings are removed).
fn java_split_len(s: &str, sep: char) -> usize {
    if s.is_empty() {
        return 1;
    }
    let parts: Vec<&str> = s.split(sep).collect();
    let trailing_empty = parts.iter().rev().take_while(|p| p.is_empty()).count();
    parts.len() - trailing_empty
}

/// Java `Integer.parseInt(s, radix)`: optional sign, at least one digit, no overflow of an i32.
fn java_parse_int(s: &str, radix: u32) -> Option<i32> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for c in digits.chars() {
        v = v * i64::from(radix) + i64::from(c.to_digit(radix)?);
        if v > i64::from(i32::MAX) + 1 {
            return None;
        }
    }
    let v = if negative { -v } else { v };
    i32::try_from(v).ok()
}

/// `IPAuthenticationProvider.addr2Bytes`: IPv6 if the text has a `:`, else IPv4 if it has a `.`.
fn addr_to_bytes(addr: &str) -> Option<Vec<u8>> {
    if addr.contains(':') {
        v6_to_bytes(addr)
    } else if addr.contains('.') {
        v4_to_bytes(addr)
    } else {
        None
    }
}

fn v4_to_bytes(addr: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = addr.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    parts
        .iter()
        .map(|p| java_parse_int(p, 10).and_then(|v| u8::try_from(v).ok()))
        .collect()
}

fn v6_to_bytes(addr: &str) -> Option<Vec<u8>> {
    const SEGMENTS: usize = 8;
    let halves: Vec<&str> = addr.split("::").collect();
    let split = |s: &str| -> Vec<String> { s.split(':').map(str::to_owned).collect() };
    let (first, second) = match halves.as_slice() {
        [one] => {
            let first = split(one);
            if first.len() != SEGMENTS {
                return None;
            }
            (first, Vec::new())
        }
        [a, b] => {
            let first = if a.is_empty() { Vec::new() } else { split(a) };
            let second = if b.is_empty() { Vec::new() } else { split(b) };
            if first.len() + second.len() >= SEGMENTS {
                return None;
            }
            (first, second)
        }
        _ => return None,
    };
    let mut out = vec![0u8; 2 * SEGMENTS];
    let mut put = |at: usize, segments: &[String]| -> Option<()> {
        for (k, seg) in segments.iter().enumerate() {
            if seg.is_empty() || seg.chars().count() > 4 {
                return None;
            }
            let v = java_parse_int(seg, 16)?;
            out[at + 2 * k] = ((v >> 8) & 0xff) as u8;
            out[at + 2 * k + 1] = (v & 0xff) as u8;
        }
        Some(())
    };
    put(0, &first)?;
    put(2 * SEGMENTS - 2 * second.len(), &second)?;
    Some(out)
}

/// Keeps the first `bits` bits of `b`, zeroing the rest.
fn mask_bits(b: &mut [u8], bits: usize) {
    let start = bits / 8;
    let keep = bits % 8;
    if let Some(first) = b.get_mut(start) {
        *first &= !(0xffu8.checked_shr(keep as u32).unwrap_or(0));
    }
    for byte in b.iter_mut().skip(start + 1) {
        *byte = 0;
    }
}

/// The address and prefix length of an `ip` ACL expression (`10.0.0.0/8`, `::1`, `1.2.3.4`).
fn parse_ip_expr(expr: &str) -> Option<(Vec<u8>, usize)> {
    let (addr, bits) = match expr.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (expr, None),
    };
    let bytes = addr_to_bytes(addr)?;
    let max = bytes.len() * 8;
    let bits = match bits {
        None => max,
        Some(b) => {
            let b = usize::try_from(java_parse_int(b, 10)?).ok()?;
            if b > max {
                return None;
            }
            b
        }
    };
    Some((bytes, bits))
}

fn ip_is_valid(expr: &str) -> bool {
    parse_ip_expr(expr).is_some()
}

/// `IPAuthenticationProvider.matches`: does the client address `id` fall in the ACL's `expr`
/// (an address, or an address with a CIDR prefix length)? IPv4 never matches IPv6.
pub fn ip_matches(id: &str, expr: &str) -> bool {
    let Some((mut acl_addr, bits)) = parse_ip_expr(expr) else {
        return false;
    };
    mask_bits(&mut acl_addr, bits);
    let Some(mut remote) = addr_to_bytes(id) else {
        return false;
    };
    mask_bits(&mut remote, bits);
    remote == acl_addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(perms: i32, scheme: &str, i: &str) -> Acl {
        entry(perms, scheme, i)
    }

    #[test]
    fn digest_matches_zookeeper_examples() {
        assert_eq!(
            digest_id("user:password"),
            "user:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY="
        );
        assert_eq!(
            digest_id("super:admin"),
            "super:xQJmxLMiHGwaqBvst5y6rkB6HQs="
        );
        // No colon: the whole text is the user, and the hash covers it.
        assert!(digest_id("nocolon").starts_with("nocolon:"));
        // Only the first colon splits.
        assert!(digest_id("a:b:c").starts_with("a:"));
    }

    #[test]
    fn empty_acl_allows_everything() {
        assert!(check_acl(&[], perms::ADMIN, &[]));
    }

    #[test]
    fn super_allows_everything() {
        let a = [acl(perms::READ, "digest", "u:x")];
        assert!(check_acl(&a, perms::ADMIN, &[id("super", "")]));
        assert!(!check_acl(&a, perms::ADMIN, &[id("digest", "u:x")]));
    }

    #[test]
    fn world_anyone_needs_a_shared_permission_bit() {
        let a = read_acl_unsafe();
        assert!(check_acl(&a, perms::READ, &[]));
        assert!(!check_acl(&a, perms::WRITE, &[]));
        assert!(check_acl(&a, perms::READ | perms::ADMIN, &[]));
        let a = open_acl_unsafe();
        assert!(check_acl(&a, perms::DELETE, &[]));
    }

    #[test]
    fn world_with_another_id_never_matches() {
        let a = [acl(perms::ALL, "world", "someone")];
        assert!(!check_acl(&a, perms::READ, &[id("world", "someone")]));
    }

    #[test]
    fn digest_scheme_matches_equal_ids_only() {
        let d = digest_id("user:password");
        let a = [acl(perms::ALL, "digest", &d)];
        assert!(check_acl(
            &a,
            perms::WRITE,
            &[id("ip", "1.2.3.4"), id("digest", &d)]
        ));
        assert!(!check_acl(
            &a,
            perms::WRITE,
            &[id("digest", &digest_id("user:other"))]
        ));
        // Same id text under another scheme does not count.
        assert!(!check_acl(&a, perms::WRITE, &[id("ip", &d)]));
    }

    #[test]
    fn unknown_schemes_never_match() {
        let a = [acl(perms::ALL, "x509", "CN=a")];
        assert!(!check_acl(&a, perms::READ, &[id("x509", "CN=a")]));
    }

    #[test]
    fn ip_scheme_matches_addresses_and_cidr() {
        assert!(ip_matches("10.1.2.3", "10.0.0.0/8"));
        assert!(!ip_matches("11.1.2.3", "10.0.0.0/8"));
        assert!(ip_matches("127.0.0.1", "127.0.0.1"));
        assert!(!ip_matches("127.0.0.2", "127.0.0.1"));
        assert!(ip_matches("192.168.1.77", "192.168.1.64/26"));
        assert!(!ip_matches("192.168.1.128", "192.168.1.64/26"));
        assert!(ip_matches("1.2.3.4", "0.0.0.0/0"));
        assert!(ip_matches("::1", "::1"));
        assert!(ip_matches("0:0:0:0:0:0:0:1", "::1"));
        assert!(ip_matches("fe80::1:2", "fe80::/16"));
        assert!(!ip_matches("fe81::1", "fe80::/16"));
        assert!(!ip_matches("::1", "0.0.0.0/0"));
        assert!(!ip_matches("1.2.3.4", "::/0"));
        assert!(!ip_matches("1.2.3.4", "1.2.3.4/33"));
        assert!(!ip_matches("1.2.3.4", "1.2.3.4/x"));
        assert!(!ip_matches("1.2.3", "1.2.3.0/24"));
        assert!(!ip_matches("localhost", "1.2.3.4"));
        let a = [acl(perms::READ, "ip", "10.0.0.0/8")];
        assert!(check_acl(&a, perms::READ, &[id("ip", "10.9.9.9")]));
        assert!(!check_acl(&a, perms::READ, &[id("ip", "192.168.0.1")]));
    }

    #[test]
    fn ip_validity_follows_zookeeper() {
        for ok in [
            "1.2.3.4",
            "10.0.0.0/8",
            "::1",
            "fe80::/10",
            "1:2:3:4:5:6:7:8",
            "1.2.3.4/0",
        ] {
            assert!(is_valid_id("ip", ok), "{ok}");
        }
        for bad in [
            "1.2.3",
            "1.2.3.256",
            "1.2.3.4/33",
            "1.2.3.4/-1",
            "host",
            "1:2:3",
            "1::2::3",
            "1:2:3:4:5:6:7::8",
            "12345::",
            "g::",
        ] {
            assert!(!is_valid_id("ip", bad), "{bad}");
        }
    }

    #[test]
    fn who_am_i_user_names_follow_the_providers() {
        assert_eq!(auth_user_name(&id("digest", &digest_id("u1:p1"))), "u1");
        assert_eq!(
            auth_user_name(&id("digest", &digest_id("nocolon"))),
            "nocolon"
        );
        assert_eq!(auth_user_name(&id("digest", &digest_id(""))), "");
        assert_eq!(auth_user_name(&id("ip", "127.0.0.1")), "127.0.0.1");
        // No provider for `super`: ZooKeeper reports an empty user.
        assert_eq!(auth_user_name(&id("super", "")), "");
    }

    #[test]
    fn digest_id_validity_needs_exactly_two_parts() {
        assert!(is_valid_id("digest", "user:hash"));
        assert!(is_valid_id("digest", ":hash"));
        // Java's split drops trailing empty strings.
        assert!(is_valid_id("digest", "user:hash:"));
        assert!(!is_valid_id("digest", "user:"));
        assert!(!is_valid_id("digest", "user"));
        assert!(!is_valid_id("digest", "a:b:c"));
        assert!(!is_valid_id("digest", ""));
    }

    #[test]
    fn fixup_refuses_empty_and_dedupes() {
        assert_eq!(fixup_acl(&[], &[]), Err(ErrorCode::InvalidAcl));
        let a = open_acl_unsafe();
        let doubled = [a[0].clone(), a[0].clone()];
        assert_eq!(fixup_acl(&doubled, &[]), Ok(a));
    }

    #[test]
    fn fixup_expands_auth_to_authenticated_ids_only() {
        let auth = [id("ip", "1.2.3.4"), id("digest", "u:h"), id("super", "")];
        let fixed = fixup_acl(&[acl(perms::ALL, "auth", "")], &auth);
        assert_eq!(fixed, Ok(vec![acl(perms::ALL, "digest", "u:h")]));
        // Only an ip id: nothing authenticated.
        assert_eq!(
            fixup_acl(&[acl(perms::ALL, "auth", "")], &[id("ip", "1.2.3.4")]),
            Err(ErrorCode::InvalidAcl)
        );
    }

    #[test]
    fn fixup_validates_ids() {
        assert_eq!(
            fixup_acl(&[acl(perms::ALL, "digest", "nocolon")], &[]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup_acl(&[acl(perms::ALL, "ip", "1.2.3")], &[]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup_acl(&[acl(perms::ALL, "world", "someone")], &[]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(
            fixup_acl(&[acl(perms::ALL, "super", "")], &[]),
            Err(ErrorCode::InvalidAcl)
        );
        let good = [
            acl(perms::READ, "ip", "10.0.0.0/8"),
            acl(perms::ALL, "digest", "u:h"),
        ];
        assert_eq!(fixup_acl(&good, &[]), Ok(good.to_vec()));
    }

    #[test]
    fn masking_replaces_everything_after_the_first_colon() {
        let a = [
            acl(perms::ALL, "digest", "user:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY="),
            acl(perms::READ, "ip", "1.2.3.4"),
            acl(perms::READ, "digest", "a:b:c"),
            acl(perms::READ, "digest", "a:b\nc:d"),
        ];
        let m = mask_digest_ids(&a);
        assert_eq!(m[0].id.id, "user:x");
        assert_eq!(m[1], a[1]);
        assert_eq!(m[2].id.id, "a:x");
        assert_eq!(m[3].id.id, "a:x\nc:x");
    }

    #[test]
    fn java_int_parsing() {
        assert_eq!(java_parse_int("+10", 10), Some(10));
        assert_eq!(java_parse_int("-0", 10), Some(0));
        assert_eq!(java_parse_int("", 10), None);
        assert_eq!(java_parse_int("-", 10), None);
        assert_eq!(java_parse_int("ffff", 16), Some(0xffff));
        assert_eq!(java_parse_int("99999999999", 10), None);
        assert_eq!(java_parse_int("-2147483648", 10), Some(i32::MIN));
    }
}
