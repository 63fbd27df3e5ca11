"""A tiny TCP proxy whose connections can be cut, to force a client to reconnect.

    proxy = CutProxy("127.0.0.1:2181")      # listens on 127.0.0.1:<free port>
    client connects to proxy.hostport
    proxy.refuse(True); proxy.cut()         # stop listening (connects are refused), drop live connections
    ...                                     # the client is now disconnected and keeps retrying
    proxy.refuse(False)                     # the next retry gets through
    proxy.close()
"""
import socket
import threading
import time


class CutProxy:
    """refuse(True) closes the listening socket, so connection attempts are refused as by a stopped
    server; refuse(False) listens on the same port again. cut() drops the live connections."""

    def __init__(self, upstream):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self._live = set()
        self._lock = threading.Lock()
        self.accepted = 0
        self._closed = False
        self.lsock = self._listen(0)
        self.port = self.lsock.getsockname()[1]
        self.hostport = f"127.0.0.1:{self.port}"
        self._start(self.lsock)

    @staticmethod
    def _listen(port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(50)
        return s

    def _start(self, lsock):
        threading.Thread(target=self._accept_loop, args=(lsock,), daemon=True).start()

    def refuse(self, on=True):
        with self._lock:
            if on:
                if self.lsock is not None:
                    self._close_listener(self.lsock)
                    self.lsock = None
                return
            if self.lsock is not None or self._closed:
                return
            last = None
            for _ in range(50):
                try:
                    self.lsock = self._listen(self.port)
                    break
                except OSError as e:
                    last = e
                    time.sleep(0.1)
            else:
                raise OSError(f"proxy: cannot listen on port {self.port} again: {last}")
            self._start(self.lsock)

    @staticmethod
    def _close_listener(s):
        try:
            s.shutdown(socket.SHUT_RDWR)   # wakes up the thread blocked in accept()
        except OSError:
            pass
        s.close()

    def cut(self):
        with self._lock:
            socks = list(self._live)
            self._live.clear()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        with self._lock:
            self._closed = True
            if self.lsock is not None:
                self._close_listener(self.lsock)
                self.lsock = None
        self.cut()

    def _accept_loop(self, lsock):
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.upstream, timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._live.update((c, u))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                dst.sendall(b)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._live.discard(src)
                self._live.discard(dst)
