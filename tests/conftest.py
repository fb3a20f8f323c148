"""Fixtures shared by the core test suite.

Everything the suite reads lives in the repository: the SPIFFE conformance vectors in
``tests/spiffe/vectors`` and SPIRE's own config files in ``tests/config/spire-conf`` (each folder
says where its files come from).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import file_order, peers

REPO = Path(__file__).resolve().parent.parent
_SESSION_STARTED = time.time()
_interop_seconds: list[float] = []


@pytest.fixture(scope="session")
def spire_conf_dir() -> Path:
    """SPIRE's ``server.conf``, ``agent.conf`` and their ``*_full.conf`` references."""
    return REPO / "tests" / "config" / "spire-conf"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest files first, so no worker is left with a long file at the end (see file_order)."""
    items[:] = file_order.longest_first(items, file_order.read_seconds())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid.startswith("tests/interop/"):
        _interop_seconds.append(report.duration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The interop tests' time apart from the rest, and what building their peers cost.

    Here rather than in tests/interop/conftest.py: under xdist only the controller writes the
    summary, and it loads the conftest files of the paths it was given, not of their subfolders.
    """
    if not _interop_seconds:
        return
    terminalreporter.section("interop")
    terminalreporter.write_line(f"interop tests: {sum(_interop_seconds):.1f} s (setup, call and teardown added up)")
    for recorded in sorted(peers.cache_root().glob("*/build-seconds")):
        # The prebuild (tests/support/prebuild.py) may finish a build before the tests start.
        state = "built during the tests" if recorded.stat().st_mtime >= _SESSION_STARTED else "ready before the tests"
        terminalreporter.write_line(
            f"peer {recorded.parent.name}: {state}; its build took {float(recorded.read_text()):.0f} s"
        )
