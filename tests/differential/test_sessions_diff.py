"""Differential test of the deterministic session behaviours: Apache ZooKeeper 3.8 vs oxkeeper.

Each scenario below drives a few raw connections (the independent codec in zkd_jute.py / zkd_wire.py, no client
library) through connect / reconnect / close / expiry situations, against both servers started with the same zoo.cfg
(several tickTime / minSessionTimeout / maxSessionTimeout combinations). Everything each connection receives (connect
responses, replies, notifications, EOF, "still open") is recorded in order as a transcript; the transcripts are
normalised (session ids, passwords, zxids, times) and must be identical line for line.

    python3 -m pytest tests/differential/test_sessions_diff.py -q
    SESSDIFF_B=zookeeper python3 -m pytest tests/differential/test_sessions_diff.py -q   # validates the test itself

Environment: SESSDIFF_A (reference, default `zookeeper`), SESSDIFF_B (server under test, default `oxkeeper`),
SESSDIFF_DEVIATIONS (default <repo>/DEVIATIONS.md); `OXKEEPER_BIN` as in tests/lib/servers.py.

Normalisation (the same on both sides):
* session ids become S1, S2, ... in order of first appearance (0 stays 0);
* passwords: 16 (or n) zero bytes stay literal (`zero*16`), any other password becomes P1, P2, ... by identity, with
  its length (`P1/16`), so "the reconnect returned the same password" is still compared;
* zxids (reply header, Stat czxid/mzxid/pzxid) become Z1, Z2, ... by **rank** among all zxids of the scenario, so
  equality and order are compared, absolute values are not;
* ctime/mtime become <time>; getChildren lists are sorted (ZooKeeper answers them in hash order); the notification
  header zxid is masked (DEVIATIONS.md "Notifications carry the zxid of the change (3.9 behaviour)");
* a run of consecutive notifications on one connection is sorted (a closeSession deletes its ephemerals in hash
  order in ZooKeeper).
Not compared: frames that are races inside ZooKeeper itself (RACE_* below: replies to requests behind a
closeSession, an expiring session's own notification); entries tagged with a DEVIATIONS.md directive that is in
effect (`skip-op reconnectBadPassword`: what the owner sees after a wrong-password attempt; `pings-answered-at-once`:
where ping replies come, see `compared`).

Waits are on conditions with deadlines: a reply, EOF, or a notification. "open" in a transcript means the connection
was neither closed nor sent anything within DRAIN_S seconds.
"""

import concurrent.futures
import copy
import difflib
import json
import os
import socket
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

import servers  # noqa: E402
import zkd_deviations  # noqa: E402
from zkd_jute import (OP, Reader, decode_connect_response, decode_reply, enc_body, enc_connect,  # noqa: E402
                      enc_header, frame)
from zkd_wire import Closed, Conn, Timeout  # noqa: E402

REF = os.environ.get("SESSDIFF_A", "zookeeper")
SUT = os.environ.get("SESSDIFF_B", "oxkeeper")
DEVIATIONS = zkd_deviations.load(os.environ.get("SESSDIFF_DEVIATIONS") or os.path.join(REPO, "DEVIATIONS.md"))

# DEVIATIONS.md "A wrong password does not disturb the session's owner" (<!-- diff: skip-op reconnectBadPassword -->):
# what the owner's connection sees after another connection presented the session id with a wrong password.
DEV_BAD_PASSWORD_OWNER = "reconnectBadPassword"

ZERO16 = b"\0" * 16
WORLD = [[31, "world", "anyone"]]
REPLY_S = 5.0   # deadline for an expected reply
DRAIN_S = 2.0   # how long a connection that should be closed may stay silent before it is recorded as "open"
EXPIRY_S = 10.0  # deadline for a session expiry to show up

try:
    import pytest_timeout  # noqa: F401
    _timeout = pytest.mark.timeout(300)
except ImportError:  # pragma: no cover
    def _timeout(f):
        return f

# zoo.cfg combinations. min/max default to 2x / 20x tickTime.
CONFIGS = {
    "tick2000": {"tickTime": "2000"},
    "fast": {"tickTime": "50", "minSessionTimeout": "200", "maxSessionTimeout": "20000"},
    "narrow": {"tickTime": "100", "minSessionTimeout": "300", "maxSessionTimeout": "1200"},
    "pinned": {"tickTime": "500", "minSessionTimeout": "1500", "maxSessionTimeout": "1500"},
}


def bounds(cfg):
    tick = int(cfg["tickTime"])
    return tick, int(cfg.get("minSessionTimeout", 2 * tick)), int(cfg.get("maxSessionTimeout", 20 * tick))


def clamp(cfg, t):
    _, lo, hi = bounds(cfg)
    return min(max(t, lo), hi)


# ====================================================================== recording
# ZooKeeper race (tests/differential/README.md, item 17, and seen here): a request pipelined behind closeSession, or
# sent after its reply before the socket closed, is either not answered at all or answered after the closeSession
# reply, before the EOF: reads with SessionExpired -112 or UnknownSession -12 (depending on whether it was submitted
# before Prep marked the session closing, or after the session was removed), a second closeSession with OK and a
# new zxid, a write with -112 (its error txn uses a zxid). Such replies are accepted from both servers; a request
# that is actually executed (another reply) is compared, and so is everything that comes before the closeSession
# reply and the EOF.
RACE_AFTER_CLOSE = "ZooKeeper race: reply to a request behind closeSession"


