"""The connect handshake, reconnects, pings and auth packets, on raw sockets."""

import struct

import pytest

from . import wire
from .helpers import dispose, launch, unique

TICK = 2000
MIN_TO, MAX_TO = 2 * TICK, 20 * TICK


@pytest.fixture(scope="module")
def server(kind):
    srv = launch(kind, {"tickTime": str(TICK)})
    yield srv
    dispose(srv)


def read_raw_frame(c):
    """(declared length, payload) of the next frame, checking the declared length against the bytes."""
    (n,) = struct.unpack(">i", c.read_exact(4))
    return n, c.read_exact(n)


def test_connect_request_encoding():
    assert len(wire.connect_request()) == 45
    assert len(wire.connect_request(read_only=None)) == 44


def test_connect_response_with_readonly_byte(server, conns):
    c = conns(server.hostport)
    c.send_frame(wire.connect_request(timeout_ms=10000, read_only=False))
    n, payload = read_raw_frame(c)
    assert n == 37, f"ConnectResponse payload is {n} bytes, expected 37 (41 with the frame)"
    resp = wire.decode_connect_response(payload)
    assert resp.protocol_version == 0
    assert resp.timeout == 10000
    assert resp.session_id != 0 and resp.session_id >> 56 == 1, f"session id {resp.session_id:#x}: top byte != 1"
    assert len(resp.passwd) == 16
    assert resp.passwd != b"\x00" * 16
    assert resp.read_only is False
    c.session_id, c.passwd = resp.session_id, resp.passwd
    assert c.exists("/").err == wire.OK
    assert c.close_session().err == wire.OK


def test_connect_response_without_readonly_byte(server, conns):
    c = conns(server.hostport)
    c.send_frame(wire.connect_request(timeout_ms=10000, read_only=None))
    n, payload = read_raw_frame(c)
    assert n == 36, f"ConnectResponse payload is {n} bytes for a 44-byte request, expected 36"
    resp = wire.decode_connect_response(payload)
    assert resp.timeout == 10000 and resp.session_id != 0 and len(resp.passwd) == 16
    assert c.exists("/").err == wire.OK
    assert c.close_session().err == wire.OK


def test_session_ids_are_distinct(server, conns):
    ids = set()
    for _ in range(5):
        c = conns(server.hostport)
        ids.add(c.handshake().session_id)
        c.close_session()
    assert len(ids) == 5


@pytest.mark.parametrize("asked,negotiated", [(1, MIN_TO), (MIN_TO - 1, MIN_TO), (5000, 5000), (MAX_TO + 1, MAX_TO),
                                              (10 ** 7, MAX_TO)])
def test_timeout_is_clamped(server, conns, asked, negotiated):
    c = conns(server.hostport)
    resp = c.handshake(timeout_ms=asked)
    assert resp.timeout == negotiated
    assert c.close_session().err == wire.OK


def test_reconnect_with_valid_password_keeps_session(server, conns):
    a = conns(server.hostport)
    first = a.handshake(timeout_ms=10000)
    eph = unique("/hs-eph")
    assert a.create(eph, b"mine", wire.EPHEMERAL).err == wire.OK
    a.close()  # no closeSession: the session lives on

    b = conns(server.hostport)
    again = b.handshake(timeout_ms=10000, session_id=first.session_id, passwd=first.passwd)
    assert again.timeout == 10000
    assert again.session_id == first.session_id
    assert len(again.passwd) == 16
    rep = b.get_data(eph)
    assert rep.err == wire.OK
    data, stat = wire.decode_get_data(rep.body)
    assert data == b"mine" and stat.ephemeral_owner == first.session_id
    assert b.create(eph + "-2", b"", wire.EPHEMERAL).err == wire.OK  # the session is usable
    assert b.close_session().err == wire.OK


def test_wrong_password_gets_expired_reply_then_close(server, conns):
    owner = conns(server.hostport)
    o = owner.handshake(timeout_ms=10000)
    eph = unique("/hs-owned")
    assert owner.create(eph, b"", wire.EPHEMERAL).err == wire.OK
    bad_pw = bytes(b ^ 0xFF for b in o.passwd)

    intruder = conns(server.hostport)
    intruder.send_frame(wire.connect_request(timeout_ms=10000, session_id=o.session_id, passwd=bad_pw))
    n, payload = read_raw_frame(intruder)
    assert n == 37
    resp = wire.decode_connect_response(payload)
    assert (resp.protocol_version, resp.timeout, resp.session_id, resp.passwd) == (0, 0, 0, b"\x00" * 16)
    _, frames = intruder.wait_closed(5)
    assert frames == []

    # The session itself is not harmed: its owner can (re)connect with the right password and finds its ephemeral.
    again = conns(server.hostport)
    r = again.handshake(timeout_ms=10000, session_id=o.session_id, passwd=o.passwd)
    assert r.session_id == o.session_id and r.timeout > 0
    assert again.exists(eph).err == wire.OK
    assert again.close_session().err == wire.OK


