"""A small, independent jute (ZooKeeper binary archive) codec for the differential tester.

Written from the wire description in /work/shared/reference/zookeeper-protocol-and-sessions.md §1;
it deliberately shares no code with kazoo or any other client.

Encoding side: `Writer` builds request payloads; the `enc_*` helpers encode request records.
Decoding side: `Reader` plus `decode_reply(opcode, body)` which turns a reply body into plain
Python dicts/lists (JSON-friendly: bytes become hex strings, null becomes None).
"""

import struct

# ---------------------------------------------------------------- opcodes / constants
OP = {
    "notification": 0, "create": 1, "delete": 2, "exists": 3, "getData": 4, "setData": 5,
    "getACL": 6, "setACL": 7, "getChildren": 8, "sync": 9, "ping": 11, "getChildren2": 12,
    "check": 13, "multi": 14, "create2": 15, "reconfig": 16, "checkWatches": 17,
    "removeWatches": 18, "createContainer": 19, "deleteContainer": 20, "createTTL": 21,
    "multiRead": 22, "auth": 100, "setWatches": 101, "sasl": 102, "getEphemerals": 103,
    "getAllChildrenNumber": 104, "setWatches2": 105, "addWatch": 106, "whoAmI": 107,
    "createSession": -10, "closeSession": -11, "error": -1,
}
OPNAME = {v: k for k, v in OP.items()}

ERR = {
    0: "OK", -1: "SystemError", -2: "RuntimeInconsistency", -3: "DataInconsistency",
    -4: "ConnectionLoss", -5: "MarshallingError", -6: "Unimplemented", -7: "OperationTimeout",
    -8: "BadArguments", -12: "UnknownSession", -13: "NewConfigNoQuorum", -14: "ReconfigInProgress",
    -100: "APIError", -101: "NoNode", -102: "NoAuth", -103: "BadVersion",
    -108: "NoChildrenForEphemerals", -110: "NodeExists", -111: "NotEmpty", -112: "SessionExpired",
    -113: "InvalidCallback", -114: "InvalidACL", -115: "AuthFailed", -118: "SessionMoved",
    -119: "NotReadOnly", -120: "EphemeralOnLocalSession", -121: "NoWatcher", -122: "RequestTimeout",
    -123: "ReconfigDisabled", -124: "SessionClosedRequireSaslAuth", -125: "QuotaExceeded",
    -127: "ThrottledOp",
}

XID_NOTIFICATION = -1
XID_PING = -2
XID_AUTH = -4
XID_SETWATCHES = -8


def errname(code):
    return ERR.get(code, str(code))


# ---------------------------------------------------------------- writer
class Writer:
    __slots__ = ("parts",)

    def __init__(self):
        self.parts = []

    def int(self, v):
        self.parts.append(struct.pack(">i", v))
        return self

    def long(self, v):
        self.parts.append(struct.pack(">q", v))
        return self

    def bool(self, v):
        self.parts.append(b"\x01" if v else b"\x00")
        return self

    def buffer(self, b):
        if b is None:
            self.parts.append(b"\xff\xff\xff\xff")
        else:
            self.parts.append(struct.pack(">i", len(b)))
            self.parts.append(bytes(b))
        return self

    def ustring(self, s):
        if s is None:
            self.parts.append(b"\xff\xff\xff\xff")
        else:
            b = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s)
            self.parts.append(struct.pack(">i", len(b)))
            self.parts.append(b)
        return self

    def raw(self, b):
        self.parts.append(bytes(b))
        return self

    def vector(self, items, elem):
        if items is None:
            self.int(-1)
        else:
            self.int(len(items))
            for it in items:
                elem(self, it)
        return self

    def bytes(self):
        return b"".join(self.parts)


def frame(payload):
    return struct.pack(">i", len(payload)) + payload


# ---------------------------------------------------------------- reader
class DecodeError(Exception):
    pass


