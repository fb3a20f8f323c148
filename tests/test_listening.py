"""pyspire's listening sockets: bound as Go binds, and calm when the process runs out of descriptors.

The exhaustion cases run a real asyncio server on a :class:`ListeningSocket` in a process of
its own, which lowers its own descriptor limit (a test process must keep its own).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyspire.listening import ListeningSocket, start_stream_server, tcp_listener, unix_listener

_SERVING = textwrap.dedent(
    """
    import asyncio, json, logging, os, resource, sys
    from pyspire.listening import AcceptExhaustionLog, unix_listener

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")

    async def main(path):
        loop = asyncio.get_running_loop()
        AcceptExhaustionLog().install(loop)
        held = []
        server = await asyncio.start_unix_server(
            lambda reader, writer: held.append(writer), sock=unix_listener(path, 0o600), backlog=4096
        )
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (len(os.listdir("/proc/self/fd")) + 10, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        )
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # the callers are queued
        start = os.times()
        await asyncio.sleep(4)  # out of descriptors: asyncio retries every second
        spent = os.times()
        server.close()
        await asyncio.sleep(1.5)  # the retry pending when the socket closed comes due
        print(json.dumps({"cpu": spent.user + spent.system - start.user - start.system, "accepted": len(held)}))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_server_out_of_descriptors_retries_once_a_second_and_closes_quietly(tmp_path: Path) -> None:
    """Regression: asyncio's accept loop scheduled a retry for every failed accept of a pass
    (4,096 with the full backlog) and each retry thousands more: 3.6 s of CPU in 8 s here,
    and a daemon so held ignored SIGTERM. And the retry pending when the listener closed
    logged a traceback (ValueError on descriptor -1)."""
    path = str(tmp_path / "s.sock")
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVING, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stdin is not None
    callers: list[socket.socket] = []
    try:
        assert server.stdout.readline().strip() == "ready"
        for _ in range(300):
            caller = socket.socket(socket.AF_UNIX)
            caller.setblocking(False)
            try:
                caller.connect(path)
            except BlockingIOError:
                caller.close()
                continue
            callers.append(caller)
        server.stdin.write("\n")
        server.stdin.flush()
        out, err = server.communicate(timeout=60)
    finally:
        server.kill()
        for caller in callers:
            caller.close()
    assert server.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert 0 < summary["accepted"] < 300
    assert summary["cpu"] < 0.5, summary
    assert err.count("Cannot accept connections") == 1, err
    assert "Traceback" not in err, err


def test_an_empty_host_listens_on_both_families() -> None:
    sock = tcp_listener("", 0)
    try:
        assert isinstance(sock, ListeningSocket)
        sock.listen()
        port = sock.getsockname()[1]
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.create_connection((host, port), timeout=5) as caller:
                assert caller.family == family
    finally:
        sock.close()


def test_an_empty_host_whose_port_is_taken_is_refused_not_narrowed_to_ipv4() -> None:
    taken = socket.socket(socket.AF_INET6)
    try:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        taken.bind(("::", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            tcp_listener("", taken.getsockname()[1])
    finally:
        taken.close()


def test_a_host_name_listens_on_one_address_ipv4_first() -> None:
    sock = tcp_listener("localhost", 0)
    try:
        assert sock.family == socket.AF_INET
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_an_address_that_does_not_resolve_is_an_oserror() -> None:
    with pytest.raises(OSError):
        tcp_listener("no-such-host.invalid", 0)


def test_a_unix_listener_has_its_mode_before_it_listens(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    sock = unix_listener(str(path), 0o640)
    try:
        assert path.stat().st_mode & 0o777 == 0o640
        with pytest.raises(OSError):  # bound, not listening: nothing can connect yet
            socket.socket(socket.AF_UNIX).connect(str(path))
    finally:
        sock.close()


def test_an_accepted_connection_is_a_plain_socket(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    sock = unix_listener(str(path), 0o600)
    try:
        sock.listen()
        with socket.socket(socket.AF_UNIX) as caller:
            caller.connect(str(path))
            connection, _ = sock.accept()
            with connection:
                assert type(connection) is socket.socket
    finally:
        sock.close()


@pytest.mark.parametrize("host", ["127.0.0.1", ""])
def test_connections_accepted_by_an_asyncio_server_send_without_nagle(host: str) -> None:
    """Regression: asyncio turns Nagle's algorithm off only for sockets whose protocol is TCP,
    and the listener's was 0, so every reply waited on the peer's delayed ACK: an unchanged agent
    sync took 44 ms at the median (SPIRE's 4)."""

    async def scenario() -> int:
        accepted: asyncio.Queue[int] = asyncio.Queue()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            await accepted.put(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await start_stream_server(connected, host, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            nodelay = await asyncio.wait_for(accepted.get(), 10)
            writer.close()
            return nodelay
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) != 0
