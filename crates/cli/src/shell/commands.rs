//! The commands that talk to the server (zkCli's `CliCommand`s): each sorts its words into flags and arguments,
//! calls the client and prints what zkCli 3.8 prints, to the same stream (stdout for results, stderr for
//! `Created ...`, warnings and errors). A failure is returned as a [`CliError`] for the shell to print.

use std::io::Write;
use std::time::Duration;

use oxkeeper_client::{AddWatchMode, Client, CreateMode, Error, Multi, WatcherType, ANY_VERSION};

use super::parse::{self, flag, valued, Flag, Options};
use super::print;
use super::zone::Zone;
use super::Events;

/// A failed command: the message zkCli prints on stderr and the exit status it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub message: String,
    pub exit_code: i32,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            exit_code: 1,
        }
    }
}

type CmdResult = Result<(), CliError>;

/// Every command: name and the option string zkCli's usage shows. `server` says whether it needs a session.
pub struct Command {
    pub name: &'static str,
    pub options: &'static str,
    pub server: bool,
}

const fn cmd(name: &'static str, options: &'static str, server: bool) -> Command {
    Command {
        name,
        options,
        server,
    }
}

/// In zkCli's order (Java's sort of the names).
pub const COMMANDS: &[Command] = &[
    cmd(
        "addWatch",
        "[-m mode] path # optional mode is one of [PERSISTENT, PERSISTENT_RECURSIVE] - default is PERSISTENT_RECURSIVE",
        true,
    ),
    cmd("addauth", "scheme auth", true),
    cmd("close", "", true),
    cmd("config", "[-c] [-w] [-s]", true),
    cmd("connect", "host:port", false),
    cmd("create", "[-s] [-e] [-c] [-t ttl] path [data] [acl]", true),
    cmd("delete", "[-v version] path", true),
    cmd("deleteall", "path [-b batch size]", true),
    cmd("get", "[-s] [-w] path", true),
    cmd("getAcl", "[-s] path", true),
    cmd("getAllChildrenNumber", "path", true),
    cmd("getEphemerals", "path", true),
    cmd("help", "", false),
    cmd("history", "", false),
    cmd("ls", "[-s] [-w] [-R] path", true),
    cmd("printwatches", "on|off", false),
    cmd("quit", "", false),
    cmd("redo", "cmdno", false),
    cmd("removewatches", "path [-c|-d|-a] [-l]", true),
    cmd("set", "[-s] [-v version] path data", true),
    cmd("setAcl", "[-s] [-v version] [-R] path acl", true),
    cmd("stat", "[-w] path", true),
    cmd("sync", "path", true),
    cmd("version", "", true),
    cmd("whoami", "", true),
];

pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// `cmd options`, as zkCli's `getUsageStr()` (with its trailing blank for commands without options).
pub fn usage_of(name: &str) -> String {
    match find(name) {
        Some(c) => format!("{} {}", c.name, c.options),
        None => name.to_string(),
    }
}

/// What a server command needs: the session, where watch events go, the zone dates are printed in.
pub struct Ctx<'a> {
    /// `None` when no session could be established: every call then fails with ConnectionLoss.
    pub client: Option<&'a Client>,
    pub events: &'a Events,
    pub zone: &'a Zone,
    /// The connect string's chroot, if any.
    pub chroot: Option<&'a str>,
}

impl Ctx<'_> {
    /// The session, for a call about `path` (named in the error if there is none).
    fn client(&self, path: &str) -> Result<&Client, CliError> {
        self.client
            .ok_or_else(|| failed(Error::ConnectionLoss, path))
    }
}

/// Writes to stdout at once (a closed pipe is not an error worth dying for).
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

pub fn err(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(s.as_bytes());
}

fn usage_error(name: &str) -> CliError {
    CliError::new(usage_of(name))
}

fn flags(spec: &[Flag], words: &[String]) -> Result<Options, CliError> {
    parse::options(spec, words).map_err(CliError::new)
}

