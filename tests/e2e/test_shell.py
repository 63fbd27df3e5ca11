"""`oxkeeper shell`, the zkCli.sh equivalent: every command run non-interactively against oxkeeper and Apache
ZooKeeper 3.8, the same command sequences compared line by line with what the real zkCli.sh prints, and the
interactive mode driven through a pseudo-terminal (prompt, tab completion, history, watch events, exit).

Each module-level server is started once per kind (never on 2181). Nothing sleeps and hopes: output is read with
a deadline until the expected text appears.
"""

import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time
import uuid

import pytest

from . import helpers
from .helpers import launch, dispose, halt, wait_until

ZKCLI = os.environ.get("ZKCLI", "/usr/share/zookeeper/bin/zkCli.sh")
SERVER_KINDS = ["oxkeeper", "zookeeper"]
REPLY_TIMEOUT = 30


def oxkeeper_bin():
    return helpers.servers.oxkeeper_bin()


def have_zookeeper():
    return os.path.exists(ZKCLI) and shutil.which("java") is not None


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(request):
    if request.param == "zookeeper" and not have_zookeeper():
        pytest.skip("Apache ZooKeeper (Debian package zookeeper) and java are needed for the reference runs")
    srv = launch(request.param)
    yield srv
    dispose(srv)


@pytest.fixture
def root(server):
    """A fresh znode path for the test (not created)."""
    return "/shell-" + uuid.uuid4().hex[:10]


def shell(hp, *args, stdin=None, extra=()):
    """Runs `oxkeeper shell -server hp [extra] args` to the end; returns (stdout, stderr, exit status)."""
    p = subprocess.run([oxkeeper_bin(), "shell", "-server", hp, *extra, *args], input=stdin,
                       capture_output=True, text=True, timeout=REPLY_TIMEOUT)
    return p.stdout, p.stderr, p.returncode


def zkcli(hp, *args, stdin=None):
    p = subprocess.run([ZKCLI, "-server", hp, *args], input=stdin, capture_output=True, text=True,
                       timeout=120)
    return p.stdout, p.stderr, p.returncode


EVENT_RE = re.compile(r"^WatchedEvent state:(\S+) type:(\S+) path:(.*)$")
STAT_KEYS = ["cZxid", "ctime", "mZxid", "mtime", "pZxid", "cversion", "dataVersion", "aclVersion",
             "ephemeralOwner", "dataLength", "numChildren"]


def body(out):
    """A one-shot run's output without the `Connecting to` line and the connection's watcher block."""
    lines = [ln for ln in out.splitlines() if not ln.startswith("Connecting to ")]
    text = "\n".join(lines)
    return text.replace("\nWATCHER::\n\nWatchedEvent state:SyncConnected type:None path:null\n", "", 1).strip("\n")


def stat_of(text):
    st = dict(re.findall(r"^(\w+) = (.*)$", text, re.M))
    assert [k for k in STAT_KEYS if k in st] == STAT_KEYS, text
    return st


