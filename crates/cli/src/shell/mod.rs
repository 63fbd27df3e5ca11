//! `oxkeeper shell`: ZooKeeper's zkCli.sh for oxkeeper (and any ZooKeeper server), with zkCli 3.8's arguments,
//! commands, output and exit statuses, so that scripts which parse zkCli keep working. It runs one command
//! (`oxkeeper shell -server h:p ls /`), or commands read from stdin, one per line; on a terminal with line
//! editing, history and tab completion. Watch and session events are printed as zkCli's watcher prints them.
//!
//! `parse` turns text into commands, `commands` runs the server commands, `print` formats as zkCli, `zone`
//! finds the local time zone for dates, `complete` completes on a terminal. This module owns the session and
//! the built-in commands (connect, history, redo, printwatches, quit, help).

mod commands;
mod complete;
mod parse;
mod print;
mod zone;

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use oxkeeper_client::{
    Client, ConnectOptions, Error, EventType, KeeperState, PersistentWatch, State, StateStream,
    Watch, WatchedEvent,
};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor, ExternalPrinter};
use tokio::runtime::Runtime;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use commands::{err, out, CliError, Ctx, COMMANDS};
use parse::{Invocation, Parsed};
use zone::Zone;

/// How long closing a session may take before the shell gives up on it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting waits before checking whether every server refuses connections (then it gives up, as
/// zkCli's first failed attempt fails the waiting command).
const REFUSAL_CHECK_DELAY: Duration = Duration::from_millis(200);
/// zkCli's `history` shows the last this many commands and the current one.
const HISTORY_SHOWN: usize = 10;
/// Entries kept in the history file.
const HISTORY_FILE_ENTRIES_MAX: usize = 1000;

