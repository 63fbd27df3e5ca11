#!/usr/bin/env python3
"""Generates the ZooKeeper import fixtures in crates/zkimport/tests/fixtures/ from a real Apache ZooKeeper 3.8
(Debian's package, started as tests/lib/servers.py starts it; `tests/install.sh` installs it and kazoo).

    python3 tests/import/make_fixture.py            # writes both fixtures
    python3 tests/import/make_fixture.py zk38-tree  # one of them
    ZKIMPORT_FIXTURES=/tmp/out python3 tests/import/make_fixture.py   # somewhere else

Each fixture is `<name>/version-2/` (ZooKeeper's snapshot.* and log.* files, the logs cut after their last
record plus a little of the zero padding ZooKeeper preallocates) and `<name>/expected.json`: what ZooKeeper
answered, just before it was stopped, for every node (getData, getChildren2 and getACL as the super user: data,
full Stat, children, ACL), the live sessions (id, timeout, password) and its last zxid (`srvr`).

- zk38-tree: every kind of node, written in two phases. Phase 1 ends with a ZooKeeper restart, which writes a
  snapshot of everything so far (ZooKeeperServer.loadData); phase 2 is only in the logs after it. Covers
  persistent, sequential, ephemeral (two live sessions, one closed, one expired), container (with children,
  one reaped), TTL (one reaped), digest/ip/world ACLs and setACL, empty, null and binary data, deep paths,
  deleted subtrees, create2, multi (committed and failed), failed writes, a quota, closeSession with its
  CloseSessionTxn, and the 3.6+ digests.
- zk38-busy: two writers keep ZooKeeper busy (pipelined sequential creates, setData, deletes) while it
  snapshots every few transactions (snapCount=10), so the logs are many short files and a snapshot may be fuzzy
  (written while a transaction was applied); the newest snapshots are kept, and the import must give the same
  tree from each of them. (Whether a generation catches a fuzzy snapshot is luck; the fuzzy-snapshot replay
  rules also have unit tests in crates/core/src/import.rs and crates/zkimport/src/tests.rs.)
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))

import wire  # noqa: E402  (tests/e2e/wire.py: the raw protocol, for what kazoo cannot send)
from kazoo.client import KazooClient  # noqa: E402
from kazoo.exceptions import NodeExistsError  # noqa: E402
from kazoo.security import ACL, Id, OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, Permissions, make_digest_acl  # noqa: E402
from servers import ZK_CLASSPATH, _launch, _write_cfg, four_letter, free_port  # noqa: E402

FIXTURES = os.environ.get("ZKIMPORT_FIXTURES") or os.path.join(REPO, "crates", "zkimport", "tests", "fixtures")
SUPER = ("super", "admin")  # zookeeper.DigestAuthenticationProvider.superDigest below is its digest
SUPER_DIGEST = "super:xQJmxLMiHGwaqBvst5y6rkB6HQs="
PADDING_KEPT = 64  # zero bytes of preallocated padding kept after a log's last record
KEEP_BUSY_SNAPSHOTS = 3
TICK_MS = 2000  # tests/lib/servers.py's tickTime

OP_CREATE_CONTAINER = 19
OP_CREATE_TTL = 21
OP_GET_ACL = 6
OP_GET_CHILDREN2 = 12
CONTAINER = 4
PERSISTENT_WITH_TTL = 5
PERSISTENT_SEQUENTIAL_WITH_TTL = 6


# ----------------------------------------------------------------------------------------------- ZooKeeper
def start_zk(workdir, port, props):
    """ZooKeeper 3.8 standalone on `port` with its data in workdir/data (kept across restarts)."""
    cfg = _write_cfg(workdir, port, {})
    all_props = {
        "zookeeper.extendedTypesEnabled": "true",
        "zookeeper.DigestAuthenticationProvider.superDigest": SUPER_DIGEST,
        "zookeeper.preAllocSize": "64",  # KB; the copy cuts the padding anyway
        "znode.container.checkIntervalMs": "500",
    }
    all_props.update(props)
    cmd = ["java", "-Xmx256m", "-XX:+UseSerialGC"] + [f"-D{k}={v}" for k, v in all_props.items()]
    cmd += ["-cp", ZK_CLASSPATH, "org.apache.zookeeper.server.ZooKeeperServerMain", cfg]
    return _launch("zookeeper", cmd, workdir, port, keep=True)


def kazoo(hostport, timeout=30.0):
    c = KazooClient(hosts=hostport, timeout=timeout)
    c.start(timeout=30)
    return c


def wait_connected(*clients, deadline_s=60.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if all(c.connected for c in clients):
            return
        time.sleep(0.05)
    raise RuntimeError("kazoo clients did not reconnect")


def wait_gone(client, path, deadline_s=60.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if client.exists(path) is None:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{path} still exists after {deadline_s}s")


def raw_session(hostport):
    c = wire.session(hostport, timeout_ms=30000)
    assert c.auth("digest", f"{SUPER[0]}:{SUPER[1]}".encode()).err == 0
    return c


def raw_create(conn, op, path, data=b"", flags=0, ttl=None, acls=wire.OPEN_ACL):
    body = wire.create_body(path, data, flags, acls)
    if ttl is not None:
        body += wire.enc_long(ttl)
    rep = conn.call(op, body)
    assert rep.err == 0, (op, path, rep.err)
    return wire.Reader(rep.body).string()


def last_zxid(hostport):
    for line in four_letter(hostport, "srvr").splitlines():
        if line.startswith("Zxid: "):
            return int(line.split()[1], 16)
    raise RuntimeError("no Zxid in srvr")


# ----------------------------------------------------------------------------------------------- recording
def stat_dict(s):
    return dict(s._asdict())


def read_acls(body):
    r = wire.Reader(body)
    acls = []
    for _ in range(r.int()):
        perms = r.int()
        acls.append({"perms": perms, "scheme": r.string(), "id": r.string()})
    return acls, wire.decode_stat(r)


def record_tree(hostport):
    """Every node, depth first, as the super user sees it."""
    conn = raw_session(hostport)
    nodes = {}
    stack = ["/"]
    while stack:
        path = stack.pop()
        rep = conn.get_data(path)
        assert rep.err == 0, (path, rep.err)
        data, stat = wire.decode_get_data(rep.body)
        rep = conn.call(OP_GET_CHILDREN2, wire.path_watch_body(path))
        assert rep.err == 0, (path, rep.err)
        r = wire.Reader(rep.body)
        children = [r.string() for _ in range(r.int())]
        stat2 = wire.decode_stat(r)
        rep = conn.call(OP_GET_ACL, wire.enc_string(path))
        assert rep.err == 0, (path, rep.err)
        acls, stat3 = read_acls(rep.body)
        assert stat == stat2 == stat3, (path, stat, stat2, stat3)
        nodes[path] = {
            "data_hex": None if data is None else data.hex(),
            "stat": stat_dict(stat),
            "children": sorted(children),
            "acl": acls,
        }
        for c in children:
            stack.append(("" if path == "/" else path) + "/" + c)
    conn.close_session()
    conn.close()
    return nodes


def session_entry(client):
    """The session's id, password and the timeout ZooKeeper negotiated (the requested one clamped into
    [2, 20] ticks) and keeps in its session table."""
    sid, passwd = client.client_id
    timeout = min(max(int(client._session_timeout), 2 * TICK_MS), 20 * TICK_MS)
    return {"id": sid, "timeout_ms": timeout, "password_hex": passwd.hex()}


def record(hp, live_clients):
    """What expected.json holds. The tree is recorded first: its recording session's close is the last
    transaction, so srvr's zxid after it is ZooKeeper's last."""
    nodes = record_tree(hp)
    return {
        "generator": "tests/import/make_fixture.py",
        "zookeeper": four_letter(hp, "srvr").splitlines()[0],
        "last_zxid": last_zxid(hp),
        "sessions": sorted((session_entry(c) for c in live_clients), key=lambda s: s["id"]),
        "nodes": nodes,
    }


# ----------------------------------------------------------------------------------------------- copying
def copy_data(workdir, dest, keep_snapshots=None):
    """Copies version-2, each log cut PADDING_KEPT bytes after its last non-zero byte. With `keep_snapshots`,
    only the newest that many snapshots are kept, and the logs the oldest of them needs."""
    src = os.path.join(workdir, "data", "version-2")
    out = os.path.join(dest, "version-2")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(out)

    def zxid(name):
        return int(name.split(".")[1], 16)

    snaps = sorted((f for f in os.listdir(src) if f.startswith("snapshot.")), key=zxid)
    logs = sorted((f for f in os.listdir(src) if f.startswith("log.")), key=zxid)
    if keep_snapshots:
        snaps = snaps[-keep_snapshots:]
        oldest = zxid(snaps[0])
        first = max((i for i, f in enumerate(logs) if zxid(f) <= oldest + 1), default=0)
        logs = logs[first:]
    for f in snaps:
        shutil.copyfile(os.path.join(src, f), os.path.join(out, f))
    for f in logs:
        with open(os.path.join(src, f), "rb") as fh:
            b = fh.read()
        end = len(b.rstrip(b"\x00"))
        with open(os.path.join(out, f), "wb") as fh:
            fh.write(b[:min(len(b), end + PADDING_KEPT)])
    return snaps, logs


def write_expected(dest, expected):
    """JSON with one line per node and per session, so that a diff of two generations reads well."""
    def one(v):
        return json.dumps(v, sort_keys=True)

    lines = ["{"]
    for k in sorted(expected):
        v = expected[k]
        if k == "nodes":
            body = ",\n".join(f"  {one(p)}: {one(v[p])}" for p in sorted(v))
            lines.append(f' "nodes": {{\n{body}\n }},')
        elif k == "sessions":
            body = ",\n".join(f"  {one(s)}" for s in v)
            lines.append(f' "sessions": [\n{body}\n ],')
        else:
            lines.append(f" {one(k)}: {one(v)},")
    lines[-1] = lines[-1].rstrip(",")
    lines.append("}")
    with open(os.path.join(dest, "expected.json"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------- zk38-tree
EXPIRING_CLIENT = r"""
import sys, time
from kazoo.client import KazooClient
c = KazooClient(hosts=sys.argv[1], timeout=4.0)
c.start(timeout=30)
c.create("/eph/d1", b"expires", ephemeral=True)
print("ready", flush=True)
time.sleep(3600)
"""


def phase1(hp, w, a, b):
    w.create("/app", b"app-v0")
    w.set("/app", b"app-v1")
    w.set("/app", b"app-v2")
    w.create("/app/config", b'{"k": 1}')
    w.create("/app/a/b/c/d/e/f/g/h", b"deep", makepath=True)
    seq = [w.create("/app/seq/item-", b"%d" % i, sequence=True, makepath=True) for i in range(3)]
    w.delete(seq[1])
    w.create("/acl")
    w.create("/acl/digest", b"d", acl=[make_digest_acl("user", "password", all=True),
                                      ACL(Permissions.READ, Id("world", "anyone"))])
    w.create("/acl/ip", b"i", acl=[ACL(Permissions.ALL, Id("ip", "127.0.0.1"))])
    w.create("/acl/world-read", b"r", acl=READ_ACL_UNSAFE)
    w.create("/acl/mixed", b"m", acl=OPEN_ACL_UNSAFE)
    w.set_acls("/acl/mixed", [make_digest_acl("user", "password", read=True, admin=True),
                              ACL(Permissions.READ | Permissions.WRITE, Id("world", "anyone"))])
    w.create("/bin", bytes(range(256)))
    w.create("/empty", b"")
    a.create("/eph/a1", b"A", ephemeral=True, makepath=True)
    a.create("/eph/a-", b"", ephemeral=True, sequence=True)
    b.create("/eph/b1", b"B", ephemeral=True)
    t = w.transaction()
    t.create("/multi", b"")
    t.create("/multi/x", b"x")
    t.set_data("/app", b"app-v3")
    t.check("/app/config", 0)
    assert all(r is True or isinstance(r, (str, tuple)) or r is None for r in t.commit())
    t = w.transaction()
    t.create("/multi/y", b"y")
    t.create("/multi/x", b"again")  # exists: the whole multi fails
    results = t.commit()
    assert any(isinstance(r, Exception) for r in results), results
    try:
        w.create("/app")
    except NodeExistsError:
        pass
    # A quota on /app, as zkCli.sh setquota writes it; ZooKeeper counts /app's subtree into the stats node.
    w.create("/zookeeper/quota/app", b"")
    w.create("/zookeeper/quota/app/zookeeper_limits", b"count=1000,bytes=-1")
    w.create("/zookeeper/quota/app/zookeeper_stats", b"count=0,bytes=0")
    r = raw_session(hp)
    raw_create(r, wire.OP_CREATE, "/null", None)
    raw_create(r, OP_CREATE_CONTAINER, "/cont", b"c", CONTAINER)
    raw_create(r, wire.OP_CREATE, "/cont/c1", b"1")
    raw_create(r, wire.OP_CREATE, "/cont/c2", b"2")
    raw_create(r, OP_CREATE_CONTAINER, "/cont-empty", b"", CONTAINER)
    raw_create(r, OP_CREATE_CONTAINER, "/reap", b"", CONTAINER)
    raw_create(r, wire.OP_CREATE, "/reap/c", b"")
    w.create("/ttl")
    raw_create(r, OP_CREATE_TTL, "/ttl/t1", b"t1", PERSISTENT_WITH_TTL, ttl=3600000)
    raw_create(r, OP_CREATE_TTL, "/ttl/s-", b"s", PERSISTENT_SEQUENTIAL_WITH_TTL, ttl=7200000)
    raw_create(r, OP_CREATE_TTL, "/ttl/short", b"", PERSISTENT_WITH_TTL, ttl=300)
    r.close_session()
    r.close()
    w.delete("/reap/c")
    wait_gone(w, "/reap")  # the container reaper's deleteContainer
    wait_gone(w, "/ttl/short")  # and the TTL one's
    c = kazoo(hp)
    c.create("/eph/c1", b"C", ephemeral=True)
    c.stop()  # closeSession, whose CloseSessionTxn lists /eph/c1
    c.close()


def phase2(hp, w, a, b):
    w.set("/app", b"app-v4")
    w.create("/app/seq/item-", b"3", sequence=True)
    w.delete("/app/a/b/c/d/e/f/g/h")
    w.create("/p2/x/y", b"gone", makepath=True)
    w.delete("/p2/x/y")
    w.delete("/p2/x")
    w.add_auth("digest", "user:password")
    w.set_acls("/acl/digest", [make_digest_acl("user", "password", all=True)])
    a.create("/eph/a2", b"A2", ephemeral=True)
    a.delete("/eph/a1")
    b.create("/eph/b-", b"", ephemeral=True, sequence=True)
    w.create("/c2node", b"create2", include_data=True)
    t = w.transaction()
    t.create("/multi/z", b"z")
    t.delete("/multi/x")
    t.set_data("/bin", bytes(reversed(range(256))))
    t.commit()
    t = w.transaction()
    t.delete("/multi/z")
    t.delete("/nope")  # fails
    assert any(isinstance(r, Exception) for r in t.commit())
    w.create("/app/q1", b"12345")  # counted into the quota's stats
    w.set("/ttl/t1", b"t1-v1")
    r = raw_session(hp)
    raw_create(r, OP_CREATE_TTL, "/ttl/t2", b"t2", PERSISTENT_WITH_TTL, ttl=3600000)
    raw_create(r, wire.OP_CREATE, "/cont/c3", b"3")
    rep = r.set_data("/empty", None)  # empty → null
    assert rep.err == 0
    raw_create(r, OP_CREATE_CONTAINER, "/reap2", b"", CONTAINER)
    raw_create(r, wire.OP_CREATE, "/reap2/c", b"")
    r.close_session()
    r.close()
    w.delete("/reap2/c")
    wait_gone(w, "/reap2")
    c = kazoo(hp)
    c.create("/eph/c2", b"C2", ephemeral=True)
    c.stop()
    c.close()
    # A client that dies without closing: its session expires (closeSession by the expirer).
    d = subprocess.Popen([sys.executable, "-c", EXPIRING_CLIENT, hp], stdout=subprocess.PIPE, text=True)
    assert d.stdout.readline().strip() == "ready"
    d.send_signal(signal.SIGKILL)
    d.wait()
    wait_gone(w, "/eph/d1")


def tree_scenario(hp, restart):
    w = kazoo(hp)
    a = kazoo(hp, timeout=30.0)
    b = kazoo(hp, timeout=20.0)
    phase1(hp, w, a, b)
    restart()  # writes a snapshot of everything so far; the sessions survive it
    wait_connected(w, a, b)
    phase2(hp, w, a, b)
    return record(hp, (w, a, b)), (w, a, b)


# ----------------------------------------------------------------------------------------------- zk38-busy
def writer(hp, name, rounds):
    """Keeps ZooKeeper busy: each round sends 8 sequential creates, a setData and the deletes of all but the
    newest 4 earlier nodes without waiting, then waits for every reply."""
    c = kazoo(hp)
    base = f"/fz/{name}"
    c.ensure_path(base)
    live = []
    n = 0
    for r in range(rounds):
        pending = []
        for _ in range(8):
            n += 1
            pending.append(c.create_async(f"{base}/n-", b"%d" % n, sequence=True))
        pending.append(c.set_async(base, b"round %d" % r))
        doomed, live = live[:-4], live[-4:]
        pending += [c.delete_async(p) for p in doomed]
        for i, p in enumerate(pending):
            path = p.get(timeout=30)
            if i < 8:
                live.append(path)
    c.stop()
    c.close()


def busy_scenario(hp, restart):
    w = kazoo(hp)
    w.ensure_path("/fz")
    for i in range(6):
        w.create(f"/fz/base{i}", b"%d" % i * 8)
    threads = [threading.Thread(target=writer, args=(hp, n, 25)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(0, 6, 2):
        w.delete(f"/fz/base{i}")
    return record(hp, (w,)), (w,)


# ----------------------------------------------------------------------------------------------- running
def generate(dest, snap_count, scenario, keep_snapshots=None):
    """Runs `scenario(hostport, restart)` against a fresh ZooKeeper (`restart()` restarts it on the same
    data), then copies ZooKeeper's files and writes what the scenario recorded. The scenario returns that
    record and its live clients, which are stopped only once ZooKeeper is down so that their sessions stay
    open in the data."""
    workdir = tempfile.mkdtemp(prefix="zkfix-")
    port = free_port()
    hp = f"127.0.0.1:{port}"
    props = {"zookeeper.snapCount": str(snap_count)}
    zk = [start_zk(workdir, port, props)]

    def restart():
        zk[0].stop()
        zk[0] = start_zk(workdir, port, props)

    try:
        expected, clients = scenario(hp, restart)
    finally:
        zk[0].stop()
    for c in clients:
        c.stop()
        c.close()
    snaps, logs = copy_data(workdir, dest, keep_snapshots)
    write_expected(dest, expected)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"{dest}: {snaps} {logs}, {len(expected['nodes'])} nodes, last zxid {expected['last_zxid']:#x}")


def main():
    # kazoo logs every reconnect attempt; the restarts and the final stop make many of them on purpose.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    fixtures = {
        "zk38-tree": (100000, tree_scenario, None),
        "zk38-busy": (10, busy_scenario, KEEP_BUSY_SNAPSHOTS),
    }
    for name in sys.argv[1:] or list(fixtures):
        snap_count, scenario, keep = fixtures[name]
        generate(os.path.join(FIXTURES, name), snap_count, scenario, keep)


if __name__ == "__main__":
    main()
