"""The generated references in docs/ are what the code says, and they cover every key SPIRE documents."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyspire.reference import documents

ROOT = Path(__file__).resolve().parent.parent
SPIRE_CONF = ROOT / "tests" / "config" / "spire-conf"


@pytest.mark.parametrize("name", sorted(documents()))
def test_the_committed_reference_is_current(name: str) -> None:
    committed = (ROOT / "docs" / name).read_text()
    assert committed == documents()[name], f"docs/{name} is stale: run python -m pyspire.reference docs"


def test_the_check_command_agrees(tmp_path: Path) -> None:
    (tmp_path / "cli.md").write_text("stale\n")
    stale = subprocess.run(
        [sys.executable, "-m", "pyspire.reference", "--check", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert stale.returncode == 1
    assert "cli.md" in stale.stderr
    current = subprocess.run(
        [sys.executable, "-m", "pyspire.reference", "--check", str(ROOT / "docs")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert current.returncode == 0, current.stderr


@pytest.mark.parametrize(("conf", "block"), [("server_full.conf", "server"), ("agent_full.conf", "agent")])
def test_every_key_spires_full_config_documents_is_in_the_config_reference(conf: str, block: str) -> None:
    text = (SPIRE_CONF / conf).read_text()
    start = text.index(f"{block} {{")
    end = min(text.index(marker, start) for marker in ("\nplugins {", "\n# plugins:") if marker in text)
    keys = {
        match.group(1)
        for line in text[start:end].splitlines()[1:]
        if (match := re.match(r'^\s*#?\s*#?\s*([a-z_]+)\s*(=|\{|"[^"]*"\s*\{)', line))
    }
    reference = documents()["config.md"]
    # Keys nested inside blocks refused as a whole (ACME, OPA) are covered by their block's row.
    nested = {"domain_name", "email", "directory_url", "tos_accepted", "local", "rego_path", "policy_data_path"}
    missing = sorted(key for key in keys - nested if not re.search(rf"`{block}\.([\w.\" <>]*\.)?{key}`", reference))
    assert len(keys) > 30
    assert missing == []


@pytest.mark.parametrize("key", ["Prometheus", "Statsd", "DogStatsd", "InMem", "M3", "MetricPrefix", "AllowedLabels"])
def test_every_telemetry_key_spire_has_is_in_the_config_reference(key: str) -> None:
    assert f"`telemetry.{key}" in documents()["config.md"]
