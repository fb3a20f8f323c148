"""What every distribution declares, and what both binaries say about themselves."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.support.daemons import console_script

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = [
    ROOT / "pyproject.toml",
    ROOT / "core" / "pyproject.toml",
    *sorted(ROOT.glob("plugins/*/pyproject.toml")),
]


@pytest.mark.parametrize("pyproject", DISTRIBUTIONS, ids=lambda path: path.parent.name)
def test_each_distribution_carries_the_licence_it_declares(pyproject: Path) -> None:
    """An operator installs the server, an integrator one plugin, a workload only the library: each wheel stands alone."""
    assert tomllib.loads(pyproject.read_text())["project"]["license"] == "Apache-2.0"
    assert (pyproject.parent / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()


def test_every_plugin_folder_is_a_distribution() -> None:
    folders = {p for p in (ROOT / "plugins").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert {folder / "pyproject.toml" for folder in folders} <= set(DISTRIBUTIONS)


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


def test_the_dockerfile_builds_from_what_the_repository_has() -> None:
    """No container runtime here: check what the build steps name exists and means what it says."""
    text = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"COPY {name}: missing"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = re.search(r'"\.\[([\w,]+)\]"', text)
    assert extras is not None
    assert set(extras.group(1).split(",")) <= set(project["optional-dependencies"])
    assert "plugins/*/" in text  # every plugin distribution
    for command in re.findall(r'"(pyspire-(?:server|agent))"', text):
        assert command in project["scripts"]
    python = re.findall(r"^FROM python:(\d+\.\d+)", text, re.M)
    assert python
    assert all(f"Programming Language :: Python :: {v}" in project["classifiers"] for v in python)
    assert "--uid 999" in text  # the uid contrib/k8s/server.yaml runs as
