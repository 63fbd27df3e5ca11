"""Four-letter words, with `4lw.commands.whitelist=*` and with the default whitelist (only srvr).

The format tests build their regexes from ZooKeeper 3.8's code (ServerCnxn.dumpConnectionInfo, ExpiryQueue.dump,
DataTree.dumpEphemerals, NIOServerCnxnFactory.dumpConnections, the mntr metric names) and must pass against
ZooKeeper itself; tests that need exact counts start a server of their own (`fresh`)."""

import calendar
import re
import socket
import time

import pytest

from . import wire
from .helpers import dispose, launch, servers, unique, wait_until

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


# ----------------------------------------------------------------------------------------------- exact formats
# One connection of cons/stat: " /<ip>:<port>[<interest ops>](queued=,recved=,sent=" and, for a connection with a
# session in cons, ",sid=0x..,lop=..,est=..,to=..[,lcxid=0x..],lzxid=0x..,lresp=..,llat=..,minlat=..,avglat=..,
# maxlat=..", then ")". lop is "null" on a connection that has not answered anything yet (ZooKeeper never
# initialises it), lzxid is printed as an unsigned 64-bit hex (-1 after crst).
CNXN_RE = re.compile(
    r" /(?P<ip>[0-9.]+):(?P<port>\d+)\[(?P<ops>[0-9a-f]+)\]\(queued=(?P<queued>\d+),recved=(?P<recved>\d+),"
    r"sent=(?P<sent>\d+)(?:,sid=0x(?P<sid>[0-9a-f]+),lop=(?P<lop>null|[A-Z0-9]+),est=(?P<est>\d+),to=(?P<to>\d+)"
    r"(?:,lcxid=0x(?P<lcxid>[0-9a-f]+))?,lzxid=0x(?P<lzxid>[0-9a-f]+),lresp=(?P<lresp>\d+),llat=(?P<llat>\d+),"
    r"minlat=(?P<minlat>\d+),avglat=(?P<avglat>\d+),maxlat=(?P<maxlat>\d+))?\)")
# java.util.Date.toString(): "EEE MMM dd HH:mm:ss zzz yyyy".
DATE = r"[A-Z][a-z]{2} [A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} [A-Za-z0-9+:\-]+ \d{4}"


def expiry_queue(elem):
    """ExpiryQueue.dump after its "Sets (<buckets>)/(<elements>):" line: "<n> expire at <date>:" and the elements."""
    return rf"(?:\d+ expire at {DATE}:\n(?:\t{elem}\n)*)*"


DUMP_RE = re.compile(
    r"SessionTracker dump:\nSession Sets \((?P<sbuckets>\d+)\)/\((?P<sessions>\d+)\):\n"
    r"(?P<tracker>" + expiry_queue(r"0x[0-9a-f]+") + r")"
    r"ephemeral nodes dump:\nSessions with Ephemerals \((?P<esessions>\d+)\):\n"
    r"(?P<ephemerals>(?:0x[0-9a-f]+:\n(?:\t/[^\n]*\n)*)*)"
    r"Connections dump:\nConnections Sets \((?P<cbuckets>\d+)\)/\((?P<conns>\d+)\):\n"
    r"(?P<connections>" + expiry_queue(r"ip: /[0-9.]+:\d+ sessionId: 0x[0-9a-f]+") + r")")

# What ZooKeeper 3.8's mntr prints about sessions and connections (gauges, counters, summaries).
SESSION_KEYS = ("global_sessions", "local_sessions", "ephemerals_count", "num_alive_connections",
                "connection_request_count", "connection_revalidate_count", "revalidate_count", "connection_drop_count",
                "connection_rejected", "sessionless_connections_expired", "stale_sessions_expired",
                "connection_drop_probability", "cnxn_closed_without_zk_server_running", "unsuccessful_handshake",
                "tls_handshake_exceeded", "outstanding_tls_handshake", "auth_failed_count",
                "non_mtls_remote_conn_count", "non_mtls_local_conn_count", "dead_watchers_queued",
                "dead_watchers_cleared", "add_dead_watcher_stall_time", "bytes_received_count", "uptime")
SUMMARIES = {"connection_token_deficit": ("avg", "min", "max", "cnt", "sum"),
             "dead_watchers_cleaner_latency": ("avg", "min", "max", "cnt", "sum", "p50", "p95", "p99", "p999")}
