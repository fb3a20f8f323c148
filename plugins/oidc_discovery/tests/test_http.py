"""The endpoints' answers, byte for byte as SPIRE's provider gives them, over real HTTP.

The handler runs in this process on a loopback port with a ``file`` source reading a real
SPIFFE bundle; everything else about the provider (the other sources, TLS, the Unix socket)
is proved on the real processes in test_end_to_end.py.
"""

from __future__ import annotations

import base64
import email.utils
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pyspire.config.reader import parse_config_text
from pyspire.spiffe import Bundle, TrustDomain
from pyspire_oidc_discovery.config import parse_config
from pyspire_oidc_discovery.domains import DomainPolicy
from pyspire_oidc_discovery.handler import DiscoveryHandler
from pyspire_oidc_discovery.health import HealthChecks, threshold
from pyspire_oidc_discovery.sources import key_source

WELL_KNOWN = "/.well-known/openid-configuration"


def _b64(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()


def _bundle(path: Path, **keys: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    bundle = Bundle(TrustDomain.parse("example.org"))
    for kid, key in keys.items():
        bundle = bundle.with_jwt_authority(kid, key.public_key())  # type: ignore[arg-type]
    path.write_bytes(bundle.marshal())
    return path


@asynccontextmanager
async def serving(bundle: Path, extra: str = "", *, fetch: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The handler for a config with ``extra`` keys, on a loopback port; a client for it."""
    config = parse_config(
        parse_config_text(f'domains = ["localhost", "oidc.example.org"]\n{extra}\nfile {{ path = "{bundle}" }}', "t"),
        "t",
    )
    source = key_source(config)
    if fetch:
        await source.poll_once()
    runner = web.AppRunner(DiscoveryHandler(config, source, DomainPolicy(config.domains)).application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{site.port}", headers={"Host": "localhost"}) as client:
            yield client
    finally:
        await runner.cleanup()


async def test_the_discovery_document_is_spires(tmp_path: Path) -> None:
    async with serving(
        _bundle(tmp_path / "b.json", k=ec.generate_private_key(ec.SECP256R1())), 'insecure_addr = ":1"'
    ) as client:
        answer = await client.get(WELL_KNOWN)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.text == (
        "{\n"
        '  "issuer": "https://localhost",\n'
        '  "jwks_uri": "https://localhost/keys",\n'
        '  "authorization_endpoint": "",\n'
        '  "response_types_supported": [\n    "id_token"\n  ],\n'
        '  "subject_types_supported": [\n    "public"\n  ],\n'
        '  "id_token_signing_alg_values_supported": [\n    "RS256",\n    "ES256",\n    "ES384"\n  ]\n'
        "}"
    )


async def test_the_jwks_is_spires_with_alg_and_optional_use(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    bundle = _bundle(tmp_path / "b.json", KEYID=key)
    expected = (
        "{\n"
        '  "keys": [\n'
        "    {\n"
        '{use}      "kty": "EC",\n'
        '      "kid": "KEYID",\n'
        '      "crv": "P-256",\n'
        '      "alg": "ES256",\n'
        f'      "x": "{_b64(numbers.x, 32)}",\n'
        f'      "y": "{_b64(numbers.y, 32)}"\n'
        "    }\n"
        "  ]\n"
        "}"
    )
    async with serving(bundle, 'insecure_addr = ":1"') as client:
        answer = await client.get("/keys")
    assert answer.status_code == 200
    assert answer.text == expected.replace("{use}", "")
    assert answer.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert answer.headers["Pragma"] == "no-cache"
    assert answer.headers["Expires"] == "0"
    async with serving(bundle, 'insecure_addr = ":1"\nset_key_use = true') as client:
        answer = await client.get("/keys")
    assert answer.text == expected.replace("{use}", '      "use": "sig",\n')


async def test_rsa_and_p384_keys_get_their_algorithms(tmp_path: Path) -> None:
    bundle = _bundle(
        tmp_path / "b.json",
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        p384=ec.generate_private_key(ec.SECP384R1()),
    )
    async with serving(bundle, 'insecure_addr = ":1"') as client:
        keys = (await client.get("/keys")).json()["keys"]
    assert {key["kid"]: key["alg"] for key in keys} == {"rsa": "RS256", "p384": "ES384"}
    members = {key["kid"]: list(key) for key in keys}
    assert members == {"rsa": ["kty", "kid", "alg", "n", "e"], "p384": ["kty", "kid", "crv", "alg", "x", "y"]}


async def test_keys_not_yet_fetched_and_no_jwt_keys_answer_as_spire(tmp_path: Path) -> None:
    empty = _bundle(tmp_path / "empty.json")
    async with serving(empty, 'insecure_addr = ":1"', fetch=False) as client:
        answer = await client.get("/keys")
    assert (answer.status_code, answer.text) == (500, "document not available\n")
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    async with serving(empty, 'insecure_addr = ":1"') as client:
        answer = await client.get("/keys")
    assert (answer.status_code, answer.text) == (501, "jwt not supported/enabled in this service\n")


async def test_other_methods_and_paths_are_refused(tmp_path: Path) -> None:
    async with serving(
        _bundle(tmp_path / "b.json", k=ec.generate_private_key(ec.SECP256R1())), 'insecure_addr = ":1"'
    ) as client:
        for path in (WELL_KNOWN, "/keys"):
            for method in ("PUT", "POST", "HEAD"):
                answer = await client.request(method, path)
                assert answer.status_code == 405, (method, path)
            assert (await client.put(path)).text == "method not allowed\n"
        for path in ("/", "/keys/", "/.well-known/openid-configuration/x", "/ready"):
            answer = await client.get(path)
            assert (answer.status_code, answer.text) == (404, "404 page not found\n"), path


async def test_if_modified_since_gets_304_until_the_keys_change(tmp_path: Path) -> None:
    async with serving(
        _bundle(tmp_path / "b.json", k=ec.generate_private_key(ec.SECP256R1())), 'insecure_addr = ":1"'
    ) as client:
        first = await client.get("/keys")
        modified = first.headers["Last-Modified"]
        again = await client.get("/keys", headers={"If-Modified-Since": modified})
        assert again.status_code == 304
        assert again.text == ""
        earlier = email.utils.formatdate(email.utils.parsedate_to_datetime(modified).timestamp() - 10, usegmt=True)
        assert (await client.get("/keys", headers={"If-Modified-Since": earlier})).status_code == 200


@pytest.mark.parametrize(
    ("extra", "headers", "issuer", "jwks_uri"),
    [
        # Plain HTTP without allow_insecure_scheme: the URLs still say https (TLS is in front).
        ('insecure_addr = ":1"', {}, "https://localhost", "https://localhost/keys"),
        ('insecure_addr = ":1"\nallow_insecure_scheme = true', {}, "http://localhost", "http://localhost/keys"),
        (
            'insecure_addr = ":1"\nallow_insecure_scheme = true',
            {"Forwarded": "for=192.0.2.1;proto=https"},
            "https://localhost",
            "https://localhost/keys",
        ),
        (
            'insecure_addr = ":1"',
            {"X-Forwarded-Host": "oidc.example.org", "Host": "127.0.0.1:8080"},
            "https://oidc.example.org",
            "https://oidc.example.org/keys",
        ),
        ('insecure_addr = ":1"', {"Host": "localhost:8443"}, "https://localhost:8443", "https://localhost:8443/keys"),
        (
            'insecure_addr = ":1"\njwt_issuer = "https://issuer.example/tenant"',
            {},
            "https://issuer.example/tenant",
            "https://issuer.example/tenant/keys",
        ),
        (
            'insecure_addr = ":1"\njwt_issuer = "https://issuer.example"\njwks_uri = "https://cdn.example/jwks.json"',
            {},
            "https://issuer.example",
            "https://cdn.example/jwks.json",
        ),
    ],
)
async def test_the_urls_follow_the_request_and_the_config(
    tmp_path: Path, extra: str, headers: dict[str, str], issuer: str, jwks_uri: str
) -> None:
    async with serving(_bundle(tmp_path / "b.json"), extra) as client:
        document = (await client.get(WELL_KNOWN, headers=headers)).json()
    assert (document["issuer"], document["jwks_uri"]) == (issuer, jwks_uri)


async def test_a_path_prefix_moves_every_endpoint(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "b.json", k=ec.generate_private_key(ec.SECP256R1()))
    async with serving(bundle, 'insecure_addr = ":1"\nserver_path_prefix = "/instance/1"') as client:
        document = (await client.get(f"/instance/1{WELL_KNOWN}")).json()
        assert (document["issuer"], document["jwks_uri"]) == (
            "https://localhost/instance/1",
            "https://localhost/instance/1/keys",
        )
        assert (await client.get("/instance/1/keys")).status_code == 200
        assert (await client.get(WELL_KNOWN)).status_code == 404
        assert (await client.get("/keys")).status_code == 404


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Host": "evil.example"}, 'domain "evil.example" is not allowed'),
        ({"Host": "oidc.example.org.evil.example"}, 'domain "oidc.example.org.evil.example" is not allowed'),
        ({"X-Forwarded-Host": "evil.example"}, 'domain "evil.example" is not allowed'),
        ({"Host": "Localhost"}, 'domain "Localhost" must already be punycode encoded'),
        ({"Host": "bad_name"}, 'domain "bad_name" is not a valid domain name'),
        ({"Host": "[::1]:443"}, 'domain "::1" is not a valid domain name'),
    ],
)
async def test_a_host_outside_the_domains_is_refused(tmp_path: Path, headers: dict[str, str], message: str) -> None:
    async with serving(
        _bundle(tmp_path / "b.json", k=ec.generate_private_key(ec.SECP256R1())), 'insecure_addr = ":1"'
    ) as client:
        answer = await client.get(WELL_KNOWN, headers=headers)
        assert answer.status_code == 400
        assert answer.text.startswith(message)
        assert answer.text.endswith("\n")
        # The JWKS holds nothing taken from the request; SPIRE serves it under any name.
        assert (await client.get("/keys", headers=headers)).status_code == 200


async def test_health_checks_follow_the_last_successful_fetch(tmp_path: Path) -> None:
    bundle = tmp_path / "b.json"
    config = parse_config(
        parse_config_text(
            f'domains = ["localhost"]\ninsecure_addr = ":1"\nhealth_checks {{}}\nfile {{ path = "{bundle}" }}', "t"
        ),
        "t",
    )
    assert config.health_checks is not None
    assert (config.health_checks.bind_port, config.health_checks.ready_path, config.health_checks.live_path) == (
        8008,
        "/ready",
        "/live",
    )
    source = key_source(config)
    checks = HealthChecks(config.health_checks, source)
    runner = web.AppRunner(checks.application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{site.port}") as client:
            await source.poll_once()  # the file does not exist yet
            assert (await client.get("/ready")).status_code == 500
            assert (await client.get("/live")).status_code == 200  # still starting
            _bundle(bundle, k=ec.generate_private_key(ec.SECP256R1()))
            await source.poll_once()
            assert (await client.get("/ready")).status_code == 200
            assert (await client.get("/live")).status_code == 200
            assert (await client.post("/ready")).status_code == 405
            assert (await client.get("/keys")).status_code == 404
    finally:
        await runner.cleanup()


def test_the_health_threshold_is_five_polls_and_at_least_three_minutes() -> None:
    assert threshold(timedelta(seconds=10)) == timedelta(minutes=3)
    assert threshold(timedelta(minutes=1)) == timedelta(minutes=5)
