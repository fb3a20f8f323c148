"""A real ``pyspire-server`` process: startup, the admin CLI, what it signs, shutdown."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyspire.spiffe import Bundle, BundleSet, JwtSvid, TrustDomain, verify_x509_svid

from tests.support.daemons import Daemon, ServerDaemon, console_script, server_config, start_server

TD = TrustDomain.parse("example.org")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    daemon = start_server(tmp_path_factory.mktemp("server"))
    yield daemon
    daemon.stop()


def test_admin_socket_has_spire_permissions(server: ServerDaemon) -> None:
    assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o770
    assert stat.S_IMODE(server.socket_path.parent.stat().st_mode) == 0o750
    keys = server.directory / "data" / "keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600


def test_healthcheck_reports_healthy(server: ServerDaemon) -> None:
    assert "Server is healthy." in server.cli("healthcheck").stdout


def test_minted_x509_svid_verifies_with_openssl_against_bundle_show(server: ServerDaemon, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    (tmp_path / "bundle.pem").write_text(server.bundle_pem())
    server.cli(
        "x509",
        "mint",
        "-spiffeID",
        "spiffe://example.org/minted",
        "-dns",
        "minted.test",
        "-write",
        str(tmp_path / "out"),
    )
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "bundle.pem"), str(tmp_path / "out" / "svid.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    leaf = x509.load_pem_x509_certificates((tmp_path / "out" / "svid.pem").read_bytes())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/minted"]
    assert sans.get_values_for_type(x509.DNSName) == ["minted.test"]
    assert stat.S_IMODE((tmp_path / "out" / "key.pem").stat().st_mode) == 0o600


def test_minted_jwt_svid_validates_against_spiffe_bundle(server: ServerDaemon) -> None:
    token = server.cli("jwt", "mint", "-spiffeID", "spiffe://example.org/jwt", "-audience", "db").stdout.strip()
    bundle = Bundle.parse(TD, server.cli("bundle", "show", "-format", "spiffe").stdout)
    svid = JwtSvid.parse_and_validate(token, bundle, ["db"])
    assert str(svid.spiffe_id) == "spiffe://example.org/jwt"
    assert server.cli("jwt", "mint", "-spiffeID", "spiffe://example.org/jwt", check=False).returncode == 1


def test_entry_lifecycle_through_the_cli(server: ServerDaemon) -> None:
    created = server.cli(
        "entry",
        "create",
        "-parentID",
        "spiffe://example.org/spire/agent/x",
        "-spiffeID",
        "spiffe://example.org/cli",
        "-selector",
        "unix:uid:1000",
        "-x509SVIDTTL",
        "600",
    ).stdout
    entry_id = created.split("Entry ID         : ", 1)[1].split()[0]
    shown = json.loads(server.cli("entry", "show", "-entryID", entry_id, "-output", "json").stdout)
    assert shown["entries"][0]["spiffe_id"] == {"trust_domain": "example.org", "path": "/cli"}
    assert shown["entries"][0]["x509_svid_ttl"] == 600
    duplicate = server.cli(
        "entry",
        "create",
        "-parentID",
        "spiffe://example.org/spire/agent/x",
        "-spiffeID",
        "spiffe://example.org/cli",
        "-selector",
        "unix:uid:1000",
        check=False,
    )
    assert duplicate.returncode == 1
    assert "similar entry already exists" in duplicate.stderr
    server.cli("entry", "delete", "-entryID", entry_id)
    assert "not found" in server.cli("entry", "show", "-entryID", entry_id, check=False).stderr.lower()


def test_bad_selector_is_refused_with_a_clear_error(server: ServerDaemon) -> None:
    result = server.cli(
        "entry",
        "create",
        "-parentID",
        "spiffe://example.org/spire/agent/x",
        "-spiffeID",
        "spiffe://example.org/bad",
        "-selector",
        "unix",
        check=False,
    )
    assert result.returncode == 1
    assert "selector" in result.stderr.lower()


def test_token_generate_and_agent_verbs(server: ServerDaemon) -> None:
    token = server.join_token()
    assert len(token) == 36
    assert "No attested agents found" in server.cli("agent", "list").stdout
    missing = server.cli("agent", "evict", "-spiffeID", "spiffe://example.org/spire/agent/join_token/nope", check=False)
    assert missing.returncode == 1
    assert "NotFound" in missing.stderr


def test_restart_keeps_the_ca_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    daemon = start_server(tmp_path)
    before = daemon.bundle_pem()
    assert daemon.stop() == 0
    assert not daemon.socket_path.exists()
    daemon.start()
    try:
        assert daemon.bundle_pem() == before
    finally:
        assert daemon.stop() == 0
    assert "Server stopped" in daemon.log()


def test_a_repeated_stop_request_still_exits_cleanly(tmp_path: Path) -> None:
    # Regression: once the event loop closed, a second SIGTERM met the default action and the
    # server died by signal (-15) instead of exiting 0.
    daemon = start_server(tmp_path)
    assert daemon.stop_insistently() == 0
    assert "Server stopped" in daemon.log()


def test_taken_port_fails_with_a_clear_message(server: ServerDaemon, tmp_path: Path) -> None:
    text, socket_path, _ = server_config(tmp_path, port=server.port)
    second = Daemon("pyspire-server", tmp_path, socket_path, text).start(wait=False)
    assert second.process is not None
    assert second.process.wait(30) == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in second.log()
    # The running server's socket is untouched.
    assert "Server is healthy." in server.cli("healthcheck").stdout


def test_a_socket_path_too_long_for_unix_sockets_is_named(tmp_path: Path) -> None:
    """The kernel's limit (108 bytes) fails bind without an errno: the message must still say why."""
    long_path = tmp_path / ("d" * 60) / ("e" * 60) / "api.sock"
    text, _, _ = server_config(tmp_path, extra=f'socket_path = "{long_path}"')
    text = text.replace(f'socket_path = "{tmp_path / "sock" / "api.sock"}"', "")
    daemon = Daemon("pyspire-server", tmp_path, long_path, text).start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(30) == 1
    assert f"cannot listen on {long_path}: AF_UNIX path too long" in daemon.log()


