"""A real server whose keys are transit keys: it signs in Vault, restarts, and signs with the same keys.

The X.509 CA's public key is the one Vault holds under SPIRE's name for ``x509-CA-A``; what the
server signs verifies with ``openssl`` against its bundle; after a restart the server uses the
same CA (no new transit key is made).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plugins.vault_keymanager.tests.conftest import Transit
from tests.support.daemons import ServerDaemon, start_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def vault_key_manager(transit: Transit, directory: Path) -> str:
    return (
        'KeyManager "hashicorp_vault" {\n plugin_data {\n'
        f'  vault_addr = "{transit.bao.url}"\n  ca_cert_path = "{transit.bao.ca_path}"\n'
        f'  transit_engine_path = "{transit.mount}"\n  key_identifier_file = "{directory / "server_id"}"\n'
        f'  token_auth {{\n   token = "{transit.token()}"\n  }}\n }}\n}}'
    )


def mint(server: ServerDaemon, directory: Path) -> x509.Certificate:
    """Mint an X509-SVID into ``directory``, check it with openssl against the bundle; the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    server.cli("x509", "mint", "-spiffeID", "spiffe://example.org/workload", "-write", str(directory))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(directory / "bundle.pem"), str(directory / "svid.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (ca,) = x509.load_pem_x509_certificates((directory / "bundle.pem").read_bytes())
    return ca


@pytest.mark.slow
def test_a_server_signs_svids_with_transit_keys_and_keeps_them_across_a_restart(
    transit: Transit, tmp_path: Path
) -> None:
    server = start_server(tmp_path / "server", key_manager=vault_key_manager(transit, tmp_path))
    try:
        first = mint(server, tmp_path / "first")
        server_id = (tmp_path / "server_id").read_text()
        (ca_key,) = [n for n in transit.names() if n.startswith(f"{server_id}-") and n.endswith("-x509-CA-A")]
        ca_public = serialization.load_pem_public_key(transit.public_pem(ca_key))
        assert first.public_key() == ca_public
        names_before = transit.names()

        assert server.stop() == 0
        server.start()
        assert mint(server, tmp_path / "second") == first
        assert transit.names() == names_before
    finally:
        server.stop()
