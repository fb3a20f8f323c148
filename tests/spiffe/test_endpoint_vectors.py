"""Every case of the shared Workload API address vectors (endpoint_socket.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyspire.spiffe import (
    EndpointError,
    TcpEndpoint,
    UnixEndpoint,
    endpoint_from_environment,
    parse_endpoint,
)

VECTORS = Path(__file__).resolve().parent / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS / "endpoint_socket.json").read_text())


@pytest.mark.parametrize("case", DATA["cases"], ids=lambda c: repr(c["address"]))
def test_address(case: dict[str, Any]) -> None:
    if case["valid"]:
        endpoint = parse_endpoint(case["address"])
        assert isinstance(endpoint, (UnixEndpoint, TcpEndpoint))
        assert parse_endpoint(str(endpoint)) == endpoint
    else:
        with pytest.raises(EndpointError) as raised:
            parse_endpoint(case["address"])
        assert raised.value.code == case["reason"]


@pytest.mark.parametrize(
    "case",
    DATA["windows_named_pipe_cases"]["cases"],
    ids=lambda c: repr(c["address"]),
)
def test_named_pipes_are_refused_on_posix(case: dict[str, Any]) -> None:
    """go-spiffe's npipe scheme is a Windows extension; pyspire runs on POSIX and says so."""
    with pytest.raises(EndpointError, match="named pipes exist only on Windows"):
        parse_endpoint(case["address"])


def test_environment_variable_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock")
    assert endpoint_from_environment() == UnixEndpoint("/run/spire/agent.sock")
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "")
    assert endpoint_from_environment() is None
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "tcp://localhost:1")
    with pytest.raises(EndpointError, match="must be an IP address"):
        endpoint_from_environment()