fn valid_path(path: &str, sequential: bool) -> CmdResult {
    parse::check_path(path, sequential).map_err(CliError::new)
}

fn failed(e: Error, path: &str) -> CliError {
    CliError::new(print::cli_message(&e, Some(path)))
}

fn int_flag(o: &Options, letter: char, default: i32) -> Result<i32, CliError> {
    match o.value(letter) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| CliError::new(format!("-{letter} argument must be an int value"))),
    }
}

/// zkCli's old `cmd path watch` form: a third argument turns into `-w` (whatever it was) and a warning.
fn deprecated_watch_form(
    spec: &[Flag],
    words: &[String],
    o: Options,
    warning: &str,
) -> Result<Options, CliError> {
    if o.args.len() <= 2 {
        return Ok(o);
    }
    err(&format!("{warning}\n"));
    let mut w = words.to_vec();
    w[2] = "-w".to_string();
    flags(spec, &w)
}

/// Java's sort of strings: by UTF-16 code units.
fn java_sort(v: &mut [String]) {
    v.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
}

fn child_path(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// Runs a server command. `words[0]` is its name.
pub async fn run(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    match words[0].as_str() {
        "ls" => ls(ctx, words).await,
        "get" => get(ctx, words).await,
        "set" => set(ctx, words).await,
        "create" => create(ctx, words).await,
        "delete" => delete(ctx, words).await,
        "deleteall" => delete_all(ctx, words).await,
        "stat" => stat(ctx, words).await,
        "getAcl" => get_acl(ctx, words).await,
        "setAcl" => set_acl(ctx, words).await,
        "addauth" => add_auth(ctx, words).await,
        "sync" => sync(ctx, words).await,
        "getEphemerals" => get_ephemerals(ctx, words).await,
        "getAllChildrenNumber" => get_all_children_number(ctx, words).await,
        "addWatch" => add_watch(ctx, words).await,
        "removewatches" => remove_watches(ctx, words).await,
        "whoami" => who_am_i(ctx).await,
        "config" => config(ctx, words).await,
        "version" => version(words),
        other => Err(CliError::new(format!("not a server command: {other}"))),
    }
}

const LS: &[Flag] = &[flag('?'), flag('s'), flag('w'), flag('R')];

async fn ls(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(LS, words)?;
    if o.has('?') {
        out("usage: ls [options] path\n -?   help\n -R   recurse\n -s   stat\n -w   watch\n");
    }
    let o = deprecated_watch_form(
        LS,
        words,
        o,
        "'ls path [watch]' has been deprecated. Please use 'ls [-w] path' instead.",
    )?;
    if o.args.len() < 2 {
        return Err(usage_error("ls"));
    }
    let path = o.args[1].as_str();
    let watch = o.has('w');
    if o.has('R') {
        return visit(ctx, path, watch, Visit::Print).await;
    }
    valid_path(path, false)?;
    let (mut children, stat) = if watch {
        let (c, s, w) = ctx
            .client(path)?
            .get_children_w(path)
            .await
            .map_err(|e| failed(e, path))?;
        ctx.events.once(w);
        (c, s)
    } else {
        ctx.client(path)?
            .get_children2(path)
            .await
            .map_err(|e| failed(e, path))?
    };
    java_sort(&mut children);
    let mut text = print::java_list(&children);
    text.push('\n');
    if o.has('s') {
        text.push_str(&print::stat(&stat, ctx.zone));
    }
    out(&text);
    Ok(())
}

/// What [`visit`] does at each node.
enum Visit {
    /// `ls -R`: print the path.
    Print,
    /// `setAcl -R`: set the ACL, printing (without a newline, as zkCli) why it failed.
    SetAcl {
        acl: Vec<oxkeeper_client::Acl>,
        version: i32,
    },
}

/// zkCli's `ZKUtil.visitSubTreeDFS`: the node, then each node's children (sorted) before their subtrees. A node
/// deleted meanwhile is skipped; other errors end the walk.
async fn visit(ctx: &Ctx<'_>, root: &str, watch: bool, action: Visit) -> CmdResult {
    valid_path(root, false)?;
    if watch {
        let (_, _, w) = ctx
            .client(root)?
            .get_data_w(root)
            .await
            .map_err(|e| failed(e, root))?;
        ctx.events.once(w);
    } else {
        ctx.client(root)?
            .get_data(root)
            .await
            .map_err(|e| failed(e, root))?;
    }
    visit_one(ctx, &action, root.to_string()).await;
    // Nodes whose children are still to be listed, the next one last.
    let mut stack = vec![root.to_string()];
    while let Some(node) = stack.pop() {
        let client = ctx.client(&node)?;
        let listed = if watch {
            client.get_children_w(&node).await.map(|(c, _, w)| {
                ctx.events.once(w);
                c
            })
        } else {
            client.get_children(&node).await
        };
        let mut children = match listed {
            Ok(c) => c,
            Err(Error::NoNode) => continue,
            Err(e) => return Err(failed(e, &node)),
        };
        java_sort(&mut children);
        let paths: Vec<String> = children.iter().map(|c| child_path(&node, c)).collect();
        for p in &paths {
            visit_one(ctx, &action, p.clone()).await;
        }
        stack.extend(paths.into_iter().rev());
    }
    Ok(())
}

async fn visit_one(ctx: &Ctx<'_>, action: &Visit, path: String) {
    match action {
        Visit::Print => out(&format!("{path}\n")),
        Visit::SetAcl { acl, version } => {
            let r = match ctx.client {
                _ if acl.is_empty() => Err((Error::InvalidAcl, None)),
                None => Err((Error::ConnectionLoss, Some(path.as_str()))),
                Some(client) => client
                    .set_acl(&path, acl, *version)
                    .await
                    .map_err(|e| (e, Some(path.as_str()))),
            };
            if let Err((e, p)) = r {
                out(&print::keeper_message(&e, p));
            }
        }
    }
}

const GET: &[Flag] = &[flag('s'), flag('w')];

async fn get(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(GET, words)?;
    if o.args.len() < 2 {
        return Err(usage_error("get"));
    }
    let o = deprecated_watch_form(
        GET,
        words,
        o,
        "'get path [watch]' has been deprecated. Please use 'get [-s] [-w] path' instead.",
    )?;
    let path = o.args[1].as_str();
    valid_path(path, false)?;
    let (data, stat) = if o.has('w') {
        let (d, s, w) = ctx
            .client(path)?
            .get_data_w(path)
            .await
            .map_err(|e| failed(e, path))?;
        ctx.events.once(w);
        (d, s)
    } else {
        ctx.client(path)?
            .get_data(path)
            .await
            .map_err(|e| failed(e, path))?
    };
    let mut text = String::from_utf8_lossy(&data).into_owned();
    text.push('\n');
    if o.has('s') {
        text.push_str(&print::stat(&stat, ctx.zone));
    }
    out(&text);
    Ok(())
}

const SET: &[Flag] = &[flag('s'), valued('v')];

async fn set(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(SET, words)?;
    if o.args.len() < 3 {
        return Err(usage_error("set"));
    }
    let (path, data) = (o.args[1].as_str(), o.args[2].as_bytes());
    let version = int_flag(&o, 'v', ANY_VERSION)?;
    valid_path(path, false)?;
    let stat = ctx
        .client(path)?
        .set_data(path, data, version)
        .await
        .map_err(|e| failed(e, path))?;
    if o.has('s') {
        out(&print::stat(&stat, ctx.zone));
    }
    Ok(())
}

const CREATE: &[Flag] = &[flag('e'), flag('s'), flag('c'), valued('t')];

async fn create(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(CREATE, words)?;
    if o.args.len() < 2 {
        return Err(usage_error("create"));
    }
    let (e, s, c) = (o.has('e'), o.has('s'), o.has('c'));
    if c && (e || s) {
        return Err(CliError::new(
            "-c cannot be combined with -s or -e. Containers cannot be ephemeral or sequential.",
        ));
    }
    let ttl_ms = match o.value('t') {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| CliError::new("-t argument must be a long value"))?,
        ),
    };
    if ttl_ms.is_some() && e {
        return Err(CliError::new("TTLs cannot be used with Ephemeral znodes"));
    }
    if ttl_ms.is_some() && c {
        return Err(CliError::new("TTLs cannot be used with Container znodes"));
    }
    let mode = match (e, s, c, ttl_ms.is_some()) {
        (true, true, _, _) => CreateMode::EphemeralSequential,
        (true, false, _, _) => CreateMode::Ephemeral,
        (false, true, _, true) => CreateMode::PersistentSequentialWithTtl,
        (false, true, _, false) => CreateMode::PersistentSequential,
        (false, false, true, _) => CreateMode::Container,
        (false, false, false, true) => CreateMode::PersistentWithTtl,
        (false, false, false, false) => CreateMode::Persistent,
    };
    if let Some(ttl) = ttl_ms {
        if ttl <= 0 || ttl > oxkeeper_proto::TTL_MAX_MS {
            return Err(CliError::new(format!(
                "ttl must be positive and cannot be larger than: {}",
                oxkeeper_proto::TTL_MAX_MS
            )));
        }
    }
    let path = o.args[1].as_str();
    // zkCli sends no data at all when none is given (read back as "null"); this client always sends some.
    let data = o.args.get(2).map(|d| d.as_bytes()).unwrap_or_default();
    let acl = match o.args.get(3) {
        None => oxkeeper_client::acl::open_unsafe(),
        Some(text) => {
            let parsed = parse::acl(text);
            for c in &parsed.complaints {
                err(&format!("{c}\n"));
            }
            parsed.acl
        }
    };
    valid_path(path, mode.is_sequential())?;
    if acl.is_empty() {
        err(&format!(
            "{}\n",
            print::keeper_message(&Error::InvalidAcl, None)
        ));
        return Err(CliError::new(print::cli_message(&Error::InvalidAcl, None)));
    }
    let created = match ttl_ms {
        Some(ttl) => {
            let ttl = Duration::from_millis(ttl.unsigned_abs());
            ctx.client(path)?
                .create_ttl(path, data, &acl, mode, ttl)
                .await
        }
        None => ctx.client(path)?.create(path, data, &acl, mode).await,
    };
    match created {
        Ok((created, _)) => {
            err(&format!("Created {created}\n"));
            Ok(())
        }
        Err(Error::InvalidAcl) => {
            err(&format!(
                "{}\n",
                print::keeper_message(&Error::InvalidAcl, Some(path))
            ));
            Err(failed(Error::InvalidAcl, path))
        }
        Err(e) => Err(failed(e, path)),
    }
}

