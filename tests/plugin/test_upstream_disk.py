"""UpstreamAuthority "disk": the server's CA as an intermediate of a CA on disk."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.crypto import LocalSigner, build_csr
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.testing import load_plugin, make_core_config

from tests.plugin.test_x509pop import key_pem, pem
from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.pki import Issued, make_ca


def write_ca(tmp_path: Path, ca: Issued, *, bundle: Issued | None = None) -> dict[str, str]:
    (tmp_path / "upstream.pem").write_bytes(pem(ca.certificate))
    (tmp_path / "upstream.key").write_bytes(key_pem(ca.key))
    data = {"cert_file_path": str(tmp_path / "upstream.pem"), "key_file_path": str(tmp_path / "upstream.key")}
    if bundle is not None:
        (tmp_path / "roots.pem").write_bytes(pem(bundle.certificate))
        data["bundle_file_path"] = str(tmp_path / "roots.pem")
    return data


def load(tmp_path: Path, data: dict[str, str]) -> UpstreamAuthority:
    handle = load_plugin("server", "UpstreamAuthority", "disk", data, make_core_config(tmp_path / "d"))
    assert isinstance(handle, UpstreamAuthority)
    return handle


def test_signs_an_intermediate_ca_for_the_trust_domain(tmp_path: Path) -> None:
    root = make_ca(name="upstream root", lifetime=timedelta(hours=2))
    upstream = load(tmp_path, write_ca(tmp_path, root))
    key = ec.generate_private_key(ec.SECP256R1())
    minted = upstream.mint_x509_ca(build_csr(LocalSigner(key)), timedelta(days=7))
    certificate = minted.ca_chain[0]
    assert minted.upstream_roots == (root.certificate,)
    assert len(minted.ca_chain) == 1
    certificate.verify_directly_issued_by(root.certificate)
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    # Never beyond the upstream CA's own expiry.
    assert certificate.not_valid_after_utc <= root.certificate.not_valid_after_utc


def test_intermediate_upstream_needs_its_roots_and_is_chained(tmp_path: Path) -> None:
    root = make_ca(name="root")
    intermediate = make_ca(issuer=root, name="intermediate")
    with pytest.raises(CatalogError, match="bundle_file_path"):
        load(tmp_path, write_ca(tmp_path, intermediate))
    upstream = load(tmp_path, write_ca(tmp_path, intermediate, bundle=root))
    minted = upstream.mint_x509_ca(build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1()))), timedelta(hours=1))
    assert minted.ca_chain[1] == intermediate.certificate
    assert minted.upstream_roots == (root.certificate,)


def test_an_upstream_ca_that_does_not_chain_to_the_bundle_is_refused(tmp_path: Path) -> None:
    """Regression: the disk plugin took any bundle_file_path, and the server then published
    roots its own CA did not chain to (every SVID failed verification). awssecret refused it."""
    intermediate = make_ca(issuer=make_ca(name="root"), name="intermediate")
    with pytest.raises(CatalogError, match="could not be validated with the provided bundle"):
        load(tmp_path, write_ca(tmp_path, intermediate, bundle=make_ca(name="another root")))


def test_key_that_does_not_match_is_refused(tmp_path: Path) -> None:
    data = write_ca(tmp_path, make_ca())
    (tmp_path / "upstream.key").write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(CatalogError, match="does not belong"):
        load(tmp_path, data)


def test_server_svids_chain_to_the_upstream_root(tmp_path: Path) -> None:
    root = make_ca(name="corporate root", lifetime=timedelta(days=30))
    data = write_ca(tmp_path, root)
    plugin = (
        'UpstreamAuthority "disk" {\n plugin_data {\n'
        f' cert_file_path = "{data["cert_file_path"]}"\n key_file_path = "{data["key_file_path"]}"\n'
        " }\n }"
    )
    server = start_server(tmp_path / "server", plugins=plugin)
    try:
        bundle = x509.load_pem_x509_certificates(server.bundle_pem().encode())
        assert bundle == [root.certificate]
        out = tmp_path / "minted"
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/under-upstream", "-write", str(out))
        chain = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
        assert len(chain) == 2  # leaf and the server's intermediate CA
        if shutil.which("openssl"):
            verified = subprocess.run(
                [
                    "openssl",
                    "verify",
                    "-CAfile",
                    str(tmp_path / "upstream.pem"),
                    "-untrusted",
                    str(out / "svid.pem"),
                    str(out / "svid.pem"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert verified.returncode == 0, verified.stderr
    finally:
        server.stop()


def test_no_svid_outlives_the_upstream_root(tmp_path: Path) -> None:
    # A 2 h root signed a 24 h intermediate, which signs the server's 24 h CA: every SVID ends
    # with the root, and the server says why its CA is cut short.
    root = make_ca(name="short root", lifetime=timedelta(hours=2))
    intermediate = make_ca(issuer=root, name="long intermediate", lifetime=timedelta(hours=24))
    data = write_ca(tmp_path, intermediate, bundle=root)
    plugin = (
        'UpstreamAuthority "disk" {\n plugin_data {\n'
        f' cert_file_path = "{data["cert_file_path"]}"\n key_file_path = "{data["key_file_path"]}"\n'
        f' bundle_file_path = "{data["bundle_file_path"]}"\n'
        " }\n }"
    )
    server = start_server(tmp_path / "server", plugins=plugin, ca_ttl="24h")
    try:
        out = tmp_path / "minted"
        server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/long", "-ttl", "10h", "-write", str(out))
        chain = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
        assert chain[0].not_valid_after_utc <= root.certificate.not_valid_after_utc
        assert chain[1].not_valid_after_utc > root.certificate.not_valid_after_utc  # the CA itself, as signed
        assert "The upstream CA outlives the chain above it" in server.log()
    finally:
        server.stop()


def test_an_expired_upstream_ca_stops_the_server_at_start_with_the_reason(tmp_path: Path) -> None:
    """Reliability case 22: a server whose upstream CA has lapsed cannot sign a CA that verifies;
    it refuses to start and says why, instead of serving certificates no one can verify."""
    lapsed = make_ca(name="lapsed root", not_before=datetime.now(UTC) - timedelta(days=2), lifetime=timedelta(days=1))
    data = write_ca(tmp_path, lapsed)
    plugin = (
        'UpstreamAuthority "disk" {\n plugin_data {\n'
        f' cert_file_path = "{data["cert_file_path"]}"\n key_file_path = "{data["key_file_path"]}"\n'
        " }\n }"
    )
    text, socket_path, _ = server_config(tmp_path / "server", plugins=plugin)
    server = ServerDaemon("pyspire-server", tmp_path / "server", socket_path, text)
    server.start(wait=False)
    assert server.process is not None
    assert server.process.wait(30) == 1
    log = server.log()
    reason = "upstreamauthority(disk): the upstream CA has expired (subject CN=lapsed root, at "
    assert f"Server failed to start: {reason}" in log, log
    assert "Traceback" not in log
    assert not socket_path.exists()
