"""SPIRE's reserved SPIFFE IDs, as the server, agent and plugins build and recognise them."""

from __future__ import annotations

import pytest
from pyspire.spiffe import SpiffeId, SpiffeIdError, TrustDomain
from pyspire.spire_ids import agent_id, is_agent_id, is_reserved, join_token_agent_id, server_id

TD = TrustDomain.parse("example.org")


def test_server_and_agent_ids_are_spires() -> None:
    assert str(server_id(TD)) == "spiffe://example.org/spire/server"
    assert str(agent_id(TD, "/x509pop/abc")) == "spiffe://example.org/spire/agent/x509pop/abc"
    assert str(join_token_agent_id(TD, "t-1")) == "spiffe://example.org/spire/agent/join_token/t-1"


@pytest.mark.parametrize("path", ["x509pop/abc", "", "/x509pop/../abc", "/"])
def test_an_attestor_path_that_is_not_a_path_is_refused(path: str) -> None:
    with pytest.raises(SpiffeIdError):
        agent_id(TD, path)


def test_a_join_token_cannot_add_path_segments() -> None:
    with pytest.raises(SpiffeIdError):
        join_token_agent_id(TD, "a/b")


@pytest.mark.parametrize(
    ("spiffe_id", "agent", "reserved"),
    [
        ("spiffe://example.org/spire/agent/join_token/t", True, True),
        ("spiffe://other.org/spire/agent/join_token/t", False, True),
        ("spiffe://example.org/spire/agent", False, True),
        ("spiffe://example.org/spire/server", False, True),
        ("spiffe://example.org/spire", False, True),
        ("spiffe://example.org/spireagent/x", False, False),
        ("spiffe://example.org/workload", False, False),
    ],
)
def test_agent_and_reserved_ids_are_recognised(spiffe_id: str, agent: bool, reserved: bool) -> None:
    parsed = SpiffeId.parse(spiffe_id)
    assert is_agent_id(parsed, TD) is agent
    assert is_reserved(parsed) is reserved
