"""The README's plugin example works as written: loaded the documented development way, it
yields the selectors the README promises and passes the WorkloadAttestor contract."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.config import load_agent_config_text
from pyspire.plugin.catalog import load_agent_catalog
from pyspire.plugin.discovery import DEV_PLUGINS_ENV, PluginSource
from pyspire.plugin.testing import WorkloadAttestorContract, make_core_config

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    (example,) = [block for block in blocks if block.startswith("# acme_attestor.py")]
    return example


def readme_declaration() -> str:
    (declaration,) = re.findall(r'`(WorkloadAttestor "acme" \{.*?\})`', README.read_text())
    return declaration


def readme_class(tmp_path: Path) -> type:
    """The README's class, imported from a file the way development plugins are."""
    (tmp_path / "acme_attestor.py").write_text(readme_example())
    return PluginSource("agent", "acme", f"{tmp_path / 'acme_attestor.py'}:AcmeAttestor", DEV_PLUGINS_ENV, "").load()


def test_the_documented_declaration_and_dev_path_give_the_documented_selector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_attestor.py").write_text(readme_example())
    monkeypatch.setenv(DEV_PLUGINS_ENV, f"agent:acme={tmp_path / 'acme_attestor.py'}:AcmeAttestor")
    declaration = readme_declaration().replace('"1000"', f'"{os.getuid()}"')
    config = load_agent_config_text(
        'agent {\n trust_domain = "example.org"\n server_address = "127.0.0.1"\n}\n'
        f'plugins {{\n NodeAttestor "join_token" {{}}\n KeyManager "memory" {{}}\n {declaration}\n}}\n'
    )
    catalog = load_agent_catalog(config.plugins, make_core_config(tmp_path))
    (attestor,) = catalog.workload_attestors
    assert [str(s) for s in attestor.attest(os.getpid())] == ["acme:team:payments"]
    catalog.close()


class TestReadmeExampleContract(WorkloadAttestorContract):
    plugin = "acme"

    @pytest.fixture(autouse=True)
    def _readme_class(self, tmp_path: Path) -> None:
        type(self).plugin_class = readme_class(tmp_path)

    @pytest.fixture
    def plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        return {"teams": {str(os.getuid()): "payments"}}


def test_the_readme_starter_commands_exist() -> None:
    helped = subprocess.run(
        [str(Path(sys.executable).parent / "pyspire-agent"), "plugins", "new", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "WorkloadAttestor" in helped.stdout
