"""Four-letter words, with `4lw.commands.whitelist=*` and with the default whitelist (only srvr)."""

import re

import pytest

from . import wire
from .helpers import dispose, launch, servers, unique

four_letter = servers.four_letter

SRVR_TAIL = (r"Latency min/avg/max: \d+/\d+(\.\d{1,4})?/\d+\n"
             r"Received: \d+\n"
             r"Sent: \d+\n"
             r"Connections: (?P<conns>\d+)\n"
             r"Outstanding: \d+\n"
             r"Zxid: 0x(?P<zxid>[0-9a-f]+)\n"
             r"Mode: standalone\n"
             r"Node count: (?P<nodes>\d+)\n")
VERSION_LINE = r"Zookeeper version: (?P<version>[^\n,]+)[^\n]*\n"  # "<ver>-<sha>, built on <date>"
SRVR_RE = re.compile(VERSION_LINE + SRVR_TAIL)
STAT_RE = re.compile(VERSION_LINE + r"Clients:\n(?P<clients>( /[^\n]+\n)*)\n" + SRVR_TAIL)
BRIEF_CNXN_RE = re.compile(r" /127\.0\.0\.1:(?P<port>\d+)\[[0-9a-f]+\]\(queued=\d+,recved=\d+,sent=\d+\)")
FULL_CNXN_RE = re.compile(
    r" /127\.0\.0\.1:(?P<port>\d+)\[[0-9a-f]+\]\(queued=\d+,recved=\d+,sent=\d+,sid=0x(?P<sid>[0-9a-f]+),"
    r"lop=[A-Z0-9]+,est=\d+,to=(?P<to>\d+)(,lcxid=0x[0-9a-f]+)?,lzxid=0x[0-9a-f]+,lresp=\d+,llat=\d+,minlat=\d+,"
    r"avglat=\d+,maxlat=\d+\)")


@pytest.fixture(scope="module")
def server(kind):
    srv = launch(kind, {"4lw.commands.whitelist": "*", "tickTime": "2000"})
    yield srv
    dispose(srv)


@pytest.fixture(scope="module")
def default_server(kind):
    srv = launch(kind, {"tickTime": "2000"}, drop=("4lw.commands.whitelist",))
    yield srv
    dispose(srv)


def local_port(kz):
    return kz._connection._socket.getsockname()[1]


def srvr(hostport, word="srvr"):
    out = four_letter(hostport, word)
    m = (SRVR_RE if word == "srvr" else STAT_RE).fullmatch(out)
    assert m, f"{word} output does not match the documented format:\n{out}"
    return m


def mntr(hostport):
    out = four_letter(hostport, "mntr")
    assert out.endswith("\n")
    vals = {}
    for line in out[:-1].split("\n"):
        k, sep, v = line.partition("\t")
        assert sep and k.startswith("zk_") and "\t" not in v, f"bad mntr line {line!r}"
        vals[k] = v
    assert list(vals)[:2] == ["zk_version", "zk_server_state"], list(vals)[:2]
    return vals


def test_ruok(server):
    assert four_letter(server.hostport, "ruok") == "imok"


def test_isro(server):
    assert four_letter(server.hostport, "isro") == "rw"


def test_srvr_format_and_counts(server, conns):
    before = srvr(server.hostport)
    c = conns(server.hostport)
    c.handshake()
    base = unique("/fl-srvr")
    assert c.create(base).err == wire.OK
    rep = c.create(base + "/child")
    assert rep.err == wire.OK
    after = srvr(server.hostport)
    assert int(after["nodes"]) == int(before["nodes"]) + 2
    assert int(after["zxid"], 16) >= rep.zxid > 0
    assert int(after["conns"]) >= 2  # the raw session and the 4lw socket itself
    c.close_session()


def test_stat_lists_clients(server, clients):
    kz = clients.new(server.hostport)
    kz.exists("/")
    m = srvr(server.hostport, "stat")
    lines = m["clients"].splitlines()
    for ln in lines:
        assert BRIEF_CNXN_RE.fullmatch(ln), f"bad client line {ln!r}"
    ports = [int(BRIEF_CNXN_RE.fullmatch(ln)["port"]) for ln in lines]
    assert local_port(kz) in ports
    assert len(lines) >= 2  # kazoo and the 4lw connection itself
    assert int(m["conns"]) == len(lines)


def test_cons_shows_session(server, clients):
    kz = clients.new(server.hostport, timeout=10.0)
    kz.exists("/")
    out = four_letter(server.hostport, "cons")
    assert out.endswith("\n\n"), repr(out[-20:])
    lines = out[:-2].split("\n")
    mine = [ln for ln in lines if ln.startswith(f" /127.0.0.1:{local_port(kz)}[")]
    assert len(mine) == 1, out
    m = FULL_CNXN_RE.fullmatch(mine[0])
    assert m, f"bad cons line {mine[0]!r}"
    assert int(m["sid"], 16) == kz.client_id[0]
    assert int(m["to"]) == 10000
    for ln in lines:
        assert FULL_CNXN_RE.fullmatch(ln) or BRIEF_CNXN_RE.fullmatch(ln), f"bad cons line {ln!r}"


