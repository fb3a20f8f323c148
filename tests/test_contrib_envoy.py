"""contrib/envoy/envoy.yaml is a valid Envoy bootstrap that asks the agent for what it serves.

The file is read into Envoy's own Bootstrap message (xds-protos, unknown fields refused), so
a misspelt field or a wrong ``@type`` fails here, not in an operator's Envoy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401 - registers the @type
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from pyspire.config.sections import AgentSection, Sds
from pyspire.spiffe import SpiffeId

ENVOY_YAML = Path(__file__).parent.parent / "contrib" / "envoy" / "envoy.yaml"


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_envoy_config_is_a_valid_bootstrap() -> None:
    document = yaml.safe_load(ENVOY_YAML.read_text())
    bootstrap = json_format.ParseDict(document, bootstrap_pb2.Bootstrap())
    assert [listener.name for listener in bootstrap.static_resources.listeners] == [
        "inbound_mtls",
        "outbound_to_frontend",
    ]


def test_the_envoy_config_asks_the_agent_for_names_it_serves() -> None:
    document = yaml.safe_load(ENVOY_YAML.read_text())
    names = Sds()
    secret_configs = [node for node in _walk(document) if "sds_config" in node and "name" in node]
    assert secret_configs
    for config in secret_configs:
        name = config["name"]
        if name not in (names.default_svid_name, names.default_bundle_name, names.default_all_bundles_name):
            SpiffeId.parse(name)
        service = config["sds_config"]["api_config_source"]["grpc_services"][0]
        assert service["envoy_grpc"]["cluster_name"] == "spire_agent"
        assert {"key": "workload.spiffe.io", "value": "true"} in service["initial_metadata"]
    pipes = [node["pipe"]["path"] for node in _walk(document) if "pipe" in node]
    assert pipes == [str(AgentSection.__dataclass_fields__["socket_path"].default)]