# Counters of a standalone server without TLS, connection throttle, quorum or WatchManagerOptimized: always 0.
ALWAYS_ZERO = ("local_sessions", "revalidate_count", "cnxn_closed_without_zk_server_running", "unsuccessful_handshake",
               "tls_handshake_exceeded", "outstanding_tls_handshake", "auth_failed_count", "non_mtls_remote_conn_count",
               "non_mtls_local_conn_count", "dead_watchers_queued", "dead_watchers_cleared",
               "add_dead_watcher_stall_time")


@pytest.fixture
def fresh(kind):
    """fresh(**zoo_cfg) -> a new server of this kind for this test only (exact counts need an unused server)."""
    made = []

    def new(**cfg):
        srv = launch(kind, {"4lw.commands.whitelist": "*", "tickTime": "2000", **cfg})
        made.append(srv)
        return srv

    yield new
    dispose(*made)


def four_letter_from(hostport, word):
    """(output, local port of the connection that asked): ZooKeeper lists the asking connection too."""
    host, port = hostport.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        local = s.getsockname()[1]
        s.sendall(word.encode())
        return b"".join(iter(lambda: s.recv(65536), b"")).decode(), local


def port_of(c):
    return c.sock.getsockname()[1]


def parse_cons(out):
    """cons -> {local port of the client: the line's fields}; every line must match ZooKeeper's format."""
    assert out.endswith(")\n\n"), repr(out[-40:])
    lines = {}
    for ln in out[:-2].split("\n"):
        m = CNXN_RE.fullmatch(ln)
        assert m, f"bad cons line {ln!r}"
        assert m["ip"] == "127.0.0.1"
        lines[int(m["port"])] = m.groupdict()
    return lines


def cons(hostport):
    return parse_cons(four_letter(hostport, "cons"))


def mntr_ints(hostport, *keys):
    vals = mntr(hostport)
    return {k: int(vals["zk_" + k]) for k in keys}


def java_date_to_epoch(text):
    """Seconds since the epoch of a java.util.Date.toString() text (UTC/GMT, else the local zone)."""
    wd, mon, day, hms, zone, year = text.split(" ")
    t = time.strptime(f"{wd} {mon} {day} {hms} {year}", "%a %b %d %H:%M:%S %Y")
    return calendar.timegm(t) if zone in ("UTC", "GMT") else time.mktime(t)


def buckets(text):
    """The buckets of an ExpiryQueue dump: [(epoch seconds, [elements])], checking each "<n> expire at" count."""
    out = []
    for n, date, elems in re.findall(rf"(\d+) expire at ({DATE}):\n((?:\t[^\n]*\n)*)", text):
        lines = [e[1:] for e in elems.splitlines()]
        assert int(n) == len(lines), f"bucket says {n} but lists {lines}"
        out.append((java_date_to_epoch(date), lines))
    times = [t for t, _ in out]
    assert times == sorted(times) and len(set(times)) == len(times), f"buckets not in time order: {text}"
    return out


def dump(hostport):
    out, local = four_letter_from(hostport, "dump")
    m = DUMP_RE.fullmatch(out)
    assert m, f"dump does not match ZooKeeper's format:\n{out}"
    tracker = buckets(m["tracker"])
    assert int(m["sbuckets"]) == len(tracker)
    conns = buckets(m["connections"])
    assert int(m["cbuckets"]) == len(conns)
    ephemerals = {sid: sorted(p[1:] for p in paths.splitlines())
                  for sid, paths in re.findall(r"0x([0-9a-f]+):\n((?:\t[^\n]*\n)*)", m["ephemerals"])}
    assert int(m["esessions"]) == len(ephemerals)
    return {"tracker": tracker, "sessions": int(m["sessions"]), "ephemerals": ephemerals, "connections": conns,
            "conns": int(m["conns"]), "asker": local, "at": time.time()}


