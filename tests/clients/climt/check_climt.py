#!/usr/bin/env python3
"""Drive the ZooKeeper C client's sample shell `cli_mt` (libzookeeper-mt 3.8) through stdin and check its output.

    check_climt.py host:port

cli_mt answers asynchronously (completion callbacks print "<path>: rc = N" etc. on stderr), so the
driver sends one command, waits for the line(s) that complete it, then sends the next. Watch
notifications are printed by cli_mt's global watcher as "Watcher <TYPE>_EVENT state = ... for path P".
kazoo is used as the "other client" (to make changes and to set up digest ACLs, which cli_mt cannot).
A second cli_mt goes through a cuttable TCP proxy to check that the C client's reconnect works:
same session, auth re-sent, and SetWatches (sent by the C client with xid -8) gives catch-up events.

cli_mt has no multi command, so multi is not covered here (see the Java and kazoo checks).
Prints one line per check and exits 1 if any failed.
"""
import os
import re
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cutproxy import CutProxy  # noqa: E402

CLI_MT = os.environ.get("CLI_MT", "/usr/lib/zookeeper/bin/cli_mt")
failures = []
passes = 0


def ok(name):
    global passes
    passes += 1
    print(f"PASS cli_mt: {name}", flush=True)


def bad(name, why):
    failures.append(name)
    print(f"FAIL cli_mt: {name}: {why}", flush=True)


class Fail(Exception):
    pass


