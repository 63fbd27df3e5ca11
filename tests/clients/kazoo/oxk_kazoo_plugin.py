"""pytest plugin: run kazoo's own test suite against ONE already-running server.

kazoo's harness (kazoo/testing/harness.py) normally builds a 3-node ZooKeeper cluster from
ZOOKEEPER_PATH. This plugin replaces `harness.get_global_cluster()` with a one-server "cluster" that
points at OXK_TEST_SERVER=host:port, so kazoo's tests talk to whatever server we point them at.

    OXK_TEST_SERVER=127.0.0.1:PORT python -m pytest -p oxk_kazoo_plugin --pyargs kazoo.tests \
        [--oxk-expected tests/clients/kazoo_expected_pass.txt] [--oxk-record out.txt]

* Tests that need several servers, TLS, SASL, a read-only server, reconfig or the build CI are
  skipped, each with its reason (SKIPS below).
* Tests that stop and restart "the server" (server.stop()/server.run()) are run through a TCP proxy
  in front of the real server: stop() = drop every proxied connection and refuse new ones,
  run() = accept again. The server keeps running, as a restarted ZooKeeper would keep its sessions.
* --oxk-expected FILE: the run fails (exit status 1) if any test id listed in FILE did not pass.
* --oxk-record FILE: write the ids of the tests that passed to FILE.
"""
import fnmatch
import logging
import os
import socket
import sys
import types

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "climt"))
from cutproxy import CutProxy  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Tests we cannot run against one plain server, with the reason. Patterns are fnmatch'ed against the
# pytest node id relative to the kazoo/tests folder ("test_client.py::TestClient::test_x").
SKIPS = {
    "test_client.py::TestSSLClient::*":
        "needs a TLS client port (secureClientPort) with the harness's generated certificates",
    "test_client.py::TestClient::test_update_host_list":
        "needs a 3-server ensemble (grows the host list, then stops server 0)",
    "test_*_handler.py::Test*Client::test_update_host_list":
        "needs a 3-server ensemble (grows the host list, then stops server 0)",
    "test_client.py::TestReconfig::*":
        "dynamic reconfiguration needs an ensemble with reconfigEnabled and the harness's super digest",
    "test_connection.py::TestReadOnlyMode::*":
        "read-only mode needs a 3-server ensemble with 2 servers stopped (readonlymode.enabled)",
    "test_sasl.py::*":
        "SASL needs a server configured with a JAAS file (DIGEST-MD5) or a Kerberos KDC (GSSAPI)",
    "test_build.py::*":
        "checks ZOOKEEPER_VERSION of kazoo's own CI build matrix, not server behaviour",
}

# Tests that call server.stop()/server.run(): they talk to the server through the cuttable proxy.
PROXIED = [
    "*::test_request_queuing_session_recovered",
    "*::test_request_queuing_session_expired",
]


def _match(nodeid, patterns):
    short = nodeid.split("kazoo/tests/", 1)[-1]
    for p in patterns:
        if fnmatch.fnmatchcase(short, p):
            return p
    return None


# ------------------------------------------------------------------------------------------------
# The one-server "cluster" handed to kazoo's harness.

class ExternalServer:
    def __init__(self, hostport):
        host, port = hostport.rsplit(":", 1)
        self.host = host
        self.direct = hostport
        self.server_info = types.SimpleNamespace(server_id=1, client_port=int(port))
        self.proxy = None
        self.use_proxy = False
        self._running = True

    # --- what the harness and the tests use
    @property
    def address(self):
        if self.use_proxy:
            if self.proxy is None:
                self.proxy = CutProxy(self.direct)
            return self.proxy.hostport
        return self.direct

    @property
    def secure_address(self):
        pytest.skip("no TLS port on the external test server")

    @property
    def client_port(self):
        return int(self.address.rsplit(":", 1)[1])

    @property
    def running(self):
        return True

    def run(self):
        if self.proxy is not None:
            self.proxy.refuse(False)
        self._running = True

    def stop(self):
        if not self.use_proxy or self.proxy is None:
            raise RuntimeError("this test stops the server but is not in the plugin's PROXIED list; "
                               "add it there (or to SKIPS with a reason)")
        self.proxy.refuse(True)
        self.proxy.cut()
        self._running = False

    def reset(self):
        raise RuntimeError("the external server cannot be reset")

    def destroy(self):
        pass

    def get_logs(self, num_lines=100):
        return []


class ExternalCluster:
    def __init__(self, hostport):
        self._servers = [ExternalServer(hostport)]

    def __getitem__(self, k):
        return self._servers[k]

    def __iter__(self):
        return iter(self._servers)

    def __len__(self):
        return len(self._servers)

    def start(self):
        pass

    def stop(self):
        pass

    def terminate(self):
        pass

    def reset(self):
        raise RuntimeError("the external server cannot be reset")

    def get_logs(self):
        return []

    def get_ssl_client_configuration(self):
        pytest.skip("no TLS on the external test server")


_CLUSTER = None