# ------------------------------------------------------------------------------------------ one-shot commands
def test_one_shot_commands_print_as_zkcli(server, root):
    hp = server.hostport
    out, err, rc = shell(hp, "create", root, "rootdata")
    assert (rc, err, out.splitlines()[0]) == (0, f"Created {root}\n", f"Connecting to {hp}")
    assert "\nWATCHER::\n\nWatchedEvent state:SyncConnected type:None path:null\n" in out
    assert shell(hp, "create", root, "again")[1:] == (f"Node already exists: {root}\n", 1)
    assert shell(hp, "create", f"{root}/a", "A")[1:] == (f"Created {root}/a\n", 0)
    assert shell(hp, "create", "-s", f"{root}/s-", "x")[1:] == (f"Created {root}/s-0000000001\n", 0)
    assert shell(hp, "create", "-e", f"{root}/e", "x")[1:] == (f"Created {root}/e\n", 0)
    assert shell(hp, "create", "-c", f"{root}/c", "x")[1] == f"Created {root}/c\n"
    assert shell(hp, "create", "-t", "60000", f"{root}/t", "x")[1] == f"Created {root}/t\n"

    out, err, rc = shell(hp, "get", root)
    assert (body(out), err, rc) == ("rootdata", "", 0)
    out, _, _ = shell(hp, "get", "-s", f"{root}/a")
    lines = body(out).splitlines()
    assert lines[0] == "A"
    st = stat_of("\n".join(lines[1:]))
    assert (st["dataVersion"], st["dataLength"], st["numChildren"], st["ephemeralOwner"]) == ("0", "1", "0", "0x0")
    assert re.fullmatch(r"0x[0-9a-f]+", st["cZxid"]) and st["cZxid"] == st["mZxid"]
    assert re.fullmatch(r"[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \S+ \d{4}", st["ctime"]), st["ctime"]

    out, _, rc = shell(hp, "ls", root)
    assert (body(out), rc) == ("[a, c, s-0000000001, t]", 0)  # the ephemeral went with its session
    out, _, _ = shell(hp, "ls", "-s", root)
    lines = body(out).splitlines()
    assert lines[0] == "[a, c, s-0000000001, t]" and stat_of("\n".join(lines[1:]))["numChildren"] == "4"
    assert body(shell(hp, "ls", "-R", root)[0]).splitlines() == [
        root, f"{root}/a", f"{root}/c", f"{root}/s-0000000001", f"{root}/t"]

    assert shell(hp, "set", f"{root}/a", "B")[1:] == ("", 0)
    out, _, _ = shell(hp, "set", "-s", f"{root}/a", "CC")
    assert stat_of(body(out))["dataVersion"] == "2"
    assert shell(hp, "set", "-v", "0", f"{root}/a", "x")[1:] == (f"version No is not valid : {root}/a\n", 1)
    assert stat_of(body(shell(hp, "stat", f"{root}/a")[0]))["dataLength"] == "2"
    assert shell(hp, "stat", f"{root}/missing")[1:] == (f"Node does not exist: {root}/missing\n", 1)

    assert body(shell(hp, "getAcl", f"{root}/a")[0]) == "'world,'anyone\n: cdrwa"
    assert shell(hp, "setAcl", f"{root}/a", "world:anyone:cdr")[1:] == ("", 0)
    out, _, _ = shell(hp, "getAcl", "-s", f"{root}/a")
    assert body(out).startswith("'world,'anyone\n: cdr\ncZxid = ")
    assert shell(hp, "set", f"{root}/a", "x")[1:] == (f"Insufficient permission : {root}/a\n", 1)

    assert body(shell(hp, "sync", root)[0]) == "Sync is OK"
    assert body(shell(hp, "getAllChildrenNumber", root)[0]) == "4"
    assert body(shell(hp, "getEphemerals", root)[0]) == "[]"
    assert body(shell(hp, "whoami")[0]) == "Auth scheme: User\nip: 127.0.0.1"

    assert shell(hp, "delete", root)[1:] == (f"Node not empty: {root}\n", 1)
    assert shell(hp, "delete", "-v", "3", f"{root}/c")[1:] == (f"version No is not valid : {root}/c\n", 1)
    assert shell(hp, "delete", f"{root}/c")[1:] == ("", 0)
    assert shell(hp, "deleteall", root, "-b", "2")[1:] == ("", 0)
    assert shell(hp, "ls", root)[1:] == (f"Node does not exist: {root}\n", 1)


def test_one_shot_errors_and_exit_statuses(server, root):
    hp = server.hostport
    _, err, rc = shell(hp, "frobnicate")
    assert rc == 127 and err.endswith("Command not found: Command not found frobnicate\n")
    assert "\tls [-s] [-w] [-R] path\n" in err
    assert shell(hp, "get")[1:] == ("get [-s] [-w] path\n", 1)
    assert shell(hp, "ls", "-x", "/")[1:] == (
        "org.apache.commons.cli.UnrecognizedOptionException: Unrecognized option: -x\n", 1)
    assert shell(hp, "set", "-v")[1:] == (
        "org.apache.commons.cli.MissingArgumentException: Missing argument for option: v\n", 1)
    assert shell(hp, "ls", "relative")[1:] == ("Path must start with / character\n", 1)
    assert shell(hp, "create", "/a//b")[1:] == (
        'Invalid path string "/a//b" caused by empty node name specified @3\n', 1)
    assert shell(hp, "create", "-c", "-e", "/x")[1:] == (
        "-c cannot be combined with -s or -e. Containers cannot be ephemeral or sequential.\n", 1)
    assert shell(hp, "create", "-t", "0", "/x")[1:] == (
        "ttl must be positive and cannot be larger than: 1099511627775\n", 1)
    assert shell(hp, "create", f"{root}", "d", "nonsense")[1:] == (
        "nonsense does not have the form scheme:id:perm\nKeeperErrorCode = InvalidACL\nAcl is not valid : null\n", 1)
    assert shell(hp, "delete", "/")[1:] == ("Arguments are not valid : /\n", 1)
    assert shell(hp, "removewatches", root)[1:] == (f"KeeperErrorCode = No such watcher for {root}\n", 1)
    assert shell(hp, "addWatch", "-m", "sideways", root)[2] == 1
    out, err, rc = shell(hp, "quit")
    assert (err, rc) == ("", 0)


