"""Helpers shared by the end-to-end tests: waiting with a deadline, starting/restarting servers, kazoo clients."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import servers  # noqa: E402

from kazoo.client import KazooClient  # noqa: E402
from kazoo.retry import KazooRetry  # noqa: E402

KINDS = [k.strip() for k in os.environ.get("E2E_SERVERS", "oxkeeper").split(",") if k.strip()]
for _k in KINDS:
    if _k not in ("zookeeper", "oxkeeper"):
        raise RuntimeError(f"E2E_SERVERS: unknown server kind {_k!r}")

# zoo.cfg keys that ZooKeeper reads as `zookeeper.<key>` system properties. ZooKeeper also turns unknown zoo.cfg
# keys into such properties, but passing them as -D flags too makes the reference run independent of that.
_ZK_SYSPROP_KEYS = ("nio.sessionlessCnxnTimeout", "DigestAuthenticationProvider.superDigest", "globalOutstandingLimit",
                    "extendedTypesEnabled")


# ----------------------------------------------------------------------------------------------- waiting
def wait_until(cond, timeout, interval=0.01, msg="condition"):
    """Poll `cond` until it returns a truthy value (which is returned); fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {msg}")
        time.sleep(interval)


# ----------------------------------------------------------------------------------------------- servers
@contextlib.contextmanager
def _dropping_cfg_keys(keys):
    """servers._write_cfg always writes `4lw.commands.whitelist=*`; to run with a server default we remove keys from
    the written zoo.cfg (servers.py itself is left untouched)."""
    if not keys:
        yield
        return
    orig = servers._write_cfg

    def write(workdir, port, extra):
        path = orig(workdir, port, extra)
        with open(path) as f:
            lines = [ln for ln in f if ln.split("=", 1)[0] not in keys]
        with open(path, "w") as f:
            f.writelines(lines)
        return path

    servers._write_cfg = write
    try:
        yield
    finally:
        servers._write_cfg = orig


def launch(kind, cfg=None, drop=(), port=None, data_of=None):
    """Start a server of `kind` with zoo.cfg keys `cfg`. `drop`: keys to leave out of zoo.cfg.
    `data_of`: a killed Server whose data dir (and port) to reuse, i.e. a restart."""
    cfg = dict(cfg or {})
    with _dropping_cfg_keys(set(drop)):
        if kind == "zookeeper":
            props = {f"zookeeper.{k}": v for k, v in cfg.items() if k in _ZK_SYSPROP_KEYS}
            if data_of is not None:
                cfg["dataDir"] = os.path.join(data_of.workdir, "data")
                port = port or data_of.port
            return servers.start_zookeeper(extra_cfg=cfg, jvm_props=props, port=port)
        if data_of is not None:
            return servers.start_oxkeeper(extra_cfg=cfg, port=port or data_of.port, workdir=data_of.workdir)
        return servers.start_oxkeeper(extra_cfg=cfg, port=port)


def halt(srv, sig=None):
    """Stop a server's process (SIGKILL unless `sig` is given) without deleting its data dir, for a restart."""
    if srv.proc.poll() is None:
        srv.proc.send_signal(sig or signal.SIGKILL)
        try:
            srv.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait()


def dispose(*srvs):
    """Stop servers and remove every data dir, including those kept for a restart."""
    for s in srvs:
        if s is None:
            continue
        s.stop()
        shutil.rmtree(s.workdir, ignore_errors=True)


def server_log_tail(srv, n=30):
    try:
        with open(os.path.join(srv.workdir, "server.log")) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------------------------- clients
class Clients:
    """Kazoo clients that are stopped at the end of the test."""

    def __init__(self):
        self.all = []

    def new(self, hostport, timeout=10.0, **kw):
        c = KazooClient(hosts=hostport, timeout=timeout,
                        connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=1, max_delay=0.2), **kw)
        c.start(timeout=15)
        self.all.append(c)
        return c

    def close(self):
        for c in self.all:
            try:
                c.stop()
                c.close()
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass


def unique(prefix="/e2e"):
    unique.n += 1
    return f"{prefix}-{os.getpid()}-{unique.n}-{int(time.time() * 1000) % 100000}"


unique.n = 0
