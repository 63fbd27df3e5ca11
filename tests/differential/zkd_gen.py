"""Seeded generator of random ZooKeeper operation sequences for the differential tester.

An op is a plain dict: {"kind": <op kind>, "conn": <0..NCONN-1>, ...arguments}. Paths are *logical* (the runner maps
them onto the server, e.g. under a per-seed prefix). Values that differ per server (session ids, passwords, zxids
for SetWatches) are symbolic here and resolved by the runner for each server separately.

The sequence depends only on the seed and on the reference server's (already compared, hence identical) replies,
which the runner feeds back through `observe()` so that sequential node names can be targeted later.
"""

import base64
import hashlib
import random
import re
from collections import deque

NCONN = 3
NAMES = ("a", "b", "c")
SPECIAL = ("/zookeeper", "/zookeeper/config", "/zookeeper/quota")
INVALID_PATHS = ("a", "", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/.", "/..", "/a/.", "/a\x00b", "/a\x01",
                 "/a\x7f", "/a\u0085", "/\ue000", "/\ufff0", "/zookeeper/")
SEQ_RE = re.compile(r"\d{10}$")


def digest_id(user_pw):
    user = user_pw.split(":", 1)[0]
    return user + ":" + base64.b64encode(hashlib.sha1(user_pw.encode()).digest()).decode()


SUPER_USER = "super:admin"
SUPER_DIGEST = digest_id(SUPER_USER)  # super:xQJmxLMiHGwaqBvst5y6rkB6HQs=
USERS = ("u1:p1", "u2:p2")

# Op kinds and their relative weights. Documented in README.md; `skip-op KIND` removes one.
WEIGHTS = {
    "create": 8.0, "create2": 6.0, "createContainer": 2.5, "createTTL": 2.5, "delete": 9.0, "setData": 7.0,
    "exists": 5.0, "getData": 5.0, "getChildren": 3.5, "getChildren2": 3.0, "getACL": 3.0, "setACL": 4.0,
    "sync": 1.0, "ping": 1.5, "check": 1.0, "multi": 9.0, "multiRead": 3.0, "reconfig": 0.3,
    "checkWatches": 2.0, "removeWatches": 2.0, "deleteContainer": 0.4, "getEphemerals": 1.5,
    "getAllChildrenNumber": 1.5, "addWatch": 3.0, "whoAmI": 1.0, "auth": 2.5, "authBad": 0.25, "sasl": 0.3,
    "setWatches": 0.4, "setWatches2": 0.4, "closeSession": 0.4, "reconnect": 0.8, "reconnectBadPassword": 0.15,
    "reconnectAhead": 0.15, "unknownOp": 0.2,
}
ALL_KINDS = tuple(WEIGHTS)
MULTI_SUB = ("create", "create2", "createContainer", "createTTL", "delete", "setData", "check")


