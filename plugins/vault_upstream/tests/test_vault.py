"""UpstreamAuthority "vault" through hvac against the HTTPS Vault fake: auth, signing, renewal, failures."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.crypto import LocalSigner, build_csr
from pyspire.plugin import FailedPrecondition, Internal, InvalidArgument, PermissionDenied, Unavailable
from pyspire.plugin.catalog import CatalogError
from pyspire.plugin.facades import UpstreamAuthority
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.vault_upstream.tests.fakes import VaultServer

TD_ID = "spiffe://example.org"


def load(tmp_path: Path, data: dict[str, Any]) -> UpstreamAuthority:
    handle = load_plugin("server", "UpstreamAuthority", "vault", data, make_core_config(tmp_path / "data"))
    assert isinstance(handle, UpstreamAuthority)
    return handle


def base(vault: VaultServer, tmp_path: Path, **auth: Any) -> dict[str, Any]:
    return {"vault_addr": vault.url, "ca_cert_path": str(tmp_path / "vault" / "vault-ca.pem"), **auth}


def with_token(vault: VaultServer, tmp_path: Path, **token: Any) -> dict[str, Any]:
    return base(vault, tmp_path, token_auth={"token": vault.issue_token(**token)})


def with_approle(vault: VaultServer, tmp_path: Path) -> dict[str, Any]:
    vault.approles["role-1"] = "secret-1"
    return base(vault, tmp_path, approle_auth={"approle_id": "role-1", "approle_secret_id": "secret-1"})


def request(
    key: ec.EllipticCurvePrivateKey | None = None, uri: str = TD_ID
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return build_csr(LocalSigner(key), None, uri), key


def public(item: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    key = item.public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def logins(vault: VaultServer) -> int:
    return sum(1 for path in vault.paths() if path.endswith("/login") or path.endswith("/lookup-self"))


# --- signing ---------------------------------------------------------------------------


def test_token_auth_signs_an_intermediate_that_chains_to_vaults_root(vault: VaultServer, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(vault, tmp_path))
    csr, key = request()
    minted = upstream.mint_x509_ca(csr, timedelta(hours=6))
    certificate = minted.ca_chain[0]
    assert minted.ca_chain == (certificate,)
    assert minted.upstream_roots == (vault.root,)
    assert public(certificate) == public(key)
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [TD_ID]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(hours=5) < lifetime <= timedelta(hours=6, minutes=1)
    sign = next(r for r in vault.requests if r.path == "/v1/pki/root/sign-intermediate")
    assert sign.body["ttl"] == "21600s"
    assert sign.body["uri_sans"] == TD_ID
    assert vault.paths()[0] == "GET /v1/auth/token/lookup-self"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_the_signed_ca_against_vaults_root(vault: VaultServer, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(vault, tmp_path))
    minted = upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    (tmp_path / "root.pem").write_bytes(vault.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.pem").write_bytes(minted.ca_chain[0].public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "ca.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_pki_mount_that_is_itself_an_intermediate_is_chained_through(tmp_path: Path) -> None:
    (tmp_path / "vault").mkdir()
    vault = VaultServer(pki_mount="spire-pki", pki_is_intermediate=True).start(tmp_path / "vault")
    try:
        upstream = load(tmp_path, {**with_token(vault, tmp_path), "pki_mount_point": "spire-pki"})
        minted = upstream.mint_x509_ca(request()[0], timedelta(hours=1))
        assert minted.ca_chain[1:] == (vault.issuer.certificate,)
        assert minted.upstream_roots == (vault.root,)
        assert vault.offline_root is not None
        assert vault.root == vault.offline_root.certificate
    finally:
        vault.stop()


def test_vault_may_issue_a_shorter_ca_than_asked(vault: VaultServer, tmp_path: Path) -> None:
    vault.max_ttl = timedelta(hours=1)
    upstream = load(tmp_path, with_token(vault, tmp_path))
    certificate = upstream.mint_x509_ca(request()[0], timedelta(days=7)).ca_chain[0]
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc <= timedelta(hours=1, minutes=1)


def test_a_request_without_the_trust_domain_id_is_refused_before_vault_sees_it(
    vault: VaultServer, tmp_path: Path
) -> None:
    upstream = load(tmp_path, with_token(vault, tmp_path))
    with pytest.raises(InvalidArgument, match=r"spiffe://example\.org"):
        upstream.mint_x509_ca(request(uri="spiffe://other.org")[0], timedelta(hours=1))
    with pytest.raises(InvalidArgument, match="not a DER PKCS#10"):
        upstream.mint_x509_ca(b"\x30\x03garbage", timedelta(hours=1))
    assert not vault.signed


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("another_key", "not for the key in the request"),
        ("foreign_issuer", "chain does not verify"),
        ("not_a_ca", "not a CA"),
        ("no_spiffe_id", "does not carry spiffe://example.org"),
    ],
)
def test_an_answer_that_does_not_check_out_is_refused(
    vault: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tamper: str, message: str
) -> None:
    sign = vault.sign_intermediate

    def tampered(body: dict[str, Any]) -> dict[str, Any]:
        if tamper == "another_key":
            body = {**body, "csr": request()[0] and _pem_csr(request()[0])}
        if tamper == "no_spiffe_id":
            body = {**body, "uri_sans": ""}
        answer = sign(body)
        if tamper == "foreign_issuer":
            stranger = VaultServer()
            answer = {**stranger.sign_intermediate(body), "issuing_ca": answer["issuing_ca"]}
            answer["ca_chain"] = [answer["certificate"], answer["issuing_ca"]]
        if tamper == "not_a_ca":
            answer = {**answer, "certificate": _leaf_for(body, vault)}
        return answer

    monkeypatch.setattr(vault, "sign_intermediate", tampered)
    upstream = load(tmp_path, with_token(vault, tmp_path))
    with pytest.raises(Internal, match=message):
        upstream.mint_x509_ca(request()[0], timedelta(hours=1))


def _pem_csr(der: bytes) -> str:
    return x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM).decode()


def _leaf_for(body: dict[str, Any], vault: VaultServer) -> str:
    """A certificate for the request's key that is not a CA (basicConstraints CA:FALSE)."""
    from tests.support.pki import Issued, make_leaf  # noqa: PLC0415 - only this tamper case needs it

    csr = x509.load_pem_x509_csr(body["csr"].encode())
    leaf = make_leaf(Issued(vault.issuer.certificate, vault.issuer.key), TD_ID)
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.certificate.subject)
        .issuer_name(vault.issuer.certificate.subject)
        .public_key(csr.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.certificate.not_valid_before_utc)
        .not_valid_after(leaf.certificate.not_valid_after_utc)
    )
    for extension in leaf.certificate.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415

    return builder.sign(vault.issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


# --- auth methods ----------------------------------------------------------------------


def test_approle_login_on_a_custom_mount(vault: VaultServer, tmp_path: Path) -> None:
    vault.approle_mount = "my-approle"
    vault.approles["role-7"] = "s3cret-7"
    data = base(
        vault,
        tmp_path,
        approle_auth={
            "approle_auth_mount_point": "my-approle",
            "approle_id": "role-7",
            "approle_secret_id": "s3cret-7",
        },
    )
    upstream = load(tmp_path, data)
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    assert vault.paths()[:2] == ["POST /v1/auth/my-approle/login", "POST /v1/pki/root/sign-intermediate"]


def test_cert_auth_logs_in_with_the_client_certificate(vault: VaultServer, tmp_path: Path) -> None:
    cert, key = vault.client_certificate(tmp_path)
    data = base(
        vault,
        tmp_path,
        cert_auth={"cert_auth_role_name": "spire", "client_cert_path": str(cert), "client_key_path": str(key)},
    )
    load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    login = vault.requests[0]
    assert (login.path, login.body) == ("/v1/auth/cert/login", {"name": "spire"})


def test_cert_auth_without_an_accepted_certificate_is_refused(vault: VaultServer, tmp_path: Path) -> None:
    # A client certificate Vault's listener does not trust is not presented as valid.
    from tests.support.pki import make_ca, make_tls_certificate, write_pem  # noqa: PLC0415

    cert, key = write_pem(make_tls_certificate(make_ca(name="stranger")), tmp_path / "c.pem", tmp_path / "c.key")
    data = base(vault, tmp_path, cert_auth={"client_cert_path": str(cert), "client_key_path": str(key)})
    with pytest.raises(Unavailable, match="Vault accepts the client certificate"):
        load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert not vault.signed


def test_k8s_auth_sends_the_service_account_token(vault: VaultServer, tmp_path: Path) -> None:
    (tmp_path / "sa-token").write_text("eyJ.k8s.token\n")
    vault.k8s_roles["spire-server"] = "eyJ.k8s.token"
    data = base(
        vault, tmp_path, k8s_auth={"k8s_auth_role_name": "spire-server", "token_path": str(tmp_path / "sa-token")}
    )
    load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert vault.requests[0].body == {"role": "spire-server", "jwt": "eyJ.k8s.token"}

    (tmp_path / "sa-token").write_text("eyJ.someone.else")
    again = load(tmp_path, data)
    with pytest.raises(PermissionDenied, match="k8s_auth at auth/kubernetes, role spire-server"):
        again.mint_x509_ca(request()[0], timedelta(hours=1))


def test_wrong_credentials_are_refused_without_repeating_them(
    vault: VaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    vault.approles["role-1"] = "the-right-secret"
    data = base(vault, tmp_path, approle_auth={"approle_id": "role-1", "approle_secret_id": "a-wrong-secret"})
    with pytest.raises(FailedPrecondition, match="invalid role or secret ID") as refused:
        load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert "a-wrong-secret" not in str(refused.value)
    token = vault.issue_token()
    load(tmp_path, base(vault, tmp_path, token_auth={"token": token})).mint_x509_ca(request()[0], timedelta(hours=1))
    assert token not in caplog.text
    assert "a-wrong-secret" not in caplog.text
    with pytest.raises(PermissionDenied, match=r"token_auth.*permission denied") as bad_token:
        load(tmp_path, base(vault, tmp_path, token_auth={"token": "hvs.not-a-token"})).mint_x509_ca(
            request()[0], timedelta(hours=1)
        )
    assert "hvs.not-a-token" not in str(bad_token.value)


def test_namespace_is_sent_on_every_request(tmp_path: Path) -> None:
    (tmp_path / "vault").mkdir()
    vault = VaultServer(namespace="team-a").start(tmp_path / "vault")
    try:
        data = with_approle(vault, tmp_path)
        with pytest.raises(FailedPrecondition, match="no such path"):
            load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
        load(tmp_path, {**data, "namespace": "team-a"}).mint_x509_ca(request()[0], timedelta(hours=1))
        assert [r.namespace for r in vault.requests[-2:]] == ["team-a", "team-a"]
    finally:
        vault.stop()


# --- token lifetime --------------------------------------------------------------------


def test_a_renewable_token_is_renewed_in_the_background(vault: VaultServer, tmp_path: Path) -> None:
    vault.login_ttl = 3
    upstream = load(tmp_path, with_approle(vault, tmp_path))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    deadline = time.monotonic() + 10
    while vault.renewals < 2:
        assert time.monotonic() < deadline, vault.paths()
        time.sleep(0.1)
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))  # well past the first lease's end
    assert logins(vault) == 1
    upstream.close()
    renewed = vault.renewals
    time.sleep(3)
    assert vault.renewals == renewed  # closing stops the renewer