def test_chroot_and_read_only_flag(server, root):
    hp = server.hostport
    assert shell(hp, "create", root, "r")[2] == 0
    assert shell(f"{hp}{root}", "create", "/inside", "i")[1:] == ("Created /inside\n", 0)
    assert body(shell(f"{hp}{root}", "ls", "/")[0]) == "[inside]"
    assert body(shell(hp, "-r", "get", f"{root}/inside")[0]) == "i"
    assert shell(hp, "deleteall", root)[2] == 0


def test_unreachable_server_fails_fast_with_connection_loss():
    with socket_port() as port:
        start = time.monotonic()
        out, err, rc = shell(f"127.0.0.1:{port}", "ls", "/")
        assert (err, rc) == ("KeeperErrorCode = ConnectionLoss for /\n", 1)
        assert time.monotonic() - start < 10, "gave up only after the session timeout"
        out, err, rc = shell(f"127.0.0.1:{port}", "ls", "/", extra=("-timeout", "1000", "-waitforconnection"))
        assert rc == 1 and "ConnectionLoss" in err


class socket_port:
    """A port on which nothing listens (bound, never listened on, while in use)."""

    def __enter__(self):
        import socket
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


def test_help_and_bad_invocation():
    p = subprocess.run([oxkeeper_bin(), "shell", "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and p.stdout.startswith("Usage: oxkeeper shell [-server host:port")
    for cmd in ("addWatch", "removewatches", "getEphemerals", "printwatches", "whoami"):
        assert f"\t{cmd} " in p.stdout
    p = subprocess.run([oxkeeper_bin(), "shell", "-timeout", "soon"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "-timeout" in p.stderr


# ------------------------------------------------------------------------------------------ same as zkCli.sh
SCRIPT_COMMANDS = """\
create /R hello
create /R x
get /R
get -s /R
ls /R
ls -s /R
stat /R
set /R world
set -s /R w2
getAcl /R
getAcl -s /R
create /R/a 1
create /R/b 2
create /R/a/c 3
ls -R /R
frobnicate

history
create -e /R/e e
create -s /R/s s
getEphemerals /R
getAllChildrenNumber /R
sync /R
whoami
addauth digest u1:p1
whoami
create /R/sec s auth:u1:p1:cdrwa
getAcl /R/sec
printwatches
printwatches off
printwatches
printwatches on
redo 2
redo 99
history
ls /R extra
get /R /x
stat /R y
delete /R/b 0
ls
get
set /R
create
delete
deleteall
stat
getAcl
setAcl /R
addauth
sync
getAllChildrenNumber
addWatch
removewatches
ls -x /R
get -q /R
set -v
create -t abc /R/t
create -c -e /R/cc
create -t 100 -e /R/tt
create -t 0 /R/tt
create -t 100000 /R/tt
create -c /R/cont c
delete /R
delete -v 5 /R/a/c
set -v 5 /R/a/c x
delete /R/nonexist
set /R/nonexist x
create /R/nonexist/a
create /R/e/child
setAcl /R/a/c world:anyone:r
getAcl /R/a/c
set /R/a/c x
create /R/bad badacl foo
create /R/bad2 x world:anyone:rq
getAcl /R/bad2
create relative
ls bad
ls /R/
create /R/q q
set /R/q -1
set /R/q -x
ls -sw /R/q
set -v1 /R/q y
set /R/q -- -z
get /R/q
set /R/q "hello world"
get /R/q
set /R/q a"b c"
get /R/q
create /R/q2 "" world:anyone:r
deleteall /R/q -b x
deleteall /R/q -b 0
set /R/q --
get "/R"
delete /
ls -? /R
create /R/..
create /R/a//b
create -s /R/a/ seq
setAcl /R/a world:anyone:
setAcl -R /R world:anyone:cdrw
setAcl -R /R/a world:anyone:r
getAcl /R/a/c
setAcl -s /R/s0000000004 world:anyone:cdrwa
ls /R
"""

SCRIPT_WATCHES = """\
create /R r
addWatch /R
create /R/a a
set /R/a 1
removewatches /R
create /R/p p
addWatch -m persistent /R/p
set /R/p 2
create /R/p/k k
removewatches /R/p
set /R/p 3
removewatches /R/p
removewatches /R -c
addWatch -m bogus /R
addWatch
get -w /R/a
removewatches /R/a -d
get -w /R/a
set /R/a 4
ls -w /R
create /R/b b
stat -w /R/zz
create /R/zz z
ls -w /R/zz
create /R/zz/y y
create /R/o o
get -w /R/o
stat -w /R/o
set /R/o 5
ls -w /R/o
get -w /R/o
delete /R/o
deleteall /R
close
ls /
history
connect
ls /R
quit
"""


def normalize(text, prefix):
    """Output lines made comparable: times, zxids, session ids and the test's root path replaced, zkCli's logging
    and the usage listing (which names commands this shell does not have) dropped, watch events taken out (they
    are printed by another thread, in zkCli as here). Returns (lines, sorted events)."""
    text = text.replace(prefix, "/R")
    lines, events = [], []
    in_usage = False
    for ln in text.splitlines():
        if ln.startswith("SLF4J:") or ln == "WATCHER::" or ln.strip() == "":
            continue
        m = EVENT_RE.match(ln)
        if m:
            events.append(m.groups())
            continue
        if ln.startswith("ZooKeeper -server host:port") or ln.startswith("oxkeeper shell -server host:port"):
            in_usage = True
            continue
        if in_usage and ln.startswith("\t"):
            continue
        in_usage = False
        ln = re.sub(r"^(ctime|mtime) = .*", r"\1 = TIME", ln)
        ln = re.sub(r"^(cZxid|mZxid|pZxid) = 0x[0-9a-f]+$", r"\1 = ZXID", ln)
        ln = re.sub(r"^ephemeralOwner = 0x[0-9a-f]+$", lambda m: m.group(0) if m.group(0).endswith("0x0")
                    else "ephemeralOwner = SESSION", ln)
        lines.append(ln)
    return lines, sorted(events)


def compare_with_zkcli(hp, script):
    """Runs `script` (with /R standing for a fresh root) through zkCli.sh and through this shell, each on its own
    root; returns both normalized results."""
    results = {}
    for name in ("zkcli", "ours"):
        # Prefixes of one length: error messages give positions in the path.
        prefix = f"/{name[:2]}-{uuid.uuid4().hex[:8]}"
        stdin = script.replace("/R", prefix)
        run = zkcli if name == "zkcli" else shell
        out, err, rc = run(hp, stdin=stdin)
        results[name] = (normalize(out, prefix), normalize(err, prefix)[0], rc)
        # What zkCli left behind (its session created an auth-only node) is removed with the digest.
        cleanup = f"addauth digest u1:p1\ndeleteall {prefix}\n"
        shell(hp, stdin=cleanup)
    return results["zkcli"], results["ours"]


@pytest.mark.skipif(not have_zookeeper(), reason="zkCli.sh and java are needed for the comparison")
@pytest.mark.parametrize("script", [SCRIPT_COMMANDS, SCRIPT_WATCHES], ids=["commands", "watches"])
def test_piped_session_prints_what_zkcli_prints(server, script):
    (zk_out, zk_err, zk_rc), (our_out, our_err, our_rc) = compare_with_zkcli(server.hostport, script)
    assert our_out[0] == zk_out[0], "stdout differs from zkCli's"
    assert our_err == zk_err, "stderr differs from zkCli's"
    assert our_rc == zk_rc
    # Events: the same ones. zkCli's `quit` may exit before its event thread printed Closed.
    quit_closed = ("Closed", "None", "null")
    zk_events = [e for e in zk_out[1] if e != quit_closed]
    our_events = [e for e in our_out[1] if e != quit_closed]
    assert our_events == zk_events


@pytest.mark.skipif(not have_zookeeper(), reason="zkCli.sh and java are needed for the comparison")
def test_one_shot_exit_statuses_match_zkcli(server, root):
    hp = server.hostport
    cases = [("ls", "/"), ("ls", root), ("frobnicate",), ("get",), ("create", "/zookeeper"), ("quit",),
             ("printwatches",), ("ls", "-R", "/zookeeper")]
    for args in cases:
        zk_out, zk_err, zk_rc = zkcli(hp, *args)
        our_out, our_err, our_rc = shell(hp, *args)
        assert our_rc == zk_rc, args
        assert normalize(our_err, root)[0] == normalize(zk_err, root)[0], args
        assert normalize(our_out, root)[0] == normalize(zk_out, root)[0], args


# ------------------------------------------------------------------------------------------ events, piped
class Piped:
    """The shell reading commands from a pipe; its stdout collected by a thread."""

    def __init__(self, hp, *extra):
        self.proc = subprocess.Popen([oxkeeper_bin(), "shell", "-server", hp, *extra], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.out = ""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.out += line

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text, timeout=REPLY_TIMEOUT, after=0):
        def seen():
            with self.lock:
                return self.out.find(text, after) >= 0
        wait_until(seen, timeout, msg=f"{text!r} in the shell's output; got:\n{self.out}")
        with self.lock:
            return self.out.find(text, after) + len(text)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=REPLY_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def event(kind, path):
    return f"\nWATCHER::\n\nWatchedEvent state:SyncConnected type:{kind} path:{path}\n"


def test_watch_events_fire_while_the_shell_waits_for_input(server, root):
    hp = server.hostport
    sh = Piped(hp)
    try:
        pos = sh.wait_for("WatchedEvent state:SyncConnected type:None path:null")
        sh.send(f"create {root} r")
        sh.send(f"get -w {root}")
        pos = sh.wait_for("\nr\n", after=pos)
        # Changed by another session, while this one waits for its next command.
        assert shell(hp, "set", root, "changed")[2] == 0
        pos = sh.wait_for(event("NodeDataChanged", root), after=pos)
        sh.send(f"addWatch {root}")
        sh.send("sync /")
        pos = sh.wait_for("Sync is OK\n", after=pos)
        assert shell(hp, "create", f"{root}/kid", "k")[2] == 0
        pos = sh.wait_for(event("NodeCreated", f"{root}/kid"), after=pos)
        sh.send("printwatches off")
        sh.send("sync /")
        pos = sh.wait_for("Sync is OK\n", after=pos)
        assert shell(hp, "set", f"{root}/kid", "quiet")[2] == 0
        # The change's notification reaches this session before the answer to its next request.
        sh.send("sync /")
        pos = sh.wait_for("Sync is OK\n", after=pos)
        sh.send("printwatches on")
        sh.send("sync /")
        pos = sh.wait_for("Sync is OK\n", after=pos)
        assert shell(hp, "delete", f"{root}/kid")[2] == 0
        pos = sh.wait_for(event("NodeDeleted", f"{root}/kid"), after=pos)
        assert "NodeDataChanged path:" + f"{root}/kid" not in sh.out, "printed while printwatches was off"
        sh.send(f"deleteall {root}")
        sh.send("quit")
        sh.wait_for("\nWATCHER::\n\nWatchedEvent state:Closed type:None path:null\n", after=pos)
    finally:
        assert sh.close() == 0


def test_session_state_events_are_printed():
    srv = launch("oxkeeper")
    sh = None
    try:
        sh = Piped(srv.hostport)
        pos = sh.wait_for("WatchedEvent state:SyncConnected type:None path:null")
        halt(srv)
        pos = sh.wait_for("\nWATCHER::\n\nWatchedEvent state:Disconnected type:None path:null\n", after=pos)
        srv = launch("oxkeeper", data_of=srv)
        pos = sh.wait_for("WatchedEvent state:SyncConnected type:None path:null", after=pos)
        sh.send("ls /zookeeper")
        sh.wait_for("[", after=pos)
    finally:
        if sh is not None:
            sh.close()
        dispose(srv)


# ------------------------------------------------------------------------------------------ interactive (pty)
class Pty:
    """The shell on a pseudo-terminal, read with deadlines (a small `expect`)."""

    def __init__(self, argv, env):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                                     start_new_session=True)
        os.close(slave)
        self.fd = master
        self.buf = ""
        self.pos = 0

    def expect(self, text, timeout=REPLY_TIMEOUT):
        """Waits until `text` appears after what was matched before; returns what came before it."""
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(text, self.pos)
            if i >= 0:
                before = self.buf[self.pos:i]
                self.pos = i + len(text)
                return before
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; output after the last match:\n"
                                     f"{self.buf[self.pos:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the shell exited
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the shell exited while waiting for {text!r}; output:\n{self.buf!r}")
                self.buf += chunk.decode(errors="replace")

    def send(self, data):
        os.write(self.fd, data.encode())

    def type(self, text):
        """Types `text` one key at a time, each after the previous one was echoed, as a person types (rustyline
        with an external printer leaves typeahead unread until the next key)."""
        for ch in text:
            self.send(ch)
            self.expect(ch)

    def wait_exit(self, timeout=REPLY_TIMEOUT):
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            os.close(self.fd)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


UP = "\x1b[A"


@pytest.fixture
def terminal(tmp_path):
    started = []

    def start(hp):
        env = dict(os.environ, TERM="xterm", OXKEEPER_SHELL_HISTORY=str(tmp_path / "history"))
        t = Pty([oxkeeper_bin(), "shell", "-server", hp], env)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def test_interactive_prompt_completion_history_and_events(server, root, terminal):
    hp = server.hostport
    assert shell(hp, "create", root, "r")[2] == 0
    assert shell(hp, "create", f"{root}/abcdef", "x")[2] == 0
    t = terminal(hp)
    t.expect("Welcome to ZooKeeper!")
    t.expect("WatchedEvent state:SyncConnected type:None path:null")
    t.expect(f"[zk: {hp}(CONNECTED) 0] ")

    # A command name: "getAl" + Tab completes to the only match.
    t.type("getAl")
    t.send("\t")
    t.expect("lChildrenNumber")
    t.type(root)
    t.send("\r")
    t.expect("\n1\r\n")
    t.expect(f"[zk: {hp}(CONNECTED) 1] ")

    # A path: the parent's children are listed on the server.
    t.type(f"ls {root}/ab")
    t.send("\t")
    t.expect("cdef")
    t.send("\r")
    t.expect("[]")
    t.expect(f"(CONNECTED) 2] ")

    # Up-arrow recalls the previous command.
    t.send(UP)
    t.expect(f"ls {root}/abcdef")
    t.send("\x15")  # Ctrl-U: clear the line (redrawn before the next key is typed)
    t.expect("(CONNECTED) 2] ")
    t.type(f"get -w {root}/abcdef")
    t.send("\r")
    t.expect("x\r\n")
    t.expect("(CONNECTED) 3] ")

    # A watch fires while the shell waits at the prompt.
    assert shell(hp, "set", f"{root}/abcdef", "y")[2] == 0
    t.expect(f"WatchedEvent state:SyncConnected type:NodeDataChanged path:{root}/abcdef")

    t.type("history")
    t.send("\r")
    listed = t.expect("(CONNECTED) 4] ")
    for n, cmd in enumerate([f"getAllChildrenNumber {root}", f"ls {root}/abcdef", f"get -w {root}/abcdef",
                             "history"]):
        assert f"{n} - {cmd}\r\n" in listed, listed

    # Ctrl-D leaves with the last command's status.
    t.send("\x04")
    assert t.wait_exit() == 0

    # The history file keeps the lines for the next session.
    t2 = terminal(hp)
    t2.expect("(CONNECTED) 0] ")
    t2.send(UP)
    t2.expect("history")
    t2.send("\x15")
    t2.expect("(CONNECTED) 0] ")
    t2.type("close")
    t2.send("\r")
    t2.expect("WatchedEvent state:Closed type:None path:null")
    t2.expect(f"[zk: {hp}(CLOSED) 1] ")
    t2.type("quit")
    t2.send("\r")
    assert t2.wait_exit() == 0
    assert shell(hp, "deleteall", root)[2] == 0
