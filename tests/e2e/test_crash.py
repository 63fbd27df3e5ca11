"""Crash consistency of the real binary: SIGKILL at random moments under a pipelined write load, and log files
damaged the ways crates/storage/src/recovery.rs tells apart (a torn or unsynced last batch is cut off; damage
anywhere before it is corruption and the member refuses to start).

The SIGKILL test runs against both kinds; the file-damage tests know oxkeeper's segment format (format.rs) and run
against oxkeeper only. Randomness is seeded: the seed is printed (pytest -s, or in a failure's captured output);
`E2E_CRASH_SEED=<n>` replays it, `E2E_CRASH_CYCLES=<n>` changes the number of kill cycles.
"""

import hashlib
import os
import random
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections import namedtuple

import pytest

from . import wire
from .helpers import dispose, halt, launch, server_log_tail, servers, wait_until

TICK_MS = 2000  # session timeouts in [4000, 40000] ms
CFG = {"tickTime": str(TICK_MS)}
# The tests that take the log apart place their writes in known segments: every segment made at its roll (a spare
# made ready meanwhile would take the writes into a segment of its own early; its own tests are the storage
# crate's, wal::spare).
LAYOUT_CFG = {**CFG, "logPrepareSegments": "no"}
# The kill cycles also take snapshots often (every 300 log entries, several per cycle), so kills land while a
# snapshot is being written too and restarts go through snapshot + log replay. ZooKeeper reads snapCount as
# transactions; it then snapshots every few hundred writes as well.
KILL_CFG = {**CFG, "snapCount": "300"}
LONG_T = 40000  # the session whose ephemerals must survive every restart
WRITER_T = 10000

SEED = int(os.environ.get("E2E_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))


def seeded(tag):
    """A random generator for one test, derived from the module seed (so one seed replays every test)."""
    return random.Random(f"{SEED}/{tag}")


# ----------------------------------------------------------------------------------------------- log format
# The bytes of crates/storage/src/format.rs: a 32-byte segment header ("OXK-WAL\n", version, crc, first_index,
# salt), then batches back to back: 32-byte header ("OXKB", version, kind, body_len, crc, first_index, count,
# reserved) and body_len bytes of records {u32 len, bytes}. Little-endian; crc32 (IEEE) of the salt, the header
# with its crc field zeroed, and the body. Segments are preallocated with zeros: the file is longer than the data.
SEGMENT_MAGIC = b"OXK-WAL\n"
BATCH_MAGIC = b"OXKB"
HEADER_BYTES = 32

Batch = namedtuple("Batch", "offset length kind first_index count records")


def segment_files(srv):
    d = os.path.join(srv.workdir, "data", "log")
    names = sorted(n for n in os.listdir(d) if n.startswith("log.") and len(n) == 20)
    return [os.path.join(d, n) for n in names]


def parse_segment(path):
    """(file bytes, batches that check out, offset after the last one). Stops at the first invalid batch."""
    with open(path, "rb") as f:
        buf = f.read()
    assert buf[:8] == SEGMENT_MAGIC, f"{path}: not a segment"
    head = bytearray(buf[:HEADER_BYTES])
    (crc,) = struct.unpack_from("<I", head, 12)
    head[12:16] = b"\0\0\0\0"
    assert zlib.crc32(bytes(head)) == crc, f"{path}: segment header checksum"
    salt = buf[24:32]
    at, batches = HEADER_BYTES, []
    while at + HEADER_BYTES <= len(buf) and buf[at:at + 4] == BATCH_MAGIC:
        kind, body_len, crc, first, count = struct.unpack_from("<HIIQI", buf, at + 6)
        whole = buf[at:at + HEADER_BYTES + body_len]
        if len(whole) < HEADER_BYTES + body_len or zlib.crc32(salt + whole[:12] + b"\0" * 4 + whole[16:]) != crc:
            break
        records, r = [], HEADER_BYTES
        for _ in range(count):
            (n,) = struct.unpack_from("<I", whole, r)
            records.append(whole[r + 4:r + 4 + n])
            r += 4 + n
        batches.append(Batch(at, len(whole), kind, first, count, records))
        at += len(whole)
    return buf, batches, at


def names_in(batch, names):
    """Which of `names` (fixed-width node paths) a batch's records mention."""
    return {n for n in names if any(n.encode() in rec for rec in batch.records)}


def assert_tail_zero(path):
    """Everything after the last valid batch of a segment is zeros (a cut tail was zeroed, not left behind)."""
    buf, _, end = parse_segment(path)
    rest = buf[end:]
    if rest.count(0) != len(rest):
        first = end + next(i for i, b in enumerate(rest) if b)
        raise AssertionError(f"{path}: non-zero byte at {first} after the last valid batch (ends at {end})")


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def flip(path, offset, mask=0x40):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ mask]))