class CliMt:
    def __init__(self, hp, label):
        self.label = label
        self.p = subprocess.Popen([CLI_MT, hp], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
        self.lines = []
        self.cursor = 0
        self.cv = threading.Condition()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        buf = b""
        while True:
            b = self.p.stdout.read1(65536) if hasattr(self.p.stdout, "read1") else os.read(self.p.stdout.fileno(), 65536)
            if not b:
                break
            buf += b
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with self.cv:
                    self.lines.append(line.decode("utf-8", "replace"))
                    self.cv.notify_all()
        with self.cv:
            if buf:
                self.lines.append(buf.decode("utf-8", "replace"))
            self.lines.append(None)  # EOF
            self.cv.notify_all()

    def send(self, cmd):
        self.p.stdin.write((cmd + "\n").encode())
        self.p.stdin.flush()

    def expect(self, pattern, timeout=10.0, what=None):
        """Wait for a line matching `pattern` (regex, full match) after the cursor; move the cursor past it."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                while self.cursor < len(self.lines):
                    line = self.lines[self.cursor]
                    self.cursor += 1
                    if line is None:
                        raise Fail(f"cli_mt exited while waiting for {pattern!r}")
                    m = rx.fullmatch(line)
                    if m:
                        return m
                left = end - time.monotonic()
                if left <= 0:
                    raise Fail(f"no line matching {pattern!r} within {timeout}s; recent output: {self.lines[-12:]!r}")
                self.cv.wait(left)

    def expect_block(self, patterns, timeout=10.0):
        """The patterns must match consecutive lines, the first one anywhere after the cursor.
        Watch event lines in between are skipped."""
        m0 = self.expect(patterns[0], timeout)
        res = [m0]
        for pat in patterns[1:]:
            line = self.next_line(timeout)
            while line.startswith("Watcher "):
                line = self.next_line(timeout)
            m = re.fullmatch(pat, line)
            if not m:
                raise Fail(f"expected a line matching {pat!r} after {res[-1].group(0)!r}, got {line!r}")
            res.append(m)
        return res

    def next_line(self, timeout=10.0):
        end = time.monotonic() + timeout
        with self.cv:
            while self.cursor >= len(self.lines):
                left = end - time.monotonic()
                if left <= 0:
                    raise Fail("no more output")
                self.cv.wait(left)
            line = self.lines[self.cursor]
            self.cursor += 1
            if line is None:
                raise Fail("cli_mt exited")
            return line

    def seen(self, pattern, since=0):
        rx = re.compile(pattern)
        with self.cv:
            return any(l is not None and rx.fullmatch(l) for l in self.lines[since:])

    def wait_seen(self, pattern, since=0, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.seen(pattern, since):
                return True
            time.sleep(0.05)
        return False

    def mark(self):
        with self.cv:
            return len(self.lines)

    def quit(self):
        try:
            self.send("quit")
        except OSError:
            pass
        try:
            self.p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        # The process has exited, but the reader thread may not have read the last of its output yet
        # (cli_mt flushes stdout at exit: `myid`'s line comes last): wait for the reader's EOF mark.
        end = time.monotonic() + 10
        with self.cv:
            while not (self.lines and self.lines[-1] is None) and time.monotonic() < end:
                self.cv.wait(max(0.0, end - time.monotonic()))
            return list(l for l in self.lines if l is not None)

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def require(cond, msg):
    if not cond:
        raise Fail(msg)
    return True


def step(name, fn):
    try:
        r = fn()
        ok(name)
        return r
    except Fail as e:
        bad(name, str(e))
    except Exception as e:  # noqa: BLE001
        bad(name, f"{type(e).__name__}: {e}")
    return None


STAT_LINES = [r"\tctime = .*", r"\tczxid=([0-9a-f]+)", r"\tmtime=.*", r"\tmzxid=([0-9a-f]+)",
              r"\tversion=([0-9a-f]+)\taversion=([0-9a-f]+)", r"\tephemeralOwner = ([0-9a-f]+)"]


def main():
    if len(sys.argv) != 2:
        print("usage: check_climt.py host:port", file=sys.stderr)
        return 2
    hp = sys.argv[1]
    from kazoo.client import KazooClient
    from kazoo.security import make_digest_acl

    C = "/climt-" + uuid.uuid4().hex[:12]
    kz = KazooClient(hosts=hp, timeout=10)
    kz.start(timeout=15)
    cli = CliMt(hp, "main")
    proxy = None
    cli2 = None
    try:
        m = step("connect: CONNECTED_STATE and a session id",
                 lambda: (cli.expect(r"Watcher SESSION_EVENT state = CONNECTED_STATE", 15), cli.expect(r"Got a new session id: 0x([0-9a-f]+)", 5))[1])
        sid = m.group(1) if m else None

        def create(path, flags="", name=None, rc=0, label=None, create2=False):
            cmd = ("create2 " if create2 else "create ") + (f"+{flags} " if flags else "") + path
            def f():
                cli.send(cmd)
                cli.expect(re.escape(f"Creating [{path}] node") + r".*")
                cli.expect(re.escape(f"[{path}]: rc = {rc}"))
                if rc == 0:
                    got = cli.next_line()
                    want = f"\tname = {name or path}"
                    if got != want:
                        raise Fail(f"expected {want!r}, got {got!r}")
                    if create2:
                        return [cli.expect(p) for p in STAT_LINES]
            return step(label or f"{cmd} -> rc {rc}", f)

        create(C)
        create(C + "/e", "e", label="create +e (ephemeral)")
        create(C + "/s", "s", name=C + "/s0000000001", label="create +s (sequential)")
        create(C + "/es", "es", name=C + "/es0000000002", label="create +es (ephemeral sequential)")
        create(C + "/c", "c", label="create +c (container)")
        create(C + "/t", "t=100000", label="create +t=100000 (TTL)")
        create(C, rc=-110, label="create existing -> rc -110 (NodeExists)")
        create(C + "/nope/x", rc=-101, label="create without parent -> rc -101 (NoNode)")
        create(C + "/e/x", rc=-108, label="create under an ephemeral -> rc -108 (NoChildrenForEphemerals)")
        st = create(C + "/c2", create2=True, label="create2 (returns a Stat)")
        if st:
            if st[4].group(1) == "0" and st[4].group(2) == "0" and st[5].group(1) == "0" and st[1].group(1) == st[3].group(1):
                ok("create2: stat version=0 aversion=0 ephemeralOwner=0 czxid=mzxid")
            else:
                bad("create2: stat version=0 aversion=0 ephemeralOwner=0 czxid=mzxid", f"{[x.group(0) for x in st]}")
        st = create(C + "/e2", "e", create2=True, label="create2 +e (stat of an ephemeral)")
        if st and sid:
            if st[5].group(1) == sid:
                ok("create2 +e: ephemeralOwner is the session id")
            else:
                bad("create2 +e: ephemeralOwner is the session id", f"{st[5].group(1)} != {sid}")

        def get(path, value, version, label=None, rc=0):
            def f():
                cli.send(f"get {path}")
                cli.expect(re.escape(f"{path}: rc = {rc}"))
                if rc != 0:
                    return
                got = cli.next_line()
                if got != f" value_len = {len(value)}":
                    raise Fail(f"expected value_len = {len(value)}, got {got!r}")
                got = cli.next_line()
                # cli_mt writes the raw value and then "\nStat:" -- an empty value leaves an empty line
                if got != value:
                    raise Fail(f"expected value {value!r}, got {got!r}")
                cli.expect("Stat:")
                stl = [cli.expect(p) for p in STAT_LINES]
                if int(stl[4].group(1), 16) != version:
                    raise Fail(f"expected version {version}, got {stl[4].group(0)!r}")
                return stl
            return step(label or f"get {path}", f)

        get(C, "new", 0, "get (data 'new', version 0; sets a watch)")
        mk = cli.mark()
        step("set -> rc 0, version 1", lambda: (cli.send(f"set {C} hello"), cli.expect(re.escape(f"{C}: rc = 0 Stat:")),
                                                require([cli.expect(p) for p in STAT_LINES][4].group(1) == "1", "version not 1")))
        if cli.wait_seen(re.escape(f"Watcher CHANGED_EVENT state = CONNECTED_STATE for path {C}"), mk):
            ok("get watch: CHANGED_EVENT after set")
        else:
            bad("get watch: CHANGED_EVENT after set", "not printed")
        get(C, "hello", 1, "get after set")
        get(C + "/missing", "", 0, "get missing -> rc -101", rc=-101)
        step("set missing -> rc -101", lambda: (cli.send(f"set {C}/missing x"), cli.expect(re.escape(f"{C}/missing: rc = -101 Stat:")), cli.expect("null")))

        kids = {"e", "s0000000001", "es0000000002", "c", "t", "c2", "e2"}

        def ls(path, want, two=False):
            def f():
                cli.send(("ls2 " if two else "ls ") + path)
                cli.expect(re.escape(f"{path}: rc = 0"))
                got = set()
                while True:
                    line = cli.next_line()
                    if line.startswith("time = "):
                        break
                    if line.startswith("Watcher "):
                        continue
                    got.add(line.strip())
                if got != want:
                    raise Fail(f"expected children {sorted(want)}, got {sorted(got)}")
                if two:
                    return [cli.expect(p) for p in STAT_LINES]
            return step(("ls2 " if two else "ls ") + "(children" + (" + stat)" if two else ")"), f)

        ls(C, kids)
        ls(C, kids, two=True)

        def exists_missing():
            cli.send(f"exists {C}/nope")
            cli.expect(re.escape(f"Error -101 for {C}/nope"))
        step("exists missing -> ZNONODE", exists_missing)

        def exists_present():
            mk = cli.mark()
            cli.send(f"exists {C}")
            cli.send(f"sync {C}")
            cli.expect(re.escape(f"[{C}]: rc = 0"))
            if cli.seen(r"Error .*", mk):
                raise Fail("exists printed an error")
        step("exists existing -> ZOK (then sync)", exists_present)

        step("sync -> rc 0, path echoed", lambda: (cli.send(f"sync {C}"), cli.expect(re.escape(f"[{C}]: rc = 0")),
                                                  require(cli.next_line() == f"\tname = {C}", "no '\\tname = <path>' line")))

        def wexists():
            cli.send(f"wexists {C}/w")
            cli.expect(re.escape(f"Error -101 for {C}/w"))
            mk = cli.mark()
            kz.create(C + "/w", b"x")
            if not cli.wait_seen(re.escape(f"Watcher CREATED_EVENT state = CONNECTED_STATE for path {C}/w"), mk):
                raise Fail("no CREATED_EVENT")
        step("wexists on a missing node, other client creates it -> CREATED_EVENT", wexists)

        def child_watch():
            mk = cli.mark()
            kz.create(C + "/k", b"")
            if not cli.wait_seen(re.escape(f"Watcher CHILD_EVENT state = CONNECTED_STATE for path {C}"), mk):
                raise Fail("no CHILD_EVENT")
        # the ls2 above left a child watch on C (ls/ls2 watch with the global watcher); the create of /w fired it
        step("ls watch: CHILD_EVENT when another client adds a child", lambda: (cli.send(f"ls {C}"), cli.expect(re.escape(f"{C}: rc = 0")), cli.expect(r"time = .*"), child_watch()))

        def delete_watch():
            get(C + "/c2", "new", 0, "get /c2 (sets a data watch)")
            mk = cli.mark()
            kz.delete(C + "/c2")
            if not cli.wait_seen(re.escape(f"Watcher DELETED_EVENT state = CONNECTED_STATE for path {C}/c2"), mk):
                raise Fail("no DELETED_EVENT")
        step("get watch: DELETED_EVENT when another client deletes the node", delete_watch)

        step("delete missing -> rc -101", lambda: (cli.send(f"delete {C}/nope"), cli.expect(re.escape(f"{C}/nope: rc = -101"))))
        step("delete non-empty -> rc -111", lambda: (cli.send(f"delete {C}"), cli.expect(re.escape(f"{C}: rc = -111"))))
        step("delete -> rc 0", lambda: (cli.send(f"delete {C}/k"), cli.expect(re.escape(f"{C}/k: rc = 0"))))

        # digest ACLs and addauth
        kz.create(C + "/secure", b"private", acl=[make_digest_acl("cu", "cpw", all=True)])
        get(C + "/secure", "", 0, "get on a digest-protected node -> rc -102 (NoAuth)", rc=-102)
        step("addauth digest (no output)", lambda: cli.send("addauth digest cu:cpw"))
        get(C + "/secure", "private", 0, "get after addauth")

        step("config (getconfig of /zookeeper/config) -> rc 0", lambda: (cli.send("config"), cli.expect(re.escape("/zookeeper/config: rc = 0"))))

        # 'od': 200 pipelined async set+get pairs of 64 KiB values on /od
        def od():
            try:
                kz.create("/od", b"")
            except Exception:  # noqa: BLE001  (left over)
                pass
            cli.send("od")
            cli.expect(r"od command response: rc = 0 Stat:", 15)
            cli.expect(r"Recvd 200 responses for 200 requests sent", 60)
            with cli.cv:
                bad_rc = [l for l in cli.lines if l and l.startswith("Data completion /od rc = ") and not l.endswith("rc = 0")]
            if bad_rc:
                raise Fail(f"failed completions: {bad_rc[:3]}")
            data, _ = kz.get("/od")
            if data != b"\xff" * 65535:
                raise Fail(f"final /od value has {len(data)} bytes")
        step("od: 200 pipelined 64 KiB set+get pairs all rc 0", od)
        try:
            kz.delete("/od")
        except Exception:  # noqa: BLE001
            pass

        # reconnect through a proxy: same session, auth re-sent, SetWatches (xid -8) catch-up events
        R = C + "/re"
        kz.create(R, b"")
        for n in ("data", "del", "kids", "same"):
            kz.create(f"{R}/{n}", b"0")
        kz.create(f"{R}/secure", b"only-re", acl=[make_digest_acl("re", "pw", all=True)])
        proxy = CutProxy(hp)
        cli2 = CliMt(proxy.hostport, "proxied")
        m2 = step("proxied: connected", lambda: (cli2.expect(r"Watcher SESSION_EVENT state = CONNECTED_STATE", 15),
                                                 cli2.expect(r"Got a new session id: 0x([0-9a-f]+)", 5))[1])

        def c2_get(path, value, rc=0):
            cli2.send(f"get {path}")
            cli2.expect(re.escape(f"{path}: rc = {rc}"))
            if rc == 0:
                cli2.expect(re.escape(f" value_len = {len(value)}"))
                line = cli2.next_line()
                if line != value:
                    raise Fail(f"expected {value!r}, got {line!r}")
                cli2.expect("Stat:")

        step("proxied: addauth + get protected node", lambda: (cli2.send("addauth digest re:pw"), c2_get(f"{R}/secure", "only-re")))
        step("proxied: set watches (get, get, ls, get on an unchanged node, wexists)", lambda: (
            c2_get(f"{R}/data", "0"), c2_get(f"{R}/del", "0"), c2_get(f"{R}/same", "0"),
            cli2.send(f"ls {R}/kids"), cli2.expect(re.escape(f"{R}/kids: rc = 0")), cli2.expect(r"time = .*"),
            cli2.send(f"wexists {R}/new"), cli2.expect(re.escape(f"Error -101 for {R}/new"))))
        mk = cli2.mark()
        proxy.refuse(True)
        proxy.cut()
        if cli2.wait_seen(r"Watcher SESSION_EVENT state = CONNECTING_STATE", mk, 10):
            ok("proxied: connection cut -> CONNECTING_STATE")
        else:
            bad("proxied: connection cut -> CONNECTING_STATE", f"not printed; output {cli2.lines[mk:]!r}")
        kz.set(f"{R}/data", b"1")
        kz.delete(f"{R}/del")
        kz.create(f"{R}/kids/k", b"")
        kz.create(f"{R}/new", b"")
        time.sleep(1.0)
        proxy.refuse(False)
        if cli2.wait_seen(r"Watcher SESSION_EVENT state = CONNECTED_STATE", mk, 20):
            ok("proxied: reconnected -> CONNECTED_STATE")
        else:
            bad("proxied: reconnected -> CONNECTED_STATE", f"not printed; output {cli2.lines[mk:]!r}")
        if cli2.seen(r"Got a new session id: .*", mk):
            bad("proxied: same session after reconnect", "a new session id was printed")
        else:
            ok("proxied: same session after reconnect")
        for ev, path in (("CHANGED_EVENT", f"{R}/data"), ("DELETED_EVENT", f"{R}/del"), ("CHILD_EVENT", f"{R}/kids"), ("CREATED_EVENT", f"{R}/new")):
            if cli2.wait_seen(re.escape(f"Watcher {ev} state = CONNECTED_STATE for path {path}"), mk, 10):
                ok(f"proxied: SetWatches catch-up {ev} {path}")
            else:
                bad(f"proxied: SetWatches catch-up {ev} {path}", f"not printed; output {cli2.lines[mk:]!r}")
        time.sleep(0.5)
        if cli2.seen(re.escape(f"Watcher ") + r".*" + re.escape(f"for path {R}/same"), mk):
            bad("proxied: no catch-up event for an unchanged node", "printed")
        else:
            ok("proxied: no catch-up event for an unchanged node")
        step("proxied: auth re-sent after reconnect (protected get rc 0)", lambda: c2_get(f"{R}/secure", "only-re"))
        mk = cli2.mark()
        kz.set(f"{R}/same", b"1")
        if cli2.wait_seen(re.escape(f"Watcher CHANGED_EVENT state = CONNECTED_STATE for path {R}/same"), mk, 10):
            ok("proxied: re-registered watch fires after reconnect")
        else:
            bad("proxied: re-registered watch fires after reconnect", "no CHANGED_EVENT")
        cli2.send("myid")   # printed on stdout, which cli_mt flushes at exit
        out2 = cli2.quit()
        if m2 is not None and f"session Id = {m2.group(1)}" in out2:
            ok("proxied: myid shows the original session id after the reconnect")
        else:
            bad("proxied: myid shows the original session id after the reconnect", f"output tail {out2[-5:]!r}")

        # quitting closes the session: the ephemerals go away
        cli.quit()

        def ephemerals_gone():
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not kz.exists(C + "/e") and not kz.exists(C + "/es0000000002") and not kz.exists(C + "/e2"):
                    return
                time.sleep(0.1)
            raise Fail("ephemerals still exist after quit")
        step("quit closes the session: ephemerals deleted", ephemerals_gone)
    finally:
        cli.kill()
        if cli2:
            cli2.kill()
        if proxy:
            proxy.close()
        try:
            kz.add_auth("digest", "cu:cpw")
            kz.add_auth("digest", "re:pw")
            kz.delete(C, recursive=True)
        except Exception as e:  # noqa: BLE001
            print(f"(cleanup of {C} failed: {e})", flush=True)
        kz.stop()
        kz.close()
    print(f"cli_mt: {passes} checks passed, {len(failures)} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
