"""``validate`` on SPIRE's own config corpus: pyspire's verdict beside spire-server's and spire-agent's.

The corpus is every server and agent config of the pinned SPIRE's ``conf/`` and
``test/integration/`` (read where Go's module cache keeps them). Those configs are written for
SPIRE's containers: the files they name (``/opt/spire/conf/agent/bootstrap.crt``, ``c:/spire/...``)
are placed under a scratch root, the paths in the config pointed there, and the files a plugin
reads given real content (a CA certificate and its key), so that what is compared is the
configuration language and the keys, not this machine's directory layout.

Where the verdicts differ, pyspire must have refused for a reason its docs give: a key the
config reference lists as refused, or a section of docs/compatibility.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspire.agent import cli as agent_cli
from pyspire.server import cli as server_cli

from tests.support import peers
from tests.support.differential import documented_sections
from tests.support.pki import Issued, make_ca, write_pem

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "config.md"

_PATH_VALUE = re.compile(r'"((?:/|\./|[a-zA-Z]:/)[^"]*)"')
"""A quoted absolute (Unix or Windows) or ./-relative path in a config."""

_NOT_FILES = frozenset({"/ready", "/live"})
"""Path-like values that are URL paths (the health checks'), not files."""

_DOCUMENTED_REFUSALS = {
    re.compile(r"the (?:agent|server) needs exactly 1 \w+ plugin"): "`validate` checks what `run` checks",
    re.compile(r'key "plugin_cmd": external plugin binaries are not supported'): "Plugins are Python packages",
    re.compile(r'no WorkloadAttestor plugin named "windows"'): "Linux only",
}
"""A refusal SPIRE's validate does not make, and the section of docs/compatibility.md giving its reason."""

_REFUSED_KEY = re.compile(r'key "([\w.]+)": ')


@pytest.fixture(scope="module")
def spire_source() -> Path:
    """SPIRE's source; a failed download fails the tests under CI=true and skips them elsewhere."""
    try:
        return peers.spire_source()
    except peers.PeerBuildError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(str(err))
        pytest.skip(str(err))


def _corpus() -> list[tuple[str, str]]:
    """(daemon, path in SPIRE's source) for every server and agent config SPIRE ships and tests with."""
    try:
        source = peers.spire_source()
    except peers.PeerBuildError:
        return []  # the corpus test below fails (CI) or skips with the reason
    found = []
    for config in sorted([*source.glob("conf/**/*.conf"), *source.glob("test/integration/**/*.conf")]):
        text = config.read_text()
        for daemon in ("server", "agent"):
            if re.search(rf"^{daemon}\s*{{", text, re.M):
                found.append((daemon, str(config.relative_to(source))))
    return found


CORPUS = _corpus()


@pytest.fixture(scope="module")
def authority() -> Issued:
    return make_ca()


def _placed(config: Path, source: Path, root: Path, authority: Issued) -> Path:
    """``config`` with the paths it names moved under ``root``, the files its plugins read present."""

    def place(match: re.Match[str]) -> str:
        value = match.group(1)
        if value in _NOT_FILES:
            return match.group(0)
        relative = re.sub(r"^(?:[a-zA-Z]:/|/|\./)", "", value)
        target = root / "fs" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shipped = source / relative
        if value.startswith("./") and shipped.is_file():
            shutil.copyfile(shipped, target)  # SPIRE's own dummy CA beside its configs
        elif not target.exists() and target.suffix in {".crt", ".pem", ".key"}:
            if "key" in target.name:
                write_pem(authority, root / "unused.crt", target)
            else:
                write_pem(authority, target, root / "unused.key")
        return f'"{target}"'

    placed = root / config.name
    placed.write_text(_PATH_VALUE.sub(place, config.read_text()))
    return placed


@dataclass(frozen=True)
class Verdict:
    valid: bool
    said: str


def _spire_verdict(spire_bin: Path, config: Path) -> Verdict:
    result = subprocess.run(
        [str(spire_bin), "validate", "-config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    return Verdict(result.returncode == 0, (result.stdout + result.stderr).strip())


def _pyspire_verdict(daemon: str, config: Path, capsys: pytest.CaptureFixture[str]) -> Verdict:
    """pyspire's validate, run in this process (the daemons' own entry points) to spare an interpreter start each."""
    capsys.readouterr()
    main = server_cli.main if daemon == "server" else agent_cli.main
    code = main(["validate", "-config", str(config)])
    out = capsys.readouterr()
    return Verdict(code == 0, (out.out + out.err).strip())


def _refused_in_reference(message: str) -> bool:
    match = _REFUSED_KEY.search(message)
    if match is None:
        return False
    row = re.compile(rf"^\| `{re.escape(match.group(1))}` \| refused \|", re.M)
    return bool(row.search(REFERENCE.read_text()))


def _documented_reason(message: str) -> str | None:
    """Where the docs give the reason for a refusal SPIRE's validate does not make, or None."""
    for pattern, section in _DOCUMENTED_REFUSALS.items():
        if pattern.search(message):
            assert section in documented_sections(), f"docs/compatibility.md has no section {section!r}"
            return section
    return "docs/config.md" if _refused_in_reference(message) else None


@pytest.mark.parametrize(("daemon", "config"), CORPUS, ids=[config for _, config in CORPUS])
def test_pyspire_validates_spires_config_as_spire_does_or_says_why(
    daemon: str,
    config: str,
    authority: Issued,
    spire_source: Path,
    tmp_path: Path,
    spire_server_bin: Path,
    spire_agent_bin: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    placed = _placed(spire_source / config, spire_source, tmp_path, authority)
    spire = _spire_verdict(spire_server_bin if daemon == "server" else spire_agent_bin, placed)
    pyspire = _pyspire_verdict(daemon, placed, capsys)
    if spire.valid == pyspire.valid:
        return
    assert spire.valid, f"pyspire accepts a config SPIRE refuses: {spire.said}"
    assert "Traceback" not in pyspire.said
    assert _documented_reason(pyspire.said), f"pyspire refuses for a reason its docs do not give: {pyspire.said}"


def test_the_corpus_is_spires_whole_set_of_configs(spire_source: Path) -> None:
    """An empty or shrunken corpus would pass the test above vacuously."""
    assert len(CORPUS) >= 80
    assert {daemon for daemon, _ in CORPUS} == {"server", "agent"}
