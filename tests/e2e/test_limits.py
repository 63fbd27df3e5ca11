"""Named limits: globalOutstandingLimit (a member past it stops reading from clients until it catches up)."""

import re
import threading

import pytest

from . import wire
from .helpers import dispose, launch, servers, unique

LIMIT = 8


@pytest.fixture(scope="module")
def server(kind):
    srv = launch(kind, {"4lw.commands.whitelist": "*", "globalOutstandingLimit": str(LIMIT)})
    yield srv
    dispose(srv)


def test_pipelined_requests_past_the_limit_are_all_answered_in_order(server, kind):
    """Three connections each pipeline 400 requests, far past the limit: nothing deadlocks, every reply arrives,
    in request order, while oxkeeper's `stat` Outstanding stays near the limit (at most one request per
    connection over it: the ones already read when the limit was reached)."""
    base = unique("/limits")
    conns = [wire.Conn(server.hostport, timeout=30) for _ in range(3)]
    seen_outstanding = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            m = re.search(r"Outstanding: (\d+)", servers.four_letter(server.hostport, "stat"))
            if m:
                seen_outstanding.append(int(m.group(1)))

    try:
        for c in conns:
            c.handshake()
        conns[0].call(wire.OP_CREATE, wire.create_body(base))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sent = []
        for i, c in enumerate(conns):
            xids = []
            for j in range(400):
                body = wire.create_body(f"{base}/c{i}-{j}") if j % 2 else wire.path_watch_body(base)
                xids.append(c.send_request(wire.OP_CREATE if j % 2 else wire.OP_GET_DATA, body))
            sent.append(xids)
        for c, xids in zip(conns, sent):
            got = [c.read_reply().xid for _ in xids]
            assert got == xids
        stop.set()
        sampler.join(timeout=10)
        assert seen_outstanding, "stat was never sampled"
        if kind == "oxkeeper":
            # ZooKeeper's throttle is looser (it checks between reads of whole socket buffers).
            assert max(seen_outstanding) <= LIMIT + len(conns), seen_outstanding
    finally:
        stop.set()
        for c in conns:
            c.close()