def test_mntr(server, clients, conns):
    kz = clients.new(server.hostport)
    before = mntr(server.hostport)
    for k in ("zk_version", "zk_server_state", "zk_znode_count", "zk_num_alive_connections", "zk_ephemerals_count",
              "zk_global_sessions", "zk_watch_count", "zk_outstanding_requests", "zk_packets_received"):
        assert k in before, f"mntr lacks {k}"
    assert before["zk_server_state"] == "standalone"
    assert int(before["zk_num_alive_connections"]) >= 2
    base = unique("/fl-mntr")
    kz.create(base)
    kz.create(base + "/e1", ephemeral=True)
    kz.create(base + "/e2", ephemeral=True)
    c = conns(server.hostport)
    c.handshake()
    after = mntr(server.hostport)
    assert int(after["zk_znode_count"]) == int(before["zk_znode_count"]) + 3
    assert int(after["zk_ephemerals_count"]) == int(before["zk_ephemerals_count"]) + 2
    assert int(after["zk_global_sessions"]) == int(before["zk_global_sessions"]) + 1
    assert int(after["zk_num_alive_connections"]) == int(before["zk_num_alive_connections"]) + 1
    c.close_session()
    assert srvr(server.hostport)["version"] == after["zk_version"].split(",")[0]


def test_conf(server):
    out = four_letter(server.hostport, "conf")
    lines = out.splitlines()
    assert f"clientPort={server.port}" in lines
    assert "tickTime=2000" in lines
    assert "minSessionTimeout=4000" in lines and "maxSessionTimeout=40000" in lines


def test_envi(server):
    out = four_letter(server.hostport, "envi")
    assert out.startswith("Environment:\n")
    keys = [ln.split("=", 1)[0] for ln in out.splitlines()[1:]]
    assert "zookeeper.version" in keys
    version = [ln for ln in out.splitlines() if ln.startswith("zookeeper.version=")][0].split("=", 1)[1]
    assert version.split(",")[0] == srvr(server.hostport)["version"]


def test_watch_commands(server, clients):
    kz = clients.new(server.hostport)
    base = unique("/fl-w")
    kz.create(base)
    kz.create(base + "/a", b"a")
    kz.create(base + "/b", b"b")
    kz.get(base + "/a", watch=lambda e: None)        # data watch
    kz.exists(base + "/b", watch=lambda e: None)     # data watch on an existing node
    kz.exists(base + "/none", watch=lambda e: None)  # exist watch on a missing node
    kz.get_children(base, watch=lambda e: None)      # child watch: not shown by wchs/wchc/wchp
    sid = f"0x{kz.client_id[0]:x}"
    paths = {base + "/a", base + "/b", base + "/none"}

    assert four_letter(server.hostport, "wchs") == "1 connections watching 3 paths\nTotal watches:3\n"

    out = four_letter(server.hostport, "wchc")
    assert out.endswith("\n\n")
    lines = out[:-2].split("\n")
    assert lines[0] == sid and {ln[1:] for ln in lines[1:]} == paths and all(ln[0] == "\t" for ln in lines[1:]), out

    out = four_letter(server.hostport, "wchp")
    assert out.endswith("\n\n")
    blocks = dict(re.findall(r"([^\n\t]+)\n\t(0x[0-9a-f]+)\n", out))
    assert blocks == {p: sid for p in paths}, out

    kz.set(base + "/a", b"changed")  # fires (and removes) the one-shot watch on /a
    out = four_letter(server.hostport, "wchp")
    assert dict(re.findall(r"([^\n\t]+)\n\t(0x[0-9a-f]+)\n", out)) == {base + "/b": sid, base + "/none": sid}, out


def test_dump_lists_ephemerals(server, clients):
    kz = clients.new(server.hostport)
    base = unique("/fl-dump")
    kz.create(base)
    kz.create(base + "/e1", ephemeral=True)
    kz.create(base + "/e2", ephemeral=True)
    sid = f"0x{kz.client_id[0]:x}"
    out = four_letter(server.hostport, "dump")
    assert out.startswith("SessionTracker dump:\n")
    assert "ephemeral nodes dump:\nSessions with Ephemerals (" in out
    m = re.search(re.escape(sid) + r":\n((\t[^\n]+\n)+)", out)
    assert m, out
    assert sorted(ln[1:] for ln in m.group(1).splitlines()) == [base + "/e1", base + "/e2"]
    assert sid in out.split("ephemeral nodes dump:")[0], "session missing from the SessionTracker dump"


def test_default_whitelist(default_server):
    assert four_letter(default_server.hostport, "ruok") == "ruok is not executed because it is not in the whitelist.\n"
    assert four_letter(default_server.hostport, "stat") == "stat is not executed because it is not in the whitelist.\n"
    assert four_letter(default_server.hostport, "mntr") == "mntr is not executed because it is not in the whitelist.\n"
    srvr(default_server.hostport)


@pytest.mark.deviation("Version string")
def test_version_string(server):
    version = srvr(server.hostport)["version"]
    assert version.startswith("3.9.3-oxkeeper-"), version
    assert mntr(server.hostport)["zk_version"].startswith("3.9.3-oxkeeper-")
    assert srvr(server.hostport, "stat")["version"] == version
    assert f"zookeeper.version={version}" in four_letter(server.hostport, "envi")


def test_answers_a_client_that_half_closes_after_the_word(server):
    """`echo srvr | nc host port` sends the word and shuts its side down at once; the answer must still come."""
    import socket
    for _ in range(20):
        with socket.create_connection((server.host, server.port), timeout=5) as s:
            s.sendall(b"srvr")
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert SRVR_RE.fullmatch(data.decode()), data
