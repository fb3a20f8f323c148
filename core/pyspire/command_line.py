"""What both command lines (``pyspire-server``, ``pyspire-agent``) share: parsing, errors, exit codes.

A command line never ends in a traceback. Whatever fails — a flag (a value out of range, an
argument that is not UTF-8), a local file (unreadable, not JSON, not writable), the daemon
(not reachable) or its answer — the command prints ``Error: <what, naming the flag or file>``
on stderr and exits with SPIRE's code: 1, also for a bad flag (Go's flag package; argparse
would say 2), and 127 for a missing or unknown command (SPIRE's CLI library). Output cut
short by a closed pipe (``| head``) ends the command quietly by SIGPIPE, as a Go program's
does. Commands raise :class:`CliError`; :func:`run` turns it, and anything unexpected, into
that message and code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import pyspire
from pyspire.config.duration import parse_duration
from pyspire.files import atomic_write

__all__ = [
    "EXIT_ERROR",
    "EXIT_UNKNOWN_COMMAND",
    "VERSION_FLAGS",
    "CliError",
    "CliParser",
    "duration_seconds",
    "go_bool",
    "go_code_name",
    "integer",
    "json_text",
    "print_json",
    "read_input",
    "read_text",
    "rpc_error",
    "run",
    "timeout",
    "write_output",
]

EXIT_ERROR = 1
"""Any failure, a bad flag included (SPIRE's CLI)."""
EXIT_UNKNOWN_COMMAND = 127
"""A missing or unknown command (mitchellh/cli, which SPIRE's CLI is built on)."""

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
"""What Go's strconv.ParseBool reads as true and as false (a bool flag's ``-flag=value``)."""


class CliError(Exception):
    """A command failed; the message (naming the flag, file or server) is printed as ``Error: <message>``."""


class CliParser(argparse.ArgumentParser):
    """argparse with SPIRE's exit codes, refusing arguments that are not UTF-8."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse as argparse does, after checking every argument can be sent on as text."""
        arguments = list(sys.argv[1:] if args is None else args)
        for arg in arguments:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                self.error(f"argument {arg.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8")
        return super().parse_known_args(self._go_flags(arguments), namespace)

    def _go_flags(self, arguments: list[str]) -> list[str]:
        """Go's flag syntax for this parser's own flags: ``--flag`` as ``-flag``, ``-bool=true|false``.

        SPIRE's commands are Go programs: an operator's ``--spiffeID x`` or ``-admin=false``
        works there. Only flags this (sub)parser defines are rewritten; the arguments after
        ``--`` are left as they are.
        """
        rewritten: list[str] = []
        for index, arg in enumerate(arguments):
            if arg == "--":
                return rewritten + arguments[index:]
            name, equals, value = arg.partition("=")
            if name.startswith("--") and name[1:] in self._option_string_actions:
                name = name[1:]
            action = self._option_string_actions.get(name)
            if action is None or not name.startswith("-"):
                rewritten.append(arg)
            elif equals and action.nargs == 0 and name not in ("-h", "--help"):
                if value in _GO_TRUE:
                    rewritten.append(name)
                elif value not in _GO_FALSE:
                    self.error(f'invalid boolean value "{value}" for {name}: parse error')
            else:
                rewritten.append(name + equals + value)
        return rewritten

    def error(self, message: str) -> NoReturn:
        """Print the usage and the problem; exit 1 (127 when the command itself is missing or unknown)."""
        self.print_usage(sys.stderr)
        print(f"Error: {message}", file=sys.stderr)
        top_level = self._subparsers is not None and self.prog == self.prog.split()[0]
        sys.exit(EXIT_UNKNOWN_COMMAND if top_level and "<command>" in message else EXIT_ERROR)


def go_bool(text: str) -> bool:
    """A flag type for a bool flag whose ``=false`` must be seen (``-retryBootstrap=false``): Go's ParseBool.

    Declared with ``nargs="?", const=True, default=None``: absent is None, ``-flag`` is True.
    """
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise argparse.ArgumentTypeError(f'invalid boolean value "{text}": parse error')


_GO_CODE_NAMES = {"OK": "OK", "CANCELLED": "Canceled"}


def go_code_name(code: int) -> str:
    """A gRPC status code as Go's ``codes.Code`` prints it (``InvalidArgument``), which SPIRE's CLI shows."""
    try:
        name = Status(code).name
    except ValueError:
        return f"Code({code})"
    return _GO_CODE_NAMES.get(name) or "".join(word.capitalize() for word in name.split("_"))


def rpc_error(err: GRPCError) -> str:
    """A refused call as SPIRE's CLIs print it: ``rpc error: code = NotFound desc = ...``."""
    return f"rpc error: code = {go_code_name(err.status.value)} desc = {err.message}"


def json_text(value: Message | dict[str, Any] | list[Any]) -> str:
    """A message (or plain data holding messages) as SPIRE's ``-output json`` prints it.

    SPIRE prints protojson with the proto field names and every field, default values
    included (``"status":{"code":0,...}``, ``"next_page_token":""``), re-encoded by Go's
    encoding/json: one line, keys sorted. Several messages are a JSON list.
    """

    def plain(item: Any) -> Any:
        if isinstance(item, Message):
            item = MessageToDict(item, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        if isinstance(item, dict):
            return {key: plain(element) for key, element in item.items()}
        if isinstance(item, list):
            return [plain(element) for element in item]
        # protojson prints a whole double (a Struct's numbers: JWT claims) without a fraction.
        return int(item) if isinstance(item, float) and item.is_integer() else item

    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"))


def print_json(value: Message | dict[str, Any] | list[Any]) -> None:
    """Print :func:`json_text` of ``value``."""
    print(json_text(value))


def integer(bits: int = 32) -> Callable[[str], int]:
    """A flag type: a signed integer that fits in ``bits`` bits, as the API field it fills."""
    limit = INT32_MAX if bits == 32 else INT64_MAX

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'invalid value "{text}": not an integer') from None
        if not -limit - 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f'invalid value "{text}": out of range (at most {limit})')
        return value

    parse.__name__ = f"int{bits}"
    return parse