def after_close_ok(e):
    return e["k"] == "reply" and (e["err"] in (-112, -12) or (e["op"] in ("closeSession", "ping") and e["err"] == 0))


# ZooKeeper race: when a session expires, the notifications its own watches fire are queued on its connection just
# before the connection is closed, and may or may not get out.
RACE_EXPIRED_OWN_EVENT = "ZooKeeper race: an expired session's own notification before its connection closes"

class Side:
    """One server and the transcript of one scenario run against it."""

    def __init__(self, label, hostport, cfg):
        self.label = label
        self.hostport = hostport
        self.cfg = cfg
        self.log = []
        self.clients = []

    def record(self, conn, kind, dev=None, **fields):
        e = {"c": conn, "k": kind}
        e.update(fields)
        if dev:
            e["dev"] = dev
        self.log.append(e)

    def check(self, name, ok, detail=""):
        """A boolean fact both servers must agree on (the detail, e.g. a measured time, is not compared)."""
        self.record("-", "check", name=name, ok=bool(ok))
        self.record("-", "note", text=f"{name}: {'yes' if ok else 'NO'} {detail}")

    def note(self, text):
        self.record("-", "note", text=text)

    def client(self, name):
        c = Client(self, name)
        self.clients.append(c)
        return c

    def close_all(self):
        for c in self.clients:
            c.close()


class Client:
    """One raw connection. Every frame it receives is recorded in the side's transcript."""

    def __init__(self, side, name):
        self.side = side
        self.name = name
        self.conn = Conn(side.hostport, timeout=0.2)  # short kernel timeouts: deadlines are checked every 0.2 s
        self.xid = 0
        self.kinds = {-2: "ping"}
        self.sid = 0
        self.pw = None
        self.last = 0
        self.timeout_ms = None
        self.dev = None  # a DEVIATIONS tag put on everything this connection records from now on
        self.eof = False
        # [(reason, predicate(entry))]: received entries a predicate accepts are ZooKeeper races, tagged and left out
        # of the comparison (a frame no predicate accepts is compared as usual)
        self.allow = []
        self.close_sent = False
        self.late_pings = 0  # pings sent behind a closeSession

    # ------------------------------------------------------------ helpers
    def rec(self, kind, **fields):
        self.side.record(self.name, kind, dev=self.dev, **fields)
        return self.side.log[-1]

    def close(self):
        self.conn.close()

    def _tag(self, e):
        for reason, pred in self.allow:
            if pred(e):
                e["race"] = reason
                return

    def _send(self, data):
        """Send raw bytes; a failure is not recorded (it races with the server's close) - the reads that follow
        record the EOF."""
        if self.conn.closed:
            return False
        try:
            self.conn.sock.sendall(data)
            return True
        except OSError:
            return False

    def _frame_entry(self, payload):
        try:
            r = Reader(payload)
            xid, zxid, err = r.int(), r.long(), r.int()
        except Exception:  # noqa: BLE001
            self.rec("short_frame", hex=payload.hex())
            return None
        body = payload[16:]
        if xid == -1:
            try:
                rr = Reader(body)
                ev = {"type": rr.int(), "state": rr.int(), "path": rr.ustring()}
                if rr.remaining():
                    ev["trailing"] = rr.rest().hex()
            except Exception as e:  # noqa: BLE001
                ev = {"undecodable": body.hex(), "error": str(e)}
            self._tag(self.rec("event", hzxid=zxid, herr=err, **ev))
            return ("event", ev)
        op = self.kinds.get(xid, "?")
        if zxid > self.last:
            self.last = zxid
        if err == 0:
            try:
                b = decode_reply(op, body)
            except Exception:  # noqa: BLE001
                b = {"raw": body.hex()}
        else:
            b = {"raw": body.hex()} if body else None
        e = self.rec("reply", op=op, xid=xid, zxid=zxid, err=err, body=b)
        if op == "ping" and self.late_pings:
            e["late_ping"] = True
        self._tag(e)
        if op == "closeSession" and err == 0 and not any(r == RACE_AFTER_CLOSE for r, _ in self.allow):
            self.allow.append((RACE_AFTER_CLOSE, after_close_ok))
        return ("reply", xid, err, b)

    def _read(self, deadline):
        """One frame, or None after recording eof (once per connection)."""
        if self.eof:
            return None
        try:
            return self.conn.read_frame(deadline)
        except Closed:
            self.eof = True
            self.rec("eof")
            return None

    # ------------------------------------------------------------ protocol
    def hello(self, label, sid=0, pw=ZERO16, last=0, to=30000, pv=0, ro=False, with_ro=True):
        """Send a ConnectRequest and record the response (or EOF / no reply). Returns the response or None."""
        self.rec("send", what=f"connect {label}")
        self._send(frame(enc_connect(pv, last, to, sid, pw, ro, with_ro)))
        try:
            payload = self.conn.read_frame(time.monotonic() + REPLY_S)
        except Closed:
            self.eof = True
            self.rec("eof")
            return None
        except Timeout:
            self.rec("no_reply")
            return None
        try:
            resp = decode_connect_response(payload)
        except Exception:  # noqa: BLE001
            self.rec("bad_connect_response", hex=payload.hex())
            return None
        self.rec("connect", **resp)
        if resp["timeOut"] > 0:
            self.sid = resp["sessionId"]
            self.pw = bytes.fromhex(resp["passwd"]) if resp["passwd"] is not None else None
            self.last = max(self.last, last)
            self.timeout_ms = resp["timeOut"]
        return resp

    def send(self, kind, xid=None, **args):
        """Send one request (not recorded: the transcript shows what came back). Returns its xid."""
        return self.pipeline([(kind, args, xid)])[0]

    def pipeline(self, reqs):
        """Send several requests with one sendall. reqs: [(kind, args, xid or None)]."""
        data, xids = [], []
        for kind, args, xid in reqs:
            if kind == "closeSession":
                self.close_sent = True
            elif kind == "ping" and self.close_sent:
                self.late_pings += 1
            if xid is None:
                self.xid += 1
                xid = self.xid
            self.kinds.setdefault(xid, kind)
            xids.append(xid)
            data.append(frame(enc_header(xid, OP[kind]) + enc_body(kind, args)))
        self.rec("send", what=" + ".join(k for k, _, _ in reqs))
        self._send(b"".join(data))
        return xids

    def read_until(self, xid, limit=REPLY_S):
        """Record frames until the reply with this xid, EOF, or the deadline ("no_reply"). Returns the reply
        tuple or None."""
        deadline = time.monotonic() + limit
        while True:
            try:
                payload = self._read(deadline)
            except Timeout:
                self.rec("no_reply")
                return None
            if payload is None:
                return None
            got = self._frame_entry(payload)
            if got and got[0] == "reply" and got[1] == xid:
                return got

    def call(self, kind, **args):
        return self.read_until(self.send(kind, **args))

    def drain(self, limit=DRAIN_S):
        """Record every frame until EOF, or "open" if the connection is still open and silent at the deadline."""
        deadline = time.monotonic() + limit
        while True:
            try:
                payload = self._read(deadline)
            except Timeout:
                self.rec("open")
                return False
            if payload is None:
                return True
            self._frame_entry(payload)

    def wait_events(self, want, limit=EXPIRY_S):
        """Record frames until notifications for all (type, path) in `want` have arrived. Returns True if so."""
        want = set(want)
        deadline = time.monotonic() + limit
        while want:
            try:
                payload = self._read(deadline)
            except Timeout:
                self.rec("no_event", missing=sorted(map(list, want)))
                return False
            if payload is None:
                return False
            got = self._frame_entry(payload)
            if got and got[0] == "event":
                want.discard((got[1].get("type"), got[1].get("path")))
        return True

    def buffered(self):
        """Bytes already waiting in the socket (not consumed)."""
        try:
            return len(self.conn.buf) + len(self.conn.sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, OSError):
            return len(self.conn.buf)


