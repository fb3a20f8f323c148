"""k8sbundle against the fake API server: what it writes where, conflicts, failures, configuration."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyspire_k8sbundle.notifier
import pytest
from pyspire.plugin.errors import CatalogError, PluginError
from pyspire.plugin.facades import Notifier
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config
from pyspire.plugin.testing.pki import TestCa
from pyspire.spiffe import Bundle

from tests.support.kube_api import KubeApiServer
from tests.support.waiting import eventually


def notifier(tmp_path: Path, plugin_data: Mapping[str, Any]) -> Notifier:
    handle = load_plugin("server", "Notifier", "k8sbundle", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, Notifier)
    return handle


def two_root_bundle() -> Bundle:
    return TestCa.create(TEST_TRUST_DOMAIN).bundle(TestCa.create(TEST_TRUST_DOMAIN).certificate)


def data(kube: KubeApiServer, name: str = "spire-bundle", namespace: str = "spire") -> dict[str, str]:
    config_map = kube.get("configmaps", name, namespace)
    assert config_map is not None
    return dict(config_map.get("data") or {})


def patches(kube: KubeApiServer) -> list[str]:
    return [request for request in kube.requests if request.startswith("PATCH")]


def test_the_x509_roots_are_written_as_pem_beside_the_other_keys(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    kube.put("configmaps", {"metadata": {"name": "agents", "namespace": "infra"}, "data": {"other": "kept"}})
    bundle = two_root_bundle()
    handle = notifier(
        tmp_path,
        {
            "namespace": "infra",
            "config_map": "agents",
            "config_map_key": "bootstrap.crt",
            "kube_config_file_path": str(kubeconfig),
        },
    )
    handle.notify_bundle_loaded(bundle)
    assert data(kube, "agents", "infra") == {"other": "kept", "bootstrap.crt": bundle.marshal_x509_pem().decode()}
    assert data(kube) == {}  # the default ConfigMap is not touched
    rotated = two_root_bundle()
    handle.notify_bundle_updated(rotated)
    assert data(kube, "agents", "infra")["bootstrap.crt"] == rotated.marshal_x509_pem().decode()


def test_a_conflicting_writer_is_read_again_and_the_newest_bundle_wins(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    """Another server writes between our read and our patch, three times: the fourth patch lands."""
    handle = notifier(tmp_path, {"kube_config_file_path": str(kubeconfig)})
    raced = 0

    def other_server(api: KubeApiServer, method: str, key: tuple[str, str, str]) -> None:
        nonlocal raced
        if method == "PATCH" and raced < 3:
            raced += 1
            api.update("configmaps", key[2], key[1], lambda obj: obj.setdefault("data", {}).update(race=str(raced)))

    kube.before_write.append(other_server)
    bundle = two_root_bundle()
    handle.notify_bundle_updated(bundle)
    assert data(kube) == {"race": "3", "bundle.crt": bundle.marshal_x509_pem().decode()}
    assert len(patches(kube)) == 4
    assert kube.requests.count("GET /api/v1/namespaces/spire/configmaps/spire-bundle") == 5  # listed, then read 4 times


def test_conflicts_that_never_end_fail_after_five_attempts(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    handle = notifier(tmp_path, {"kube_config_file_path": str(kubeconfig)})
    kube.before_write.append(
        lambda api, method, key: api.update("configmaps", key[2], key[1], lambda obj: obj.update(data={"x": "y"}))
    )
    with pytest.raises(PluginError, match=r"unable to update: spire/spire-bundle: .*Conflict.*has been modified"):
        handle.notify_bundle_updated(two_root_bundle())
    assert len(patches(kube)) == 5
    assert data(kube) == {"x": "y"}


def test_a_missing_config_map_fails_the_notification_and_is_not_created(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    handle = notifier(tmp_path, {"config_map": "absent", "kube_config_file_path": str(kubeconfig)})
    with pytest.raises(PluginError, match=r'unable to get list: .*spire/absent.*configmaps "absent" not found'):
        handle.notify_bundle_loaded(two_root_bundle())
    assert kube.get("configmaps", "absent", "spire") is None
    assert patches(kube) == []


def test_a_refused_patch_fails_the_notification(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.forbidden.add(("PATCH", "configmaps"))
    handle = notifier(tmp_path, {"kube_config_file_path": str(kubeconfig)})
    with pytest.raises(PluginError, match=r"spire/spire-bundle: unable to patch spire/spire-bundle: Forbidden"):
        handle.notify_bundle_loaded(two_root_bundle())
    assert data(kube) == {}


def test_every_cluster_is_written_and_one_failing_does_not_stop_the_others(tmp_path: Path) -> None:
    clusters = []
    for index in range(3):
        (tmp_path / f"c{index}").mkdir()
        clusters.append(KubeApiServer().start(tmp_path / f"c{index}"))
    try:
        for cluster in clusters[:2]:
            cluster.put("configmaps", {"metadata": {"name": "spire-bundle", "namespace": "spire"}})
        handle = notifier(
            tmp_path,
            {
                "kube_config_file_path": str(clusters[0].kubeconfig(tmp_path / "c0")),
                "clusters": [
                    {"kube_config_file_path": str(clusters[1].kubeconfig(tmp_path / "c1"))},
                    {"kube_config_file_path": str(clusters[2].kubeconfig(tmp_path / "c2"))},
                ],
            },
        )
        bundle = two_root_bundle()
        with pytest.raises(
            PluginError,
            match=r'^notifier\(k8sbundle\): unable to update: unable to get list: [^,]*"spire-bundle" not found$',
        ):
            handle.notify_bundle_updated(bundle)
        for cluster in clusters[:2]:
            assert data(cluster) == {"bundle.crt": bundle.marshal_x509_pem().decode()}
    finally:
        for cluster in clusters:
            cluster.stop()


def webhook_configuration(name: str, labels: dict[str, str], ca_bundle: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "webhooks": [
            {
                "name": f"{name}.{hook}.example.org",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": {"service": {"namespace": "spire", "name": hook}, "caBundle": ca_bundle},
            }
            for hook in ("a", "b")
        ],
    }


def api_service(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 10},
    }


def ca_bundles(kube: KubeApiServer, plural: str, name: str) -> list[str]:
    obj = kube.get(plural, name)
    assert obj is not None
    if plural == "apiservices":
        return [obj["spec"].get("caBundle", "")]
    assert [hook["clientConfig"]["service"]["name"] for hook in obj["webhooks"]] == ["a", "b"]  # the rest kept
    return [hook["clientConfig"].get("caBundle", "") for hook in obj["webhooks"]]


def test_labelled_webhooks_and_api_services_get_the_bundle_and_others_do_not(
    kube: KubeApiServer,
    kubeconfig: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the poller's debug line is written too (a reserved field once killed it)
    monkeypatch.setattr(pyspire_k8sbundle.notifier, "LABELLED_POLL_SECONDS", 0.2)
    labelled = {"spiffe.io/webhook": "true", "spiffe.io/api_service": "true"}
    for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        kube.put(plural, webhook_configuration("spire", labelled))
        kube.put(plural, webhook_configuration("other", {"spiffe.io/webhook": "false"}, ca_bundle="b3RoZXI="))
    kube.put("apiservices", api_service("v1beta1.metrics.k8s.io", labelled))
    kube.put("apiservices", api_service("v1.other", {}))
    handle = notifier(
        tmp_path,
        {
            "kube_config_file_path": str(kubeconfig),
            "webhook_label": "spiffe.io/webhook",
            "api_service_label": "spiffe.io/api_service",
        },
    )
    try:
        bundle = two_root_bundle()
        encoded = base64.b64encode(bundle.marshal_x509_pem()).decode()
        handle.notify_bundle_loaded(bundle)
        for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            assert ca_bundles(kube, plural, "spire") == [encoded, encoded]
            assert ca_bundles(kube, plural, "other") == ["b3RoZXI=", "b3RoZXI="]
        assert ca_bundles(kube, "apiservices", "v1beta1.metrics.k8s.io") == [encoded]
        service = kube.get("apiservices", "v1beta1.metrics.k8s.io")
        assert service is not None
        assert (service["spec"]["groupPriorityMinimum"], service["spec"]["versionPriority"]) == (100, 10)
        assert ca_bundles(kube, "apiservices", "v1.other") == [""]

        # Created after the notification: found by the next listing; the up-to-date ones are left alone.
        written = len(patches(kube))
        kube.put("validatingwebhookconfigurations", webhook_configuration("later", labelled))
        assert eventually(lambda: ca_bundles(kube, "validatingwebhookconfigurations", "later") == [encoded] * 2)
        assert eventually(lambda: "Set bundle for object" in caplog.text)
        kube.requests.clear()
        assert eventually(lambda: len([r for r in kube.requests if "apiservices?" in r]) >= 2)
        assert len(patches(kube)) == 0, "objects already holding the bundle were patched again"
        assert written == 4  # the ConfigMap, two webhook configurations, one APIService
    finally:
        handle.close()


@pytest.mark.parametrize(
    ("plugin_data", "key", "reason"),
    [
        (
            {"clusters": [{"namespace": "spire"}]},
            "clusters[0].kube_config_file_path",
            "is missing kube_config_file_path",
        ),
        ({"kube_config_file_path": "/nonexistent/kubeconfig"}, "kube_config_file_path", "cannot load /nonexistent"),
        ({}, "kube_config_file_path", "cannot load the in-cluster service account"),
        ({"config_map_name": "x"}, "config_map_name", "unknown"),
        ({"clusters": {"a": {}}}, "clusters", ""),
    ],
)
def test_bad_configuration_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin_data: dict[str, Any], key: str, reason: str
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(CatalogError, match=f'key "{re.escape(key)}".*{reason}'):
        notifier(tmp_path, plugin_data)


def test_a_second_cluster_missing_its_kubeconfig_is_refused_even_with_a_root_cluster(
    kubeconfig: Path, tmp_path: Path
) -> None:
    plugin_data = {"kube_config_file_path": str(kubeconfig), "clusters": [{"kube_config_file_path": ""}]}
    with pytest.raises(CatalogError, match=r'key "clusters\[0\].kube_config_file_path"'):
        notifier(tmp_path, plugin_data)


def test_the_labelled_poller_outlives_an_object_it_cannot_handle(
    kube: KubeApiServer,
    kubeconfig: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(pyspire_k8sbundle.notifier, "LABELLED_POLL_SECONDS", 0.2)
    labelled = {"spiffe.io/webhook": "true", "spiffe.io/api_service": "true"}
    handle = notifier(
        tmp_path,
        {
            "kube_config_file_path": str(kubeconfig),
            "webhook_label": "spiffe.io/webhook",
            "api_service_label": "spiffe.io/api_service",
        },
    )
    try:
        bundle = two_root_bundle()
        handle.notify_bundle_loaded(bundle)
        kube.put("apiservices", {"metadata": {"name": "v1.odd", "labels": labelled}})  # no spec at all
        assert eventually(lambda: "Unable to set bundle for object" in caplog.text)
        kube.put("mutatingwebhookconfigurations", webhook_configuration("later", labelled))
        encoded = base64.b64encode(bundle.marshal_x509_pem()).decode()
        assert eventually(lambda: ca_bundles(kube, "mutatingwebhookconfigurations", "later") == [encoded] * 2)
    finally:
        handle.close()
