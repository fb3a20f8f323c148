"""Workload API endpoint addresses (SPIFFE Workload Endpoint §4) and SPIFFE_ENDPOINT_SOCKET.

Two forms exist: ``unix:///absolute/path`` (also ``unix:/absolute/path``) and
``tcp://<IP>:<port>``. Nothing else is part of either form: no user, query, fragment or
host name, no relative paths. Windows named pipes (``npipe:``) are not available on the
POSIX systems pyspire runs on and are refused with a message saying so.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "ENDPOINT_ENV",
    "EndpointError",
    "TcpEndpoint",
    "UnixEndpoint",
    "endpoint_from_environment",
    "parse_endpoint",
]

ENDPOINT_ENV: Final = "SPIFFE_ENDPOINT_SOCKET"


class EndpointError(ValueError):
    """An endpoint address is not valid; ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class UnixEndpoint:
    """A Unix domain socket at an absolute path."""

    path: str

    def __str__(self) -> str:
        return f"unix://{self.path}"


@dataclass(frozen=True)
class TcpEndpoint:
    """A TCP address: an IP address (no name) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_endpoint(address: str) -> UnixEndpoint | TcpEndpoint:
    """Parse a Workload API address, raising :class:`EndpointError` naming what is wrong.

    Checks run in a fixed order so a bad address always gets the same reason: emptiness,
    URI syntax, scheme, opaque form, user info, query, fragment, then the scheme's rules.
    """
    if not isinstance(address, str) or not address:
        raise EndpointError("empty", "workload endpoint address is empty")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in address):
        raise EndpointError(
            "not_a_uri",
            f"workload endpoint address {address!r} is not a URI: it contains control characters",
        )
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError as err:
        raise EndpointError("not_a_uri", f"workload endpoint address {address!r} is not a URI: {err}") from None
    if parts.scheme == "npipe":
        raise EndpointError("scheme", f"workload endpoint address {address!r}: named pipes exist only on Windows")
    if parts.scheme not in ("unix", "tcp"):
        raise EndpointError("scheme", f'workload endpoint address {address!r}: the scheme must be "unix" or "tcp"')
    has_authority = address[len(parts.scheme) + 1 :].startswith("//")
    if not has_authority and not parts.path.startswith("/"):
        raise EndpointError("opaque", f"workload endpoint address {address!r} must not be an opaque URI")
    if parts.username is not None or parts.password is not None:
        raise EndpointError("userinfo", f"workload endpoint address {address!r} must not include user info")
    if parts.query:
        raise EndpointError("query", f"workload endpoint address {address!r} must not include query values")
    if parts.fragment or address.endswith("#"):
        raise EndpointError("fragment", f"workload endpoint address {address!r} must not include a fragment")
    if address.endswith("?"):
        raise EndpointError("query", f"workload endpoint address {address!r} must not include query values")
    if parts.scheme == "unix":
        if parts.netloc:
            raise EndpointError(
                "unix_authority_set",
                f"workload endpoint unix address {address!r} must not include an authority",
            )
        if not parts.path:
            raise EndpointError(
                "unix_path_missing",
                f"workload endpoint unix address {address!r} has no socket path",
            )
        return UnixEndpoint(parts.path)
    if not parts.hostname:
        raise EndpointError("tcp_host_missing", f"workload endpoint tcp address {address!r} has no host")
    if parts.path:
        raise EndpointError("path", f"workload endpoint tcp address {address!r} must not include a path")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        raise EndpointError(
            "tcp_host_not_ip",
            f"workload endpoint tcp address {address!r}: the host must be an IP address",
        ) from None
    if port is None:
        raise EndpointError("tcp_port_missing", f"workload endpoint tcp address {address!r} has no port")
    return TcpEndpoint(parts.hostname, port)


def endpoint_from_environment() -> UnixEndpoint | TcpEndpoint | None:
    """The address in ``SPIFFE_ENDPOINT_SOCKET``, or None when it is unset or empty."""
    value = os.environ.get(ENDPOINT_ENV, "")
    return parse_endpoint(value) if value else None
