"""A real server whose keys are in moto's KMS: it signs there, restarts, and signs with the same keys.

The X.509 CA's public key and the JWT signing key are the ones KMS holds under SPIRE's aliases;
after a restart the server uses the same CA certificate (no new KMS key is made) and what it
signs verifies with ``openssl`` against its bundle. A server whose KMS cannot be reached does
not start, and says why in one line.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import boto3
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.free_port import free_port
from tests.support.moto import MotoServer, aws_environment

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def kms_key_manager(directory: Path) -> str:
    return (
        'KeyManager "aws_kms" {\n plugin_data {\n  region = "us-west-2"\n'
        f'  key_identifier_file = "{directory / "server_id"}"\n }}\n}}'
    )


def kms_public_key(alias: str) -> bytes:
    return bytes(boto3.client("kms", region_name="us-west-2").get_public_key(KeyId=alias)["PublicKey"])


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def mint(server: ServerDaemon, directory: Path) -> tuple[x509.Certificate, x509.Certificate]:
    """An X509-SVID the server signs, and its CA (the server's own root: no UpstreamAuthority)."""
    directory.mkdir(parents=True, exist_ok=True)
    server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/workload", "-write", str(directory))
    (svid,) = x509.load_pem_x509_certificates((directory / "svid.pem").read_bytes())
    (ca,) = x509.load_pem_x509_certificates((directory / "bundle.pem").read_bytes())
    svid.verify_directly_issued_by(ca)
    return svid, ca


def openssl_verify(directory: Path) -> None:
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(directory / "bundle.pem"), str(directory / "svid.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_restarted_server_signs_with_the_same_kms_keys(aws: MotoServer, tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", env=aws.environment(), key_manager=kms_key_manager(tmp_path))
    try:
        prefix = f"alias/SPIRE_SERVER/example_org/{(tmp_path / 'server_id').read_text()}/"
        first = mint(server, tmp_path / "first")
        assert spki(first[1]) == kms_public_key(prefix + "x509-CA-A")
        openssl_verify(tmp_path / "first")
        token = server.cli("jwt", "mint", "-spiffeID", "spiffe://example.org/workload", "-audience", "db").stdout
        signer = serialization.load_der_public_key(kms_public_key(prefix + "JWT-Signer-A"))
        claims = jwt.decode(token.strip(), signer, algorithms=["ES256"], audience="db")  # type: ignore[arg-type]
        assert claims["sub"] == "spiffe://example.org/workload"
        keys_before = boto3.client("kms", region_name="us-west-2").list_keys()["Keys"]

        assert server.stop() == 0
        server.start()
        second = mint(server, tmp_path / "second")
        assert second[1] == first[1]
        openssl_verify(tmp_path / "second")
        assert boto3.client("kms", region_name="us-west-2").list_keys()["Keys"] == keys_before
    finally:
        server.stop()


def test_a_server_that_cannot_reach_kms_does_not_start_and_says_why(aws: MotoServer, tmp_path: Path) -> None:
    text, socket_path, _ = server_config(tmp_path / "server", key_manager=kms_key_manager(tmp_path))
    server = ServerDaemon(
        "pyspire-server", tmp_path / "server", socket_path, text, env=aws_environment(f"http://127.0.0.1:{free_port()}")
    )
    with pytest.raises(RuntimeError, match="exited with"):
        server.start()
    log = server.log()
    assert "keymanager(aws_kms): failed to fetch aliases: cannot reach AWS" in log
    assert "Traceback" not in log
    assert not socket_path.exists()
