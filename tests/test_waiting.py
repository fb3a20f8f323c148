"""The test harness's readiness wait: a socket file that exists is not yet a server that listens."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.waiting import until_listening


def test_a_bound_socket_that_does_not_listen_yet_is_waited_for(tmp_path: Path) -> None:
    """The swtpm start-up race CI hit: connecting between bind() and listen() is refused."""
    path = tmp_path / "server.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    assert path.exists()
    with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as early:
        early.connect(str(path))

    listened_at: list[float] = []

    def listen_later() -> None:
        time.sleep(0.3)
        listened_at.append(time.monotonic())
        server.listen()

    threading.Thread(target=listen_later).start()
    try:
        until_listening(path, lambda: True, timeout=10)
        assert listened_at, "until_listening returned before the server listened"
    finally:
        server.close()


def test_a_server_that_exits_before_listening_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "never.sock"
    with pytest.raises(RuntimeError, match="exited before it listened"):
        until_listening(path, lambda: False, timeout=10)


def test_nothing_listening_times_out_naming_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with pytest.raises(TimeoutError, match=r"silent\.sock"):
        until_listening(path, lambda: True, timeout=0.2)