const DELETE: &[Flag] = &[valued('v')];

async fn delete(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(DELETE, words)?;
    if o.args.len() < 2 {
        return Err(usage_error("delete"));
    }
    if o.args.len() > 2 {
        err("'delete path [version]' has been deprecated. Please use 'delete [-v version] path' instead.\n");
    }
    let path = o.args[1].as_str();
    let version = int_flag(&o, 'v', ANY_VERSION)?;
    valid_path(path, false)?;
    if path == "/" {
        // The Java client sends "/" without the chroot, so that the root can never be deleted.
        return Err(failed(Error::BadArguments(String::new()), path));
    }
    ctx.client(path)?
        .delete(path, version)
        .await
        .map_err(|e| failed(e, path))
}

const DELETE_ALL: &[Flag] = &[valued('b')];

/// How many multis `deleteall` would have in flight in zkCli; here they run one after another.
const DELETE_ALL_BATCH_DEFAULT: i32 = 1000;

async fn delete_all(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(DELETE_ALL, words)?;
    if o.args.len() < 2 {
        return Err(usage_error("deleteall"));
    }
    let batch = int_flag(&o, 'b', DELETE_ALL_BATCH_DEFAULT)?;
    let root = o.args[1].as_str();
    valid_path(root, false)?;
    // The subtree breadth first (zkCli's ZKUtil.listSubTreeBFS), then deleted from the end: leaves first.
    let mut tree = vec![root.to_string()];
    let mut next = 0;
    while next < tree.len() {
        let node = tree[next].clone();
        next += 1;
        let children = ctx
            .client(&node)?
            .get_children(&node)
            .await
            .map_err(|e| failed(e, &node))?;
        tree.extend(children.iter().map(|c| child_path(&node, c)));
    }
    let client = ctx.client(root)?;
    let mut ok = true;
    let mut multi = Multi::new();
    for (i, p) in tree.iter().enumerate().rev() {
        multi = multi.delete(p, ANY_VERSION);
        // As zkCli: a batch is sent when it has `batch` deletes, and the last one at the root; a batch size
        // below 1 puts everything in one.
        let full = multi.len() as i64 == i64::from(batch) || i == 0;
        if full && client.multi(std::mem::take(&mut multi)).await.is_err() {
            ok = false;
            break;
        }
    }
    if !ok {
        err("Failed to delete some node(s) in the subtree!\n");
    }
    Ok(())
}

