"""migrate-from-spire on a datastore a real spire-server wrote.

A SPIRE v1.13 server (SQLite) gets entries of every shape SPIRE's CLI makes, a federated
bundle and a federation relationship, and mints an X509-SVID and a JWT-SVID. pyspire then
imports that datastore: the entries come back through pyspire's CLI with SPIRE's IDs and
fields, what SPIRE signed verifies against pyspire's bundle (openssl and pyspire's verifier), a
second run imports nothing, and SPIRE's database file is not changed by a byte.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe import BundleSet, JwtSvid, X509Svid, verify_x509_svid

from tests.support.daemons import ServerDaemon, console_script, server_config, start_server
from tests.support.interop_checks import openssl_verifies, server_bundle
from tests.support.pki import make_ca

pytestmark = pytest.mark.slow

TD = "example.org"
PARTNER = "partner.test"


def _entries(server: ServerDaemon) -> dict[str, dict[str, Any]]:
    """The server's entries by ID, as SPIRE's protojson names their fields."""
    listed = json.loads(server.cli("entry", "show", "-output", "json").stdout)
    return {entry["id"]: entry for entry in listed.get("entries", [])}


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without what each server sets for itself (creation time, revision)."""
    kept = {key: value for key, value in entry.items() if key not in ("created_at", "revision_number")}
    kept["selectors"] = sorted((s["type"], s["value"]) for s in entry.get("selectors", []))
    kept["dns_names"] = sorted(entry.get("dns_names", []))
    kept["federates_with"] = sorted(entry.get("federates_with", []))
    return kept


def _migrate(config: Path, spire_config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            console_script("pyspire-server"),
            "migrate-from-spire",
            "-config",
            str(config),
            "-spireConfig",
            str(spire_config),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_spire_datastore_moves_to_pyspire_and_what_spire_signed_keeps_verifying(
    tmp_path: Path, spire_server_bin: Path
) -> None:
    partner_root = make_ca(name="partner root")
    (tmp_path / "partner.pem").write_bytes(partner_root.certificate.public_bytes(serialization.Encoding.PEM))
    spire = start_server(tmp_path / "spire", executable=spire_server_bin)
    try:
        spire.cli("bundle", "set", "-id", f"spiffe://{PARTNER}", "-path", str(tmp_path / "partner.pem"))
        spire.cli(
            "federation", "create",
            "-trustDomain", PARTNER,
            "-bundleEndpointURL", "https://127.0.0.1:8443",
            "-bundleEndpointProfile", "https_web",
        )  # fmt: skip
        spire.cli(
            "entry", "create",
            "-parentID", f"spiffe://{TD}/spire/agent/join_token/abc",
            "-spiffeID", f"spiffe://{TD}/web",
            "-selector", "unix:uid:1000",
            "-selector", "unix:gid:1000",
            "-dns", "web.example.org",
            "-dns", "www.example.org",
            "-x509SVIDTTL", "600",
            "-jwtSVIDTTL", "120",
            "-hint", "frontend",
            "-federatesWith", f"spiffe://{PARTNER}",
        )  # fmt: skip
        spire.cli(
            "entry", "create",
            "-entryID", "chosen-by-the-operator",
            "-parentID", f"spiffe://{TD}/spire/server",
            "-spiffeID", f"spiffe://{TD}/downstream",
            "-selector", "unix:uid:0",
            "-downstream",
            "-admin",
        )  # fmt: skip
        spire.cli(
            "entry", "create",
            "-node",
            "-spiffeID", f"spiffe://{TD}/nodes/all",
            "-selector", "join_token:abc",
            "-storeSVID",
            "-entryExpiry", "4102444800",
        )  # fmt: skip
        spire_entries = _entries(spire)
        assert len(spire_entries) == 3
        minted = tmp_path / "minted"
        minted.mkdir()
        spire.cli("x509", "mint", "-spiffeID", f"spiffe://{TD}/minted", "-write", str(minted))
        token = spire.cli("jwt", "mint", "-spiffeID", f"spiffe://{TD}/minted", "-audience", "db").stdout.strip()
    finally:
        spire.stop()
    spire_db = tmp_path / "spire" / "data" / "datastore.sqlite3"
    spire_bytes = hashlib.sha256(spire_db.read_bytes()).hexdigest()

    pyspire_dir = tmp_path / "pyspire"
    text, _, _ = server_config(pyspire_dir)
    pyspire_dir.mkdir(parents=True)
    config = pyspire_dir / "pyspire-server.conf"
    config.write_text(text)
    spire_config = spire.config_path  # SPIRE's own config: migrate-from-spire finds its datastore there

    dry = _migrate(config, spire_config, "-dryRun")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "nothing was imported" in dry.stdout
    first = _migrate(config, spire_config)
    assert first.returncode == 0, first.stdout + first.stderr
    second = _migrate(config, spire_config)
    assert second.returncode == 0, second.stdout + second.stderr
    assert first.stdout != second.stdout
    assert hashlib.sha256(spire_db.read_bytes()).hexdigest() == spire_bytes, "SPIRE's database was written"

    pyspire = start_server(pyspire_dir)
    try:
        imported = _entries(pyspire)
        assert set(imported) == set(spire_entries)
        for entry_id, entry in spire_entries.items():
            assert _comparable(imported[entry_id]) == _comparable(entry)
        relationships = json.loads(pyspire.cli("federation", "list", "-output", "json").stdout)
        (relationship,) = relationships["federation_relationships"]
        assert relationship["trust_domain"] == PARTNER
        assert relationship["bundle_endpoint_url"] == "https://127.0.0.1:8443"
        partner = pyspire.cli("bundle", "list", "-id", f"spiffe://{PARTNER}").stdout
        assert partner.strip() == (tmp_path / "partner.pem").read_text().strip()

        bundle = server_bundle(pyspire, TD)
        svid = X509Svid.parse((minted / "svid.pem").read_bytes(), (minted / "key.pem").read_bytes())
        verified, _ = verify_x509_svid(svid.chain, BundleSet([bundle]))
        assert str(verified) == f"spiffe://{TD}/minted"
        openssl_verifies(svid, bundle)
        jwt_svid = JwtSvid.parse_and_validate(token, BundleSet([bundle]), ["db"])
        assert str(jwt_svid.spiffe_id) == f"spiffe://{TD}/minted"
    finally:
        pyspire.stop()
