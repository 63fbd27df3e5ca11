"""pytest entry points for the differential tester (tests/differential/zkdiff.py).

Environment:
  ZKDIFF_A      reference server: zookeeper (default) | oxkeeper | host:port
  ZKDIFF_B      server under test: oxkeeper (default) | zookeeper | host:port
  ZKDIFF_SEEDS  number of seeds (default 20)      ZKDIFF_OPS   ops per seed (default 10000)
  ZKDIFF_JOBS   parallel workers (default 2)      ZKDIFF_QUICK=1  2 seeds x 1500 ops, coverage not enforced
  ZKDIFF_ARGS   extra command-line arguments (e.g. "--drain writes" or "--paranoid")

    pytest tests/differential                                  # ZooKeeper vs oxkeeper, 20 x 10,000
    ZKDIFF_B=zookeeper pytest tests/differential               # ZooKeeper vs ZooKeeper (validates the tester)
    ZKDIFF_QUICK=1 pytest tests/differential -k differential   # quick development run
"""

import os
import shlex
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ZKDIFF = os.path.join(HERE, "zkdiff.py")

try:
    import pytest_timeout  # noqa: F401
    _long = pytest.mark.timeout(3600)
except ImportError:  # pragma: no cover
    def _long(f):
        return f


def _run(args):
    cmd = [sys.executable, ZKDIFF] + args
    print("running:", " ".join(shlex.quote(a) for a in cmd), flush=True)
    return subprocess.call(cmd)


@_long
def test_differential():
    a = os.environ.get("ZKDIFF_A", "zookeeper")
    b = os.environ.get("ZKDIFF_B", "oxkeeper")
    args = ["--a", a, "--b", b]
    if os.environ.get("ZKDIFF_QUICK") == "1":
        args.append("--quick")
    else:
        args += ["--seeds", os.environ.get("ZKDIFF_SEEDS", "20"), "--ops", os.environ.get("ZKDIFF_OPS", "10000")]
    args += ["--jobs", os.environ.get("ZKDIFF_JOBS", "2")]
    args += shlex.split(os.environ.get("ZKDIFF_ARGS", ""))
    rc = _run(args)
    assert rc == 0, f"differential run {a} vs {b} failed (exit {rc}); the report is in the captured output above"


@_long
def test_tester_detects_differences():
    """The tester must report a corrupted reply and a dropped notification (ZooKeeper vs a tampering proxy)."""
    rc = _run(["--self-test"])
    assert rc == 0, "the differential tester failed to report an injected difference"


# ---------------------------------------------------------------------- fast unit checks (no servers)
sys.path.insert(0, HERE)


def test_deviation_directives_parse():
    import zkd_deviations as deviations

    d = deviations.parse("""
text <!-- diff: skip-op reconnectBadPassword multi:createTTL -->
<!-- diff:
# a comment
ignore-field */frames.*.stat.mtime connect/*
ignore-reply sasl
equal-errors check -6 0 -101
sort-events
-->""")
    assert d.skip_ops == {"reconnectBadPassword"} and d.skip_sub == {"createTTL"}
    assert d.ignore_reply == {"sasl"} and d.sort_events
    assert d.equal_errors == {"check": {0: -6, -101: -6}}
    assert d.field_ignored("getData", "frames.0.reply.body.stat.mtime")
    assert not d.field_ignored("getData", "frames.0.reply.body.stat.mzxid")
    for bad in ("<!-- diff: nonsense -->", "<!-- diff: skip-op noSuchOp -->", "<!-- diff: equal-errors check x y -->"):
        with pytest.raises(deviations.DeviationError):
            deviations.parse(bad)


def test_normaliser_renames_and_masks():
    import zkd_deviations as deviations
    import zkdiff

    side = zkdiff.Side("A", "127.0.0.1:1", "/pre", 1.0)
    n = zkdiff.Normaliser(side, deviations.Deviations())
    stat = {"czxid": 0x105, "mzxid": 0x107, "ctime": 1700000000000, "mtime": 0, "ephemeralOwner": 0x1000abc0000,
            "pzxid": 0x105}
    obs = {"frames": [{"event": {"type": 1, "state": 3, "path": "/pre/a", "hzxid": 0x107, "herr": 0}},
                      {"reply": {"xid": 3, "zxid": 0x107, "err": 0,
                                 "body": {"children": ["b", "a"], "stat": stat, "passwd": "00" * 16}}}]}
    out = n.observation("getChildren2", obs)
    ev, rep = out["frames"][0]["event"], out["frames"][1]["reply"]
    assert ev["path"] == "/a" and ev["hzxid"] == "<masked>"
    assert rep["zxid"] == "Z1" and rep["body"]["stat"]["czxid"] == "Z2" and rep["body"]["stat"]["pzxid"] == "Z2"
    assert rep["body"]["stat"]["mzxid"] == "Z1" and rep["body"]["stat"]["ctime"] == "<time>"
    assert rep["body"]["stat"]["mtime"] == 0 and rep["body"]["stat"]["ephemeralOwner"] == "S1"
    assert rep["body"]["children"] == ["a", "b"] and rep["body"]["passwd"] == "<16 bytes>"


def test_jute_roundtrip_shapes():
    import zkd_jute as jute

    body = jute.enc_body("create", {"path": "/a", "data": None, "acl": [[31, "world", "anyone"]], "flags": 3})
    assert body == (b"\x00\x00\x00\x02/a" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x1f"
                    + b"\x00\x00\x00\x05world" + b"\x00\x00\x00\x06anyone" + b"\x00\x00\x00\x03")
    assert len(jute.enc_connect(0, 0, 30000, 0, b"\0" * 16)) == 45
    multi = jute.enc_body("multi", {"ops": [{"kind": "check", "path": "/a", "version": -1}]})
    assert multi.endswith(b"\xff\xff\xff\xff\x01\xff\xff\xff\xff")
