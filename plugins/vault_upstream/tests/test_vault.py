"""UpstreamAuthority "vault" through hvac against a real OpenBao: auth, signing, renewal, failures.

Every identity the plugin logs in as holds only the README's minimal policy. The Vault fake
stays for what a real server cannot be made to do: answer with a tampered certificate, and
accept Kubernetes service account tokens (that needs a Kubernetes API to review them).
"""

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
from plugins.vault_upstream.tests.openbao import OpenBao, TcpRelay, Tenant
from tests.support.pki import make_ca, make_tls_certificate, write_pem

TD_ID = "spiffe://example.org"


def load(tmp_path: Path, data: dict[str, Any]) -> UpstreamAuthority:
    handle = load_plugin("server", "UpstreamAuthority", "vault", data, make_core_config(tmp_path / "data"))
    assert isinstance(handle, UpstreamAuthority)
    return handle


def base(bao: Tenant, **settings: Any) -> dict[str, Any]:
    return {"vault_addr": bao.url, "ca_cert_path": str(bao.ca_path), "pki_mount_point": bao.pki_mount, **settings}


def with_token(bao: Tenant, **token: Any) -> dict[str, Any]:
    return base(bao, token_auth={"token": bao.token(**token)})


def with_approle(bao: Tenant, **role: Any) -> dict[str, Any]:
    mount, role_id, secret_id = bao.approle(**role)
    return base(
        bao,
        approle_auth={"approle_auth_mount_point": mount, "approle_id": role_id, "approle_secret_id": secret_id},
    )


