#!/usr/bin/env python3
"""Differential tester: run the same seeded random operation sequence against two ZooKeeper-protocol servers over
the raw wire protocol and compare every reply and every connection's watch-event stream after normalisation.

    python3 tests/differential/zkdiff.py --a zookeeper --b oxkeeper --seeds 20 --ops 10000
    python3 tests/differential/zkdiff.py --a 127.0.0.1:3001 --b 127.0.0.1:3002 --seeds 2
    python3 tests/differential/zkdiff.py --quick                 # 2 seeds x 1500 ops, ZooKeeper vs ZooKeeper
    python3 tests/differential/zkdiff.py --self-test             # must detect a tampered reply and event

See README.md in this folder for what is compared and how.
"""

import argparse
import collections
import difflib
import json
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

import zkd_deviations as devmod  # noqa: E402
import zkd_gen as genmod  # noqa: E402
from zkd_jute import OP, Reader, decode_reply, enc_body, enc_header, errname  # noqa: E402
from zkd_wire import Closed, Conn, Timeout  # noqa: E402

NCONN = genmod.NCONN
MARKER_PATH = "/zookeeper"
MARKER_BODY = enc_body("exists", {"path": MARKER_PATH, "watch": False})
MAYBE_NO_REPLY = frozenset(("check",))  # ZooKeeper 3.8 sends no reply to a successful top-level check
# ops that cannot fire a watch on, or close, another connection (used by --drain writes)
NO_REMOTE_EFFECT = frozenset(("exists", "getData", "getChildren", "getChildren2", "getACL", "sync", "ping",
                              "multiRead", "checkWatches", "removeWatches", "getEphemerals", "getAllChildrenNumber",
                              "addWatch", "whoAmI", "auth", "sasl", "setWatches", "setWatches2", "reconfig"))
CLOSING_KINDS = frozenset(("closeSession", "unknownOp", "authBad"))
SESSION_TIMEOUTS = (30000, 40000, 100000, 15000)
CONTAINER_CHECK_MS = "86400000"  # keep ContainerManager (containers + TTL expiry) from firing during a run

COVERAGE_REQUIRED = {
    "create": (0, -8, -114, -101, -102, -110, -108),
    "delete": (0, -101, -102, -103, -111, -8),
    "setData": (0, -101, -102, -103),
    "multi[sub]": (0, -2, -101, -102, -103, -108, -110, -111, -114, -8),
}


def server_settings():
    """zoo.cfg keys and JVM properties both servers get (ZooKeeper via -D, oxkeeper via zoo.cfg)."""
    superdigest = genmod.SUPER_DIGEST
    zk_props = {
        "zookeeper.forceSync": "no",
        "zookeeper.DigestAuthenticationProvider.superDigest": superdigest,
        "zookeeper.extendedTypesEnabled": "true",
        "znode.container.checkIntervalMs": CONTAINER_CHECK_MS,
        "org.slf4j.simpleLogger.defaultLogLevel": "warn",
    }
    ox_cfg = {
        "DigestAuthenticationProvider.superDigest": superdigest,
        "extendedTypesEnabled": "true",
        "znode.container.checkIntervalMs": CONTAINER_CHECK_MS,
        "forceSync": "no",
    }
    common_cfg = {"tickTime": "2000"}
    return common_cfg, zk_props, ox_cfg


