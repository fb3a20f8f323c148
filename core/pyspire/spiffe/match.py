"""Matchers: which peer SPIFFE IDs a TLS connection or a validator accepts.

A matcher is a callable that returns nothing for an accepted ID and raises
:class:`MatchError` otherwise. ``None`` stands for a peer that presented no SPIFFE ID at all;
only :func:`match_any` accepts it.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspire.spiffe.spiffeid import SpiffeId, TrustDomain

__all__ = ["MatchError", "Matcher", "match_any", "match_id", "match_member_of", "match_one_of"]

Matcher = Callable[[SpiffeId | None], None]


class MatchError(ValueError):
    """The peer's SPIFFE ID is not one the matcher accepts."""


def _shown(spiffe_id: SpiffeId | None) -> str:
    return "" if spiffe_id is None else str(spiffe_id)


def match_any() -> Matcher:
    """Accept every peer."""

    def matcher(spiffe_id: SpiffeId | None) -> None:
        return None

    return matcher


def match_id(expected: SpiffeId) -> Matcher:
    """Accept exactly ``expected``."""
    return match_one_of(expected)


def match_one_of(*expected: SpiffeId) -> Matcher:
    """Accept any of ``expected`` (and nothing when none are given)."""
    allowed = frozenset(expected)

    def matcher(spiffe_id: SpiffeId | None) -> None:
        if spiffe_id is None or spiffe_id not in allowed:
            raise MatchError(f'unexpected ID "{_shown(spiffe_id)}"')

    return matcher


def match_member_of(trust_domain: TrustDomain) -> Matcher:
    """Accept any ID in ``trust_domain``."""

    def matcher(spiffe_id: SpiffeId | None) -> None:
        if spiffe_id is None or not spiffe_id.member_of(trust_domain):
            shown = "" if spiffe_id is None else spiffe_id.trust_domain.name
            raise MatchError(f'unexpected trust domain "{shown}"')

    return matcher
