"""The agent half against IMDS on loopback."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.errors import Unavailable
from pyspire.plugin.facades import AgentNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.azure_imds.tests.fakes import TENANT_DOMAIN, AzureFake
from tests.support.free_port import free_port

NONCE = "abcdefghijABCDEFGHIJ0123456789xy"


def agent_attestor(tmp_path: Path, **plugin_data: Any) -> AgentNodeAttestor:
    handle = load_plugin("agent", "NodeAttestor", "azure_imds", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, AgentNodeAttestor)
    return handle


def test_answers_the_nonce_with_the_attested_document_and_the_tenant_domain(tmp_path: Path, azure: AzureFake) -> None:
    agent = agent_attestor(tmp_path, tenant_domain=TENANT_DOMAIN, imds_host=azure.imds_host)
    assert agent.payload() == b"non_empty_payload"
    answer = json.loads(agent.answer_challenge(NONCE.encode()))
    assert answer["metadata"] == {"agentDomain": TENANT_DOMAIN, "vmssName": None}
    assert answer["document"]["encoding"] == "pkcs7"
    signed = cms.ContentInfo.load(base64.b64decode(answer["document"]["signature"]))["content"]
    assert json.loads(signed["encap_content_info"]["content"].native)["nonce"] == NONCE


def test_a_scale_set_instance_names_its_scale_set(tmp_path: Path, azure: AzureFake) -> None:
    azure.vm.vmss_name = "myvmss"
    agent = agent_attestor(tmp_path, tenant_domain=TENANT_DOMAIN, imds_host=azure.imds_host)
    agent.payload()
    assert json.loads(agent.answer_challenge(NONCE.encode()))["metadata"]["vmssName"] == "myvmss"


def test_an_unreachable_imds_is_unavailable(tmp_path: Path) -> None:
    agent = agent_attestor(tmp_path, tenant_domain=TENANT_DOMAIN, imds_host=f"127.0.0.1:{free_port()}")
    agent.payload()
    with pytest.raises(Unavailable, match=r"IMDS at 127\.0\.0\.1:\d+ is unreachable"):
        agent.answer_challenge(NONCE.encode())


@pytest.mark.parametrize(
    ("plugin_data", "refusal"),
    [
        ({}, 'key "tenant_domain"'),
        ({"tenant_domain": TENANT_DOMAIN, "imds_host": "http://169.254.169.254/"}, 'key "imds_host"'),
    ],
)
def test_bad_config_is_refused_by_name(tmp_path: Path, plugin_data: dict[str, Any], refusal: str) -> None:
    with pytest.raises(CatalogError, match=refusal):
        agent_attestor(tmp_path, **plugin_data)