@pytest.mark.deviation("A wrong password does not disturb the session's owner")
def test_wrong_password_leaves_owner_connection_alone(server, conns):
    owner = conns(server.hostport)
    o = owner.handshake(timeout_ms=10000)
    intruder = conns(server.hostport)
    resp = intruder.handshake(timeout_ms=10000, session_id=o.session_id, passwd=b"\x01" * 16)
    assert resp.timeout == 0 and resp.session_id == 0
    intruder.wait_closed(5)
    # The owner's connection was not closed: it keeps answering requests and pings.
    assert owner.exists("/").err == wire.OK
    assert owner.ping().xid == wire.XID_PING
    assert owner.create(unique("/hs-owner-ok"), b"", wire.EPHEMERAL).err == wire.OK
    assert owner.close_session().err == wire.OK


def test_unknown_session_id_gets_expired_reply(server, conns):
    c = conns(server.hostport)
    resp = c.handshake(timeout_ms=10000, session_id=(1 << 56) | 0x7777, passwd=b"\x05" * 16)
    assert (resp.timeout, resp.session_id, resp.passwd) == (0, 0, b"\x00" * 16)
    _, frames = c.wait_closed(5)
    assert frames == []


def test_client_ahead_of_server_is_closed_without_reply(server, conns):
    probe = conns(server.hostport)
    probe.handshake()
    zxid = probe.exists("/").zxid
    probe.close_session()

    c = conns(server.hostport)
    c.send_frame(wire.connect_request(timeout_ms=10000, last_zxid=zxid + 1_000_000))
    _, frames = c.wait_closed(5)
    assert frames == [], f"expected no ConnectResponse, got {[f.hex() for f in frames]}"

    # A client exactly at the server's zxid is fine.
    ok = conns(server.hostport)
    assert ok.handshake(last_zxid=zxid).timeout > 0
    ok.close_session()


def test_ping_reply_has_xid_minus_2_and_last_zxid(server, conns):
    c = conns(server.hostport)
    c.handshake()
    for _attempt in range(3):  # retried only if another client wrote in between (it would move the zxid)
        created = c.create(unique("/hs-ping"))
        assert created.err == wire.OK
        ping = c.ping()
        after = c.exists("/")
        assert (ping.xid, ping.err, ping.body) == (wire.XID_PING, wire.OK, b"")
        assert created.zxid <= ping.zxid <= after.zxid
        if created.zxid == after.zxid:
            assert ping.zxid == created.zxid
            break
    else:
        pytest.fail("the zxid kept moving; could not check the ping zxid exactly")
    c.close_session()


def test_auth_reply_has_xid_minus_4_and_zxid_0(server, conns):
    c = conns(server.hostport)
    c.handshake()
    assert c.create(unique("/hs-auth")).err == wire.OK  # the server's zxid is now > 0
    rep = c.auth("digest", b"user:password")
    assert (rep.xid, rep.zxid, rep.err, rep.body) == (wire.XID_AUTH, 0, wire.OK, b"")
    # The id is really attached: a node readable only by that digest user can be read on this connection.
    path = unique("/hs-digest")
    acl = [(wire.PERM_ALL, "digest", "user:tpUq/4Pn5A64fVZyQ0gOJ8ZWqkY=")]
    assert c.create(path, b"secret", wire.PERSISTENT, acl).err == wire.OK
    assert c.get_data(path).err == wire.OK
    other = conns(server.hostport)
    other.handshake()
    assert other.get_data(path).err == -102  # NOAUTH without the digest
    other.close_session()
    c.close_session()


def test_bad_auth_scheme_fails_then_close(server, conns):
    c = conns(server.hostport)
    c.handshake()
    rep = c.auth("no-such-scheme", b"whatever")
    assert (rep.xid, rep.err) == (wire.XID_AUTH, wire.AUTH_FAILED)
    _, frames = c.wait_closed(5)
    assert frames == []


def _java_random_bytes(seed, n=16):
    mask = (1 << 48) - 1
    seed = (seed ^ 0x5DEECE66D) & mask
    out = bytearray()
    while len(out) < n:
        seed = (seed * 0x5DEECE66D + 0xB) & mask
        r = seed >> 16
        for _ in range(min(4, n - len(out))):
            out.append(r & 0xFF)
            r >>= 8
    return bytes(out)


def zookeeper_passwd(session_id):
    return _java_random_bytes(session_id ^ 0xB3415C00)


@pytest.mark.deviation("Session passwords are HMAC-SHA256, not java.util.Random")
def test_password_is_not_derivable_from_session_id(server, conns):
    # Self-check of the derivation against the reference's test vectors.
    assert zookeeper_passwd(0x1000000000000).hex() == "f22acd4a97e69d6d20a49bb638eadb38"
    assert zookeeper_passwd(0x1).hex() == "054cc74a37327db215e702e20c73f005"
    c = conns(server.hostport)
    resp = c.handshake()
    assert resp.passwd != zookeeper_passwd(resp.session_id)
    # ...and that guessable password does not open the session.
    d = conns(server.hostport)
    assert d.handshake(session_id=resp.session_id, passwd=zookeeper_passwd(resp.session_id)).timeout == 0
    c.close_session()
