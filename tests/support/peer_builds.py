"""The tools the suite builds from package registries, as its tests take them (a pytest plugin).

A test that runs one carries ``@pytest.mark.needs_build(name, ...)`` with names of
``tests.support.prebuild.BUILDS``; ``require(name)`` gives the build's result, and its failure as
a test failure under CI=true or a skip (naming the build log) elsewhere. A cold SPIRE build takes
minutes, longer than a test's timeout, so no test waits for a build inside its timeout:

- With a prebuild running in the background (``.ci/test`` and ``.ci/run`` start one and set
  ``PYSPIRE_PREBUILD_STARTED``), half the tests that need nothing built run first while the
  builds go on beside them (``scheduled``), and a test whose build is still running waits for it
  before its timeout starts (an outer ``pytest_runtest_protocol`` wrapper).
- Without one (``pytest -k ...`` on its own), every build a collected test needs runs at
  collection, before any test starts.

Each process takes a build's outcome once; later tests reuse it.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from tests.support import file_order, peers, prebuild

HEAD_START = 0.5
"""The share of the seconds of the tests that need nothing built (tests/file_seconds.txt) that runs
before the tests needing SPIRE and its peers. On a fresh machine SPIRE takes six to eight minutes to
build beside the tests (about half of those tests' run); the tests needing it then run beside the
other half, whose CPU work fills the time they spend waiting on daemons."""

LATE_BUILDS = frozenset({"fake-gcs-server", "otelcol"})
"""Built after SPIRE (tests/support/prebuild.py): the few tests needing them run last."""

_outcomes: dict[str, peers.BuiltPeer | peers.PeerBuildError] = {}


def outcome(name: str) -> peers.BuiltPeer | peers.PeerBuildError:
    """The build ``name``'s result, or the PeerBuildError it ended in (built or waited for once)."""
    if name not in _outcomes:
        try:
            _outcomes[name] = prebuild.BUILDS[name]()
        except peers.PeerBuildError as err:
            _outcomes[name] = err
    return _outcomes[name]


def require(name: str) -> peers.BuiltPeer:
    """The build ``name``'s result; its failure fails the test under CI=true and skips it elsewhere."""
    result = outcome(name)
    if isinstance(result, peers.PeerBuildError):
        message = f"cannot build {name}: {result}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return result


def _needed(item: pytest.Item) -> list[str]:
    return [name for marker in item.iter_markers("needs_build") for name in marker.args]


def _prebuild_running() -> bool:
    return bool(os.environ.get("PYSPIRE_PREBUILD_STARTED"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_build(*names): runs tools of tests/support/prebuild.py's BUILDS")


def scheduled(items: list[pytest.Item], seconds: dict[str, float]) -> list[pytest.Item]:
    """``items`` (longest file first) with the tests needing builds moved to where the builds are ready."""
    free = [item for item in items if not _needed(item)]
    late = [item for item in items if LATE_BUILDS.intersection(_needed(item))]
    early = [item for item in items if _needed(item) and not LATE_BUILDS.intersection(_needed(item))]
    files = list(dict.fromkeys(_file(item) for item in free))
    budget = HEAD_START * sum(seconds.get(name, 0.0) for name in files)
    head: set[str] = set()
    spent = 0.0
    for name in files:
        if spent >= budget:
            break
        head.add(name)
        spent += seconds.get(name, 0.0)
    return (
        [item for item in free if _file(item) in head]
        + early
        + [item for item in free if _file(item) not in head]
        + late
    )


def _file(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(trylast=True)  # after the markers are added and the files put longest first
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unknown = {name for item in items for name in _needed(item)} - prebuild.BUILDS.keys()
    if unknown:
        raise pytest.UsageError(f"needs_build names no build of tests/support/prebuild.py: {sorted(unknown)}")
    items[:] = scheduled(items, file_order.read_seconds())


def pytest_collection_finish(session: pytest.Session) -> None:
    if _prebuild_running():
        return
    for name in dict.fromkeys(name for item in session.items for name in _needed(item)):
        if name in prebuild.BUILDS:  # an unknown one already stopped the session (above)
            outcome(name)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside pytest-timeout's wrapper: the wait is not timed
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    for name in _needed(item):
        outcome(name)
    return (yield)