def timeout(text: str) -> float:
    """A flag type: a positive time, in seconds (``2.5``) or as a Go duration (``5s``, ``1m``)."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text).total_seconds()
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    if not math.isfinite(value) or value <= 0 or value > INT32_MAX:
        raise argparse.ArgumentTypeError(f'invalid value "{text}": a positive number of seconds is needed')
    return value


def duration_seconds(text: str, flag: str, *, maximum: int = INT32_MAX) -> int:
    """A TTL flag: whole seconds or a Go duration (``1h``, ``90s``), rounded up, at most ``maximum``."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = math.ceil(parse_duration(text).total_seconds())
        except ValueError as err:
            raise CliError(f"{flag}: {err}") from None
    if value < 0:
        raise CliError(f"{flag} must not be negative")
    if value > maximum:
        raise CliError(f'{flag}: "{text}" is out of range (at most {maximum} seconds)')
    return value


def read_input(path: str, flag: str) -> bytes:
    """The contents of the file ``path`` named by ``flag``, or of stdin for ``-``."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CliError(f"{flag}: cannot read {path}: {err.strerror or err}") from None


def read_text(path: str, flag: str) -> str:
    """:func:`read_input` as UTF-8 text."""
    try:
        return read_input(path, flag).decode("utf-8")
    except UnicodeDecodeError:
        where = "stdin" if path == "-" else path
        raise CliError(f"{flag}: {where} is not UTF-8 text") from None


def write_output(path: Path, data: bytes, mode: int, flag: str) -> None:
    """Write ``data`` to ``path`` (atomically), naming ``flag`` and the file when it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=mode)
    except OSError as err:
        raise CliError(f"{flag}: cannot write {path}: {err.strerror or err}") from None


def _stdout_closed() -> NoReturn:
    """The reader of stdout went away: end as a Go program does, by SIGPIPE, and say nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(128 + signal.SIGPIPE)  # not reached: the signal ends the process


VERSION_FLAGS = ("-v", "-version", "--version")
"""The flags SPIRE's binaries answer with their version, read before any command."""


def _wants_version(argv: Sequence[str]) -> bool:
    for arg in argv:
        if arg in VERSION_FLAGS:
            return True
        if not arg.startswith("-"):
            return False
    return False


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command's ``handler``; the process exit code.

    A version flag before any command prints pyspire's version on stderr and exits 0, as
    SPIRE's binaries print theirs.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if _wants_version(arguments):
        print(pyspire.__version__, file=sys.stderr)
        return 0
    try:
        args = parser.parse_args(arguments)
        handler: Callable[[argparse.Namespace], Any] = args.handler
        return int(handler(args))
    except CliError as err:
        print(f"Error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _stdout_closed()
    except Exception as err:
        print(f"Error: unexpected {type(err).__name__}: {err} (a bug in pyspire: please report it)", file=sys.stderr)
        return EXIT_ERROR
