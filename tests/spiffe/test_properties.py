"""Property tests over every parser: only the module's own error, never another exception.

These are the fuzz invariants of the reliability reference (§5): a parser either returns a
value that satisfies the standard's grammar and round-trips, or raises its typed error.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspire.spiffe import (
    Bundle,
    BundleError,
    BundleSet,
    EndpointError,
    JwtSvid,
    JwtSvidError,
    SpiffeId,
    SpiffeIdError,
    TrustDomain,
    X509Svid,
    X509SvidError,
    parse_endpoint,
)

from tests.support.pki import make_ca, make_leaf

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRAMMAR = re.compile(r"spiffe://[a-z0-9._-]{1,255}(/[A-Za-z0-9._-]+)*")
TD = TrustDomain("example.org")

id_alphabet = st.sampled_from([*list("abcXYZ019.-_/:%?#@ é\n"), "spiffe://", "//", "/.", "/.."])
id_like = st.lists(id_alphabet, max_size=30).map("".join)


@SETTINGS
@given(st.one_of(st.text(max_size=80), id_like, id_like.map(lambda s: "spiffe://" + s)))
def test_spiffe_id_parser_accepts_only_the_grammar(text: str) -> None:
    try:
        parsed = SpiffeId.parse(text)
    except SpiffeIdError:
        return
    assert GRAMMAR.fullmatch(text)
    assert not {".", ".."} & set(parsed.path.split("/")[1:])
    assert str(parsed) == text
    assert SpiffeId.parse(str(parsed)) == parsed


@SETTINGS
@given(st.lists(st.text(max_size=12), max_size=5))
def test_segments_never_add_levels(segments: list[str]) -> None:
    try:
        spiffe_id = SpiffeId.from_segments(TD, *segments)
    except SpiffeIdError:
        return
    assert spiffe_id.path.count("/") == len(segments)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
jwk_like = st.fixed_dictionaries(
    {},
    optional={
        "use": st.sampled_from(["x509-svid", "jwt-svid", "other"]),
        "kty": st.sampled_from(["EC", "RSA", "OKP", "oct", 3]),
        "crv": st.sampled_from(["P-256", "P-384", "Ed25519", "X"]),
        "kid": st.text(max_size=5),
        "x": st.text(max_size=12),
        "y": st.text(max_size=12),
        "n": st.text(max_size=12),
        "e": st.sampled_from(["AQAB", "", "!!"]),
        "x5c": st.lists(st.text(max_size=12), max_size=2),
    },
)
bundle_like = st.fixed_dictionaries(
    {},
    optional={
        "keys": st.lists(jwk_like, max_size=4) | json_values,
        "spiffe_sequence": json_values,
        "spiffe_refresh_hint": json_values | st.sampled_from([10**15, -1, 2**63]),
    },
)


@SETTINGS
@given(
    st.one_of(
        bundle_like.map(json.dumps),
        json_values.map(json.dumps),
        st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    )
)
def test_bundle_parsers_raise_only_bundle_errors(text: str) -> None:
    for parse in (
        lambda: Bundle.parse(TD, text),
        lambda: Bundle.parse_jwks(TD, text),
        lambda: BundleSet.parse_map(text),
    ):
        with contextlib.suppress(BundleError):
            parse()


@SETTINGS
@given(st.binary(max_size=200))
def test_x509_bundle_parser_raises_only_bundle_errors(data: bytes) -> None:
    for candidate in (data, b"\x30" + data, b"-----BEGIN CERTIFICATE-----\n" + data + b"\n-----END CERTIFICATE-----\n"):
        with contextlib.suppress(BundleError):
            Bundle.parse_x509(TD, candidate)


@pytest.fixture(scope="module")
def good_svid_der() -> tuple[bytes, bytes]:
    leaf = make_leaf(make_ca())
    return X509Svid.from_parts([leaf.certificate], leaf.key).marshal_raw()


@SETTINGS
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255), cut=st.integers(min_value=0))
def test_x509_svid_parser_survives_corruption(
    good_svid_der: tuple[bytes, bytes], position: int, value: int, cut: int
) -> None:
    chain, key = good_svid_der
    corrupted = bytearray(chain)
    corrupted[position % len(corrupted)] = value
    for candidate in (bytes(corrupted), chain[: cut % len(chain)]):
        with contextlib.suppress(X509SvidError):
            X509Svid.parse_raw(candidate, key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@SETTINGS
@given(header=json_values, claims=json_values, signature=st.binary(max_size=80))
def test_jwt_parser_raises_only_jwt_errors(header: object, claims: object, signature: bytes) -> None:
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"
    for attempt in (
        lambda: JwtSvid.parse_insecure(token),
        lambda: JwtSvid.parse_and_validate(token, Bundle(TD), ["aud"]),
    ):
        with contextlib.suppress(JwtSvidError):
            attempt()


header_like = st.fixed_dictionaries(
    {},
    optional={"alg": json_values | st.sampled_from(["ES256", "RS256", "none"]), "kid": json_values, "typ": json_values},
)
numeric_dates = st.one_of(
    st.integers(), st.floats(), st.sampled_from([10**400, -(10**400), 1e308, "NaN", "Infinity"]), json_values
)
claims_like = st.fixed_dictionaries(
    {},
    optional={
        "sub": json_values | st.just("spiffe://example.org/w"),
        "aud": json_values,
        "exp": numeric_dates,
        "nbf": numeric_dates,
        "iat": numeric_dates,
    },
)


def _json_text(value: object) -> str:
    # "NaN" and "Infinity" as bare constants: Python's json writes and reads them, JSON does not.
    return json.dumps(value).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")


@SETTINGS
@given(header=header_like, claims=claims_like, signature=st.binary(max_size=80))
def test_jwt_parser_on_svid_shaped_members(header: object, claims: object, signature: bytes) -> None:
    """Headers and claims with the members a JWT-SVID has, holding values of any JSON type.

    Regression: ``{"alg": []}`` raised TypeError (unhashable), which the agent answered with
    UNKNOWN and a traceback; an ``exp`` of 10**400 or NaN overflowed datetime.
    """
    token = f"{_b64(_json_text(header).encode())}.{_b64(_json_text(claims).encode())}.{_b64(signature)}"
    for attempt in (
        lambda: JwtSvid.parse_insecure(token),
        lambda: JwtSvid.parse_and_validate(token, Bundle(TD), ["aud"]),
    ):
        with contextlib.suppress(JwtSvidError):
            attempt()


@SETTINGS
@given(st.text(max_size=60))
def test_jwt_parser_on_arbitrary_text(text: str) -> None:
    with contextlib.suppress(JwtSvidError):
        JwtSvid.parse_insecure(text)


@SETTINGS
@given(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["unix://", "tcp://", "unix:/", "tcp://[::1]:"]).flatmap(
            lambda p: st.text(max_size=20).map(lambda s: p + s)
        ),
    )
)
def test_endpoint_parser_raises_only_endpoint_errors(text: str) -> None:
    try:
        endpoint = parse_endpoint(text)
    except EndpointError:
        return
    assert parse_endpoint(str(endpoint)) == endpoint


@SETTINGS
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255), cut=st.integers(min_value=0))
def test_x509_svid_pem_parser_and_bundle_x5c_survive_corruption(
    good_svid_der: tuple[bytes, bytes], position: int, value: int, cut: int
) -> None:
    """A corrupted certificate as PEM, and as the x5c of a SPIFFE bundle: only the modules' errors."""
    chain, key = good_svid_der
    corrupted = bytearray(chain)
    corrupted[position % len(corrupted)] = value
    for der in (bytes(corrupted), chain[: cut % len(chain)]):
        pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"
        with contextlib.suppress(X509SvidError):
            X509Svid.parse(pem, key)
        document = {
            "keys": [{"use": "x509-svid", "kty": "EC", "crv": "P-256", "x5c": [base64.b64encode(der).decode()]}]
        }
        with contextlib.suppress(BundleError):
            Bundle.parse(TD, json.dumps(document))