/// Entry point: `args` are the words after `oxkeeper shell`.
pub fn main(args: &[String]) -> ExitCode {
    let inv = match parse::invocation(args) {
        Ok(Parsed::Run(inv)) => inv,
        Ok(Parsed::Help) => {
            out(&help_text());
            return ExitCode::SUCCESS;
        }
        Err(why) => {
            eprintln!("Error: {why}");
            eprint!("{}", help_text());
            return ExitCode::from(2);
        }
    };
    for o in &inv.ignored {
        eprintln!("oxkeeper shell: ignoring {o} (not supported)");
    }
    if let Err(e) = oxkeeper_client::connect_string::parse(&inv.server) {
        eprintln!("oxkeeper shell: -server {}: {e}", inv.server);
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oxkeeper shell: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = Shell::new(runtime, &inv).run(inv.command.clone());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn help_text() -> String {
    let mut s = String::from(
        "Usage: oxkeeper shell [-server host:port[,host:port...][/chroot]] [-timeout ms] [-r] [-waitforconnection] [cmd args...]\n\n\
         ZooKeeper's zkCli.sh: runs `cmd args` and exits with its status, or runs the commands read from stdin\n\
         (one per line; on a terminal with line editing, history and tab completion) and exits with the last one's.\n\n\
         Options (single dash, as zkCli's):\n\
         \x20 -server hosts       the servers to connect to (default 127.0.0.1:2181), optionally with a chroot\n\
         \x20 -timeout ms         the session timeout (default 30000)\n\
         \x20 -r                  accept a read-only server\n\
         \x20 -waitforconnection  wait up to the session timeout for a session; exit 1 if none\n\n\
         Commands:\n",
    );
    for c in COMMANDS {
        s.push_str(&format!("\t{} {}\n", c.name, c.options));
    }
    s.push_str(
        "\nEnvironment: OXKEEPER_SHELL_HISTORY (history file, default ~/.oxkeeper_shell_history),\n\
         OXKEEPER_SHELL_LOG (client log filter, default off).\n",
    );
    s
}

/// zkCli's usage, printed on stderr for an unknown command.
fn usage() -> String {
    let mut s = String::from("oxkeeper shell -server host:port cmd args\n");
    for c in COMMANDS {
        s.push_str(&format!("\t{} {}\n", c.name, c.options));
    }
    s
}

/// Where watch and state events are printed. Clones share the `printwatches` switch.
#[derive(Clone)]
pub struct Events {
    inner: Arc<EventsInner>,
}

struct EventsInner {
    print_watches: AtomicBool,
    /// Set while the shell ends its session on exit: zkCli exits without printing that.
    muted: AtomicBool,
    sink: Mutex<Sink>,
}

enum Sink {
    Stdout,
    /// On a terminal: to the thread that hands events to rustyline, which redraws the prompt under them.
    Terminal(mpsc::Sender<String>),
}

impl Events {
    fn new() -> Events {
        Events {
            inner: Arc::new(EventsInner {
                print_watches: AtomicBool::new(true),
                muted: AtomicBool::new(false),
                sink: Mutex::new(Sink::Stdout),
            }),
        }
    }

    fn emit(&self, state: KeeperState, event: EventType, path: Option<&str>) {
        let i = &self.inner;
        if i.muted.load(Ordering::SeqCst) || !i.print_watches.load(Ordering::SeqCst) {
            return;
        }
        let block = print::watcher_block(state, event, path);
        let sink = i.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &*sink {
            Sink::Stdout => {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(block.as_bytes());
                let _ = o.flush();
            }
            Sink::Terminal(tx) => {
                let _ = tx.send(block);
            }
        }
    }

    /// Keeps a one-shot watch registered (and so re-armed after a reconnect) until it fires. Its event
    /// is printed from the session's notifications, once however many watches it fires, as zkCli's
    /// single default watcher sees it.
    pub fn once(&self, watch: Watch) {
        tokio::spawn(async move {
            let _ = watch.await;
        });
    }

    /// Keeps a persistent watch registered until it is removed or the session ends (its events are
    /// printed from the notifications; a resync after a reconnect is silent, as zkCli's client re-adds
    /// the watch silently too).
    pub fn persistent(&self, mut watch: PersistentWatch) {
        tokio::spawn(async move { while watch.next().await.is_some() {} });
    }

    /// Prints every watch notification of the session (and the removal events of removewatches).
    fn notifications(&self, mut rx: broadcast::Receiver<WatchedEvent>) -> JoinHandle<()> {
        let events = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) if e.event_type != EventType::None => {
                        events.emit(e.state, e.event_type, Some(&e.path))
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })
    }

    /// Prints the session's state transitions until the session ends.
    fn states(&self, mut stream: StateStream) -> JoinHandle<()> {
        let events = self.clone();
        tokio::spawn(async move {
            while let Some(s) = stream.next().await {
                if let Some(k) = print::state_event(s) {
                    events.emit(k, EventType::None, None);
                }
                if s.is_terminal() {
                    break;
                }
            }
        })
    }
}

/// The shell's session.
enum Link {
    Up {
        client: Client,
        states: JoinHandle<()>,
        notifications: JoinHandle<()>,
    },
    /// No session could be established; the next command tries again (zkCli's client keeps trying).
    Down,
    /// Closed by `close`.
    Closed,
}

enum Flow {
    Continue,
    Quit,
}

struct Shell {
    runtime: Runtime,
    timeout: Duration,
    read_only: bool,
    wait_for_connection: bool,
    /// The connect string, as given (the prompt shows it).
    host: String,
    link: Link,
    /// The session's client, for tab completion.
    current: Arc<Mutex<Option<Client>>>,
    events: Events,
    /// Command lines by number, as zkCli's `history` and `redo` count them.
    history: HashMap<usize, String>,
    count: usize,
    exit_code: i32,
    zone: &'static Zone,
}

impl Shell {
    fn new(runtime: Runtime, inv: &Invocation) -> Shell {
        Shell {
            runtime,
            timeout: inv.timeout,
            read_only: inv.read_only,
            wait_for_connection: inv.wait_for_connection,
            host: inv.server.clone(),
            link: Link::Down,
            current: Arc::new(Mutex::new(None)),
            events: Events::new(),
            history: HashMap::new(),
            count: 0,
            exit_code: 0,
            zone: Zone::local(),
        }
    }

