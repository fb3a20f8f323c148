"""SPIRE's seven log levels survive the trip into Python's logging levels and back."""

from __future__ import annotations

import logging

import pytest
from pyspire.proto.spire.api.types import types_pb2
from pyspire.telemetry.log_levels import PANIC, TRACE, level_from_proto, level_to_proto

SPIRE_LEVELS = [types_pb2.PANIC, types_pb2.FATAL, types_pb2.ERROR, types_pb2.WARN, types_pb2.INFO, types_pb2.DEBUG]


@pytest.mark.parametrize("level", [*SPIRE_LEVELS, types_pb2.TRACE], ids=types_pb2.LogLevel.Name)
def test_a_level_set_reads_back_as_it_was_set(level: types_pb2.LogLevel) -> None:
    assert level_to_proto(level_from_proto(level)) == level


def test_trace_logs_what_debug_logs_and_panic_logs_nothing() -> None:
    logger = logging.getLogger("pyspire.test-log-levels")
    logger.setLevel(TRACE)
    assert logger.isEnabledFor(logging.DEBUG)
    logger.setLevel(PANIC)
    assert not logger.isEnabledFor(logging.CRITICAL)


def test_a_value_outside_the_enum_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid log level 99"):
        level_from_proto(99)  # type: ignore[arg-type]
