"""Start and stop the servers the end-to-end tests talk to: Apache ZooKeeper 3.8 (Debian package) and oxkeeper.

Both bind a free port on 127.0.0.1 (never 2181) and keep their data in a fresh temporary folder.
Use as a context manager:

    with start_zookeeper() as zk, start_oxkeeper() as ox:
        print(zk.hostport, ox.hostport)

`OXKEEPER_BIN` names the oxkeeper binary (default: target/release/oxkeeper, else target/debug/oxkeeper).
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZK_CLASSPATH = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


_GIVEN_PORTS = set()


def free_port():
    """A free port below Linux's ephemeral range (32768 and up), never handed out twice in this process.

    A server restarted on its old port must find it free: a port from the ephemeral range can meanwhile be
    taken by an outgoing connection (a client's reconnect attempt) or by another port-0 probe.
    """
    start = random.randrange(10_000)
    for i in range(10_000):
        port = 20_000 + (start + i) % 10_000
        if port in _GIVEN_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN_PORTS.add(port)
        return port
    raise RuntimeError("no free port in 20000..30000")


def four_letter(hostport, word, timeout=5.0):
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks).decode(errors="replace")


def wait_serving(hostport, proc, deadline_s=60.0):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before serving on {hostport}")
        try:
            if four_letter(hostport, "srvr", timeout=1.0).startswith("Zookeeper version"):
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"server on {hostport} not serving after {deadline_s}s: {last}")


class Server:
    def __init__(self, name, proc, port, workdir, keep=False):
        self.name = name
        self.proc = proc
        self.port = port
        self.host = "127.0.0.1"
        self.hostport = f"127.0.0.1:{port}"
        self.workdir = workdir
        self.keep = keep

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def _write_cfg(workdir, port, extra):
    cfg = {
        "tickTime": "2000",
        "dataDir": os.path.join(workdir, "data"),
        "clientPort": str(port),
        "clientPortAddress": "127.0.0.1",
        "maxClientCnxns": "0",
        "4lw.commands.whitelist": "*",
        "admin.enableServer": "false",
    }
    cfg.update(extra or {})
    os.makedirs(cfg["dataDir"], exist_ok=True)
    path = os.path.join(workdir, "zoo.cfg")
    with open(path, "w") as f:
        for k, v in cfg.items():
            f.write(f"{k}={v}\n")
    return path


def start_zookeeper(extra_cfg=None, jvm_props=None, port=None):
    """Apache ZooKeeper 3.8 standalone. `jvm_props` become -D flags (e.g. zookeeper.extendedTypesEnabled)."""
    workdir = tempfile.mkdtemp(prefix="zk-")
    port = port or free_port()
    cfg = _write_cfg(workdir, port, extra_cfg)
    props = {"zookeeper.extendedTypesEnabled": "true"}
    props.update(jvm_props or {})
    cmd = ["java", "-Xmx512m", "-XX:+UseSerialGC"] + [f"-D{k}={v}" for k, v in props.items()]
    cmd += ["-cp", ZK_CLASSPATH, "org.apache.zookeeper.server.ZooKeeperServerMain", cfg]
    return _launch("zookeeper", cmd, workdir, port)


def oxkeeper_bin():
    if os.environ.get("OXKEEPER_BIN"):
        return os.environ["OXKEEPER_BIN"]
    for profile in ("release", "debug"):
        p = os.path.join(REPO, "target", profile, "oxkeeper")
        if os.path.exists(p):
            return p
    raise RuntimeError("oxkeeper binary not found: build it or set OXKEEPER_BIN")


def start_oxkeeper(extra_cfg=None, port=None, workdir=None):
    """oxkeeper standalone, configured with a zoo.cfg as ZooKeeper would be (extendedTypesEnabled on, as above)."""
    keep = workdir is not None
    workdir = workdir or tempfile.mkdtemp(prefix="ox-")
    port = port or free_port()
    extra = {"extendedTypesEnabled": "true"}
    extra.update(extra_cfg or {})
    cfg = _write_cfg(workdir, port, extra)
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info,openraft=warn")
    return _launch("oxkeeper", [oxkeeper_bin(), "--config", cfg], workdir, port, keep=keep, env=env)


def _launch(name, cmd, workdir, port, keep=False, env=None):
    """Start `cmd` with its output appended to workdir/server.log and wait until it serves on `port`."""
    with open(os.path.join(workdir, "server.log"), "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    srv = Server(name, proc, port, workdir, keep=keep)
    try:
        wait_serving(srv.hostport, proc)
    except Exception:
        srv.stop()
        raise
    return srv


def start(kind, **kw):
    return {"zookeeper": start_zookeeper, "oxkeeper": start_oxkeeper}[kind](**kw)
