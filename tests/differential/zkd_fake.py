"""A tampering TCP proxy for the tester's self-test: it forwards to a real server and corrupts one reply (or drops
one watch notification), so the differential run must report a difference."""

import socket
import struct
import threading


class TamperProxy:
    """mode "reply": flip the last byte of the `nth` reply frame (xid > 0) that has a body.
    mode "event": drop the `nth` notification frame (xid -1)."""

    def __init__(self, upstream, mode="reply", nth=500):
        self.upstream = upstream
        self.mode = mode
        self.nth = nth
        self.count = 0
        self.tampered = None
        self.lock = threading.Lock()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.hostport = f"127.0.0.1:{self.lsock.getsockname()[1]}"
        self.stopped = False
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            host, port = self.upstream.rsplit(":", 1)
            try:
                u = socket.create_connection((host, int(port)))
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump_raw, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump_frames, args=(u, c), daemon=True).start()

    @staticmethod
    def _close(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _pump_raw(self, src, dst):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                dst.sendall(b)
        except OSError:
            pass
        self._close(src, dst)

    def _pump_frames(self, src, dst):
        buf = bytearray()
        first = True
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                buf += b
                out = bytearray()
                while len(buf) >= 4:
                    (n,) = struct.unpack_from(">i", buf, 0)
                    if len(buf) < 4 + n:
                        break
                    fr = bytearray(buf[:4 + n])
                    del buf[:4 + n]
                    if first:
                        first = False
                    elif n >= 16:
                        fr = self._tamper(fr)
                    if fr is not None:
                        out += fr
                if out:
                    dst.sendall(out)
        except OSError:
            pass
        self._close(src, dst)

    def _tamper(self, fr):
        (xid,) = struct.unpack_from(">i", fr, 4)
        with self.lock:
            if self.mode == "reply" and xid > 0 and len(fr) > 4 + 16:
                self.count += 1
                if self.count == self.nth:
                    fr[-1] ^= 0x01
                    self.tampered = f"flipped the last byte of reply xid={xid}"
            elif self.mode == "event" and xid == -1:
                self.count += 1
                if self.count == self.nth:
                    self.tampered = "dropped a notification"
                    return None
        return fr

    def stop(self):
        self.stopped = True
        self._close(self.lsock)
