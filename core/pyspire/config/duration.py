"""Go duration strings (``"1h30m"``, ``"500ms"``), as SPIRE's config files write them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

__all__ = ["format_duration", "parse_duration"]

_UNITS_US: Final = {
    "ns": 0.001,
    "us": 1.0,
    "µs": 1.0,
    "μs": 1.0,
    "ms": 1_000.0,
    "s": 1_000_000.0,
    "m": 60_000_000.0,
    "h": 3_600_000_000.0,
}
_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_US: Final = (2**63 - 1) / 1000
"""Go's longest duration (int64 nanoseconds, about 292 years); longer ones are refused as Go does."""


def parse_duration(text: str) -> timedelta:
    """Parse a Go ``time.ParseDuration`` string such as ``"1h30m"``, ``"1.5h"`` or ``"-5m"``.

    ``"0"`` is accepted (Go accepts it); every other number needs a unit, because ``"30"``
    is ambiguous (seconds? minutes?) and SPIRE rejects it too. Days are not a Go unit:
    write ``"720h"``.
    """
    if not isinstance(text, str):
        raise ValueError(f'expected a duration string such as "1h", got {text!r}')
    body = text.strip()
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if not body:
        raise ValueError(f'invalid duration "{text}": empty')
    total_us = 0.0
    position = 0
    while position < len(body):
        match = _PART.match(body, position)
        if match is None:
            rest = body[position:]
            if re.fullmatch(r"[\d.]+", rest):
                raise ValueError(f'invalid duration "{text}": missing unit (use ns, us, ms, s, m or h)')
            raise ValueError(f'invalid duration "{text}": unknown unit or stray text at "{rest}"')
        total_us += float(match.group(1)) * _UNITS_US[match.group(2)]
        position = match.end()
    if total_us > _MAX_US:
        raise ValueError(f'invalid duration "{text}": out of range (at most 2562047h47m16s)')
    return sign * timedelta(microseconds=round(total_us))


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Go prints durations (``1h30m0s``, ``500ms``)."""
    micros = round(value.total_seconds() * 1_000_000)
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros < 1_000_000:
        return f"{sign}{micros / 1000:g}ms" if micros >= 1000 else f"{sign}{micros}us"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = rest / 1_000_000
    text = f"{seconds:g}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text
