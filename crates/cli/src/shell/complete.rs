//! Tab completion for the interactive shell: the first word completes to a command name, a word starting with
//! `/` to a znode path, by listing its parent's children on the server (as zkCli's `JLineZNodeCompleter`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxkeeper_client::Client;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::commands::COMMANDS;

/// How long a completion waits for the server's list of children.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// The rustyline helper: completes from the shell's current session.
pub struct ShellHelper {
    pub client: Arc<Mutex<Option<Client>>>,
    pub runtime: tokio::runtime::Handle,
}

impl ShellHelper {
    fn children(&self, dir: &str) -> Option<Vec<String>> {
        let client = self.client.lock().ok()?.clone()?;
        let listed = self
            .runtime
            .block_on(async { tokio::time::timeout(LIST_TIMEOUT, client.get_children(dir)).await });
        listed.ok()?.ok()
    }
}

/// Completions of `line` with the cursor at byte `pos`: where the replaced word starts and the replacements.
/// `children` lists a znode's children (`None` if it cannot).
pub fn complete_line(
    line: &str,
    pos: usize,
    children: impl Fn(&str) -> Option<Vec<String>>,
) -> (usize, Vec<String>) {
    let before = line.get(..pos).unwrap_or(line);
    let start = before.rfind(' ').map_or(0, |i| i + 1);
    let word = &before[start..];
    if word.starts_with('/') {
        let slash = word.rfind('/').unwrap_or(0);
        let dir = if slash == 0 { "/" } else { &word[..slash] };
        let prefix = &word[slash + 1..];
        let mut found: Vec<String> = children(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .collect();
        found.sort();
        return (start + slash + 1, found);
    }
    if before[..start].trim().is_empty() {
        let found = COMMANDS
            .iter()
            .filter(|c| c.name.starts_with(word))
            .map(|c| format!("{} ", c.name))
            .collect();
        return (start, found);
    }
    (pos, Vec::new())
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = complete_line(line, pos, |dir| self.children(dir));
        let pairs = found
            .into_iter()
            .map(|r| Pair {
                display: r.trim_end().to_string(),
                replacement: r,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &str) -> Option<Vec<String>> {
        match dir {
            "/" => Some(vec!["abc".into(), "abd".into(), "zookeeper".into()]),
            "/abc" => Some(vec!["x1".into(), "x2".into()]),
            _ => None,
        }
    }

    #[test]
    fn completes_command_names_at_the_start() {
        assert_eq!(
            complete_line("getA", 4, tree),
            (0, vec!["getAcl ".into(), "getAllChildrenNumber ".into()])
        );
        assert_eq!(complete_line("  qu", 4, tree), (2, vec!["quit ".into()]));
        assert_eq!(complete_line("ls qu", 5, tree), (5, vec![]));
    }

    #[test]
    fn completes_paths_from_the_parents_children() {
        assert_eq!(
            complete_line("ls /ab", 6, tree),
            (4, vec!["abc".into(), "abd".into()])
        );
        assert_eq!(
            complete_line("ls /abc/", 8, tree),
            (8, vec!["x1".into(), "x2".into()])
        );
        assert_eq!(
            complete_line("get -s /abc/x2", 14, tree),
            (12, vec!["x2".into()])
        );
        assert_eq!(complete_line("ls /nope/a", 10, tree), (9, vec![]));
        assert_eq!(
            complete_line("ls /z", 5, tree),
            (4, vec!["zookeeper".into()])
        );
    }
}
