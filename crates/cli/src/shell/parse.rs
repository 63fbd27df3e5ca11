//! Turning text into commands, as zkCli 3.8 does: the invocation's single-dash options, a command line's
//! words (quotes as zkCli's `ARGS_PATTERN`), a command's flags (Apache commons-cli's `DefaultParser`: flags
//! anywhere, bundled `-sw`, attached values `-v5`, `--` ends them), ACL strings and znode path checks.
//! Pure functions, no I/O: the shell prints what they return.

use std::time::Duration;

use oxkeeper_client::{perms, Acl, Id};

/// The server zkCli connects to when `-server` is not given.
pub const DEFAULT_SERVER: &str = "127.0.0.1:2181";
/// zkCli's default `-timeout`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// `oxkeeper shell [-server host:port,...[/chroot]] [-timeout ms] [-r] [-waitforconnection] [cmd args...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub server: String,
    pub timeout: Duration,
    pub read_only: bool,
    pub wait_for_connection: bool,
    /// The command to run instead of a session of commands read from stdin.
    pub command: Option<Vec<String>>,
    /// Options zkCli accepts that this shell ignores, to warn about.
    pub ignored: Vec<String>,
}

/// What the invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Invocation),
    Help,
}

/// Parses the arguments after `shell`. Like zkCli, the first word that does not start with `-` begins the
/// command, and every word after it belongs to the command.
pub fn invocation(args: &[String]) -> Result<Parsed, String> {
    let mut inv = Invocation {
        server: DEFAULT_SERVER.to_string(),
        timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        read_only: false,
        wait_for_connection: false,
        command: None,
        ignored: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(opt) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("no argument found for option {name}"))
        };
        match opt.as_str() {
            "-server" => inv.server = value("-server")?,
            "-timeout" => {
                let v = value("-timeout")?;
                let ms: u64 = v
                    .parse()
                    .ok()
                    .filter(|ms| *ms > 0 && *ms <= i32::MAX as u64)
                    .ok_or_else(|| {
                        format!("-timeout wants a positive number of milliseconds, not {v:?}")
                    })?;
                inv.timeout = Duration::from_millis(ms);
            }
            "-r" => inv.read_only = true,
            "-waitforconnection" => inv.wait_for_connection = true,
            "-h" | "-help" | "--help" => return Ok(Parsed::Help),
            "-client-configuration" => {
                let v = value("-client-configuration")?;
                inv.ignored.push(format!("-client-configuration {v}"));
            }
            o if o.starts_with('-') => inv.ignored.push(o.to_string()),
            _ => {
                let mut cmd = vec![opt.clone()];
                cmd.extend(it.cloned());
                inv.command = Some(cmd);
                break;
            }
        }
    }
    Ok(Parsed::Run(inv))
}

/// Splits a command line into words as zkCli does: a word is a run of non-blanks not starting with a quote, or
/// a `"..."` / `'...'` string (quotes removed). An unbalanced quote is dropped. A line of blanks has no words.
pub fn words(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let is_blank = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r');
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if is_blank(chars[i]) {
            i += 1;
            continue;
        }
        let c = chars[i];
        if c == '"' || c == '\'' {
            match chars[i + 1..].iter().position(|&x| x == c) {
                Some(len) => {
                    out.push(chars[i + 1..i + 1 + len].iter().collect());
                    i += len + 2;
                }
                // zkCli's pattern cannot match here and moves on one character.
                None => i += 1,
            }
            continue;
        }
        let start = i;
        while i < chars.len() && !is_blank(chars[i]) {
            i += 1;
        }
        out.push(chars[start..i].iter().collect());
    }
    out
}

/// One flag a command knows: its letter and whether it takes a value.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub letter: char,
    pub takes_value: bool,
}

/// Flags without a value.
pub const fn flag(letter: char) -> Flag {
    Flag {
        letter,
        takes_value: false,
    }
}

/// Flags with a value.
pub const fn valued(letter: char) -> Flag {
    Flag {
        letter,
        takes_value: true,
    }
}

/// A command's words sorted into flags and arguments. `args[0]` is the command name, as in zkCli.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub args: Vec<String>,
    flags: Vec<(char, Option<String>)>,
}

impl Options {
    pub fn has(&self, letter: char) -> bool {
        self.flags.iter().any(|(l, _)| *l == letter)
    }

