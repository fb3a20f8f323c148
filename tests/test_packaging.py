"""What every distribution declares, and what both binaries say about themselves."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.support.daemons import console_script

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = [ROOT / "pyproject.toml", *sorted(ROOT.glob("plugins/*/pyproject.toml"))]


@pytest.mark.parametrize("pyproject", DISTRIBUTIONS, ids=lambda path: path.parent.name)
def test_classifiers_name_the_python_running_the_tests(pyproject: Path) -> None:
    """CI runs this suite: the interpreter it runs on must be one the distribution claims."""
    project = tomllib.loads(pyproject.read_text())["project"]
    running = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    assert running in project["classifiers"]
    assert "Programming Language :: Python :: 3 :: Only" in project["classifiers"]
    minimum = project["requires-python"].removeprefix(">=")
    claimed = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if c.count(".") == 1 and "Python ::" in c]
    assert all(tuple(map(int, v.split("."))) >= tuple(map(int, minimum.split("."))) for v in claimed)


@pytest.mark.parametrize("command", ["pyspire-server", "pyspire-agent"])
@pytest.mark.parametrize("flag", ["--version", "-version", "-v"])
def test_binaries_print_their_version_as_spire_does(command: str, flag: str) -> None:
    """SPIRE's binaries print the bare version on stderr and exit 0; so do pyspire's."""
    result = subprocess.run([console_script(command), flag], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == version("pyspire")
    assert result.stdout == ""


def test_version_flag_after_a_command_is_that_command_s_error() -> None:
    """As in SPIRE, the flag is read before the command only: ``run --version`` is a usage error."""
    result = subprocess.run(
        [console_script("pyspire-server"), "run", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert version("pyspire") not in result.stderr.splitlines()