# ====================================================================== normalisation and comparison
def normalise(log):
    log = copy.deepcopy(log)
    zx = set()

    def collect(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("czxid", "mzxid", "pzxid") and isinstance(v, int) and v > 0:
                    zx.add(v)
                collect(v)
        elif isinstance(o, list):
            for v in o:
                collect(v)

    pings_at_once = getattr(DEVIATIONS, "pings_at_once", False)
    for e in log:
        # zxids of racy frames, and of ping replies answered out of order, do not take part in the ranking
        if e.get("race") or (pings_at_once and e["k"] == "reply" and e["op"] == "ping"):
            continue
        if e["k"] == "reply" and e["zxid"] > 0:
            zx.add(e["zxid"])
        collect(e.get("body"))
    rank = {z: f"Z{i + 1}" for i, z in enumerate(sorted(zx))}
    sids, pws = {}, {}

    def sid(v):
        if not isinstance(v, int) or v == 0:
            return v
        return sids.setdefault(v, f"S{len(sids) + 1}")

    def pw(v):
        if v is None:
            return None
        b = bytes.fromhex(v)
        if not any(b):
            return f"zero*{len(b)}"
        return pws.setdefault(v, f"P{len(pws) + 1}") + f"/{len(b)}"

    def walk(o):
        if isinstance(o, dict):
            for k, v in list(o.items()):
                if k in ("czxid", "mzxid", "pzxid") and isinstance(v, int) and v > 0:
                    o[k] = rank.get(v, "<unranked>")
                elif k in ("ctime", "mtime") and v:
                    o[k] = "<time>"
                elif k == "ephemeralOwner":
                    o[k] = sid(v)
                elif k == "children" and isinstance(v, list):
                    o[k] = sorted(v)  # ZooKeeper lists children in hash order
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    out = []
    for e in log:
        if e["k"] == "connect":
            e["sessionId"] = sid(e["sessionId"])
            e["passwd"] = pw(e["passwd"])
        elif e["k"] == "reply":
            if e["zxid"] > 0:
                e["zxid"] = rank.get(e["zxid"], "<unranked>")
            walk(e.get("body"))
        elif e["k"] == "event":
            e["hzxid"] = "<masked>"  # DEVIATIONS.md: "Notifications carry the zxid of the change (3.9 behaviour)"
        out.append(e)
    # sort runs of consecutive notifications on one connection
    i = 0
    while i < len(out):
        j = i
        while j < len(out) and out[j]["k"] == "event" and out[j]["c"] == out[i]["c"]:
            j += 1
        if j - i > 1:
            out[i:j] = sorted(out[i:j], key=lambda e: json.dumps(e, sort_keys=True))
        i = max(j, i + 1)
    return out


def render(e):
    rest = {k: v for k, v in e.items() if k not in ("c", "k", "dev", "race", "late_ping")}
    tag = f"  [deviation: {e['dev']}]" if e.get("dev") else ""
    tag += f"  [race, not compared: {e['race']}]" if e.get("race") else ""
    if e["k"] == "send":
        return f"{e['c']:>3} -> {rest['what']}{tag}"
    if e["k"] == "note":
        return f"  # {rest['text']}"
    if not rest:
        return f"{e['c']:>3} <- {e['k']}{tag}"
    return f"{e['c']:>3} <- {e['k']} {json.dumps(rest, sort_keys=True)}{tag}"


def compared(log):
    """The lines that must be equal: notes and entries under a DEVIATIONS directive in effect are left out.

    With the directive `pings-answered-at-once` in DEVIATIONS.md, ping replies are not compared where they come
    (the server may answer a ping ahead of replies to earlier requests, and one sent behind a closeSession before
    that closeSession's reply); each connection's number of ping replies (those behind a closeSession not counted)
    is compared instead, at the end."""
    pings_at_once = getattr(DEVIATIONS, "pings_at_once", False)
    lines, pings = [], {}
    for e in normalise(log):
        if e["k"] == "note" or e.get("race"):
            continue
        if e.get("dev") and e["dev"] in DEVIATIONS.skip_ops:
            continue
        if pings_at_once and e["k"] == "reply" and e["op"] == "ping":
            if not e.get("late_ping"):
                pings[e["c"]] = pings.get(e["c"], 0) + 1
            continue
        lines.append(render(e))
    for c in sorted(pings):
        lines.append(f"{c:>3} <- ping replies (position not compared: pings-answered-at-once): {pings[c]}")
    return lines


def full(log):
    return [render(e) for e in normalise(log)]


# ====================================================================== servers
class Pairs:
    """One (reference, under test) server pair per zoo.cfg combination; only one pair runs at a time."""

    def __init__(self):
        self.cfg_name = None
        self.pair = None

    def get(self, cfg_name):
        if cfg_name != self.cfg_name:
            self.stop()
            cfg = CONFIGS[cfg_name]
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                futs = [ex.submit(start_server, kind, cfg) for kind in (REF, SUT)]
                got = []
                for f in futs:
                    try:
                        got.append(f.result())
                    except Exception:
                        for g in futs:
                            if g is not f and g.exception() is None:
                                g.result().stop()
                        raise
            self.pair, self.cfg_name = got, cfg_name
        return self.pair

    def stop(self):
        if self.pair:
            for s in self.pair:
                s.stop()
        self.pair, self.cfg_name = None, None


_env_lock = threading.Lock()


def start_server(kind, cfg):
    cfg = dict(cfg)
    if kind == "zookeeper":
        with _env_lock:
            old = os.environ.get("JAVA_TOOL_OPTIONS")
            os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")
            try:
                return servers.start_zookeeper(extra_cfg=cfg, jvm_props={
                    "zookeeper.forceSync": "no", "org.slf4j.simpleLogger.defaultLogLevel": "warn"})
            finally:
                if old is None:
                    os.environ.pop("JAVA_TOOL_OPTIONS", None)
    if kind == "oxkeeper":
        cfg["forceSync"] = "no"
        return servers.start_oxkeeper(extra_cfg=cfg)
    raise ValueError(f"unknown server kind {kind!r}")


@pytest.fixture(scope="module")
def pairs():
    p = Pairs()
    yield p
    p.stop()


# ====================================================================== scenarios
SCENARIOS = []


def scenario(*cfgs):
    def deco(fn):
        SCENARIOS.extend((c, fn.__name__[3:], fn) for c in cfgs)
        return fn
    return deco


def mkpath(s, root, *names, eph=()):
    """Create /root (persistent) and /root/<name> (ephemeral when name in eph) on client s."""
    s.call("create", path=root, data=b"", acl=WORLD, flags=0)
    for n in names:
        s.call("create", path=f"{root}/{n}", data=b"d", acl=WORLD, flags=1 if n in eph else 0)


@scenario("tick2000", "fast", "narrow", "pinned")
def sc_negotiate(side):
    """Negotiated timeout for requested values around and beyond the bounds (one new session each)."""
    _, lo, hi = bounds(side.cfg)
    values = sorted({-2**31, -1, 0, 1, lo - 1, lo, lo + 1, (lo + hi) // 2, hi - 1, hi, hi + 1, 2**31 - 1})
    for i, v in enumerate(values):
        c = side.client(f"n{i}")
        r = c.hello(f"new session timeOut={v}", to=v)
        side.check(f"timeOut {v} -> clamp(min,max)", r is not None and r["timeOut"] == clamp(side.cfg, v),
                   f"got {r and r['timeOut']}")
        c.close()


@scenario("tick2000", "fast")
def sc_connect_shapes(side):
    """protocolVersion, readOnly byte present/absent/true, lastZxidSeen < 0, odd passwords on a new session;
    each connection then answers an exists and a ping."""
    shapes = [
        ("plain", {}),
        ("without the readOnly byte", {"with_ro": False}),
        ("readOnly=true", {"ro": True}),
        ("protocolVersion=1", {"pv": 1}),
        ("protocolVersion=-1", {"pv": -1}),
        ("protocolVersion=2^31-1", {"pv": 2**31 - 1}),
        ("lastZxidSeen=-1", {"last": -1}),
        ("passwd empty", {"pw": b""}),
        ("passwd null", {"pw": None}),
        ("passwd 5 bytes", {"pw": b"abcde"}),
        ("passwd 16x0xff", {"pw": b"\xff" * 16}),
        ("passwd 40 bytes", {"pw": bytes(range(40))}),
    ]
    for i, (label, kw) in enumerate(shapes):
        c = side.client(f"c{i}")
        if c.hello(label, **kw):
            c.call("exists", path="/zookeeper", watch=False)
            c.call("ping", xid=-2)
        c.close()


@scenario("tick2000", "fast")
def sc_reconnect_takeover(side):
    """Right password while the owner is still connected: same id and password, the new request's timeout,
    the old connection closed; ephemerals kept."""
    _, lo, hi = bounds(side.cfg)
    a = side.client("A")
    a.hello("new", to=30000)
    mkpath(a, "/rt", "e", eph=("e",))
    a.call("exists", path="/rt/e", watch=True)
    b = side.client("B")
    b.hello("sid=A pw=A last=A.last timeOut=min+1", sid=a.sid, pw=a.pw, last=a.last, to=lo + 1)
    a.drain()
    b.call("getData", path="/rt/e", watch=True)
    c = side.client("C")
    c.hello("sid=A pw=A last=B.last timeOut=max+5", sid=a.sid, pw=a.pw, last=b.last, to=hi + 5)
    b.drain()
    c.call("exists", path="/rt/e", watch=False)
    c.call("closeSession")
    c.drain()


@scenario("tick2000", "fast")
def sc_reconnect_detached(side):
    """Right password after the owner closed its socket."""
    a = side.client("A")
    a.hello("new", to=30000)
    mkpath(a, "/rd", "e", eph=("e",))
    a.close()
    b = side.client("B")
    b.hello("sid=A pw=A last=A.last timeOut=10000", sid=a.sid, pw=a.pw, last=a.last, to=10000)
    b.call("getData", path="/rd/e", watch=False)
    b.call("closeSession")
    b.drain()


@scenario("tick2000", "fast")
def sc_reconnect_timeouts(side):
    """A chain of takeovers, each requesting another timeout: every response carries the new request's clamped
    timeout; each previous connection is closed."""
    _, lo, hi = bounds(side.cfg)
    cands = [-5, 0, 1, lo, lo + 1, hi - 1, hi, hi + 1, 2**31 - 1, 12345]
    values = [v for v in cands if clamp(side.cfg, v) >= 1000]  # no session may expire between the steps
    prev = side.client("A")
    prev.hello("new", to=30000)
    sid, pw = prev.sid, prev.pw
    for i, v in enumerate(values):
        c = side.client(f"R{i}")
        r = c.hello(f"sid=A pw=A timeOut={v}", sid=sid, pw=pw, last=prev.last, to=v)
        side.check(f"reconnect timeOut {v} -> clamp", r is not None and r["timeOut"] == clamp(side.cfg, v),
                   f"got {r and r['timeOut']}")
        prev.drain()
        prev = c
    prev.call("closeSession")
    prev.drain()


BAD_PASSWORDS = [
    ("last byte flipped", lambda pw: pw[:-1] + bytes([pw[-1] ^ 1])),
    ("16 zero bytes", lambda pw: ZERO16),
    ("empty", lambda pw: b""),
    ("null", lambda pw: None),
    ("first 15 bytes", lambda pw: pw[:15]),
    ("17 bytes (right + 0x00)", lambda pw: pw + b"\0"),
    ("64 bytes (right x4)", lambda pw: pw * 4),
]


@scenario("tick2000", "fast")
def sc_reconnect_bad_password_detached(side):
    """Wrong / wrong-length / empty / null passwords for a live session whose owner is not connected: the
    expired-session response, then EOF; the session itself is unharmed."""
    a = side.client("A")
    a.hello("new", to=30000)
    mkpath(a, "/bp", "e", eph=("e",))
    a.close()
    for i, (label, f) in enumerate(BAD_PASSWORDS):
        b = side.client(f"B{i}")
        b.hello(f"sid=A passwd {label}", sid=a.sid, pw=f(a.pw), last=a.last, to=30000)
        b.drain()
    c = side.client("C")
    c.hello("sid=A pw=A", sid=a.sid, pw=a.pw, last=a.last, to=30000)
    c.call("getData", path="/bp/e", watch=False)
    c.call("closeSession")
    c.drain()


@scenario("tick2000", "fast")
def sc_reconnect_bad_password_attached(side):
    """Wrong password while the owner is connected. What the owner sees afterwards is the listed deviation
    'A wrong password does not disturb the session's owner' (masked while `skip-op reconnectBadPassword` is in
    DEVIATIONS.md); the wrong-password connection itself, and the session's survival, are compared."""
    a = side.client("A")
    a.hello("new", to=30000)
    mkpath(a, "/bpa", "e", eph=("e",))
    b = side.client("B")
    b.hello("sid=A passwd last byte flipped", sid=a.sid, pw=BAD_PASSWORDS[0][1](a.pw), last=a.last, to=30000)
    b.drain()
    a.dev = DEV_BAD_PASSWORD_OWNER
    a.drain(limit=0.5)
    c = side.client("C")
    c.hello("sid=A pw=A", sid=a.sid, pw=a.pw, last=a.last, to=30000)
    if not a.eof:
        a.drain()
    c.call("getData", path="/bpa/e", watch=False)
    c.call("closeSession")
    c.drain()


@scenario("tick2000", "fast")
def sc_reconnect_unknown_id(side):
    """Session ids nobody holds (next to a live one, far away, negative), with zero and with a live session's
    password: the expired-session response, then EOF."""
    a = side.client("A")
    a.hello("new", to=30000)
    ids = [("A+1", a.sid + 1), ("A+0x10000", a.sid + 0x10000), ("A with top byte 2", (a.sid & (2**56 - 1)) | (2 << 56)),
           ("1", 1), ("-1", -1), ("0x0123456789abcdef", 0x0123456789ABCDEF)]
    n = 0
    for label, sid in ids:
        for plabel, pw in (("16 zero bytes", ZERO16), ("A's password", a.pw)):
            b = side.client(f"U{n}")
            n += 1
            b.hello(f"sid={label} passwd={plabel}", sid=sid, pw=pw, to=30000)
            b.drain()
    a.call("exists", path="/zookeeper", watch=False)
    a.call("closeSession")
    a.drain()


@scenario("tick2000", "fast")
def sc_reconnect_closed(side):
    """Reconnect with the id and password of a session closed by closeSession."""
    a = side.client("A")
    a.hello("new", to=30000)
    mkpath(a, "/rc", "e", eph=("e",))
    a.call("closeSession")
    a.drain()
    b = side.client("B")
    b.hello("sid=A pw=A last=A.last", sid=a.sid, pw=a.pw, last=a.last, to=30000)
    b.drain()
    c = side.client("C")
    c.hello("new", to=30000)
    c.call("getChildren", path="/rc", watch=False)
    c.call("closeSession")
    c.drain()


@scenario("tick2000", "fast")
def sc_zxid_ahead(side):
    """lastZxidSeen ahead of the server: refused (ZooKeeper: no reply, closed); equal is fine; a refused
    reconnect leaves the session's connection alone."""
    a = side.client("A")
    a.hello("new", to=30000)
    a.call("exists", path="/zookeeper", watch=False)  # a.last = the server's last zxid now
    b = side.client("B")
    b.hello("new, lastZxidSeen = server's + 1", last=a.last + 1)
    b.drain()
    c = side.client("C")
    c.hello("new, lastZxidSeen = server's", last=a.last)
    c.call("exists", path="/zookeeper", watch=False)
    d = side.client("D")
    d.hello("new, lastZxidSeen = 2^62", last=2**62)
    d.drain()
    e = side.client("E")
    e.hello("sid=A pw=A lastZxidSeen = 2^62", sid=a.sid, pw=a.pw, last=2**62, to=30000)
    e.drain()
    a.call("exists", path="/zookeeper", watch=False)  # the owner is untouched
    f = side.client("F")
    f.hello("sid=A pw=A wrong lastZxidSeen = 2^62 (ahead and wrong password)", sid=a.sid,
            pw=BAD_PASSWORDS[0][1](a.pw), last=2**62, to=30000)
    f.drain()
    a.call("exists", path="/zookeeper", watch=False)
    g = side.client("G")
    g.hello("sid=A pw=A lastZxidSeen=-5", sid=a.sid, pw=a.pw, last=-5, to=30000)
    a.drain()
    g.call("closeSession")
    g.drain()
    c.call("closeSession")
    c.drain()


@scenario("tick2000", "fast")
def sc_close_basic(side):
    """closeSession: reply (xid, a new zxid, err 0) then EOF; its ephemerals are gone; the notifications on the
    closer's own connection before its reply, and on a watcher's connection."""
    a = side.client("A")
    a.hello("new", to=30000)
    w = side.client("W")
    w.hello("new", to=30000)
    mkpath(a, "/cb", "e1", "e2", "p", eph=("e1", "e2"))
    a.call("exists", path="/cb/e1", watch=True)
    a.call("getChildren", path="/cb", watch=True)
    w.call("exists", path="/cb/e1", watch=True)
    w.call("getData", path="/cb/e2", watch=True)
    w.call("getChildren", path="/cb", watch=True)
    w.call("exists", path="/cb/none", watch=True)
    a.call("setData", path="/cb/p", data=b"x", version=-1)
    a.call("closeSession")
    side.note(f"W had {w.buffered()} bytes waiting when A read its closeSession reply")
    a.drain()
    w.call("exists", path="/zookeeper", watch=False)  # marker: every notification of the close comes before it
    w.call("getChildren2", path="/cb", watch=False)
    w.call("exists", path="/cb/e1", watch=False)
    w.call("closeSession")
    w.drain()


@scenario("tick2000", "fast")
def sc_close_pipelined(side):
    """Requests pipelined behind closeSession on the same socket (a read, a write, a second closeSession, a
    ping): what is answered before the EOF; the pipelined write must not happen."""
    a = side.client("A")
    a.hello("new", to=30000)
    mkpath(a, "/cp", "e", eph=("e",))
    a.pipeline([("closeSession", {}, None), ("exists", {"path": "/cp", "watch": False}, None),
                ("create", {"path": "/cp/late", "data": b"", "acl": WORLD, "flags": 0}, None),
                ("closeSession", {}, None), ("ping", {}, -2)])
    a.drain()
    w = side.client("W")
    w.hello("new", to=30000)
    w.call("getChildren", path="/cp", watch=False)
    w.call("closeSession")
    w.drain()


@scenario("tick2000", "fast")
def sc_close_then_request(side):
    """A request sent after the closeSession reply arrived (before reading the EOF)."""
    a = side.client("A")
    a.hello("new", to=30000)
    a.call("closeSession")
    a.send("exists", path="/zookeeper", watch=False)
    a.drain()


@scenario("tick2000")
def sc_pipelined_order(side):
    """Replies come in request order, pings included (ZooKeeper runs pings through the same pipeline as every
    other request): writes, reads and pings (xid -2 and a normal xid) pipelined on one connection."""
    a = side.client("A")
    a.hello("new", to=30000)
    a.call("create", path="/po", data=b"", acl=WORLD, flags=0)
    xids = a.pipeline([
        ("create", {"path": "/po/a", "data": b"1", "acl": WORLD, "flags": 1}, None),
        ("ping", {}, -2),
        ("setData", {"path": "/po/a", "data": b"2", "version": -1}, None),
        ("ping", {}, None),
        ("getData", {"path": "/po/a", "watch": False}, None),
        ("sync", {"path": "/po"}, None),
        ("ping", {}, -2),
        ("delete", {"path": "/po/a", "version": -1}, None),
        ("exists", {"path": "/po/a", "watch": False}, None),
    ])
    a.read_until(xids[-1])
    a.call("closeSession")
    a.drain()


def _expiring(side, root, own_watch):
    """W (long timeout) watches A's ephemeral; A asks for timeOut 0 (-> minSessionTimeout) and then stays silent.
    Returns (W, A) once W has seen the ephemeral's NodeDeleted and the parent's NodeChildrenChanged."""
    tick = bounds(side.cfg)[0]
    w = side.client("W")
    w.hello("new timeOut=20000", to=20000)
    w.call("create", path=root, data=b"", acl=WORLD, flags=0)
    a = side.client("A")
    a.hello("new timeOut=0", to=0)
    a.call("create", path=f"{root}/e", data=b"", acl=WORLD, flags=1)
    if own_watch:
        a.call("exists", path=f"{root}/e", watch=True)
    t_touch = time.monotonic()  # A's last request was answered: the server touched the session before this
    w.call("exists", path=f"{root}/e", watch=True)
    w.call("getChildren", path=root, watch=True)
    ok = w.wait_events({(2, f"{root}/e"), (4, root)})
    a.allow.append((RACE_EXPIRED_OWN_EVENT,
                    lambda e: e["k"] == "event" and e["type"] == 2 and e["path"] == f"{root}/e"))
    took = (time.monotonic() - t_touch) * 1000
    side.check("expired after at least timeOut", ok and took >= a.timeout_ms - 60,
               f"{took:.0f} ms, timeOut {a.timeout_ms}")
    side.check("expired within timeOut + 2 ticks + 3 s", ok and took <= a.timeout_ms + 2 * tick + 3000,
               f"{took:.0f} ms")
    return w, a


@scenario("fast")
def sc_expire_after_reconnect_shorter(side):
    """A session created with a long timeout and taken over by a connection that asks for timeOut 0: the new
    negotiated timeout (minSessionTimeout) governs its expiry."""
    w = side.client("W")
    w.hello("new timeOut=20000", to=20000)
    w.call("create", path="/xs", data=b"", acl=WORLD, flags=0)
    a = side.client("A")
    a.hello("new timeOut=20000", to=20000)
    a.call("create", path="/xs/e", data=b"", acl=WORLD, flags=1)
    w.call("exists", path="/xs/e", watch=True)
    b = side.client("B")
    b.hello("sid=A pw=A timeOut=0", sid=a.sid, pw=a.pw, last=a.last, to=0)
    t_touch = time.monotonic()
    a.drain()
    ok = w.wait_events({(2, "/xs/e")})
    took = (time.monotonic() - t_touch) * 1000
    side.check("expired after the reconnect's timeOut (not the original 20000)", ok and took < 5000,
               f"{took:.0f} ms")
    b.allow.append((RACE_EXPIRED_OWN_EVENT, lambda e: e["k"] == "event"))
    b.drain()
    w.call("closeSession")
    w.drain()


@scenario("fast")
def sc_no_expiry_after_reconnect_longer(side):
    """A session created with timeOut 0 (minSessionTimeout) and taken over by a connection that asks for 20000:
    it must not expire after the short timeout (W waits for the deletion of its ephemeral for 1.5 s; none comes)."""
    w = side.client("W")
    w.hello("new timeOut=20000", to=20000)
    w.call("create", path="/xl", data=b"", acl=WORLD, flags=0)
    a = side.client("A")
    a.hello("new timeOut=0", to=0)
    a.call("create", path="/xl/e", data=b"", acl=WORLD, flags=1)
    w.call("exists", path="/xl/e", watch=True)
    b = side.client("B")
    b.hello("sid=A pw=A timeOut=20000", sid=a.sid, pw=a.pw, last=a.last, to=20000)
    a.drain()
    w.wait_events({(2, "/xl/e")}, limit=1.5)
    b.call("exists", path="/xl/e", watch=False)
    b.call("closeSession")
    b.drain()
    w.call("exists", path="/zookeeper", watch=False)
    w.call("closeSession")
    w.drain()


@scenario("fast")
def sc_expire_passive(side):
    """A session expires while its connection stays open and silent: what the connection receives (its own
    watch on its ephemeral included) and whether it is closed; then reconnecting with its id."""
    w, a = _expiring(side, "/xp", own_watch=True)
    a.drain()
    b = side.client("B")
    b.hello("sid=A pw=A (expired)", sid=a.sid, pw=a.pw, last=a.last, to=30000)
    b.drain()
    w.call("getChildren", path="/xp", watch=False)
    w.call("closeSession")
    w.drain()


@scenario("fast")
def sc_expire_then_requests(side):
    """Requests (an exists, then a closeSession) sent on the connection of a session that has just expired."""
    w, a = _expiring(side, "/xq", own_watch=False)
    a.pipeline([("exists", {"path": "/zookeeper", "watch": False}, None), ("closeSession", {}, None)])
    a.drain()
    b = side.client("B")
    b.hello("sid=A pw=A (expired)", sid=a.sid, pw=a.pw, last=a.last, to=30000)
    b.drain()
    w.call("closeSession")
    w.drain()


# ====================================================================== the test
def run_side(srv, cfg, fn):
    side = Side(srv.name, srv.hostport, cfg)
    try:
        fn(side)
    except Exception as e:  # noqa: BLE001 - a crash is part of the report
        side.record("-", "harness_error", error=f"{type(e).__name__}: {e}")
    finally:
        side.close_all()
    return side


def report(name, cfg_name, ref, sut):
    a, b = compared(ref.log), compared(sut.log)
    if a == b:
        return None
    out = [f"scenario {name} [{cfg_name}]: {ref.label} and {sut.label} differ",
           "--- diff (normalised, compared lines) ---"]
    out += list(difflib.unified_diff(a, b, f"{ref.label}", f"{sut.label}", lineterm="", n=3))
    for s in (ref, sut):
        out.append(f"--- full transcript: {s.label} ({s.hostport}) ---")
        out += full(s.log)
    return "\n".join(out)


@_timeout
@pytest.mark.parametrize("cfg_name,name,fn", SCENARIOS, ids=[f"{c}-{n}" for c, n, _ in SCENARIOS])
def test_session_scenario(pairs, cfg_name, name, fn):
    ref_srv, sut_srv = pairs.get(cfg_name)
    cfg = CONFIGS[cfg_name]
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        fa = ex.submit(run_side, ref_srv, cfg, fn)
        fb = ex.submit(run_side, sut_srv, cfg, fn)
        ref, sut = fa.result(), fb.result()
    for s in (ref, sut):
        for srv in (ref_srv, sut_srv):
            if srv.proc.poll() is not None:
                pytest.fail(f"{srv.name} exited ({srv.proc.returncode}) during {name}; log in {srv.workdir}")
    msg = report(name, cfg_name, ref, sut)
    if msg:
        pytest.fail(msg, pytrace=False)
    # the transcript is printed for -s / on failure of a later assertion
    print(f"== {name} [{cfg_name}] ({ref.label} == {sut.label})")
    print("\n".join(full(ref.log)))
    for s in (ref, sut):
        for e in s.log:
            if e["k"] == "note":
                print(f"  # {s.label}: {e['text']}")
    errors = [e for s in (ref, sut) for e in s.log if e["k"] == "harness_error"]
    assert not errors, errors


def test_normalise_ranks_and_renames():
    log = [{"c": "A", "k": "connect", "protocolVersion": 0, "timeOut": 5, "sessionId": 77, "passwd": "ab" * 16},
           {"c": "A", "k": "reply", "op": "exists", "xid": 1, "zxid": 9, "err": 0,
            "body": {"stat": {"czxid": 3, "mzxid": 9, "pzxid": 3, "ctime": 1, "mtime": 0, "ephemeralOwner": 77}}},
           {"c": "B", "k": "connect", "protocolVersion": 0, "timeOut": 0, "sessionId": 0, "passwd": "00" * 16},
           {"c": "B", "k": "event", "type": 2, "state": 3, "path": "/b", "hzxid": 5, "herr": 0},
           {"c": "B", "k": "event", "type": 2, "state": 3, "path": "/a", "hzxid": 5, "herr": 0}]
    n = normalise(log)
    assert n[0]["sessionId"] == "S1" and n[0]["passwd"] == "P1/16"
    assert n[1]["zxid"] == "Z2" and n[1]["body"]["stat"]["czxid"] == "Z1" and n[1]["body"]["stat"]["ctime"] == "<time>"
    assert n[1]["body"]["stat"]["ephemeralOwner"] == "S1" and n[1]["body"]["stat"]["mtime"] == 0
    assert n[2]["passwd"] == "zero*16" and n[2]["sessionId"] == 0
    assert [e["path"] for e in n[3:]] == ["/a", "/b"] and n[3]["hzxid"] == "<masked>"


def test_pings_directive(monkeypatch):
    dev = zkd_deviations.parse("<!-- diff: pings-answered-at-once -->")
    assert dev.pings_at_once
    ping = {"c": "A", "k": "reply", "op": "ping", "xid": -2, "zxid": 5, "err": 0, "body": None}
    write = {"c": "A", "k": "reply", "op": "create", "xid": 1, "zxid": 6, "err": 0, "body": {"path": "/a"}}
    late = dict(ping, late_ping=True)
    zk, ox = [write, dict(ping, zxid=6)], [ping, write, late]
    monkeypatch.setattr(sys.modules[__name__], "DEVIATIONS", zkd_deviations.Deviations())
    assert compared(zk) != compared(ox)
    monkeypatch.setattr(sys.modules[__name__], "DEVIATIONS", dev)
    assert compared(zk) == compared(ox)
    assert compared(zk)[-1].endswith(": 1")
