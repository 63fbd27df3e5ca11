"""Watches: one-shot data/child/exist watches, persistent and persistent-recursive watches (addWatch, raw protocol:
kazoo 2.11 has no add_watch), ordering of notifications against replies, and kazoo's watch API.

Raw-protocol tests collect a connection's notifications deterministically: a write's notifications are queued before
that write's reply, so any read sent by the watcher after the writer got its reply is answered after them."""

import threading

import pytest
from kazoo.protocol.states import Callback

from . import wire
from .helpers import dispose, launch, unique, wait_until

CHANGED, CREATED, DELETED, CHILD = (wire.EV_NODE_DATA_CHANGED, wire.EV_NODE_CREATED, wire.EV_NODE_DELETED,
                                    wire.EV_NODE_CHILDREN_CHANGED)


@pytest.fixture(scope="module")
def server(kind):
    srv = launch(kind, {"tickTime": "2000"})
    yield srv
    dispose(srv)


@pytest.fixture
def pair(server, conns):
    """(writer, watcher): two raw sessions."""
    w = conns(server.hostport)
    w.handshake()
    r = conns(server.hostport)
    r.handshake()
    yield w, r


def pending_events(conn):
    """The notifications queued for `conn` so far: they all arrive before the reply to a fresh read."""
    rep = conn.exists("/")
    assert rep.err == wire.OK
    return [(e.type, e.path) for e in rep.events]


def ok(rep):
    assert rep.err == wire.OK, rep
    return rep


def test_data_watch_is_one_shot(pair):
    w, r = pair
    p = unique("/wa-data")
    ok(w.create(p, b"0"))
    ok(r.get_data(p, watch=True))
    ok(w.set_data(p, b"1"))
    ok(w.set_data(p, b"2"))
    assert pending_events(r) == [(CHANGED, p)]
    ok(w.set_data(p, b"3"))
    assert pending_events(r) == []
    # State of the event: SyncConnected (3).
    assert r.events[0].state == 3


def test_exists_watch_on_missing_node(pair):
    w, r = pair
    p = unique("/wa-exists")
    rep = r.exists(p, watch=True)
    assert rep.err == wire.NO_NODE  # the watch is registered anyway
    ok(w.create(p, b""))
    assert pending_events(r) == [(CREATED, p)]
    ok(w.delete(p))
    assert pending_events(r) == []


def test_child_watch_is_one_shot_and_not_a_data_watch(pair):
    w, r = pair
    p = unique("/wa-child")
    ok(w.create(p, b""))
    ok(r.get_children(p, watch=True))
    ok(r.get_data(p, watch=True))  # a data watch on the parent is not fired by child changes
    ok(w.create(p + "/c1"))
    ok(w.create(p + "/c2"))
    assert pending_events(r) == [(CHILD, p)]
    ok(w.delete(p + "/c1"))
    assert pending_events(r) == []
    ok(w.set_data(p, b"x"))
    assert pending_events(r) == [(CHANGED, p)]


def test_delete_fires_once_per_connection(pair):
    w, r = pair
    parent = unique("/wa-del")
    p = parent + "/n"
    ok(w.create(parent))
    ok(w.create(p))
    ok(r.get_data(p, watch=True))
    ok(r.get_children(p, watch=True))
    ok(r.get_children(parent, watch=True))
    ok(w.delete(p))
    ev = pending_events(r)
    assert sorted(ev) == sorted([(DELETED, p), (CHILD, parent)]), ev


def test_watch_event_before_new_data_for_the_writer(server, conns):
    c = conns(server.hostport)
    c.handshake()
    p = unique("/wa-self")
    ok(c.create(p, b"old"))
    ok(c.get_data(p, watch=True))
    rep = ok(c.set_data(p, b"new"))
    # The writer watches the node itself: the notification precedes the write's own reply.
    assert [(e.type, e.path) for e in rep.events] == [(CHANGED, p)]
    ok(c.get_children(p, watch=True))
    rep = ok(c.create(p + "/kid"))
    assert [(e.type, e.path) for e in rep.events] == [(CHILD, p)]


def test_watch_event_before_new_data_for_another_session(pair):
    w, r = pair
    p = unique("/wa-order")
    ok(w.create(p, b"old"))
    ok(r.get_data(p, watch=True))
    ok(w.set_data(p, b"new"))
    rep = ok(r.get_data(p))
    assert wire.decode_get_data(rep.body)[0] == b"new"
    assert [(e.type, e.path) for e in rep.events] == [(CHANGED, p)], "new data seen before the watch event"


