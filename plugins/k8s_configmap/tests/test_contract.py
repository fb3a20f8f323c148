"""k8s_configmap under the BundlePublisher contract, through the kubernetes client against the fake API server."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import BundlePublisherContract
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.spiffe import Bundle

from tests.support.free_port import free_port
from tests.support.kube_api import KubeApiServer


def cluster(kubeconfig: Path) -> dict[str, str]:
    return {
        "configmap_name": "example.org",
        "configmap_key": "bundle",
        "namespace": "spire",
        "kubeconfig_path": str(kubeconfig),
        "format": "spiffe",
    }


class TestK8sConfigMapContract(BundlePublisherContract):
    plugin = "k8s_configmap"

    @pytest.fixture
    def plugin_data(self, kubeconfig: Path, kube: KubeApiServer) -> Mapping[str, Any]:
        self.kube = kube
        return {"clusters": {"local": cluster(kubeconfig)}}

    @pytest.fixture
    def unreachable_plugin_data(self, kube: KubeApiServer, tmp_path: Path) -> Mapping[str, Any]:
        path = kube.kubeconfig(tmp_path / "kube", name="closed.yaml")
        path.write_text(path.read_text().replace(kube.url, f"https://127.0.0.1:{free_port()}"))
        return {"clusters": {"local": cluster(path)}}

    def delivered_bundle(self, plugin_data: Mapping[str, Any]) -> Bundle | None:
        config_map = self.kube.get("configmaps", "example.org", "spire")
        if config_map is None:
            return None
        return Bundle.parse(TEST_TRUST_DOMAIN, config_map["data"]["bundle"].encode())
