"""Every case of the shared SPIFFE ID vectors (spiffeid.json), with pyspire's strict policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyspire.spiffe import MatchError, SpiffeId, SpiffeIdError, TrustDomain
from pyspire.spiffe.match import match_any, match_id, match_member_of, match_one_of

VECTORS = Path(__file__).resolve().parent / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS / "spiffeid.json").read_text())


def _id(case: dict[str, Any]) -> str:
    text = case["input"]
    return repr(text if len(text) <= 60 else f"{text[:40]}...({len(text)})")


def _expect(parse: Any, case: dict[str, Any]) -> Any:
    valid = case["valid"]
    if valid is None:
        # Implementation-defined: only over-long input. pyspire accepts exactly the lengths
        # the standard requires (255-byte trust domains, 2048-byte IDs) and refuses longer.
        with pytest.raises(SpiffeIdError) as raised:
            parse(case["input"])
        assert raised.value.code == "too_long"
        return None
    if valid:
        return parse(case["input"])
    with pytest.raises(SpiffeIdError) as raised:
        parse(case["input"])
    assert raised.value.code == case["error_code"]
    return None


@pytest.mark.parametrize("case", DATA["id_cases"], ids=_id)
def test_spiffe_id(case: dict[str, Any]) -> None:
    parsed = _expect(SpiffeId.parse, case)
    if parsed is not None:
        assert parsed.trust_domain.name == case["trust_domain"]
        assert parsed.path == case["path"]
        assert str(parsed) == case["input"]
        assert SpiffeId.parse(str(parsed)) == parsed


@pytest.mark.parametrize("case", DATA["trust_domain_cases"], ids=_id)
def test_trust_domain(case: dict[str, Any]) -> None:
    parsed = _expect(TrustDomain.parse, case)
    if parsed is not None:
        assert parsed.name == case["trust_domain"]


@pytest.mark.parametrize("case", DATA["path_cases"], ids=_id)
def test_path(case: dict[str, Any]) -> None:
    parsed = _expect(lambda path: SpiffeId.from_path(TrustDomain("example.org"), path), case)
    if parsed is not None:
        assert parsed.path == case["input"]


@pytest.mark.parametrize("case", DATA["segment_cases"], ids=lambda c: repr(c["segments"]))
def test_segments(case: dict[str, Any]) -> None:
    td = TrustDomain("example.org")
    if case["valid"]:
        assert SpiffeId.from_segments(td, *case["segments"]).path == case["joined_path"]
    else:
        with pytest.raises(SpiffeIdError) as raised:
            SpiffeId.from_segments(td, *case["segments"])
        assert raised.value.code == case["error_code"]


@pytest.mark.parametrize("case", DATA["member_of_cases"], ids=lambda c: f"{c['id']}-{c['trust_domain']}")
def test_member_of(case: dict[str, Any]) -> None:
    assert SpiffeId.parse(case["id"]).member_of(TrustDomain.parse(case["trust_domain"])) is case["member"]


@pytest.mark.parametrize("case", DATA["equality_cases"], ids=lambda c: f"{c['a']}=={c['b']}")
def test_equality(case: dict[str, Any]) -> None:
    if case["equal"] is None:
        # Strict policy: the second form is not a SPIFFE ID at all, so it is never equal.
        with pytest.raises(SpiffeIdError):
            SpiffeId.parse(case["b"])
        return
    a, b = SpiffeId.parse(case["a"]), SpiffeId.parse(case["b"])
    assert (a == b) is case["equal"]
    if case["equal"]:
        assert hash(a) == hash(b)


def _matcher(text: str) -> Any:
    name, _, args = text.partition("(")
    values = [value.strip() for value in args.rstrip(")").split(",") if value.strip()]
    if name == "MatchAny":
        return match_any()
    if name == "MatchID":
        return match_id(SpiffeId.parse(values[0]))
    if name == "MatchOneOf":
        return match_one_of(*(SpiffeId.parse(v) for v in values))
    if name == "MatchMemberOf":
        return match_member_of(TrustDomain.parse(values[0]))
    raise AssertionError(f"unknown matcher {text}")


@pytest.mark.parametrize("matcher_case", DATA["matcher_cases"]["matchers"], ids=lambda c: c["matcher"])
def test_matchers(matcher_case: dict[str, Any]) -> None:
    if "<zero trust domain>" in matcher_case["matcher"]:
        # go-spiffe's zero TrustDomain value has no counterpart: pyspire cannot build one.
        with pytest.raises(SpiffeIdError):
            TrustDomain.parse("")
        return
    matcher = _matcher(matcher_case["matcher"])
    ids = DATA["matcher_cases"]["ids"]
    for text, expected in zip(ids, matcher_case["results"], strict=True):
        spiffe_id = SpiffeId.parse(text) if text else None  # "" is the zero ID: no SPIFFE ID
        if expected is None:
            matcher(spiffe_id)
        else:
            with pytest.raises(MatchError) as raised:
                matcher(spiffe_id)
            assert str(raised.value) == expected
