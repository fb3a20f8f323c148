"""The README documents every key both halves take."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pyspire_http_challenge.agent import AgentHttpChallengeConfig
from pyspire_http_challenge.server import ServerHttpChallengeConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize(
    ("config", "section"),
    [(ServerHttpChallengeConfig, "## Server configuration"), (AgentHttpChallengeConfig, "## Agent configuration")],
)
def test_the_readme_documents_every_key_in_its_halfs_table(config: type, section: str) -> None:
    table = README.split(section, 1)[1].split("\n## ", 1)[0]
    for field in dataclasses.fields(config):
        assert f"| `{field.name}` |" in table, f"{field.name} is not in the README's {section!r} table"
