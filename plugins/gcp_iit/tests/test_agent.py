"""The agent plugin against the metadata server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Unavailable
from pyspire.plugin.facades import AgentNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.gcp_iit.tests.fakes import AUDIENCE, GoogleFake
from tests.support.free_port import free_port


def agent_attestor(tmp_path: Path, **plugin_data: Any) -> AgentNodeAttestor:
    handle = load_plugin("agent", "NodeAttestor", "gcp_iit", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, AgentNodeAttestor)
    return handle


def test_fetches_a_full_token_for_the_attestor_audience(tmp_path: Path, google: GoogleFake) -> None:
    token = agent_attestor(tmp_path, identity_token_host=google.host).payload()
    claims = jwt.decode(token, options={"verify_signature": False}, audience=AUDIENCE)
    assert claims["google"]["compute_engine"]["instance_id"] == google.instance.instance_id
    assert "/computeMetadata/v1/instance/service-accounts/default/identity" in google.requests


def test_service_account_and_audience_are_configurable(tmp_path: Path, google: GoogleFake) -> None:
    handle = agent_attestor(
        tmp_path, identity_token_host=google.host, service_account="node@p.iam.gserviceaccount.com", audience="mine"
    )
    claims = jwt.decode(handle.payload(), options={"verify_signature": False}, audience="mine")
    assert claims["aud"] == "mine"
    assert "/computeMetadata/v1/instance/service-accounts/node@p.iam.gserviceaccount.com/identity" in google.requests


def test_unreachable_metadata_server_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="unreachable"):
        agent_attestor(tmp_path, identity_token_host=f"127.0.0.1:{free_port()}").payload()


def test_host_must_be_a_host(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="identity_token_host"):
        agent_attestor(tmp_path, identity_token_host="http://metadata/")