def test_cons_lines_carry_zookeepers_per_connection_figures(fresh, conns):
    srv = fresh()
    hp = srv.hostport
    c = conns(hp)
    c.handshake(timeout_ms=12000)
    idle = conns(hp)  # accepted, nothing sent yet
    wait_until(lambda: port_of(idle) in cons(hp), 5, msg="the idle connection accepted")
    out, asker = four_letter_from(hp, "cons")
    lines = parse_cons(out)
    assert set(lines) == {port_of(c), port_of(idle), asker}, out
    # The asking connection: not selected while its command runs, one packet (the word) in.
    assert (lines[asker]["ops"], lines[asker]["recved"], lines[asker]["sent"], lines[asker]["sid"]) == \
        ("0", "1", "0", None)
    assert (lines[port_of(idle)]["ops"], lines[port_of(idle)]["recved"], lines[port_of(idle)]["sent"],
            lines[port_of(idle)]["sid"]) == ("1", "0", "0", None)

    me = lines[port_of(c)]
    assert int(me["sid"], 16) == c.session_id and me["to"] == "12000" and me["ops"] == "1"
    # The session's creation is its first response: SESS, cxid 0, the createSession zxid.
    assert (me["queued"], me["recved"], me["sent"], me["lop"], me["lcxid"]) == ("0", "1", "1", "SESS", "0"), me
    # est is the wall clock of the accept; lresp is the monotonic clock (Time.currentElapsedTime), as Python's.
    assert abs(int(me["est"]) - time.time() * 1000) < 10_000, me
    assert abs(int(me["lresp"]) - time.monotonic() * 1000) < 10_000, me
    # ZooKeeper's minimum latency starts at 0, not at "none", so it stays 0 until crst.
    assert me["minlat"] == "0" and me["avglat"] == me["llat"] == me["maxlat"], me
    session_zxid = int(me["lzxid"], 16)

    path = unique("/fl-cons")
    rep = c.create(path, flags=wire.EPHEMERAL)
    assert rep.err == wire.OK
    me = cons(hp)[port_of(c)]
    assert (me["recved"], me["sent"], me["lop"], me["lcxid"]) == ("2", "2", "CREA", "1"), me
    assert int(me["lzxid"], 16) == rep.zxid > session_zxid > 0

    ping = c.ping()
    me = cons(hp)[port_of(c)]
    # A ping is a request like any other; its special xid does not replace the last cxid.
    assert (me["recved"], me["sent"], me["lop"], me["lcxid"]) == ("3", "3", "PING", "1"), me
    assert int(me["lzxid"], 16) == ping.zxid

    # A watch notification is a packet sent.
    assert c.exists(path, watch=True).err == wire.OK
    other = conns(hp)
    other.handshake()
    assert other.delete(path).err == wire.OK
    assert c.read_event().type == wire.EV_NODE_DELETED
    me = cons(hp)[port_of(c)]
    assert (me["recved"], me["sent"], me["lop"]) == ("4", "5", "EXIS"), me


def test_cons_after_reconnect_shows_a_connection_that_answered_nothing(fresh, conns):
    """ZooKeeper records nothing for a resumed session: the new connection shows its initial (unset) figures."""
    srv = fresh()
    c = conns(srv.hostport)
    c.handshake()
    assert c.exists("/").err == wire.OK
    again = conns(srv.hostport)
    assert again.handshake(session_id=c.session_id, passwd=c.passwd).session_id == c.session_id
    c.wait_closed(5)  # the session moved: its old connection is closed
    lines = cons(srv.hostport)
    assert port_of(c) not in lines
    me = lines[port_of(again)]
    assert int(me["sid"], 16) == c.session_id
    assert (me["recved"], me["sent"], me["lop"], me["lcxid"], me["lzxid"], me["lresp"], me["llat"], me["minlat"],
            me["avglat"], me["maxlat"]) == ("1", "1", "null", "0", "0", "0", "0", "0", "0", "0"), me


def test_crst_resets_every_connections_figures(fresh, conns):
    srv = fresh()
    c = conns(srv.hostport)
    c.handshake()
    assert c.create(unique("/fl-crst")).err == wire.OK
    c.ping()
    before = cons(srv.hostport)[port_of(c)]
    received = int(re.search(r"Received: (\d+)", four_letter(srv.hostport, "srvr"))[1])
    assert four_letter(srv.hostport, "crst") == "Connection stats reset.\n"
    me = cons(srv.hostport)[port_of(c)]
    # ServerCnxn.resetStats: counts 0, lop NA, no lcxid (-1), lzxid -1, no latency; the session stays.
    assert (me["recved"], me["sent"], me["lop"], me["lcxid"], me["lzxid"], me["lresp"], me["llat"], me["minlat"],
            me["avglat"], me["maxlat"]) == ("0", "0", "NA", None, "ffffffffffffffff", "0", "0", "0", "0", "0"), me
    assert (me["sid"], me["est"], me["to"]) == (before["sid"], before["est"], before["to"])
    rep = c.exists("/")
    me = cons(srv.hostport)[port_of(c)]
    assert (me["recved"], me["sent"], me["lop"], me["lcxid"]) == ("1", "1", "EXIS", f"{rep.xid:x}"), me
    assert int(me["lzxid"], 16) == rep.zxid
    assert me["minlat"] == me["avglat"] == me["maxlat"] == me["llat"], me  # one sample since the reset
    # crst leaves the server's own figures alone.
    assert int(re.search(r"Received: (\d+)", four_letter(srv.hostport, "srvr"))[1]) > received


