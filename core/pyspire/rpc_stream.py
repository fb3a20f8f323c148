"""One RPC's stream as an API handler of either daemon sees it: typed messages, a request that must be there.

grpclib hands a handler its raw stream, whose ``recv_message`` answers None when the client
sent no message and raises protobuf's ``DecodeError`` when the bytes are not the request type;
read as they were, both surfaced as INTERNAL with a traceback in the log. Here each is the
client's mistake, refused with INVALID_ARGUMENT, and the handler's messages carry their types.
A message sent after the client reset the stream raises h2's ``StreamClosedError``, which no
handler expects; it comes out as grpclib's ``StreamTerminatedError``, the error every handler
already treats as "the client left".
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

from google.protobuf.message import DecodeError
from grpclib.exceptions import StreamTerminatedError
from h2.exceptions import StreamClosedError

from pyspire.plugin.errors import InvalidArgument

__all__ = ["ApiStream"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class ApiStream(Generic[Req, Resp]):
    """The stream of one call: receives ``Req`` messages and sends ``Resp`` messages."""

    def __init__(self, stream: Any) -> None:
        """Wrap grpclib's server stream ``stream``."""
        self.raw = stream
        """grpclib's stream, for what concerns the connection (peer address and credentials)."""

    async def request(self) -> Req:
        """The call's one request; a call without it is refused with INVALID_ARGUMENT."""
        message = await self.recv_message()
        if message is None:
            raise InvalidArgument("the request message is missing")
        return message

    async def recv_message(self) -> Req | None:
        """The client's next message, or None when it has ended its side of the stream."""
        try:
            return cast("Req | None", await self.raw.recv_message())
        except DecodeError as err:
            raise InvalidArgument(f"malformed request message: {err}") from None

    async def send_message(self, message: Resp) -> None:
        """Send one response message; a stream the client has closed raises ``StreamTerminatedError``."""
        try:
            await self.raw.send_message(message)
        except StreamClosedError:
            raise StreamTerminatedError("the client closed the stream") from None
