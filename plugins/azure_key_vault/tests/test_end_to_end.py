"""A real server whose keys are in the fake Key Vault: it signs there, restarts, and signs with the same keys.

The X.509 CA's public key and the JWT signing key are the ones Key Vault holds under SPIRE's
names; after a restart the server uses the same CA certificate (no new key is made in the
vault) and what it signs verifies with ``openssl`` against its bundle. A server whose vault
cannot be reached does not start, and says why in one line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.azure_key_vault import FakeKeyVault
from tests.support.daemons import ServerDaemon, server_config, start_server
from tests.support.free_port import free_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def key_manager(vault: FakeKeyVault, directory: Path) -> str:
    keys = "\n".join(
        f'  {key} = "{value}"'
        for key, value in vault.plugin_data(key_identifier_file=str(directory / "server_id")).items()
    )
    return f'KeyManager "azure_key_vault" {{\n plugin_data {{\n{keys}\n }}\n}}'


def vault_public_key(vault: FakeKeyVault, key_id: str) -> bytes:
    (name,) = [name for name in vault.keys if re.fullmatch(rf"spire-key-[0-9a-f-]{{36}}-{key_id}", name)]
    return vault.public_der(name)


def spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def mint(server: ServerDaemon, directory: Path) -> x509.Certificate:
    """The CA (the server's own root) of an X509-SVID the server signs, checked with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/workload", "-write", str(directory))
    (svid,) = x509.load_pem_x509_certificates((directory / "svid.pem").read_bytes())
    (ca,) = x509.load_pem_x509_certificates((directory / "bundle.pem").read_bytes())
    svid.verify_directly_issued_by(ca)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(directory / "bundle.pem"), str(directory / "svid.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return ca


@pytest.mark.slow
def test_a_restarted_server_signs_with_the_same_key_vault_keys(vault: FakeKeyVault, tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", env=vault.env(), key_manager=key_manager(vault, tmp_path))
    try:
        first = mint(server, tmp_path / "first")
        assert spki(first) == vault_public_key(vault, "x509-CA-A")
        token = server.cli("jwt", "mint", "-spiffeID", "spiffe://example.org/workload", "-audience", "db").stdout
        signer = serialization.load_der_public_key(vault_public_key(vault, "JWT-Signer-A"))
        claims = jwt.decode(token.strip(), signer, algorithms=["ES256"], audience="db")  # type: ignore[arg-type]
        assert claims["sub"] == "spiffe://example.org/workload"
        keys_before = sorted(vault.keys)

        assert server.stop() == 0
        server.start()
        assert mint(server, tmp_path / "second") == first
        assert sorted(vault.keys) == keys_before
    finally:
        server.stop()


def test_a_server_that_cannot_reach_key_vault_does_not_start_and_says_why(vault: FakeKeyVault, tmp_path: Path) -> None:
    unreachable = key_manager(vault, tmp_path).replace(vault.url, f"https://127.0.0.1:{free_port()}")
    text, socket_path, _ = server_config(tmp_path / "server", key_manager=unreachable)
    server = ServerDaemon("pyspire-server", tmp_path / "server", socket_path, text, env=vault.env())
    with pytest.raises(RuntimeError, match="exited with"):
        server.start()
    log = server.log()
    assert "keymanager(azure_key_vault): failed while listing keys" in log
    assert "Traceback" not in log
    assert not socket_path.exists()
