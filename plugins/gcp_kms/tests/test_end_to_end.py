"""A real server whose keys are Cloud KMS CryptoKeys (the fake): it signs there, restarts, keeps its keys.

The X.509 CA's public key and the JWT signing key are the ones the fake Cloud KMS holds for
SPIRE's key IDs of this server; a minted X509-SVID verifies with ``openssl`` against the
server's bundle and a minted JWT-SVID against the bundle's JWT keys. After a restart the
server serves the same CA certificate and no CryptoKey or version was added. A server whose
Cloud KMS cannot be reached does not start, and says why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plugins.gcp_kms.tests.conftest import KEY_RING
from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.free_port import free_port
from tests.support.gcp_kms import FakeKms
from tests.support.openssl import openssl_verify

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def gcp_kms_key_manager(plugin_data: dict[str, Any]) -> str:
    lines = "".join(f'  {key} = "{value}"\n' for key, value in plugin_data.items())
    return f'KeyManager "gcp_kms" {{\n plugin_data {{\n{lines} }}\n}}'


def spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def server_keys(kms: FakeKms, server_id: str) -> dict[str, list[str]]:
    """This server's CryptoKeys in the fake, by SPIRE key ID, with their version names."""
    prefix = f"{KEY_RING}/cryptoKeys/spire-key-"
    found = {}
    for name, key in kms.keys.items():
        if name.startswith(prefix) and key.labels.get("spire-server-id") == server_id:
            found[name[len(prefix) + 37 :]] = [version.name for version in key.versions]
    return found


def kms_public_key(kms: FakeKms, server_id: str, key_id: str) -> bytes:
    """The public key of the newest version of this server's CryptoKey for ``key_id``."""
    [key] = [
        key
        for name, key in kms.keys.items()
        if name.endswith(f"-{key_id}") and key.labels.get("spire-server-id") == server_id
    ]
    return spki(key.versions[-1].private.public_key())


def mint_x509(server: ServerDaemon, directory: Path) -> tuple[x509.Certificate, x509.Certificate]:
    """An X509-SVID the server signs, and its CA (the server's own root: no UpstreamAuthority)."""
    directory.mkdir(parents=True, exist_ok=True)
    server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/workload", "-write", str(directory))
    (svid,) = x509.load_pem_x509_certificates((directory / "svid.pem").read_bytes())
    (ca,) = x509.load_pem_x509_certificates((directory / "bundle.pem").read_bytes())
    bundle = x509.load_pem_x509_certificates(server.bundle_pem().encode())
    openssl_verify([svid], bundle, directory / "verify")
    return svid, ca


def jwt_verifies_against_bundle(server: ServerDaemon) -> str:
    """Mint a JWT-SVID, check it with the bundle's key of its ``kid``; return that ``kid``."""
    token = server.cli("jwt", "mint", "-spiffeID", "spiffe://example.org/workload", "-audience", "db").stdout.strip()
    kid = jwt.get_unverified_header(token)["kid"]
    bundle = json.loads(server.cli("bundle", "show", "-format", "spiffe").stdout)
    [jwk] = [key for key in bundle["keys"] if key.get("use") == "jwt-svid" and key["kid"] == kid]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="db")
    assert claims["sub"] == "spiffe://example.org/workload"
    return kid


@pytest.mark.slow
def test_a_restarted_server_signs_with_the_same_cloud_kms_keys(
    kms: FakeKms, gcp_plugin_data: dict[str, Any], tmp_path: Path
) -> None:
    server = start_server(tmp_path / "server", key_manager=gcp_kms_key_manager(gcp_plugin_data))
    try:
        server_id = Path(gcp_plugin_data["key_identifier_file"]).read_text().strip()
        _, ca = mint_x509(server, tmp_path / "first")
        assert spki(ca.public_key()) == kms_public_key(kms, server_id, "x509-CA-A")
        kid = jwt_verifies_against_bundle(server)
        jwt_signer = serialization.load_der_public_key(kms_public_key(kms, server_id, "JWT-Signer-A"))
        token = server.cli("jwt", "mint", "-spiffeID", "spiffe://example.org/w2", "-audience", "db").stdout.strip()
        jwt.decode(token, jwt_signer, algorithms=["ES256"], audience="db")  # type: ignore[arg-type]
        keys_before = server_keys(kms, server_id)
        assert {"x509-CA-A", "JWT-Signer-A"} <= set(keys_before)

        assert server.stop() == 0
        server.start()
        _, ca_after = mint_x509(server, tmp_path / "second")
        assert ca_after == ca
        assert jwt_verifies_against_bundle(server) == kid
        assert server_keys(kms, server_id) == keys_before
    finally:
        server.stop()


def test_a_server_that_cannot_reach_cloud_kms_does_not_start_and_says_why(
    gcp_plugin_data: dict[str, Any], tmp_path: Path
) -> None:
    unreachable = {**gcp_plugin_data, "kms_endpoint": f"http://127.0.0.1:{free_port()}"}
    text, socket_path, _ = server_config(tmp_path / "server", key_manager=gcp_kms_key_manager(unreachable))
    server = ServerDaemon("pyspire-server", tmp_path / "server", socket_path, text)
    with pytest.raises(RuntimeError, match="exited with"):
        server.start()
    log = server.log()
    assert "keymanager(gcp_kms): failed to list SPIRE Server keys in Cloud KMS: HTTPConnectionPool" in log
    assert "Traceback" not in log
    assert not socket_path.exists()
