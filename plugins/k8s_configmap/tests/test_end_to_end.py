"""A real server publishing its bundle to a ConfigMap with k8s_configmap, through a CA rotation.

The ConfigMap does not exist when the server starts: server-side apply creates it. Read back
through the kubernetes client, it is always the document ``pyspire-server bundle show -format
spiffe`` prints: after start, after the next CA is prepared, after the old one is revoked. A
configuration the plugin refuses stops the server before it serves anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest

from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.kube_api import KubeApiServer
from tests.support.waiting import eventually


def publisher_block(kubeconfig: Path, **changes: str) -> str:
    settings = {
        "configmap_name": "example.org",
        "configmap_key": "bundle",
        "namespace": "spire",
        "kubeconfig_path": str(kubeconfig),
        "format": "spiffe",
        **changes,
    }
    lines = "\n".join(f'                {key} = "{value}"' for key, value in settings.items())
    return (
        'BundlePublisher "k8s_configmap" {\n    plugin_data {\n        clusters "local" {\n'
        f"{lines}\n        }}\n    }}\n}}"
    )


def published(kubeconfig: Path) -> Any:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    try:
        config_map = api.read_namespaced_config_map("example.org", "spire")
    except kubernetes.client.exceptions.ApiException as err:
        if err.status == 404:
            return None
        raise
    return json.loads((config_map.data or {})["bundle"])


def shown(server: ServerDaemon) -> Any:
    return json.loads(server.cli("bundle", "show", "-format", "spiffe").stdout)


def x509_roots(document: Any) -> int:
    return 0 if document is None else len([key for key in document["keys"] if key["use"] == "x509-svid"])


@pytest.mark.slow
def test_the_config_map_follows_the_bundle_through_a_ca_rotation(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    server = start_server(tmp_path / "server", plugins=publisher_block(kubeconfig))
    try:
        assert eventually(lambda: published(kubeconfig) == shown(server), timeout=20)
        old = server.x509_authority_id()
        new = server.x509_authority_id("prepare", "Prepared")
        assert eventually(lambda: x509_roots(published(kubeconfig)) == 2, timeout=20)
        assert published(kubeconfig) == shown(server)

        server.cli("localauthority", "x509", "activate", "-authorityID", new)
        server.cli("localauthority", "x509", "taint", "-authorityID", old)
        server.cli("localauthority", "x509", "revoke", "-authorityID", old)
        assert eventually(lambda: x509_roots(published(kubeconfig)) == 1, timeout=20)
        assert published(kubeconfig) == shown(server)
    finally:
        server.stop()


def test_a_configuration_the_plugin_refuses_stops_the_server(kubeconfig: Path, tmp_path: Path) -> None:
    directory = tmp_path / "server"
    directory.mkdir()
    text, socket_path, _ = server_config(directory, plugins=publisher_block(kubeconfig, namespace=""))
    server = ServerDaemon("pyspire-server", directory, socket_path, text)
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(30) != 0
    assert (
        'Error: pyspire-server.conf: plugins: BundlePublisher "k8s_configmap": plugin_data: '
        'key "clusters.local.namespace": missing namespace in cluster "local"'
    ) in server.log()
    assert not socket_path.exists()
