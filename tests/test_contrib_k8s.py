"""contrib/k8s: the manifests parse, their configs load, and server and agent agree with each other.

No cluster runs here: what can be checked without one is that every config is one pyspire
accepts with the plugins it names installed, and that the names tying the pieces together (the
cluster, the agents' service account, the token audience and path, sockets and mounts, probe
ports) match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspire.config import load_agent_config_text, load_server_config_text
from pyspire.plugin.catalog import check_declarations

K8S = Path(__file__).resolve().parent.parent / "contrib" / "k8s"


def _documents(name: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all((K8S / name).read_text()) if document]


def _one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [document for document in documents if document["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def server() -> list[dict[str, Any]]:
    return _documents("server.yaml")


@pytest.fixture(scope="module")
def agent() -> list[dict[str, Any]]:
    return _documents("agent.yaml")


def _plugin_data(config: Any, kind: str, name: str) -> dict[str, Any]:
    (declaration,) = [d for d in config.plugins if d.type == kind and d.name == name]
    return dict(declaration.plugin_data)


def test_the_configs_load_with_their_plugins_installed(
    server: list[dict[str, Any]], agent: list[dict[str, Any]]
) -> None:
    server_config = load_server_config_text(_one(server, "ConfigMap")["data"]["server.conf"])
    agent_config = load_agent_config_text(_one(agent, "ConfigMap")["data"]["agent.conf"])
    check_declarations("server", server_config.plugins)
    check_declarations("agent", agent_config.plugins)
    assert server_config.warnings == ()
    assert agent_config.warnings == ()


def test_server_and_agent_agree_on_cluster_service_account_and_audience(
    server: list[dict[str, Any]], agent: list[dict[str, Any]]
) -> None:
    server_config = load_server_config_text(_one(server, "ConfigMap")["data"]["server.conf"])
    agent_config = load_agent_config_text(_one(agent, "ConfigMap")["data"]["agent.conf"])
    clusters = _plugin_data(server_config, "NodeAttestor", "k8s_psat")["clusters"]
    cluster = _plugin_data(agent_config, "NodeAttestor", "k8s_psat")["cluster"]
    account = _one(agent, "ServiceAccount")["metadata"]
    assert f"{account['namespace']}:{account['name']}" in clusters[cluster]["service_account_allow_list"]
    audience = clusters[cluster].get("audience", ["spire-server"])
    pod = _one(agent, "DaemonSet")["spec"]["template"]["spec"]
    (projected,) = [v for v in pod["volumes"] if "projected" in v]
    token = projected["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] in audience
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == projected["name"])
    assert f"{mount['mountPath']}/{token['path']}" == "/var/run/secrets/tokens/spire-agent"  # k8s_psat's token_path
    service = _one(server, "Service")
    assert agent_config.agent.servers == ((service["metadata"]["name"], service["spec"]["ports"][0]["port"]),)


@pytest.mark.parametrize(
    ("name", "kind", "conf"), [("server.yaml", "StatefulSet", "server.conf"), ("agent.yaml", "DaemonSet", "agent.conf")]
)
def test_every_path_in_a_config_is_mounted_and_probes_hit_the_health_listener(name: str, kind: str, conf: str) -> None:
    documents = _documents(name)
    text = _one(documents, "ConfigMap")["data"][conf]
    config = load_server_config_text(text) if conf == "server.conf" else load_agent_config_text(text)
    container = _one(documents, kind)["spec"]["template"]["spec"]["containers"][0]
    mounts = [Path(m["mountPath"]) for m in container["volumeMounts"]]
    section = config.server if conf == "server.conf" else config.agent
    for path in (Path(section.data_dir), Path(section.socket_path)):
        assert any(path.is_relative_to(mount) for mount in mounts), f"{path} is not on a volume"
    assert container["args"][-1] == f"/etc/pyspire/{conf}"
    assert Path("/etc/pyspire") in mounts
    health = config.health_checks
    assert health.listener_enabled
    for probe, path in (("livenessProbe", health.live_path), ("readinessProbe", health.ready_path)):
        get = container[probe]["httpGet"]
        port = (
            get["port"]
            if isinstance(get["port"], int)
            else next(p["containerPort"] for p in container["ports"] if p["name"] == get["port"])
        )
        assert (get["path"], port) == (path, health.bind_port)


def test_the_agent_socket_is_on_the_nodes_shared_directory(agent: list[dict[str, Any]]) -> None:
    config = load_agent_config_text(_one(agent, "ConfigMap")["data"]["agent.conf"])
    pod = _one(agent, "DaemonSet")["spec"]["template"]["spec"]
    sockets = next(v for v in pod["volumes"] if v["name"] == "sockets")
    assert Path(config.agent.socket_path).parent == Path(sockets["hostPath"]["path"])
    assert pod["hostPID"] is True
