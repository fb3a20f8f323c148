"""Interop tests: pyspire beside real SPIRE, go-spiffe, java-spiffe and py-spiffe processes.

Every test here is marked ``interop`` (select them with ``-m interop``, leave them out with
``-m "not interop"``) and needs SPIRE and the go-spiffe and java-spiffe peers, built once per
machine (tests/support/peers.py) and never inside a test's timeout (tests/support/peer_builds.py).
A build that fails fails these tests under CI=true and skips them elsewhere, naming the build
log. The terminal summary (tests/conftest.py, which the xdist controller loads where it never
loads this one) reports the interop tests' time apart from the rest, and what building the
peers cost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.peer_builds import require
from tests.support.peer_workloads import PeerWorkload, built_peer, py_peer

HERE = Path(__file__).resolve().parent
_PEERS = ("spire", "go-peer", "java-peer")


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.interop)
            item.add_marker(pytest.mark.needs_build(*_PEERS))


@pytest.fixture(scope="session")
def spire_server_bin() -> Path:
    return require("spire").path("spire-server")


@pytest.fixture(scope="session")
def spire_agent_bin() -> Path:
    return require("spire").path("spire-agent")


@pytest.fixture(scope="session")
def workload_clients() -> dict[str, PeerWorkload]:
    """go-spiffe, java-spiffe and py-spiffe clients, by name."""
    return {
        "go-spiffe": built_peer("go-spiffe", require("go-peer").path("go-peer")),
        "java-spiffe": built_peer("java-spiffe", require("java-peer").path("java-peer")),
        "py-spiffe": py_peer(),
    }
