"""The agent plugin against an IMDS served on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.errors import Internal, Unavailable
from pyspire.plugin.facades import AgentNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.aws_iid.tests.fakes import ImdsServer, RegionSigner, identity_document
from tests.support.free_port import free_port


def agent_attestor(tmp_path: Path, **plugin_data: Any) -> AgentNodeAttestor:
    handle = load_plugin("agent", "NodeAttestor", "aws_iid", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, AgentNodeAttestor)
    return handle


@pytest.fixture
def serving(imds: ImdsServer, us_west_2: RegionSigner) -> ImdsServer:
    imds.document = identity_document("i-0123456789abcdef0")
    imds.rsa2048 = us_west_2.sign(imds.document)
    return imds


def test_imdsv2_session_token_is_used_for_every_read(tmp_path: Path, serving: ImdsServer) -> None:
    sent = json.loads(agent_attestor(tmp_path, ec2_metadata_endpoint=serving.endpoint).payload())
    assert sent == {"document": serving.document, "rsa2048": serving.rsa2048, "signature": serving.signature}
    assert serving.requests[0] == ("PUT", "/latest/api/token", False)
    assert all(with_token for method, _, with_token in serving.requests if method == "GET")


def test_endpoint_written_with_latest_as_in_spires_docs(tmp_path: Path, serving: ImdsServer) -> None:
    handle = agent_attestor(tmp_path, ec2_metadata_endpoint=serving.endpoint + "/latest/")
    assert json.loads(handle.payload())["document"] == serving.document


def test_falls_back_to_imdsv1_when_tokens_are_not_offered(tmp_path: Path, serving: ImdsServer) -> None:
    serving.mode = "v1"
    sent = json.loads(agent_attestor(tmp_path, ec2_metadata_endpoint=serving.endpoint).payload())
    assert sent["document"] == serving.document
    assert not any(with_token for method, _, with_token in serving.requests if method == "GET")


def test_imdsv1_can_be_forbidden(tmp_path: Path, serving: ImdsServer) -> None:
    serving.mode = "v1"
    handle = agent_attestor(tmp_path, ec2_metadata_endpoint=serving.endpoint, ec2_metadata_v1_disabled=True)
    with pytest.raises(Internal, match="forbids IMDSv1"):
        handle.payload()
    assert not any(method == "GET" for method, _, _ in serving.requests)


def test_unreachable_metadata_service_is_unavailable(tmp_path: Path) -> None:
    handle = agent_attestor(tmp_path, ec2_metadata_endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable, match="unreachable"):
        handle.payload()


def test_oversized_document_is_not_sent(tmp_path: Path, serving: ImdsServer) -> None:
    serving.document = "x" * (64 * 1024)
    with pytest.raises(Internal, match="larger than"):
        agent_attestor(tmp_path, ec2_metadata_endpoint=serving.endpoint).payload()


def test_missing_signature_is_an_error(tmp_path: Path, serving: ImdsServer) -> None:
    serving.rsa2048 = ""
    with pytest.raises(Internal, match="instance-identity/rsa2048 failed with HTTP 404"):
        agent_attestor(tmp_path, ec2_metadata_endpoint=serving.endpoint).payload()
