"""SPIRE's LogLevel enum and Python's logging levels, both ways (for the Logger APIs).

SPIRE's (logrus's) seven levels each get a Python level, so that a level set through the API
reads back as it was set: ``TRACE`` lies below ``DEBUG`` (everything is logged, as at
``DEBUG``: pyspire has no trace-only lines) and ``PANIC`` above ``CRITICAL`` (nothing is
logged: pyspire never panics).
"""

from __future__ import annotations

import logging

from pyspire.proto.spire.api.types import types_pb2

__all__ = ["PANIC", "TRACE", "level_from_proto", "level_to_proto"]

TRACE = logging.DEBUG - 5
PANIC = logging.CRITICAL + 10

_FROM_PROTO = {
    types_pb2.TRACE: TRACE,
    types_pb2.DEBUG: logging.DEBUG,
    types_pb2.INFO: logging.INFO,
    types_pb2.WARN: logging.WARNING,
    types_pb2.ERROR: logging.ERROR,
    types_pb2.FATAL: logging.CRITICAL,
    types_pb2.PANIC: PANIC,
}
_TO_PROTO = {level: proto for proto, level in _FROM_PROTO.items()}


def level_to_proto(level: int) -> types_pb2.LogLevel:
    """A Python logging level as SPIRE's LogLevel."""
    return _TO_PROTO.get(level, types_pb2.INFO)


def level_from_proto(level: types_pb2.LogLevel) -> int:
    """SPIRE's LogLevel as a Python logging level; ValueError for a value outside the enum."""
    if level not in _FROM_PROTO:
        raise ValueError(f"invalid log level {level}")
    return _FROM_PROTO[level]
