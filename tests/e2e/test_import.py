"""`oxkeeper import-zookeeper` end to end: Apache ZooKeeper 3.8 (Debian's package) gets a tree with every node
kind, ACLs and live sessions, written by kazoo (the zk38-tree scenario of tests/import/make_fixture.py, with a
ZooKeeper restart in the middle so part of it is in a snapshot and part only in the logs); ZooKeeper is stopped,
its data dir imported, and oxkeeper started on it on the same port. The whole tree must compare equal, field
by field, with what ZooKeeper reported, and the kazoo clients that held sessions on ZooKeeper must reconnect to
oxkeeper on the same sessions (ZooKeeper's passwords) and keep their ephemerals."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from .helpers import HERE, servers, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "import"))
import make_fixture as mf  # noqa: E402

pytestmark = pytest.mark.parametrize("kind", ["oxkeeper"])


def test_import_a_live_zookeeper_and_keep_its_sessions(kind):
    zk_dir = tempfile.mkdtemp(prefix="zkimp-")
    ox_dir = tempfile.mkdtemp(prefix="oximp-")
    port = servers.free_port()
    hp = f"127.0.0.1:{port}"
    props = {"zookeeper.snapCount": "20"}
    zk = [mf.start_zk(zk_dir, port, props)]
    ox = None
    clients = ()
    states = {}

    def restart():
        zk[0].stop()
        zk[0] = mf.start_zk(zk_dir, port, props)

    try:
        try:
            expected, clients = mf.tree_scenario(hp, restart)
            for c in clients:
                states[c] = []
                c.add_listener(lambda s, c=c: states[c].append(s))
            ids = {c: c.client_id[0] for c in clients}
            owned = {c: sorted(p for p, n in expected["nodes"].items() if n["stat"]["ephemeral_owner"] == ids[c])
                     for c in clients}
            assert sum(len(v) for v in owned.values()) >= 2, owned
        finally:
            zk[0].stop()  # SIGTERM: ZooKeeper closes no session; they are in its data

        extra = {"DigestAuthenticationProvider.superDigest": mf.SUPER_DIGEST}
        cfg = servers._write_cfg(ox_dir, port, {"extendedTypesEnabled": "true", **extra})
        out = subprocess.run([servers.oxkeeper_bin(), "--config", cfg, "import-zookeeper",
                              os.path.join(zk_dir, "data")], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "ZooKeeper's tree digest matches the imported tree" in out.stdout, out.stdout
        # A second import into the same directory is refused.
        again = subprocess.run([servers.oxkeeper_bin(), "--config", cfg, "import-zookeeper",
                                os.path.join(zk_dir, "data")], capture_output=True, text=True, timeout=120)
        assert again.returncode != 0 and "already holds oxkeeper" in again.stderr, again.stderr

        ox = servers.start_oxkeeper(extra_cfg=extra, port=port, workdir=ox_dir)
        # kazoo reconnects by itself (same host:port) with its session id and ZooKeeper's password.
        wait_until(lambda: all(c.connected for c in clients), 60, msg="kazoo clients reconnected")
        for c in clients:
            assert c.client_id[0] == ids[c], "the session was not resumed"
            assert "LOST" not in states[c], states[c]

        got = mf.record_tree(hp)
        assert sorted(got) == sorted(expected["nodes"]), (sorted(set(got) ^ set(expected["nodes"])))
        for path, want in expected["nodes"].items():
            assert got[path] == want, f"{path}: oxkeeper {got[path]} != ZooKeeper {want}"

        # The imported sessions are live: their ephemerals stay theirs and they can write.
        for c in clients:
            for p in owned[c]:
                assert c.exists(p).ephemeralOwner == ids[c], p
            c.create("/after-import-" + str(c.client_id[0]), b"x", ephemeral=True)
        # New zxids continue above ZooKeeper's.
        assert clients[0].exists("/after-import-" + str(ids[clients[0]])).czxid > expected["last_zxid"]
    finally:
        for c in clients:
            c.stop()
            c.close()
        if ox is not None:
            ox.stop()
        shutil.rmtree(zk_dir, ignore_errors=True)
        shutil.rmtree(ox_dir, ignore_errors=True)