def dir_digest(path):
    """{relative path: sha256} of every file under `path`."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


# ----------------------------------------------------------------------------------------------- processes
def spawn_oxkeeper(workdir, port, cfg):
    """Start oxkeeper on an existing data dir without waiting for it to serve (servers.start_oxkeeper waits)."""
    path = servers._write_cfg(workdir, port, dict({"extendedTypesEnabled": "true"}, **cfg))
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info,openraft=warn")
    with open(os.path.join(workdir, "server.log"), "a") as log:
        proc = subprocess.Popen([servers.oxkeeper_bin(), "--config", path], stdout=log, stderr=subprocess.STDOUT,
                                cwd=workdir, env=env)
    return servers.Server("oxkeeper", proc, port, workdir, keep=True)


def log_size(srv):
    try:
        return os.path.getsize(os.path.join(srv.workdir, "server.log"))
    except OSError:
        return 0


def log_since(srv, offset):
    with open(os.path.join(srv.workdir, "server.log"), "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def committed_record(srv):
    return os.path.join(srv.workdir, "data", "committed")


def recorded_index(srv):
    """The entry index in the committed-index record (crates/server/src/committed.rs), or None."""
    try:
        with open(committed_record(srv), "rb") as f:
            buf = f.read()
    except FileNotFoundError:
        return None
    assert len(buf) == 21 and buf[:8] == b"OXKCOMT\0" and buf[8] == 1, f"committed record {buf!r}"
    assert zlib.crc32(buf[:17]) == struct.unpack_from("<I", buf, 17)[0], "committed record checksum"
    return struct.unpack_from("<Q", buf, 9)[0]


def forget_committed(srv):
    """The file-damage tests damage acknowledged batches to exercise the log's own rules (torn tail, damage):
    the committed-index record, when it already covers them (it lags by up to a second), would refuse to start
    before those rules are reached. test_a_missing_end_of_the_log_refuses_to_start covers the record."""
    try:
        os.remove(committed_record(srv))
    except FileNotFoundError:
        pass


def restart_expecting_refusal(srv, keep_committed=False):
    """Start oxkeeper on `srv`'s data dir; it must exit non-zero. Returns (exit code, what it printed)."""
    if not keep_committed:
        forget_committed(srv)
    mark = log_size(srv)
    new = spawn_oxkeeper(srv.workdir, srv.port, LAYOUT_CFG)
    try:
        wait_until(lambda: new.proc.poll() is not None, 30, 0.02, "oxkeeper to refuse to start")
    finally:
        halt(new)
    return new.proc.returncode, log_since(srv, mark)


def restart_expecting_service(srv, keep_committed=False):
    """Start oxkeeper on `srv`'s data dir and wait until it serves. Returns (server, what it printed at start)."""
    if not keep_committed:
        forget_committed(srv)
    mark = log_size(srv)
    try:
        new = launch("oxkeeper", LAYOUT_CFG, data_of=srv)
    except RuntimeError as e:
        raise AssertionError(f"the server did not start: {e}\n{log_since(srv, mark)}") from None
    return new, log_since(srv, mark)


# ----------------------------------------------------------------------------------------------- raw pipelining
class Stream(threading.Thread):
    """Sends `ops` ((opcode, body) pairs) on `conn` with at most `window` unanswered, reading the replies in
    order, until every op is answered or the connection dies. `sent`: frames handed whole to the kernel;
    `maybe_sent`: that, plus one whose send failed partway; `replies`: what came back, in order."""

    def __init__(self, conn, ops, window):
        super().__init__(daemon=True)
        self.conn, self.ops, self.window = conn, ops, window
        self.sent = self.maybe_sent = 0
        self.xids = []
        self.replies = []
        self.error = None

    def run(self):
        c = self.conn
        try:
            while len(self.replies) < len(self.ops):
                while self.sent < len(self.ops) and self.sent - len(self.replies) < self.window:
                    self.maybe_sent = self.sent + 1
                    self.xids.append(c.send_request(*self.ops[self.sent]))
                    self.sent += 1
                self.replies.append(c.read_reply(timeout=15))
        except wire.Closed:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def kill_at_share(streams, share, timeout=30):
    """Waits until `share` (0..1) of the replies the running `streams` will get has arrived, or every stream has
    ended (a stream ends early only if its connection died), and returns the seconds it took."""
    total = sum(len(s.ops) for s in streams)
    t0 = time.monotonic()
    deadline = t0 + timeout
    while sum(len(s.replies) for s in streams) < share * total and any(s.is_alive() for s in streams):
        assert time.monotonic() < deadline, f"{sum(len(s.replies) for s in streams)} of {total} replies in {timeout}s"
        time.sleep(0.0005)
    return time.monotonic() - t0


def pipeline(conn, requests, window=128, timeout=15):
    """Replies to `requests` ((opcode, body) pairs) sent pipelined on a live connection."""
    s = Stream(conn, requests, window)
    s.run()
    if s.error is not None:
        raise s.error
    assert len(s.replies) == len(requests), f"connection died after {len(s.replies)} of {len(requests)} replies"
    for xid, rep in zip(s.xids, s.replies):
        assert rep.xid == xid, f"reply xid {rep.xid}, expected {xid}"
    return s.replies


def get_children(conn, path):
    rep = conn.get_children(path)
    assert rep.err == wire.OK, f"getChildren {path}: {rep.err}"
    return set(wire.decode_children(rep.body))


