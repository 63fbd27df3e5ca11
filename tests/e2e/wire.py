"""A small raw ZooKeeper wire-protocol client for the end-to-end tests (its own jute encoding, nothing shared).

Framing: int32 big-endian length + payload. The first client frame is a ConnectRequest (no header); every later
client frame is RequestHeader{int xid; int type} + body; every later server frame is
ReplyHeader{int xid; long zxid; int err} + body, except the ConnectResponse.
"""

import errno
import socket
import struct
import time
from collections import namedtuple

# ----------------------------------------------------------------------------------------------- constants
OP_CREATE = 1
OP_DELETE = 2
OP_EXISTS = 3
OP_GET_DATA = 4
OP_SET_DATA = 5
OP_GET_CHILDREN = 8
OP_PING = 11
OP_GET_CHILDREN2 = 12
OP_CHECK = 13
OP_CREATE2 = 15
OP_ADD_WATCH = 106
OP_AUTH = 100
OP_CLOSE_SESSION = -11

XID_NOTIFICATION = -1
XID_PING = -2
XID_AUTH = -4

OK = 0
MARSHALLING_ERROR = -5
UNIMPLEMENTED = -6
NO_NODE = -101
NODE_EXISTS = -110
AUTH_FAILED = -115

EPHEMERAL = 1
PERSISTENT = 0

EV_NODE_CREATED = 1
EV_NODE_DELETED = 2
EV_NODE_DATA_CHANGED = 3
EV_NODE_CHILDREN_CHANGED = 4

ADD_WATCH_PERSISTENT = 0
ADD_WATCH_PERSISTENT_RECURSIVE = 1

PERM_ALL = 31
OPEN_ACL = [(PERM_ALL, "world", "anyone")]

MAX_BUFFER = 0xFFFFF


# ----------------------------------------------------------------------------------------------- encoding
def enc_int(v):
    return struct.pack(">i", v)


def enc_long(v):
    return struct.pack(">q", v)


def enc_bool(v):
    return b"\x01" if v else b"\x00"


def enc_buffer(b):
    if b is None:
        return enc_int(-1)
    return enc_int(len(b)) + bytes(b)


def enc_string(s):
    if s is None:
        return enc_int(-1)
    raw = s.encode("utf-8")
    return enc_int(len(raw)) + raw


def enc_acls(acls):
    out = enc_int(len(acls))
    for perms, scheme, ident in acls:
        out += enc_int(perms) + enc_string(scheme) + enc_string(ident)
    return out


def frame(payload):
    return enc_int(len(payload)) + payload


def connect_request(timeout_ms=10000, session_id=0, passwd=b"\x00" * 16, last_zxid=0, read_only=True,
                    protocol_version=0):
    """ConnectRequest{int protocolVersion; long lastZxidSeen; int timeOut; long sessionId; buffer passwd;
    [boolean readOnly]}: 45 bytes with the readOnly byte, 44 without."""
    body = enc_int(protocol_version) + enc_long(last_zxid) + enc_int(timeout_ms) + enc_long(session_id)
    body += enc_buffer(passwd)
    if read_only is not None:
        body += enc_bool(read_only)
    return body


def request_header(xid, op):
    return enc_int(xid) + enc_int(op)


def create_body(path, data=b"", flags=PERSISTENT, acls=OPEN_ACL):
    return enc_string(path) + enc_buffer(data) + enc_acls(acls) + enc_int(flags)


def path_watch_body(path, watch=False):
    """ExistsRequest / GetDataRequest / GetChildrenRequest: {ustring path; boolean watch}."""
    return enc_string(path) + enc_bool(watch)


def set_data_body(path, data, version=-1):
    return enc_string(path) + enc_buffer(data) + enc_int(version)


def delete_body(path, version=-1):
    return enc_string(path) + enc_int(version)


def add_watch_body(path, mode):
    return enc_string(path) + enc_int(mode)