def test_connections_are_counted_and_listed_before_their_handshake(fresh, conns):
    srv = fresh()
    c = conns(srv.hostport)
    c.handshake()
    idle = conns(srv.hostport)
    wait_until(lambda: int(srvr(srv.hostport)["conns"]) == 3, 5, msg="srvr counting the handshaken, the idle and "
                                                                      "the asking connection")
    m = srvr(srv.hostport, "stat")
    lines = m["clients"].splitlines()
    assert len(lines) == int(m["conns"]) == 3, m["clients"]
    ports = {int(BRIEF_CNXN_RE.fullmatch(ln)["port"]) for ln in lines}
    assert {port_of(c), port_of(idle)} <= ports
    assert f" /127.0.0.1:{port_of(idle)}[1](queued=0,recved=0,sent=0)" in lines
    assert f" /127.0.0.1:{port_of(c)}[1](queued=0,recved=1,sent=1)" in lines
    assert mntr_ints(srv.hostport, "num_alive_connections") == {"num_alive_connections": 3}
    idle.close()
    wait_until(lambda: mntr_ints(srv.hostport, "num_alive_connections")["num_alive_connections"] == 2, 5,
               msg="the closed connection no longer counted")


def test_dump_lists_exactly_the_sessions_their_ephemerals_and_the_connections(fresh, conns):
    srv = fresh()
    hp = srv.hostport
    base = unique("/fl-dump")
    sessions = []
    for i, timeout_ms in enumerate((6000, 10000, 20000)):
        c = conns(hp)
        c.handshake(timeout_ms=timeout_ms)
        if i == 0:
            assert c.create(base).err == wire.OK
        for e in ("a", "b"):
            assert c.create(f"{base}/{i}{e}", flags=wire.EPHEMERAL).err == wire.OK
        sessions.append(c)
    ids = {f"{c.session_id:x}": c for c in sessions}

    d = dump(hp)
    listed = [sid for _, elems in d["tracker"] for sid in elems]
    assert sorted(listed) == sorted(f"0x{sid}" for sid in ids) and d["sessions"] == 3, d
    for t, elems in d["tracker"]:
        for sid in elems:
            ahead = t - d["at"]
            timeout_s = ids[sid[2:]].negotiated_timeout / 1000
            # A session's bucket: its last touch + its timeout, rounded up to the next tick (2 s).
            assert timeout_s - 3 <= ahead <= timeout_s + 2 + 2, (sid, ahead, timeout_s)
    assert d["ephemerals"] == {sid: sorted(f"{base}/{i}{e}" for e in "ab") for i, sid in
                               enumerate(f"{c.session_id:x}" for c in sessions)}, d["ephemerals"]
    # Every connection, with the session it carries; the asking one has none.
    conn_lines = sorted(e for _, elems in d["connections"] for e in elems)
    expected = sorted([f"ip: /127.0.0.1:{port_of(c)} sessionId: 0x{c.session_id:x}" for c in sessions]
                      + [f"ip: /127.0.0.1:{d['asker']} sessionId: 0x0"])
    assert conn_lines == expected and d["conns"] == 4, d["connections"]
    for t, elems in d["connections"]:
        for e in elems:
            sid = e.rsplit("0x", 1)[1]
            timeout_s = ids[sid].negotiated_timeout / 1000 if sid in ids else 10  # nio.sessionlessCnxnTimeout
            # A connection's bucket: its last I/O + its timeout, rounded up to the sessionless timeout (10 s).
            assert timeout_s - 3 <= t - d["at"] <= timeout_s + 10 + 2, (e, t - d["at"])
    assert mntr_ints(hp, "global_sessions", "ephemerals_count", "num_alive_connections") == \
        {"global_sessions": 3, "ephemerals_count": 6, "num_alive_connections": 4}

    gone = sessions.pop(0)
    assert gone.close_session().err == wire.OK
    gone.wait_closed(5)
    d = dump(hp)
    assert sorted(sid for _, elems in d["tracker"] for sid in elems) == sorted(f"0x{c.session_id:x}" for c in sessions)
    assert d["ephemerals"] == {f"{c.session_id:x}": sorted(f"{base}/{i + 1}{e}" for e in "ab")
                               for i, c in enumerate(sessions)}, d["ephemerals"]
    assert sorted(e for _, elems in d["connections"] for e in elems) == sorted(
        [f"ip: /127.0.0.1:{port_of(c)} sessionId: 0x{c.session_id:x}" for c in sessions]
        + [f"ip: /127.0.0.1:{d['asker']} sessionId: 0x0"])
    assert mntr_ints(hp, "global_sessions", "ephemerals_count", "num_alive_connections") == \
        {"global_sessions": 2, "ephemerals_count": 4, "num_alive_connections": 3}


