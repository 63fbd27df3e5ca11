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


IN_FLIGHT = 16
CYCLES = 4


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_writes_in_flight_during_snapshots_are_applied_once_after_a_restart(kind, sig):
    """Each member applies an entry the moment its log makes it durable (an ensemble of one: that is its commit),
    before openraft's state machine task hears of it, so a snapshot's state can hold entries past the index
    openraft gives it; after a restart the log is replayed from that index. An entry applied twice would show as
    a version too high. Many sessions keep writes in flight so that entries are applied while snapshots are
    taken; whether the newest snapshot at a stop is such a one is chance, so the member is stopped and started
    again several times."""
    cfg = {"snapCount": "10", "autopurge.snapRetainCount": "3"}
    srvs = [launch(kind, cfg)]
    try:
        base = unique("/inflight")
        setup = wire.session(srvs[0].hostport, 30000)
        assert setup.create(base, b"").err == wire.OK
        for i in range(8):
            assert setup.create(f"{base}/c{i}", b"").err == wire.OK
        assert setup.create(f"{base}/shared", b"").err == wire.OK
        setup.close()
        mine = [0] * 8
        shared = 0
        for cycle in range(CYCLES + 1):
            srv = srvs[-1]
            c = wire.session(srv.hostport, 10000)
            versions = [wire.decode_get_data(c.get_data(f"{base}/c{i}").body)[1].version for i in range(len(mine))]
            assert versions == mine, f"after {cycle} restarts"
            assert wire.decode_get_data(c.get_data(f"{base}/shared").body)[1].version == shared
            c.close()
            if cycle == CYCLES:
                break
            writers = [wire.session(srv.hostport, 30000) for _ in mine]
            sent = 0
            written_before = snapshots_written(srv)

            def send(i, w):
                nonlocal shared, sent
                # Every fourth set goes to the node all the writers set.
                if sent % 4 == 0:
                    w.send_request(wire.OP_SET_DATA, wire.set_data_body(f"{base}/shared", b"s"))
                    shared += 1
                else:
                    w.send_request(wire.OP_SET_DATA, wire.set_data_body(f"{base}/c{i}", b"c"))
                    mine[i] += 1
                sent += 1

            for i, w in enumerate(writers):
                for _ in range(IN_FLIGHT):
                    send(i, w)
            # Each writer keeps IN_FLIGHT sets in flight (a reply in, the next set out), so entries become
            # durable and are applied while snapshots are taken.
            while sent < 1000 or snapshots_written(srv) - written_before < 30:
                assert sent < 200000, f"only {snapshots_written(srv)} snapshots after {sent} sets"
                for i, w in enumerate(writers):
                    for _ in range(4):
                        assert w.read_reply(timeout=20).err == wire.OK
                        send(i, w)
            for w in writers:
                for _ in range(IN_FLIGHT):
                    assert w.read_reply(timeout=20).err == wire.OK
            halt(srv, sig)
            for w in writers:
                w.close()
            srvs.append(launch(kind, cfg, data_of=srv))
        halt(srvs[-1])
    finally:
        dispose(*srvs)


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
