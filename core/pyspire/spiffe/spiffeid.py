"""SPIFFE IDs and trust domain names (SPIFFE-ID standard, sections 2.1-2.4).

Parsing is strict, as go-spiffe and SPIRE parse: the scheme and the trust domain must
already be lowercase, and nothing is normalised (no percent-decoding, no case folding, no
dot-segment resolution). A string is either exactly a SPIFFE ID or an error that says which
rule it breaks; two IDs are equal exactly when their strings are equal.

Lengths: the standard requires implementations to accept trust domains of up to 255 bytes
and IDs of up to 2048 bytes. pyspire accepts exactly that and refuses longer input
(``too_long``), so an attacker cannot make every component that stores or logs an ID carry
megabytes.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["SpiffeId", "SpiffeIdError", "TrustDomain"]

SCHEME: Final = "spiffe://"
MAX_TRUST_DOMAIN_BYTES: Final = 255
MAX_ID_BYTES: Final = 2048

# Fast path for well-formed input; anything it rejects is re-scanned by _diagnose() to
# name the first rule broken, in go-spiffe's left-to-right order.
_ID_RE: Final = re.compile(r"spiffe://([a-z0-9._\-]+)((?:/[A-Za-z0-9._\-]+)*)")
_TD_RE: Final = re.compile(r"[a-z0-9._\-]+")
_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._\-]+")
_DOT_SEGMENT_RE: Final = re.compile(r"/\.\.?(?=/|$)")

_TD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")

_MESSAGES: Final = {
    "empty": "cannot be empty",
    "wrong_scheme": 'scheme is missing or invalid (it must be exactly "spiffe://", lowercase)',
    "missing_trust_domain": "trust domain is missing",
    "bad_trust_domain_char": (
        "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    ),
    "bad_path_segment_char": ("path segment characters are limited to letters, numbers, dots, dashes, and underscores"),
    "dot_segment": 'path cannot contain dot segments ("." or "..")',
    "empty_segment": "path cannot contain empty segments",
    "trailing_slash": "path cannot have a trailing slash",
    "no_leading_slash": "path must have a leading slash",
    "too_long": "is too long",
}
_GO_SPIFFE_WORDS: Final = {
    "wrong_scheme": "scheme is missing or invalid",
    "dot_segment": "path cannot contain dot segments",
}
"""Where go-spiffe's error (what SPIRE's API answers) is shorter than ours."""


class SpiffeIdError(ValueError):
    """A string is not a valid SPIFFE ID, trust domain name or path.

    ``code`` is a stable name for the broken rule (``empty``, ``wrong_scheme``,
    ``missing_trust_domain``, ``bad_trust_domain_char``, ``bad_path_segment_char``,
    ``dot_segment``, ``empty_segment``, ``trailing_slash``, ``no_leading_slash``,
    ``too_long``), for callers that branch on it; the message is for people. ``reason`` is
    the broken rule alone, in go-spiffe's words (what SPIRE's API answers, without the input).
    """

    def __init__(self, code: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or message


def _quote(text: str, limit: int = 80) -> str:
    shown = text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    return '"' + shown.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _error(code: str, what: str, text: str, detail: str = "") -> SpiffeIdError:
    message = f"invalid {what} {_quote(text)}: {_MESSAGES[code]}"
    if detail:
        message += f" ({detail})"
    return SpiffeIdError(code, message, _GO_SPIFFE_WORDS.get(code, _MESSAGES[code]))


def _char_detail(text: str, index: int) -> str:
    return f"found {text[index]!r} at position {index}"


def _check_path(path: str, what: str, text: str, offset: int = 0) -> None:
    """Scan a path left to right and raise for the first rule it breaks.

    The order matches go-spiffe's, so that every implementation reports the same reason
    for the same input: a segment is checked for emptiness and dot-ness when its closing
    slash is reached, characters as they come, and the last segment at the end.
    """
    if not path:
        return
    if path[0] != "/":
        raise _error("no_leading_slash", what, text)
    segment_start = 1
    for index in range(1, len(path)):
        char = path[index]
        if char == "/":
            segment = path[segment_start:index]
            if not segment:
                raise _error("empty_segment", what, text, f"at position {offset + index}")
            if segment in (".", ".."):
                raise _error("dot_segment", what, text, f'"{segment}" at position {offset + segment_start}')
            segment_start = index + 1
        elif char not in _PATH_CHARS:
            raise _error("bad_path_segment_char", what, text, _char_detail(text, offset + index))
    last = path[segment_start:]
    if not last:
        raise _error("trailing_slash", what, text)
    if last in (".", ".."):
        raise _error("dot_segment", what, text, f'"{last}" at position {offset + segment_start}')


def _diagnose_id(text: str) -> SpiffeIdError:
    """Name the first rule a string that failed the fast path breaks."""
    what = "SPIFFE ID"
    if not text:
        return _error("empty", what, text)
    if not text.startswith(SCHEME):
        return _error("wrong_scheme", what, text)
    rest = text[len(SCHEME) :]
    slash = rest.find("/")
    trust_domain = rest if slash < 0 else rest[:slash]
    for index, char in enumerate(trust_domain):
        if char not in _TD_CHARS:
            return _error("bad_trust_domain_char", what, text, _char_detail(text, len(SCHEME) + index))
    if not trust_domain:
        return _error("missing_trust_domain", what, text)
    try:
        _check_path(rest[len(trust_domain) :], what, text, len(SCHEME) + len(trust_domain))
    except SpiffeIdError as err:
        return err
    return _check_lengths(text, trust_domain) or SpiffeIdError("invalid", f"invalid {what} {_quote(text)}")


def _check_lengths(text: str, trust_domain: str) -> SpiffeIdError | None:
    # Every accepted character is ASCII, so len() is the byte length here.
    if len(trust_domain) > MAX_TRUST_DOMAIN_BYTES:
        return _error(
            "too_long",
            "SPIFFE ID",
            text,
            f"the trust domain has {len(trust_domain)} bytes; the maximum is {MAX_TRUST_DOMAIN_BYTES}",
        )
    if len(text) > MAX_ID_BYTES:
        return _error("too_long", "SPIFFE ID", text, f"{len(text)} bytes; the maximum is {MAX_ID_BYTES}")
    return None


class TrustDomain:
    """The name of a trust domain, such as ``example.org``.

    Immutable and hashable; ``str()`` gives the bare name, :meth:`id_string` the
    ``spiffe://`` form.
    """

    __slots__ = ("_name",)
    _name: str

    def __init__(self, name: str) -> None:
        """Wrap a name that is already known to be valid; use :meth:`parse` for input."""
        object.__setattr__(self, "_name", name)

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """Parse a trust domain name, or the trust domain of a SPIFFE ID string.

        ``"example.org"`` and ``"spiffe://example.org/workload"`` both give
        ``example.org``, as go-spiffe's ``TrustDomainFromString`` does.
        """
        if not isinstance(text, str):
            raise TypeError(f"trust domain must be a str, not {type(text).__name__}")
        if _TD_RE.fullmatch(text) and len(text) <= MAX_TRUST_DOMAIN_BYTES:
            return cls(text)
        if "://" in text or text.startswith("spiffe:"):
            return SpiffeId.parse(text).trust_domain
        what = "trust domain"
        if not text:
            raise _error("missing_trust_domain", what, text)
        for index, char in enumerate(text):
            if char not in _TD_CHARS:
                raise _error("bad_trust_domain_char", what, text, _char_detail(text, index))
        raise _error("too_long", what, text, f"{len(text)} bytes; the maximum is {MAX_TRUST_DOMAIN_BYTES}")

    @property
    def name(self) -> str:
        """The bare trust domain name."""
        return self._name

    def id_string(self) -> str:
        """The trust domain's own SPIFFE ID, ``spiffe://<name>``."""
        return SCHEME + self._name

    def as_spiffe_id(self) -> SpiffeId:
        """The trust domain's own SPIFFE ID (empty path)."""
        return SpiffeId(self, "")

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"TrustDomain({self._name!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TrustDomain):
            return self._name == other._name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._name)

    def __lt__(self, other: TrustDomain) -> bool:
        return self._name < other._name

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TrustDomain is immutable")