def test_persistent_watch_keeps_firing(pair):
    w, r = pair
    p = unique("/wa-pers")
    ok(w.create(p, b""))
    rep = ok(r.add_watch(p, wire.ADD_WATCH_PERSISTENT))
    assert rep.body == wire.enc_int(0), f"addWatch reply body {rep.body.hex()} (expected a 4-byte ErrorResponse 0)"
    for i in range(3):
        ok(w.set_data(p, str(i).encode()))
    ok(w.create(p + "/c"))
    ok(w.create(p + "/c/gc"))  # a grandchild: not this watch's business
    ok(w.set_data(p + "/c", b"x"))  # neither is the child's data
    ok(w.delete(p + "/c/gc"))
    ok(w.delete(p + "/c"))
    assert pending_events(r) == [(CHANGED, p)] * 3 + [(CHILD, p)] * 2
    ok(w.delete(p))
    ok(w.create(p))
    assert pending_events(r) == [(DELETED, p), (CREATED, p)]  # it survives the node's deletion too


def test_persistent_recursive_watch(pair):
    w, r = pair
    p = unique("/wa-rec")
    ok(w.create(p, b""))
    rep = ok(r.add_watch(p, wire.ADD_WATCH_PERSISTENT_RECURSIVE))
    assert rep.body == wire.enc_int(0)
    ok(w.create(p + "/a"))
    ok(w.create(p + "/a/b"))
    ok(w.set_data(p + "/a/b", b"1"))
    ok(w.set_data(p + "/a/b", b"2"))
    ok(w.set_data(p, b"top"))
    ok(w.delete(p + "/a/b"))
    ok(w.create(p + "-sibling"))  # a sibling sharing the name prefix is not below p
    assert pending_events(r) == [(CREATED, p + "/a"), (CREATED, p + "/a/b"), (CHANGED, p + "/a/b"),
                                 (CHANGED, p + "/a/b"), (CHANGED, p), (DELETED, p + "/a/b")]
    ok(w.delete(p + "/a"))
    assert pending_events(r) == [(DELETED, p + "/a")]  # never NodeChildrenChanged


def test_watches_belong_to_the_connection(server, pair, conns):
    w, r = pair
    p = unique("/wa-cnxn")
    ok(w.create(p, b""))
    ok(r.get_data(p, watch=True))
    ok(r.add_watch(p, wire.ADD_WATCH_PERSISTENT))
    sid, pw = r.session_id, r.passwd
    r.close()  # the session lives on, the watches do not
    r2 = conns(server.hostport)
    assert r2.handshake(session_id=sid, passwd=pw).session_id == sid
    ok(w.set_data(p, b"x"))
    assert pending_events(r2) == []


def test_kazoo_data_and_child_watches(server, clients):
    watcher = clients.new(server.hostport)
    writer = clients.new(server.hostport)
    p = unique("/wa-kz")
    writer.create(p, b"v0")
    got = []
    lock = threading.Lock()

    def cb(ev):
        with lock:
            got.append((ev.type, ev.path))

    assert watcher.get(p, watch=cb)[0] == b"v0"
    assert watcher.get_children(p, watch=cb) == []
    writer.set(p, b"v1")
    writer.create(p + "/k")
    wait_until(lambda: len(got) >= 2, 5, msg="two kazoo watch events")
    writer.set(p, b"v2")
    writer.create(p + "/k2")
    # A later read by the watcher is answered after any (wrongly) re-fired event reached kazoo; kazoo runs watch
    # callbacks in order on one thread, so once a marker queued after that read has run, every such event has too.
    watcher.exists("/")
    marker = threading.Event()
    watcher.handler.dispatch_callback(Callback("watch", marker.set, ()))
    assert marker.wait(5)
    with lock:
        assert sorted(got) == sorted([("CHANGED", p), ("CHILD", p)]), got

    seen = []
    watcher.ChildrenWatch(p, lambda children: seen.append(sorted(children)))
    wait_until(lambda: seen and seen[-1] == ["k", "k2"], 5, msg="ChildrenWatch initial call")
    writer.create(p + "/k3")
    wait_until(lambda: seen[-1] == ["k", "k2", "k3"], 5, msg="ChildrenWatch after a create")


@pytest.mark.deviation("Notifications carry the zxid of the change (3.9 behaviour)")
def test_notification_carries_txn_zxid(pair):
    w, r = pair
    p = unique("/wa-zxid")
    ok(w.create(p, b""))
    ok(r.get_data(p, watch=True))
    rep = ok(w.set_data(p, b"1"))
    ok(r.exists("/"))
    assert r.events[-1].type == CHANGED
    assert r.events[-1].zxid == rep.zxid, f"notification zxid {r.events[-1].zxid:#x}, setData zxid {rep.zxid:#x}"