const STAT: &[Flag] = &[flag('w')];

async fn stat(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(STAT, words)?;
    if o.args.len() < 2 {
        return Err(usage_error("stat"));
    }
    let o = deprecated_watch_form(
        STAT,
        words,
        o,
        "'stat path [watch]' has been deprecated. Please use 'stat [-w] path' instead.",
    )?;
    let path = o.args[1].as_str();
    valid_path(path, false)?;
    let stat = if o.has('w') {
        let (s, w) = ctx
            .client(path)?
            .exists_w(path)
            .await
            .map_err(|e| failed(e, path))?;
        ctx.events.once(w);
        s
    } else {
        ctx.client(path)?
            .exists(path)
            .await
            .map_err(|e| failed(e, path))?
    };
    match stat {
        Some(s) => {
            out(&print::stat(&s, ctx.zone));
            Ok(())
        }
        None => Err(failed(Error::NoNode, path)),
    }
}

const GET_ACL: &[Flag] = &[flag('s')];

async fn get_acl(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(GET_ACL, words)?;
    if o.args.len() < 2 {
        return Err(usage_error("getAcl"));
    }
    let path = o.args[1].as_str();
    valid_path(path, false)?;
    let (acl, stat) = ctx
        .client(path)?
        .get_acl(path)
        .await
        .map_err(|e| failed(e, path))?;
    let mut text: String = acl.iter().map(print::acl_entry).collect();
    if o.has('s') {
        text.push_str(&print::stat(&stat, ctx.zone));
    }
    out(&text);
    Ok(())
}

