"""The provider as a process, on a real server and agent, checked by an independent relying party.

PyJWT's ``PyJWKClient`` reads the JWKS the discovery document names and verifies JWT-SVIDs the
agent minted: over HTTPS with the keys from the server API, over a Unix socket (as behind a
proxy) with the keys from the Workload API, and across a rotation of the server's JWT key. A
request for a host outside ``domains`` is refused as SPIRE refuses it.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import ssl
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from pyspire.proto.spire.api.server.localauthority.v1 import localauthority_grpc, localauthority_pb2

from plugins.oidc_discovery.tests.deployment import WORKLOAD_ID, Deployment, Tls, https_provider
from plugins.oidc_discovery.tests.provider import Provider
from tests.support.free_port import free_port
from tests.support.waiting import eventually

# Real daemons and providers: seconds each.
pytestmark = pytest.mark.slow


def _verified_subject(token: str, discovery: dict[str, object], audience: str, ca_file: Path | None) -> str:
    """Verify ``token`` as a relying party does: the key from the discovery document's JWKS, then the claims."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    client = jwt.PyJWKClient(str(discovery["jwks_uri"]), cache_keys=False, ssl_context=context)
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key,
        algorithms=list(discovery["id_token_signing_alg_values_supported"]),  # type: ignore[call-overload]
        audience=audience,
        issuer=str(discovery["issuer"]),
    )
    return str(claims["sub"])


def _keys(client: httpx.Client, **headers: str) -> httpx.Response | None:
    """The JWKS answer once there is one (200), else None."""
    answer = client.get("/keys", headers=headers)
    return answer if answer.status_code == 200 else None


def test_a_jwt_svid_verifies_through_the_discovery_document_over_https(
    tmp_path: Path, deployment: Deployment, tls: Tls
) -> None:
    provider = https_provider(tmp_path / "provider", deployment, tls)
    try:
        with provider.client(tls.ca_file) as client:
            discovery = client.get("/.well-known/openid-configuration").json()
            assert discovery["issuer"] == deployment.issuer
            assert discovery["jwks_uri"] == f"{deployment.issuer}/keys"
            eventually(lambda: _keys(client))

            token = deployment.mint("relying-party")
            assert _verified_subject(token, discovery, "relying-party", tls.ca_file) == WORKLOAD_ID

            # Another name for the same listener: the document is refused, not built for it.
            for headers in ({"Host": "evil.example"}, {"X-Forwarded-Host": "evil.example:443"}):
                refused = client.get("/.well-known/openid-configuration", headers=headers)
                assert refused.status_code == 400
                assert refused.text == 'domain "evil.example" is not allowed\n'
            wrong_case = client.get("/.well-known/openid-configuration", headers={"Host": "LOCALHOST"})
            assert wrong_case.status_code == 400
            assert wrong_case.text == 'domain "LOCALHOST" must already be punycode encoded\n'
    finally:
        assert provider.stop() == 0


def _served_certificate(port: int) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_serving_certificate_is_reloaded_when_its_files_change(
    tmp_path: Path, deployment: Deployment, tls: Tls
) -> None:
    provider = https_provider(tmp_path / "provider", deployment, tls)
    try:
        first = _served_certificate(deployment.issuer_port)
        assert first.public_bytes(serialization.Encoding.PEM) == tls.cert_file.read_bytes()

        renewed = tls.reissue()
        eventually(lambda: _served_certificate(deployment.issuer_port) == renewed.certificate, timeout=10)

        # A renewal gone wrong (a key that is not PEM) is logged; the last good certificate stays.
        tls.key_file.write_text("not a key\n")
        provider.wait_logged("Failed to load certificate")
        assert _served_certificate(deployment.issuer_port) == renewed.certificate
        with provider.client(tls.ca_file) as client:
            assert client.get("/.well-known/openid-configuration").status_code == 200
    finally:
        assert provider.stop() == 0


def test_behind_a_proxy_on_a_unix_socket_with_the_workload_api_keys(tmp_path: Path, deployment: Deployment) -> None:
    socket_path = tmp_path / "oidc.sock"
    config = f"""
domains = ["oidc.example.org"]
listen_socket_path = "{socket_path}"
allow_insecure_scheme = true
workload_api {{
    socket_path = "{deployment.agent.socket_path}"
    trust_domain = "example.org"
    poll_interval = "200ms"
}}
"""
    provider = Provider(tmp_path / "provider", config, socket_path).start()
    try:
        assert socket_path.stat().st_mode & 0o777 == 0o777  # the proxy runs as another user
        with provider.client() as client:
            # The proxy tells the host and scheme the client used; plain HTTP stays http with allow_insecure_scheme.
            proxied = {"Host": "127.0.0.1", "X-Forwarded-Host": "oidc.example.org", "X-Forwarded-Proto": "https"}
            discovery = client.get("/.well-known/openid-configuration", headers=proxied).json()
            assert discovery["issuer"] == "https://oidc.example.org"
            assert discovery["jwks_uri"] == "https://oidc.example.org/keys"
            plain = client.get("/.well-known/openid-configuration", headers={"Host": "oidc.example.org"}).json()
            assert plain["issuer"] == "http://oidc.example.org"

            keys = eventually(lambda: _keys(client))
            assert keys.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
            token = deployment.mint("behind-a-proxy")
            jwk_set = jwt.PyJWKSet.from_dict(keys.json())
            kid = jwt.get_unverified_header(token)["kid"]
            signing_key = next(key for key in jwk_set.keys if key.key_id == kid)
            claims = jwt.decode(token, signing_key, algorithms=["ES256", "ES384", "RS256"], audience="behind-a-proxy")
            assert claims["sub"] == WORKLOAD_ID
            assert all("use" not in key for key in keys.json()["keys"])  # the Workload API's "use" is not passed on
    finally:
        assert provider.stop() == 0
    assert not socket_path.exists()