# ====================================================================== one server under test
class Side:
    def __init__(self, label, hostport, prefix, timeout, paranoid=False):
        self.paranoid = paranoid
        self.label = label
        self.hostport = hostport
        self.prefix = prefix
        self.timeout = timeout
        self.conns = [None] * NCONN
        self.sess = [None] * NCONN  # dict(sid, pw, last, treq)
        self.xid = [0] * NCONN
        self.op_zxid = []  # marker zxid after each op (for symbolic SetWatches relativeZxid)

    # ------------------------------------------------------------ paths
    def real(self, p):
        if not self.prefix or not isinstance(p, str):
            return p
        if p == "/zookeeper" or p.startswith("/zookeeper/"):
            return p
        if p == "/":
            return self.prefix
        if p.startswith("/"):
            return self.prefix + p
        return p

    def logical(self, s):
        if not self.prefix or not isinstance(s, str):
            return s
        if s == self.prefix:
            return "/"
        if s.startswith(self.prefix + "/"):
            return s[len(self.prefix):]
        return s

    def next_xid(self, i):
        self.xid[i] += 1
        return self.xid[i]

    # ------------------------------------------------------------ connections
    def open(self, i, session_id=0, passwd=b"\0" * 16, last=0, treq=30000):
        c = Conn(self.hostport, timeout=self.timeout)
        frames = []
        try:
            resp = c.connect(last, treq, session_id, passwd)
            frames.append({"connect": resp})
        except Closed:
            frames.append({"eof": True})
            c.close()
            return None, frames
        except Timeout:
            frames.append({"timeout": True})
            c.close()
            return None, frames
        if resp.get("timeOut", 0) <= 0:
            # expired / invalid: the server closes the socket after this reply
            frames.extend(self.read_to_eof(c))
            c.close()
            return None, frames
        self.conns[i] = c
        self.sess[i] = {"sid": resp["sessionId"], "pw": bytes.fromhex(resp["passwd"] or ""), "last": last,
                        "treq": treq}
        return c, frames

    def read_to_eof(self, c, limit=5.0):
        frames = []
        deadline = time.monotonic() + limit
        try:
            while True:
                payload = c.read_frame(deadline)
                frames.append({"frame": payload.hex()})
        except Closed:
            frames.append({"eof": True})
        except Timeout:
            frames.append({"still_open": True})
        return frames

    def close_all(self):
        for c in self.conns:
            if c is not None:
                c.close()

    def note_zxid(self, i, zxid):
        s = self.sess[i]
        if s is not None and zxid > s["last"]:
            s["last"] = zxid

    # ------------------------------------------------------------ request/marker
    def send_marker(self, i):
        c = self.conns[i]
        xid = self.next_xid(i)
        c.send_request(xid, OP["exists"], MARKER_BODY)
        return xid

    def read_until(self, i, marker_xid, kind, frames):
        """Read connection i until the marker reply (xid marker_xid) or EOF/timeout; append frames.
        Returns True if the connection is still usable."""
        c = self.conns[i]
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                payload = c.read_frame(deadline)
            except Closed:
                frames.append({"eof": True})
                return False
            except Timeout:
                frames.append({"timeout": True})
                return False
            r = Reader(payload)
            try:
                xid, zxid, err = r.int(), r.long(), r.int()
            except Exception:  # noqa: BLE001
                frames.append({"short_frame": payload.hex()})
                continue
            body = payload[16:]
            if xid == -1:
                try:
                    rr = Reader(body)
                    ev = {"type": rr.int(), "state": rr.int(), "path": self.logical(rr.ustring())}
                    if rr.remaining():
                        ev["trailing"] = rr.rest().hex()
                except Exception as e:  # noqa: BLE001
                    ev = {"undecodable": body.hex(), "error": str(e)}
                ev["hzxid"] = zxid
                ev["herr"] = err
                frames.append({"event": ev})
                continue
            if marker_xid == "reply":
                if xid != -2:
                    self.note_zxid(i, zxid)
                frames.append({"reply": {"xid": xid, "zxid": zxid, "err": err,
                                         "body": self._decode(kind, err, body)}})
                return True
            if marker_xid is not None and xid == marker_xid:
                self.note_zxid(i, zxid)
                dec = self._decode("exists", err, body)
                frames.append({"marker": {"xid": xid, "zxid": zxid, "err": err, "body": dec}})
                return True
            if xid != -2:
                self.note_zxid(i, zxid)
            frames.append({"reply": {"xid": xid, "zxid": zxid, "err": err, "body": self._decode(kind, err, body)}})

    def _decode(self, kind, err, body):
        if not body:
            return None
        if err != 0:
            return {"raw": body.hex()}
        try:
            return decode_reply(kind, body)
        except Exception as e:  # noqa: BLE001
            return {"undecodable": body.hex(), "error": str(e)}

    def resolve_rel(self, i, rel):
        if rel[0] == "last":
            return self.sess[i]["last"]
        if rel[0] == "zero":
            return 0
        if not self.op_zxid:
            return 0
        return self.op_zxid[min(rel[1], len(self.op_zxid) - 1)]

    def map_args(self, op):
        """Copy of the op's arguments with real paths."""
        a = dict(op)
        for key in ("path",):
            if key in a:
                a[key] = self.real(a[key])
        for key in ("dataWatches", "existWatches", "childWatches", "persistentWatches",
                    "persistentRecursiveWatches"):
            if key in a:
                a[key] = [self.real(p) for p in a[key]]
        if "ops" in a:
            a["ops"] = [self.map_args(s) for s in a["ops"]]
        return a

    # ------------------------------------------------------------ executing one op
    def start(self, op):
        """Send the op (and, for request ops, a marker behind it). Returns a context for finish()."""
        kind, i = op["kind"], op["conn"]
        ctx = {"frames": [], "marker": None, "conn_op": False}
        if kind in ("reconnect", "reconnectBadPassword", "reconnectAhead"):
            ctx["conn_op"] = True
            return ctx
        c = self.conns[i]
        a = self.map_args(op)
        if kind in ("setWatches", "setWatches2"):
            a["relativeZxid"] = self.resolve_rel(i, op["rel"])
        if kind == "ping":
            xid = -2 if op.get("xid") == "ping" else self.next_xid(i)
            opcode, body = OP["ping"], b""
        elif kind in ("auth", "authBad"):
            xid = -4 if op.get("xid") == "auth" else self.next_xid(i)
            opcode, body = OP["auth"], enc_body("auth", a)
        elif kind == "unknownOp":
            xid = self.next_xid(i)
            opcode, body = op["opcode"], b""
        else:
            xid = self.next_xid(i)
            opcode, body = OP[kind], enc_body(kind, a)
        try:
            if kind in CLOSING_KINDS or (kind == "sasl" and op.get("token") is None):
                # no marker: a request behind one that closes the connection races with the close (ZooKeeper
                # sometimes still answers it), so read the reply and then expect EOF
                c.send_request(xid, opcode, body)
                ctx["marker"] = "eof"
            elif self.paranoid or kind in MAYBE_NO_REPLY:
                # a marker request right behind the op: whatever arrives before its reply belongs to the op
                # (so a missing reply is seen at once, without waiting for a timeout)
                mxid = self.next_xid(i)
                c.send_request(xid, opcode, body, enc_header(mxid, OP["exists"]) + MARKER_BODY)
                ctx["marker"] = mxid
            else:
                # every reply is preceded by the notifications the op itself fired on this connection
                c.send_request(xid, opcode, body)
                ctx["marker"] = "reply"
        except (Closed, Timeout):
            pass  # seen as EOF when reading
        return ctx

    def finish(self, op, ctx):
        kind, i = op["kind"], op["conn"]
        frames = ctx["frames"]
        if ctx["conn_op"]:
            s = self.sess[i]
            if kind == "reconnect":
                # Open the new connection while the old one is still open: the server closes the old one
                # (CLIENT_RECONNECT). Closing the old socket first would race in ZooKeeper 3.8: the late close of
                # the old connection can drop the new connection from the session map (sessionMap.remove(sid)).
                old = self.conns[i]
                self.conns[i] = None
                c, fr = self.open(i, s["sid"], s["pw"], s["last"], s["treq"])
                frames.extend(fr)
                frames.append({"old_connection": self.read_to_eof(old)})
                old.close()
                if c is None:
                    self.sess[i]["lost"] = True
            else:
                tmp = Conn(self.hostport, timeout=self.timeout)
                try:
                    if kind == "reconnectBadPassword":
                        pw = bytes(b ^ 0x5A for b in s["pw"])
                        frames.append({"connect": tmp.connect(s["last"], s["treq"], s["sid"], pw)})
                    else:
                        frames.append({"connect": tmp.connect(s["last"] + 1_000_000, s["treq"], s["sid"], s["pw"])})
                    frames.extend(self.read_to_eof(tmp))
                except Closed:
                    frames.append({"eof": True})
                except Timeout:
                    frames.append({"timeout": True})
                tmp.close()
            return frames
        if ctx["marker"] is None:
            frames.append({"eof": True})
            self.conns[i].close()
            return frames
        if ctx["marker"] == "eof":
            self.read_until(i, None, kind, frames)
            self.conns[i].close()
            return frames
        if not self.read_until(i, ctx["marker"], kind, frames):
            self.conns[i].close()
        return frames

    def drain_start(self, skip):
        ms = {}
        for j in range(NCONN):
            if j == skip or self.conns[j] is None or self.conns[j].closed:
                continue
            try:
                ms[j] = self.send_marker(j)
            except (Closed, Timeout):
                ms[j] = None
        return ms

    def drain_finish(self, ms):
        out = {}
        for j, m in ms.items():
            frames = []
            if m is None:
                frames.append({"eof": True})
                self.conns[j].close()
            elif not self.read_until(j, m, "exists", frames):
                self.conns[j].close()
            out[str(j)] = frames
        return out

    def reconnect_closed(self, new_session_conns):
        """Re-open every closed connection (same session, or a new one for `new_session_conns`)."""
        out = {}
        for j in range(NCONN):
            c = self.conns[j]
            if c is not None and not c.closed:
                continue
            s = self.sess[j]
            new = bool(j in new_session_conns or s is None or s.get("lost"))
            frames = []
            if not new:
                c, fr = self.open(j, s["sid"], s["pw"], s["last"], s["treq"])
                frames.extend(fr)
                if c is None:
                    new = True  # the session is gone (expired/invalid): start a new one
            if new:
                treq = s["treq"] if s else 30000
                c, fr = self.open(j, 0, b"\0" * 16, 0, treq)
                frames.extend(fr)
                if c is None:
                    raise RuntimeError(f"{self.label}: cannot open a new session on connection {j}: {fr}")
            out[str(j)] = {"new_session": new, "frames": frames}
        return out