# ----------------------------------------------------------------------------------------------- 1. SIGKILL cycles
class Writer:
    """One pipelined writer session and what is known to be committed under /crash/w<k>:
    plain nodes n<cycle>-<j>, sequential nodes s-<seq>, and the setData chain /crash/chain/w<k>."""

    def __init__(self, k):
        self.k = k
        self.dir = f"/crash/w{k}"
        self.chain = f"/crash/chain/w{k}"
        self.nodes = {}  # name -> data (plain and sequential), committed, insertion order = age
        self.chain_version = 0
        self.chain_data = b""
        self.sid = self.passwd = None
        self.conn = None

    def plan(self, rng, cycle, n):
        """n ops: creates, setData (exact expected versions) on the chain, deletes of older nodes, sequential
        creates. Every op's effect is observable on its own after a restart."""
        ops, deletable = [], list(self.nodes)
        deletable.reverse()
        sets = 0
        for j in range(n):
            tag = f"w{self.k}c{cycle}j{j}:".encode() + bytes(rng.randrange(256) for _ in range(rng.randrange(160)))
            r = rng.random()
            if r < 0.3 and deletable:
                ops.append(("delete", deletable.pop()))
            elif r < 0.7:
                ops.append(("set", self.chain_version + sets + 1, tag))
                sets += 1
            elif r < 0.8:
                ops.append(("seq", tag))
            else:
                ops.append(("create", f"n{cycle:03d}-{j:04d}", tag))
        return ops

    def encode(self, op):
        if op[0] == "delete":
            return wire.OP_DELETE, wire.delete_body(f"{self.dir}/{op[1]}", -1)
        if op[0] == "set":
            return wire.OP_SET_DATA, wire.set_data_body(self.chain, op[2], op[1] - 1)
        if op[0] == "seq":
            return wire.OP_CREATE, wire.create_body(f"{self.dir}/s-", op[1], wire.PERSISTENT | 2)
        return wire.OP_CREATE, wire.create_body(f"{self.dir}/{op[1]}", op[2])

    def observe(self, conn):
        """(children, chain (data, version), {data: name} of sequential children not known yet)."""
        children = get_children(conn, self.dir)
        rep = conn.get_data(self.chain)
        assert rep.err == wire.OK, f"{self.chain}: {rep.err}"
        data, stat = wire.decode_get_data(rep.body)
        unknown = sorted(n for n in children if n.startswith("s-") and n not in self.nodes)
        reps = pipeline(conn, [(wire.OP_GET_DATA, wire.path_watch_body(f"{self.dir}/{n}")) for n in unknown])
        seq = {}
        for n, rep in zip(unknown, reps):
            assert rep.err == wire.OK, f"{self.dir}/{n}: {rep.err}"
            seq[wire.decode_get_data(rep.body)[0]] = n
        return children, (data, stat.version), seq

    def executed(self, op, seen):
        children, (_, version), seq = seen
        if op[0] == "delete":
            return op[1] not in children
        if op[0] == "set":
            return version >= op[1]
        if op[0] == "seq":
            return op[1] in seq
        return op[1] in children

    def apply(self, op, seen):
        if op[0] == "delete":
            del self.nodes[op[1]]
        elif op[0] == "set":
            self.chain_version, self.chain_data = op[1], op[2]
        elif op[0] == "seq":
            self.nodes[seen[2][op[1]]] = op[1]
        else:
            self.nodes[op[1]] = op[2]


class EphemeralOwner:
    """The long-timeout session: pipelined ephemeral creates under /crash/eph and deletes of its older ones."""

    dir = "/crash/eph"

    def __init__(self):
        self.nodes = {}
        self.sid = self.passwd = None
        self.conn = None

    def plan(self, rng, cycle, n):
        ops, deletable = [], list(self.nodes)
        deletable.reverse()
        for j in range(n):
            if rng.random() < 0.35 and deletable:
                ops.append(("delete", deletable.pop()))
            else:
                ops.append(("create", f"c{cycle:03d}-{j:04d}", f"e{cycle}/{j}".encode()))
        return ops

    def encode(self, op):
        if op[0] == "delete":
            return wire.OP_DELETE, wire.delete_body(f"{self.dir}/{op[1]}", -1)
        return wire.OP_CREATE, wire.create_body(f"{self.dir}/{op[1]}", op[2], wire.EPHEMERAL)

    def observe(self, conn):
        return get_children(conn, self.dir)

    def executed(self, op, seen):
        return (op[1] not in seen) if op[0] == "delete" else (op[1] in seen)

    def apply(self, op, seen):
        if op[0] == "delete":
            del self.nodes[op[1]]
        else:
            self.nodes[op[1]] = op[2]


def check_acked(who, ops, stream):
    """The replies that arrived: right xids, all OK, zxids increasing. Returns the highest zxid."""
    assert stream.error is None, f"{who}: {stream.error!r}"
    last = 0
    for i, rep in enumerate(stream.replies):
        assert rep.xid == stream.xids[i], f"{who}: reply {i} has xid {rep.xid}, sent {stream.xids[i]}"
        assert rep.err == wire.OK, f"{who}: op {i} {ops[i][:2]} failed with {rep.err}"
        assert rep.zxid > last, f"{who}: reply {i} zxid {rep.zxid:#x} after {last:#x}"
        last = rep.zxid
    return last


def check_prefix(who, ops, stream, executed):
    """The executed ops of one connection are a prefix of what it sent that holds every acknowledged one."""
    m = executed.index(False) if False in executed else len(executed)
    gaps = [i for i in range(m, len(executed)) if executed[i]]
    assert not gaps, (f"{who}: op {m} ({ops[m][:2]}) not executed but later ops were "
                      f"(first {gaps[0]}: {ops[gaps[0]][:2]}); {len(stream.replies)} acknowledged")
    assert m >= len(stream.replies), (f"{who}: acknowledged op {m} {ops[m][:2]} lost "
                                      f"({len(stream.replies)} acknowledged)")
    assert m <= stream.maybe_sent, f"{who}: {m} ops executed but only {stream.maybe_sent} sent"
    return m


