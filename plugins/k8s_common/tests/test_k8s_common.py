"""The shared Kubernetes client against the HTTPS fake API server: made from a kubeconfig or refused by key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from pyspire.plugin.errors import PluginConfigError
from pyspire_k8s_common import api_client, status_reason

from tests.support.kube_api import KubeApiServer


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeApiServer]:
    server = KubeApiServer().start(tmp_path)
    server.put("configmaps", {"metadata": {"name": "spire-bundle", "namespace": "spire"}, "data": {"k": "v"}})
    yield server
    server.stop()


def test_a_kubeconfig_s_client_reaches_its_cluster_and_does_not_retry(kube: KubeApiServer, tmp_path: Path) -> None:
    client = api_client(str(kube.kubeconfig(tmp_path)), key="kube_config_file")
    core = kubernetes.client.CoreV1Api(client)
    assert core.read_namespaced_config_map("spire-bundle", "spire").data == {"k": "v"}
    assert client.configuration.retries == 0

    kube.unavailable = True
    with pytest.raises(ApiException) as refused:
        core.read_namespaced_config_map("spire-bundle", "spire")
    assert refused.value.status == 503
    assert len([r for r in kube.requests if "spire-bundle" in r]) == 2, "a refused call was tried again"


def test_a_kubeconfig_that_cannot_be_loaded_is_refused_by_the_caller_s_key(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PluginConfigError) as refused:
        api_client(str(missing), key="clusters.c1.kubeconfig_path", failure="failed to create client for c1")
    assert refused.value.key == "clusters.c1.kubeconfig_path"
    assert refused.value.reason.startswith(f"failed to create client for c1: cannot load {missing}: ")

    garbled = tmp_path / "garbled.yaml"
    garbled.write_text("clusters: [unterminated\n")
    with pytest.raises(PluginConfigError, match=f"cannot load {garbled}"):
        api_client(str(garbled), key="kube_config_file")


def test_without_a_kubeconfig_the_in_cluster_account_is_used_and_its_absence_said(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(PluginConfigError) as refused:
        api_client("", key="kube_config_file_path")
    assert refused.value.key == "kube_config_file_path"
    assert "cannot load the in-cluster service account (no kubeconfig given)" in refused.value.reason


def test_a_refusal_is_told_in_the_api_server_s_words(kube: KubeApiServer, tmp_path: Path) -> None:
    core = kubernetes.client.CoreV1Api(api_client(str(kube.kubeconfig(tmp_path)), key="kube_config_file"))
    with pytest.raises(ApiException) as refused:
        core.read_namespaced_config_map("absent", "spire")
    reason = status_reason(refused.value)
    assert reason.startswith("NotFound: ")
    assert '"absent"' in reason

    assert status_reason(ApiException(status=502, reason="Bad Gateway")) == "HTTP 502 Bad Gateway"


def test_an_api_server_out_of_reach_is_told_by_the_transport_error(kube: KubeApiServer, tmp_path: Path) -> None:
    core = kubernetes.client.CoreV1Api(api_client(str(kube.kubeconfig(tmp_path)), key="kube_config_file"))
    kube.stop()
    with pytest.raises(urllib3.exceptions.HTTPError) as failed:
        core.read_namespaced_config_map("spire-bundle", "spire", _request_timeout=5)
    assert "Connection refused" in status_reason(failed.value)
