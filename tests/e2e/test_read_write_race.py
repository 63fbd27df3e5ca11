"""Reads and apply are atomic with respect to each other (DESIGN, the concurrency contract): a getData watch set
while another session's setData is in flight either sees the new data in its reply, or gets NodeDataChanged.
A lost watch here is what makes lock recipes hang."""

import pytest

from . import wire
from .helpers import dispose, launch, unique

ROUNDS = 400


@pytest.fixture(scope="module")
def server(kind):
    srv = launch(kind, {"tickTime": "2000"})
    yield srv
    dispose(srv)


def test_a_watch_set_by_a_read_never_misses_a_concurrent_write(server):
    path = unique("/race")
    reader = wire.session(server.hostport, 10000)
    writer = wire.session(server.hostport, 10000)
    try:
        assert writer.create(path, b"0").err == wire.OK
        for i in range(1, ROUNDS + 1):
            new = str(i).encode()
            # Both requests leave before either reply is read, so the server sees them concurrently.
            wxid = writer.send_request(wire.OP_SET_DATA, wire.set_data_body(path, new))
            rxid = reader.send_request(wire.OP_GET_DATA, wire.path_watch_body(path, watch=True))
            rep = reader.read_reply()
            assert rep.xid == rxid and rep.err == wire.OK
            data, _stat = wire.decode_get_data(rep.body)
            wrep = writer.read_reply()
            assert wrep.xid == wxid and wrep.err == wire.OK
            if data != new:
                # The read ran before the write: its watch must fire for that write.
                ev = reader.read_event(timeout=5)
                assert (ev.type, ev.path) == (wire.EV_NODE_DATA_CHANGED, path), ev
            else:
                # The read saw the write; its watch is armed for the next one. Trigger and consume it so
                # every round starts without a watch.
                assert writer.call(wire.OP_SET_DATA, wire.set_data_body(path, new)).err == wire.OK
                ev = reader.read_event(timeout=5)
                assert (ev.type, ev.path) == (wire.EV_NODE_DATA_CHANGED, path), ev
    finally:
        reader.close()
        writer.close()
