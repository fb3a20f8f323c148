"""Property tests over gcp_iit attestation: only plugin errors, never another exception.

Tokens are noise, JWT-shaped strings, and genuine Google-signed tokens (the fake's published
key) whose claims hold values of any type: a verified token's contents must be checked too.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import ServerNodeAttestor
from pyspire.plugin.testing import load_plugin, make_core_config

from plugins.gcp_iit.tests.fakes import GoogleFake, SigningKey

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_ENGINE_KEYS = ["project_id", "project_number", "zone", "instance_id", "instance_name", "instance_creation_timestamp"]


@pytest.fixture(scope="module")
def google() -> Iterator[GoogleFake]:
    fake = GoogleFake().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def attestor(google: GoogleFake, tmp_path_factory: pytest.TempPathFactory) -> ServerNodeAttestor:
    data = {"projectid_allow_list": ["project-123"], "google_certs_url": google.certs_url}
    handle = load_plugin("server", "NodeAttestor", "gcp_iit", data, make_core_config(tmp_path_factory.mktemp("gcp")))
    assert isinstance(handle, ServerNodeAttestor)
    return handle


def no_challenge(data: bytes) -> bytes:
    raise AssertionError("gcp_iit never challenges")


def _attest(attestor: ServerNodeAttestor, payload: bytes) -> None:
    with contextlib.suppress(PluginError):
        attestor.instance.attest_node(payload, no_challenge)  # type: ignore[attr-defined]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=80),
        st.tuples(values, values, st.binary(max_size=40)).map(
            lambda parts: (
                f"{_b64(json.dumps(parts[0]).encode())}.{_b64(json.dumps(parts[1]).encode())}.{_b64(parts[2])}".encode()
            )
        ),
    )
)
def test_unsigned_tokens_raise_only_plugin_errors(attestor: ServerNodeAttestor, payload: bytes) -> None:
    _attest(attestor, payload)


@SETTINGS
@given(
    changes=st.fixed_dictionaries(
        {}, optional={key: values for key in ("iss", "aud", "exp", "iat", "email", "sub", "google")}
    ),
    engine=st.fixed_dictionaries({}, optional={key: values for key in _ENGINE_KEYS}),
)
def test_signed_tokens_of_any_content_raise_only_plugin_errors(
    google: GoogleFake, attestor: ServerNodeAttestor, changes: dict[str, Any], engine: dict[str, Any]
) -> None:
    claims = google.instance.claims()
    claims["google"]["compute_engine"].update(engine)
    claims.update(changes)
    _attest(attestor, signed_token(google.signing_keys[0], claims))


def signed_token(key: SigningKey, claims: dict[str, Any]) -> bytes:
    """An RS256 JWT over ``claims`` as they are (PyJWT's encoder refuses some of them)."""
    signing_input = f"{_b64(json.dumps({'alg': 'RS256', 'kid': key.key_id, 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = key.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}".encode()
