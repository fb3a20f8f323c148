"""k8sbundle under the Notifier contract, through the kubernetes client against the fake API server."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pyspire.plugin.testing import NotifierContract
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN
from pyspire.spiffe import Bundle

from tests.support.free_port import free_port
from tests.support.kube_api import KubeApiServer


class TestK8sBundleContract(NotifierContract):
    plugin = "k8sbundle"
    delivers_jwt_authorities = False  # the ConfigMap holds the PEM of the X.509 roots, as in SPIRE

    @pytest.fixture
    def plugin_data(self, kubeconfig: Path, kube: KubeApiServer) -> Mapping[str, Any]:
        self.kube = kube
        return {"kube_config_file_path": str(kubeconfig)}

    @pytest.fixture
    def unreachable_plugin_data(self, kube: KubeApiServer, tmp_path: Path) -> Mapping[str, Any]:
        path = kube.kubeconfig(tmp_path / "kube", name="closed.yaml")
        path.write_text(path.read_text().replace(kube.url, f"https://127.0.0.1:{free_port()}"))
        return {"kube_config_file_path": str(path)}

    def delivered_bundle(self, plugin_data: Mapping[str, Any]) -> Bundle | None:
        config_map = self.kube.get("configmaps", "spire-bundle", "spire")
        assert config_map is not None
        pem = (config_map.get("data") or {}).get("bundle.crt")
        return None if pem is None else Bundle.parse_x509(TEST_TRUST_DOMAIN, pem.encode())
