//! Znode path rules, exactly as ZooKeeper applies them.
//!
//! `validate_path` is `PathUtils.validatePath`; `parent_of` is ZooKeeper's
//! `path.substring(0, path.lastIndexOf('/'))` with the empty string read as the root, which is how
//! ZooKeeper's node map resolves it. Pure functions, no allocation.

use oxkeeper_proto::ErrorCode;

/// The root and the three nodes ZooKeeper creates itself; none of them can be deleted.
pub const ROOT: &str = "/";
pub const ZOOKEEPER: &str = "/zookeeper";
pub const QUOTA: &str = "/zookeeper/quota";
pub const CONFIG: &str = "/zookeeper/config";

/// `PathUtils.validatePath`: BadArguments unless `path` is absolute, has no trailing `/` (except the
/// root), no empty, `.` or `..` component, no NUL and no character ZooKeeper refuses.
///
/// ZooKeeper looks at UTF-16 units, so a character outside the Basic Multilingual Plane (a surrogate
/// pair in Java, inside the refused U+D800–U+F8FF range) is refused too.
pub fn validate_path(path: &str) -> Result<(), ErrorCode> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(ErrorCode::BadArguments);
    }
    if bytes.len() == 1 {
        return Ok(());
    }
    if bytes.last() == Some(&b'/') {
        return Err(ErrorCode::BadArguments);
    }
    // Every rule below is about a component, so check component by component.
    for component in path[1..].split('/') {
        match component {
            "" | "." | ".." => return Err(ErrorCode::BadArguments),
            _ => {}
        }
        if component.chars().any(refused_char) {
            return Err(ErrorCode::BadArguments);
        }
    }
    Ok(())
}

fn refused_char(c: char) -> bool {
    let c = u32::from(c);
    c == 0
        || (0x01..=0x1f).contains(&c)
        || (0x7f..=0x9f).contains(&c)
        || (0xd800..=0xf8ff).contains(&c)
        || (0xfff0..=0xffff).contains(&c)
        || c > 0xffff
}

/// The parent of `path` as ZooKeeper computes it: everything before the last `/`, the root when that
/// is empty. `None` when `path` has no `/` at all. Note `parent_of("/") == Some("/")`: ZooKeeper maps
/// the empty parent of the root to the root itself, which is why creating `/` answers NodeExists.
pub fn parent_of(path: &str) -> Option<&str> {
    let last = path.rfind('/')?;
    Some(if last == 0 { ROOT } else { &path[..last] })
}

/// The last component of `path` (what the parent stores as the child's name).
pub fn child_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `DataTree.isSpecialPath`: the nodes ZooKeeper refuses to delete.
pub fn is_special_path(path: &str) -> bool {
    matches!(path, ROOT | ZOOKEEPER | QUOTA | CONFIG)
}

/// The path itself, then each ancestor up to and including the root (`PathParentIterator`).
pub fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = if path.is_empty() { None } else { Some(path) };
    std::iter::from_fn(move || {
        let current = next?;
        next = if current == ROOT {
            None
        } else {
            parent_of(current)
        };
        Some(current)
    })
}

/// `child` joined under `parent`.
pub fn join(parent: &str, child: &str) -> String {
    if parent == ROOT {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths_pass() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/zookeeper",
            "/a.b",
            "/...",
            "/a/.b",
            "/a/b..",
            "/é",
            "/\u{a0}",
            "/\u{ffef}",
            "/\u{f900}",
        ] {
            assert_eq!(validate_path(p), Ok(()), "{p:?}");
        }
    }

    #[test]
    fn invalid_paths_are_bad_arguments() {
        for p in [
            "",
            "a",
            "a/b",
            "/a/",
            "//",
            "/a//b",
            "/.",
            "/..",
            "/a/.",
            "/a/..",
            "/./a",
            "/../a",
            "/a\0b",
            "/a\u{1}",
            "/a\u{1f}",
            "/a\u{7f}",
            "/a\u{9f}",
            "/a\u{e000}",
            "/a\u{f8ff}",
            "/a\u{fff0}",
            "/a\u{ffff}",
            "/a\u{fffd}",
            "/a\u{1f600}",
        ] {
            assert_eq!(validate_path(p), Err(ErrorCode::BadArguments), "{p:?}");
        }
    }

    #[test]
    fn parent_follows_zookeeper_last_slash_rule() {
        assert_eq!(parent_of("/a"), Some("/"));
        assert_eq!(parent_of("/a/b"), Some("/a"));
        assert_eq!(parent_of("/a/"), Some("/a"));
        assert_eq!(parent_of("/"), Some("/"));
        assert_eq!(parent_of("a"), None);
        assert_eq!(child_name("/a/b"), "b");
        assert_eq!(child_name("/a"), "a");
    }

    #[test]
    fn special_paths() {
        for p in ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"] {
            assert!(is_special_path(p));
        }
        assert!(!is_special_path("/zookeeper/other"));
        assert!(!is_special_path("/a"));
    }

    #[test]
    fn ancestors_walk_to_the_root() {
        let v: Vec<_> = self_and_ancestors("/a/b/c").collect();
        assert_eq!(v, ["/a/b/c", "/a/b", "/a", "/"]);
        let v: Vec<_> = self_and_ancestors("/").collect();
        assert_eq!(v, ["/"]);
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