def test_mntr_carries_zookeepers_session_and_connection_metrics(fresh):
    srv = fresh()
    vals = mntr(srv.hostport)
    for k in SESSION_KEYS:
        assert f"zk_{k}" in vals, f"mntr lacks zk_{k}"
        assert re.fullmatch(r"\d+(\.\d+)?", vals[f"zk_{k}"]), (k, vals[f"zk_{k}"])
    for name, stats in SUMMARIES.items():
        for st in stats:
            assert re.fullmatch(r"\d+\.\d+" if st == "avg" else r"\d+", vals[f"zk_{st}_{name}"]), (st, name)
    for k in ALWAYS_ZERO:
        assert vals[f"zk_{k}"] == "0", k
    assert vals["zk_connection_drop_probability"] == "0.0"
    assert int(vals["zk_num_alive_connections"]) == 1  # this very connection
    # Each connection request records the (disabled) connection throttle's deficit, 0.
    assert vals["zk_cnt_connection_token_deficit"] == vals["zk_connection_request_count"]
    assert vals["zk_sum_connection_token_deficit"] == vals["zk_max_connection_token_deficit"] == "0"
    later = mntr(srv.hostport)
    assert int(later["zk_uptime"]) >= int(vals["zk_uptime"]) > 0


def test_connection_counters(fresh, conns):
    """connection_request_count, connection_revalidate_count, connection_drop_count, sessionless_connections_expired
    and the session gauges, each checked by its exact change."""
    srv = fresh(**{"nio.sessionlessCnxnTimeout": "1000"})
    hp = srv.hostport
    keys = ("connection_request_count", "connection_revalidate_count", "connection_drop_count",
            "sessionless_connections_expired", "global_sessions", "ephemerals_count", "num_alive_connections")

    def counts():
        return mntr_ints(hp, *keys)

    def changed(before, **delta):
        now = counts()
        return {k: now[k] - before[k] for k in keys if now[k] != before[k]} == delta

    # A connection that never sends a ConnectRequest is closed by the sessionless timeout and counted.
    c0 = counts()
    idle = conns(hp)
    wait_until(lambda: counts()["num_alive_connections"] == c0["num_alive_connections"] + 1, 5,
               msg="the idle connection counted")
    idle.wait_closed(5)
    wait_until(lambda: changed(c0, sessionless_connections_expired=1), 5, msg="sessionless_connections_expired + 1")

    # A session: one connection request; its ephemerals.
    c0 = counts()
    s = conns(hp)
    s.handshake()
    assert s.create(unique("/fl-cnt"), flags=wire.EPHEMERAL).err == wire.OK
    assert changed(c0, connection_request_count=1, global_sessions=1, ephemerals_count=1, num_alive_connections=1)

    # Resuming it elsewhere is a revalidation; the old connection is closed by the server, not dropped.
    c0 = counts()
    again = conns(hp)
    again.handshake(session_id=s.session_id, passwd=s.passwd)
    s.wait_closed(5)
    wait_until(lambda: changed(c0, connection_request_count=1, connection_revalidate_count=1), 5,
               msg="a revalidation and no drop")
    # So is an attempt on an unknown session; a ConnectRequest from a client ahead of us is refused before.
    c0 = counts()
    unknown = conns(hp)
    assert unknown.handshake(session_id=s.session_id + 77, passwd=b"x" * 16).timeout == 0
    unknown.wait_closed(5)
    ahead = conns(hp)
    ahead.send_frame(wire.connect_request(10000, s.session_id, s.passwd, 1 << 40))
    ahead.wait_closed(5)
    wait_until(lambda: changed(c0, connection_request_count=2, connection_revalidate_count=1), 5,
               msg="two requests, one revalidation")

    # The client closing its socket is a drop: without closeSession, or in the middle of a frame.
    c0 = counts()
    again.close()
    half = conns(hp)
    half.send_raw(b"\x00\x00\x00\x2d\x00\x00")
    half.close()
    wait_until(lambda: changed(c0, connection_drop_count=2, num_alive_connections=-1), 5, msg="two drops")
    # Closing after the server closed (closeSession) is not.
    c0 = counts()
    t = conns(hp)
    t.handshake()
    assert t.close_session().err == wire.OK
    t.wait_closed(5)
    t.close()
    wait_until(lambda: changed(c0, connection_request_count=1), 5, msg="one request, no drop")


