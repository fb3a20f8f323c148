"""What every server CLI command shares: the admin-socket client, output, errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.exceptions import GRPCError

__all__ = [
    "DEFAULT_SOCKET",
    "CliError",
    "add_command",
    "add_group",
    "add_output",
    "add_socket",
    "call",
    "print_json",
    "read_input",
    "run_async",
]

DEFAULT_SOCKET = "/tmp/spire-server/private/api.sock"  # noqa: S108 - SPIRE's default path
T = TypeVar("T")


class CliError(Exception):
    """A command failed; the message is printed as ``Error: <message>``."""


def add_socket(parser: argparse.ArgumentParser) -> None:
    """``-socketPath``: the server's admin socket."""
    parser.add_argument(
        "-socketPath", dest="socket_path", default=DEFAULT_SOCKET, help="Path to the SPIRE Server API socket"
    )


def add_output(parser: argparse.ArgumentParser) -> None:
    """``-output pretty|json``."""
    parser.add_argument(
        "-output",
        dest="output",
        choices=("pretty", "json"),
        default="pretty",
        help="Desired output format (pretty, json)",
    )


def print_json(message: Message | dict[str, Any] | list[Any]) -> None:
    """Print a message (or plain data) as JSON."""
    data = MessageToDict(message, preserving_proto_field_name=True) if isinstance(message, Message) else message
    print(json.dumps(data, indent=2))


def run_async(handler: Callable[[argparse.Namespace, Channel], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    """Adapt an async command taking an admin channel into a parser handler."""

    def run(args: argparse.Namespace) -> int:
        async def with_channel() -> int:
            channel = Channel(path=args.socket_path)
            try:
                return await handler(args, channel)
            finally:
                channel.close()

        try:
            return asyncio.run(with_channel())
        except GRPCError as err:
            print(f"Error: rpc error: code = {err.status.name} desc = {err.message}", file=sys.stderr)
            return 1
        except (ConnectionError, FileNotFoundError, OSError) as err:
            print(f"Error: cannot reach the server at {args.socket_path}: {err}", file=sys.stderr)
            return 1
        except CliError as err:
            print(f"Error: {err}", file=sys.stderr)
            return 1

    return run


async def call(method: Callable[..., Awaitable[T]], request: Message) -> T:
    """One unary call with a timeout."""
    return await method(request, timeout=30)


def add_group(commands: Any, name: str, help_text: str) -> Any:
    """A command group (``bundle``, ``agent``...) whose verbs are added with :func:`add_command`."""
    parser = commands.add_parser(name, help=help_text)
    return parser.add_subparsers(dest=f"{name}_command", metavar="<command>", required=True)


def add_command(group: Any, name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
    """A verb that talks to the server's admin socket and may print JSON (``-output json``)."""
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_text)
    add_socket(parser)
    add_output(parser)
    parser.set_defaults(handler=run_async(handler))
    return parser


def read_input(path: str) -> bytes:
    """The contents of ``path``, or of stdin for ``""`` and ``"-"``."""
    if path in ("", "-"):
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}") from None