class Reader:
    __slots__ = ("b", "i")

    def __init__(self, b, i=0):
        self.b = b
        self.i = i

    def _take(self, n):
        if self.i + n > len(self.b):
            raise DecodeError(f"short read: need {n} bytes at {self.i}, have {len(self.b) - self.i}")
        v = self.b[self.i:self.i + n]
        self.i += n
        return v

    def int(self):
        return struct.unpack(">i", self._take(4))[0]

    def long(self):
        return struct.unpack(">q", self._take(8))[0]

    def bool(self):
        return self._take(1)[0] != 0

    def buffer(self):
        n = self.int()
        if n == -1:
            return None
        if n < 0:
            raise DecodeError(f"bad buffer length {n}")
        return bytes(self._take(n))

    def ustring(self):
        n = self.int()
        if n == -1:
            return None
        if n < 0:
            raise DecodeError(f"bad string length {n}")
        return bytes(self._take(n)).decode("utf-8", "surrogatepass")

    def vector(self, elem):
        n = self.int()
        if n == -1:
            return None
        if n < 0:
            raise DecodeError(f"bad vector length {n}")
        return [elem(self) for _ in range(n)]

    def remaining(self):
        return len(self.b) - self.i

    def rest(self):
        v = bytes(self.b[self.i:])
        self.i = len(self.b)
        return v


# ---------------------------------------------------------------- request records
def w_acl(w, acl):
    perms, scheme, ident = acl
    w.int(perms).ustring(scheme).ustring(ident)


def enc_connect(protocol_version, last_zxid, timeout, session_id, passwd, read_only=False, with_ro=True):
    w = Writer().int(protocol_version).long(last_zxid).int(timeout).long(session_id).buffer(passwd)
    if with_ro:
        w.bool(read_only)
    return w.bytes()


def enc_header(xid, opcode):
    return struct.pack(">ii", xid, opcode)


def enc_create(w, path, data, acl, flags):
    w.ustring(path).buffer(data).vector(acl, w_acl).int(flags)


def enc_create_ttl(w, path, data, acl, flags, ttl):
    w.ustring(path).buffer(data).vector(acl, w_acl).int(flags).long(ttl)


def enc_body(kind, a):
    """Encode the body of request `kind` (an OP name) from the argument dict `a`."""
    w = Writer()
    if kind in ("create", "create2", "createContainer"):
        enc_create(w, a["path"], a["data"], a["acl"], a["flags"])
    elif kind == "createTTL":
        enc_create_ttl(w, a["path"], a["data"], a["acl"], a["flags"], a["ttl"])
    elif kind == "delete":
        w.ustring(a["path"]).int(a["version"])
    elif kind in ("exists", "getData", "getChildren", "getChildren2"):
        w.ustring(a["path"]).bool(a["watch"])
    elif kind == "setData":
        w.ustring(a["path"]).buffer(a["data"]).int(a["version"])
    elif kind in ("getACL", "sync", "getAllChildrenNumber", "getEphemerals"):
        w.ustring(a["path"])
    elif kind == "setACL":
        w.ustring(a["path"]).vector(a["acl"], w_acl).int(a["version"])
    elif kind == "check":
        w.ustring(a["path"]).int(a["version"])
    elif kind in ("multi", "multiRead"):
        for sub in a["ops"]:
            w.int(OP[sub["kind"]]).bool(False).int(-1)
            w.raw(enc_body(sub["kind"], sub))
        w.int(-1).bool(True).int(-1)
    elif kind == "reconfig":
        w.ustring(a["joining"]).ustring(a["leaving"]).ustring(a["newMembers"]).long(a["curConfigId"])
    elif kind in ("checkWatches", "removeWatches"):
        w.ustring(a["path"]).int(a["type"])
    elif kind == "deleteContainer":
        # DeleteContainerRequest{path} (server-internal request, sent here by a client anyway)
        w.ustring(a["path"])
    elif kind == "auth":
        w.int(a.get("type", 0)).ustring(a["scheme"]).buffer(a["auth"])
    elif kind == "setWatches":
        w.long(a["relativeZxid"])
        for key in ("dataWatches", "existWatches", "childWatches"):
            w.vector(a[key], Writer.ustring)
    elif kind == "setWatches2":
        w.long(a["relativeZxid"])
        for key in ("dataWatches", "existWatches", "childWatches", "persistentWatches",
                    "persistentRecursiveWatches"):
            w.vector(a[key], Writer.ustring)
    elif kind == "sasl":
        w.buffer(a["token"])
    elif kind == "addWatch":
        w.ustring(a["path"]).int(a["mode"])
    elif kind in ("ping", "whoAmI", "closeSession"):
        pass
    elif kind == "raw":
        w.raw(a["body"])
    else:
        raise ValueError(f"no encoder for {kind}")
    return w.bytes()


