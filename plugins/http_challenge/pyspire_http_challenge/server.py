"""The server side of ``http_challenge``: check where the agent says it is, then ask it there.

Everything in the payload is checked before the agent is challenged, so a payload the
server would refuse costs no request: its shape, the port against ``required_port`` and
``allow_non_root_ports``, the agent name, the host name (never ``localhost``, one of
``allowed_dns_patterns`` when given, and fit for the agent ID). Then the agent gets a fresh
nonce, and the server fetches it back from ``http://<hostname>:<port>`` within 10 s.

Trust on first use is the core's: with ``tofu`` (the default) the result is not
re-attestable, so the server refuses a second attestation of the host until its agent is
evicted. Turning it off is allowed only where no ordinary user can open the port the
server calls, as in SPIRE.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pyspire import spire_ids
from pyspire.plugin import AttestationResult, Challenge, hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import InvalidArgument, PermissionDenied, PluginConfigError
from pyspire.plugin.logger import PluginLogger
from pyspire.spiffe import SpiffeIdError, TrustDomain

from pyspire_http_challenge.fetch import FetchError, fetch_challenge
from pyspire_http_challenge.protocol import (
    PLUGIN_NAME,
    agent_name_problem,
    challenge_path,
    decode_payload,
    encode_challenge,
    hostname_problem,
    new_nonce,
)

__all__ = ["ServerHttpChallenge"]

FIRST_NON_ROOT_PORT = 1024
"""Ports from here up can be opened by any user of the node (Linux's default)."""


@dataclass(frozen=True)
class ServerHttpChallengeConfig:
    """``plugin_data`` of the server's ``NodeAttestor "http_challenge"`` (SPIRE's keys).

    The optional keys stay None when unset: whether ``tofu`` may be off depends on whether
    the others were given, not only on their values.
    """

    allowed_dns_patterns: list[str] = field(default_factory=list)
    required_port: int | None = None
    allow_non_root_ports: bool | None = None
    tofu: bool | None = None


class ServerHttpChallenge:
    """Attests a node by fetching the nonce it was sent from the host name it claims."""

    fetch_timeout: ClassVar[float] = 10.0
    """Seconds the whole fetch may take (SPIRE's)."""

    def __init__(self) -> None:
        self._patterns: tuple[re.Pattern[str], ...] = ()
        self._required_port: int | None = None
        self._allow_non_root_ports = True
        self._tofu = True
        self._trust_domain: TrustDomain | None = None
        self._logger: PluginLogger | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = parse_plugin_data(ServerHttpChallengeConfig, plugin_data)
        patterns = []
        for pattern in config.allowed_dns_patterns:
            try:
                patterns.append(re.compile(pattern))
            except re.error as err:
                raise PluginConfigError("allowed_dns_patterns", f'cannot compile "{pattern}": {err}') from None
        if config.required_port is not None and not 0 < config.required_port < 65536:
            raise PluginConfigError("required_port", f"{config.required_port} is not a port (1 to 65535)")
        allow_non_root_ports = config.allow_non_root_ports is not False
        tofu = config.tofu is not False
        if config.required_port is not None:
            non_root_port_possible = config.required_port >= FIRST_NON_ROOT_PORT
        else:
            non_root_port_possible = allow_non_root_ports
        if not tofu and non_root_port_possible:
            raise PluginConfigError(
                "tofu",
                "you can not turn off trust on first use (TOFU) when non-root ports are allowed: "
                f"set allow_non_root_ports = false or a required_port below {FIRST_NON_ROOT_PORT}",
            )
        self._patterns = tuple(patterns)
        self._required_port = config.required_port
        self._allow_non_root_ports = allow_non_root_ports
        self._tofu = tofu
        self._trust_domain = core.trust_domain
        self._logger = logger

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        assert self._trust_domain is not None
        data = decode_payload(payload)
        problem = hostname_problem(data.hostname)
        if problem is not None:
            raise InvalidArgument(problem)
        if not 0 < data.port < 65536:
            raise InvalidArgument(f"port {data.port} is invalid")
        if self._required_port is not None and data.port != self._required_port:
            raise InvalidArgument(f"port {data.port} is not allowed to be used by this server")
        if not self._allow_non_root_ports and data.port >= FIRST_NON_ROOT_PORT:
            raise InvalidArgument(f"port {data.port} is not allowed to be >= {FIRST_NON_ROOT_PORT}")
        problem = agent_name_problem(data.agent_name)
        if problem is not None:
            raise InvalidArgument(problem)
        self._check_hostname_allowed(data.hostname)
        agent_path = f"/{PLUGIN_NAME}/{data.hostname}"
        try:
            spire_ids.agent_id(self._trust_domain, agent_path)
        except SpiffeIdError as err:
            raise InvalidArgument(f'hostname "{data.hostname}" cannot name an agent: {err}') from None

        nonce = new_nonce()
        challenge(encode_challenge(nonce))  # the answer carries nothing: the proof is the fetch
        path = challenge_path(data.agent_name)
        if self._logger is not None:
            self._logger.debug(
                "Verifying challenge", extra={"hostname": data.hostname, "port": data.port, "path": path}
            )
        try:
            body = fetch_challenge(data.hostname, data.port, path, self.fetch_timeout)
        except FetchError as err:
            raise PermissionDenied(f"challenge verification failed: {err}") from None
        if body.strip() != nonce.encode():
            raise PermissionDenied("challenge verification failed: expected nonce was not found in HTTP response")
        return AttestationResult(agent_path, (f"hostname:{data.hostname}",), can_reattest=not self._tofu)

    def _check_hostname_allowed(self, hostname: str) -> None:
        if hostname == "localhost":
            raise PermissionDenied("you can not use localhost as a hostname")
        # As SPIRE matches: a pattern found anywhere in the name allows it, so anchor
        # patterns (^...$) to allow whole names only.
        if self._patterns and not any(pattern.search(hostname) for pattern in self._patterns):
            raise PermissionDenied(f'the requested hostname "{hostname}" is not allowed to connect')
