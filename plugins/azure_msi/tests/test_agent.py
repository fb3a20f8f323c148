"""The agent half against IMDS on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Unavailable
from pyspire.plugin.facades import AgentNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.azure_msi.tests.fakes import RESOURCE, MsiFake
from tests.support.free_port import free_port


def agent_attestor(tmp_path: Path, **plugin_data: Any) -> AgentNodeAttestor:
    handle = load_plugin("agent", "NodeAttestor", "azure_msi", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, AgentNodeAttestor)
    return handle


def claims_of(payload: bytes) -> dict[str, Any]:
    return jwt.decode(json.loads(payload)["token"], options={"verify_signature": False, "verify_aud": False})


def test_sends_the_identity_token_for_the_resource_manager_by_default(tmp_path: Path, azure: MsiFake) -> None:
    assert claims_of(agent_attestor(tmp_path, imds_host=azure.imds_host).payload())["aud"] == RESOURCE


def test_asks_for_the_configured_resource(tmp_path: Path, azure: MsiFake) -> None:
    agent = agent_attestor(tmp_path, imds_host=azure.imds_host, resource_id="http://example.org/app/")
    assert claims_of(agent.payload())["aud"] == "http://example.org/app/"


def test_an_unreachable_imds_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match=r"IMDS at 127\.0\.0\.1:\d+ is unreachable"):
        agent_attestor(tmp_path, imds_host=f"127.0.0.1:{free_port()}").payload()


def test_bad_config_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match='key "resource_id"'):
        agent_attestor(tmp_path, resource_id="")
    with pytest.raises(CatalogError, match='key "imds_host"'):
        agent_attestor(tmp_path, imds_host="http://169.254.169.254/")