# ---------------------------------------------------------------- reply records
def r_stat(r):
    return {
        "czxid": r.long(), "mzxid": r.long(), "ctime": r.long(), "mtime": r.long(),
        "version": r.int(), "cversion": r.int(), "aversion": r.int(),
        "ephemeralOwner": r.long(), "dataLength": r.int(), "numChildren": r.int(),
        "pzxid": r.long(),
    }


def r_acl(r):
    perms = r.int()
    return [perms, r.ustring(), r.ustring()]


def hexb(b):
    return None if b is None else b.hex()


def decode_connect_response(payload):
    r = Reader(payload)
    out = {"protocolVersion": r.int(), "timeOut": r.int(), "sessionId": r.long(), "passwd": hexb(r.buffer())}
    if r.remaining() >= 1:
        out["readOnly"] = r.bool()
    if r.remaining():
        out["trailing"] = r.rest().hex()
    return out


def decode_event(r):
    return {"type": r.int(), "state": r.int(), "path": r.ustring()}


def _dec_multi(r, read):
    results = []
    while True:
        typ, done, err = r.int(), r.bool(), r.int()
        if done:
            break
        res = {"type": typ, "err": err}
        if typ == OP["create"]:
            res["path"] = r.ustring()
        elif typ == OP["create2"] or typ in (OP["createTTL"], OP["createContainer"]):
            res["path"] = r.ustring()
            res["stat"] = r_stat(r)
        elif typ in (OP["delete"], OP["check"], OP["deleteContainer"]):
            pass
        elif typ == OP["setData"]:
            res["stat"] = r_stat(r)
        elif typ == OP["getChildren"]:
            res["children"] = r.vector(Reader.ustring)
        elif typ == OP["getData"]:
            res["data"] = hexb(r.buffer())
            res["stat"] = r_stat(r)
        elif typ == OP["error"]:
            res["errBody"] = r.int()
        else:
            raise DecodeError(f"unknown multi result type {typ}")
        results.append(res)
    return {"results": results, "terminator": [typ, done, err]}


def decode_reply(kind, body):
    """Decode a successful reply body for request kind `kind`. Returns a dict (or None for an empty body)."""
    r = Reader(body)
    if kind in ("create",):
        out = {"path": r.ustring()}
    elif kind in ("create2", "createContainer", "createTTL"):
        out = {"path": r.ustring(), "stat": r_stat(r)}
    elif kind in ("exists", "setData", "setACL_stat", "check"):
        out = {"stat": r_stat(r)} if r.remaining() else None
    elif kind in ("getData", "reconfig"):
        out = {"data": hexb(r.buffer()), "stat": r_stat(r)}
    elif kind == "getACL":
        out = {"acl": r.vector(r_acl), "stat": r_stat(r)}
    elif kind == "setACL":
        out = {"stat": r_stat(r)}
    elif kind == "getChildren":
        out = {"children": r.vector(Reader.ustring)}
    elif kind == "getChildren2":
        out = {"children": r.vector(Reader.ustring), "stat": r_stat(r)}
    elif kind == "sync":
        out = {"path": r.ustring()}
    elif kind in ("multi", "multiRead"):
        out = _dec_multi(r, kind == "multiRead")
    elif kind == "sasl":
        out = {"token": hexb(r.buffer())}
    elif kind == "getEphemerals":
        out = {"paths": r.vector(Reader.ustring)}
    elif kind == "getAllChildrenNumber":
        out = {"totalNumber": r.int()}
    elif kind == "addWatch":
        out = {"err": r.int()} if r.remaining() else None
    elif kind == "whoAmI":
        out = {"clientInfo": r.vector(lambda rr: [rr.ustring(), rr.ustring()])}
    else:
        out = None
    if r.remaining():
        if out is None:
            out = {}
        out["trailing"] = r.rest().hex()
    return out
