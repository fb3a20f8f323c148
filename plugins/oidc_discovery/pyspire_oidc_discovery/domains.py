"""The domain allow-list: which host names the discovery document may be served under.

The discovery document's URLs are built from the request's host (``Host``, or
``X-Forwarded-Host`` behind a proxy), so a request naming a host outside ``domains`` is
refused: otherwise anyone able to reach the provider under another name could have it
advertise an issuer and a JWKS address of their choosing. As in SPIRE, names are compared
exactly, and a name is only accepted in the form a DNS lookup would use (lowercase ASCII,
international labels already punycode-encoded), so ``Example.org`` and ``bücher.example``
are refused rather than silently normalised into an allowed name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import idna

__all__ = ["DomainError", "DomainPolicy", "domain_key"]


class DomainError(ValueError):
    """A name is not allowed, or not a valid domain name; the message says which and why."""


def domain_key(domain: str) -> str:
    """``domain`` itself if it is already in lookup form; DomainError otherwise.

    Lookup form is what UTS #46 processing with the STD3 rules yields (IDNA 2008, the
    non-transitional mapping): a name that processing would change is not in that form.
    """
    if domain == "":
        return domain
    try:
        lookup = idna.encode(domain, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as err:
        raise DomainError(f"domain {_quoted(domain)} is not a valid domain name: {err}") from None
    if lookup != domain:
        raise DomainError(f"domain {_quoted(domain)} must already be punycode encoded")
    return domain


class DomainPolicy:
    """Allows exactly the configured domains."""

    def __init__(self, domains: Iterable[str]) -> None:
        """Allow ``domains``; DomainError naming the first that is not in lookup form."""
        self._allowed = frozenset(domain_key(domain) for domain in domains)

    def check(self, domain: str) -> None:
        """Return if ``domain`` (a host name, without port) is allowed; DomainError saying why not."""
        if domain_key(domain) not in self._allowed:
            raise DomainError(f"domain {_quoted(domain)} is not allowed")


def _quoted(text: str) -> str:
    """``text`` in double quotes with control characters escaped, as Go's ``%q`` in SPIRE's messages."""
    return json.dumps(text, ensure_ascii=False)
