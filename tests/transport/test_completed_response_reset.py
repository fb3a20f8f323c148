"""A stream a grpc-go server completed and then reset with NO_ERROR keeps its response.

The server here speaks raw HTTP/2 (the h2 library) the way grpc-go does when its handler
returns while the client has not closed its side: response headers, the message, trailers
with END_STREAM, then RST_STREAM(NO_ERROR), all in one write. SPIRE's server does exactly this
to AttestAgent and SyncAuthorizedEntries.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import grpclib.client
import pytest
from grpclib.exceptions import StreamTerminatedError
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.transport import keep_completed_responses

RESULT = agent_pb2.AttestAgentResponse(
    result=agent_pb2.AttestAgentResponse.Result(svid=types_pb2.X509SVID(expires_at=42), reattestable=True)
)


class GrpcGoLikeServer(asyncio.Protocol):
    """Answers the first message of every stream with RESULT, then trailers, then a reset."""

    def __init__(self, reset_code: ErrorCodes, trailers: bool) -> None:
        self.reset_code = reset_code
        self.trailers = trailers
        self.h2 = H2Connection(H2Configuration(client_side=False))

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.h2.initiate_connection()
        transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self._answer(event.stream_id)
            elif isinstance(event, RequestReceived):
                pass
        self.transport.write(self.h2.data_to_send())

    def _answer(self, stream_id: int) -> None:
        body = RESULT.SerializeToString()
        self.h2.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc+proto")])
        self.h2.send_data(stream_id, b"\0" + struct.pack(">I", len(body)) + body)
        if self.trailers:
            self.h2.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
        self.h2.reset_stream(stream_id, error_code=self.reset_code)


class KeepingChannel(grpclib.client.Channel):
    """A plain channel with the same treatment SpiffeChannel gives its connections."""

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        original = protocol.connection_made

        def connection_made(transport: Any) -> None:
            original(transport)
            keep_completed_responses(protocol)

        protocol.connection_made = connection_made
        return protocol


async def _attest(channel_type: type[grpclib.client.Channel], reset_code: ErrorCodes, trailers: bool) -> Any:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: GrpcGoLikeServer(reset_code, trailers), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = channel_type("127.0.0.1", port)
    try:
        async with agent_grpc.AgentStub(channel).AttestAgent.open(timeout=10) as stream:
            await stream.send_message(agent_pb2.AttestAgentRequest())  # this side stays open, as an agent's does
            reply = await stream.recv_message()
            await stream.end()  # what the agent does next: nothing is left to send
            return reply
    finally:
        channel.close()
        server.close()


def test_a_response_completed_before_a_no_error_reset_is_kept() -> None:
    assert asyncio.run(_attest(KeepingChannel, ErrorCodes.NO_ERROR, trailers=True)) == RESULT


def test_without_the_treatment_grpclib_loses_it() -> None:
    """The failure the treatment exists for (if grpclib ever keeps the response, drop the treatment)."""
    with pytest.raises(StreamTerminatedError, match="error_code: 0"):
        asyncio.run(_attest(grpclib.client.Channel, ErrorCodes.NO_ERROR, trailers=True))


@pytest.mark.parametrize(
    ("code", "trailers"), [(ErrorCodes.CANCEL, True), (ErrorCodes.NO_ERROR, False)], ids=["cancel", "no-trailers"]
)
def test_other_resets_still_fail_the_call(code: ErrorCodes, trailers: bool) -> None:
    with pytest.raises(StreamTerminatedError):
        asyncio.run(_attest(KeepingChannel, code, trailers))
