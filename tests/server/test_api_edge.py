"""Where gRPC meets the server: a client's malformed call is its mistake, a race is a refusal.

Against real servers: a call without its request message, or with bytes that are not one,
answers INVALID_ARGUMENT (not INTERNAL with a traceback in the log); an agent banned while it
re-attests is refused PERMISSION_DENIED, the status the rest of attestation uses for a ban.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from pyspire.agent.client import ServerClient
from pyspire.crypto import LocalSigner, build_csr
from pyspire.spiffe import TrustDomain

from tests.server.test_api_security import no_challenge, roots
from tests.support.daemons import ServerDaemon, console_script, server_config
from tests.support.raw_grpc import RawGrpcConnection

TD = TrustDomain.parse("example.org")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory = tmp_path_factory.mktemp("server")
    text, socket_path, port = server_config(directory)
    daemon = ServerDaemon("pyspire-server", directory, socket_path, text)
    daemon.port = port
    daemon.start()
    yield daemon
    daemon.stop()


UNARY_METHODS = [
    "/spire.api.server.agent.v1.Agent/CountAgents",
    "/spire.api.server.agent.v1.Agent/GetAgent",
    "/spire.api.server.entry.v1.Entry/ListEntries",
    "/spire.api.server.bundle.v1.Bundle/GetBundle",
    "/spire.api.server.debug.v1.Debug/GetInfo",
]


@contextlib.contextmanager
def _raw_call(server: ServerDaemon) -> Iterator[RawGrpcConnection]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(server.socket_path))
    try:
        yield RawGrpcConnection(sock)
    finally:
        sock.close()


@pytest.mark.parametrize("method", UNARY_METHODS)
def test_call_without_its_request_message_is_invalid_argument(server: ServerDaemon, method: str) -> None:
    with _raw_call(server) as connection:
        reply = connection.call_without_message(method)
    assert reply.status == Status.INVALID_ARGUMENT.value, reply
    assert reply.message == "the request message is missing"
    assert "Unexpected error" not in server.log()


@pytest.mark.parametrize("method", UNARY_METHODS)
def test_undecodable_request_is_invalid_argument(server: ServerDaemon, method: str) -> None:
    with _raw_call(server) as connection:
        # Field 1 as a length-delimited value promising 100 bytes that never come.
        reply = connection.call(method, b"\x0a\x64\x00")
    assert reply.status == Status.INVALID_ARGUMENT.value, reply
    assert reply.message.startswith("malformed request message"), reply.message
    assert "Unexpected error" not in server.log()
    assert "Traceback" not in server.log()


RACE_PLUGINS = '''
import subprocess
from pathlib import Path

from pyspire.plugin import AttestationResult, hookimpl
from pyspire.plugin.builtin.key_managers import MemoryKeyManager


class Racer:
    """A node attestor that may always re-attest: the payload names the agent."""

    @hookimpl
    def configure(self, plugin_data, core):
        pass

    @hookimpl
    def attest_node(self, payload, challenge, client_ip):
        return AttestationResult(agent_path="/racer/" + payload.decode(), can_reattest=True)


class BanWhileSigning(MemoryKeyManager):
    """The memory key manager, which first bans the agent an order file names (once).

    The server signs an agent's SVID after it looked the node up and before it stores it:
    a ban through the real admin API at that moment is the race, made certain.
    """

    @hookimpl
    def configure(self, plugin_data, core):
        self.order = Path(plugin_data["order"])
        self.command = [plugin_data["cli"], "agent", "ban", "-socketPath", plugin_data["socket"], "-spiffeID"]

    @hookimpl
    def sign_data(self, key_id, data, hash_algorithm, rsa_pss):
        if self.order.exists():
            agent = self.order.read_text()
            self.order.unlink()
            subprocess.run([*self.command, agent], check=True, capture_output=True, timeout=60)
        return super().sign_data(key_id, data, hash_algorithm, rsa_pss)
'''


@pytest.mark.slow
def test_agent_banned_while_it_reattests_is_permission_denied(tmp_path: Path) -> None:
    plugins = tmp_path / "race_plugins.py"
    plugins.write_text(RACE_PLUGINS)
    order = tmp_path / "ban-order"
    text, socket_path, port = server_config(
        tmp_path, plugins='NodeAttestor "racer" {\n plugin_data {}\n }', extra="ratelimit {\n attestation = false\n }"
    )
    disk_key_manager = text[text.index('    KeyManager "disk"') : text.index('    NodeAttestor "join_token"')]
    text = text.replace(
        disk_key_manager,
        f'KeyManager "ban_while_signing" {{\n plugin_data {{\n order = "{order}"\n'
        f' cli = "{console_script("pyspire-server")}"\n socket = "{socket_path}"\n }}\n }}\n',
    )
    env = {"PYSPIRE_DEV_PLUGINS": f"server:racer={plugins}:Racer,server:ban_while_signing={plugins}:BanWhileSigning"}
    daemon = ServerDaemon("pyspire-server", tmp_path, socket_path, text, env=env)
    daemon.port = port
    daemon.start()
    try:

        async def attest() -> None:
            client = ServerClient([("127.0.0.1", port)], TD)
            client.set_roots(roots(daemon))
            try:
                csr = build_csr(LocalSigner(ec.generate_private_key(ec.SECP256R1())))
                await client.attest("racer", b"node-1", csr, no_challenge)
            finally:
                client.close()

        asyncio.run(attest())
        order.write_text("spiffe://example.org/spire/agent/racer/node-1")
        with pytest.raises(GRPCError) as refused:
            asyncio.run(attest())
        assert not order.exists(), "the ban did not run during the re-attestation"
        assert refused.value.status is Status.PERMISSION_DENIED, refused.value
        assert refused.value.message == "failed to attest: agent is banned"
        with pytest.raises(GRPCError) as again:
            asyncio.run(attest())
        assert again.value.status is Status.PERMISSION_DENIED
        agent = daemon.cli("agent", "show", "-spiffeID", "spiffe://example.org/spire/agent/racer/node-1").stdout
        assert "Banned            : true" in agent
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()
