"""An agent that hangs up, or never answers, while its NodeAttestor works costs the server only that call.

The plugin runs in a thread of the attestation pool and may ask for a challenge after the
agent has gone. That request once wrote to the reset HTTP/2 stream: h2's StreamClosedError
came out of the plugin's ``challenge`` as an unexpected error, with a traceback in the log
(seen in CI when a queued x509pop attestation started just as its agent left). Here the
plugin is held, on purpose, until the agent has reset its stream. An agent that stays but
never answers is refused once CHALLENGE_TIMEOUT has passed, freeing the plugin's thread.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.exceptions import StreamClosedError
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.server.attestation import CHALLENGE_TIMEOUT
from pyspire.transport import client_tls_context

from tests.support.daemons import ServerDaemon, start_server

LATE_CHALLENGER = '''
import time
from pathlib import Path

from pyspire.plugin import AttestationResult, hookimpl


class LateChallenger:
    """Says it started, waits for a go file, then asks for a challenge and writes down how that went."""

    @hookimpl
    def configure(self, plugin_data, core):
        self.directory = Path(plugin_data["directory"])

    @hookimpl
    def attest_node(self, payload, challenge, client_ip):
        (self.directory / "started").touch()
        deadline = time.monotonic() + 30
        while not (self.directory / "go").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the test never said go")
            time.sleep(0.02)
        try:
            challenge(b"are you there")
        except Exception as err:
            (self.directory / "outcome").write_text(f"{type(err).__name__}: {err}")
            raise
        (self.directory / "outcome").write_text("answered")
        return AttestationResult(agent_path="/late/node")
'''


def _wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def _open_attestation(server: ServerDaemon) -> tuple[Channel, Any]:
    roots = x509.load_pem_x509_certificates(server.bundle_pem().encode())
    channel = Channel("127.0.0.1", server.port, ssl=client_tls_context(roots))
    stream = agent_grpc.AgentStub(channel).AttestAgent.open()
    await stream.__aenter__()
    params = agent_pb2.AttestAgentRequest.Params(
        data=types_pb2.AttestationData(type="late_challenger", payload=b"node"),
        params=agent_pb2.AgentX509SVIDParams(csr=_csr()),
    )
    await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
    return channel, stream


async def _attest_then_hang_up(server: ServerDaemon, started: Path) -> None:
    channel, stream = await _open_attestation(server)
    try:
        await asyncio.to_thread(_wait_for, started)
        await stream.cancel()  # RST_STREAM: the agent is gone, its plugin still at work
    finally:
        channel.close()


async def _take_the_challenge_and_wait(server: ServerDaemon) -> tuple[GRPCError | None, float]:
    """Receive the challenge, never answer, and wait for the server to end the call.

    Returns the status it ended it with, when the client library got to read it, and the
    seconds waited. The server sends its status in the trailers and then resets the stream
    (gRPC's way with a client that has not ended its side); grpclib's client sometimes sees
    the reset first and reports only that, either when it reads or, if the reset lands between
    the end of the messages and this side's end, when it ends its side.
    """
    channel, stream = await _open_attestation(server)
    try:
        reply = await stream.recv_message()
        assert reply is not None
        assert reply.challenge == b"are you there"
        started = time.monotonic()
        try:
            assert await asyncio.wait_for(stream.recv_message(), CHALLENGE_TIMEOUT + 30) is None
            await stream.end()  # grpclib reads trailers only once this side is ended, as the agent does
            await stream.recv_trailing_metadata()
        except GRPCError as err:
            return err, time.monotonic() - started
        except (StreamTerminatedError, StreamClosedError):
            return None, time.monotonic() - started
        raise AssertionError("the server ended the call with OK")
    finally:
        channel.close()


def _late_challenger_server(tmp_path: Path) -> tuple[ServerDaemon, Path]:
    plugin_file = tmp_path / "late_challenger.py"
    plugin_file.write_text(LATE_CHALLENGER)
    signals = tmp_path / "signals"
    signals.mkdir()
    server = start_server(
        tmp_path / "server",
        env={"PYSPIRE_DEV_PLUGINS": f"server:late_challenger={plugin_file}:LateChallenger"},
        plugins=f'NodeAttestor "late_challenger" {{\n plugin_data {{\n directory = "{signals}"\n }}\n }}',
    )
    return server, signals


@pytest.mark.slow
def test_a_challenge_never_answered_is_refused_after_the_timeout(tmp_path: Path) -> None:
    server, signals = _late_challenger_server(tmp_path)
    (signals / "go").touch()
    try:
        refused, waited = asyncio.run(_take_the_challenge_and_wait(server))
        assert CHALLENGE_TIMEOUT - 1 <= waited < CHALLENGE_TIMEOUT + 15, waited
        if refused is not None:
            assert refused.status is Status.INVALID_ARGUMENT, refused
            assert "did not answer the challenge in time" in (refused.message or ""), refused
        # The plugin's thread is free again: its challenge() returned the refusal.
        _wait_for(signals / "outcome", 5)
        outcome = (signals / "outcome").read_text()
        assert outcome == "InvalidArgument: the agent did not answer the challenge in time", outcome
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_a_challenge_asked_for_after_the_agent_left_is_refused_cleanly(tmp_path: Path) -> None:
    server, signals = _late_challenger_server(tmp_path)
    try:
        asyncio.run(_attest_then_hang_up(server, signals / "started"))
        time.sleep(1)  # the server reads the reset and cancels the call's handler
        (signals / "go").touch()
        _wait_for(signals / "outcome")
        outcome = (signals / "outcome").read_text()
        assert outcome.startswith(("Unavailable: ", "InvalidArgument: ")), outcome
        assert server.cli("healthcheck").stdout.strip() == "Server is healthy."
    finally:
        server.stop()
    assert "Traceback" not in server.log()
    assert "raised unexpectedly" not in server.log()
