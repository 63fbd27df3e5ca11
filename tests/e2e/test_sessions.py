"""Session expiry, keep-alive and closeSession, with tickTime=200 (so the minimum session timeout is 400 ms)."""

import threading
import time

import pytest

from . import wire
from .helpers import dispose, launch, unique, wait_until

TICK_MS = 200
MARGIN_S = 1.0  # scheduling and delivery slack on top of timeout + one tick (CI machines are loaded)


@pytest.fixture(scope="module")
def server(kind):
    srv = launch(kind, {"tickTime": str(TICK_MS)})
    yield srv
    dispose(srv)


def test_min_and_max_timeouts_follow_tick(server, conns):
    c = conns(server.hostport)
    assert c.handshake(timeout_ms=1).timeout == 2 * TICK_MS
    c.close_session()
    d = conns(server.hostport)
    assert d.handshake(timeout_ms=10 ** 6).timeout == 20 * TICK_MS
    d.close_session()


@pytest.mark.parametrize("timeout_ms", [400, 1000])
def test_silent_session_expires(server, clients, conns, timeout_ms):
    watcher = clients.new(server.hostport, timeout=10.0)
    parent = unique("/sess-exp")
    watcher.create(parent)

    victim = conns(server.hostport)
    assert victim.handshake(timeout_ms=timeout_ms).timeout == timeout_ms
    eph = parent + "/eph"
    assert victim.create(eph, b"", wire.EPHEMERAL).err == wire.OK

    events = []
    lock = threading.Lock()

    def record(ev):
        with lock:
            events.append((time.monotonic(), ev.type, ev.path))

    assert watcher.exists(eph, watch=record) is not None
    assert watcher.get_children(parent, watch=record) == ["eph"]

    # Touch the session a few times, then go silent (the socket stays open).
    for _ in range(3):
        assert victim.ping().err == wire.OK
    last_touch = victim.last_send

    t_s = timeout_ms / 1000
    wait_until(lambda: len(events) >= 2, t_s + TICK_MS / 1000 + MARGIN_S + 2, msg="NodeDeleted + NodeChildrenChanged")
    with lock:
        got = sorted((typ, path) for _, typ, path in events)
        first = min(t for t, _, _ in events)
    assert got == [("CHILD", parent), ("DELETED", eph)], got
    elapsed = first - last_touch
    assert elapsed >= t_s, f"session expired {elapsed:.3f}s after its last touch; timeout is {t_s}s"
    assert elapsed <= t_s + TICK_MS / 1000 + MARGIN_S, f"session expired late: {elapsed:.3f}s (timeout {t_s}s)"
    assert watcher.exists(eph) is None

    # The expired session's socket is closed by the server, and the session cannot be resumed.
    victim.wait_closed(5)
    again = conns(server.hostport)
    resp = again.handshake(timeout_ms=timeout_ms, session_id=victim.session_id, passwd=victim.passwd)
    assert (resp.timeout, resp.session_id) == (0, 0)


def test_pinging_session_never_expires(server, conns):
    c = conns(server.hostport)
    assert c.handshake(timeout_ms=800).timeout == 800
    eph = unique("/sess-alive")
    assert c.create(eph, b"", wire.EPHEMERAL).err == wire.OK
    observer = conns(server.hostport)
    observer.handshake(timeout_ms=4000)
    assert observer.exists(eph, watch=True).err == wire.OK

    end = time.monotonic() + 5 * 0.8  # five session timeouts
    pings = 0
    while time.monotonic() < end:
        rep = c.ping()
        assert (rep.xid, rep.err) == (wire.XID_PING, wire.OK)
        assert observer.ping().err == wire.OK  # the observer (T=4 s) must stay alive too
        pings += 1
        time.sleep(0.15)  # a client's ping interval (about T/5), not a wait for a condition
    assert pings >= 10
    assert c.exists(eph).err == wire.OK
    rep = observer.exists(eph)
    assert rep.err == wire.OK and observer.events == [], f"observer saw {observer.events}"
    assert c.close_session().err == wire.OK


def test_requests_keep_session_alive(server, conns):
    """Ordinary requests touch the session as pings do."""
    c = conns(server.hostport)
    assert c.handshake(timeout_ms=800).timeout == 800
    eph = unique("/sess-req")
    assert c.create(eph, b"", wire.EPHEMERAL).err == wire.OK
    end = time.monotonic() + 4 * 0.8
    while time.monotonic() < end:
        assert c.exists("/").err == wire.OK
        time.sleep(0.15)
    assert c.get_data(eph).err == wire.OK
    assert c.close_session().err == wire.OK


def test_close_session(server, conns):
    parent = unique("/sess-close")
    owner = conns(server.hostport)
    owner.handshake(timeout_ms=4000)
    assert owner.create(parent).err == wire.OK
    eph = parent + "/e"
    assert owner.create(eph, b"", wire.EPHEMERAL).err == wire.OK
    assert owner.get_data(eph, watch=True).err == wire.OK  # the owner watches its own ephemeral

    other = conns(server.hostport)
    other.handshake(timeout_ms=4000)
    assert other.exists(eph, watch=True).err == wire.OK
    assert other.get_children(parent, watch=True).err == wire.OK

    rep = owner.close_session()
    assert (rep.err, rep.body) == (wire.OK, b"")
    # The owner's own watch fired before the close reply.
    assert [(e.type, e.path) for e in rep.events] == [(wire.EV_NODE_DELETED, eph)]
    _, frames = owner.wait_closed(5)
    assert frames == [], "frames after the closeSession reply"

    # By the time the close reply was out, the ephemeral was gone and the other session's events were queued:
    # they arrive before the reply to a request sent after the close reply was received.
    rep = other.exists(eph)
    assert rep.err == wire.NO_NODE
    assert sorted((e.type, e.path) for e in rep.events) == sorted(
        [(wire.EV_NODE_DELETED, eph), (wire.EV_NODE_CHILDREN_CHANGED, parent)]), rep.events

    # A closed session cannot be resumed.
    again = conns(server.hostport)
    assert again.handshake(session_id=owner.session_id, passwd=owner.passwd).timeout == 0
    other.close_session()


def test_socket_close_does_not_end_session(server, conns):
    a = conns(server.hostport)
    assert a.handshake(timeout_ms=2000).timeout == 2000
    eph = unique("/sess-sock")
    assert a.create(eph, b"", wire.EPHEMERAL).err == wire.OK
    sid, pw = a.session_id, a.passwd
    a.close()

    observer = conns(server.hostport)
    observer.handshake(timeout_ms=4000)
    assert observer.exists(eph).err == wire.OK
    # Half the timeout without any connection: the session must still be there.
    with pytest.raises(wire.Timeout):
        observer.read_frame(timeout=1.0)
    assert observer.exists(eph).err == wire.OK

    b = conns(server.hostport)
    resp = b.handshake(timeout_ms=2000, session_id=sid, passwd=pw)
    assert (resp.session_id, resp.timeout) == (sid, 2000)
    rep = b.get_data(eph)
    assert rep.err == wire.OK and wire.decode_get_data(rep.body)[1].ephemeral_owner == sid
    assert b.close_session().err == wire.OK
    assert observer.exists(eph).err == wire.NO_NODE
    observer.close_session()