const SET_ACL: &[Flag] = &[flag('s'), valued('v'), flag('R')];

async fn set_acl(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(SET_ACL, words)?;
    if o.args.len() < 3 {
        return Err(usage_error("setAcl"));
    }
    let path = o.args[1].as_str();
    let parsed = parse::acl(&o.args[2]);
    for c in &parsed.complaints {
        err(&format!("{c}\n"));
    }
    let acl = parsed.acl;
    let version = int_flag(&o, 'v', ANY_VERSION)?;
    if o.has('R') {
        return visit(ctx, path, false, Visit::SetAcl { acl, version }).await;
    }
    valid_path(path, false)?;
    if acl.is_empty() {
        return Err(CliError::new(print::cli_message(&Error::InvalidAcl, None)));
    }
    let stat = ctx
        .client(path)?
        .set_acl(path, &acl, version)
        .await
        .map_err(|e| failed(e, path))?;
    if o.has('s') {
        out(&print::stat(&stat, ctx.zone));
    }
    Ok(())
}

async fn add_auth(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(&[], words)?;
    if o.args.len() < 2 {
        return Err(usage_error("addauth"));
    }
    let auth = o.args.get(2).map(|a| a.as_bytes()).unwrap_or_default();
    // zkCli does not wait for the answer: a refusal shows as the AuthFailed state event, printed by the
    // session's state watcher.
    let _ = ctx.client("")?.add_auth(&o.args[1], auth).await;
    Ok(())
}