    fn run(mut self, command: Option<Vec<String>>) -> i32 {
        out(&format!("Connecting to {}\n", self.host));
        let interactive = command.is_none() && std::io::stdin().is_terminal();
        if command.is_none() {
            let jline = if interactive { "enabled" } else { "disabled" };
            out(&format!(
                "Welcome to ZooKeeper!\nJLine support is {jline}\n"
            ));
        }
        let _ = std::io::stdout().flush();
        if !self.connect(self.host.clone()) && self.wait_for_connection {
            eprintln!(
                "Unable to connect to {}: KeeperErrorCode = ConnectionLoss",
                self.host
            );
            return 1;
        }
        match command {
            Some(words) => {
                self.process(words);
            }
            None if interactive => self.interactive(),
            None => self.piped(),
        }
        self.close(true);
        self.exit_code
    }

    /// Commands from a pipe or file: no prompt.
    fn piped(&mut self) {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("oxkeeper shell: reading stdin: {e}");
                    return;
                }
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if let Flow::Quit = self.execute_line(line) {
                return;
            }
        }
    }

    fn interactive(&mut self) {
        let config = Config::builder()
            .completion_type(CompletionType::List)
            .max_history_size(HISTORY_FILE_ENTRIES_MAX)
            .and_then(|b| b.history_ignore_dups(true))
            .map(|b| b.auto_add_history(false).build());
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                eprintln!("oxkeeper shell: {e}");
                return;
            }
        };
        let mut editor: Editor<complete::ShellHelper, FileHistory> =
            match Editor::with_config(config) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("oxkeeper shell: cannot use the terminal: {e}");
                    return self.piped();
                }
            };
        editor.set_helper(Some(complete::ShellHelper {
            client: self.current.clone(),
            runtime: self.runtime.handle().clone(),
        }));
        let history_file = history_file();
        if let Some(f) = &history_file {
            let _ = editor.load_history(f);
        }
        if let Ok(mut printer) = editor.create_external_printer() {
            let (tx, rx) = mpsc::channel::<String>();
            std::thread::spawn(move || {
                for block in rx {
                    if printer.print(block).is_err() {
                        break;
                    }
                }
            });
            *self
                .events
                .inner
                .sink
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Sink::Terminal(tx);
        }
        loop {
            match editor.readline(&self.prompt()) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        if let Some(f) = &history_file {
                            let _ = editor.append_history(f);
                        }
                    }
                    if let Flow::Quit = self.execute_line(&line) {
                        break;
                    }
                }
                // Ctrl-C drops the line being typed.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    eprintln!("oxkeeper shell: {e}");
                    break;
                }
            }
        }
        *self
            .events
            .inner
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Sink::Stdout;
    }

    /// zkCli's prompt: `[zk: host:port(CONNECTED) 3] `.
    fn prompt(&self) -> String {
        let state = match &self.link {
            Link::Up { client, .. } => print::prompt_state(client.state()),
            Link::Down => "CONNECTING",
            Link::Closed => "CLOSED",
        };
        format!("[zk: {}({}) {}] ", self.host, state, self.count)
    }

    /// One line typed or read: numbered and kept for `history` unless blank.
    fn execute_line(&mut self, line: &str) -> Flow {
        let words = parse::words(line);
        if words.is_empty() {
            return Flow::Continue;
        }
        self.history.insert(self.count, line.to_string());
        let flow = self.process(words);
        self.count += 1;
        flow
    }

    /// Runs a command and prints its error; the exit status becomes the command's (quit keeps the last one).
    fn process(&mut self, words: Vec<String>) -> Flow {
        let flow = self.dispatch(words);
        let _ = std::io::stdout().flush();
        match flow {
            Ok(flow) => {
                if let Flow::Continue = flow {
                    self.exit_code = 0;
                }
                flow
            }
            Err(e) => {
                err(&format!("{}\n", e.message));
                self.exit_code = e.exit_code;
                Flow::Continue
            }
        }
    }

    fn dispatch(&mut self, words: Vec<String>) -> Result<Flow, CliError> {
        let name = words[0].as_str();
        let Some(command) = commands::find(name) else {
            err(&usage());
            return Err(CliError {
                message: format!("Command not found: Command not found {name}"),
                exit_code: 127,
            });
        };
        match name {
            "quit" => {
                self.close(false);
                return Ok(Flow::Quit);
            }
            "help" => {
                out(&usage());
                return Ok(Flow::Continue);
            }
            "redo" if words.len() >= 2 => {
                let n = java_decode(&words[1])
                    .ok_or_else(|| CliError::new(format!("Not a command number: {}", words[1])))?;
                let line = usize::try_from(n)
                    .ok()
                    .filter(|i| *i < self.count)
                    .and_then(|i| self.history.get(&i))
                    .cloned()
                    .ok_or_else(|| CliError::new("Command index out of range"))?;
                let again = parse::words(&line);
                if again.first().map(String::as_str) == Some("redo") {
                    return Err(CliError::new("No redoing redos"));
                }
                self.history.insert(self.count, line);
                if let Flow::Quit = self.process(again) {
                    return Ok(Flow::Quit);
                }
            }
            "history" => {
                let mut text = String::new();
                for i in self.count.saturating_sub(HISTORY_SHOWN)..=self.count {
                    let line = self.history.get(&i).map_or("null", String::as_str);
                    text.push_str(&format!("{i} - {line}\n"));
                }
                out(&text);
            }
            "printwatches" => match words.get(1) {
                None => {
                    let on = self.events.inner.print_watches.load(Ordering::SeqCst);
                    out(&format!(
                        "printwatches is {}
",
                        if on { "on" } else { "off" }
                    ));
                }
                Some(v) => self
                    .events
                    .inner
                    .print_watches
                    .store(v == "on", Ordering::SeqCst),
            },
            "connect" => {
                let host = words.get(1).cloned().unwrap_or_else(|| self.host.clone());
                if let Err(e) = oxkeeper_client::connect_string::parse(&host) {
                    return Err(CliError::new(format!("Invalid connect string {host}: {e}")));
                }
                self.close(false);
                self.connect(host);
            }
            _ => {}
        }
        // As zkCli: every command, even a built-in one, reports a session that is gone.
        if !self.alive() {
            out("Not connected\n");
            return Ok(Flow::Continue);
        }
        if !command.server {
            return Ok(Flow::Continue);
        }
        if name == "close" {
            self.close(false);
            self.link = Link::Closed;
            return Ok(Flow::Continue);
        }
        if let Link::Down = self.link {
            self.connect(self.host.clone());
        }
        let client = match &self.link {
            Link::Up { client, .. } => Some(client.clone()),
            _ => None,
        };
        let chroot = oxkeeper_client::connect_string::parse(&self.host)
            .ok()
            .and_then(|c| c.chroot);
        let ctx = Ctx {
            client: client.as_ref(),
            events: &self.events,
            zone: self.zone,
            chroot: chroot.as_deref(),
        };
        self.runtime.block_on(commands::run(&ctx, &words))?;
        Ok(Flow::Continue)
    }

    /// zkCli's `ZooKeeper.getState().isAlive()`: a session still being established counts.
    fn alive(&self) -> bool {
        match &self.link {
            Link::Up { client, .. } => !client.state().is_terminal(),
            Link::Down => true,
            Link::Closed => false,
        }
    }

    /// Establishes a session with `host` and prints its SyncConnected event; on failure the link stays down.
    fn connect(&mut self, host: String) -> bool {
        self.host = host;
        let options = ConnectOptions {
            session_timeout: self.timeout,
            read_only: self.read_only,
        };
        let opened = self
            .runtime
            .block_on(open(&self.host, options, self.wait_for_connection));
        let ok = match opened {
            Ok((client, stream)) => {
                let state = if client.state() == State::ConnectedReadOnly {
                    KeeperState::ConnectedReadOnly
                } else {
                    KeeperState::SyncConnected
                };
                self.events.emit(state, EventType::None, None);
                let (states, notifications) = {
                    let _guard = self.runtime.enter();
                    (
                        self.events.states(stream),
                        self.events.notifications(client.notifications()),
                    )
                };
                self.set_current(Some(client.clone()));
                self.link = Link::Up {
                    client,
                    states,
                    notifications,
                };
                true
            }
            Err(e) => {
                tracing::debug!(host = %self.host, error = %e, "no session");
                self.set_current(None);
                self.link = Link::Down;
                false
            }
        };
        let _ = std::io::stdout().flush();
        ok
    }

    /// Closes the session, if any; its Closed event is printed unless `quietly`.
    fn close(&mut self, quietly: bool) {
        let Link::Up {
            client,
            states,
            notifications,
        } = std::mem::replace(&mut self.link, Link::Down)
        else {
            return;
        };
        self.set_current(None);
        if quietly {
            self.events.inner.muted.store(true, Ordering::SeqCst);
        }
        self.runtime.block_on(async {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, client.close()).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, states).await;
        });
        notifications.abort();
        let _ = std::io::stdout().flush();
    }

    fn set_current(&self, client: Option<Client>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = client;
    }
}