def auth_body(scheme, auth, typ=0):
    return enc_int(typ) + enc_string(scheme) + enc_buffer(auth)


def check_body(path, version):
    return enc_string(path) + enc_int(version)


# ----------------------------------------------------------------------------------------------- decoding
class Reader:
    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0

    def _take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError(f"short record: need {n} bytes at {self.pos}, have {len(self.data) - self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self._take(4))[0]

    def long(self):
        return struct.unpack(">q", self._take(8))[0]

    def bool(self):
        return self._take(1) != b"\x00"

    def buffer(self):
        n = self.int()
        if n == -1:
            return None
        return self._take(n)

    def string(self):
        b = self.buffer()
        return None if b is None else b.decode("utf-8")

    def remaining(self):
        return len(self.data) - self.pos


ConnectResponse = namedtuple("ConnectResponse", "protocol_version timeout session_id passwd read_only raw")
ReplyHeader = namedtuple("ReplyHeader", "xid zxid err")
Reply = namedtuple("Reply", "xid zxid err body events")
Event = namedtuple("Event", "type state path zxid")
Stat = namedtuple("Stat", "czxid mzxid ctime mtime version cversion aversion ephemeral_owner data_length "
                          "num_children pzxid")


def decode_connect_response(payload):
    r = Reader(payload)
    pv, to, sid, pw = r.int(), r.int(), r.long(), r.buffer()
    ro = r.bool() if r.remaining() else None
    return ConnectResponse(pv, to, sid, pw, ro, payload)


def decode_reply_header(payload):
    r = Reader(payload)
    return ReplyHeader(r.int(), r.long(), r.int())


def decode_event(body, zxid=None):
    """WatcherEvent{int type; int state; ustring path}."""
    r = Reader(body)
    return Event(r.int(), r.int(), r.string(), zxid)


def decode_stat(r):
    return Stat(r.long(), r.long(), r.long(), r.long(), r.int(), r.int(), r.int(), r.long(), r.int(), r.int(),
                r.long())


def decode_get_data(body):
    r = Reader(body)
    data = r.buffer()
    return data, decode_stat(r)


def decode_children(body):
    r = Reader(body)
    n = r.int()
    return [r.string() for _ in range(max(n, 0))]


def decode_string(body):
    return Reader(body).string()


# ----------------------------------------------------------------------------------------------- connection
class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


class Timeout(Exception):
    """Nothing (or not enough) arrived before the deadline."""


class Conn:
    """One raw TCP connection to a server. Notifications that arrive while a reply is awaited are collected
    into `events` (and returned with the reply that followed them)."""

    def __init__(self, hostport, timeout=5.0):
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()
        self.closed = False
        self.xid = 0
        self.events = []
        self.session_id = 0
        self.passwd = None
        self.negotiated_timeout = None
        self.last_send = None

    # ------------------------------------------------------------ raw I/O
    def send_raw(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.closed = True
            raise Closed(f"send failed: {e}") from None
        self.last_send = time.monotonic()

    def send_frame(self, payload):
        self.send_raw(frame(payload))

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("deadline passed")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            raise Timeout("no data before the deadline") from None
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
                self.closed = True
                raise Closed(str(e)) from None
            raise
        if not chunk:
            self.closed = True
            raise Closed("EOF")
        self.buf += chunk

    def read_exact(self, n, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.buf) < n:
            if self.closed:
                raise Closed("EOF")
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_frame(self, timeout=None):
        """One frame's payload. Raises Closed on EOF/reset, Timeout if incomplete at the deadline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack_from(">i", self.buf, 0)
                if n < 0 or n > 16 * 1024 * 1024:
                    raise ValueError(f"server sent a bad frame length {n}")
                if len(self.buf) >= 4 + n:
                    payload = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return payload
            if self.closed:
                raise Closed("EOF")
            self._fill(deadline)

    def wait_closed(self, timeout):
        """Read until the server closes the connection. Returns (closed_at_monotonic, frames received before the
        close); raises Timeout if the socket is still open at the deadline."""
        deadline = time.monotonic() + timeout
        frames = []
        while True:
            try:
                frames.append(self.read_frame(timeout=max(deadline - time.monotonic(), 0.001)))
            except Closed:
                return time.monotonic(), frames
            except Timeout:
                raise Timeout(f"connection still open after {timeout}s (frames seen: {len(frames)})") from None

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ handshake
    def handshake(self, timeout_ms=10000, session_id=0, passwd=b"\x00" * 16, last_zxid=0, read_only=True,
                  read_timeout=None):
        self.send_frame(connect_request(timeout_ms, session_id, passwd, last_zxid, read_only))
        resp = decode_connect_response(self.read_frame(timeout=read_timeout))
        if resp.timeout > 0:
            self.session_id, self.passwd, self.negotiated_timeout = resp.session_id, resp.passwd, resp.timeout
        return resp

    # ------------------------------------------------------------ requests
    def next_xid(self):
        self.xid += 1
        return self.xid

    def send_request(self, op, body=b"", xid=None):
        if xid is None:
            xid = self.next_xid()
        self.send_frame(request_header(xid, op) + body)
        return xid

    def read_reply(self, timeout=None):
        """Read frames until a non-notification frame; the notifications before it are returned with it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        events = []
        while True:
            payload = self.read_frame(timeout=max(deadline - time.monotonic(), 0.001))
            h = decode_reply_header(payload)
            body = payload[16:]
            if h.xid == XID_NOTIFICATION:
                ev = decode_event(body, h.zxid)
                events.append(ev)
                self.events.append(ev)
                continue
            return Reply(h.xid, h.zxid, h.err, body, events)

    def read_event(self, timeout=None):
        """The next frame, which must be a notification."""
        payload = self.read_frame(timeout=timeout)
        h = decode_reply_header(payload)
        if h.xid != XID_NOTIFICATION:
            raise AssertionError(f"expected a notification, got reply header {h}")
        ev = decode_event(payload[16:], h.zxid)
        self.events.append(ev)
        return ev

    def call(self, op, body=b"", xid=None, timeout=None):
        sent = self.send_request(op, body, xid)
        rep = self.read_reply(timeout)
        if rep.xid != sent:
            raise AssertionError(f"reply xid {rep.xid} does not match request xid {sent} (op {op})")
        return rep

    # ------------------------------------------------------------ conveniences
    def create(self, path, data=b"", flags=PERSISTENT, acls=OPEN_ACL):
        return self.call(OP_CREATE, create_body(path, data, flags, acls))

    def delete(self, path, version=-1):
        return self.call(OP_DELETE, delete_body(path, version))

    def exists(self, path, watch=False):
        return self.call(OP_EXISTS, path_watch_body(path, watch))

    def get_data(self, path, watch=False):
        return self.call(OP_GET_DATA, path_watch_body(path, watch))

    def set_data(self, path, data, version=-1):
        return self.call(OP_SET_DATA, set_data_body(path, data, version))

    def get_children(self, path, watch=False):
        return self.call(OP_GET_CHILDREN, path_watch_body(path, watch))

    def add_watch(self, path, mode):
        return self.call(OP_ADD_WATCH, add_watch_body(path, mode))

    def ping(self):
        self.send_request(OP_PING, xid=XID_PING)
        return self.read_reply()

    def auth(self, scheme, auth):
        self.send_request(OP_AUTH, auth_body(scheme, auth), xid=XID_AUTH)
        return self.read_reply()

    def close_session(self):
        return self.call(OP_CLOSE_SESSION)


def session(hostport, timeout_ms=10000, **kw):
    """A connected raw session (Conn with a completed handshake)."""
    c = Conn(hostport)
    resp = c.handshake(timeout_ms=timeout_ms, **kw)
    if resp.timeout <= 0:
        c.close()
        raise AssertionError(f"handshake refused: {resp}")
    return c
