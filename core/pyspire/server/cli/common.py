"""What every server CLI command shares: the admin-socket client, output, and its errors.

Only a failure to connect to the admin socket is "cannot reach the server"; the server's own
refusals are ``rpc error: code = ... desc = ...`` as SPIRE prints them. Everything else a
command can get wrong (flags, local files) is a :class:`~pyspire.command_line.CliError` raised
where it happens, reported by :func:`pyspire.command_line.run`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from pyspire.command_line import CliError, go_code_name, print_json, rpc_error

__all__ = [
    "DEFAULT_SOCKET",
    "AdminChannel",
    "add_command",
    "add_group",
    "add_output",
    "add_socket",
    "call",
    "go_code_name",
    "print_json",
    "run_async",
]

DEFAULT_SOCKET = "/tmp/spire-server/private/api.sock"  # noqa: S108 - SPIRE's default path
CALL_TIMEOUT = 30.0
T = TypeVar("T")


class AdminChannel(Channel):
    """A channel to the server's admin socket whose connection failure names the socket."""

    def __init__(self, path: str) -> None:
        """Connect (at the first call) to the Unix socket ``path``."""
        super().__init__(path=path)
        self.socket_path = path

    async def __connect__(self) -> Any:
        """Connect, or raise :class:`CliError` saying which socket could not be reached."""
        try:
            return await super().__connect__()
        except OSError as err:
            raise CliError(f"cannot reach the server at {self.socket_path}: {err.strerror or err}") from None


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


def run_async(handler: Callable[[argparse.Namespace, Channel], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    """Adapt an async command taking an admin channel into a parser handler."""

    def run(args: argparse.Namespace) -> int:
        async def with_channel() -> int:
            channel = AdminChannel(args.socket_path)
            try:
                return await handler(args, channel)
            finally:
                channel.close()

        try:
            return asyncio.run(with_channel())
        except GRPCError as err:
            raise CliError(rpc_error(err)) from None

    return run


async def call(method: Callable[..., Awaitable[T]], request: Message) -> T:
    """One unary call with a timeout; a connection the server drops is an error naming it."""
    try:
        return await method(request, timeout=CALL_TIMEOUT)
    except (StreamTerminatedError, ConnectionError) as err:
        raise CliError(f"the server closed the connection: {err}") from None
    except TimeoutError:
        raise CliError(f"the server did not answer within {CALL_TIMEOUT:.0f} s") from None


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