/// Connects as zkCli's client would for a command: with `-waitforconnection`, waiting up to the session
/// timeout; otherwise until a session is established or every server has refused a connection (zkCli's waiting
/// command then fails with ConnectionLoss).
async fn open(
    host: &str,
    options: ConnectOptions,
    wait_for_connection: bool,
) -> Result<(Client, StateStream), Error> {
    let timeout = options.session_timeout;
    let connect = Client::connect_with(host, options);
    if wait_for_connection {
        return tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or(Err(Error::ConnectionLoss));
    }
    let hosts = oxkeeper_client::connect_string::parse(host)?.hosts;
    let per_host = timeout / u32::try_from(hosts.len()).unwrap_or(u32::MAX).max(1);
    tokio::select! {
        r = connect => r,
        () = all_refuse(&hosts, per_host) => Err(Error::ConnectionLoss),
    }
}

/// Returns once none of `hosts` accepts a TCP connection; never returns if one does.
async fn all_refuse(hosts: &[String], per_host: Duration) {
    tokio::time::sleep(REFUSAL_CHECK_DELAY).await;
    for h in hosts {
        if let Ok(Ok(_)) = tokio::time::timeout(per_host, tokio::net::TcpStream::connect(h)).await {
            return std::future::pending().await;
        }
    }
}