def request(
    key: ec.EllipticCurvePrivateKey | None = None, uri: str = TD_ID
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return build_csr(LocalSigner(key), None, uri), key


def public(item: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    key = item.public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def logins(bao: Tenant) -> int:
    return sum(1 for path in bao.paths() if path.endswith("/login") or path.endswith("auth/token/lookup-self"))


def renewals(bao: Tenant) -> int:
    return bao.paths().count("update auth/token/renew-self")


# --- signing ---------------------------------------------------------------------------


def test_token_auth_signs_an_intermediate_that_chains_to_the_root(bao: Tenant, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(bao))
    csr, key = request()
    minted = upstream.mint_x509_ca(csr, timedelta(hours=6))
    certificate = minted.ca_chain[0]
    assert minted.ca_chain == (certificate,)
    assert minted.upstream_roots == (bao.root,)
    assert public(certificate) == public(key)
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [TD_ID]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(hours=5) < lifetime <= timedelta(hours=6, minutes=1)
    (sign,) = bao.signed()
    assert sign.data["ttl"] == "21600s"
    assert sign.data["uri_sans"] == TD_ID
    assert bao.paths()[0] == "read auth/token/lookup-self"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_the_signed_ca_against_the_root(bao: Tenant, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(bao))
    minted = upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    (tmp_path / "root.pem").write_bytes(bao.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.pem").write_bytes(minted.ca_chain[0].public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "ca.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_pki_mount_that_is_itself_an_intermediate_is_chained_through(bao: Tenant, tmp_path: Path) -> None:
    mount, intermediate = bao.intermediate_mount()
    upstream = load(tmp_path, {**with_token(bao), "pki_mount_point": mount})
    minted = upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    assert minted.ca_chain[1:] == (intermediate,)
    assert minted.upstream_roots == (bao.root,)


def test_vault_may_issue_a_shorter_ca_than_asked(openbao: OpenBao, tmp_path: Path) -> None:
    bao = Tenant(openbao, max_lease_ttl="1h")
    upstream = load(tmp_path, with_token(bao))
    certificate = upstream.mint_x509_ca(request()[0], timedelta(days=7)).ca_chain[0]
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc <= timedelta(hours=1, minutes=1)


def test_vault_signs_past_its_root_and_says_so(
    openbao: OpenBao, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # OpenBao does not cap an intermediate at its own CA's end; it only warns. The plugin
    # passes the warning on (the server then caps the CA's use at the root, see the e2e test).
    bao = Tenant(openbao, root_ttl="2h")
    upstream = load(tmp_path, with_token(bao))
    certificate = upstream.mint_x509_ca(request()[0], timedelta(hours=24)).ca_chain[0]
    assert certificate.not_valid_after_utc > bao.root.not_valid_after_utc
    assert "after the CA's expiration time" in caplog.text


def test_a_request_without_the_trust_domain_id_is_refused_before_vault_sees_it(bao: Tenant, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(bao))
    with pytest.raises(InvalidArgument, match=r"spiffe://example\.org"):
        upstream.mint_x509_ca(request(uri="spiffe://other.org")[0], timedelta(hours=1))
    with pytest.raises(InvalidArgument, match="not a DER PKCS#10"):
        upstream.mint_x509_ca(b"\x30\x03garbage", timedelta(hours=1))
    assert not bao.signed()


# --- auth methods ----------------------------------------------------------------------


def test_approle_login_on_its_own_mount(bao: Tenant, tmp_path: Path) -> None:
    data = with_approle(bao)
    load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    mount = data["approle_auth"]["approle_auth_mount_point"]
    assert bao.paths()[:2] == [f"update auth/{mount}/login", f"update {bao.pki_mount}/root/sign-intermediate"]


def _client_certificate(tmp_path: Path, ca_name: str) -> tuple[x509.Certificate, Path, Path]:
    ca = make_ca(name=ca_name)
    cert, key = write_pem(make_tls_certificate(ca), tmp_path / f"{ca_name}.pem", tmp_path / f"{ca_name}.key")
    return ca.certificate, cert, key


def test_cert_auth_logs_in_with_the_client_certificate(bao: Tenant, tmp_path: Path) -> None:
    ca, cert, key = _client_certificate(tmp_path, "client-ca")
    mount = bao.cert_auth(ca)
    data = base(
        bao,
        cert_auth={
            "cert_auth_mount_point": mount,
            "cert_auth_role_name": "spire",
            "client_cert_path": str(cert),
            "client_key_path": str(key),
        },
    )
    load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    login = bao.requests()[0]
    assert (login.path, login.data) == (f"auth/{mount}/login", {"name": "spire"})
    assert len(bao.signed()) == 1


def test_cert_auth_without_an_accepted_certificate_is_refused(bao: Tenant, tmp_path: Path) -> None:
    trusted, _, _ = _client_certificate(tmp_path, "client-ca")
    mount = bao.cert_auth(trusted)
    _, cert, key = _client_certificate(tmp_path, "stranger")
    data = base(
        bao, cert_auth={"cert_auth_mount_point": mount, "client_cert_path": str(cert), "client_key_path": str(key)}
    )
    with pytest.raises(FailedPrecondition, match=f"cert_auth at auth/{mount}.*invalid certificate"):
        load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert not bao.signed()


def test_wrong_credentials_are_refused_without_repeating_them(
    bao: Tenant, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mount, role_id, _ = bao.approle()
    data = base(
        bao,
        approle_auth={"approle_auth_mount_point": mount, "approle_id": role_id, "approle_secret_id": "a-wrong-secret"},
    )
    with pytest.raises(FailedPrecondition, match="invalid role or secret ID") as refused:
        load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert "a-wrong-secret" not in str(refused.value)
    token = bao.token()
    load(tmp_path, base(bao, token_auth={"token": token})).mint_x509_ca(request()[0], timedelta(hours=1))
    assert token not in caplog.text
    assert "a-wrong-secret" not in caplog.text
    with pytest.raises(PermissionDenied, match=r"token_auth.*permission denied") as bad_token:
        load(tmp_path, base(bao, token_auth={"token": "hvs.not-a-token"})).mint_x509_ca(
            request()[0], timedelta(hours=1)
        )
    assert "hvs.not-a-token" not in str(bad_token.value)


def test_namespace_is_sent_on_every_request(openbao: OpenBao, tmp_path: Path) -> None:
    namespace = "team-" + Tenant(openbao).name
    openbao.root().write(f"sys/namespaces/{namespace}")
    bao = Tenant(openbao, namespace=namespace)
    data = with_approle(bao)
    with pytest.raises(PermissionDenied):  # outside the namespace, the mount is not there to log in at
        load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    load(tmp_path, {**data, "namespace": namespace}).mint_x509_ca(request()[0], timedelta(hours=1))
    (sign,) = bao.signed()
    assert sign.namespace == f"{namespace}/"


# --- token lifetime --------------------------------------------------------------------


def test_a_renewable_token_is_renewed_in_the_background(bao: Tenant, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_approle(bao, token_ttl="3s"))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    deadline = time.monotonic() + 15
    while renewals(bao) < 2:
        assert time.monotonic() < deadline, bao.paths()
        time.sleep(0.2)
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))  # well past the first lease's end
    assert logins(bao) == 1
    upstream.close()
    renewed = renewals(bao)
    time.sleep(3)
    assert renewals(bao) == renewed  # closing stops the renewer


def test_a_login_that_reaches_its_max_ttl_is_replaced_before_signing(bao: Tenant, tmp_path: Path) -> None:
    # Renewal cannot take the token past its max TTL (OpenBao caps it and warns): once it
    # runs out, the next signing logs in again.
    upstream = load(tmp_path, with_approle(bao, token_ttl="2s", token_max_ttl="2s"))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    time.sleep(2.5)
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    assert logins(bao) == 2
    assert len(bao.signed()) == 2


def test_a_revoked_token_means_one_new_login(bao: Tenant, tmp_path: Path) -> None:
    data = with_approle(bao)
    upstream = load(tmp_path, data)
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    mount = data["approle_auth"]["approle_auth_mount_point"]
    bao.admin().write(f"sys/leases/revoke-prefix/auth/{mount}/login")
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    assert logins(bao) == 2
    assert len(bao.signed()) == 2


def test_an_expired_static_token_is_reported_not_retried_forever(bao: Tenant, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(bao, ttl="2s", renewable=False))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    time.sleep(2.1)
    with pytest.raises(PermissionDenied, match="permission denied"):
        upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    assert len(bao.signed()) == 1


# --- Vault not serving -----------------------------------------------------------------


def test_unreachable_vault_is_unavailable_with_the_address(openbao: OpenBao, bao: Tenant, tmp_path: Path) -> None:
    relay = TcpRelay(openbao.port).start()
    try:
        upstream = load(tmp_path, {**with_token(bao), "vault_addr": relay.url})
        upstream.mint_x509_ca(request()[0], timedelta(hours=1))
        relay.stop()
        with pytest.raises(Unavailable, match=f"cannot reach {relay.url}"):
            upstream.mint_x509_ca(request()[0], timedelta(hours=1))
        relay.start()
        upstream.mint_x509_ca(request()[0], timedelta(hours=1))
        assert len(bao.signed()) == 2
    finally:
        relay.stop()


def test_sealed_vault_is_unavailable(openbao: OpenBao, bao: Tenant, tmp_path: Path) -> None:
    upstream = load(tmp_path, with_token(bao))
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    openbao.seal()
    try:
        with pytest.raises(Unavailable, match="sealed"):
            upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    finally:
        openbao.unseal()
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # urllib3 says so; the test asks for it
def test_vault_certificate_is_verified_unless_told_otherwise(bao: Tenant, tmp_path: Path) -> None:
    data = with_token(bao)
    del data["ca_cert_path"]
    with pytest.raises(Unavailable, match=r"TLS with .* failed.*ca_cert_path holds the CA"):
        load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert not bao.signed()
    load(tmp_path, {**data, "insecure_skip_verify": True}).mint_x509_ca(request()[0], timedelta(hours=1))
    assert len(bao.signed()) == 1


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
    bao: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], message: str
) -> None:
    for variable in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT", "VAULT_APPROLE_SECRET_ID"):
        monkeypatch.delenv(variable, raising=False)
    data = {k: v for k, v in {**base(bao, token_auth={"token": "hvs.unused"}), **change}.items() if v is not None}
    with pytest.raises(CatalogError, match=message):
        load(tmp_path, data)


def test_the_environment_fills_in_what_the_file_leaves_out(
    bao: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", bao.url)
    monkeypatch.setenv("VAULT_CACERT", str(bao.ca_path))
    monkeypatch.setenv("VAULT_TOKEN", bao.token())
    load(tmp_path, {"token_auth": {}, "pki_mount_point": bao.pki_mount}).mint_x509_ca(request()[0], timedelta(hours=1))
    # A value in the file wins over the variable.
    monkeypatch.setenv("VAULT_ADDR", "https://127.0.0.1:1")
    data = {"vault_addr": bao.url, "token_auth": {}, "pki_mount_point": bao.pki_mount}
    load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert len(bao.signed()) == 2


def test_hcl_blocks_configure_the_plugin(bao: Tenant, tmp_path: Path) -> None:
    """The HCL form operators write (``approle_auth { ... }`` inside ``plugin_data``) parses."""
    from pyspire.config import load_server_config_text  # noqa: PLC0415

    mount, role_id, secret_id = bao.approle()
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
            vault_addr = "{bao.url}"
            ca_cert_path = "{bao.ca_path}"
            pki_mount_point = "{bao.pki_mount}"
            approle_auth {{
                approle_auth_mount_point = "{mount}"
                approle_id = "{role_id}"
                approle_secret_id = "{secret_id}"
            }}
        }}
    }}
}}
"""
    config = load_server_config_text(text)
    declaration = next(p for p in config.plugins if p.type == "UpstreamAuthority")
    load(tmp_path, dict(declaration.plugin_data)).mint_x509_ca(request()[0], timedelta(hours=1))
    assert bao.paths()[0] == f"update auth/{mount}/login"


# --- the fake: what a real server cannot be made to do ----------------------------------


def fake_base(vault: VaultServer, tmp_path: Path, **auth: Any) -> dict[str, Any]:
    return {"vault_addr": vault.url, "ca_cert_path": str(tmp_path / "vault" / "vault-ca.pem"), **auth}


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
    upstream = load(tmp_path, fake_base(vault, tmp_path, token_auth={"token": vault.issue_token()}))
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


def test_k8s_auth_sends_the_service_account_token(vault: VaultServer, tmp_path: Path) -> None:
    (tmp_path / "sa-token").write_text("eyJ.k8s.token\n")
    vault.k8s_roles["spire-server"] = "eyJ.k8s.token"
    data = fake_base(
        vault, tmp_path, k8s_auth={"k8s_auth_role_name": "spire-server", "token_path": str(tmp_path / "sa-token")}
    )
    load(tmp_path, data).mint_x509_ca(request()[0], timedelta(hours=1))
    assert vault.requests[0].body == {"role": "spire-server", "jwt": "eyJ.k8s.token"}

    (tmp_path / "sa-token").write_text("eyJ.someone.else")
    again = load(tmp_path, data)
    with pytest.raises(PermissionDenied, match="k8s_auth at auth/kubernetes, role spire-server"):
        again.mint_x509_ca(request()[0], timedelta(hours=1))


def test_a_k8s_login_is_renewed_up_to_its_max_ttl_then_replaced(
    vault: VaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    (tmp_path / "sa-token").write_text("eyJ.k8s.token")
    vault.k8s_roles["spire-server"] = "eyJ.k8s.token"
    vault.login_ttl, vault.token_max_ttl = 3, 4
    data = fake_base(
        vault, tmp_path, k8s_auth={"k8s_auth_role_name": "spire-server", "token_path": str(tmp_path / "sa-token")}
    )
    upstream = load(tmp_path, data)
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    time.sleep(4.5)  # renewed once at 2 s, capped to the 4 s max TTL (Vault warns), then expired
    upstream.mint_x509_ca(request()[0], timedelta(hours=1))
    paths = [r.path for r in vault.requests]
    assert paths.count("/v1/auth/kubernetes/login") == 2
    assert paths.count("/v1/pki/root/sign-intermediate") == 2  # logged in again first, not refused first
    assert "exceeded the effective max_ttl" in caplog.text
    upstream.close()