    /// The value of a flag that takes one (the first, if given twice).
    pub fn value(&self, letter: char) -> Option<&str> {
        self.flags
            .iter()
            .find(|(l, _)| *l == letter)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Sorts `words` into flags and arguments the way commons-cli's `DefaultParser` does for zkCli's commands.
/// The error is the message zkCli prints.
pub fn options(spec: &[Flag], words: &[String]) -> Result<Options, String> {
    let find = |c: char| spec.iter().find(|f| f.letter == c).copied();
    let unrecognized = |w: &str| {
        format!("org.apache.commons.cli.UnrecognizedOptionException: Unrecognized option: {w}")
    };
    let missing = |c: char| {
        format!("org.apache.commons.cli.MissingArgumentException: Missing argument for option: {c}")
    };
    // Whether a word is one of the flags (then it cannot be a flag's value).
    let is_flag = |w: &str| {
        w.len() >= 2
            && w.starts_with('-')
            && w[1..].chars().next().is_some_and(|c| find(c).is_some())
    };
    // commons-cli lets a flag's value look like a flag when it is a number (`-v -1`).
    let is_number = |w: &str| w.parse::<f64>().is_ok();

    let mut out = Options::default();
    // A flag still waiting for its value.
    let mut pending: Option<char> = None;
    let mut rest_are_args = false;
    for w in words {
        if rest_are_args {
            out.args.push(w.clone());
            continue;
        }
        if w == "--" {
            if let Some(letter) = pending {
                return Err(missing(letter));
            }
            rest_are_args = true;
            continue;
        }
        if let Some(letter) = pending {
            if !is_flag(w) || is_number(w) {
                out.flags
                    .push((letter, Some(strip_double_quotes(w).to_string())));
                pending = None;
                continue;
            }
        }
        if !w.starts_with('-') || w == "-" {
            if let Some(letter) = pending {
                return Err(missing(letter));
            }
            out.args.push(w.clone());
            continue;
        }
        // A new flag: the previous one must have had its value.
        if let Some(letter) = pending.take() {
            return Err(missing(letter));
        }
        if w.starts_with("--") {
            return Err(unrecognized(w));
        }
        let body = &w[1..];
        let mut chars = body.chars();
        let first = chars
            .next()
            .expect("a word of 2+ characters starting with '-'");
        let rest = chars.as_str();
        if let Some((name, value)) = body.split_once('=') {
            // -v=5
            match (name.chars().count(), find(first)) {
                (1, Some(f)) if f.takes_value => out.flags.push((first, Some(value.to_string()))),
                _ => return Err(unrecognized(w)),
            }
            continue;
        }
        match find(first) {
            None => return Err(unrecognized(w)),
            Some(f) if f.takes_value => {
                if rest.is_empty() {
                    pending = Some(first);
                } else {
                    // -v5
                    out.flags.push((first, Some(rest.to_string())));
                }
            }
            Some(_) => {
                // -s or bundled flags -sw; a flag with a value takes the rest of the word.
                out.flags.push((first, None));
                for (i, c) in rest.char_indices() {
                    match find(c) {
                        None => return Err(unrecognized(w)),
                        Some(f) if f.takes_value => {
                            let value = &rest[i + c.len_utf8()..];
                            if value.is_empty() {
                                pending = Some(c);
                            } else {
                                out.flags.push((c, Some(value.to_string())));
                            }
                            break;
                        }
                        Some(_) => out.flags.push((c, None)),
                    }
                }
            }
        }
    }
    if let Some(letter) = pending {
        return Err(missing(letter));
    }
    Ok(out)
}

/// commons-cli removes one pair of double quotes around a flag's value.
fn strip_double_quotes(w: &str) -> &str {
    match w.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) if !inner.contains('"') => inner,
        _ => w,
    }
}

/// A parsed ACL string and the complaints zkCli prints (to stderr) about the parts it skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAcl {
    pub acl: Vec<Acl>,
    pub complaints: Vec<String>,
}

/// `scheme:id:perms[,scheme:id:perms...]` as zkCli's `AclParser`: the id is everything between the first and the
/// last colon; unknown permission letters and malformed entries are skipped with a complaint.
pub fn acl(text: &str) -> ParsedAcl {
    let mut parts: Vec<&str> = text.split(',').collect();
    // Java's String.split drops trailing empty strings (but keeps a lone one).
    while parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    let mut out = ParsedAcl {
        acl: Vec::new(),
        complaints: Vec::new(),
    };
    for a in parts {
        let (Some(first), Some(last)) = (a.find(':'), a.rfind(':')) else {
            out.complaints
                .push(format!("{a} does not have the form scheme:id:perm"));
            continue;
        };
        if first == last {
            out.complaints
                .push(format!("{a} does not have the form scheme:id:perm"));
            continue;
        }
        let mut p = 0;
        for c in a[last + 1..].chars() {
            match c {
                'r' => p |= perms::READ,
                'w' => p |= perms::WRITE,
                'c' => p |= perms::CREATE,
                'd' => p |= perms::DELETE,
                'a' => p |= perms::ADMIN,
                other => out.complaints.push(format!("Unknown perm type: {other}")),
            }
        }
        out.acl.push(Acl {
            perms: p,
            id: Id {
                scheme: a[..first].to_string(),
                id: a[first + 1..last].to_string(),
            },
        });
    }
    out
}

