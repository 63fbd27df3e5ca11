"""Raw-socket ZooKeeper connection used by the differential tester (framing, connect, read-until-reply)."""

import errno
import socket
import struct
import time

from zkd_jute import (XID_NOTIFICATION, Reader, decode_connect_response, decode_event, enc_connect,
                  enc_header, frame)


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


class Timeout(Exception):
    pass


class Conn:
    """One TCP connection. Frames are read into `self.buf`; notifications seen while waiting for a reply are
    appended to `self.events` (decoded, with their raw header zxid kept under "hzxid")."""

    def __init__(self, hostport, timeout=10.0):
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking socket with kernel-level send/receive timeouts: one syscall per send/recv (Python's own
        # timeout mode would poll() first). A timeout surfaces as EAGAIN.
        self.sock.settimeout(None)
        tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self.buf = bytearray()
        self.events = []
        self.closed = False
        self.timeout = timeout
        self.stray = []  # frames that were neither the awaited reply nor a notification

    # -------------------------------------------------------------- raw I/O
    def send(self, payload, *more):
        """Send one or more frames with a single sendall."""
        if self.closed:
            raise Closed("send on closed connection")
        data = frame(payload) if not more else b"".join(frame(p) for p in (payload,) + more)
        try:
            self.sock.sendall(data)
        except (BlockingIOError, socket.timeout):
            raise Timeout("send timed out") from None
        except OSError as e:
            self._mark_closed()
            raise Closed(f"send failed: {e}") from None

    def _fill(self, deadline):
        """Read at least one chunk into buf, or raise Closed/Timeout."""
        while True:
            try:
                chunk = self.sock.recv(262144)
            except (BlockingIOError, socket.timeout):
                if time.monotonic() >= deadline:
                    raise Timeout("no data") from None
                continue
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT):
                    self._mark_closed()
                    raise Closed(str(e)) from None
                raise
            if not chunk:
                self._mark_closed()
                raise Closed("EOF")
            self.buf += chunk
            return

    def read_frame(self, deadline=None):
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack_from(">i", self.buf, 0)
                if n < 0 or n > 0x7FFFFFF:
                    raise Closed(f"bad frame length {n}")
                if len(self.buf) >= 4 + n:
                    payload = bytes(self.buf[4:4 + n])
                    del self.buf[:4 + n]
                    return payload
            if self.closed:
                raise Closed("EOF")
            self._fill(deadline)

    def _mark_closed(self):
        self.closed = True

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    # -------------------------------------------------------------- protocol
    def connect(self, last_zxid, timeout_ms, session_id, passwd, read_only=False):
        """Send a ConnectRequest and read the ConnectResponse. Returns the decoded response, or raises Closed."""
        self.send(enc_connect(0, last_zxid, timeout_ms, session_id, passwd, read_only))
        return decode_connect_response(self.read_frame())

    def send_request(self, xid, opcode, body=b"", *more):
        """Send a request; `more` are further complete (header+body) payloads pipelined behind it."""
        self.send(enc_header(xid, opcode) + body, *more)

    def read_reply(self, want_xid=None, deadline=None):
        """Read frames until a non-notification frame arrives; notifications go to self.events.
        Returns (xid, zxid, err, body). If want_xid is given, frames with other xids are kept in `stray`."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        while True:
            payload = self.read_frame(deadline)
            r = Reader(payload)
            xid, zxid, err = r.int(), r.long(), r.int()
            body = payload[16:]
            if xid == XID_NOTIFICATION:
                try:
                    ev = decode_event(Reader(body))
                except Exception as e:  # noqa: BLE001 - keep the raw bytes for the report
                    ev = {"undecodable": body.hex(), "error": str(e)}
                ev["hzxid"] = zxid
                ev["herr"] = err
                self.events.append(ev)
                continue
            if want_xid is not None and xid != want_xid:
                self.stray.append({"xid": xid, "zxid": zxid, "err": err, "body": body.hex()})
                continue
            return xid, zxid, err, body

    def take_events(self):
        ev, self.events = self.events, []
        st, self.stray = self.stray, []
        return ev, st
