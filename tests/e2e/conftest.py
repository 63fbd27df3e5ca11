"""Shared fixtures for the end-to-end tests.

`E2E_SERVERS` (comma list, default "oxkeeper") selects the server kinds; every test module gets a `kind` fixture
parametrised over them and starts its own server(s) once per module and kind. Tests marked
`@pytest.mark.deviation("...")` check a behaviour listed in DEVIATIONS.md and run against oxkeeper only.
"""

import os

import pytest

from .helpers import KINDS, Clients
from .wire import Conn


def pytest_configure(config):
    config.addinivalue_line("markers", "deviation(name): behaviour listed in DEVIATIONS.md; runs for oxkeeper only")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("E2E_FORCE_DEVIATIONS") == "1":  # run them against ZooKeeper too (they should fail there)
        return
    for item in items:
        mark = item.get_closest_marker("deviation")
        callspec = getattr(item, "callspec", None)
        if mark and callspec and callspec.params.get("kind") != "oxkeeper":
            item.add_marker(pytest.mark.skip(reason=f"DEVIATIONS.md: {mark.args[0] if mark.args else ''} "
                                                    "(oxkeeper only)"))


@pytest.fixture(scope="module", params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def clients():
    cs = Clients()
    yield cs
    cs.close()


@pytest.fixture
def conns():
    """Raw connections closed at the end of the test: conns(hostport) -> wire.Conn."""
    made = []

    def new(hostport, timeout=5.0):
        c = Conn(hostport, timeout=timeout)
        made.append(c)
        return c

    yield new
    for c in made:
        c.close()