async fn sync(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(&[], words)?;
    if o.args.len() < 2 {
        return Err(usage_error("sync"));
    }
    let path = o.args[1].as_str();
    valid_path(path, false)?;
    match ctx.client(path)?.sync(path).await {
        Ok(_) => out("Sync is OK\n"),
        Err(e) => out(&format!(
            "Sync has failed. rc={}\n",
            print::error_code(&e).as_i32()
        )),
    }
    Ok(())
}

async fn get_ephemerals(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(&[], words)?;
    let path = o.args.get(1).map(String::as_str).unwrap_or("/");
    valid_path(path, false)?;
    let paths = ctx
        .client(path)?
        .get_ephemerals(path)
        .await
        .map_err(|e| failed(e, path))?;
    out(&format!("{}\n", print::java_list(&paths)));
    Ok(())
}

async fn get_all_children_number(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(&[], words)?;
    if o.args.len() < 2 {
        return Err(usage_error("getAllChildrenNumber"));
    }
    let path = o.args[1].as_str();
    valid_path(path, false)?;
    let n = ctx
        .client(path)?
        .get_all_children_number(path)
        .await
        .map_err(|e| failed(e, path))?;
    out(&format!("{n}\n"));
    Ok(())
}

const ADD_WATCH: &[Flag] = &[valued('m')];

/// `-m`'s value: zkCli takes the Java enum's names in any case; `persistentRecursive` is accepted too.
pub fn watch_mode(text: &str) -> Option<AddWatchMode> {
    match text.to_ascii_uppercase().as_str() {
        "PERSISTENT" => Some(AddWatchMode::Persistent),
        "PERSISTENT_RECURSIVE" | "PERSISTENTRECURSIVE" => Some(AddWatchMode::PersistentRecursive),
        _ => None,
    }
}

async fn add_watch(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(ADD_WATCH, words)?;
    if o.args.len() != 2 {
        return Err(usage_error("addWatch"));
    }
    let mode = match o.value('m') {
        None => AddWatchMode::PersistentRecursive,
        Some(m) => watch_mode(m).ok_or_else(|| usage_error("addWatch"))?,
    };
    let path = o.args[1].as_str();
    valid_path(path, false)?;
    let w = ctx
        .client(path)?
        .add_watch(path, mode)
        .await
        .map_err(|e| failed(e, path))?;
    ctx.events.persistent(w);
    Ok(())
}

const REMOVE_WATCHES: &[Flag] = &[flag('c'), flag('d'), flag('a'), flag('l')];

async fn remove_watches(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(REMOVE_WATCHES, words)?;
    if o.args.len() < 2 {
        return Err(usage_error("removewatches"));
    }
    let path = o.args[1].as_str();
    let kind = if o.has('c') {
        WatcherType::Children
    } else if o.has('d') {
        WatcherType::Data
    } else {
        WatcherType::Any
    };
    valid_path(path, false)?;
    ctx.client(path)?
        .remove_watches(path, kind, o.has('l'))
        .await
        .map_err(|e| failed(e, path))
}

