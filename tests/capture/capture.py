#!/usr/bin/env python3
"""Capture golden frames from real ZooKeeper clients talking to a real Apache ZooKeeper.

Starts a standalone ZooKeeper (Debian's `zookeeper` package) on a free port, puts a logging TCP
proxy in front of it and drives three clients through the proxy: kazoo (Python), the Java client
(CaptureClient.java, compiled on the fly) and the C client (`cli_mt`). A fourth "raw" scenario
talks to ZooKeeper directly with hand-built frames to record how the server treats edge cases
(no readOnly byte, trailing bytes, unknown opcode, empty multi, 4lw). Every frame is written, in
order, to one fixture file per client:

    # comment
    connection <n>
    <C|S> <name> <hex of the whole frame, length prefix included>

C = client to server, S = server to client. <name> is the opcode name of the request (or of the
request a reply answers), or connect / notification / 4lw / 4lw-reply.

Usage (from the repository root; needs zookeeper, zookeeper-bin, openjdk, kazoo==2.11.0):

    python3 tests/capture/capture.py --out crates/proto/tests/fixtures

Every process it starts (ZooKeeper, Java client, cli_mt) is stopped before it exits.
"""

import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ZK_CLASSPATH = "/usr/share/java/zookeeper.jar"
CLI_MT = "/usr/lib/zookeeper/bin/cli_mt"
HERE = os.path.dirname(os.path.abspath(__file__))

OPS = {
    0: "notification", 1: "create", 2: "delete", 3: "exists", 4: "getData", 5: "setData",
    6: "getACL", 7: "setACL", 8: "getChildren", 9: "sync", 11: "ping", 12: "getChildren2",
    13: "check", 14: "multi", 15: "create2", 16: "reconfig", 17: "checkWatches",
    18: "removeWatches", 19: "createContainer", 20: "deleteContainer", 21: "createTTL",
    22: "multiRead", 100: "auth", 101: "setWatches", 102: "sasl", 103: "getEphemerals",
    104: "getAllChildrenNumber", 105: "setWatches2", 106: "addWatch", 107: "whoAmI",
    -11: "closeSession",
}
FOUR_LETTER_WORDS = {w.encode() for w in (
    "ruok stat srvr cons crst dump envi wchs wchc wchp mntr conf isro dirs srst gtmk stmk hash"
).split()}


def op_name(op):
    return OPS.get(op, "op%d" % op)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Connection:
    """The frames of one TCP connection, in the order the proxy saw them."""

    def __init__(self, number):
        self.number = number
        self.lines = []  # (direction, name, frame bytes)
        self.xid_ops = {}
        self.seen = {"C": False, "S": False}
        self.four_letter = False
        self.lock = threading.Lock()

    def name_for(self, direction, frame):
        payload = frame[4:]
        first = not self.seen[direction]
        self.seen[direction] = True
        if first:
            return "connect"
        if direction == "C":
            xid, op = struct.unpack(">ii", payload[:8])
            self.xid_ops[xid] = op
            return op_name(op)
        xid = struct.unpack(">i", payload[:4])[0]
        if xid == -1:
            return "notification"
        return op_name(self.xid_ops.get(xid, 0x7fffffff))

    def note(self, text):
        with self.lock:
            self.lines.append(("#", text, b""))

    def add(self, direction, frame, name=None):
        with self.lock:
            if name is None:
                name = self.name_for(direction, frame)
            self.lines.append((direction, name, frame))


class Recorder:
    """All connections of one client, numbered in the order they were opened."""

    def __init__(self, label):
        self.label = label
        self.connections = []
        self.lock = threading.Lock()

    def new_connection(self):
        with self.lock:
            c = Connection(len(self.connections) + 1)
            self.connections.append(c)
            return c

    def write(self, out_dir, header):
        path = os.path.join(out_dir, self.label + ".txt")
        with open(path, "w") as f:
            for line in header:
                f.write("# " + line + "\n")
            f.write("# <C|S> <name> <hex of the whole frame, length prefix included>\n")
            for c in self.connections:
                if not c.lines:
                    continue
                f.write("connection %d\n" % c.number)
                for direction, name, frame in c.lines:
                    if direction == "#":
                        f.write("# %s\n" % name)
                    else:
                        f.write("%s %s %s\n" % (direction, name, frame.hex()))
        n = sum(len(c.lines) for c in self.connections)
        print("wrote %s (%d frames)" % (path, n))