class SpiffeId:
    """A SPIFFE ID: a trust domain and a path (possibly empty).

    Construct with :meth:`parse`, :meth:`from_path` or :meth:`from_segments`; each
    validates. Equality, hashing and ordering follow the string form.
    """

    __slots__ = ("_path", "_string", "_trust_domain")
    _trust_domain: TrustDomain
    _path: str
    _string: str

    def __init__(self, trust_domain: TrustDomain, path: str) -> None:
        """Join an already-validated trust domain and path; use the classmethods for input."""
        object.__setattr__(self, "_trust_domain", trust_domain)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_string", SCHEME + trust_domain.name + path)

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse a SPIFFE ID string, raising :class:`SpiffeIdError` naming the broken rule."""
        if not isinstance(text, str):
            raise TypeError(f"SPIFFE ID must be a str, not {type(text).__name__}")
        match = _ID_RE.fullmatch(text)
        if match is None or _DOT_SEGMENT_RE.search(text, len(SCHEME)) is not None:
            raise _diagnose_id(text)
        trust_domain, path = match.group(1), match.group(2)
        too_long = _check_lengths(text, trust_domain)
        if too_long is not None:
            raise too_long
        return cls(TrustDomain(trust_domain), path)

    @classmethod
    def from_path(cls, trust_domain: TrustDomain, path: str) -> SpiffeId:
        """Join a trust domain and a path such as ``/spire/agent/x509pop/abc``.

        The path is validated, never normalised: ``/a/../b`` is an error, not ``/b``.
        """
        _check_path(path, "path", path)
        spiffe_id = cls(trust_domain, path)
        too_long = _check_lengths(spiffe_id._string, trust_domain.name)
        if too_long is not None:
            raise too_long
        return spiffe_id

    @classmethod
    def from_segments(cls, trust_domain: TrustDomain, *segments: str) -> SpiffeId:
        """Join a trust domain and path segments, validating each segment on its own.

        A segment may not contain ``/``: ``from_segments(td, "a/b")`` is an error, so
        values from the outside world (tags, labels, names) can never add path levels.
        """
        for segment in segments:
            if not segment:
                raise _error("empty_segment", "path segment", segment)
            if segment in (".", ".."):
                raise _error("dot_segment", "path segment", segment)
            if _SEGMENT_RE.fullmatch(segment) is None:
                index = next(i for i, char in enumerate(segment) if char not in _PATH_CHARS)
                raise _error("bad_path_segment_char", "path segment", segment, _char_detail(segment, index))
        return cls.from_path(trust_domain, "".join("/" + segment for segment in segments))

    @property
    def trust_domain(self) -> TrustDomain:
        """The trust domain the ID belongs to."""
        return self._trust_domain

    @property
    def path(self) -> str:
        """The path, ``""`` or starting with ``/``."""
        return self._path

    def member_of(self, trust_domain: TrustDomain) -> bool:
        """Whether the ID belongs to ``trust_domain``."""
        return self._trust_domain == trust_domain

    def __str__(self) -> str:
        return self._string

    def __repr__(self) -> str:
        return f"SpiffeId({self._string!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SpiffeId):
            return self._string == other._string
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._string)

    def __lt__(self, other: SpiffeId) -> bool:
        return self._string < other._string

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SpiffeId is immutable")