def test_bytes_received_count(fresh, conns):
    srv = fresh()
    c = conns(srv.hostport)
    c.handshake()
    before = mntr_ints(srv.hostport, "bytes_received_count")["bytes_received_count"]
    assert c.exists("/").err == wire.OK
    after = mntr_ints(srv.hostport, "bytes_received_count")["bytes_received_count"]
    # The exists frame (length prefix, header, path, watch flag), then the next mntr's own 4 bytes.
    assert after - before == 4 + 8 + len(wire.path_watch_body("/")) + 4


def test_expired_sessions_are_counted(fresh, conns):
    srv = fresh()
    before = mntr_ints(srv.hostport, "stale_sessions_expired", "global_sessions")
    s = conns(srv.hostport)
    s.handshake(timeout_ms=4000)
    assert s.create(unique("/fl-exp"), flags=wire.EPHEMERAL).err == wire.OK
    wait_until(lambda: mntr_ints(srv.hostport, "stale_sessions_expired", "global_sessions", "ephemerals_count") ==
               {"stale_sessions_expired": before["stale_sessions_expired"] + 1,
                "global_sessions": before["global_sessions"], "ephemerals_count": 0}, 15,
               msg="the idle session expired, counted once, its ephemeral gone")


def test_srst_resets_the_counters_not_the_gauges(fresh, conns):
    srv = fresh()
    c = conns(srv.hostport)
    c.handshake()
    assert c.create(unique("/fl-srst"), flags=wire.EPHEMERAL).err == wire.OK
    dropped = conns(srv.hostport)
    dropped.send_raw(b"\x00")
    dropped.close()
    wait_until(lambda: mntr_ints(srv.hostport, "connection_drop_count")["connection_drop_count"] == 1, 5,
               msg="a drop")
    assert four_letter(srv.hostport, "srst") == "Server stats reset.\n"
    vals = mntr_ints(srv.hostport, "connection_request_count", "connection_drop_count", "cnt_connection_token_deficit",
                     "global_sessions", "ephemerals_count", "num_alive_connections", "bytes_received_count")
    assert vals == {"connection_request_count": 0, "connection_drop_count": 0, "cnt_connection_token_deficit": 0,
                    "global_sessions": 1, "ephemerals_count": 1, "num_alive_connections": 2,
                    "bytes_received_count": 4}, vals  # only this mntr's own 4 bytes since the reset


def test_connections_over_max_client_cnxns_are_rejected_and_counted(fresh, conns):
    srv = fresh(maxClientCnxns="3")
    assert mntr_ints(srv.hostport, "connection_rejected") == {"connection_rejected": 0}
    held = []
    for _ in range(3):
        c = conns(srv.hostport)
        c.handshake()
        held.append(c)
    try:  # accepted, then closed at once: even connect or the send may see it
        extra = conns(srv.hostport)
        extra.send_frame(wire.connect_request())
        extra.wait_closed(5)
    except (wire.Closed, ConnectionError):
        pass
    held.pop().close_session()
    refused = 0

    def ask():
        nonlocal refused
        try:
            return mntr_ints(srv.hostport, "connection_rejected", "num_alive_connections")
        except (OSError, ValueError, AssertionError):  # the slot is not free yet: that one was rejected too
            refused += 1
            return None

    vals = wait_until(ask, 10, interval=0.2, msg="a free slot for mntr")
    assert vals == {"connection_rejected": 1 + refused, "num_alive_connections": 3}, (vals, refused)