def test_a_trust_domain_the_workload_api_does_not_serve_leaves_no_keys(tmp_path: Path, deployment: Deployment) -> None:
    port = free_port()
    config = f"""
domains = ["localhost"]
insecure_addr = "127.0.0.1:{port}"
workload_api {{
    socket_path = "{deployment.agent.socket_path}"
    trust_domain = "other.org"
    poll_interval = "200ms"
}}
"""
    provider = Provider(tmp_path / "provider", config, ("127.0.0.1", port)).start()
    try:
        provider.wait_logged('no bundle for trust domain \\"other.org\\" in the Workload API response')
        with provider.client() as client:
            answer = client.get("/keys")
        assert (answer.status_code, answer.text) == (500, "document not available\n")
    finally:
        assert provider.stop() == 0


def _kids(provider: Provider) -> list[str]:
    with provider.client() as client:
        answer = client.get("/keys")
    return [key["kid"] for key in answer.json()["keys"]] if answer.status_code == 200 else []


def _local_authority(deployment: Deployment, method: str, authority_id: str = "") -> str:
    """Call ``<method>JWTAuthority`` (or ``GetJWTAuthorityState``) on the admin socket; the authority ID it names."""

    async def call() -> str:
        channel = Channel(path=str(deployment.server.socket_path))
        try:
            stub = localauthority_grpc.LocalAuthorityStub(channel)
            if method == "Get":
                state = await stub.GetJWTAuthorityState(localauthority_pb2.GetJWTAuthorityStateRequest())
                return state.active.authority_id
            if method == "Prepare":
                prepared = await stub.PrepareJWTAuthority(localauthority_pb2.PrepareJWTAuthorityRequest())
                return prepared.prepared_authority.authority_id
            activated = await stub.ActivateJWTAuthority(
                localauthority_pb2.ActivateJWTAuthorityRequest(authority_id=authority_id)
            )
            return activated.activated_authority.authority_id
        finally:
            channel.close()

    return asyncio.run(call())


def test_a_rotated_jwt_key_is_served_before_it_signs_and_verifies_after(
    tmp_path: Path, deployment: Deployment, tls: Tls
) -> None:
    insecure_port = free_port()
    from_workload_api = Provider(
        tmp_path / "workload",
        f"""
domains = ["localhost"]
insecure_addr = "127.0.0.1:{insecure_port}"
workload_api {{
    socket_path = "{deployment.agent.socket_path}"
    trust_domain = "example.org"
    poll_interval = "200ms"
}}
""",
        ("127.0.0.1", insecure_port),
    ).start()
    from_server_api = https_provider(tmp_path / "server", deployment, tls)
    try:
        active = _local_authority(deployment, "Get")
        eventually(lambda: active in _kids(from_workload_api))
        with from_server_api.client(tls.ca_file) as client:
            before = eventually(lambda: _keys(client))
            discovery = client.get("/.well-known/openid-configuration").json()

            prepared = _local_authority(deployment, "Prepare")
            # Published before it signs anything: both sources serve it next to the active key.
            eventually(lambda: prepared in [key["kid"] for key in client.get("/keys").json()["keys"]])
            eventually(lambda: {active, prepared} <= set(_kids(from_workload_api)))
            after = client.get("/keys", headers={"If-Modified-Since": before.headers["Last-Modified"]})
            assert after.status_code == 200
            assert time.time() - 60 < _http_time(after.headers["Last-Modified"])

            assert _local_authority(deployment, "Activate", prepared) == prepared
            token = eventually(lambda: _signed_by(deployment, prepared))
            assert _verified_subject(token, discovery, "after-rotation", tls.ca_file) == WORKLOAD_ID
    finally:
        assert from_server_api.stop() == 0
        assert from_workload_api.stop() == 0


def _signed_by(deployment: Deployment, kid: str) -> str | None:
    token = deployment.mint("after-rotation")
    return token if jwt.get_unverified_header(token)["kid"] == kid else None


def _http_time(text: str) -> float:
    return email.utils.parsedate_to_datetime(text).timestamp()
