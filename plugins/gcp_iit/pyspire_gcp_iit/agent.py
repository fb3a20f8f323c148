"""The agent side of ``gcp_iit``: an instance identity token from the metadata server.

``GET http://<identity_token_host>/computeMetadata/v1/instance/service-accounts/<service_account>/identity``
with ``audience`` and ``format=full`` (the token then carries the project, zone and instance)
and the ``Metadata-Flavor: Google`` header the metadata server requires. An unreachable
metadata server is :class:`~pyspire.plugin.Unavailable`: the agent retries.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PluginConfigError, Unavailable

from pyspire_gcp_iit.protocol import DEFAULT_AUDIENCE, MAX_TOKEN_BYTES

__all__ = ["AgentGcpIit"]

TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class AgentGcpIitConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "gcp_iit"``."""

    identity_token_host: str = "metadata.google.internal"  # noqa: S105 - a host name, not a secret
    service_account: str = "default"
    audience: str = DEFAULT_AUDIENCE


class AgentGcpIit:
    """Fetches this instance's identity token."""

    def __init__(self) -> None:
        self._url = ""

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AgentGcpIitConfig, plugin_data)
        host = config.identity_token_host
        if not host or "/" in host or "@" in host:
            raise PluginConfigError("identity_token_host", f'"{host}" is not a host name (with an optional port)')
        query = urllib.parse.urlencode({"audience": config.audience, "format": "full"})
        account = urllib.parse.quote(config.service_account, safe="@")
        self._url = f"http://{host}/computeMetadata/v1/instance/service-accounts/{account}/identity?{query}"

    @hookimpl
    def attestation_payload(self) -> bytes:
        request = urllib.request.Request(self._url, headers={"Metadata-Flavor": "Google"})  # noqa: S310 - http:// only
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                token: bytes = response.read(MAX_TOKEN_BYTES + 1)
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise Unavailable(f"the metadata server answered HTTP {err.code}") from None
            raise Internal(f"the metadata server refused the identity token (HTTP {err.code})") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise Unavailable(f"the metadata server at {self._url.split('/')[2]} is unreachable: {reason}") from None
        if len(token) > MAX_TOKEN_BYTES:
            raise Internal(f"the identity token is larger than {MAX_TOKEN_BYTES} bytes")
        if not token.strip():
            raise Internal("the metadata server returned an empty identity token")
        return token.strip()
