#!/usr/bin/env python3
"""Drive Apache ZooKeeper's own shell (zkCli.sh, Java client 3.8) non-interactively and check what it prints.

    check_zkcli.py host:port

Commands are piped into one zkCli.sh process per session. Before every command the driver inserts a
marker command (`ls /zkcli-mark-N`, which fails with "Node does not exist: /zkcli-mark-N"), so the
output can be cut into one block per command. Watch notifications ("WATCHER::" blocks) are printed by
zkCli's event thread at unpredictable places: they are taken out of the blocks and checked per session.
A few commands also run in one-shot mode (`zkCli.sh -server hp cmd args`) to check the exit status.

Prints one line per check (PASS/FAIL) and exits 1 if any check failed.
"""
import base64
import hashlib
import os
import re
import subprocess
import sys
import uuid

ZKCLI = os.environ.get("ZKCLI", "/usr/share/zookeeper/bin/zkCli.sh")
MARK = "/zkcli-mark-"
failures = []
passes = 0


def ok(name):
    global passes
    passes += 1
    print(f"PASS {name}", flush=True)


def bad(name, why):
    failures.append(name)
    print(f"FAIL {name}: {why}", flush=True)


def digest(user_pw):
    user = user_pw.split(":", 1)[0]
    return user + ":" + base64.b64encode(hashlib.sha1(user_pw.encode()).digest()).decode()


def clean_lines(text):
    out = []
    for line in text.splitlines():
        if line.startswith("SLF4J:"):
            continue
        out.append(line)
    return out


EVENT_RE = re.compile(r"^WatchedEvent state:(\S+) type:(\S+) path:(.*)$")
MARK_RE = re.compile(r"(?:^|[\s:])" + re.escape(MARK) + r"(\d+)$")


def split_events(lines):
    """Separates zkCli's watch notifications from the commands' output: (output lines, events).

    zkCli's event thread prints "\\nWATCHER::" and "\\nWatchedEvent ..." while the main thread prints command
    output, so they interleave, even inside a line: `ls` prints a listing piece by piece ("[", each child, ", ",
    "]\\n"), and a notification can land between two children. A line cut that way is followed directly by
    "WATCHER::" (at a line's end there is an empty line between them); its rest is the first output line after
    the event, and is joined back to it."""
    out, events = [], []
    cut = False
    prev = ""
    for line in lines:
        m = EVENT_RE.match(line)
        if m:
            events.append((m.group(1), m.group(2), m.group(3)))
        elif line == "WATCHER::":
            cut = cut or (prev != "" and bool(out) and out[-1] == prev)
        elif cut:
            if line != "":
                out[-1] += line
                cut = False
        else:
            out.append(line)
        prev = line
    return out, events


def split_events_self_check():
    """`split_events` on output shapes zkCli produces: None if it reads them right, else what it got wrong."""
    ev = "WatchedEvent state:SyncConnected type:NodeDataChanged path:/r/s"
    cases = [
        # a notification inside an `ls` listing (seen in CI): the listing is one line again
        (["[a, b", "WATCHER::", "", ev, ", c]", "next"], ["[a, b, c]", "next"]),
        # at a line's end: nothing joined
        (["[a, b]", "", "WATCHER::", "", ev, "Created /r/x"], ["[a, b]", "", "", "Created /r/x"]),
        # two notifications inside one line
        (["[a", "WATCHER::", "", ev, "WATCHER::", "", ev, ", b]"], ["[a, b]"]),
        # before any output
        (["WATCHER::", "", ev, "foo"], ["", "foo"]),
    ]
    for raw, want in cases:
        got, events = split_events(raw)
        if got != want or len(events) != raw.count(ev):
            return f"split_events({raw!r}) = {got!r}, {len(events)} events; expected {want!r}"
    return None


