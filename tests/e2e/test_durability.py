"""Durability across a restart on the same data dir and port: acknowledged writes, sessions and their ephemerals."""

import signal
import time

import pytest

from . import wire
from .helpers import dispose, halt, launch, wait_until

TICK_MS = 500  # session timeouts in [1000, 10000] ms
CFG = {"tickTime": str(TICK_MS)}


def restart(kind, old, sig=signal.SIGKILL):
    halt(old, sig)
    started = time.monotonic()
    new = launch(kind, CFG, data_of=old)
    return new, started, time.monotonic()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_acknowledged_writes_survive_restart(kind, sig):
    srv = launch(kind, CFG)
    srv2 = None
    try:
        c = wire.session(srv.hostport, 10000)
        expected = {}  # path -> (data, version)
        assert c.create("/dur", b"root").err == wire.OK
        expected["/dur"] = (b"root", 0)
        for i in range(20):
            p = f"/dur/n{i:02d}"
            assert c.create(p, f"v0-{i}".encode()).err == wire.OK
            for v in range(i % 4):
                rep = c.set_data(p, f"v{v + 1}-{i}".encode())
                assert rep.err == wire.OK
            expected[p] = ((f"v{i % 4}-{i}" if i % 4 else f"v0-{i}").encode(), i % 4)
        deleted = [f"/dur/n{i:02d}" for i in range(0, 20, 5)]
        for p in deleted:
            assert c.delete(p).err == wire.OK
            del expected[p]
        seq = c.create("/dur/seq-", b"s", wire.PERSISTENT | 2)  # PERSISTENT_SEQUENTIAL
        assert seq.err == wire.OK
        seq_path = wire.decode_string(seq.body)
        expected[seq_path] = (b"s", 0)

        # Pipelined creates: stop the server right after half of them are acknowledged.
        n, acked_target = 300, 150
        for i in range(n):
            c.send_request(wire.OP_CREATE, wire.create_body(f"/dur/p{i:04d}", f"p{i}".encode()))
        acked = []
        while len(acked) < acked_target:
            rep = c.read_reply(timeout=10)
            assert rep.err == wire.OK, rep
            acked.append(wire.decode_string(rep.body))
        srv2, _, _ = restart(kind, srv, sig)
        c.close()

        r = wire.session(srv2.hostport, 10000)
        for p, (data, version) in expected.items():
            rep = r.get_data(p)
            assert rep.err == wire.OK, f"{p} lost after restart"
            got, stat = wire.decode_get_data(rep.body)
            assert (got, stat.version) == (data, version), f"{p}: {got!r} v{stat.version}, expected {data!r} v{version}"
        for p in deleted:
            assert r.exists(p).err == wire.NO_NODE, f"deleted {p} came back"
        for p in acked:
            rep = r.get_data(p)
            assert rep.err == wire.OK, f"acknowledged create {p} lost"
            assert wire.decode_get_data(rep.body)[0] == f"p{int(p[-4:])}".encode()
        # The surviving pipelined creates are a prefix of the sent order (no holes).
        present = [r.exists(f"/dur/p{i:04d}").err == wire.OK for i in range(n)]
        k = present.index(False) if False in present else n
        assert k >= acked_target and not any(present[k:]), f"hole in the surviving creates (first missing: {k})"
        # The zxid did not go backwards.
        assert r.exists("/").zxid > 0
        r.close_session()
    finally:
        dispose(srv2, srv)


