"""Differential testing: one script of API calls played against spire-server and pyspire-server.

A case is an async function of a :class:`Side` (one server's admin socket). It makes its calls
through :meth:`Side.call`, which records each answer (status code and message, or the reply as
protojson) and hands the reply back so the case can use what the server made (an entry's ID).
The same case runs on both servers; their records, normalized, must be equal.

Normalizing replaces only what the servers choose freely: entry IDs (by the SPIFFE ID the entry
was created with: a case gives each of its entries its own), creation times, serial numbers and
expiry times of what the server signs. Everything else (order of results, per-item statuses,
messages, which fields are present) is compared as it came.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

M = TypeVar("M", bound=Message)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""A random ID the server made for something the case could not name (an entry returned without its SPIFFE ID)."""

_PLUGIN_PREFIX = re.compile(r"\b[a-z]+\([a-z0-9_]+\): ")
"""The name of the plugin pyspire puts before what the plugin said: ``datastore(sql): ``."""

_PARSER_ERROR = re.compile(
    r"((?:unable to parse|failed to convert) (?:X\.509|JWT) authority: (?!missing key ID)|malformed CSR: "
    r"|unable to parse JWT token: ).*"
)
"""What a certificate, key or CSR parser said about bad DER, after the part both servers word alike."""

SERVER_CHOSEN_TIMES = frozenset({"created_at", "x509svid_expires_at"})
"""Fields holding a time the server picked (the case cannot know it): compared as set or unset."""


COMPATIBILITY = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"


@functools.cache
def documented_sections() -> frozenset[str]:
    """The headings of docs/compatibility.md: the reasons a case may give for a difference."""
    lines = COMPATIBILITY.read_text().splitlines()
    return frozenset(line[3:].strip() for line in lines if line.startswith("## "))


@dataclass
class Side:
    """One server, seen through its admin socket, and what it answered so far."""

    name: str
    socket_path: Path
    trust_domain: str = "example.org"
    records: list[dict[str, Any]] = field(default_factory=list)
    known_ids: dict[str, str] = field(default_factory=dict)
    """Values this server chose, by the placeholder they are compared as (an authority ID: "<prepared>")."""
    connect: Callable[[], Channel] | None = None
    """Opens the channel the calls go over (a TCP caller's); the admin socket when None."""
    channel: Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = self.connect() if self.connect else Channel(path=str(self.socket_path))

    async def call(
        self,
        method: Callable[..., Awaitable[M]],
        request: Message,
        label: str = "",
        *,
        record: bool = True,
        documented: str = "",
    ) -> M | None:
        """Call ``method`` (a bound stub method) with ``request``; record and return the reply (None on error).

        ``record=False`` leaves the answer out (the case notes what it derives from it instead);
        ``documented`` names the section of docs/compatibility.md explaining why the answers
        differ on purpose: only that is recorded.
        """
        name = label or f"{type(request).__name__}"
        try:
            reply = await method(request, timeout=15)
        except GRPCError as err:
            outcome: dict[str, Any] = {"call": name, "code": err.status.name, "message": err.message or ""}
            reply = None
        else:
            outcome = {"call": name, "code": "OK", "reply": MessageToDict(reply, preserving_proto_field_name=True)}
        if documented:
            assert documented in documented_sections(), f"docs/compatibility.md has no section {documented!r}"
            outcome = {"call": name, "documented": documented}
        if record:
            self.records.append(outcome)
        return reply

    def note(self, label: str, value: Any) -> None:
        """Record a value the case derived (a count, a set of IDs) for comparison."""
        self.records.append({"call": label, "value": value})

    def close(self) -> None:
        self.channel.close()


Case = Callable[[Side], Awaitable[None]]


def _entry_names(value: Any, names: dict[str, str]) -> None:
    """Learn each entry's placeholder: its SPIFFE ID's path (unique within a case)."""
    if isinstance(value, dict):
        spiffe_id = value.get("spiffe_id")
        if isinstance(value.get("id"), str) and isinstance(spiffe_id, dict) and "parent_id" in value:
            names.setdefault(value["id"], f"<entry {spiffe_id.get('path', '')}>")
        for item in value.values():
            _entry_names(item, names)
    elif isinstance(value, list):
        for item in value:
            _entry_names(item, names)