# ====================================================================== normalisation
ZXID_KEYS = frozenset(("zxid", "czxid", "mzxid", "pzxid"))
SID_KEYS = frozenset(("sessionId", "ephemeralOwner"))
TIME_KEYS = frozenset(("ctime", "mtime"))
SORT_KEYS = frozenset(("children", "paths", "acl", "clientInfo"))


class Normaliser:
    """Per-side renaming state plus the deviation rules. Renames zxids and session ids in order of first
    appearance, masks times, passwords and notification-header zxids, maps paths back to logical ones and sorts
    lists whose order ZooKeeper does not define."""

    def __init__(self, side, dev):
        self.side = side
        self.dev = dev
        self.z = {}
        self.s = {}
        self.track_paths = bool(dev.ignore_fields)

    def zx(self, v):
        if not isinstance(v, int) or v in (0, -1):
            return v
        n = self.z.get(v)
        if n is None:
            n = self.z[v] = f"Z{len(self.z) + 1}"
        return n

    def sid(self, v):
        if not isinstance(v, int) or v == 0:
            return v
        n = self.s.get(v)
        if n is None:
            n = self.s[v] = f"S{len(self.s) + 1}"
        return n

    def norm(self, kind, obj, dotted=""):
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                d = f"{dotted}.{k}" if dotted else k
                if self.track_paths and self.dev.field_ignored(kind, d):
                    out[k] = "<ignored>"
                    continue
                if k in ZXID_KEYS:
                    out[k] = self.zx(v)
                elif k in SID_KEYS:
                    out[k] = self.sid(v)
                elif k in TIME_KEYS:
                    out[k] = v if v == 0 else "<time>"
                elif k == "hzxid":
                    out[k] = "<masked>"
                elif k == "passwd":
                    out[k] = None if v is None else f"<{len(v) // 2} bytes>"
                elif k == "path" and isinstance(v, str):
                    out[k] = self.side.logical(v)
                elif k in SORT_KEYS and isinstance(v, list):
                    vv = self.norm(kind, v, d)
                    if k == "paths":
                        vv = [self.side.logical(p) if isinstance(p, str) else p for p in vv]
                    out[k] = sorted(vv, key=lambda x: json.dumps(x, sort_keys=True))
                elif k in ("err", "errBody") and kind in self.dev.equal_errors and isinstance(v, int):
                    out[k] = self.dev.equal_errors[kind].get(v, v)
                else:
                    out[k] = self.norm(kind, v, d)
            return out
        if isinstance(obj, list):
            return [self.norm(kind, v, f"{dotted}.{n}" if dotted else str(n)) for n, v in enumerate(obj)]
        return obj

    def observation(self, kind, obs):
        out = self.norm(kind, obs)
        if kind in self.dev.ignore_reply:
            out["frames"] = [f for f in out["frames"] if "reply" not in f]
        if self.dev.sort_events:
            def sort_all(frames):
                evs = sorted((f for f in frames if "event" in f), key=lambda x: json.dumps(x, sort_keys=True))
                return evs + [f for f in frames if "event" not in f]
            out["frames"] = sort_all(out["frames"])
            for j in out.get("others", {}):
                out["others"][j] = sort_all(out["others"][j])
        elif kind == "closeSession":
            # The ephemerals of a closed session are deleted in HashSet order (DataTree.ephemerals), so the order
            # of the resulting notifications on one connection is not defined: sort each run of events.
            out["frames"] = sort_event_runs(out["frames"])
            for j in out.get("others", {}):
                out["others"][j] = sort_event_runs(out["others"][j])
        return out