def test_an_expired_login_is_replaced_before_signing(vault: VaultServer, tmp_path: Path) -> None:
    vault.login_ttl, vault.login_renewable = 2, False
    upstream = load(tmp_path, with_approle(vault, tmp_path))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    time.sleep(2.1)
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    assert logins(vault) == 2
    assert len(vault.signed) == 2


def test_a_revoked_token_means_one_new_login(vault: VaultServer, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_approle(vault, tmp_path))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    vault.revoke_all_tokens()
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    assert logins(vault) == 2
    assert len(vault.signed) == 2


def test_an_expired_static_token_is_reported_not_retried_forever(vault: VaultServer, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(vault, tmp_path, ttl=1, renewable=False))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    time.sleep(1.1)
    with pytest.raises(PermissionDenied, match="permission denied"):
        upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    assert len(vault.signed) == 1


# --- Vault not serving -----------------------------------------------------------------


def test_unreachable_vault_is_unavailable_with_the_address(vault: VaultServer, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(vault, tmp_path))
    vault.stop()
    with pytest.raises(Unavailable, match=f"cannot reach {vault.url}"):
        upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    vault.start(tmp_path / "vault")
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))


def test_sealed_vault_is_unavailable(vault: VaultServer, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(vault, tmp_path))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    vault.sealed = True
    with pytest.raises(Unavailable, match="Vault is sealed"):
        upstream.mint_x509_ca(request()[0], timedelta(hours=1))


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # urllib3 says so; the test asks for it
def test_vault_certificate_is_verified_unless_told_otherwise(vault: VaultServer, tmp_path: Path) -> None:
    data = with_token(vault, tmp_path)
    del data["ca_cert_path"]
    with pytest.raises(Unavailable, match=r"TLS with .* failed.*ca_cert_path holds the CA"):
        load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert not vault.signed
    load(tmp_path, {**data, "insecure_skip_verify": True}).mint_x509_ca(request()[0], timedelta(hours=1))
    assert len(vault.signed) == 1


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token_auth": None}, "one auth method is required"),
        (
            {"approle_auth": {"approle_id": "a", "approle_secret_id": "b"}},
            "only one auth method.*token_auth and approle",
        ),
        ({"vault_addr": "vault:8200"}, '"vault_addr".*not an http'),
        ({"ca_cert_path": "/nonexistent/ca.pem"}, '"ca_cert_path".*cannot read'),
        ({"pki_mount_point": "/"}, '"pki_mount_point".*empty'),
        ({"token_auth": {"token": ""}}, '"token_auth.token".*VAULT_TOKEN'),
        ({"token_auth": None, "k8s_auth": {"token_path": "/t"}}, '"k8s_auth.k8s_auth_role_name".*required'),
        ({"token_auth": None, "k8s_auth": {"k8s_auth_role_name": "r"}}, '"k8s_auth.token_path".*required'),
        ({"token_auth": None, "cert_auth": {"client_cert_path": "/c.pem"}}, "client_key_path are both required"),
        ({"token_auth": None, "approle_auth": {"approle_id": "a"}}, '"approle_auth.approle_secret_id"'),
        ({"max_ttl": "1h"}, '"max_ttl"'),
    ],
)
def test_configuration_mistakes_name_the_key(
    vault: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], message: str
) -> None:
    for variable in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT", "VAULT_APPROLE_SECRET_ID"):
        monkeypatch.delenv(variable, raising=False)
    data = {k: v for k, v in {**with_token(vault, tmp_path), **change}.items() if v is not None}
    with pytest.raises(CatalogError, match=message):
        load(tmp_path, data)