/// Checks a znode path as the Java client's `PathUtils.validatePath` does (a sequential create's path is checked
/// with a `1` appended). The error is the Java message zkCli prints.
pub fn check_path(path: &str, sequential: bool) -> Result<(), String> {
    if sequential {
        return check_path(&format!("{path}1"), false);
    }
    if path.is_empty() {
        return Err("Path length must be > 0".into());
    }
    if !path.starts_with('/') {
        return Err("Path must start with / character".into());
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err("Path must not end with / character".into());
    }
    // Java indexes UTF-16 code units; so do the positions in the messages.
    let units: Vec<u16> = path.encode_utf16().collect();
    let dot = u16::from(b'.');
    let slash = u16::from(b'/');
    let mut reason = None;
    for i in 1..units.len() {
        let (c, last) = (units[i], units[i - 1]);
        let ends_component = i + 1 == units.len() || units[i + 1] == slash;
        if c == 0 {
            reason = Some(format!("null character not allowed @{i}"));
        } else if c == slash && last == slash {
            reason = Some(format!("empty node name specified @{i}"));
        } else if c == dot && last == dot {
            if units[i - 2] == slash && ends_component {
                reason = Some(format!("relative paths not allowed @{i}"));
            }
        } else if c == dot {
            if last == slash && ends_component {
                reason = Some(format!("relative paths not allowed @{i}"));
            }
        } else if (0x01..=0x1f).contains(&c)
            || (0x7f..=0x9f).contains(&c)
            || (0xd800..=0xf8ff).contains(&c)
            || c >= 0xfff0
        {
            reason = Some(format!("invalid character @{i}"));
        }
        if reason.is_some() {
            break;
        }
    }
    match reason {
        None => Ok(()),
        Some(r) => Err(format!("Invalid path string \"{path}\" caused by {r}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn invocation_takes_zkcli_options_then_the_command() {
        let Ok(Parsed::Run(inv)) = invocation(&s(&[
            "-server",
            "h:1,h:2/app",
            "-timeout",
            "5000",
            "-r",
            "ls",
            "-s",
            "/",
        ])) else {
            panic!("not parsed");
        };
        assert_eq!(inv.server, "h:1,h:2/app");
        assert_eq!(inv.timeout, Duration::from_millis(5000));
        assert!(inv.read_only && !inv.wait_for_connection);
        assert_eq!(inv.command, Some(s(&["ls", "-s", "/"])));
    }

    #[test]
    fn invocation_defaults_and_errors() {
        let Ok(Parsed::Run(inv)) = invocation(&[]) else {
            panic!("not parsed");
        };
        assert_eq!(inv.server, DEFAULT_SERVER);
        assert_eq!(inv.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!(inv.command, None);
        assert_eq!(invocation(&s(&["--help"])), Ok(Parsed::Help));
        assert!(invocation(&s(&["-server"])).is_err());
        assert!(invocation(&s(&["-timeout", "soon"])).is_err());
        assert!(invocation(&s(&["-timeout", "0"])).is_err());
        let Ok(Parsed::Run(inv)) = invocation(&s(&["-waitforconnection", "-bogus", "quit"])) else {
            panic!("not parsed");
        };
        assert!(inv.wait_for_connection);
        assert_eq!(inv.ignored, s(&["-bogus"]));
    }

    #[test]
    fn words_split_like_zkcli() {
        assert_eq!(words("  ls   /a  "), s(&["ls", "/a"]));
        assert_eq!(
            words(r#"set /a "hello world""#),
            s(&["set", "/a", "hello world"])
        );
        assert_eq!(words("set /a 'x y' z"), s(&["set", "/a", "x y", "z"]));
        assert_eq!(words(r#"set /a a"b c""#), s(&["set", "/a", "a\"b", "c\""]));
        assert_eq!(words(r#"create /q2 "" x"#), s(&["create", "/q2", "", "x"]));
        assert_eq!(words(r#"set /a "abc"#), s(&["set", "/a", "abc"]));
        assert!(words(" \t ").is_empty());
    }

    const SET: &[Flag] = &[flag('s'), valued('v')];

    fn opts(spec: &[Flag], w: &[&str]) -> Result<Options, String> {
        options(spec, &s(w))
    }

    #[test]
    fn options_anywhere_bundled_and_attached() {
        let o = opts(SET, &["set", "/a", "-s", "-v", "3", "data"]).unwrap_or_default();
        assert_eq!(o.args, s(&["set", "/a", "data"]));
        assert!(o.has('s'));
        assert_eq!(o.value('v'), Some("3"));
        let o = opts(SET, &["set", "-v5", "/a", "x"]).unwrap_or_default();
        assert_eq!(o.value('v'), Some("5"));
        let o = opts(SET, &["set", "-sv", "7", "/a", "x"]).unwrap_or_default();
        assert!(o.has('s'));
        assert_eq!(o.value('v'), Some("7"));
        let o = opts(SET, &["set", "-v", "-1", "/a", "x"]).unwrap_or_default();
        assert_eq!(o.value('v'), Some("-1"));
        let o = opts(SET, &["set", "/a", "--", "-z"]).unwrap_or_default();
        assert_eq!(o.args, s(&["set", "/a", "-z"]));
        let o = opts(SET, &["set", "/a", "-"]).unwrap_or_default();
        assert_eq!(o.args, s(&["set", "/a", "-"]));
    }

    #[test]
    fn options_errors_read_as_commons_cli() {
        assert_eq!(
            opts(SET, &["set", "/a", "-x"]),
            Err(
                "org.apache.commons.cli.UnrecognizedOptionException: Unrecognized option: -x"
                    .into()
            )
        );
        assert_eq!(
            opts(SET, &["set", "/a", "-1"]),
            Err(
                "org.apache.commons.cli.UnrecognizedOptionException: Unrecognized option: -1"
                    .into()
            )
        );
        assert_eq!(
            opts(SET, &["set", "-v"]),
            Err(
                "org.apache.commons.cli.MissingArgumentException: Missing argument for option: v"
                    .into()
            )
        );
        assert_eq!(
            opts(SET, &["set", "-v", "-s", "/a", "x"]),
            Err(
                "org.apache.commons.cli.MissingArgumentException: Missing argument for option: v"
                    .into()
            )
        );
        assert!(opts(SET, &["set", "--long"]).is_err());
        assert!(opts(SET, &["set", "-sx"]).is_err());
    }

    #[test]
    fn acl_strings() {
        let p = acl("world:anyone:cdrwa,digest:u:abc=:r");
        assert!(p.complaints.is_empty());
        assert_eq!(p.acl.len(), 2);
        assert_eq!(p.acl[0].perms, perms::ALL);
        assert_eq!(p.acl[1].id.scheme, "digest");
        assert_eq!(p.acl[1].id.id, "u:abc=");
        assert_eq!(p.acl[1].perms, perms::READ);
        let p = acl("foo");
        assert!(p.acl.is_empty());
        assert_eq!(
            p.complaints,
            vec!["foo does not have the form scheme:id:perm"]
        );
        let p = acl("world:anyone:rq,");
        assert_eq!(p.acl.len(), 1);
        assert_eq!(p.complaints, vec!["Unknown perm type: q"]);
        let p = acl("ip:127.0.0.1:");
        assert_eq!(p.acl[0].perms, 0);
        assert_eq!(p.acl[0].id.id, "127.0.0.1");
    }

    #[test]
    fn paths_checked_with_java_messages() {
        assert_eq!(check_path("/", false), Ok(()));
        assert_eq!(check_path("/a/b.c/..d", false), Ok(()));
        assert_eq!(check_path("/", true), Ok(()));
        assert_eq!(check_path("/a/", true), Ok(()));
        assert_eq!(check_path("", false), Err("Path length must be > 0".into()));
        assert_eq!(
            check_path("a", false),
            Err("Path must start with / character".into())
        );
        assert_eq!(
            check_path("/a/", false),
            Err("Path must not end with / character".into())
        );
        assert_eq!(
            check_path("/..", false),
            Err("Invalid path string \"/..\" caused by relative paths not allowed @2".into())
        );
        assert_eq!(
            check_path("/a/./b", false),
            Err("Invalid path string \"/a/./b\" caused by relative paths not allowed @3".into())
        );
        assert_eq!(
            check_path("/a//b", false),
            Err("Invalid path string \"/a//b\" caused by empty node name specified @3".into())
        );
        assert_eq!(
            check_path("/a\u{1}", false),
            Err("Invalid path string \"/a\u{1}\" caused by invalid character @2".into())
        );
        assert!(check_path("/\u{1F600}", false).is_err());
    }
}