async fn who_am_i(ctx: &Ctx<'_>) -> CmdResult {
    let infos = ctx
        .client("")?
        .who_am_i()
        .await
        .map_err(|e| CliError::new(print::cli_message(&e, None)))?;
    let mut text = String::from("Auth scheme: User\n");
    for i in infos {
        text.push_str(&format!("{}: {}\n", i.auth_scheme, i.user));
    }
    out(&text);
    Ok(())
}

const CONFIG: &[Flag] = &[flag('s'), flag('w'), flag('c')];

async fn config(ctx: &Ctx<'_>, words: &[String]) -> CmdResult {
    let o = flags(CONFIG, words)?;
    let (data, stat) = if o.has('w') && ctx.chroot.is_none() {
        let (d, s, w) = ctx
            .client("/zookeeper/config")?
            .get_data_w("/zookeeper/config")
            .await
            .map_err(|e| CliError::new(print::cli_message(&e, None)))?;
        ctx.events.once(w);
        (d, s)
    } else {
        if o.has('w') {
            err("config -w is not supported with a chroot: no watch was set\n");
        }
        ctx.client("")?
            .get_config()
            .await
            .map_err(|e| CliError::new(print::cli_message(&e, None)))?
    };
    let text = String::from_utf8_lossy(&data);
    let mut shown = if o.has('c') {
        client_config(&text)
    } else {
        text.into_owned()
    };
    shown.push('\n');
    if o.has('s') {
        shown.push_str(&print::stat(&stat, ctx.zone));
    }
    out(&shown);
    Ok(())
}

/// `config -c`: the config's version and the members' client addresses (`ConfigUtils.getClientConfigStr`).
pub fn client_config(config: &str) -> String {
    let mut version = "";
    let mut hosts = Vec::new();
    for line in config.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "version" {
            version = value;
        }
        if !key.starts_with("server.") {
            continue;
        }
        // server.N=host:quorumPort:electionPort[:role][;[clientHost:]clientPort]
        let Some((server, client)) = value.split_once(';') else {
            continue;
        };
        let host = server.split(':').next().unwrap_or_default();
        hosts.push(match client.rsplit_once(':') {
            Some((h, p)) => format!("{h}:{p}"),
            None if host.is_empty() => format!("0.0.0.0:{client}"),
            None => format!("{host}:{client}"),
        });
    }
    format!("{version} {}", hosts.join(","))
}

fn version(words: &[String]) -> CmdResult {
    let o = flags(&[], words)?;
    if o.args.len() > 1 {
        return Err(usage_error("version"));
    }
    out(&format!(
        "oxkeeper shell version: {}\n",
        env!("CARGO_PKG_VERSION")
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_in_zkcli_order() {
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(usage_of("ls"), "ls [-s] [-w] [-R] path");
        assert_eq!(usage_of("quit"), "quit ");
    }

    #[test]
    fn watch_modes() {
        assert_eq!(watch_mode("persistent"), Some(AddWatchMode::Persistent));
        assert_eq!(
            watch_mode("PERSISTENT_RECURSIVE"),
            Some(AddWatchMode::PersistentRecursive)
        );
        assert_eq!(
            watch_mode("persistentRecursive"),
            Some(AddWatchMode::PersistentRecursive)
        );
        assert_eq!(watch_mode("bogus"), None);
    }

    #[test]
    fn client_config_lists_client_ports() {
        assert_eq!(client_config(""), " ");
        let cfg = "server.1=10.0.0.1:2888:3888:participant;0.0.0.0:2181\n\
                   server.2=10.0.0.2:2888:3888:participant;2182\nversion=100000000\n";
        assert_eq!(client_config(cfg), "100000000 0.0.0.0:2181,10.0.0.2:2182");
    }

    #[test]
    fn java_sorts_by_utf16() {
        let mut v = vec![
            "b".to_string(),
            "\u{FF5E}".to_string(),
            "\u{1F600}".to_string(),
            "a".into(),
        ];
        java_sort(&mut v);
        assert_eq!(v, vec!["a", "b", "\u{1F600}", "\u{FF5E}"]);
    }
}
