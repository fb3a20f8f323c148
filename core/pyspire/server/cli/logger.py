"""``logger get|set|reset``: read and change the running server's log level (its Logger API).

The level names are logrus's, as ``spire-server`` reads and prints them: ``-level`` takes
``panic``, ``fatal``, ``error``, ``warn`` (or ``warning``), ``info``, ``debug`` or ``trace`` in
any case, and the pretty output names the warning level ``warning``.
"""

from __future__ import annotations

import argparse
from typing import Any

from grpclib.client import Channel

from pyspire.command_line import CliError
from pyspire.proto.spire.api.server.logger.v1 import logger_grpc, logger_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.cli.common import add_command, add_group, call, print_json

__all__ = ["register"]

_LEVELS = {
    "panic": types_pb2.PANIC,
    "fatal": types_pb2.FATAL,
    "error": types_pb2.ERROR,
    "warn": types_pb2.WARN,
    "warning": types_pb2.WARN,
    "info": types_pb2.INFO,
    "debug": types_pb2.DEBUG,
    "trace": types_pb2.TRACE,
}
_NAMES = {level: name for name, level in _LEVELS.items() if name != "warn"}
"""What the pretty output calls each level (logrus's own names: ``warning``, not ``warn``)."""


def _print(logger: types_pb2.Logger, output: str) -> None:
    if output == "json":
        print_json(logger)
        return
    names = [_NAMES.get(level) for level in (logger.current_level, logger.launch_level)]
    if None in names:
        raise CliError(f"the server returned a log level pyspire does not know: {logger}")
    print(f"Logger Level : {names[0]}\nLaunch Level : {names[1]}\n")


async def _get(args: argparse.Namespace, channel: Channel) -> int:
    _print(await call(logger_grpc.LoggerStub(channel).GetLogger, logger_pb2.GetLoggerRequest()), args.output)
    return 0


async def _set(args: argparse.Namespace, channel: Channel) -> int:
    if not args.level:
        raise CliError("a value (-level) must be set")
    level = _LEVELS.get(args.level.lower())
    if level is None:
        raise CliError(f'the value "{args.level}" is not a valid setting (one of {", ".join(_LEVELS)})')
    request = logger_pb2.SetLogLevelRequest(new_level=level)
    _print(await call(logger_grpc.LoggerStub(channel).SetLogLevel, request), args.output)
    return 0


async def _reset(args: argparse.Namespace, channel: Channel) -> int:
    _print(await call(logger_grpc.LoggerStub(channel).ResetLogLevel, logger_pb2.ResetLogLevelRequest()), args.output)
    return 0


def register(commands: Any) -> None:
    """Add ``logger get|set|reset`` to the parser."""
    group = add_group(commands, "logger", "Manage the server's log level")
    add_command(group, "get", "Gets the logger details", _get)
    set_level = add_command(group, "set", "Sets the logger details", _set)
    set_level.add_argument(
        "-level", default="", help="The new log level, one of (panic, fatal, error, warn, info, debug, trace)"
    )
    add_command(group, "reset", "Reset the logger details to launch level", _reset)