def test_sessions_across_restart(kind):
    srv = launch(kind, CFG)
    srv2 = None
    back_to, gone_to = 10000, 4000
    try:
        setup = wire.session(srv.hostport, 10000)
        assert setup.create("/dur-s").err == wire.OK
        setup.close_session()
        back = wire.session(srv.hostport, back_to)
        assert back.negotiated_timeout == back_to
        assert back.create("/dur-s/back", b"b", wire.EPHEMERAL).err == wire.OK
        gone = wire.session(srv.hostport, gone_to)
        assert gone.negotiated_timeout == gone_to
        assert gone.create("/dur-s/gone", b"g", wire.EPHEMERAL).err == wire.OK

        srv2, started, serving = restart(kind, srv)
        back.close()
        gone.close()

        # The session that comes back within its timeout keeps its id and its ephemeral.
        again = wire.Conn(srv2.hostport)
        resp = again.handshake(timeout_ms=back_to, session_id=back.session_id, passwd=back.passwd)
        assert resp.session_id == back.session_id and resp.timeout == back_to
        rep = again.get_data("/dur-s/back")
        assert rep.err == wire.OK
        assert wire.decode_get_data(rep.body)[1].ephemeral_owner == back.session_id

        # The session that never comes back loses its ephemeral about one timeout after the restart.
        rep = again.exists("/dur-s/gone", watch=True)
        assert rep.err == wire.OK, "the absent session's ephemeral vanished right at the restart"
        ev = again.read_event(timeout=gone_to / 1000 + TICK_MS / 1000 + 3)
        gone_at = time.monotonic()
        assert (ev.type, ev.path) == (wire.EV_NODE_DELETED, "/dur-s/gone")
        assert gone_at - started >= gone_to / 1000, f"expired {gone_at - started:.2f}s after the restart began"
        assert gone_at - serving <= gone_to / 1000 + TICK_MS / 1000 + 1.5, \
            f"expired {gone_at - serving:.2f}s after the server was back"
        # The returning session is unaffected.
        assert again.exists("/dur-s/back").err == wire.OK
        assert again.close_session().err == wire.OK
        again.close()
    finally:
        dispose(srv2, srv)


def test_kazoo_session_reconnects_after_restart(kind, clients):
    """A real client rides through a restart: same session, ephemeral intact, watch re-established by the app."""
    srv = launch(kind, CFG)
    srv2 = None
    try:
        kz = clients.new(srv.hostport, timeout=10.0)
        kz.create("/kz-eph", b"x", ephemeral=True)
        sid = kz.client_id[0]
        srv2, _, _ = restart(kind, srv)
        wait_until(lambda: kz.connected, 10, msg="kazoo reconnected")
        assert kz.client_id[0] == sid
        data, stat = kz.get("/kz-eph")
        assert data == b"x" and stat.ephemeralOwner == sid
    finally:
        clients.close()
        dispose(srv2, srv)


@pytest.mark.deviation("Session ids")
def test_session_ids_never_repeat_across_restarts(kind):
    srv = launch(kind, CFG)
    servers = [srv]
    try:
        seen = set()
        for _round in range(3):
            for _ in range(3):
                c = wire.session(servers[-1].hostport, 2000)
                assert c.session_id >> 56 == 1
                assert c.session_id not in seen, f"session id {c.session_id:#x} repeated"
                seen.add(c.session_id)
                c.close_session()
            new, _, _ = restart(kind, servers[-1], signal.SIGTERM)
            servers.append(new)
    finally:
        dispose(*reversed(servers))


def test_enabling_extended_types_in_zoo_cfg_takes_effect_after_restart(kind):
    """A setting that changes what apply does (extendedTypesEnabled) is read from zoo.cfg at every start, as
    ZooKeeper reads it; oxkeeper carries it into the replicated state through the log."""
    def create_ttl(c, path):
        body = wire.create_body(path, b"t", flags=5) + wire.enc_long(60_000)
        return c.call(21, body).err

    off = dict(CFG, extendedTypesEnabled="false")
    srv = launch(kind, off)
    srv2 = srv3 = None
    try:
        c = wire.session(srv.hostport, 10000)
        assert create_ttl(c, "/ttl-a") == wire.UNIMPLEMENTED
        c.close()
        halt(srv, signal.SIGTERM)
        srv2 = launch(kind, dict(CFG, extendedTypesEnabled="true"), data_of=srv)
        c = wire.session(srv2.hostport, 10000)
        assert create_ttl(c, "/ttl-b") == wire.OK
        c.close()
        halt(srv2, signal.SIGTERM)
        srv3 = launch(kind, off, data_of=srv2)
        c = wire.session(srv3.hostport, 10000)
        assert create_ttl(c, "/ttl-c") == wire.UNIMPLEMENTED
        c.close()
    finally:
        dispose(*[s for s in (srv3, srv2, srv) if s is not None])
