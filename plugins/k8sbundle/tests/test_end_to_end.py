"""A real server keeping the bundle ConfigMap current with k8sbundle, through a CA rotation.

The ConfigMap, read back through the kubernetes client as an agent's bootstrap would read
it, holds the PEM of exactly the X.509 authorities ``pyspire-server bundle show`` prints:
after start, after the next CA is prepared (two roots), and after the old one is revoked. A
server whose ConfigMap does not exist refuses to start, naming it, as SPIRE's does.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes.client
import kubernetes.config
import pytest
from cryptography import x509

from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.kube_api import KubeApiServer
from tests.support.waiting import eventually


def notifier_block(kubeconfig: Path, config_map: str = "spire-bundle") -> str:
    return (
        'Notifier "k8sbundle" {\n plugin_data {\n'
        f'  kube_config_file_path = "{kubeconfig}"\n  config_map = "{config_map}"\n'
        " }\n}"
    )


def config_map_roots(kubeconfig: Path) -> set[x509.Certificate]:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    pem = (api.read_namespaced_config_map("spire-bundle", "spire").data or {}).get("bundle.crt", "")
    return set(x509.load_pem_x509_certificates(pem.encode())) if pem else set()


def shown_roots(server: ServerDaemon) -> set[x509.Certificate]:
    return set(x509.load_pem_x509_certificates(server.bundle_pem().encode()))


@pytest.mark.slow
def test_the_config_map_follows_the_bundle_through_a_ca_rotation(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    server = start_server(tmp_path / "server", plugins=notifier_block(kubeconfig))
    try:
        assert config_map_roots(kubeconfig) == shown_roots(server)  # "bundle loaded" came before serving
        old = server.x509_authority_id()
        new = server.x509_authority_id("prepare", "Prepared")
        assert eventually(lambda: len(config_map_roots(kubeconfig)) == 2, timeout=20)
        assert config_map_roots(kubeconfig) == shown_roots(server)

        server.cli("localauthority", "x509", "activate", "-authorityID", new)
        server.cli("localauthority", "x509", "taint", "-authorityID", old)
        server.cli("localauthority", "x509", "revoke", "-authorityID", old)
        assert eventually(lambda: len(config_map_roots(kubeconfig)) == 1, timeout=20)
        assert config_map_roots(kubeconfig) == shown_roots(server)
    finally:
        server.stop()


def test_a_server_whose_config_map_is_missing_does_not_start(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "server"
    directory.mkdir()
    text, socket_path, _ = server_config(directory, plugins=notifier_block(kubeconfig, config_map="absent"))
    server = ServerDaemon("pyspire-server", directory, socket_path, text)
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(60) != 0
    log = server.log()
    assert "Server failed to start: a notifier failed the bundle loaded event" in log
    assert 'unable to get object spire/absent: NotFound: configmaps \\"absent\\" not found' in log
    assert "Traceback" not in log
    assert kube.get("configmaps", "absent", "spire") is None
