"""The container and TTL reaper (ZooKeeper's ContainerManager): an emptied container and an expired TTL node
disappear by themselves; a never-used container and a TTL node that is still young stay."""

import pytest

from . import wire
from .helpers import dispose, servers, unique, wait_until

CHECK_MS = 200


@pytest.fixture(scope="module")
def server(kind):
    if kind == "zookeeper":
        srv = servers.start_zookeeper(jvm_props={"znode.container.checkIntervalMs": str(CHECK_MS)})
    else:
        srv = servers.start_oxkeeper(extra_cfg={"znode.container.checkIntervalMs": str(CHECK_MS)})
    yield srv
    dispose(srv)


def exists(c, path):
    return c.call(wire.OP_EXISTS, wire.path_watch_body(path)).err == wire.OK


def test_emptied_container_is_deleted_and_never_used_one_stays(server):
    c = wire.session(server.hostport, 10000)
    try:
        used, unused = unique("/cont"), unique("/cont")
        for p in (used, unused):
            assert c.call(19, wire.create_body(p, b"", flags=4)).err == wire.OK
        assert c.create(f"{used}/child", b"x").err == wire.OK
        assert c.call(wire.OP_DELETE, wire.delete_body(f"{used}/child")).err == wire.OK
        wait_until(lambda: not exists(c, used), 10, msg="emptied container reaped")
        # Several reaper passes later the never-used container is still there.
        marker = unique("/cont-marker")
        assert c.call(19, wire.create_body(marker, b"", flags=4)).err == wire.OK
        assert c.create(f"{marker}/x", b"").err == wire.OK
        assert c.call(wire.OP_DELETE, wire.delete_body(f"{marker}/x")).err == wire.OK
        wait_until(lambda: not exists(c, marker), 10, msg="second container reaped")
        assert exists(c, unused)
    finally:
        c.close()


def test_ttl_node_is_deleted_after_its_ttl_and_not_before(server):
    c = wire.session(server.hostport, 10000)
    try:
        short, long_ = unique("/ttl"), unique("/ttl")
        for p, ttl in ((short, 300), (long_, 600_000)):
            body = wire.create_body(p, b"t", flags=5) + wire.enc_long(ttl)
            assert c.call(21, body).err == wire.OK
        wait_until(lambda: not exists(c, short), 15, msg="expired TTL node reaped")
        assert exists(c, long_)
    finally:
        c.close()


def test_reaper_deletes_at_most_max_per_minute(kind):
    """znode.container.maxPerMinute=60 lets the reaper delete one node a second: three containers emptied
    together disappear over at least two seconds, never all at once."""
    import time
    props = {"znode.container.checkIntervalMs": "500", "znode.container.maxPerMinute": "60"}
    srv = servers.start_zookeeper(jvm_props=props) if kind == "zookeeper" else servers.start_oxkeeper(extra_cfg=props)
    c = wire.session(srv.hostport, 10000)
    try:
        paths = [unique("/rate") for _ in range(3)]
        for p in paths:
            assert c.call(19, wire.create_body(p, b"", flags=4)).err == wire.OK
            assert c.create(f"{p}/x", b"").err == wire.OK
        for p in paths:
            assert c.call(wire.OP_DELETE, wire.delete_body(f"{p}/x")).err == wire.OK
        gone_at = {}
        deadline = time.monotonic() + 20
        while len(gone_at) < len(paths) and time.monotonic() < deadline:
            for p in paths:
                if p not in gone_at and not exists(c, p):
                    gone_at[p] = time.monotonic()
            time.sleep(0.02)
        assert len(gone_at) == len(paths), "not every emptied container was reaped"
        spread = max(gone_at.values()) - min(gone_at.values())
        assert spread >= 1.5, f"three deletions within {spread:.2f}s: the rate limit was not applied"
    finally:
        c.close()
        dispose(srv)
