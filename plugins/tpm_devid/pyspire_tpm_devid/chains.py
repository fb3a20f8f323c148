"""X.509 chain building to a set of trusted roots, as Go's ``Certificate.Verify`` with any key usage.

SPIRE verifies the DevID and endorsement certificates with Go's verifier and
``ExtKeyUsageAny``; TPM vendors' EK certificates do not fit a TLS-oriented policy, so the
chains are built here: every issuer is a CA certificate valid now whose key signed the
certificate below it, ending at one of the roots. All chains found are returned (the
selectors name every CA on them).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

__all__ = ["ChainError", "verified_chains"]

MAX_DEPTH = 8
"""Longest chain followed, leaf included: DevID and EK hierarchies are two or three deep."""
MAX_SIGNATURE_CHECKS = 100
"""Go's budget for one verification: intermediates that all sign one another would otherwise
make the search exponential in their number."""


class ChainError(ValueError):
    """The certificate does not chain to a trusted root."""


def _valid_now(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _path_length_allows(issuer: x509.Certificate, chain: list[x509.Certificate]) -> bool:
    """Whether ``issuer``'s pathLenConstraint allows the CAs already below it (``chain[1:]``)."""
    try:
        limit = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return True
    return limit is None or len(chain) - 1 <= limit


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def verified_chains(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: datetime.datetime | None = None,
) -> list[list[x509.Certificate]]:
    """Every chain from ``leaf`` through ``intermediates`` to one of ``roots`` (leaf first)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    if not _valid_now(leaf, moment):
        raise ChainError("certificate has expired or is not yet valid")
    chains: list[list[x509.Certificate]] = []
    budget = [MAX_SIGNATURE_CHECKS]

    def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
        if child.issuer != issuer.subject:
            return False
        budget[0] -= 1
        if budget[0] < 0:
            raise ChainError("signature check attempts limit reached while verifying certificate chain")
        return _signed_by(child, issuer)

    def extend(chain: list[x509.Certificate]) -> None:
        below = chain[-1]
        for root in roots:
            usable = _is_ca(root) and _valid_now(root, moment) and _path_length_allows(root, chain)
            if usable and signed_by(below, root):
                chains.append([*chain, root])
        if len(chain) + 1 >= MAX_DEPTH:
            return
        for candidate in intermediates:
            if candidate in chain or not _is_ca(candidate) or not _valid_now(candidate, moment):
                continue
            if _path_length_allows(candidate, chain) and signed_by(below, candidate):
                extend([*chain, candidate])

    extend([leaf])
    if not chains:
        raise ChainError("certificate signed by unknown authority")
    return chains
