"""cert-manager against the fake API server and issuer: the request it makes, each outcome, clean-up, config."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyspire_cert_manager.authority
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.plugin.errors import CatalogError, Internal, PermissionDenied, PluginError
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.testing.loading import TEST_TRUST_DOMAIN, load_plugin, make_core_config
from pyspire.plugin.testing.pki import make_csr

from plugins.cert_manager.tests.issuer import FakeIssuer
from tests.support.kube_api import KubeApiServer

LABEL = "cert-manager.spiffe.io/trust-domain"


def authority(tmp_path: Path, plugin_data: Mapping[str, Any]) -> UpstreamAuthority:
    handle = load_plugin("server", "UpstreamAuthority", "cert-manager", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, UpstreamAuthority)
    return handle


def requests_in(kube: KubeApiServer, namespace: str = "sandbox") -> list[dict[str, Any]]:
    return [obj for (plural, ns, _), obj in kube.objects.items() if plural == "certificaterequests" and ns == namespace]


def seen_requests(kube: KubeApiServer) -> list[dict[str, Any]]:
    """Every CertificateRequest as it was created (deleted ones included)."""
    created: list[dict[str, Any]] = []
    kube.on_create.append(lambda api, obj: created.append(obj))
    return created


def test_the_request_is_spire_s_and_finished_requests_are_deleted(
    kube: KubeApiServer,
    issuer: FakeIssuer,
    issuer_plugin_data: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every log line is written: none may carry a reserved field
    created = seen_requests(kube)
    csr, _ = make_csr(TEST_TRUST_DOMAIN)
    minted = authority(tmp_path, issuer_plugin_data).mint_x509_ca(csr, timedelta(hours=1))

    [request] = created
    assert re.fullmatch(r"spiffe-ca-\w+", request["metadata"]["name"])
    assert request["metadata"]["generateName"] == "spiffe-ca-"
    assert request["metadata"]["labels"] == {LABEL: "example.org"}
    spec = request["spec"]
    assert spec["issuerRef"] == {"name": "spire-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert (spec["duration"], spec["isCA"], spec["usages"]) == ("1h0m0s", True, ["cert sign", "crl sign"])
    sent = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
    assert sent.public_bytes(serialization.Encoding.DER) == csr

    assert minted.ca_chain == (issuer.signed[0], issuer.intermediate.certificate)
    assert minted.upstream_roots == (issuer.root.certificate,)
    assert requests_in(kube) == []  # signed, then deleted
    assert "Deleting stale CertificateRequest" in caplog.text


def test_a_cluster_issuer_of_another_group_is_referenced_as_configured(
    kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    issuer = FakeIssuer(name="corp-ca", kind="ClusterIssuer", group="issuers.example.org").attach(kube)
    plugin_data = {
        "issuer_name": "corp-ca",
        "issuer_kind": "ClusterIssuer",
        "issuer_group": "issuers.example.org",
        "namespace": "spire",
        "kube_config_file": str(kubeconfig),
    }
    minted = authority(tmp_path, plugin_data).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))
    assert minted.upstream_roots == (issuer.root.certificate,)


def test_a_denied_request_is_refused_and_deleted(
    kube: KubeApiServer, issuer: FakeIssuer, issuer_plugin_data: dict[str, str], tmp_path: Path
) -> None:
    issuer.mode = "deny"
    with pytest.raises(PermissionDenied, match="request has been denied"):
        authority(tmp_path, issuer_plugin_data).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))
    assert requests_in(kube) == []


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("fail", "request has failed"),
        ("no-ca", "no upstream CA root returned from request"),
        ("other-key", "the signed certificate is not for the key in the request"),
        ("unchained", "the returned chain is broken"),
        ("not-ca", "the signed certificate is not a CA"),
    ],
)
def test_an_issuer_answer_that_does_not_check_out_issues_nothing(
    issuer: FakeIssuer, issuer_plugin_data: dict[str, str], tmp_path: Path, mode: Any, reason: str
) -> None:
    issuer.mode = mode
    with pytest.raises(Internal, match=reason):
        authority(tmp_path, issuer_plugin_data).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))


def test_a_request_nobody_signs_times_out_and_is_left_for_the_issuer(
    kube: KubeApiServer,
    issuer: FakeIssuer,
    issuer_plugin_data: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pyspire_cert_manager.authority, "POLL_ATTEMPTS", 4)
    issuer.mode = "ignore"
    with pytest.raises(Internal, match="request did not become ready in time"):
        authority(tmp_path, issuer_plugin_data).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))
    assert len(requests_in(kube)) == 1  # not finished: not deleted


def test_only_this_trust_domain_s_finished_requests_are_deleted(
    kube: KubeApiServer, issuer: FakeIssuer, issuer_plugin_data: dict[str, str], tmp_path: Path
) -> None:
    def stored(name: str, trust_domain: str, conditions: list[dict[str, str]]) -> None:
        kube.put(
            "certificaterequests",
            {
                "metadata": {"name": name, "namespace": "sandbox", "labels": {LABEL: trust_domain}},
                "spec": {},
                "status": {"conditions": conditions},
            },
        )

    stored("old-failed", "example.org", [{"type": "Ready", "status": "False", "reason": "Failed"}])
    stored("old-denied", "example.org", [{"type": "Denied", "status": "True", "reason": "policy"}])
    stored("pending", "example.org", [{"type": "Ready", "status": "False", "reason": "Pending"}])
    stored("theirs", "other.org", [{"type": "Ready", "status": "True", "reason": "Issued"}])
    authority(tmp_path, issuer_plugin_data).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))
    assert sorted(obj["metadata"]["name"] for obj in requests_in(kube)) == ["pending", "theirs"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("forbidden", "failed to create object: Forbidden: certificaterequests is forbidden"),
        ("unavailable", "failed to create object: ServiceUnavailable"),
    ],
)
def test_an_api_error_issues_nothing(
    kube: KubeApiServer,
    issuer: FakeIssuer,
    issuer_plugin_data: dict[str, str],
    tmp_path: Path,
    fault: str,
    reason: str,
) -> None:
    if fault == "forbidden":
        kube.forbidden.add(("POST", "certificaterequests"))
    else:
        kube.unavailable = True
    with pytest.raises(PluginError, match=reason):
        authority(tmp_path, issuer_plugin_data).mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], timedelta(hours=1))
    assert issuer.signed == []


def test_publishing_jwt_keys_and_upstream_trust_are_unsupported(
    issuer_plugin_data: dict[str, str], tmp_path: Path
) -> None:
    handle = authority(tmp_path, issuer_plugin_data)
    assert not handle.implements("publish_jwt_key")
    assert not handle.implements("upstream_trust")


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"namespace": ""}, "namespace", "plugin configuration has empty namespace property"),
        ({"issuer_name": ""}, "issuer_name", "plugin configuration has empty issuer_name property"),
        ({"kube_config_file": "/nonexistent"}, "kube_config_file", "failed to create cert-manager client"),
        ({"kube_config_file_path": "/x"}, "kube_config_file_path", "unknown key"),
    ],
)
def test_bad_configuration_is_refused_by_name(
    issuer_plugin_data: dict[str, str], tmp_path: Path, changes: dict[str, str], key: str, reason: str
) -> None:
    with pytest.raises(CatalogError, match=f'key "{key}": {reason}'):
        authority(tmp_path, {**issuer_plugin_data, **changes})
