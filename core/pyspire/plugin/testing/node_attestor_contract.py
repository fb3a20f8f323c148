"""The NodeAttestor contract: both halves of a node attestor, through a real exchange.

The agent half produces evidence; the server half verifies it, challenging the agent half as
often as its protocol needs, exactly as ``AttestAgent`` runs them (the server half in a
worker thread, each challenge answered by the agent half). What the server relies on:

- the evidence of a node names that node, the same agent every time, with a valid agent
  path and selector values of the plugin's own type;
- evidence cannot be replayed: a challenge/response attestor refuses answers recorded from
  an earlier exchange and wrong answers; otherwise the result is trust-on-first-use
  (``can_reattest=False``, so the server refuses a second attestation of the agent), or the
  plugin declares why replayable evidence is acceptable;
- malformed evidence (empty, truncated, corrupted, garbage, oversized) is refused with a
  deliberate error before anything expensive, never a crash and never a node.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pyspire import spire_ids
from pyspire.plugin.attestation import AttestationResult
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import CatalogError, InvalidArgument, PluginError
from pyspire.plugin.facades import AgentNodeAttestor, ServerNodeAttestor
from pyspire.plugin.testing.base import assert_deliberate
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config

__all__ = ["Exchange", "NodeAttestorContract"]

MAX_TEST_PAYLOAD = 1024 * 1024
"""The largest payload the server hands a plugin (``AttestAgent`` refuses bigger ones)."""


@dataclass
class Exchange:
    """One attestation as the server ran it: the evidence, the challenges sent, the answers received."""

    payload: bytes = b""
    challenges: list[bytes] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)


class NodeAttestorContract:
    """Subclass as ``TestAcme(NodeAttestorContract)``; set ``plugin`` and the fixtures it needs.

    ``server_plugin_data`` and ``agent_plugin_data`` configure the halves (fixtures, so they
    can depend on fakes of the services the plugin talks to). Declare ``challenge_response``
    when the server half challenges the agent; a re-attestable attestor without challenges
    must say in ``replayable_evidence`` why a copy of its evidence is no threat.
    """

    plugin: ClassVar[str]
    server_plugin_class: ClassVar[type | None] = None
    agent_plugin_class: ClassVar[type | None] = None
    challenge_response: ClassVar[bool] = False
    """Whether the server half challenges the agent half (the suite checks it does)."""
    replayable_evidence: ClassVar[str] = ""
    """Why evidence that re-attests without a challenge cannot be abused (k8s_psat: tokens are short-lived
    and reviewed by the API server on every attestation). Empty: no such evidence."""

    # --- fixtures an integrator overrides -------------------------------------------------

    @pytest.fixture
    def server_plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        """``plugin_data`` of the server half."""
        return {}

    @pytest.fixture
    def agent_plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        """``plugin_data`` of the agent half."""
        return {}

    @pytest.fixture
    def expected_agent_path(self) -> str | None:
        """The agent path the node must get; None checks only that it is ``/<plugin>/...``."""
        return None

    @pytest.fixture
    def expected_selectors(self) -> set[str] | None:
        """Selector values the node must get (at least); None checks only their form."""
        return None

    @pytest.fixture
    def core_config(self, tmp_path: Path) -> CoreConfig:
        """Daemon settings handed to both halves."""
        return make_core_config(tmp_path / "data")

    # --- the halves ---------------------------------------------------------------------

    def load_server(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> ServerNodeAttestor:
        """The server half, loaded as the server loads it."""
        handle = load_plugin(
            "server", "NodeAttestor", self.plugin, plugin_data, core_config, plugin_class=self.server_plugin_class
        )
        assert isinstance(handle, ServerNodeAttestor)
        return handle

    def load_agent(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> AgentNodeAttestor:
        """The agent half, loaded as the agent loads it."""
        handle = load_plugin(
            "agent", "NodeAttestor", self.plugin, plugin_data, core_config, plugin_class=self.agent_plugin_class
        )
        assert isinstance(handle, AgentNodeAttestor)
        return handle

    @pytest.fixture
    def server(self, server_plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[ServerNodeAttestor]:
        """The configured server half; closed after the test."""
        handle = self.load_server(server_plugin_data, core_config)
        yield handle
        handle.close()

    @pytest.fixture
    def agent(self, agent_plugin_data: Mapping[str, Any], core_config: CoreConfig) -> Iterator[AgentNodeAttestor]:
        """The configured agent half; closed after the test."""
        handle = self.load_agent(agent_plugin_data, core_config)
        yield handle
        handle.close()

    def attest(
        self,
        server: ServerNodeAttestor,
        agent: AgentNodeAttestor,
        payload: bytes | None = None,
        answer: Callable[[bytes], bytes] | None = None,
    ) -> tuple[AttestationResult, Exchange]:
        """Run one attestation as ``AttestAgent`` does; ``answer`` replaces the agent's answers."""
        evidence = agent.payload() if payload is None else payload
        exchange = Exchange(evidence)
        respond = answer or agent.answer_challenge
        lock = threading.Lock()

        def challenge(data: bytes) -> bytes:
            with lock:
                exchange.challenges.append(bytes(data))
            reply = respond(bytes(data))
            with lock:
                exchange.answers.append(reply)
            return reply

        with ThreadPoolExecutor(1, thread_name_prefix="attestation") as worker:
            result = worker.submit(server.attest, evidence, challenge).result(timeout=60)
        return result, exchange

    def refused(
        self,
        server: ServerNodeAttestor,
        agent: AgentNodeAttestor,
        payload: bytes | None = None,
        answer: Callable[[bytes], bytes] | None = None,
    ) -> PluginError:
        """Run an attestation that must fail deliberately; the error."""
        with pytest.raises(PluginError) as raised:
            self.attest(server, agent, payload, answer)
        assert_deliberate(raised.value, server)
        return raised.value

    # --- the contract -------------------------------------------------------------------

    def test_agent_evidence_attests_a_node(
        self,
        server: ServerNodeAttestor,
        agent: AgentNodeAttestor,
        expected_agent_path: str | None,
        expected_selectors: set[str] | None,
    ) -> None:
        result, exchange = self.attest(server, agent)
        agent_id = spire_ids.agent_id(TEST_TRUST_DOMAIN, result.agent_path)
        assert agent_id != spire_ids.server_id(TEST_TRUST_DOMAIN)
        if expected_agent_path is None:
            assert result.agent_path.startswith(f"/{self.plugin}/"), result.agent_path
        else:
            assert result.agent_path == expected_agent_path
        for value in result.selector_values:
            assert not value.startswith(f"{self.plugin}:"), (
                f'selector value "{value}" repeats the plugin name: the core adds "{self.plugin}:" itself'
            )
        if expected_selectors is not None:
            assert expected_selectors <= set(result.selector_values), sorted(result.selector_values)
        assert [str(s) for s in server.selectors(result)] == [f"{self.plugin}:{v}" for v in result.selector_values]
        if self.challenge_response:
            assert exchange.challenges, "challenge_response is declared, but the server half did not challenge"
        else:
            assert not exchange.challenges, "the server half challenged: declare challenge_response = True"

    def test_attesting_again_names_the_same_agent(self, server: ServerNodeAttestor, agent: AgentNodeAttestor) -> None:
        """The server recognises re-attestation, replays and bans by the agent ID: it must be stable."""
        first, _ = self.attest(server, agent)
        second, _ = self.attest(server, agent)
        assert second.agent_path == first.agent_path
        assert second.can_reattest == first.can_reattest

    def test_replayed_evidence_cannot_attest_again(self, server: ServerNodeAttestor, agent: AgentNodeAttestor) -> None:
        result, exchange = self.attest(server, agent)
        if self.challenge_response:
            recorded = list(exchange.answers)
            replayed = iter(recorded)
            self.refused(server, agent, exchange.payload, answer=lambda challenge: next(replayed, recorded[-1]))
            again, second = self.attest(server, agent)
            assert second.challenges != exchange.challenges, "the server half sends the same challenge every time"
            assert again.agent_path == result.agent_path
            return
        try:
            replay, _ = self.attest(server, agent, exchange.payload)
        except PluginError as err:
            assert_deliberate(err, server)  # evidence that is good only once (a nonce, a timestamp)
            return
        # The copy names the same agent, so the server's trust-on-first-use check refuses it...
        assert replay.agent_path == result.agent_path, "replayed evidence names another agent"
        # ...unless the node may re-attest with it, which must be argued for.
        assert not replay.can_reattest or self.replayable_evidence, (
            "the evidence re-attests without a challenge, so a copy of it attests as this node: "
            "challenge the agent, return can_reattest=False (trust on first use), or say in "
            "replayable_evidence why a copy is harmless"
        )

    def test_wrong_answers_to_challenges_are_refused(
        self, server: ServerNodeAttestor, agent: AgentNodeAttestor
    ) -> None:
        payload = agent.payload()
        asked: list[bytes] = []
        for wrong in (b"", os.urandom(64), b"\x00" * 32):

            def answer(challenge: bytes, wrong: bytes = wrong) -> bytes:
                asked.append(challenge)
                return wrong

            if self.challenge_response:
                self.refused(server, agent, payload, answer)
            else:
                self.attest(server, agent, payload, answer)
        assert bool(asked) == self.challenge_response

    def test_an_agent_that_hangs_up_fails_the_attestation(
        self, server: ServerNodeAttestor, agent: AgentNodeAttestor
    ) -> None:
        payload = agent.payload()

        def hang_up(challenge: bytes) -> bytes:
            raise InvalidArgument("the agent hung up during the challenge")

        if self.challenge_response:
            self.refused(server, agent, payload, hang_up)
        else:
            result, _ = self.attest(server, agent, payload, hang_up)
            assert result.agent_path

    @pytest.mark.parametrize("challenge", [b"", b"\x00\xff" + b"not a challenge of this plugin, odd length"])
    def test_agent_half_refuses_a_malformed_challenge(self, agent: AgentNodeAttestor, challenge: bytes) -> None:
        agent.payload()
        with pytest.raises(PluginError) as raised:
            agent.answer_challenge(challenge)
        if agent.implements("answer_challenge"):
            assert_deliberate(raised.value, agent)

    @pytest.mark.parametrize("corruption", ["empty", "garbage", "truncated", "flipped", "trailing", "oversized"])
    def test_malformed_evidence_is_refused(
        self, server: ServerNodeAttestor, agent: AgentNodeAttestor, corruption: str
    ) -> None:
        payload = agent.payload()
        corrupted = {
            "empty": b"",
            "garbage": os.urandom(max(len(payload), 16)),
            "truncated": payload[: len(payload) // 2],
            "flipped": payload[: len(payload) // 2]
            + bytes([payload[len(payload) // 2] ^ 0x80])
            + payload[len(payload) // 2 + 1 :],
            "trailing": payload + b"\x00\xff",
            "oversized": b"A" * MAX_TEST_PAYLOAD,
        }[corruption]
        self.refused(server, agent, corrupted)

    def test_unknown_plugin_data_keys_are_refused_by_name(
        self,
        server_plugin_data: Mapping[str, Any],
        agent_plugin_data: Mapping[str, Any],
        core_config: CoreConfig,
    ) -> None:
        with pytest.raises(CatalogError, match='key "no_such_key"'):
            self.load_server({**server_plugin_data, "no_such_key": True}, core_config)
        with pytest.raises(CatalogError, match='key "no_such_key"'):
            self.load_agent({**agent_plugin_data, "no_such_key": True}, core_config)