def test_the_environment_fills_in_what_the_file_leaves_out(
    vault: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", vault.url)
    monkeypatch.setenv("VAULT_CACERT", str(tmp_path / "vault" / "vault-ca.pem"))
    monkeypatch.setenv("VAULT_TOKEN", vault.issue_token())
    load(tmp_path, {"token_auth": {}}).mint_x509_ca(request()[0], timedelta(hours=1))
    # A value in the file wins over the variable.
    monkeypatch.setenv("VAULT_ADDR", "https://127.0.0.1:1")
    load(tmp_path, {"vault_addr": vault.url, "token_auth": {}}).mint_x509_ca(request()[0], timedelta(hours=1))
    assert len(vault.signed) == 2


def test_hcl_blocks_configure_the_plugin(vault: VaultServer, tmp_path: Path) -> None:
    """The HCL form operators write (``approle_auth { ... }`` inside ``plugin_data``) parses."""
    from pyspire.config import load_server_config_text  # noqa: PLC0415

    vault.approles["r"] = "s"
    text = f"""
server {{
    trust_domain = "example.org"
    data_dir = "{tmp_path / "data"}"
}}
plugins {{
    DataStore "sql" {{ plugin_data {{ database_type = "sqlite3" connection_string = "x" }} }}
    KeyManager "memory" {{ plugin_data {{}} }}
    UpstreamAuthority "vault" {{
        plugin_data {{
            vault_addr = "{vault.url}"
            ca_cert_path = "{tmp_path / "vault" / "vault-ca.pem"}"
            approle_auth {{
                approle_id = "r"
                approle_secret_id = "s"
            }}
        }}
    }}
}}
"""
    config = load_server_config_text(text)
    declaration = next(p for p in config.plugins if p.type == "UpstreamAuthority")
    load(tmp_path, dict(declaration.plugin_data)).mint_x509_ca(request()[0], timedelta(hours=1))
    assert vault.paths()[0] == "POST /v1/auth/approle/login"