def _install():
    global _CLUSTER
    hp = os.environ.get("OXK_TEST_SERVER")
    if not hp:
        raise pytest.UsageError("oxk_kazoo_plugin: set OXK_TEST_SERVER=host:port")
    host, port = hp.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise pytest.UsageError(f"oxk_kazoo_plugin: cannot connect to OXK_TEST_SERVER={hp}: {e}")
    # kazoo.testing.common (imported by the harness) needs pyOpenSSL and pyjks only to build the
    # harness's own cluster. Provide a stand-in when they are not installed.
    try:
        import kazoo.testing.common  # noqa: F401
    except ImportError:
        stub = types.ModuleType("kazoo.testing.common")
        stub.ZookeeperCluster = ExternalCluster
        stub.ManagedZooKeeper = ExternalServer
        sys.modules["kazoo.testing.common"] = stub
    import kazoo.testing.harness as harness
    _CLUSTER = ExternalCluster(hp)
    harness.get_global_cluster = lambda: _CLUSTER
    harness.CLUSTER = _CLUSTER


# ------------------------------------------------------------------------------------------------
# pytest hooks

def pytest_addoption(parser):
    g = parser.getgroup("oxk")
    g.addoption("--oxk-expected", default=None, help="file of test ids that must pass")
    g.addoption("--oxk-record", default=None, help="write the ids of passing tests to this file")


def pytest_configure(config):
    _install()
    config._oxk = {"passed": set(), "failed": set(), "skipped": set(), "seen": set(), "server_tests": set()}


def short_id(nodeid):
    return "kazoo/tests/" + nodeid.split("kazoo/tests/", 1)[-1]


def _uses_server(item):
    from kazoo.testing.harness import KazooTestHarness
    cls = getattr(item, "cls", None)
    return bool(cls and issubclass(cls, KazooTestHarness))


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        if _uses_server(item):
            config._oxk["server_tests"].add(short_id(item.nodeid))
        pat = _match(item.nodeid, SKIPS)
        if pat:
            item.add_marker(pytest.mark.skip(reason="oxk: " + SKIPS[pat]))


def pytest_runtest_setup(item):
    if _match(item.nodeid, PROXIED):
        _CLUSTER[0].use_proxy = True


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    srv = _CLUSTER[0]
    if srv.use_proxy:
        srv.use_proxy = False
        if srv.proxy is not None:
            srv.proxy.close()
            srv.proxy = None


_STATE = None


def pytest_runtest_logreport(report):
    st = _STATE
    if st is None:
        return
    nid = short_id(report.nodeid)
    st["seen"].add(nid)
    if report.failed:
        st["failed"].add(nid)
    elif report.skipped:
        st["skipped"].add(nid)
    elif report.when == "call" and report.passed:
        st["passed"].add(nid)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    global _STATE
    _STATE = session.config._oxk


def pytest_sessionfinish(session, exitstatus):
    st = session.config._oxk
    passed = st["passed"] - st["failed"]
    rec = session.config.getoption("--oxk-record")
    if rec:
        with open(rec, "w") as f:
            f.write("# kazoo tests (kazoo.tests of kazoo %s) that passed against the server at recording time.\n" % _kazoo_version())
            f.write("# The runner fails if any of these does not pass. One pytest node id per line.\n")
            for t in sorted(passed):
                f.write(t + "\n")
    exp = session.config.getoption("--oxk-expected")
    if exp:
        with open(exp) as f:
            expected = {l.strip() for l in f if l.strip() and not l.startswith("#")}
        missing = sorted(expected - passed)
        st["missing"] = missing
        if missing:
            session.exitstatus = 1
        else:
            # tests outside the expected list may fail (they fail against ZooKeeper too)
            session.exitstatus = 0 if session.exitstatus in (0, 1) else session.exitstatus


def _kazoo_version():
    try:
        import kazoo.version
        return kazoo.version.__version__
    except Exception:  # noqa: BLE001
        return "?"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    st = config._oxk
    tr = terminalreporter
    passed = st["passed"] - st["failed"]
    skipped = st["skipped"] - passed - st["failed"]
    tr.write_sep("=", "oxk kazoo summary")
    tr.write_line(f"kazoo {_kazoo_version()} against {os.environ.get('OXK_TEST_SERVER')}: passed {len(passed)} "
                  f"({len(passed & st['server_tests'])} of them talk to the server), failed {len(st['failed'])}, skipped {len(skipped)}")
    if st["failed"]:
        tr.write_line("failed:")
        for t in sorted(st["failed"]):
            tr.write_line("  " + t)
    if "missing" in st:
        if st["missing"]:
            tr.write_line(f"{len(st['missing'])} test(s) from the expected-pass list did NOT pass:")
            for t in st["missing"]:
                tr.write_line("  " + t)
        else:
            tr.write_line("every test in the expected-pass list passed")


def pytest_unconfigure(config):
    # Clients that some kazoo tests never stop log "Connection dropped" when the interpreter exits.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
