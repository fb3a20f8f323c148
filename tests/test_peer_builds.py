"""tests/support/peers.py: peers are built once per machine, and a failed build says where to look."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import peers


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "pyspire" / "peers"


def test_a_build_runs_once_and_is_found_in_the_cache(cache: Path) -> None:
    runs: list[Path] = []

    def build(staging: Path, log: Path) -> None:
        runs.append(staging)
        (staging / "tool").write_text("#!/bin/sh\n")

    first = peers.cached_build("tool", "v1", ["tool"], build)
    second = peers.cached_build("tool", "v1", ["tool"], build)
    assert first.directory == second.directory == cache / "tool-v1"
    assert len(runs) == 1
    assert first.build_seconds >= 0


def test_a_failed_build_names_the_step_and_keeps_its_log(cache: Path) -> None:
    def build(staging: Path, log: Path) -> None:
        peers.run_logged(["sh", "-c", "echo compiling; echo 'undefined: Thing' >&2; exit 3"], staging, log)

    with pytest.raises(peers.PeerBuildError, match=r"failed with exit code 3; see .*build\.log") as raised:
        peers.cached_build("broken", "v1", ["broken"], build)
    assert "undefined: Thing" in str(raised.value)
    assert "undefined: Thing" in (cache / "broken-v1.failed.log").read_text()
    assert not [p for p in cache.iterdir() if p.is_dir()]  # nothing half-built is left to be mistaken for a build


def test_a_build_that_leaves_out_an_output_fails(cache: Path) -> None:
    with pytest.raises(peers.PeerBuildError, match="produced no tool"):
        peers.cached_build("tool", "v2", ["tool"], lambda staging, log: log.write_text(""))


def test_a_missing_toolchain_is_named(cache: Path, tmp_path: Path) -> None:
    def build(staging: Path, log: Path) -> None:
        peers.run_logged(["no-such-compiler-here", "build"], staging, log)

    with pytest.raises(peers.PeerBuildError, match="no-such-compiler-here is not installed"):
        peers.cached_build("tool", "v3", ["tool"], build)


def test_the_go_peer_requires_the_pinned_go_spiffe() -> None:
    go_mod = (peers.PEER_SOURCES / "go" / "go.mod").read_text()
    assert re.search(rf"^require github.com/spiffe/go-spiffe/v2 {re.escape(peers.GO_SPIFFE_VERSION)}$", go_mod, re.M)
    result = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, "the interop tests build their Go peers with the machine's Go toolchain"


def test_the_java_peer_uses_the_pinned_java_spiffe() -> None:
    pom = (peers.PEER_SOURCES / "java" / "pom.xml").read_text()
    assert f"<java-spiffe.version>{peers.JAVA_SPIFFE_VERSION}</java-spiffe.version>" in pom