def test_malformed_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    text, _, _ = server_config(tmp_path, extra='ca_ttl_typo = "1h"')
    config = tmp_path / "bad.conf"
    config.write_text(text)
    result = subprocess.run(
        [console_script("pyspire-server"), "run", "-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "ca_ttl_typo" in result.stderr


def test_validate_accepts_the_contrib_config() -> None:
    conf = Path(__file__).resolve().parents[2] / "contrib" / "conf" / "server.conf"
    result = subprocess.run(
        [console_script("pyspire-server"), "validate", "-config", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _authority_ids(daemon: ServerDaemon, kind: str) -> dict[str, str]:
    """``localauthority <kind> show``: the authority ID of each slot it lists (active, prepared, old)."""
    shown = daemon.cli("localauthority", kind, "show").stdout
    slots: dict[str, str] = {}
    slot = ""
    for line in shown.splitlines():
        if line.endswith("authority:"):
            slot = line.split()[0].lower()
        elif line.strip().startswith("Authority ID:") and slot:
            slots[slot] = line.split(":", 1)[1].strip()
    return slots


def test_a_restart_mid_rotation_keeps_the_prepared_authorities_and_activates_them(tmp_path: Path) -> None:
    """Reliability case 22: prepare, restart, activate, restart: no authority is lost or made anew on the way."""
    daemon = start_server(tmp_path)
    try:
        for kind in ("x509", "jwt"):
            daemon.cli("localauthority", kind, "prepare")
        prepared = {kind: _authority_ids(daemon, kind) for kind in ("x509", "jwt")}
        assert all({"active", "prepared"} <= slots.keys() for slots in prepared.values()), prepared
        bundle = daemon.bundle_pem()
        assert daemon.stop() == 0

        daemon.start()
        assert {kind: _authority_ids(daemon, kind) for kind in ("x509", "jwt")} == prepared
        assert daemon.bundle_pem() == bundle  # the prepared X.509 authority was published before the restart
        for kind in ("x509", "jwt"):
            daemon.cli("localauthority", kind, "activate", "-authorityID", prepared[kind]["prepared"])
        assert daemon.stop() == 0

        daemon.start()
        for kind in ("x509", "jwt"):
            after = _authority_ids(daemon, kind)
            assert after["active"] == prepared[kind]["prepared"], (kind, after)
            assert after["old"] == prepared[kind]["active"], (kind, after)
    finally:
        daemon.stop()


def test_a_memory_key_manager_restart_makes_a_new_ca_and_keeps_the_old_root_trusted(tmp_path: Path) -> None:
    """Reliability case 22 with the memory KeyManager: the CA keys die with the process, so the
    restarted server makes a new CA; the old root stays in the bundle (until it expires), so an
    SVID issued before the restart still verifies against the bundle served after it, and one
    issued after verifies too."""
    daemon = start_server(tmp_path / "server", key_manager='KeyManager "memory" {\n plugin_data {}\n }')
    try:
        before = x509.load_pem_x509_certificates(daemon.bundle_pem().encode())
        daemon.cli("x509", "mint", "-spiffeID", "spiffe://example.org/old", "-write", str(tmp_path / "old"))
        assert daemon.stop() == 0
        daemon.start()
        after = x509.load_pem_x509_certificates(daemon.bundle_pem().encode())
        daemon.cli("x509", "mint", "-spiffeID", "spiffe://example.org/new", "-write", str(tmp_path / "new"))
    finally:
        daemon.stop()
    assert len(after) == len(before) + 1
    assert set(before) < set(after)  # the old root is still trusted, and a new one joined it
    bundles = BundleSet([Bundle.parse_x509(TrustDomain.parse("example.org"), daemon_bundle(after))])
    for name in ("old", "new"):
        chain = x509.load_pem_x509_certificates((tmp_path / name / "svid.pem").read_bytes())
        verified, _ = verify_x509_svid(chain, bundles)
        assert str(verified) == f"spiffe://example.org/{name}"

    def issuer_key_id(name: str) -> bytes | None:
        leaf = x509.load_pem_x509_certificates((tmp_path / name / "svid.pem").read_bytes())[0]
        return leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier

    assert issuer_key_id("old") != issuer_key_id("new")  # signed by the new CA after the restart


def daemon_bundle(certificates: list[x509.Certificate]) -> bytes:
    """``certificates`` as one PEM bundle."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