def _replace(value: Any, names: dict[str, str], key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, names, k) for k, v in value.items()}
    if key == "selectors" and isinstance(value, list):
        # pyspire keeps an entry's selectors as a sorted set, SPIRE in the order given
        # (docs/compatibility.md, "An entry's selectors are a set").
        return sorted((_replace(v, names) for v in value), key=lambda s: json.dumps(s, sort_keys=True))
    if isinstance(value, list):
        return [_replace(v, names) for v in value]
    if key in SERVER_CHOSEN_TIMES:
        return "<time>"
    if key == "x509svid_serial_number" and value:
        return "<serial>"
    if isinstance(value, str):
        # pyspire's errors from a plugin name it (docs/compatibility.md, "Plugin error messages").
        value = _PLUGIN_PREFIX.sub("", value)
        # Go's and Python's parsers word their errors differently (docs/compatibility.md, "Parser errors").
        value = _PARSER_ERROR.sub(r"\1<parser error>", value)
        for real, placeholder in names.items():
            value = value.replace(real, placeholder)
        return _UUID.sub("<uuid>", value)
    return value


def normalized(records: list[dict[str, Any]], known_ids: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The records with server-chosen values replaced by placeholders."""
    names = dict(known_ids or {})
    _entry_names(records, names)
    # The longest IDs first: one ID may be a prefix of another.
    ordered = dict(sorted(names.items(), key=lambda item: -len(item[0])))
    result: list[dict[str, Any]] = _replace(records, ordered)
    return result


def _first_difference(theirs: Any, ours: Any, path: str) -> tuple[str, Any, Any]:
    """The innermost place where two records part, as (path, SPIRE's value, ours)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                return _first_difference(theirs.get(key), ours.get(key), f"{path}.{key}")
    if isinstance(theirs, list) and isinstance(ours, list) and len(theirs) == len(ours):
        for index, (a, b) in enumerate(zip(theirs, ours, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{index}]")
    return path, theirs, ours


def difference(spire: list[dict[str, Any]], pyspire: list[dict[str, Any]]) -> str:
    """A readable account of every call the servers answer differently ('' when they agree)."""
    accounts = []
    for index, (theirs, ours) in enumerate(zip(spire, pyspire, strict=False)):
        if theirs != ours:
            where, a, b = _first_difference(theirs, ours, "")
            accounts.append(
                f"call {index} ({theirs.get('call')}), at {where or 'the top'}:\n"
                f"  spire-server:   {json.dumps(a, sort_keys=True)}\n"
                f"  pyspire-server: {json.dumps(b, sort_keys=True)}"
            )
    if len(spire) != len(pyspire):
        accounts.append(f"spire-server recorded {len(spire)} calls, pyspire-server {len(pyspire)}")
    return "\n".join(accounts)


async def assert_same_answers(case: Case, sockets: dict[str, Path]) -> list[dict[str, Any]]:
    """Run ``case`` on spire-server, then on pyspire-server; fail naming the first call they answer differently.

    Returns spire-server's normalized records (a case may also assert what SPIRE answered, so a
    corpus entry that both servers get wrong in the same way does not pass unnoticed).
    """
    return await assert_sides_answer_alike(case, {name: Side(name, path) for name, path in sockets.items()})


async def assert_sides_answer_alike(case: Case, sides: dict[str, Side]) -> list[dict[str, Any]]:
    """:func:`assert_same_answers` for sides made by the caller (over channels of their own)."""
    try:
        for side in sides.values():
            await case(side)
    finally:
        for side in sides.values():
            side.close()
    spire, pyspire = (normalized(sides[name].records, sides[name].known_ids) for name in ("spire", "pyspire"))
    assert not difference(spire, pyspire), difference(spire, pyspire)
    return spire