def sort_event_runs(frames):
    out, run = [], []
    for f in frames:
        if "event" in f:
            run.append(f)
            continue
        out.extend(sorted(run, key=lambda x: json.dumps(x, sort_keys=True)))
        run = []
        out.append(f)
    out.extend(sorted(run, key=lambda x: json.dumps(x, sort_keys=True)))
    return out


# ====================================================================== coverage
def record_coverage(cov, op, obs):
    kind = op["kind"]
    frames = obs["frames"]
    replies = [f["reply"] for f in frames if "reply" in f]
    if op.get("kind") in ("reconnect", "reconnectBadPassword", "reconnectAhead"):
        con = [f["connect"] for f in frames if "connect" in f]
        if con:
            cov[(kind, "timeOut>0" if con[0].get("timeOut", 0) > 0 else "timeOut=0")] += 1
        if any("eof" in f for f in frames):
            cov[(kind, "closed")] += 1
        return
    if replies:
        rep = replies[0]
        cov[(kind, rep["err"])] += 1
        body = rep.get("body")
        if kind in ("multi", "multiRead") and rep["err"] == 0 and isinstance(body, dict):
            subs = op.get("ops", [])
            for n, res in enumerate(body.get("results") or []):
                sk = subs[n]["kind"] if n < len(subs) else "?"
                cov[(f"{kind}:{sk}", res.get("err"))] += 1
                cov[(f"{kind}[sub]", res.get("err"))] += 1
    else:
        cov[(kind, "noreply")] += 1
    if any("eof" in f for f in frames):
        cov[(kind, "closed")] += 1


def code_name(c):
    return errname(c) if isinstance(c, int) else str(c)


def coverage_table(cov):
    by = collections.defaultdict(dict)
    for (k, c), n in cov.items():
        by[k][c] = n
    lines = []
    for k in sorted(by):
        items = sorted(by[k].items(), key=lambda kv: (isinstance(kv[0], str), kv[0] if isinstance(kv[0], int) else 0,
                                                      str(kv[0])))
        items.sort(key=lambda kv: (0, -kv[0]) if isinstance(kv[0], int) else (1, str(kv[0])))
        lines.append(f"  {k:28} " + "  ".join(f"{code_name(c)}({c})={n}" if isinstance(c, int) else f"{c}={n}"
                                               for c, n in items))
    return "\n".join(lines)


