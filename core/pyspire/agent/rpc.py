"""The agent's API handlers as the server's are: a typed stream in, pyspire's errors out as gRPC statuses.

grpclib hands each handler its raw stream. Read raw, a call without its request message gave
the handler None (an AttributeError later) and bytes that are not the request type raised
protobuf's DecodeError: both ended as INTERNAL with a traceback in the agent's log. Through
:class:`~pyspire.rpc_stream.ApiStream` they are the client's mistake, INVALID_ARGUMENT, and a
pyspire error raised below a handler keeps its code on the wire.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.plugin.errors import PluginError
from pyspire.rpc_stream import ApiStream

__all__ = ["typed_stream"]

Handler = Callable[[Any, ApiStream[Any, Any]], Coroutine[Any, Any, None]]
Wrapped = Callable[[Any, Any], Coroutine[Any, Any, None]]


def typed_stream(handler: Handler) -> Wrapped:
    """Give ``handler`` an :class:`ApiStream` over grpclib's stream; its PluginErrors answer with their code."""

    @functools.wraps(handler)
    async def wrapper(self: Any, stream: Any) -> None:
        try:
            await handler(self, ApiStream(stream))
        except PluginError as err:
            raise GRPCError(Status(err.code.value), err.message) from None

    return wrapper