class Gen:
    def __init__(self, seed, skip=(), skip_sub=(), prefix_mode=False):
        self.r = random.Random(seed)
        self.prefix_mode = prefix_mode
        kinds = [k for k in ALL_KINDS if k not in skip]
        self.kinds = kinds
        self.cum = []
        tot = 0.0
        for k in kinds:
            tot += WEIGHTS[k]
            self.cum.append(tot)
        self.total = tot
        self.multi_sub = [k for k in MULTI_SUB if k not in skip_sub]
        self.pending = deque()
        self.seqnames = []
        self.n = 0
        self.invalid = [p for p in INVALID_PATHS if p.startswith("/")] if prefix_mode else list(INVALID_PATHS)

    # ------------------------------------------------------------------ building blocks
    def _kind(self):
        x = self.r.random() * self.total
        lo, hi = 0, len(self.cum) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.cum[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        return self.kinds[lo]

    def plain_path(self):
        r = self.r
        if self.seqnames and r.random() < 0.12:
            p = r.choice(self.seqnames)
            if r.random() < 0.3 and p.count("/") < 3:
                p += "/" + r.choice(NAMES)
            return p
        d = r.choices((1, 2, 3), (3, 4, 3))[0]
        return "/" + "/".join(r.choice(NAMES) for _ in range(d))

    def path(self, mutating=False, allow_root=True, allow_invalid=True):
        r = self.r
        x = r.random()
        if x < 0.03 and allow_root:
            return "/"
        if x < 0.05 and not (mutating and self.prefix_mode):
            return r.choice(SPECIAL + ("/zookeeper/config/a",)) if mutating else r.choice(SPECIAL)
        if x < 0.07 and allow_invalid:
            return r.choice(self.invalid)
        return self.plain_path()

    def data(self):
        r = self.r
        x = r.random()
        if x < 0.15:
            return None
        if x < 0.3:
            return b""
        if x < 0.97:
            return bytes(r.getrandbits(8) for _ in range(r.randint(1, 12)))
        return bytes(r.getrandbits(8) for _ in range(r.randint(100, 3000)))

    def version(self):
        r = self.r
        x = r.random()
        if x < 0.3:
            return -1
        if x < 0.55:
            return 0
        if x < 0.7:
            return 1
        if x < 0.8:
            return 2
        if x < 0.85:
            return 3
        if x < 0.95:
            return r.randint(4, 12)
        if x < 0.97:
            return 2**31 - 1
        return -2

    def perms(self):
        r = self.r
        if r.random() < 0.6:
            return r.choice((31, 31, 1, 3, 7, 15, 30, 29, 27, 23, 16, 17, 0, 9, 5))
        return r.randint(0, 31)

    def acl(self):
        r = self.r
        x = r.random()
        if x < 0.45:
            return [[31, "world", "anyone"]]
        if x < 0.47:
            return None
        if x < 0.49:
            return []
        entries = []
        for _ in range(r.choice((1, 1, 1, 2, 2, 3))):
            y = r.random()
            if y < 0.2:
                e = [self.perms(), "world", "anyone"]
            elif y < 0.45:
                e = [self.perms(), "digest", digest_id(r.choice(USERS))]
            elif y < 0.5:
                e = [self.perms(), "digest", SUPER_DIGEST]
            elif y < 0.6:
                e = [self.perms(), "ip", r.choice(("127.0.0.1", "127.0.0.0/8", "10.0.0.0/8", "10.1.2.3"))]
            elif y < 0.75:
                e = [self.perms(), "auth", r.choice(("", "", "whatever"))]
            elif y < 0.8:
                e = [31, "world", "anyone"]
            else:
                e = r.choice(([31, "digest", "u1"], [31, "ip", "300.1.1.1"], [31, "bogus", "x"],
                              [31, "world", "nobody"], [31, "digest", "a:b:c"], [self.perms(), "ip", "1.2.3.4/40"],
                              [31, "sasl", "someone"], [31, "super", ""]))
            entries.append(e)
            if r.random() < 0.1:
                entries.append(list(e))  # duplicate entry
        return entries

    def create_flags(self, kind):
        r = self.r
        x = r.random()
        if kind == "createContainer":
            return 4 if x < 0.9 else r.choice((0, 1, 2, 3, 5))
        if kind == "createTTL":
            return r.choice((5, 6)) if x < 0.9 else r.choice((0, 1, 2, 3, 4, 7))
        if x < 0.95:
            return r.choice((0, 0, 1, 1, 2, 3))
        return r.choice((4, 5, 6, 7, -1))

    def ttl(self):
        r = self.r
        x = r.random()
        if x < 0.9:
            return r.randint(3_600_000, 10**9)
        return r.choice((0, -1, 1 << 40, (1 << 40) - 1, 1))

    def create_args(self, kind):
        r = self.r
        path = self.path(mutating=True)
        flags = self.create_flags(kind)
        if r.random() < 0.03 and path != "/":
            path += "/"  # "/a/" is fine for a sequential create: the suffix makes it "/a/0000000007"
        a = {"kind": kind, "path": path, "data": self.data(), "acl": self.acl(), "flags": flags}
        if kind == "createTTL":
            a["ttl"] = self.ttl()
            if flags not in (5, 6) and a["ttl"] < 0:
                # ZooKeeper 3.8.0 accepts createTTL with a non-TTL mode and a negative ttl in Prep, then crashes
                # its SyncThread applying the CreateTTLTxn (EphemeralType.toEphemeralOwner) and shuts down.
                a["ttl"] = r.choice((0, 1000))
        return a

    def watch_paths(self, n):
        return [self.path(allow_invalid=False) for _ in range(self.r.randint(0, n))]

    def rel_zxid(self):
        r = self.r
        x = r.random()
        if x < 0.5:
            return ["last"]
        if x < 0.7:
            return ["zero"]
        return ["op", r.randint(0, max(0, self.n - 1))]

    def set_watches(self, conn, kind):
        a = {"kind": kind, "conn": conn, "rel": self.rel_zxid(), "dataWatches": self.watch_paths(3),
             "existWatches": self.watch_paths(3), "childWatches": self.watch_paths(3)}
        if kind == "setWatches2":
            a["persistentWatches"] = self.watch_paths(2)
            a["persistentRecursiveWatches"] = self.watch_paths(2)
        return a

    def multi_ops(self):
        r = self.r
        ops = []
        if r.random() < 0.35 and {"create", "setData", "check", "delete"} <= set(self.multi_sub):
            # a coherent transaction that may well succeed
            p = self.plain_path()
            ops.append({"kind": "create", "path": p, "data": self.data(), "acl": [[31, "world", "anyone"]],
                        "flags": r.choice((0, 0, 1, 2))})
            if r.random() < 0.7:
                ops.append({"kind": "setData", "path": p, "data": self.data(), "version": r.choice((0, -1))})
            if r.random() < 0.5:
                ops.append({"kind": "check", "path": p, "version": r.choice((1, -1, 0))})
            if r.random() < 0.3:
                ops.append({"kind": "delete", "path": p, "version": -1})
            return ops
        if not self.multi_sub:
            return ops
        for _ in range(r.choice((0, 1, 1, 2, 2, 3, 3, 4, 5))):
            k = r.choice(self.multi_sub)
            if k in ("create", "create2", "createContainer", "createTTL"):
                ops.append(self.create_args(k))
            elif k == "delete":
                ops.append({"kind": k, "path": self.path(mutating=True), "version": self.version()})
            elif k == "setData":
                ops.append({"kind": k, "path": self.path(mutating=True), "data": self.data(),
                            "version": self.version()})
            else:
                ops.append({"kind": k, "path": self.path(), "version": self.version()})
        return ops

    # ------------------------------------------------------------------ the sequence
    def next(self):
        self.n += 1
        if self.pending:
            return self.pending.popleft()
        r = self.r
        kind = self._kind()
        conn = r.randrange(NCONN)
        op = {"kind": kind, "conn": conn}
        if kind in ("create", "create2", "createContainer", "createTTL"):
            op.update(self.create_args(kind))
        elif kind == "delete":
            p = self.path(mutating=True)
            if self.prefix_mode and p == "/":
                p = "/zookeeper"  # deleting the real root would touch nothing of ours; keep BadArguments
            op.update(path=p, version=self.version())
        elif kind in ("exists", "getData", "getChildren", "getChildren2"):
            op.update(path=self.path(), watch=r.random() < 0.5)
        elif kind == "setData":
            op.update(path=self.path(mutating=True), data=self.data(), version=self.version())
        elif kind in ("getACL", "getAllChildrenNumber"):
            op.update(path=self.path())
        elif kind == "setACL":
            p = self.path(mutating=True, allow_root=not self.prefix_mode)
            if p == "/zookeeper":
                p = "/zookeeper/quota"  # the runner's marker request reads /zookeeper: keep its ACL open
            op.update(path=p, acl=self.acl(), version=self.version())
        elif kind == "sync":
            op.update(path=self.path())
        elif kind == "ping":
            op.update(xid=r.choice(("ping", "ping", "ping", "normal")))
        elif kind == "check":
            op.update(path=self.path(), version=self.version())
        elif kind == "multi":
            op.update(ops=self.multi_ops())
        elif kind == "multiRead":
            ops = []
            for _ in range(r.choice((0, 1, 2, 2, 3, 4))):
                ops.append({"kind": r.choice(("getData", "getChildren")), "path": self.path(), "watch": False})
            if r.random() < 0.05:
                ops.append({"kind": "check", "path": self.plain_path(), "version": -1})  # not a read: rejected
            op.update(ops=ops)
        elif kind == "reconfig":
            op.update(joining=r.choice((None, "", "server.5=127.0.0.1:1234:1235;1236")),
                      leaving=r.choice((None, "", "3")), newMembers=r.choice((None, "")),
                      curConfigId=r.choice((-1, 0, 5)))
        elif kind in ("checkWatches", "removeWatches"):
            op.update(path=self.path(allow_invalid=False), type=r.choice((1, 2, 3, 1, 2, 3, 4, 5)))
        elif kind == "deleteContainer":
            op.update(path=self.path())
        elif kind == "getEphemerals":
            op.update(path=r.choice(("/", "/", "/a", "/a/b", "/b", "/c/", "/x", self.plain_path())))
        elif kind == "addWatch":
            op.update(path=self.path(allow_invalid=False), mode=r.choice((0, 1) * 9 + (2,)))
        elif kind == "auth":
            op.update(scheme="digest", auth=r.choice(USERS + USERS + (SUPER_USER, "u1:wrong", "nocolon", "",
                                                                      "super:wrong")).encode(),
                      xid=r.choice(("auth",) * 9 + ("normal",)))
            if r.random() < 0.05:
                op.update(scheme="ip", auth=b"127.0.0.1")
        elif kind == "authBad":
            op.update(scheme=r.choice(("bogus", "super", "world", "digest")), auth=b"x", xid="auth")
            if op["scheme"] == "digest":
                op["auth"] = None
        elif kind == "sasl":
            op.update(token=r.choice((b"", b"", b"\x01\x02token", None)) if r.random() < 0.8 else None)
        elif kind in ("setWatches", "setWatches2"):
            op = self.set_watches(conn, kind)
        elif kind == "unknownOp":
            op.update(opcode=r.choice((0, 10, 23, 99, 200, -5, 1000)))
        elif kind in ("reconnect", "reconnectBadPassword", "reconnectAhead", "closeSession", "whoAmI"):
            pass
        else:
            raise AssertionError(kind)
        return op

    # ------------------------------------------------------------------ feedback
    def observe(self, op, obs):
        """Learn sequential node names from the (normalised, logical-path) reply of the reference server."""
        kind = op["kind"]
        if kind in ("create", "create2", "createContainer", "createTTL", "multi"):
            for fr in obs.get("frames", ()):
                rep = fr.get("reply") if isinstance(fr, dict) else None
                if not rep or rep.get("err") != 0 or not isinstance(rep.get("body"), dict):
                    continue
                body = rep["body"]
                paths = [body.get("path")] + [x.get("path") for x in body.get("results", ()) if isinstance(x, dict)]
                for p in paths:
                    if isinstance(p, str) and SEQ_RE.search(p) and p.count("/") <= 3 and p not in self.seqnames:
                        self.seqnames.append(p)
                        if len(self.seqnames) > 40:
                            self.seqnames.pop(0)

    def on_reconnect(self, conn, new_session):
        """Called after the runner re-established connection `conn` (watches and auth are gone on the server)."""
        r = self.r
        if r.random() < 0.6:
            kinds = [k for k in ("setWatches", "setWatches2") if k in self.kinds]
            if kinds:
                self.pending.append(self.set_watches(conn, r.choice(kinds)))
        if r.random() < 0.3 and "auth" in self.kinds:
            self.pending.append({"kind": "auth", "conn": conn, "scheme": "digest", "xid": "auth",
                                 "auth": r.choice(USERS + (SUPER_USER,)).encode()})
