"""What the two halves of ``http_challenge`` exchange, in SPIRE's JSON shapes.

The agent's payload is ``{"hostname": ..., "agentname": ..., "port": ...}``: where the server
can reach it. The server's challenge is ``{"nonce": ...}``, 32 random bytes in URL-safe
base64 (with padding), which the agent then serves as text at
``http://<hostname>:<port>/.well-known/spiffe/nodeattestor/http_challenge/<agentname>/challenge``.
The agent's answer on the stream carries nothing (a newline, because an empty answer is
not one); the proof is the HTTP response.

The rules for the names are here too, so that both halves hold them: the agent refuses a
configuration the server would refuse, at start instead of at the first attestation.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Final

from pyspire.plugin.errors import InvalidArgument

__all__ = [
    "ANSWER",
    "PLUGIN_NAME",
    "AttestationData",
    "agent_name_problem",
    "challenge_path",
    "decode_challenge",
    "decode_payload",
    "encode_challenge",
    "hostname_problem",
    "new_nonce",
]

PLUGIN_NAME: Final = "http_challenge"
NONCE_BYTES: Final = 32
MAX_PAYLOAD_BYTES: Final = 4096
"""A payload is a few dozen bytes; anything this large is not one, and is refused unparsed."""
MAX_HOSTNAME_LENGTH: Final = 253
"""The longest DNS name. Longer ones cannot resolve, and the cap bounds the work the
operator's ``allowed_dns_patterns`` do on an agent's input."""
MAX_AGENT_NAME_LENGTH: Final = 32
ANSWER: Final = b"\n"
"""What the agent answers on the stream: SPIRE's agent sends a newline, never checked."""

_AGENT_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_NONCE: Final = re.compile(r"[A-Za-z0-9_=-]{1,64}")
"""What a nonce may be to be served: URL-safe base64 (SPIRE's and pyspire's servers send 44
characters), and no more than the 64 bytes the server reads back."""


def challenge_path(agent_name: str) -> str:
    """The URL path the agent serves the nonce at, and the server fetches it from."""
    return f"/.well-known/spiffe/nodeattestor/{PLUGIN_NAME}/{agent_name}/challenge"


def hostname_problem(hostname: str) -> str | None:
    """Why ``hostname`` cannot be attested as (SPIRE's rules and the DNS length), or None."""
    if not hostname:
        return "hostname must be set"
    if "/" in hostname:
        return "hostname can not contain a slash"
    if ":" in hostname:
        return "hostname can not contain a colon"
    if len(hostname) > MAX_HOSTNAME_LENGTH:
        return f"hostname is longer than {MAX_HOSTNAME_LENGTH} characters"
    return None


def agent_name_problem(agent_name: str) -> str | None:
    """Why ``agent_name`` is not one SPIRE's server accepts (a letter, then letters, digits, dashes), or None."""
    if _AGENT_NAME.fullmatch(agent_name) is None or len(agent_name) > MAX_AGENT_NAME_LENGTH:
        return (
            f'agent name "{agent_name[:40]}" is not valid: a letter, then letters, digits or "-", '
            f"at most {MAX_AGENT_NAME_LENGTH} characters"
        )
    return None


@dataclass(frozen=True)
class AttestationData:
    """Where the server reaches the agent: host name, the agent's name on that host, and port."""

    hostname: str
    agent_name: str
    port: int

    def encode(self) -> bytes:
        """The payload as SPIRE's agent writes it."""
        return _json({"hostname": self.hostname, "agentname": self.agent_name, "port": self.port})


def decode_payload(payload: bytes) -> AttestationData:
    """The agent's payload, type-checked; :class:`InvalidArgument` saying what is wrong with it.

    Unknown fields are ignored (as SPIRE's JSON decoding ignores them); the values are checked
    by the caller, which knows its policy.
    """
    if not payload:
        raise InvalidArgument("missing attestation payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(f"the payload is larger than {MAX_PAYLOAD_BYTES} bytes")
    document = _json_object(payload, "payload")
    hostname = _field(document, "hostname", str, "")
    agent_name = _field(document, "agentname", str, "")
    port = _field(document, "port", int, 0)
    return AttestationData(hostname, agent_name, port)


def new_nonce() -> str:
    """A fresh nonce: 32 random bytes, URL-safe base64 with padding, as SPIRE's server makes it."""
    return base64.urlsafe_b64encode(os.urandom(NONCE_BYTES)).decode("ascii")


def encode_challenge(nonce: str) -> bytes:
    """The challenge the server sends."""
    return _json({"nonce": nonce})


def decode_challenge(challenge: bytes) -> str:
    """The nonce in the server's challenge; :class:`InvalidArgument` when it is not a challenge."""
    nonce: str = _field(_json_object(challenge, "challenge"), "nonce", str, "")
    if _NONCE.fullmatch(nonce) is None:
        raise InvalidArgument("the challenge's nonce is not 1 to 64 characters of URL-safe base64")
    return nonce


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidArgument(f"failed to unmarshal {what}: {err}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"failed to unmarshal {what}: not a JSON object")
    return document


def _field(document: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = document.get(name, default)
    if value is None:
        return default  # JSON null leaves the field unset, as in SPIRE's decoding
    # bool is an int in Python; a JSON true is no port.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidArgument(f"failed to unmarshal {name}: expected a JSON {'string' if kind is str else 'integer'}")
    return value
