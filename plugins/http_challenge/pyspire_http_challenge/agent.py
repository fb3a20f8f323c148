"""The agent side of ``http_challenge``: say where the server can reach this agent, and answer there.

The payload names this host (``hostname``, or the kernel's host name), the agent's name on
it (``agentname``, so that several agents can share one port behind a proxy) and the port
the server is to call (``advertised_port``, else the port listened on). The nonce of the
challenge is then served over HTTP by :class:`~pyspire_http_challenge.listener.ChallengeListener`.

Names the server would refuse are refused here, at start, naming the key.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PluginConfigError

from pyspire_http_challenge.listener import ChallengeListener
from pyspire_http_challenge.protocol import (
    ANSWER,
    AttestationData,
    agent_name_problem,
    challenge_path,
    decode_challenge,
    hostname_problem,
)

__all__ = ["AgentHttpChallenge"]

DEFAULT_AGENT_NAME = "default"


@dataclass(frozen=True)
class AgentHttpChallengeConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "http_challenge"`` (SPIRE's keys)."""

    hostname: str = ""
    agentname: str = ""
    port: int = 0
    advertised_port: int = 0


class AgentHttpChallenge:
    """Serves the server's nonce over HTTP at this host's name."""

    def __init__(self) -> None:
        self._hostname = ""
        self._agent_name = DEFAULT_AGENT_NAME
        self._port = 0
        self._advertised_port = 0
        self._listener: ChallengeListener | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AgentHttpChallengeConfig, plugin_data)
        hostname = config.hostname or socket.gethostname()
        problem = hostname_problem(hostname)
        if problem is not None:
            detected = "" if config.hostname else f' (detected "{hostname}": set hostname)'
            raise PluginConfigError("hostname", f"{problem}{detected}")
        agent_name = config.agentname or DEFAULT_AGENT_NAME
        problem = agent_name_problem(agent_name)
        if problem is not None:
            raise PluginConfigError("agentname", problem)
        for key, port in (("port", config.port), ("advertised_port", config.advertised_port)):
            if not 0 <= port < 65536:
                raise PluginConfigError(key, f"{port} is not a port (0 to 65535)")
        self._hostname = hostname
        self._agent_name = agent_name
        self._port = config.port
        self._advertised_port = config.advertised_port or config.port
        self._listener = ChallengeListener(challenge_path(agent_name))

    @hookimpl
    def attestation_payload(self) -> bytes:
        assert self._listener is not None
        try:
            port = self._listener.open(self._port)
        except OSError as err:
            raise Internal(f"could not listen on port {self._port}: {err.strerror or err}") from None
        return AttestationData(self._hostname, self._agent_name, self._advertised_port or port).encode()

    @hookimpl
    def answer_challenge(self, challenge: bytes) -> bytes:
        assert self._listener is not None
        self._listener.serve(decode_challenge(challenge))
        return ANSWER

    @hookimpl
    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