/// Java's `Integer.decode`: decimal, `0x`/`#` hex or `0` octal, with an optional sign.
fn java_decode(s: &str) -> Option<i32> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, digits) = if let Some(h) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, h)
    } else if let Some(h) = body.strip_prefix('#') {
        (16, h)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || digits.starts_with(['-', '+']) {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    i32::try_from(if neg { -v } else { v }).ok()
}

/// `$OXKEEPER_SHELL_HISTORY`, or `~/.oxkeeper_shell_history`.
fn history_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OXKEEPER_SHELL_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".oxkeeper_shell_history"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redo_numbers_decode_as_java() {
        assert_eq!(java_decode("12"), Some(12));
        assert_eq!(java_decode("0x1f"), Some(31));
        assert_eq!(java_decode("#10"), Some(16));
        assert_eq!(java_decode("010"), Some(8));
        assert_eq!(java_decode("-3"), Some(-3));
        assert_eq!(java_decode("0"), Some(0));
        assert_eq!(java_decode("abc"), None);
        assert_eq!(java_decode(""), None);
        assert_eq!(java_decode("--1"), None);
    }

    #[test]
    fn help_lists_every_command() {
        let h = help_text();
        for c in COMMANDS {
            assert!(h.contains(&format!("\t{} ", c.name)), "{}", c.name);
        }
        assert!(usage().starts_with("oxkeeper shell -server host:port cmd args\n\taddWatch "));
    }
}