class Proxy:
    """Forwards 127.0.0.1:<port> to ZooKeeper and records each frame in both directions."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.port = free_port()
        self.recorder = None
        self.sockets = []
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            conn = self.recorder.new_connection()
            with self.lock:
                self.sockets.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, "C", conn), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "S", conn), daemon=True).start()

    def _pump(self, src, dst, direction, conn):
        buf = b""
        first = True
        raw = False
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            if first and direction == "C" and len(buf) >= 4:
                first = False
                if buf[:4] in FOUR_LETTER_WORDS:
                    conn.four_letter = True
                    conn.add("C", buf[:4], "4lw")
                    buf = buf[4:]
            if direction == "S" and conn.four_letter:
                raw = True
            if not raw:
                while len(buf) >= 4:
                    n = struct.unpack(">i", buf[:4])[0]
                    if len(buf) < 4 + n:
                        break
                    conn.add(direction, buf[: 4 + n])
                    buf = buf[4 + n:]
            try:
                dst.sendall(data)
            except OSError:
                break
        if raw and buf:
            conn.add("S", buf, "4lw-reply")
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self):
        """Cuts every open connection (the client sees a connection loss and reconnects)."""
        with self.lock:
            pairs, self.sockets = self.sockets, []
        for client, server in pairs:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()
        self.drop_all()


class ZooKeeperServer:
    def __init__(self, workdir):
        self.port = free_port()
        data_dir = os.path.join(workdir, "data")
        os.makedirs(data_dir)
        cfg = os.path.join(workdir, "zoo.cfg")
        with open(cfg, "w") as f:
            f.write("tickTime=2000\n")
            f.write("clientPort=%d\n" % self.port)
            f.write("clientPortAddress=127.0.0.1\n")
            f.write("dataDir=%s\n" % data_dir)
            f.write("4lw.commands.whitelist=*\n")
            f.write("admin.enableServer=false\n")
        self.log = open(os.path.join(workdir, "zookeeper.log"), "w")
        self.proc = subprocess.Popen(
            ["java", "-Dzookeeper.extendedTypesEnabled=true",
             "-Dorg.slf4j.simpleLogger.defaultLogLevel=" + os.environ.get("ZK_LOG_LEVEL", "info"),
             "-cp", ZK_CLASSPATH + ":/usr/share/java/slf4j-simple.jar",
             "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ZooKeeper exited, see %s" % self.log.name)
            # `ruok` answers before the server takes sessions; `srvr` says when it does.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"srvr")
                    reply = b""
                    while True:
                        data = s.recv(4096)
                        if not data:
                            break
                        reply += data
                    if reply.startswith(b"Zookeeper version"):
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("ZooKeeper did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------------------------
# Scenarios


def run_kazoo(proxy):
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoNodeError, NodeExistsError, ZookeeperError
    from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

    zk = KazooClient(hosts="127.0.0.1:%d" % proxy.port, timeout=4.0)
    zk.start()
    zk.create("/k", b"hello")
    zk.create("/k/eph", b"", ephemeral=True)
    zk.create("/k/seq-", b"s", sequence=True)
    zk.create("/k/eseq-", b"es", ephemeral=True, sequence=True)
    zk.create("/k/c2", b"c2", include_data=True)
    try:
        zk.create("/k", b"again")
    except NodeExistsError:
        pass
    fired = threading.Event()
    zk.get("/k", watch=lambda e: fired.set())
    zk.set("/k", b"world")
    assert fired.wait(10), "no data watch event"
    zk.exists("/k")
    created = threading.Event()
    assert zk.exists("/k/later", watch=lambda e: created.set()) is None
    zk.create("/k/later", b"l")
    assert created.wait(10), "no exists watch event"
    zk.get_children("/k")
    zk.get_children("/k", include_data=True)
    zk.get_acls("/k")
    zk.set_acls("/k", OPEN_ACL_UNSAFE)
    zk.add_auth("digest", "user:password")
    zk.create("/k/secret", b"s", acl=[make_digest_acl("user", "password", all=True)])
    zk.get_acls("/k/secret")
    t = zk.transaction()
    t.create("/k/t1", b"1")
    t.set_data("/k/t1", b"2")
    t.check("/k/t1", 1)
    t.delete("/k/t1")
    t.commit()
    t = zk.transaction()
    t.create("/k/t2", b"2")
    t.create("/k", b"dup")
    t.delete("/k/none")
    t.commit()  # returns the exceptions, does not raise
    zk.sync("/k")
    zk.delete("/k/c2")
    try:
        zk.delete("/k/none")
    except NoNodeError:
        pass
    try:
        zk.reconfig(joining="server.9=127.0.0.1:2888:3888;2181", leaving=None, new_members=None)
    except ZookeeperError:
        pass
    time.sleep(3.5)  # idle: kazoo pings
    zk.stop()
    zk.close()
    # A four-letter word through the proxy.
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(b"ruok")
        while s.recv(1024):
            pass


def run_java(proxy, workdir):
    classes = os.path.join(workdir, "java")
    os.makedirs(classes)
    subprocess.run(["javac", "-cp", ZK_CLASSPATH, "-d", classes,
                    os.path.join(HERE, "CaptureClient.java")], check=True)
    proc = subprocess.Popen(
        ["java", "-cp", ZK_CLASSPATH + ":" + classes, "CaptureClient", "127.0.0.1:%d" % proxy.port],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            print("  java:", line)
            if line == "DROP":
                time.sleep(0.2)
                proxy.drop_all()
        if proc.wait(60) != 0:
            raise RuntimeError("Java client failed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_c(proxy):
    """cli_mt reads commands from stdin; each gets time to complete before the next."""
    commands = [
        "create /c", "create +e /c/eph", "create +s /c/seq-", "create +es /c/eseq-",
        "create2 /c/c2", "create +c /c/container", "create +t=60000 /c/ttl", "create /c",
        "get /c", "set /c hello", "exists /c", "wexists /c/later", "create /c/later",
        "ls /c", "ls2 /c", "sync /c", "addauth digest user:password", "config",
        "delete /c/c2", "delete /c/none",
    ]
    proc = subprocess.Popen([CLI_MT, "127.0.0.1:%d" % proxy.port], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)
        for cmd in commands:
            proc.stdin.write(cmd + "\n")
            proc.stdin.flush()
            time.sleep(0.4)
        time.sleep(11)  # idle: the C client pings after a third of its 30 s timeout
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=20)
        print("  cli_mt:", "\n  cli_mt: ".join(out.strip().splitlines()[-8:]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class RawClient:
    """Hand-built frames straight to ZooKeeper, recorded like the proxy does."""

    def __init__(self, port, recorder):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.conn = recorder.new_connection()
        self.ended = ""

    def send(self, name, payload):
        frame = struct.pack(">i", len(payload)) + payload
        self.conn.add("C", frame, name)
        try:
            self.sock.sendall(frame)
        except OSError as e:
            self.conn.note("sending %s failed: %s" % (name, e))

    def recv(self, name):
        """One reply frame, or None once the server has closed the connection (or said nothing
        for 5 s); either outcome is noted in the fixture."""
        head = self._exact(4)
        if head is None:
            self.conn.note("no reply to %s: %s" % (name, self.ended))
            return None
        n = struct.unpack(">i", head)[0]
        frame = head + self._exact(n)
        self.conn.add("S", frame, name)
        return frame

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            start = time.time()
            try:
                data = self.sock.recv(n - len(buf))
                self.ended = "the server closed the connection after %.1f s" % (time.time() - start)
            except ConnectionResetError:
                data = b""
                self.ended = "the server reset the connection"
            except socket.timeout:
                data = b""
                self.ended = "nothing for 5 s, the connection stayed open"
            if not data:
                return None
            buf += data
        return buf

    def connect(self, read_only=True):
        body = struct.pack(">iqiqi", 0, 0, 10000, 0, 16) + b"\0" * 16
        if read_only:
            body += b"\0"
        self.send("connect" if read_only else "connect/no-readonly", body)
        return self.recv("connect" if read_only else "connect/no-readonly")

    def close(self):
        self.sock.close()


def ustring(s):
    if s is None:
        return struct.pack(">i", -1)
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def multi_header(op, done, err):
    return struct.pack(">i?i", op, done, err)


def run_raw(zk_port, recorder):
    # An old (pre-3.4) client: no readOnly byte; the reply leaves it out too.
    c = RawClient(zk_port, recorder)
    c.connect(read_only=False)
    c.send("create", struct.pack(">ii", 1, 1) + ustring("/raw") + struct.pack(">i", -1)
           + struct.pack(">i", 1) + struct.pack(">i", 31) + ustring("world") + ustring("anyone")
           + struct.pack(">i", 0))
    c.recv("create")
    # Null data stays null in GetDataResponse.
    c.send("getData", struct.pack(">ii", 2, 4) + ustring("/raw") + b"\0")
    c.recv("getData")
    # Trailing bytes after the body are ignored.
    c.send("getData/trailing", struct.pack(">ii", 3, 4) + ustring("/raw") + b"\0" + b"\xde\xad\xbe\xef")
    c.recv("getData/trailing")
    # kazoo's empty string: a null ustring (-1) where a path is expected.
    c.send("getChildren/null-path", struct.pack(">ii", 4, 8) + ustring(None) + b"\0")
    c.recv("getChildren/null-path")
    # Empty multi and empty multiRead.
    c.send("multi/empty", struct.pack(">ii", 5, 14) + multi_header(-1, True, -1))
    c.recv("multi/empty")
    c.send("multiRead/empty", struct.pack(">ii", 6, 22) + multi_header(-1, True, -1))
    c.recv("multiRead/empty")
    # A read inside multi (14).
    c.send("multi/with-read", struct.pack(">ii", 7, 14) + multi_header(4, False, -1)
           + ustring("/raw") + b"\0" + multi_header(-1, True, -1))
    c.recv("multi/with-read")
    # A ping with an ordinary xid (the reply still says -2?).
    c.send("ping/xid7", struct.pack(">ii", 8, 11))
    c.recv("ping/xid7")
    # An unknown opcode: UNIMPLEMENTED, then the server closes the connection.
    c.send("op99", struct.pack(">ii", 9, 99))
    c.recv("op99")
    c.recv("anything after op99")
    c.close()

    # A mixed multiRead: marshalling error or a closed connection.
    c = RawClient(zk_port, recorder)
    c.connect()
    c.send("multiRead/mixed", struct.pack(">ii", 1, 22) + multi_header(4, False, -1)
           + ustring("/raw") + b"\0" + multi_header(2, False, -1) + ustring("/raw")
           + struct.pack(">i", -1) + multi_header(-1, True, -1))
    c.recv("multiRead/mixed")
    c.recv("anything after multiRead/mixed")
    c.close()

    # check (13) sent on its own.
    c = RawClient(zk_port, recorder)
    c.connect()
    c.send("check/top-level", struct.pack(">ii", 1, 13) + ustring("/raw") + struct.pack(">i", -1))
    c.recv("check/top-level")
    c.recv("anything after check/top-level")
    c.close()

    # A truncated body.
    c = RawClient(zk_port, recorder)
    c.connect()
    c.send("setData/truncated", struct.pack(">ii", 1, 5) + ustring("/raw")[:-1])
    c.recv("setData/truncated")
    c.recv("anything after setData/truncated")
    c.close()

    # Delete the node, then close the session.
    c = RawClient(zk_port, recorder)
    c.connect()
    c.send("delete", struct.pack(">ii", 1, 2) + ustring("/raw") + struct.pack(">i", -1))
    c.recv("delete")
    c.send("closeSession", struct.pack(">ii", 2, -11))
    c.recv("closeSession")
    c.recv("anything after closeSession")
    c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="fixture directory")
    ap.add_argument("--only", nargs="*", default=["kazoo", "java", "c", "raw"])
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (zoo.cfg, server log)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="zk-capture-")
    server = ZooKeeperServer(workdir)
    proxy = Proxy(server.port)
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "zookeeper"],
                             capture_output=True, text=True).stdout
    server_line = "server: Apache ZooKeeper (Debian zookeeper %s), standalone, " \
                  "zookeeper.extendedTypesEnabled=true" % version
    try:
        if "kazoo" in args.only:
            import kazoo
            proxy.recorder = Recorder("kazoo")
            run_kazoo(proxy)
            time.sleep(0.5)
            proxy.recorder.write(args.out, ["client: kazoo %s (Python)" % kazoo.__version__, server_line])
        if "java" in args.only:
            proxy.recorder = Recorder("java")
            run_java(proxy, workdir)
            time.sleep(0.5)
            proxy.recorder.write(args.out, ["client: Apache ZooKeeper Java client %s "
                                            "(tests/capture/CaptureClient.java)" % version, server_line])
        if "c" in args.only:
            proxy.recorder = Recorder("c")
            run_c(proxy)
            time.sleep(0.5)
            cver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "zookeeper-bin"],
                                  capture_output=True, text=True).stdout
            proxy.recorder.write(args.out, ["client: Apache ZooKeeper C client cli_mt "
                                            "(Debian zookeeper-bin %s)" % cver, server_line])
        if "raw" in args.only:
            rec = Recorder("raw")
            run_raw(server.port, rec)
            rec.write(args.out, ["client: hand-built frames (run_raw in tests/capture/capture.py); "
                                 "names with '/' are edge cases", server_line])
    finally:
        proxy.close()
        server.stop()
        if args.keep:
            print("kept", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
