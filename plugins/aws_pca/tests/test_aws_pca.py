"""aws_pca against the fake ACM PCA over real boto3: what it asks AWS for, what it returns, what it refuses."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pyspire.plugin import Internal, InvalidArgument, Unavailable
from pyspire.plugin.errors import CatalogError
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.testing import TEST_TRUST_DOMAIN, load_plugin, make_core_config, make_csr

from plugins.aws_pca.tests.conftest import Authority
from tests.support.free_port import free_port
from tests.support.moto import ACCOUNT, MotoServer
from tests.support.pki import make_ca, write_pem


def load(plugin_data: dict[str, Any], tmp_path: Path) -> UpstreamAuthority:
    handle = load_plugin("server", "UpstreamAuthority", "aws_pca", plugin_data, make_core_config(tmp_path))
    assert isinstance(handle, UpstreamAuthority)
    return handle


def mint(handle: UpstreamAuthority, ttl: timedelta = timedelta(hours=1)) -> Any:
    return handle.mint_x509_ca(make_csr(TEST_TRUST_DOMAIN)[0], ttl)


def test_the_request_is_spires_and_the_ca_may_sign_only_leaves(authority: Authority, tmp_path: Path) -> None:
    started = time.time()
    minted = mint(load(authority.plugin_data(), tmp_path), timedelta(hours=2))
    [request] = authority.pca.requests
    assert request.template_arn == "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen0/V1"
    assert request.signing_algorithm == "SHA256WITHECDSA"  # the authority's default
    assert request.validity["Type"] == "ABSOLUTE"
    # Whole seconds, as SPIRE sends them (time.Now().Add(ttl).Unix()).
    assert int(started) + 7200 <= request.validity["Value"] <= time.time() + 7200
    ca = minted.ca_chain[0]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert minted.ca_chain[1:] == (authority.ca.issued.certificate,)
    assert minted.upstream_roots == (authority.root.certificate,)


def test_configured_template_and_algorithm_are_sent(authority: Authority, tmp_path: Path) -> None:
    template = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen1/V1"
    data = authority.plugin_data(ca_signing_template_arn=template, signing_algorithm="SHA384WITHECDSA")
    minted = mint(load(data, tmp_path))
    [request] = authority.pca.requests
    assert (request.template_arn, request.signing_algorithm) == (template, "SHA384WITHECDSA")
    assert minted.ca_chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1


def test_issuance_is_waited_for(authority: Authority, tmp_path: Path) -> None:
    authority.pca.pending_polls = 2  # AWS answers RequestInProgressException twice first
    minted = mint(load(authority.plugin_data(), tmp_path))
    minted.ca_chain[0].verify_directly_issued_by(authority.ca.issued.certificate)


def test_the_supplemental_bundle_joins_the_roots_once(authority: Authority, tmp_path: Path) -> None:
    other = make_ca(name="another root")
    bundle = tmp_path / "supplemental.pem"
    write_pem(other, tmp_path / "other.pem", tmp_path / "other.key")
    write_pem(authority.root, tmp_path / "root.pem", tmp_path / "root.key")
    bundle.write_bytes((tmp_path / "other.pem").read_bytes() + (tmp_path / "root.pem").read_bytes())
    minted = mint(load(authority.plugin_data(supplemental_bundle_path=str(bundle)), tmp_path))
    assert minted.upstream_roots == (authority.root.certificate, other.certificate)


def test_an_assumed_role_makes_the_calls(authority: Authority, aws: MotoServer, tmp_path: Path) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/spire-server"
    minted = mint(load(authority.plugin_data(assume_role_arn=role), tmp_path))
    assert minted.upstream_roots == (authority.root.certificate,)


def refused(plugin_data: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(CatalogError) as raised:
        load(plugin_data, tmp_path)
    message = str(raised.value)
    assert message.startswith('plugins: UpstreamAuthority "aws_pca": ')
    return message


@pytest.mark.parametrize("key", ["region", "certificate_authority_arn"])
def test_a_required_key_is_named(authority: Authority, tmp_path: Path, key: str) -> None:
    assert f'key "{key}": is required' in refused({**authority.plugin_data(), key: ""}, tmp_path)


def test_an_unknown_authority_stops_the_server_with_awss_answer(authority: Authority, tmp_path: Path) -> None:
    gone = authority.ca.arn.replace(authority.ca.arn[-4:], "0000")
    message = refused({**authority.plugin_data(), "certificate_authority_arn": gone}, tmp_path)
    assert "failed to describe CertificateAuthority: ResourceNotFoundException" in message


def test_aws_out_of_reach_at_start_says_so(authority: Authority, tmp_path: Path) -> None:
    message = refused({**authority.plugin_data(), "endpoint": f"http://127.0.0.1:{free_port()}"}, tmp_path)
    assert "failed to describe CertificateAuthority: cannot reach AWS" in message


def test_an_unreadable_supplemental_bundle_is_named(authority: Authority, tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    message = refused({**authority.plugin_data(), "supplemental_bundle_path": str(tmp_path / "bad.pem")}, tmp_path)
    assert f"failed to load supplemental bundle {tmp_path / 'bad.pem'}" in message


def test_a_signing_algorithm_that_does_not_fit_is_awss_refusal(authority: Authority, tmp_path: Path) -> None:
    handle = load(authority.plugin_data(signing_algorithm="SHA256WITHRSA"), tmp_path)
    with pytest.raises(Internal, match="failed submitting CSR: InvalidArgsException"):
        mint(handle)
    assert authority.pca.requests == []


def test_an_inactive_authority_loads_and_refuses_to_issue(authority: Authority, tmp_path: Path) -> None:
    authority.ca.status = "DISABLED"
    handle = load(authority.plugin_data(), tmp_path)
    with pytest.raises(Internal, match="failed submitting CSR: InvalidStateException"):
        mint(handle)


def test_aws_out_of_reach_at_a_rotation_is_unavailable(authority: Authority, tmp_path: Path) -> None:
    handle = load(authority.plugin_data(), tmp_path)
    authority.pca.stop()
    with pytest.raises(Unavailable, match="failed submitting CSR: cannot reach AWS"):
        mint(handle)


def test_a_forged_csr_never_reaches_aws(authority: Authority, tmp_path: Path) -> None:
    handle = load(authority.plugin_data(), tmp_path)
    csr, _ = make_csr(TEST_TRUST_DOMAIN)
    with pytest.raises(InvalidArgument, match="signature does not verify"):
        handle.mint_x509_ca(csr[:-8] + bytes(8), timedelta(hours=1))
    assert authority.pca.requests == []
