"""Snapshots (oxkeeper's data directory): taken every `snapCount` transactions, at most
`autopurge.snapRetainCount` kept, the log purged behind them; a restart (SIGKILL or SIGTERM) starts from the newest
valid snapshot and replays the log after it; a damaged newest snapshot is never trusted.

These look at oxkeeper's own files, so they run against oxkeeper only."""

import os
import signal

import pytest

from . import wire
from .helpers import dispose, halt, launch, server_log_tail, unique, wait_until

pytestmark = pytest.mark.parametrize("kind", ["oxkeeper"])

SNAP_COUNT = 50


def snapshot_files(srv):
    d = os.path.join(srv.workdir, "data", "snapshots")
    return sorted(n for n in os.listdir(d) if n.startswith("snapshot.")) if os.path.isdir(d) else []


def pipelined_creates(c, paths, data_of):
    for p in paths:
        c.send_request(wire.OP_CREATE, wire.create_body(p, data_of(p)))
    replies = [c.read_reply(timeout=20) for _ in paths]
    assert all(r.err == wire.OK for r in replies), [r.err for r in replies if r.err != wire.OK][:5]


def snapshots_written(srv):
    return server_log_tail(srv, 100000).count("snapshot written")


def write_workload(srv, snapshots=4):
    """Writes until the server has taken `snapshots` snapshots; returns what must be found after a restart.

    A log entry is a batch of writes, so how many entries a number of writes makes depends on timing: the setData
    chain goes on until enough snapshots were written instead of for a fixed count."""
    owner = wire.session(srv.hostport, 30000)
    base = unique("/snap")
    assert owner.create(base, b"").err == wire.OK
    assert owner.create(base + "/eph", b"mine", wire.EPHEMERAL).err == wire.OK
    w = wire.session(srv.hostport, 30000)
    paths = [f"{base}/n{i:04d}" for i in range(400)]
    pipelined_creates(w, paths, lambda p: p.encode())
    n = 0  # a setData chain: the version must come back as n
    while n < 120 or snapshots_written(srv) < snapshots:
        assert n < 20 * SNAP_COUNT * snapshots, f"only {snapshots_written(srv)} snapshots after {n} writes"
        assert w.set_data(base + "/n0000", b"v%d" % n).err == wire.OK
        n += 1
    assert w.delete(base + "/n0001").err == wire.OK
    w.close_session()
    return owner, base, paths, n


def check_after_restart(srv, owner, base, paths, n):
    c = wire.session(srv.hostport, 10000)
    kids = set(wire.decode_children(c.get_children(base).body))
    assert kids == {p.rsplit("/", 1)[1] for p in paths if not p.endswith("n0001")} | {"eph"}
    for p in paths[2:50]:
        rep = c.get_data(p)
        assert rep.err == wire.OK and wire.decode_get_data(rep.body)[0] == p.encode()
    data, stat = wire.decode_get_data(c.get_data(base + "/n0000").body)
    assert (data, stat.version) == (b"v%d" % (n - 1), n)
    # The session that owns the ephemeral is restored: it reconnects with its id and password.
    again = wire.Conn(srv.hostport)
    resp = again.handshake(timeout_ms=30000, session_id=owner.session_id, passwd=owner.passwd)
    assert resp.session_id == owner.session_id and resp.timeout > 0
    data, stat = wire.decode_get_data(again.get_data(base + "/eph").body)
    assert (data, stat.ephemeral_owner) == (b"mine", owner.session_id)
    again.close()
    c.close_session()
    c.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_restart_from_snapshots_and_the_log_after_them(kind, sig):
    srv = launch(kind, {"snapCount": str(SNAP_COUNT), "autopurge.snapRetainCount": "3"})
    try:
        owner, base, paths, n = write_workload(srv)
        # At least 4 snapshots were taken at snapCount 50; only the 3 newest are kept.
        files = wait_until(lambda: len(snapshot_files(srv)) == 3 and snapshot_files(srv), 10,
                           msg="three snapshots kept")
        assert "snapshot written" in server_log_tail(srv, 400)
        halt(srv, sig)
        owner.close()
        srv2 = launch(kind, {"snapCount": str(SNAP_COUNT), "autopurge.snapRetainCount": "3"}, data_of=srv)
        try:
            log = server_log_tail(srv2, 200)
            newest = int(files[-1].split(".")[1])
            assert "state restored from the newest snapshot" in log, log
            assert any(f"index={i}" in log for i in range(newest, newest + 10 * SNAP_COUNT)), log
            check_after_restart(srv2, owner, base, paths, n)
        finally:
            halt(srv2)
    finally:
        dispose(srv)


def test_a_damaged_newest_snapshot_is_never_trusted(kind):
    srv = launch(kind, {"snapCount": str(SNAP_COUNT)})
    try:
        owner, base, paths, n = write_workload(srv)
        files = wait_until(lambda: len(snapshot_files(srv)) >= 2 and snapshot_files(srv), 10, msg="snapshots")
        halt(srv)
        owner.close()
        newest = os.path.join(srv.workdir, "data", "snapshots", files[-1])
        with open(newest, "r+b") as f:
            f.seek(os.path.getsize(newest) // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0xFF]))
        before = open(newest, "rb").read()
        try:
            srv2 = launch(kind, {"snapCount": str(SNAP_COUNT)}, data_of=srv)
        except Exception:
            # Refusing is right when the log no longer reaches back to the older snapshot: the message must say
            # which snapshot is damaged and what is missing, and nothing is changed.
            log = server_log_tail(srv, 60)
            assert "skipping a damaged snapshot" in log and files[-1] in log, log
            assert "entries are missing" in log, log
            assert open(newest, "rb").read() == before
            return
        try:
            # Started from an older snapshot and the log after it: every write is there.
            log = server_log_tail(srv2, 200)
            assert "skipping a damaged snapshot" in log and files[-1] in log, log
            check_after_restart(srv2, owner, base, paths, n)
        finally:
            halt(srv2)
    finally:
        dispose(srv)
