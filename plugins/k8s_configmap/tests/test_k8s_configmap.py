"""k8s_configmap against the fake API server: formats, server-side apply, when it writes, configuration."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.plugin.errors import CatalogError, PluginError
from pyspire.plugin.facades import BundlePublisher
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config
from pyspire.plugin.testing.pki import TestCa
from pyspire.spiffe import Bundle

from tests.support.kube_api import KubeApiServer

MANAGER = "spire-bundlepublisher-k8s_configmap"


def cluster(kubeconfig: Path, **changes: Any) -> dict[str, Any]:
    return {
        "configmap_name": "example.org",
        "configmap_key": "bundle",
        "namespace": "spire",
        "kubeconfig_path": str(kubeconfig),
        "format": "spiffe",
        **changes,
    }


def publisher(tmp_path: Path, plugin_data: Mapping[str, Any]) -> BundlePublisher:
    handle = load_plugin("server", "BundlePublisher", "k8s_configmap", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, BundlePublisher)
    return handle


def full_bundle() -> Bundle:
    ca = TestCa.create(TEST_TRUST_DOMAIN)
    jwt_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    bundle = ca.bundle(TestCa.create(TEST_TRUST_DOMAIN).certificate).with_jwt_authority("jwt-key-1", jwt_key)
    return bundle.with_sequence_number(7).with_refresh_hint(timedelta(seconds=300))


def data(kube: KubeApiServer, name: str = "example.org", namespace: str = "spire") -> dict[str, str]:
    config_map = kube.get("configmaps", name, namespace)
    assert config_map is not None, f"no ConfigMap {namespace}/{name}"
    return dict(config_map.get("data") or {})


def applies(kube: KubeApiServer) -> list[str]:
    return [request for request in kube.requests if request.startswith("PATCH")]


def test_each_cluster_gets_the_bundle_in_its_format_by_server_side_apply(tmp_path: Path) -> None:
    servers = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        servers.append(KubeApiServer().start(tmp_path / name))
    one, two = servers
    try:
        two.put("configmaps", {"metadata": {"name": "agents", "namespace": "infra"}, "data": {"other": "kept"}})
        handle = publisher(
            tmp_path,
            {
                "clusters": {
                    "cluster-1": cluster(one.kubeconfig(tmp_path / "one")),
                    "cluster-2": cluster(
                        two.kubeconfig(tmp_path / "two"),
                        configmap_name="agents",
                        configmap_key="bundle.crt",
                        namespace="infra",
                        format="PEM",
                    ),
                }
            },
        )
        bundle = full_bundle()
        handle.publish_bundle(bundle)
        # Created in the first cluster, the SPIFFE document; in the second, PEM beside the key it had.
        assert json.loads(data(one)["bundle"]) == bundle.to_spiffe_document()
        assert data(two, "agents", "infra") == {"other": "kept", "bundle.crt": bundle.marshal_x509_pem().decode()}
        for server in servers:
            assert [re.sub(r"/configmaps/[^?]+", "/configmaps/X", r) for r in applies(server)] == [
                f"PATCH /api/v1/namespaces/{'spire' if server is one else 'infra'}/configmaps/X?fieldManager={MANAGER}"
            ]
    finally:
        for server in servers:
            server.stop()


def test_the_jwks_format_and_the_refresh_hint(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    bundle = full_bundle()
    publisher(
        tmp_path,
        {
            "clusters": {
                "a": cluster(kubeconfig, refresh_hint="10m"),
                "b": cluster(kubeconfig, configmap_name="jwks", format="jwks"),
                "c": cluster(kubeconfig, configmap_name="sub-second", refresh_hint="500ms"),
            }
        },
    ).publish_bundle(bundle)
    document = json.loads(data(kube)["bundle"])
    assert document == bundle.with_refresh_hint(timedelta(minutes=10)).to_spiffe_document()
    assert document["spiffe_refresh_hint"] == 600
    jwks = json.loads(data(kube, "jwks")["bundle"])
    assert "spiffe_refresh_hint" not in jwks
    assert all("use" not in key for key in jwks["keys"])
    assert len(jwks["keys"]) == len(bundle.x509_authorities) + len(bundle.jwt_authorities)
    # Under a second is no hint at all (SPIRE keeps whole seconds): the bundle's own stays.
    assert json.loads(data(kube, "sub-second")["bundle"])["spiffe_refresh_hint"] == 300


def test_an_unchanged_bundle_is_not_applied_again_and_a_failed_one_is(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    handle = publisher(tmp_path, {"clusters": {"local": cluster(kubeconfig)}})
    bundle = full_bundle()
    kube.unavailable = True
    with pytest.raises(PluginError, match=r'failed to apply ConfigMap for cluster "local": ServiceUnavailable'):
        handle.publish_bundle(bundle)
    kube.unavailable = False
    handle.publish_bundle(bundle)
    handle.publish_bundle(bundle)
    assert len(applies(kube)) == 2  # the refused one, the one that worked; none for the repeat
    assert json.loads(data(kube)["bundle"]) == bundle.to_spiffe_document()


def test_a_key_another_manager_owns_is_not_taken_and_the_other_clusters_are_written(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    kube.put("configmaps", {"metadata": {"name": "theirs", "namespace": "spire"}, "data": {"bundle": "their CA"}})
    kube.set_owner(("configmaps", "spire", "theirs"), "bundle", "kubectl")
    handle = publisher(
        tmp_path,
        {"clusters": {"mine": cluster(kubeconfig), "theirs": cluster(kubeconfig, configmap_name="theirs")}},
    )
    bundle = full_bundle()
    with pytest.raises(PluginError, match=r'cluster "theirs": Conflict: Apply failed with 1 conflict: .*"kubectl"'):
        handle.publish_bundle(bundle)
    assert data(kube, "theirs") == {"bundle": "their CA"}
    assert json.loads(data(kube)["bundle"]) == bundle.to_spiffe_document()
    with pytest.raises(PluginError):  # not remembered as published: tried again
        handle.publish_bundle(bundle)


def test_no_clusters_publishes_nothing_and_says_so(kube: KubeApiServer, tmp_path: Path) -> None:
    handle = publisher(tmp_path, {})
    handle.publish_bundle(full_bundle())
    assert kube.requests == []


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"format": ""}, "format", 'missing bundle format in cluster "c1"'),
        ({"namespace": ""}, "namespace", 'missing namespace in cluster "c1"'),
        ({"configmap_name": ""}, "configmap_name", 'missing configmap name in cluster "c1"'),
        ({"configmap_key": ""}, "configmap_key", 'missing configmap key in cluster "c1"'),
        ({"format": "der"}, "format", 'unknown bundle format "der"'),
        ({"refresh_hint": "-5m"}, "refresh_hint", "cannot be negative"),
        ({"kubeconfig_path": "/nonexistent"}, "kubeconfig_path", 'failed to create Kubernetes client for cluster "c1"'),
        ({"config_map": "x"}, "config_map", "unknown"),
    ],
)
def test_bad_configuration_is_refused_by_name(
    kubeconfig: Path, tmp_path: Path, changes: dict[str, str], key: str, reason: str
) -> None:
    named = re.escape(f"clusters.c1.{key}")
    with pytest.raises(CatalogError, match=f'key "{named}".*{reason}'):
        publisher(tmp_path, {"clusters": {"c1": cluster(kubeconfig, **changes)}})


def test_a_refresh_hint_that_is_not_a_duration_is_refused_by_name(kubeconfig: Path, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r'key "clusters.c1.refresh_hint": invalid duration "soon"'):
        publisher(tmp_path, {"clusters": {"c1": cluster(kubeconfig, refresh_hint="soon")}})


def test_in_cluster_credentials_outside_a_cluster_are_refused_by_name(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(CatalogError, match=r'key "clusters\.c1\.kubeconfig_path".*in-cluster service account'):
        publisher(tmp_path, {"clusters": {"c1": cluster(kubeconfig, kubeconfig_path="")}})