def sweep(conn, writers, eph):
    """Every committed node is there with its data and version: plain and sequential nodes (version 0, no owner),
    the chains (version = number of executed sets), the ephemerals (owner = the long session)."""
    paths, want = [], []
    for w in writers:
        for name, data in w.nodes.items():
            paths.append(f"{w.dir}/{name}")
            want.append((data, 0, 0))
        paths.append(w.chain)
        want.append((w.chain_data, w.chain_version, 0))
    for name, data in eph.nodes.items():
        paths.append(f"{eph.dir}/{name}")
        want.append((data, 0, eph.sid))
    reps = pipeline(conn, [(wire.OP_GET_DATA, wire.path_watch_body(p)) for p in paths])
    for p, rep, (data, version, owner) in zip(paths, reps, want):
        assert rep.err == wire.OK, f"{p}: committed node missing ({rep.err})"
        got, stat = wire.decode_get_data(rep.body)
        assert (got, stat.version, stat.ephemeral_owner) == (data, version, owner), \
            f"{p}: {got[:24]!r} v{stat.version} owner {stat.ephemeral_owner:#x}, " \
            f"expected {data[:24]!r} v{version} owner {owner:#x}"
    return len(paths)


@pytest.mark.parametrize("force_sync", ["yes", "no"])
def test_sigkill_cycles_under_pipelined_load(kind, force_sync):
    """30+ SIGKILLs of the server at seeded random moments while four sessions pipeline writes; after every
    restart: acknowledged writes present with data and version, executed writes a per-connection prefix, sessions
    (writers' and the long one with its ephemerals) restored, zxids never backwards. With forceSync=no (8 cycles,
    oxkeeper only) the same holds: a write is acknowledged once it is in the file, and SIGKILL keeps the page
    cache."""
    if force_sync == "no" and kind != "oxkeeper":
        pytest.skip("forceSync=no is run against oxkeeper only")
    kill_cfg = {**KILL_CFG, "forceSync": force_sync}
    cycles = int(os.environ.get("E2E_CRASH_CYCLES") or (8 if kind != "oxkeeper" or force_sync == "no" else 32))
    rng = seeded(f"sigkill-{kind}")
    print(f"\ncrash seed {SEED} (E2E_CRASH_SEED={SEED} replays), {cycles} cycles, {kind}")
    n_writers, window, ops_per_cycle = 3, 48, 2500
    # The kill's moment is a seeded point of the write stream itself (a share of the cycle's replies received),
    # not of the wall clock: a wall-clock delay lands after the last reply on a faster machine or server and
    # before the first on a slower one. One kill in eight comes after every reply (an idle server).
    kill_after_all = 1 / 8
    t_start = time.monotonic()
    first = launch(kind, kill_cfg)
    srvs = [first]
    srv = first
    writers = [Writer(k) for k in range(n_writers)]
    eph = EphemeralOwner()
    max_zxid = 0
    stats = {"sent": 0, "acked": 0, "executed_unacked": 0, "startup_kills": 0, "in_flight": 0}
    try:
        setup = wire.session(srv.hostport, 10000)
        for p in ["/crash", "/crash/chain", eph.dir] + [w.dir for w in writers] + [w.chain for w in writers]:
            assert setup.create(p).err == wire.OK
        setup.close_session()
        setup.close()
        for w in writers:
            w.conn = wire.session(srv.hostport, WRITER_T)
            w.sid, w.passwd = w.conn.session_id, w.conn.passwd
        eph.conn = wire.session(srv.hostport, LONG_T)
        eph.sid, eph.passwd = eph.conn.session_id, eph.conn.passwd
        assert eph.conn.negotiated_timeout == LONG_T

        for cycle in range(cycles):
            who_all = writers + [eph]
            plans = [(x, x.plan(rng, cycle, ops_per_cycle if x is not eph else ops_per_cycle // 4)) for x in who_all]
            streams = [Stream(x.conn, [x.encode(op) for op in ops], window if x is not eph else 16)
                       for x, ops in plans]
            share = 1.0 if rng.random() < kill_after_all else rng.uniform(0.0, 1.0)
            for s in streams:
                s.start()
            delay = kill_at_share(streams, share)  # the stimulus: a seeded random moment of the write stream
            halt(srv)
            for s in streams:
                s.join(20)
                assert not s.is_alive(), f"cycle {cycle}: a writer is stuck after the kill"
            for (x, ops), s in zip(plans, streams):
                max_zxid = max(max_zxid, check_acked(f"cycle {cycle} {x.dir}", ops, s))
                x.conn.close()

            # Sometimes kill it again while it starts up (recovering the log, before or just after serving).
            if kind == "oxkeeper" and rng.random() < 0.2:
                early = spawn_oxkeeper(srv.workdir, srv.port, kill_cfg)
                time.sleep(rng.uniform(0.0, 0.15))  # the stimulus again
                halt(early)
                stats["startup_kills"] += 1
            if kind == "oxkeeper":
                srv = spawn_oxkeeper(srv.workdir, srv.port, kill_cfg)
                servers.wait_serving(srv.hostport, srv.proc, 30)
            else:
                srv = launch(kind, kill_cfg, data_of=first)  # ZooKeeper: a new workdir, the first data dir
            srvs.append(srv)

            # The long session comes back with the highest zxid any reply carried: a server that went back in
            # time would refuse it (close with no reply).
            c = wire.Conn(srv.hostport, timeout=10)
            try:
                resp = c.handshake(timeout_ms=LONG_T, session_id=eph.sid, passwd=eph.passwd, last_zxid=max_zxid)
            except wire.Closed:
                raise AssertionError(f"cycle {cycle}: reconnect with lastZxidSeen {max_zxid:#x} refused: "
                                     f"the zxid went backwards\n{server_log_tail(srv)}") from None
            assert (resp.session_id, resp.timeout) == (eph.sid, LONG_T), \
                f"cycle {cycle}: the long session was not restored: {resp}"
            eph.conn = c
            rep = c.exists("/")
            assert rep.zxid >= max_zxid, f"cycle {cycle}: zxid {rep.zxid:#x} after a restart, seen {max_zxid:#x}"
            max_zxid = rep.zxid

            for (x, ops), s in zip(plans, streams):
                who = f"cycle {cycle} (kill at {share:.0%} of the replies, {delay:.3f}s) {x.dir}"
                seen = x.observe(c)
                executed = [x.executed(op, seen) for op in ops]
                m = check_prefix(who, ops, s, executed)
                for op in ops[:m]:
                    x.apply(op, seen)
                stats["sent"] += s.sent
                stats["acked"] += len(s.replies)
                stats["executed_unacked"] += m - len(s.replies)
                # The acknowledged sequential creates got the names that now hold their data.
                for op, rep in zip(ops, s.replies):
                    if op[0] == "seq":
                        assert wire.decode_string(rep.body) == f"{x.dir}/{seen[2][op[1]]}", who
                # Nothing else is there: the children are exactly the committed nodes.
                children = seen[0] if isinstance(x, Writer) else seen
                assert children == set(x.nodes), (f"{who}: children differ from the committed set: extra "
                                                  f"{sorted(children - set(x.nodes))[:5]}, missing "
                                                  f"{sorted(set(x.nodes) - children)[:5]}")
            n_checked = sweep(c, writers, eph)
            stats["in_flight"] += any(len(s.replies) < s.maybe_sent for s in streams)

            for w in writers:
                w.conn = wire.Conn(srv.hostport, timeout=10)
                resp = w.conn.handshake(timeout_ms=WRITER_T, session_id=w.sid, passwd=w.passwd, last_zxid=max_zxid)
                assert resp.session_id == w.sid and resp.timeout == WRITER_T, \
                    f"cycle {cycle}: writer session {w.sid:#x} not restored: {resp}"
            print(f"cycle {cycle:2d}: kill at {share:4.0%} of the replies ({delay:.3f}s), "
                  f"sent {[s.sent for s in streams]}, "
                  f"acked {[len(s.replies) for s in streams]}, {n_checked} nodes checked, zxid {max_zxid:#x}")

        eph.conn.close_session()
        for w in writers:
            w.conn.close_session()
        elapsed = time.monotonic() - t_start
        cuts = log_since(first, 0).count("cut off a torn") if kind == "oxkeeper" else 0
        print(f"{cycles} kills ({stats['startup_kills']} more during start-up, {stats['in_flight']} with writes "
              f"in flight) in {elapsed:.1f}s: {stats['sent']} writes sent, {stats['acked']} acknowledged, "
              f"{stats['executed_unacked']} executed without an acknowledgement; {cuts} torn tails cut")
        # Not vacuous: most kills land while writes are unanswered (all but the ones after every reply, about
        # one in eight, and the rare share so close to 1 that the last replies arrived before the kill).
        assert stats["in_flight"] >= cycles // 4, f"only {stats['in_flight']} kills hit writes in flight"
        if kind == "oxkeeper":
            # Snapshots were taken throughout, and restarts went through the newest one plus the log after it.
            log = log_since(first, 0)
            restored = log.count("state restored from the newest snapshot")
            print(f"{log.count('snapshot written')} snapshots written, {restored} restarts from a snapshot")
            assert restored >= cycles // 2, f"only {restored} restarts started from a snapshot"
    except AssertionError as e:
        raise AssertionError(f"[crash seed {SEED}] {e}") from None
    finally:
        for x in writers + [eph]:
            if x.conn is not None:
                x.conn.close()
        dispose(*reversed(srvs))


# ----------------------------------------------------------------------------------------------- file damage
def write_history(srv, n_single=12, burst=40):
    """Writes whose batches are known: n_single sequential creates (one batch each), then a pipelined burst
    (fewer, bigger batches). Returns {path: data}, every one acknowledged. The server is SIGKILLed after."""
    c = wire.session(srv.hostport, 10000)
    acked = {}
    assert c.create("/d", b"root").err == wire.OK
    acked["/d"] = b"root"
    for i in range(n_single):
        p, data = f"/d/a{i:03d}", f"single {i}".encode() * (i + 1)
        assert c.create(p, data).err == wire.OK
        acked[p] = data
    reqs = [(wire.OP_CREATE, wire.create_body(f"/d/b{i:03d}", f"burst {i}".encode())) for i in range(burst)]
    for i, rep in enumerate(pipeline(c, reqs, window=burst)):
        assert rep.err == wire.OK
        acked[f"/d/b{i:03d}"] = f"burst {i}".encode()
    c.close()
    halt(srv)
    return acked


def check_present(srv, expected, absent=()):
    c = wire.session(srv.hostport, 10000)
    try:
        paths = sorted(expected)
        reps = pipeline(c, [(wire.OP_GET_DATA, wire.path_watch_body(p)) for p in paths])
        for p, rep in zip(paths, reps):
            assert rep.err == wire.OK, f"acknowledged {p} lost"
            assert wire.decode_get_data(rep.body)[0] == expected[p], f"{p}: wrong data"
        for p in absent:
            assert c.exists(p).err == wire.NO_NODE, f"{p} from the cut batch is back"
        c.close_session()
    finally:
        c.close()


def history_batches(srv, acked):
    """The last segment, its batches, and for each batch the acknowledged paths it holds."""
    (path,) = segment_files(srv)
    buf, batches, end = parse_segment(path)
    names = [p for p in acked if p != "/d"]
    holds = [names_in(b, names) for b in batches]
    found = set().union(*holds)
    assert found == set(names), f"parser found {len(found)} of {len(names)} writes in the log"
    return path, buf, batches, end, holds


@pytest.mark.parametrize("how", ["deleted", "emptied", "shortened"])
def test_a_missing_end_of_the_log_refuses_to_start(kind, how):
    """The end of the log lost by something other than a crash (the last segment deleted, truncated to nothing,
    or cut before batches that were synced and committed): the log alone would start without those acknowledged
    writes; the committed-index record beside it makes the member refuse, naming what is missing and the way
    out. Removing the record as the message says then starts it with what is left (when something is left)."""
    if kind != "oxkeeper":
        pytest.skip("oxkeeper's log format")
    srv = launch(kind, LAYOUT_CFG)
    new = None
    try:
        c = wire.session(srv.hostport, 10000)
        assert c.create("/keep", b"x").err == wire.OK
        for i in range(20):
            assert c.create(f"/n{i:02d}", b"y").err == wire.OK
        (path,) = segment_files(srv)
        _, batches, _ = parse_segment(path)
        last = batches[-1].first_index + batches[-1].count - 1
        wait_until(lambda: (recorded_index(srv) or 0) >= last, 10, 0.05,
                   f"the committed-index record to reach entry {last}")
        c.close()
        halt(srv)
        if how == "deleted":
            os.remove(path)
        elif how == "emptied":
            os.truncate(path, 0)
        else:
            # Cut before the last 5 batches: what is left is a clean log that simply ends early.
            os.truncate(path, batches[-5].offset)
        rc, text = restart_expecting_refusal(srv, keep_committed=True)
        assert rc != 0
        assert "the end of the log is missing" in text and committed_record(srv) in text, text
        assert "was committed and durable" in text, text
        if how == "shortened":
            assert "To start with what is left" in text, text
            forget_committed(srv)
            new, text = restart_expecting_service(srv, keep_committed=True)
            c = wire.session(new.hostport, 10000)
            assert c.exists("/keep").err == wire.OK
            assert c.create("/after", b"z").err == wire.OK
            c.close()
        else:
            # No log and no snapshot: nothing to start from (the member could not even lead itself again).
            assert "Nothing is left to start from" in text, text
    finally:
        dispose(new, srv)


CUT_MESSAGES = ("cutting off a torn or unsynced batch at the end of the write-ahead log",
                "cut off a torn, unacknowledged tail of the log")


def check_cut_logged(text, path, offset):
    for msg in CUT_MESSAGES:
        assert msg in text, f"the server did not log {msg!r}:\n{text}"
    assert path in text and f"offset={offset}" in text, f"the cut is not logged at {path} offset {offset}:\n{text}"


def check_continues(srv, expected):
    """After a recovery: new writes work, and one more SIGKILL + restart finds everything with no cut."""
    c = wire.session(srv.hostport, 10000)
    for i in range(5):
        p = f"/after{i}"
        assert c.create(p, b"after").err == wire.OK
        expected[p] = b"after"
    c.close()
    halt(srv)
    new, text = restart_expecting_service(srv)
    assert "torn" not in text, f"a clean log was cut at the next start:\n{text}"
    check_present(new, expected)
    return new


def torn_cases():
    rng = seeded("torn")
    cases = [("zero", "header", 1), ("zero", "header", 20), ("zero", "body", 0), ("zero", "body", -1),
             ("shorten", "header", 5), ("shorten", "body", 3), ("shorten", "body", -1)]
    cases += [("zero", "any", rng.randrange(1 << 30)) for _ in range(2)]
    cases += [("shorten", "any", rng.randrange(1 << 30)) for _ in range(2)]
    return cases


@pytest.mark.parametrize("how,where,at", torn_cases(), ids=lambda v: str(v))
def test_torn_last_batch_is_cut(kind, how, where, at):
    """The last batch, cut partway (zeros from a point on, the file length kept as preallocation leaves it; or the
    file shortened there): the server starts, logs the cut at the batch's offset, zeroes what was left of it, and
    has every write of the earlier batches; the writes of the cut batch are gone (no half of a batch applies)."""
    if kind != "oxkeeper":
        pytest.skip("oxkeeper's log format")
    srv = launch(kind, LAYOUT_CFG)
    new = None
    try:
        acked = write_history(srv)
        path, buf, batches, end, holds = history_batches(srv, acked)
        last = batches[-1]
        # header: cut inside the 32-byte header; body: that many bytes into the body (-1: its last byte);
        # any: a seeded offset strictly inside the batch.
        cut = {"header": last.offset + at,
               "body": last.offset + HEADER_BYTES + at if at >= 0 else last.offset + last.length - 1,
               "any": last.offset + 1 + at % (last.length - 1)}[where]
        assert last.offset < cut < last.offset + last.length
        if how == "zero":
            patch(path, cut, bytes(last.offset + last.length - cut))
        else:
            os.truncate(path, cut)
        print(f"\n[crash seed {SEED}] last batch at {last.offset} ({last.length} bytes, {last.count} records: "
              f"{sorted(holds[-1])[:3]}...), {how} from {cut}")
        new, text = restart_expecting_service(srv)
        check_cut_logged(text, path, last.offset)
        assert_tail_zero(path)
        lost = holds[-1]
        kept = {p: d for p, d in acked.items() if p not in lost}
        check_present(new, kept, absent=lost)
        new = check_continues(new, kept)
    except AssertionError as e:
        raise AssertionError(f"[crash seed {SEED}] {e}") from None
    finally:
        dispose(new, srv)


def damage_cases():
    rng = seeded("damage")
    return [("segment-header", 3), ("segment-header", 20), ("magic", 0), ("version", 4), ("body-len", 9),
            ("crc", 13), ("first-index", 16), ("count", 24), ("reserved", 30), ("body", 0), ("body", -1),
            ("zeroed-header", 0)] + [("any", rng.randrange(1 << 30)) for _ in range(3)]


@pytest.mark.parametrize("what,at", damage_cases(), ids=lambda v: str(v))
def test_damage_before_the_last_batch_refuses_to_start(kind, what, at):
    """A flipped byte (or a zeroed header) in a batch that is not the last one, or in the segment header: the
    server exits non-zero, names the file and the byte offset of the damaged batch and what the operator can do,
    and leaves every file of the data dir as it was."""
    if kind != "oxkeeper":
        pytest.skip("oxkeeper's log format")
    rng = seeded(f"damage-{what}-{at}")
    srv = launch(kind, LAYOUT_CFG)
    try:
        acked = write_history(srv)
        path, buf, batches, end, holds = history_batches(srv, acked)
        if what == "segment-header":
            victim_offset, offset = 0, at
        else:
            victim = batches[rng.randrange(len(batches) - 1)]  # never the last one
            victim_offset = victim.offset
            field = {"magic": 0, "version": 4, "body-len": 9, "crc": 13, "first-index": 16, "count": 24,
                     "reserved": 30, "zeroed-header": 0}
            if what in field:
                offset = victim.offset + field[what]
            elif what == "body":
                offset = victim.offset + (HEADER_BYTES + at if at >= 0 else victim.length - 1)
            else:
                offset = victim.offset + at % victim.length
        if what == "zeroed-header":
            patch(path, victim_offset, bytes(HEADER_BYTES))
        else:
            flip(path, offset)
        print(f"\n[crash seed {SEED}] {what}: damaged at {offset} (batch at {victim_offset}, "
              f"{len(batches)} batches, last at {batches[-1].offset})")
        # The record goes first (restart_expecting_refusal removes it): whether the stopped server wrote
        # one depends on its last second, and the check is that the refused start changes nothing.
        forget_committed(srv)
        before = dir_digest(os.path.join(srv.workdir, "data"))
        rc, text = restart_expecting_refusal(srv)
        assert rc != 0, f"exit code {rc}:\n{text}"
        assert "corrupt" in text and path in text and f"byte offset {victim_offset}:" in text, \
            f"the refusal does not name {path} at byte offset {victim_offset}:\n{text}"
        assert "restore" in text and "backup" in text, f"the refusal does not say what to do:\n{text}"
        assert dir_digest(os.path.join(srv.workdir, "data")) == before, "the refused start changed the data dir"
        # And it keeps refusing: nothing was half-repaired.
        rc2, text2 = restart_expecting_refusal(srv)
        assert rc2 != 0 and f"byte offset {victim_offset}:" in text2
    except AssertionError as e:
        raise AssertionError(f"[crash seed {SEED}] {e}") from None
    finally:
        dispose(srv)


def tail_cases():
    rng = seeded("tail")
    return [("zero-area", 0), ("zero-area", 1), ("zero-area", 31), ("zero-area", 4096 + rng.randrange(1 << 20)),
            ("zero-area", -1), ("last-zeroed-header", 0), ("last-flip", rng.randrange(1 << 30))]


@pytest.mark.parametrize("what,at", tail_cases(), ids=lambda v: str(v))
def test_damage_at_the_end_follows_the_torn_tail_rule(kind, what, at):
    """What the documented rule makes a torn tail: a stray byte in the preallocated zeros after the last batch
    (at its end, a little after, far after, the file's last byte) is cut with nothing lost; a last batch whose
    header is zeroed, or with a flipped byte, is cut as an unsynced write would be (its writes are gone, all
    earlier ones kept). The server starts in every case."""
    if kind != "oxkeeper":
        pytest.skip("oxkeeper's log format")
    srv = launch(kind, LAYOUT_CFG)
    new = None
    try:
        acked = write_history(srv)
        path, buf, batches, end, holds = history_batches(srv, acked)
        last = batches[-1]
        lost = set()
        if what == "zero-area":
            offset = end + at if at >= 0 else len(buf) - 1
            assert buf[offset] == 0
            flip(path, offset)
            cut_at = end
        elif what == "last-zeroed-header":
            patch(path, last.offset, bytes(HEADER_BYTES))
            offset, cut_at, lost = last.offset, last.offset, holds[-1]
        else:
            offset = last.offset + at % last.length
            flip(path, offset)
            cut_at, lost = last.offset, holds[-1]
        print(f"\n[crash seed {SEED}] {what}: damaged at {offset}, data ends at {end}, file {len(buf)} bytes")
        new, text = restart_expecting_service(srv)
        check_cut_logged(text, path, cut_at)
        assert_tail_zero(path)
        kept = {p: d for p, d in acked.items() if p not in lost}
        check_present(new, kept, absent=lost)
        new = check_continues(new, kept)
    except AssertionError as e:
        raise AssertionError(f"[crash seed {SEED}] {e}") from None
    finally:
        dispose(new, srv)


# ----------------------------------------------------------------------------------------------- two segments
BIG = 1_000_000  # a setData of this size is one ~1 MB entry; 67 of them fill a 64 MiB segment


@pytest.fixture(scope="module")
def two_segments(kind):
    """A data dir whose log has two segments, the second holding exactly one batch (the setData that did not fit
    in the first), made once per module: (stopped server, number of sets, {path: data} acknowledged)."""
    if kind != "oxkeeper":
        pytest.skip("oxkeeper's log format")
    srv = launch(kind, LAYOUT_CFG)
    try:
        c = wire.session(srv.hostport, 10000)
        acked = {}
        for i in range(5):
            assert c.create(f"/m{i}", b"small %d" % i).err == wire.OK
            acked[f"/m{i}"] = b"small %d" % i
        assert c.create("/big").err == wire.OK
        n = 0
        while len(segment_files(srv)) < 2:
            n += 1
            assert n < 200, "no second segment after 200 MB"
            assert c.set_data("/big", bytes([n % 251]) * BIG).err == wire.OK
        c.close()
        halt(srv)
        yield srv, n, acked
    finally:
        dispose(srv)


def copy_server(srv):
    """A stopped server's data dir copied into a fresh workdir (and port), so each case damages its own copy.
    The Server it returns has no process yet (a finished placeholder); restart_* start one on it."""
    workdir = tempfile.mkdtemp(prefix="ox-crash-")
    shutil.copytree(os.path.join(srv.workdir, "data"), os.path.join(workdir, "data"))
    placeholder = subprocess.Popen(["true"])
    placeholder.wait()
    return servers.Server("oxkeeper", placeholder, servers.free_port(), workdir, keep=True)


@pytest.mark.parametrize("case", ["torn-only-batch-of-new-segment", "flip-in-last-batch-of-old-segment",
                                  "zeroed-last-header-of-old-segment", "stray-byte-in-old-segment-padding",
                                  "damaged-header-of-new-segment", "first-segment-missing"])
def test_two_segments(two_segments, case):
    """Segment boundaries. A torn first (only) batch of the newest segment: the segment is removed, the server
    starts with every earlier write. Anything damaged in an older segment, the newest segment's header damaged
    while it holds a batch, or the first segment missing: refuse to start, naming the file (and offset), data dir
    untouched. A stray byte in an older segment's preallocated zeros is refused as well: the rule treats any
    non-zero byte after the last batch of an older segment as damage (conservative: nothing durable is lost
    there, as the next segment starts at the next index)."""
    base, n, acked = two_segments
    srv = copy_server(base)
    new = None
    try:
        old, newest = segment_files(srv)
        buf, batches, end = parse_segment(old)
        nbuf, nbatches, nend = parse_segment(newest)
        assert len(nbatches) == 1 and nbatches[0].offset == HEADER_BYTES
        expect_offset = None
        if case == "torn-only-batch-of-new-segment":
            patch(newest, HEADER_BYTES + 5, bytes(nend - HEADER_BYTES - 5))
            new, text = restart_expecting_service(srv)
            check_cut_logged(text, newest, HEADER_BYTES)
            assert "removing a write-ahead log segment that never held a durable entry" in text, text
            assert segment_files(srv) == [old], "the segment with nothing durable in it is still there"
            c = wire.session(new.hostport, 10000)
            data, stat = wire.decode_get_data(c.get_data("/big").body)
            assert (stat.version, data) == (n - 1, bytes([(n - 1) % 251]) * BIG), \
                f"/big v{stat.version}, expected the last set before the cut one (v{n - 1})"
            c.close()
            check_present(new, acked)
            new = check_continues(new, dict(acked))
            return
        if case == "flip-in-last-batch-of-old-segment":
            flip(old, batches[-1].offset + 100)
            target, expect_offset = old, batches[-1].offset
        elif case == "zeroed-last-header-of-old-segment":
            patch(old, batches[-1].offset, bytes(HEADER_BYTES))
            target, expect_offset = old, batches[-1].offset
        elif case == "stray-byte-in-old-segment-padding":
            flip(old, end + 100)
            target, expect_offset = old, end
        elif case == "damaged-header-of-new-segment":
            flip(newest, 3)
            target, expect_offset = newest, 0
        else:
            os.remove(old)
            target = None
        # The record goes first (restart_expecting_refusal removes it): whether the stopped server wrote
        # one depends on its last second, and the check is that the refused start changes nothing.
        forget_committed(srv)
        before = dir_digest(os.path.join(srv.workdir, "data"))
        rc, text = restart_expecting_refusal(srv)
        assert rc != 0, f"exit code {rc}:\n{text}"
        if target is not None:
            assert target in text and f"byte offset {expect_offset}:" in text, \
                f"the refusal does not name {target} at byte offset {expect_offset}:\n{text}"
        else:
            assert "missing" in text, f"the refusal does not say entries are missing:\n{text}"
        assert "backup" in text, f"the refusal does not say what to do:\n{text}"
        assert dir_digest(os.path.join(srv.workdir, "data")) == before, "the refused start changed the data dir"
    except AssertionError as e:
        raise AssertionError(f"[crash seed {SEED}] {e}") from None
    finally:
        dispose(new, srv)