def coverage_missing(cov, skipped):
    missing = []
    for k, codes in COVERAGE_REQUIRED.items():
        for c in codes:
            if cov.get((k, c), 0) == 0:
                missing.append(f"{k} {code_name(c)}({c})")
    seen = {k for (k, _c) in cov}
    for k in genmod.ALL_KINDS:
        if k not in skipped and k not in seen:
            missing.append(f"op {k} never ran")
    return missing


# ====================================================================== one seed
def jdump(o, indent=None):
    def default(x):
        if isinstance(x, (bytes, bytearray)):
            return "hex:" + bytes(x).hex()
        return repr(x)
    return json.dumps(o, indent=indent, default=default, ensure_ascii=True)


def first_diff(a, b, path=""):
    if type(a) is not type(b):
        return path or "<root>"
    if isinstance(a, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}.{k}"
            d = first_diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        for n in range(min(len(a), len(b))):
            d = first_diff(a[n], b[n], f"{path}[{n}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{path}[len {len(a)} vs {len(b)}]"
        return None
    return None if a == b else (path or "<root>")


def render(obs):
    """One line per frame: readable, and line-diffable between the two servers."""
    lines = [f"  conn {obs.get('conn')}"]

    def frames(prefix, frs):
        for f in frs:
            (k, v), = f.items() if len(f) == 1 else (("frame", f),)
            lines.append(f"  {prefix}{k:8} {jdump(v)}")
    frames("op-conn  ", obs.get("frames", []))
    for j, frs in (obs.get("others") or {}).items():
        frames(f"conn {j}   ", frs)
    for j, r in (obs.get("reconnect") or {}).items():
        lines.append(f"  reconnect conn {j} new_session={r.get('new_session')}")
        frames(f"conn {j}   ", r.get("frames", []))
    return lines


def summarize(obs):
    """Short text for the history of recent ops."""
    parts = []
    for f in obs.get("frames", []):
        if "reply" in f:
            parts.append(f"reply err={f['reply']['err']}")
        elif "event" in f:
            parts.append(f"ev{f['event'].get('type')}:{f['event'].get('path')}")
        elif "connect" in f:
            parts.append(f"connect to={f['connect'].get('timeOut')}")
        elif "eof" in f:
            parts.append("EOF")
        elif "timeout" in f:
            parts.append("TIMEOUT")
    for j, fr in obs.get("others", {}).items():
        evs = [f"ev{f['event'].get('type')}:{f['event'].get('path')}" for f in fr if "event" in f]
        if evs:
            parts.append(f"c{j}[{' '.join(evs)}]")
        if any("eof" in f for f in fr):
            parts.append(f"c{j}:EOF")
    if obs.get("reconnect"):
        parts.append("reconnect " + ",".join(f"c{j}{'(new)' if r['new_session'] else ''}"
                                             for j, r in obs["reconnect"].items()))
    return "; ".join(parts)


class Difference(Exception):
    pass


def run_seed(seed, nops, hp_a, hp_b, dev, prefix_mode=False, timeout=10.0, stop=None, progress=None,
             labels=("A", "B"), drain="every", paranoid=False):
    """Run one seed against two servers. Returns (coverage Counter, ops done). Raises Difference with a report."""
    prefix = f"/zkdiff-{seed}-{os.getpid()}-{int(time.time() * 1000) % 10**9}" if prefix_mode else ""
    sides = [Side(labels[0], hp_a, prefix, timeout, paranoid), Side(labels[1], hp_b, prefix, timeout, paranoid)]
    norms = [Normaliser(s, dev) for s in sides]
    g = genmod.Gen(seed, skip=dev.skip_ops, skip_sub=dev.skip_sub, prefix_mode=prefix_mode)
    cov = collections.Counter()
    history = collections.deque(maxlen=20)
    treqs = [g.r.choice(SESSION_TIMEOUTS) for _ in range(NCONN)]
    op, idx = None, -1
    try:
        if prefix_mode:
            for s in sides:
                setup_prefix(s, prefix, timeout)
        # ---- setup: one session per connection
        raw = [{"frames": [], "reconnect": {}} for _ in sides]
        for si, s in enumerate(sides):
            for j in range(NCONN):
                c, fr = s.open(j, 0, b"\0" * 16, 0, treqs[j])
                if c is None:
                    raise RuntimeError(f"{s.label}: could not open session: {fr}")
                raw[si]["reconnect"][str(j)] = {"new_session": True, "frames": fr}
        compare(seed, -1, {"kind": "setup"}, raw, norms, history)

        for idx in range(nops):
            if stop is not None and stop.is_set():
                break
            op = g.next()
            kind = op["kind"]
            ctxs = [s.start(op) for s in sides]
            obs = []
            for s, ctx in zip(sides, ctxs):
                obs.append({"conn": op["conn"], "frames": s.finish(op, ctx)})
            if drain == "every" or kind not in NO_REMOTE_EFFECT:
                ms = [s.drain_start(-1 if kind.startswith("reconnect") else op["conn"]) for s in sides]
            else:
                ms = [{}, {}]
            for o, s, m in zip(obs, sides, ms):
                o["others"] = s.drain_finish(m)
            # closures -> reconnect (closeSession with OK reply -> new session)
            for o, s in zip(obs, sides):
                new = set()
                if kind == "closeSession" and any("reply" in f and f["reply"]["err"] == 0 for f in o["frames"]):
                    new.add(op["conn"])
                rc = s.reconnect_closed(new)
                if rc:
                    o["reconnect"] = rc
                # the server's zxid after this op, for SetWatches(relativeZxid = "as of op k")
                seen = [f[k]["zxid"] for frs in [o["frames"], *o["others"].values()] for f in frs
                        for k in ("reply", "marker") if k in f]
                seen = [z for z in seen if isinstance(z, int) and z > 0]
                s.op_zxid.append(max(seen) if seen else (s.op_zxid[-1] if s.op_zxid else 0))
            nobs = compare(seed, idx, op, obs, norms, history)
            record_coverage(cov, op, obs[0])
            g.observe(op, nobs)
            for j, r in (obs[0].get("reconnect") or {}).items():
                g.on_reconnect(int(j), r["new_session"])
            if progress and (idx + 1) % 2000 == 0:
                progress(seed, idx + 1)
        return cov, nops
    except (Difference, KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        hist = "\n".join(f"  #{h[0]}: {jdump(h[1])}\n        -> {summarize(h[2])}" for h in history)
        cur = jdump(op) if op is not None else "(setup)"
        raise RuntimeError(f"seed {seed}: {type(e).__name__}: {e}\nduring op #{idx}: {cur}\n"
                           f"last ops before it:\n{hist}") from e
    finally:
        for s in sides:
            if prefix_mode:
                try:
                    cleanup_prefix(s, prefix, timeout)
                except Exception:  # noqa: BLE001
                    pass
            s.close_all()


def compare(seed, idx, op, raw, norms, history):
    kind = op["kind"]
    na = norms[0].observation(kind, raw[0])
    nb = norms[1].observation(kind, raw[1])
    if na != nb:
        lines = [
            "=" * 100,
            f"DIFFERENCE  seed={seed}  op index={idx}  kind={kind}  conn={op.get('conn')}",
            f"first differing field: {first_diff(na, nb)}",
            f"op: {jdump(op)}",
            f"--- {norms[0].side.label} ({norms[0].side.hostport}) normalised:",
            *render(na),
            f"--- {norms[1].side.label} ({norms[1].side.hostport}) normalised:",
            *render(nb),
            "--- diff of the normalised observations (- A, + B):",
            *[ln.rstrip("\n") for ln in difflib.unified_diff(render(na), render(nb), "A", "B", n=1, lineterm="")][2:],
            f"--- {norms[0].side.label} raw (real zxids/session ids/times): {jdump(raw[0])}",
            f"--- {norms[1].side.label} raw (real zxids/session ids/times): {jdump(raw[1])}",
            f"--- last {len(history)} ops before it (index, op, outcome on {norms[0].side.label}):",
        ]
        for h in history:
            lines.append(f"  #{h[0]}: {jdump(h[1])}\n        -> {summarize(h[2])}")
        lines.append(f"reproduce: python3 tests/differential/zkdiff.py --seed-list {seed} --ops {idx + 1} ...")
        lines.append("=" * 100)
        raise Difference("\n".join(lines))
    history.append((idx, op, na))
    return na


# ---------------------------------------------------------------------- prefix mode helpers (external servers)
def _simple_req(c, xid, kind, args):
    c.send_request(xid, OP[kind], enc_body(kind, args))
    return c.read_reply(want_xid=xid)


def setup_prefix(side, prefix, timeout):
    c = Conn(side.hostport, timeout=timeout)
    try:
        c.connect(0, 30000, 0, b"\0" * 16)
        _, _, err, _ = _simple_req(c, 1, "create", {"path": prefix, "data": b"", "acl": [[31, "world", "anyone"]],
                                                     "flags": 0})
        if err != 0:
            raise RuntimeError(f"{side.label}: cannot create prefix {prefix}: {errname(err)}")
        _simple_req(c, 2, "closeSession", {})
    finally:
        c.close()


def cleanup_prefix(side, prefix, timeout):
    """Best effort: close our sessions, then delete the prefix tree as the super user."""
    for i, c in enumerate(side.conns):
        if c is not None and not c.closed:
            try:
                _simple_req(c, side.next_xid(i), "closeSession", {})
            except Exception:  # noqa: BLE001
                pass
    c = Conn(side.hostport, timeout=timeout)
    try:
        c.connect(0, 30000, 0, b"\0" * 16)
        c.send_request(-4, OP["auth"], enc_body("auth", {"scheme": "digest", "auth": genmod.SUPER_USER.encode()}))
        c.read_reply()
        xid = [10]

        def rm(p):
            xid[0] += 1
            _, _, err, body = _simple_req(c, xid[0], "getChildren", {"path": p, "watch": False})
            if err == 0:
                for ch in decode_reply("getChildren", body)["children"] or []:
                    rm(p.rstrip("/") + "/" + ch)
            xid[0] += 1
            _simple_req(c, xid[0], "delete", {"path": p, "version": -1})
        rm(prefix)
        _simple_req(c, 999999, "closeSession", {})
    finally:
        c.close()


# ====================================================================== orchestration
class Servers:
    """Start the servers named on the command line (zookeeper/oxkeeper/zk-tamper-*), or use host:port."""

    def __init__(self, spec, label):
        self.spec = spec
        self.label = label
        self.procs = []
        self.proxy = None

    @staticmethod
    def is_external(spec):
        return ":" in spec

    def start(self):
        import servers  # tests/lib/servers.py
        common, zk_props, ox_cfg = server_settings()
        if self.is_external(self.spec):
            return self.spec
        if self.spec == "zookeeper":
            s = servers.start_zookeeper(extra_cfg=dict(common), jvm_props=zk_props)
            self.procs.append(s)
            return s.hostport
        if self.spec == "oxkeeper":
            cfg = dict(common)
            cfg.update(ox_cfg)
            s = servers.start_oxkeeper(extra_cfg=cfg)
            self.procs.append(s)
            return s.hostport
        if self.spec.startswith("zk-tamper-"):
            # self-test target: a real ZooKeeper behind a proxy that corrupts one reply or drops one event
            from zkd_fake import TamperProxy
            _, _, mode, nth = self.spec.split("-", 3)
            s = servers.start_zookeeper(extra_cfg=dict(common), jvm_props=zk_props)
            self.procs.append(s)
            self.proxy = TamperProxy(s.hostport, mode=mode, nth=int(nth))
            return self.proxy.hostport
        raise SystemExit(f"unknown server {self.spec!r}: use zookeeper, oxkeeper, zk-tamper-reply-N, "
                         f"zk-tamper-event-N or host:port")

    def log_tail(self, n=40):
        out = ""
        for s in self.procs:
            try:
                with open(os.path.join(s.workdir, "server.log"), errors="replace") as f:
                    lines = f.readlines()[-n:]
                alive = "running" if s.proc.poll() is None else f"exited with {s.proc.returncode}"
                out += f"\n--- {self.label} {s.name} ({alive}) server.log tail:\n" + "".join(lines)
            except OSError:
                pass
        return out

    def stop(self):
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        for s in self.procs:
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass
        self.procs = []


def worker(wid, seeds, args, dev, results, stop):
    """Run `seeds` one after another with fresh servers per seed (or the external servers)."""
    def on_term(_sig, _frm):
        raise SystemExit(3)
    signal.signal(signal.SIGTERM, on_term)
    external = Servers.is_external(args.a) or Servers.is_external(args.b)
    for seed in seeds:
        if stop.is_set():
            break
        sa, sb = Servers(args.a, "A"), Servers(args.b, "B")
        t0 = time.monotonic()
        try:
            hp_a = sa.start()
            hp_b = sb.start()
            cov, n = run_seed(seed, args.ops, hp_a, hp_b, dev, prefix_mode=external, timeout=args.timeout,
                              drain=args.drain, paranoid=args.paranoid,
                              stop=stop, labels=(f"A={args.a}", f"B={args.b}"),
                              progress=(lambda s, k: results.put(("progress", s, k))) if args.verbose else None)
            results.put(("ok", seed, dict(cov), n, time.monotonic() - t0))
        except Difference as d:
            extra = ""
            for s in (sa, sb):
                if s.proxy is not None and s.proxy.tampered:
                    extra += f"\n(self-test proxy {s.spec}: {s.proxy.tampered})"
            results.put(("diff", seed, str(d) + extra + sa.log_tail(15) + sb.log_tail(15), time.monotonic() - t0))
            stop.set()
        except BaseException as e:  # noqa: BLE001
            results.put(("error", seed, "".join(traceback.format_exception(e)) + sa.log_tail() + sb.log_tail(),
                         time.monotonic() - t0))
            stop.set()
        finally:
            sa.stop()
            sb.stop()
    results.put(("done", wid))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20, help="number of seeds (default 20)")
    ap.add_argument("--first-seed", type=int, default=0, help="first seed (seeds are first..first+N-1)")
    ap.add_argument("--seed-list", default=None, help="comma-separated explicit seeds (overrides --seeds)")
    ap.add_argument("--ops", type=int, default=10000, help="operations per seed (default 10000)")
    ap.add_argument("--a", default="zookeeper", help="reference: zookeeper | oxkeeper | host:port")
    ap.add_argument("--b", default="zookeeper", help="under test: zookeeper | oxkeeper | host:port | "
                                                      "zk-tamper-reply-N | zk-tamper-event-N")
    ap.add_argument("--jobs", type=int, default=2, help="parallel worker processes (fresh servers per seed); "
                                                        "forced to 1 with host:port servers")
    ap.add_argument("--deviations", default=os.path.join(REPO, "DEVIATIONS.md"),
                    help="DEVIATIONS.md to read directives from (default: repo root)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for any single reply")
    ap.add_argument("--drain", choices=("every", "writes"), default="every",
                    help="drain (marker request + read) the other connections after every op (default), or only "
                         "after ops that can fire watches elsewhere (faster; a stray event is then reported at the "
                         "next drain)")
    ap.add_argument("--paranoid", action="store_true",
                    help="also pipeline a marker request behind every op, so a missing or extra reply is pinned to "
                         "the op that caused it (slower)")
    ap.add_argument("--no-coverage", action="store_true", help="do not fail on missing coverage")
    ap.add_argument("--quick", action="store_true", help="2 seeds x 1500 ops, coverage not enforced")
    ap.add_argument("--self-test", action="store_true",
                    help="check that a tampered reply and a dropped event are reported (exit 0 if both are)")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    # C1-only JIT for the ZooKeeper JVMs we start: about half the CPU of tiered C2 for this short-lived load
    os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")

    if args.self_test:
        return self_test(args)
    if args.quick:
        args.seeds, args.ops, args.no_coverage = 2, 1500, True

    try:
        dev = devmod.load(args.deviations)
    except devmod.DeviationError as e:
        print(f"error in the deviation directives of {args.deviations}: {e}")
        return 2
    if dev.directives:
        print(f"deviation directives from {dev.source}:")
        for d in dev.directives:
            print(f"  {d}")
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else \
        list(range(args.first_seed, args.first_seed + args.seeds))
    external = Servers.is_external(args.a) or Servers.is_external(args.b)
    jobs = 1 if external else max(1, min(args.jobs, len(seeds)))
    print(f"differential run: A={args.a} B={args.b} seeds={seeds[0]}..{seeds[-1]} ({len(seeds)}) ops/seed={args.ops} "
          f"jobs={jobs} mode={'prefix (external servers)' if external else 'fresh servers per seed'}", flush=True)

    t0 = time.monotonic()
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    stop = ctx.Event()
    procs = []
    for w in range(jobs):
        p = ctx.Process(target=worker, args=(w, seeds[w::jobs], args, dev, results, stop))
        p.start()
        procs.append(p)
    cov = collections.Counter()
    done, ok_seeds, total_ops, failure = 0, 0, 0, None
    try:
        while done < jobs:
            try:
                msg = results.get(timeout=5)
            except queue.Empty:
                if all(not p.is_alive() for p in procs):
                    break
                continue
            if msg[0] == "done":
                done += 1
            elif msg[0] == "progress":
                print(f"  seed {msg[1]}: {msg[2]} ops", flush=True)
            elif msg[0] == "ok":
                _, seed, c, n, el = msg
                ok_seeds += 1
                total_ops += n
                cov.update({tuple(k): v for k, v in c.items()})
                print(f"seed {seed}: {n} ops, no difference ({el:.1f}s)", flush=True)
            elif msg[0] in ("diff", "error") and failure is None:
                failure = msg
                print(msg[2], flush=True)
                print(f"seed {msg[1]}: {'DIFFERENCE' if msg[0] == 'diff' else 'ERROR'} after {msg[3]:.1f}s",
                      flush=True)
    except KeyboardInterrupt:
        stop.set()
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
                p.join()
    wall = time.monotonic() - t0
    print(f"\ncoverage ((operation, error) -> count, from {ok_seeds} completed seeds):")
    print(coverage_table(cov))
    print(f"\n{ok_seeds}/{len(seeds)} seeds, {total_ops} ops compared, wall time {wall:.1f}s")
    if failure is not None:
        return 1
    if ok_seeds != len(seeds):
        print("FAIL: not every seed completed")
        return 1
    missing = coverage_missing(cov, dev.skip_ops)
    if missing:
        print("coverage missing: " + "; ".join(missing))
        if not args.no_coverage:
            print("FAIL: coverage incomplete")
            return 1
    print("PASS: no differences" + ("" if missing else ", full coverage"))
    return 0


def self_test(args):
    """ZooKeeper vs ZooKeeper-behind-a-tampering-proxy must be reported, for a corrupted reply and a dropped event."""
    dev = devmod.Deviations()
    ok = True
    for spec in ("zk-tamper-reply-300", "zk-tamper-event-40"):
        sa, sb = Servers("zookeeper", "A"), Servers(spec, "B")
        try:
            hp_a, hp_b = sa.start(), sb.start()
            try:
                run_seed(1, 3000, hp_a, hp_b, dev, timeout=args.timeout, labels=("A=zookeeper", f"B={spec}"))
                print(f"self-test {spec}: NOT detected (bad)")
                ok = False
            except Difference as d:
                text = str(d)
                print(text if args.verbose else "\n".join(text.splitlines()[:4]))
                print(f"self-test {spec}: difference detected as expected ({sb.proxy.tampered})")
        finally:
            sa.stop()
            sb.stop()
    # a DEVIATIONS.md directive parse check
    d = devmod.parse("<!-- diff: skip-op reconnectBadPassword -->\n<!-- diff:\nignore-field */*.mtime\n"
                     "equal-errors check -6 0\n-->")
    assert d.skip_ops == {"reconnectBadPassword"} and d.ignore_fields == ["*/*.mtime"], d.directives
    try:
        devmod.parse("<!-- diff: no-such-directive x -->")
        ok = False
        print("self-test: unknown directive accepted (bad)")
    except devmod.DeviationError:
        pass
    print("SELF-TEST PASS" if ok else "SELF-TEST FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
