"""The agent half: the payload it sends, the listener it serves the nonce on, its configuration."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.errors import CatalogError, ErrorCode, PluginError
from pyspire.plugin.facades import AgentNodeAttestor
from pyspire.plugin.testing.loading import load_plugin, make_core_config

from tests.support.free_port import free_port

PATH = "/.well-known/spiffe/nodeattestor/http_challenge/{}/challenge"
NONCE = "eyJub25jZSI6ImV4YW1wbGUifQ-_aGVyZSBpcyB0aGU="


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Any]:
    loaded: list[AgentNodeAttestor] = []

    def load(plugin_data: Mapping[str, Any]) -> AgentNodeAttestor:
        handle = load_plugin("agent", "NodeAttestor", "http_challenge", plugin_data, make_core_config(tmp_path))
        assert isinstance(handle, AgentNodeAttestor)
        loaded.append(handle)
        return handle

    yield load
    for handle in loaded:
        handle.close()


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def challenge(nonce: str = NONCE) -> bytes:
    return json.dumps({"nonce": nonce}).encode()


def test_the_payload_names_this_host_and_the_default_agent_and_a_port_it_listens_on(agents: Any) -> None:
    agent = agents({})
    sent = json.loads(agent.payload())
    assert sent == {"hostname": socket.gethostname(), "agentname": "default", "port": sent["port"]}
    assert sent["port"] > 0
    # Until the challenge comes there is nothing to serve.
    assert get(sent["port"], PATH.format("default")) == (404, b"404 page not found\n")


def test_the_nonce_is_served_at_the_agents_path_once_the_challenge_is_answered(agents: Any) -> None:
    agent = agents({"hostname": "node-1.example.org", "agentname": "agent-01"})
    port = json.loads(agent.payload())["port"]
    assert agent.answer_challenge(challenge()) == b"\n"  # as SPIRE's agent answers: the proof is the fetch
    assert get(port, PATH.format("agent-01")) == (200, f"{NONCE}\n".encode())
    assert get(port, PATH.format("agent-01")) == (200, f"{NONCE}\n".encode())  # until the server is done
    assert get(port, PATH.format("default"))[0] == 404
    assert get(port, PATH.format("agent-01") + "/more")[0] == 404


def test_the_listener_is_on_every_address(agents: Any) -> None:
    agent = agents({})
    port = json.loads(agent.payload())["port"]
    agent.answer_challenge(challenge())
    assert get(port, PATH.format("default"), "127.0.0.1")[0] == 200
    if socket.has_ipv6:
        try:
            socket.create_connection(("::1", port), timeout=2).close()
        except OSError:
            return  # no IPv6 loopback here
        assert get(port, PATH.format("default"), "::1")[0] == 200


def test_the_advertised_port_is_sent_and_the_configured_port_listened_on(agents: Any) -> None:
    port = free_port()
    agent = agents({"hostname": "node-1", "port": port, "advertised_port": 80})
    assert json.loads(agent.payload()) == {"hostname": "node-1", "agentname": "default", "port": 80}
    agent.answer_challenge(challenge())
    assert get(port, PATH.format("default"))[0] == 200
    agent.close()
    # Without advertised_port, the port listened on is the one sent.
    assert json.loads(agents({"hostname": "node-1", "port": port}).payload())["port"] == port


def test_a_new_attestation_closes_the_listener_of_the_last_one_and_close_closes_it(agents: Any) -> None:
    agent = agents({})
    first = json.loads(agent.payload())["port"]
    agent.answer_challenge(challenge())
    second = json.loads(agent.payload())["port"]
    assert refuses_connections(first)
    assert get(second, PATH.format("default"))[0] == 404  # the new one serves no old nonce
    agent.close()
    assert refuses_connections(second)


def test_a_port_that_cannot_be_bound_fails_the_attestation_with_the_port(agents: Any) -> None:
    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PluginError) as raised:
            agents({"port": port}).payload()
    assert raised.value.code is ErrorCode.INTERNAL
    assert f"could not listen on port {port}" in str(raised.value)


@pytest.mark.parametrize(
    "nonce",
    ["", "not base64!", "a" * 65, "white space", "ünïcode"],
)
def test_a_challenge_without_a_servable_nonce_is_refused(agents: Any, nonce: str) -> None:
    agent = agents({})
    agent.payload()
    with pytest.raises(PluginError) as raised:
        agent.answer_challenge(challenge(nonce))
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT
    assert "nonce is not 1 to 64 characters of URL-safe base64" in str(raised.value)
    with pytest.raises(PluginError, match="failed to unmarshal nonce"):
        agent.answer_challenge(json.dumps({"nonce": 42}).encode())


@pytest.mark.parametrize(
    ("plugin_data", "key", "reason"),
    [
        ({"hostname": "a/b"}, "hostname", "hostname can not contain a slash"),
        ({"hostname": "a:80"}, "hostname", "hostname can not contain a colon"),
        ({"hostname": "a" * 254}, "hostname", "longer than 253"),
        ({"agentname": "a.b"}, "agentname", 'agent name "a.b" is not valid'),
        ({"agentname": "a_b"}, "agentname", "is not valid"),
        ({"agentname": "a" * 33}, "agentname", "at most 32 characters"),
        ({"port": -1}, "port", "-1 is not a port"),
        ({"port": 65536}, "port", "65536 is not a port"),
        ({"port": "eighty"}, "port", ""),
        ({"advertised_port": 70000}, "advertised_port", "70000 is not a port"),
    ],
)
def test_configuration_errors_name_the_key(
    tmp_path: Path, plugin_data: Mapping[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(CatalogError, match=f'key "{key}"') as raised:
        load_plugin("agent", "NodeAttestor", "http_challenge", plugin_data, make_core_config(tmp_path))
    assert reason in str(raised.value)
