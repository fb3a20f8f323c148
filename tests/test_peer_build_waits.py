"""tests/support/peer_builds.py: no test waits for a build inside its timeout, and builds come last.

Each case runs an inner pytest session with the plugin and a build that only sleeps, so a cold
build's minutes become a second or two against a one-second test timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import peer_builds

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
import time
from pathlib import Path

from tests.support import peers, prebuild

BUILT = Path(__file__).parent / "built.log"


def slow():
    time.sleep(2)
    with BUILT.open("a") as log:
        log.write("slow\\n")
    return peers.BuiltPeer(Path(__file__).parent)


def broken():
    raise peers.PeerBuildError("the compiler said no; see build.log")


prebuild.BUILDS["slow"] = slow
prebuild.BUILDS["broken"] = broken
"""

TESTS = """
import pytest

from tests.support import peer_builds


@pytest.mark.needs_build("slow")
@pytest.mark.timeout(1)
def test_needs_slow_first():
    assert peer_builds.require("slow").directory.exists()


def test_needs_nothing():
    pass


@pytest.mark.needs_build("slow")
@pytest.mark.timeout(1)
def test_needs_slow_again():
    peer_builds.require("slow")


@pytest.mark.needs_build("broken")
def test_needs_broken():
    peer_builds.require("broken")
"""


@pytest.fixture
def session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("PYSPIRE_PREBUILD_STARTED", raising=False)
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_builds=TESTS)
    return pytester


def _run(session: pytest.Pytester, *args: str) -> pytest.RunResult:
    return session.runpytest_subprocess("-p", "tests.support.peer_builds", "-p", "no:cacheprovider", "-v", *args)


@pytest.mark.parametrize("prebuild", [True, False], ids=["prebuild-running", "no-prebuild"])
def test_a_build_longer_than_the_timeout_is_waited_for_outside_it(
    session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, prebuild: bool
) -> None:
    if prebuild:
        monkeypatch.setenv("PYSPIRE_PREBUILD_STARTED", "1")
    result = _run(session)
    result.assert_outcomes(passed=3, skipped=1)
    # One build per process, however many tests need it.
    assert (session.path / "built.log").read_text() == "slow\n"


def test_tests_needing_builds_run_where_their_builds_are_ready(pytester: pytest.Pytester) -> None:
    """Half the listed seconds of the tests needing nothing, then those needing SPIRE, then the
    other half, then those needing the tools built last."""
    for name in ("a", "b", "c", "d"):
        pytester.makepyfile(**{f"test_{name}": "def test_it():\n    pass\n"})
    pytester.makepyfile(test_e='import pytest\n\n@pytest.mark.needs_build("spire")\ndef test_it():\n    pass\n')
    pytester.makepyfile(test_f='import pytest\n\n@pytest.mark.needs_build("otelcol")\ndef test_it():\n    pass\n')
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function")
    by_file = {item.nodeid.split("::")[0]: item for item in items}
    listed = [by_file[f"test_{name}.py"] for name in "feabcd"]
    seconds = {f"test_{name}.py": 10.0 for name in "abcd"}
    ordered = peer_builds.scheduled(listed, seconds)
    assert [item.nodeid.split("::")[0] for item in ordered] == [
        "test_a.py", "test_b.py", "test_e.py", "test_c.py", "test_d.py", "test_f.py",
    ]  # fmt: skip


def test_a_failed_build_skips_its_tests_naming_the_log_and_fails_them_under_ci(
    session: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    skipped = _run(session, "-rs", "-k", "broken")
    skipped.assert_outcomes(skipped=1, deselected=3)
    skipped.stdout.fnmatch_lines(["*cannot build broken: the compiler said no; see build.log*"])
    monkeypatch.setenv("CI", "true")
    failed = _run(session, "-k", "broken")
    failed.assert_outcomes(failed=1, deselected=3)


def test_a_mark_naming_no_build_is_a_usage_error(session: pytest.Pytester) -> None:
    session.makepyfile(test_typo='import pytest\n\n@pytest.mark.needs_build("spier")\ndef test_x():\n    pass\n')
    result = _run(session)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "needs_build names no build of tests/support/prebuild.py: ['spier']" in result.stderr.str()
