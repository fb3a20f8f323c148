"""Interop tests: pyspire beside real SPIRE, go-spiffe, java-spiffe and py-spiffe processes.

Every test here is marked ``interop`` (select them with ``-m interop``, leave them out with
``-m "not interop"``). The peers are built once per machine (tests/support/peers.py) when
collection finds an interop test to run: before any test starts, so a cold build is not
counted against a test's timeout. A build that fails fails these tests under CI=true and
skips them elsewhere, naming the build log. The terminal summary (tests/conftest.py, which the
xdist controller loads where it never loads this one) reports the interop tests' time apart
from the rest, and what building the peers cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.peer_workloads import PeerWorkload, built_peer, py_peer

HERE = Path(__file__).resolve().parent
BUILDS: dict[str, Callable[[], peers.BuiltPeer]] = {
    "spire": peers.spire,
    "go-peer": peers.go_peer,
    "java-peer": peers.java_peer,
}
_built: dict[str, peers.BuiltPeer | peers.PeerBuildError] = {}


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.interop)


def _build(name: str) -> peers.BuiltPeer | peers.PeerBuildError:
    if name not in _built:
        try:
            _built[name] = BUILDS[name]()
        except peers.PeerBuildError as err:
            _built[name] = err
    return _built[name]


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.get_closest_marker("interop") for item in session.items):
        for name in BUILDS:
            _build(name)


def built(name: str) -> peers.BuiltPeer:
    """A peer built at collection; its build failure as a test failure (CI) or skip (elsewhere)."""
    result = _build(name)
    if isinstance(result, peers.PeerBuildError):
        message = f"cannot build {name}: {result}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return result


@pytest.fixture(scope="session")
def spire_server_bin() -> Path:
    return built("spire").path("spire-server")


@pytest.fixture(scope="session")
def spire_agent_bin() -> Path:
    return built("spire").path("spire-agent")


@pytest.fixture(scope="session")
def workload_clients() -> dict[str, PeerWorkload]:
    """go-spiffe, java-spiffe and py-spiffe clients, by name."""
    return {
        "go-spiffe": built_peer("go-spiffe", built("go-peer").path("go-peer")),
        "java-spiffe": built_peer("java-spiffe", built("java-peer").path("java-peer")),
        "py-spiffe": py_peer(),
    }
