"""The agent side of ``k8s_psat``: the projected service account token and the cluster name.

The token file is read at every attestation: the kubelet rotates projected tokens, and an
agent re-attesting (``k8s_psat`` is re-attestable) must present the current one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, PluginConfigError

__all__ = ["AgentK8sPsat"]

DEFAULT_TOKEN_PATH = "/var/run/secrets/tokens/spire-agent"  # noqa: S105 - a path, not a secret
MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True)
class AgentK8sPsatConfig:
    """``plugin_data`` of the agent's ``NodeAttestor "k8s_psat"``."""

    cluster: str = ""
    token_path: str = DEFAULT_TOKEN_PATH


class AgentK8sPsat:
    """Presents the agent pod's projected service account token."""

    def __init__(self) -> None:
        self._config = AgentK8sPsatConfig()

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(AgentK8sPsatConfig, plugin_data)
        if not config.cluster:
            raise PluginConfigError("cluster", "the cluster name is required (a cluster of the server's configuration)")
        self._config = config

    @hookimpl
    def attestation_payload(self) -> bytes:
        path = Path(self._config.token_path)
        try:
            with path.open("rb") as token_file:
                token = token_file.read(MAX_TOKEN_BYTES + 1)
        except OSError as err:
            raise Internal(f"cannot read the service account token {path}: {err.strerror}") from None
        if len(token) > MAX_TOKEN_BYTES:
            raise Internal(f"{path} is larger than {MAX_TOKEN_BYTES} bytes")
        text = token.decode("ascii", errors="replace").strip()
        if not text:
            raise Internal(f"the service account token {path} is empty")
        return json.dumps({"cluster": self._config.cluster, "token": text}).encode()
