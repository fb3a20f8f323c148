"""The server half: what it fetches, and every refusal with its reason.

The server half is loaded as the server loads it and fetches from a real HTTP peer on
loopback (:mod:`responder`); ``fetch_timeout`` is shortened only in the tests about the
deadline, through a subclass, as SPIRE's tests shorten theirs through a testing build.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.errors import CatalogError, ErrorCode, InvalidArgument, PluginError
from pyspire.plugin.facades import ServerNodeAttestor
from pyspire.plugin.testing.base import assert_deliberate
from pyspire.plugin.testing.loading import load_plugin, make_core_config
from pyspire_http_challenge.server import ServerHttpChallenge

from plugins.http_challenge.tests.responder import (
    Behaviour,
    Responder,
    answer,
    answer_nonce,
    redirect,
    silent,
    trickle,
)

PATH = "/.well-known/spiffe/nodeattestor/http_challenge/default/challenge"


class QuickServerHttpChallenge(ServerHttpChallenge):
    fetch_timeout = 1.0


def load(tmp_path: Path, plugin_data: Mapping[str, Any], plugin_class: type | None = None) -> ServerNodeAttestor:
    handle = load_plugin(
        "server", "NodeAttestor", "http_challenge", plugin_data, make_core_config(tmp_path), plugin_class=plugin_class
    )
    assert isinstance(handle, ServerNodeAttestor)
    return handle


def payload(hostname: Any = "127.0.0.1", agentname: Any = "default", port: Any = 0) -> bytes:
    return json.dumps({"hostname": hostname, "agentname": agentname, "port": port}).encode()


@pytest.fixture
def responders() -> Iterator[list[Responder]]:
    started: list[Responder] = []
    yield started
    for responder in started:
        responder.stop()


@pytest.fixture
def peer(responders: list[Responder]) -> Any:
    def start(behaviour: Behaviour, port: int = 0) -> Responder:
        responder = Responder(behaviour, port).start()
        responders.append(responder)
        return responder

    return start


def refused(server: ServerNodeAttestor, evidence: bytes, responder: Responder | None = None) -> PluginError:
    with pytest.raises(PluginError) as raised:
        server.attest(evidence, responder.challenge if responder else _never_challenged)
    assert_deliberate(raised.value, server)
    return raised.value


def _never_challenged(challenge: bytes) -> bytes:
    raise AssertionError(f"the agent was challenged ({challenge!r}) for a payload that should be refused first")


def test_the_nonce_is_fetched_from_the_agents_path_and_port(tmp_path: Path, peer: Any) -> None:
    responder = peer(answer(b"\r\n{nonce}\r\n", chunked=True))  # whitespace around it is trimmed, as in SPIRE
    server = load(tmp_path, {})
    challenges: list[bytes] = []

    def challenge(data: bytes) -> bytes:
        challenges.append(data)
        return responder.challenge(data)

    result = server.attest(payload(agentname="agent-01", port=responder.port), challenge)
    assert result.agent_path == "/http_challenge/127.0.0.1"
    assert result.selector_values == ("hostname:127.0.0.1",)
    assert [str(s) for s in server.selectors(result)] == ["http_challenge:hostname:127.0.0.1"]
    assert result.can_reattest is False  # tofu by default: the server refuses a second attestation

    (sent,) = challenges
    assert list(json.loads(sent)) == ["nonce"]
    assert len(base64.urlsafe_b64decode(json.loads(sent)["nonce"])) == 32
    (request,) = responder.requests
    lines = request.decode().split("\r\n")
    assert lines[0] == "GET /.well-known/spiffe/nodeattestor/http_challenge/agent-01/challenge HTTP/1.1"
    assert f"Host: 127.0.0.1:{responder.port}" in lines


def test_patterns_match_anywhere_in_the_name_as_spires_do(tmp_path: Path, peer: Any) -> None:
    """SPIRE finds a pattern anywhere in the host name: "0\\.0" allows 127.0.0.1, "^0\\.0" does not."""
    responder = peer(answer_nonce)
    unanchored = load(tmp_path, {"allowed_dns_patterns": [r"^example\.org$", r"0\.0"]})
    assert unanchored.attest(payload(port=responder.port), responder.challenge).agent_path.endswith("/127.0.0.1")
    anchored = load(tmp_path, {"allowed_dns_patterns": [r"^0\.0"]})
    error = refused(anchored, payload(port=responder.port))
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert 'the requested hostname "127.0.0.1" is not allowed to connect' in str(error)


@pytest.mark.parametrize(
    ("plugin_data", "evidence", "code", "reason"),
    [
        ({"allowed_dns_patterns": [r"^p[0-9]\.example\.com$"]}, payload("p10.example.com", port=80),
         ErrorCode.PERMISSION_DENIED, 'the requested hostname "p10.example.com" is not allowed to connect'),
        ({}, payload("localhost", port=80), ErrorCode.PERMISSION_DENIED, "you can not use localhost as a hostname"),
        ({"allowed_dns_patterns": ["localhost"]}, payload("localhost", port=80),
         ErrorCode.PERMISSION_DENIED, "you can not use localhost as a hostname"),
        ({"required_port": 80}, payload(port=81),
         ErrorCode.INVALID_ARGUMENT, "port 81 is not allowed to be used by this server"),
        ({"allow_non_root_ports": False}, payload(port=1024),
         ErrorCode.INVALID_ARGUMENT, "port 1024 is not allowed to be >= 1024"),
        ({"allow_non_root_ports": False, "required_port": 8080}, payload(port=8080),
         ErrorCode.INVALID_ARGUMENT, "port 8080 is not allowed to be >= 1024"),
    ],
    ids=["hostname-not-allowed", "localhost", "localhost-even-if-allowed", "required-port", "non-root-port",
         "non-root-required-port"],
)  # fmt: skip
def test_payloads_against_the_servers_rules_are_refused_before_any_challenge(
    tmp_path: Path, plugin_data: Mapping[str, Any], evidence: bytes, code: ErrorCode, reason: str
) -> None:
    error = refused(load(tmp_path, plugin_data), evidence)
    assert error.code is code
    assert reason in str(error)


@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (b"", "missing attestation payload"),
        (b"not a payload", "failed to unmarshal payload"),
        (b'["127.0.0.1", "default", 80]', "failed to unmarshal payload: not a JSON object"),
        (b'{"hostname": "h\xff", "agentname": "default", "port": 80}', "failed to unmarshal payload"),
        (b'{"agentname": "default", "port": 80}', "hostname must be set"),
        (payload("", port=80), "hostname must be set"),
        (payload(None, port=80), "hostname must be set"),
        (payload(["127.0.0.1"], port=80), "failed to unmarshal hostname: expected a JSON string"),
        (payload("fo/o", port=80), "hostname can not contain a slash"),
        (payload("foo:1", port=80), "hostname can not contain a colon"),
        (payload("::1", port=80), "hostname can not contain a colon"),
        (payload("a" * 254, port=80), "hostname is longer than 253 characters"),
        (payload("foo bar", port=80), 'hostname "foo bar" cannot name an agent'),
        (payload("..", port=80), 'hostname ".." cannot name an agent'),
        (payload(port=0), "port 0 is invalid"),
        (payload(port=-1), "port -1 is invalid"),
        (payload(port=65536), "port 65536 is invalid"),
        (payload(port="80"), "failed to unmarshal port: expected a JSON integer"),
        (payload(port=80.5), "failed to unmarshal port: expected a JSON integer"),
        (payload(port=True), "failed to unmarshal port: expected a JSON integer"),
        (payload(agentname="", port=80), 'agent name "" is not valid'),
        (payload(agentname="def.ault", port=80), "is not valid"),
        (payload(agentname="a_b", port=80), "is not valid"),
        (payload(agentname="1agent", port=80), "is not valid"),
        (payload(agentname="a" * 33, port=80), "at most 32 characters"),
        (b" " * 4097, "larger than 4096 bytes"),
    ],
)
def test_malformed_payloads_are_refused_with_their_reason_before_any_challenge(
    tmp_path: Path, evidence: bytes, reason: str
) -> None:
    error = refused(load(tmp_path, {}), evidence)
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert reason in str(error)


def test_a_wrong_answer_is_refused(tmp_path: Path, peer: Any) -> None:
    responder = peer(answer(b"123456789abcdefghijklmnopqrstuvwxyz"))
    error = refused(load(tmp_path, {}), payload(port=responder.port), responder)
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert "challenge verification failed: expected nonce was not found in HTTP response" in str(error)
    assert responder.requests, "the server half did not fetch"


def test_only_the_first_64_bytes_of_the_answer_count(tmp_path: Path, peer: Any) -> None:
    """The nonce followed by more than SPIRE reads is not the nonce."""
    responder = peer(answer(b"{nonce}" + b"x" * 40))
    error = refused(load(tmp_path, {}), payload(port=responder.port), responder)
    assert "expected nonce was not found in HTTP response" in str(error)


def test_a_redirect_is_not_followed(tmp_path: Path, peer: Any) -> None:
    elsewhere = peer(answer_nonce)
    responder = peer(redirect(f"http://127.0.0.1:{elsewhere.port}{PATH}"))
    error = refused(load(tmp_path, {}), payload(port=responder.port), responder)
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert "HTTP 302: http redirects are disabled" in str(error)
    assert not elsewhere.requests


def test_nothing_listening_on_the_port_is_refused(tmp_path: Path, peer: Any) -> None:
    closed = peer(answer_nonce)
    closed.stop()
    error = refused(load(tmp_path, {}), payload(port=closed.port), closed)
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert "challenge verification failed: " in str(error)
    assert "cannot connect" in str(error)


def test_a_host_that_does_not_resolve_is_refused(tmp_path: Path) -> None:
    error = refused(load(tmp_path, {}), payload("no-such-host.invalid", port=80), Responder(answer_nonce))
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert "cannot resolve no-such-host.invalid" in str(error)


@pytest.mark.parametrize("behaviour", [silent, trickle], ids=["silent", "trickle"])
def test_an_agent_that_does_not_answer_in_time_is_refused_at_the_deadline(
    tmp_path: Path, peer: Any, behaviour: Behaviour
) -> None:
    """The deadline bounds the whole fetch: a peer sending a byte every 0.1 s is cut off too."""
    assert ServerHttpChallenge.fetch_timeout == 10.0  # SPIRE's; the subclass only makes the test quick
    responder = peer(behaviour)
    server = load(tmp_path, {}, QuickServerHttpChallenge)
    started = time.monotonic()
    error = refused(server, payload(port=responder.port), responder)
    elapsed = time.monotonic() - started
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert "no complete response within 1 s" in str(error)
    assert 0.9 < elapsed < 3.0


def test_an_agent_that_hangs_up_on_the_challenge_is_refused(tmp_path: Path, peer: Any) -> None:
    responder = peer(answer_nonce)
    server = load(tmp_path, {})

    def hang_up(challenge: bytes) -> bytes:
        raise InvalidArgument("the agent hung up during the challenge")

    with pytest.raises(PluginError, match="the agent hung up"):
        server.attest(payload(port=responder.port), hang_up)
    assert not responder.requests


@pytest.mark.parametrize(
    ("plugin_data", "key", "reason"),
    [
        ({"allowed_dns_patterns": ["*"]}, "allowed_dns_patterns", 'cannot compile "*"'),
        ({"allowed_dns_patterns": [r"ok\.example", "(unclosed"]}, "allowed_dns_patterns", 'cannot compile "(unclosed"'),
        ({"allowed_dns_patterns": [r"\pL+"]}, "allowed_dns_patterns", "bad escape"),  # RE2 syntax, not Python's
        ({"allowed_dns_patterns": "one"}, "allowed_dns_patterns", ""),
        ({"required_port": 0}, "required_port", "0 is not a port"),
        ({"required_port": 65536}, "required_port", "65536 is not a port"),
        ({"required_port": "eighty"}, "required_port", ""),
        ({"allow_non_root_ports": "yes"}, "allow_non_root_ports", ""),
        ({"tofu": False}, "tofu", "you can not turn off trust on first use (TOFU) when non-root ports are allowed"),
        ({"tofu": False, "allow_non_root_ports": True}, "tofu", "when non-root ports are allowed"),
        ({"tofu": False, "required_port": 1024}, "tofu", "when non-root ports are allowed"),
        ({"tofu": False, "required_port": 8443, "allow_non_root_ports": False}, "tofu", "when non-root ports"),
        ({"agent_path_template": "/x/{{ .Hostname }}"}, "agent_path_template", ""),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key(
    tmp_path: Path, plugin_data: Mapping[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(CatalogError, match=f'key "{key}"') as raised:
        load(tmp_path, plugin_data)
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    "plugin_data",
    [{"tofu": False, "allow_non_root_ports": False}, {"tofu": False, "required_port": 80},
     {"tofu": False, "required_port": 80, "allow_non_root_ports": True}],
)  # fmt: skip
def test_tofu_may_be_off_where_only_root_can_open_the_port(tmp_path: Path, plugin_data: Mapping[str, Any]) -> None:
    load(tmp_path, plugin_data).close()


def _free_root_port() -> int:
    """A port below 1024 that nothing on 127.0.0.1 listens on right now."""
    for port in range(1023, 512, -1):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port below 1024")


@pytest.mark.skipif(os.geteuid() != 0, reason="listening below port 1024 needs root")
def test_without_tofu_a_node_on_a_root_port_may_reattest(tmp_path: Path, peer: Any) -> None:
    responder = peer(answer_nonce, _free_root_port())
    for plugin_data in (
        {"tofu": False, "allow_non_root_ports": False},
        {"tofu": False, "required_port": responder.port},
    ):
        server = load(tmp_path, plugin_data)
        first = server.attest(payload(port=responder.port), responder.challenge)
        again = server.attest(payload(port=responder.port), responder.challenge)
        assert first.can_reattest
        assert again.can_reattest
        assert again.agent_path == first.agent_path == "/http_challenge/127.0.0.1"