def run_session(hp, cmds, timeout=120):
    """Run the commands in one zkCli process. Returns (blocks, events, raw): blocks[i] = output lines of cmds[i]."""
    script = []
    for i, c in enumerate(cmds):
        script.append(f"ls {MARK}{i}")
        script.append(c)
    script.append(f"ls {MARK}{len(cmds)}")
    script.append("quit")
    try:
        p = subprocess.run([ZKCLI, "-server", hp], input="\n".join(script) + "\n", stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise RuntimeError(f"zkCli.sh did not finish within {timeout} s; output so far:\n{out}")
    lines, events = split_events(clean_lines(p.stdout))
    blocks = {}
    cur = None
    for line in lines:
        m = MARK_RE.search(line)
        if m:
            cur = int(m.group(1))
            blocks[cur] = []
            continue
        if cur is not None:
            blocks[cur].append(line)
    result = []
    for k in range(len(cmds)):
        if k not in blocks or (k + 1) not in blocks:
            raise RuntimeError(f"zkCli output could not be split at command {k} ({cmds[k]!r}); raw output:\n{p.stdout}")
        result.append([l for l in blocks[k] if l.strip() != ""])
    return result, events, p.stdout


def parse_stat(lines):
    st = {}
    for l in lines:
        m = re.match(r"^(\w+) = (.*)$", l)
        if m:
            st[m.group(1)] = m.group(2)
    return st


STAT_KEYS = ["cZxid", "ctime", "mZxid", "mtime", "pZxid", "cversion", "dataVersion", "aclVersion", "ephemeralOwner", "dataLength", "numChildren"]


class Session:
    """Collects (command, check) pairs, runs them in one zkCli process, then evaluates the checks."""

    def __init__(self, name):
        self.name = name
        self.steps = []

    def add(self, cmd, check=None, label=None):
        self.steps.append((cmd, check, label or cmd))

    def run(self, hp):
        cmds = [s[0] for s in self.steps]
        try:
            blocks, events, raw = run_session(hp, cmds)
        except Exception as e:  # noqa: BLE001
            bad(f"zkcli {self.name}: session output", str(e))
            return None, []
        ctx = {}
        for (cmd, check, label), out in zip(self.steps, blocks):
            if check is None:
                continue
            try:
                why = check(out, ctx)
            except Exception as e:  # noqa: BLE001
                why = f"checker raised {e!r}"
            if why:
                bad(f"zkcli {self.name}: {label}", f"{why}; output was {out!r}")
            else:
                ok(f"zkcli {self.name}: {label}")
        return ctx, events


# ---------------------------------------------------------------- small check builders

def lines_eq(*expected):
    def c(out, ctx):
        if out != list(expected):
            return f"expected {list(expected)!r}"
    return c


def empty(out, ctx):
    if out:
        return "expected no output"


def listing(*names):
    want = sorted(names)

    def c(out, ctx):
        if len(out) != 1 or not (out[0].startswith("[") and out[0].endswith("]")):
            return "expected one [..] line"
        got = [x.strip() for x in out[0][1:-1].split(",") if x.strip()]
        if sorted(got) != want:
            return f"expected the set {want}"
    return c


def stat_is(data=None, store=None, **want):
    """Output = optional data line(s) then the 11 stat lines; compare selected fields."""
    def c(out, ctx):
        st = parse_stat(out)
        missing = [k for k in STAT_KEYS if k not in st]
        if missing:
            return f"stat fields missing: {missing}"
        if data is not None:
            d = [l for l in out if not re.match(r"^(\w+) = ", l)]
            if d != [data]:
                return f"expected data line {data!r}"
        for k, v in want.items():
            if callable(v):
                why = v(st[k], ctx, st)
                if why:
                    return f"{k}: {why}"
            elif st[k] != str(v):
                return f"expected {k} = {v}, got {st[k]}"
        if store:
            ctx[store] = st
    return c


def nonzero_owner(val, ctx, st):
    if val == "0x0":
        return "expected a session id, got 0x0"


def same_as(key, field):
    def f(val, ctx, st):
        if key not in ctx:
            return f"no stored {key}"
        if ctx[key][field] != val:
            return f"expected {ctx[key][field]} (as {key}.{field})"
    return f


def acl_is(*entries, with_stat=None):
    """entries: ("world", "anyone", "cdrwa") ..."""
    exp = []
    for scheme, ident, perms in entries:
        exp += [f"'{scheme},'{ident}", f": {perms}"]

    def c(out, ctx):
        acl_lines = [l for l in out if not re.match(r"^(\w+) = ", l)]
        if acl_lines != exp:
            return f"expected ACL lines {exp!r}"
        if with_stat:
            st = parse_stat(out)
            for k, v in with_stat.items():
                if st.get(k) != str(v):
                    return f"expected stat {k} = {v}, got {st.get(k)}"
    return c


def set_of_lines(*want):
    def c(out, ctx):
        if sorted(out) != sorted(want):
            return f"expected the lines {sorted(want)!r} in any order"
    return c


def ephemeral_list(*paths):
    want = sorted(paths)

    def c(out, ctx):
        if len(out) != 1 or not out[0].startswith("["):
            return "expected one [..] line"
        got = sorted(x.strip() for x in out[0][1:-1].split(",") if x.strip())
        if got != want:
            return f"expected {want}"
    return c


def check_events(name, events, expected, forbidden=(), counts=None):
    for e in expected:
        if e in events:
            ok(f"zkcli {name}: event {e[1]} {e[2]}")
        else:
            bad(f"zkcli {name}: event {e[1]} {e[2]}", f"not printed; events seen: {events}")
    for e in forbidden:
        if e in events:
            bad(f"zkcli {name}: no event {e[1]} {e[2]}", f"printed; events seen: {events}")
        else:
            ok(f"zkcli {name}: no event {e[1]} {e[2]}")
    for e, n in (counts or {}).items():
        got = events.count(e)
        if got == n:
            ok(f"zkcli {name}: event {e[1]} {e[2]} printed exactly {n}x")
        else:
            bad(f"zkcli {name}: event {e[1]} {e[2]} printed exactly {n}x", f"printed {got}x; events seen: {events}")


def main():
    if len(sys.argv) != 2:
        print("usage: check_zkcli.py host:port", file=sys.stderr)
        return 2
    hp = sys.argv[1]
    why = split_events_self_check()
    if why:
        bad("zkcli output parser", why)
        return 1
    R = "/zkcli-" + uuid.uuid4().hex[:12]
    R2 = R + "-oneshot"
    u1 = digest("u1:p1")

    # ------------------------------------------------------------ session A: the bulk of the commands
    a = Session("A")
    a.add(f"create {R} rootdata", lines_eq(f"Created {R}"))
    a.add(f"create {R}/p pdata", lines_eq(f"Created {R}/p"))
    a.add(f"create -e {R}/e edata", lines_eq(f"Created {R}/e"), "create -e")
    a.add(f"create -s {R}/s- sdata", lines_eq(f"Created {R}/s-0000000002"), "create -s (suffix = parent's child-create count)")
    a.add(f"create -s -e {R}/es- x", lines_eq(f"Created {R}/es-0000000003"), "create -s -e")
    a.add(f"create -c {R}/c cdata", lines_eq(f"Created {R}/c"), "create -c (container)")
    a.add(f"create -t 100000 {R}/t tdata", lines_eq(f"Created {R}/t"), "create -t (TTL)")
    a.add(f"create -s -t 100000 {R}/ts- x", lines_eq(f"Created {R}/ts-0000000006"), "create -s -t (sequential TTL)")
    a.add(f"create {R}/p dup", lines_eq(f"Node already exists: {R}/p"), "create existing -> Node already exists")
    a.add(f"create {R}/nope/x", lines_eq(f"Node does not exist: {R}/nope/x"), "create without parent -> Node does not exist")
    a.add(f"create {R}/e/child", lines_eq(f"Ephemerals cannot have children: {R}/e/child"), "create under ephemeral -> Ephemerals cannot have children")
    a.add(f"get {R}/p", lines_eq("pdata"))
    same_czxid = lambda v, ctx, st: None if v == st["cZxid"] else f"expected cZxid {st['cZxid']}"  # noqa: E731
    a.add(f"get -s {R}/p", stat_is(data="pdata", store="p", dataVersion=0, dataLength=5, numChildren=0, cversion=0, aclVersion=0,
                                    ephemeralOwner="0x0", mZxid=same_czxid, pZxid=same_czxid), "get -s (persistent)")
    a.add(f"get -s {R}/e", stat_is(data="edata", store="e", ephemeralOwner=nonzero_owner, dataLength=5), "get -s (ephemeral: owner = session id)")
    a.add(f"get -s {R}/es-0000000003", stat_is(data="x", ephemeralOwner=same_as("e", "ephemeralOwner")), "get -s (ephemeral sequential: same owner)")
    a.add(f"get -s {R}/c", stat_is(data="cdata", ephemeralOwner="0x0"), "get -s (container: owner shown as 0x0)")
    a.add(f"get -s {R}/t", stat_is(data="tdata", ephemeralOwner="0x0"), "get -s (TTL: owner shown as 0x0)")
    a.add(f"get {R}/missing", lines_eq(f"Node does not exist: {R}/missing"))
    a.add(f"set {R}/p pdata2", empty)
    a.add(f"set -s {R}/p pdata3", stat_is(dataVersion=2, dataLength=6, cZxid=same_as("p", "cZxid")), "set -s (stat after two sets)")
    a.add(f"set -v 0 {R}/p x", lines_eq(f"version No is not valid : {R}/p"), "set -v with a stale version -> BadVersion")
    a.add(f"set -v 2 {R}/p pdata4", empty, "set -v with the current version")
    a.add(f"stat {R}/p", stat_is(dataVersion=3, dataLength=6, numChildren=0, ephemeralOwner="0x0"), "stat")
    a.add(f"stat {R}/missing", lines_eq(f"Node does not exist: {R}/missing"))
    a.add(f"ls {R}", listing("c", "e", "es-0000000003", "p", "s-0000000002", "t", "ts-0000000006"))
    a.add(f"ls -s {R}", lambda out, ctx: (listing("c", "e", "es-0000000003", "p", "s-0000000002", "t", "ts-0000000006")(out[:1], ctx)
                                           or stat_is(numChildren=7, cversion=7, dataLength=8)(out[1:], ctx)), "ls -s (children + stat)")
    a.add(f"create {R}/p/q", lines_eq(f"Created {R}/p/q"))
    a.add(f"create {R}/p/q/r rr", lines_eq(f"Created {R}/p/q/r"))
    a.add(f"ls -R {R}", set_of_lines(R, f"{R}/c", f"{R}/e", f"{R}/es-0000000003", f"{R}/p", f"{R}/s-0000000002", f"{R}/t",
                                     f"{R}/ts-0000000006", f"{R}/p/q", f"{R}/p/q/r"), "ls -R")
    a.add(f"getAllChildrenNumber {R}", lines_eq("9"))
    a.add(f"getAllChildrenNumber {R}/p", lines_eq("2"))
    a.add(f"getAllChildrenNumber /zookeeper", lambda out, ctx: None if len(out) == 1 and out[0].isdigit() and int(out[0]) >= 2 else "expected a number >= 2")
    a.add(f"getEphemerals {R}", ephemeral_list(f"{R}/e", f"{R}/es-0000000003"))
    a.add(f"getEphemerals {R}/es", ephemeral_list(f"{R}/es-0000000003"), "getEphemerals with a name prefix")
    a.add(f"getEphemerals {R}/p", ephemeral_list(), "getEphemerals matching nothing")
    a.add(f"getAcl {R}/p", acl_is(("world", "anyone", "cdrwa")))
    a.add(f"setAcl -s {R}/p world:anyone:cdr", stat_is(aclVersion=1, dataVersion=3), "setAcl -s (stat shows aclVersion 1)")
    a.add(f"getAcl -s {R}/p", acl_is(("world", "anyone", "cdr"), with_stat={"aclVersion": 1}), "getAcl -s")
    a.add(f"set {R}/p nowrite", lines_eq(f"Insufficient permission : {R}/p"), "set without WRITE -> Insufficient permission")
    a.add(f"setAcl {R}/p world:anyone:cdrwa", lines_eq(f"Insufficient permission : {R}/p"), "setAcl without ADMIN -> Insufficient permission")
    a.add(f"setAcl -v 7 {R}/s-0000000002 world:anyone:r", lines_eq(f"version No is not valid : {R}/s-0000000002"), "setAcl -v stale -> BadVersion")
    a.add(f"sync {R}", lines_eq("Sync is OK"))
    a.add("whoami", lines_eq("Auth scheme: User", "ip: 127.0.0.1"), "whoami before addauth")
    a.add("addauth digest u1:p1", empty)
    a.add("whoami", set_of_lines("Auth scheme: User", "digest: u1", "ip: 127.0.0.1"), "whoami after addauth digest")
    a.add(f"create {R}/secure sec auth:u1:p1:cdrwa", lines_eq(f"Created {R}/secure"), "create with auth ACL")
    a.add(f"getAcl {R}/secure", acl_is(("digest", u1, "cdrwa")), "getAcl shows digest id (base64 SHA1)")
    a.add(f"get {R}/secure", lines_eq("sec"), "get own auth-only node")
    a.add(f"create {R}/dig d digest:{u1}:cdrwa,world:anyone:r", lines_eq(f"Created {R}/dig"), "create with explicit digest + world ACL")
    a.add(f"getAcl {R}/dig", acl_is(("digest", u1, "cdrwa"), ("world", "anyone", "r")))
    a.add(f"delete {R}/p", lines_eq(f"Node not empty: {R}/p"), "delete non-empty -> Node not empty")
    a.add(f"delete -v 5 {R}/c", lines_eq(f"version No is not valid : {R}/c"), "delete -v stale -> BadVersion")
    a.add(f"delete -v 0 {R}/c", empty, "delete -v current")
    a.add(f"delete {R}/c", lines_eq(f"Node does not exist: {R}/c"), "delete missing -> Node does not exist")
    a.add(f"deleteall {R}/p", empty, "deleteall (subtree, multi-based)")
    a.add(f"ls {R}", listing("dig", "e", "es-0000000003", "s-0000000002", "secure", "t", "ts-0000000006"), "ls after deletes")
    a.add("delete /zookeeper", lines_eq("Arguments are not valid : /zookeeper"), "delete /zookeeper -> BadArguments")
    a.add("set /zookeeper/config x", lines_eq("Insufficient permission : /zookeeper/config"), "set /zookeeper/config -> NoAuth")
    # watches
    a.add(f"get -w {R}/s-0000000002", lines_eq("sdata"), "get -w")
    a.add(f"set {R}/s-0000000002 new", empty)
    a.add(f"ls -w {R}", listing("dig", "e", "es-0000000003", "s-0000000002", "secure", "t", "ts-0000000006"), "ls -w")
    a.add(f"create {R}/new", lines_eq(f"Created {R}/new"))
    a.add(f"stat -w {R}/missing2", lines_eq(f"Node does not exist: {R}/missing2"), "stat -w on a missing node")
    a.add(f"create {R}/missing2", lines_eq(f"Created {R}/missing2"))
    a.add(f"ls -w {R}/new", listing())
    a.add(f"delete {R}/new", empty)
    a.add(f"addWatch {R}/rec", empty, "addWatch (default PERSISTENT_RECURSIVE)")
    a.add(f"create {R}/rec", lines_eq(f"Created {R}/rec"))
    a.add(f"create {R}/rec/a", lines_eq(f"Created {R}/rec/a"))
    a.add(f"set {R}/rec/a x", empty)
    a.add(f"addWatch -m PERSISTENT {R}/pers", empty, "addWatch -m PERSISTENT")
    a.add(f"create {R}/pers", lines_eq(f"Created {R}/pers"))
    a.add(f"set {R}/pers z", empty)
    a.add(f"set {R}/pers zz", empty)
    a.add(f"create {R}/pers/k", lines_eq(f"Created {R}/pers/k"))
    a.add(f"removewatches {R}/pers", empty, "removewatches (persistent)")
    a.add(f"set {R}/pers zzz", empty, "set after removewatches")
    a.add(f"removewatches {R}/none", lines_eq(f"KeeperErrorCode = No such watcher for {R}/none"), "removewatches without a watch -> No such watcher")
    a.add(f"removewatches {R}/rec -a", empty, "removewatches -a (recursive)")
    a.add(f"create {R}/rec/b", lines_eq(f"Created {R}/rec/b"), "create after recursive watch removed")
    # quota: the client writes /zookeeper/quota/..., the server maintains zookeeper_stats
    a.add(f"setquota -n 10 {R}/t", empty, "setquota -n")
    a.add(f"create {R}/t/x xx", lines_eq(f"Created {R}/t/x"))
    a.add(f"listquota {R}/t", lines_eq(f"absolute path is /zookeeper/quota{R}/t/zookeeper_limits",
                                       f"Output quota for {R}/t count=10,bytes=-1=;byteHardLimit=-1;countHardLimit=-1",
                                       f"Output stat for {R}/t count=2,bytes=7"), "listquota (server-maintained count/bytes)")
    a.add(f"delquota {R}/t", empty, "delquota")
    a.add(f"listquota {R}/t", lines_eq(f"absolute path is /zookeeper/quota{R}/t/zookeeper_limits", f"quota for {R}/t does not exist."), "listquota after delquota")
    a.add(f"deleteall /zookeeper/quota{R}", None)
    ctx, events = a.run(hp)
    if ctx is not None:
        sc = "SyncConnected"
        check_events("A", events, expected=[
            (sc, "None", "null"),
            (sc, "NodeDataChanged", f"{R}/s-0000000002"),
            (sc, "NodeChildrenChanged", R),
            (sc, "NodeCreated", f"{R}/missing2"),
            (sc, "NodeDeleted", f"{R}/new"),
            (sc, "NodeCreated", f"{R}/rec"),
            (sc, "NodeCreated", f"{R}/rec/a"),
            (sc, "NodeDataChanged", f"{R}/rec/a"),
            (sc, "NodeCreated", f"{R}/pers"),
            (sc, "NodeChildrenChanged", f"{R}/pers"),
            (sc, "PersistentWatchRemoved", f"{R}/pers"),
            (sc, "PersistentWatchRemoved", f"{R}/rec"),
        ], forbidden=[
            (sc, "NodeCreated", f"{R}/rec/b"),
            (sc, "NodeChildrenChanged", f"{R}/rec"),
        ], counts={
            (sc, "NodeDataChanged", f"{R}/pers"): 2,       # z and zz, not zzz (after removewatches)
            (sc, "NodeChildrenChanged", R): 1,            # ls -w is one-shot
        })

    # ------------------------------------------------------------ session B: after A quit
    b = Session("B")
    b.add(f"ls {R}", listing("dig", "missing2", "pers", "rec", "s-0000000002", "secure", "t", "ts-0000000006"), "ephemerals of the closed session are gone")
    b.add(f"getEphemerals {R}", ephemeral_list(), "getEphemerals of a fresh session")
    b.add(f"get {R}/secure", lines_eq(f"Insufficient permission : {R}/secure"), "get auth-only node without auth")
    b.add(f"getAcl {R}/secure", lines_eq(f"Insufficient permission : {R}/secure"), "getAcl without READ/ADMIN")
    b.add(f"getAcl {R}/dig", acl_is(("digest", "u1:x", "cdrwa"), ("world", "anyone", "r")), "getAcl without ADMIN masks the digest")
    b.add("addauth digest u1:wrong", empty)
    b.add(f"get {R}/secure", lines_eq(f"Insufficient permission : {R}/secure"), "get with a wrong password")
    b.add("addauth digest u1:p1", empty)
    b.add(f"get {R}/secure", lines_eq("sec"), "get after the right addauth")
    b.add(f"get -s {R}/s-0000000002", stat_is(data="new", dataVersion=1), "data written by session A")
    b.add(f"deleteall {R} -b 3", empty, "deleteall -b 3 (batched multi)")
    b.add(f"ls {R}", lines_eq(f"Node does not exist: {R}"), "tree gone after deleteall")
    b.run(hp)

    # ------------------------------------------------------------ session C: unknown auth scheme
    try:
        p = subprocess.run([ZKCLI, "-server", hp], input="addauth nosuchscheme x\nls /\nquit\n", stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        lines = clean_lines(p.stdout)
    except subprocess.TimeoutExpired as e:
        lines = clean_lines(e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or ""))
    if "WatchedEvent state:AuthFailed type:None path:null" in lines:
        ok("zkcli C: addauth with an unknown scheme -> AuthFailed event")
    else:
        bad("zkcli C: addauth with an unknown scheme -> AuthFailed event", f"output {lines!r}")
    # zkCli sends `ls /` right behind the addauth. If the AuthFailed reply (and the server's close) arrives
    # before zkCli has taken the next line, the client is already dead and zkCli says "Not connected" without
    # sending it; otherwise the request fails with AuthFailed. Which one depends on how fast the server answers
    # (ZooKeeper answers a bad auth at once too): both mean the session is unusable after the failed addauth.
    if "KeeperErrorCode = AuthFailed for /" in lines or "Not connected" in lines:
        ok("zkcli C: next request fails with AuthFailed")
    else:
        bad("zkcli C: next request fails with AuthFailed", f"output {lines!r}")

    # ------------------------------------------------------------ one-shot mode: exit codes
    def oneshot(args, want_rc, want_line, label):
        try:
            p = subprocess.run([ZKCLI, "-server", hp] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            bad(f"zkcli one-shot: {label}", "zkCli.sh did not finish within 60 s")
            return
        lines = [l for l in clean_lines(p.stdout) if l.strip()]
        if p.returncode != want_rc:
            bad(f"zkcli one-shot: {label}", f"exit status {p.returncode}, expected {want_rc}; output {lines!r}")
        elif want_line is not None and want_line not in lines:
            bad(f"zkcli one-shot: {label}", f"line {want_line!r} missing from {lines!r}")
        else:
            ok(f"zkcli one-shot: {label}")

    oneshot(["create", R2, "one"], 0, f"Created {R2}", "create (exit 0)")
    oneshot(["get", R2], 0, "one", "get (exit 0)")
    oneshot(["get", R2 + "/missing"], 1, f"Node does not exist: {R2}/missing", "get missing (exit 1)")
    oneshot(["create", R2], 1, f"Node already exists: {R2}", "create existing (exit 1)")
    oneshot(["delete", R2], 0, None, "delete (exit 0)")
    oneshot(["ls", R2], 1, f"Node does not exist: {R2}", "ls deleted node (exit 1)")

    print(f"zkcli: {passes} checks passed, {len(failures)} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
