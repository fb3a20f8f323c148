"""An agent whose data_dir fills up keeps its renewed SVID, saves it once it can, and restarts with it.

data_dir is a real 256 KiB tmpfs, filled to the last byte while the agent runs (its KeyManager
keeps its keys elsewhere, as an operator may configure it). The agent SVID renews every few
seconds; the renewed one cannot be saved: the agent says so at error level and is not ready,
keeps serving, and saves it as soon as space returns. Killed then, it restarts with that SVID,
without attesting again (its join token is spent).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config, start_server
from tests.support.free_port import free_port
from tests.support.waiting import eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root"),
]


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "256k") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(4096))
    finally:
        os.close(fd)
    return filler


def _saved_serial(data_dir: Path) -> int:
    saved = json.loads((data_dir / "agent-data.json").read_text())
    return x509.load_der_x509_certificate(base64.b64decode(saved["svid"][0])).serial_number


def _ready(port: int) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as err:
        return dict(json.load(err))


def _wait_for(agent: AgentDaemon, text: str, after: int = 0, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in agent.log()[after:]:
        assert agent.process is not None
        assert agent.process.poll() is None, agent.log()
        assert time.monotonic() < deadline, agent.log()
        time.sleep(0.2)


def test_a_renewed_svid_that_cannot_be_saved_is_saved_when_space_returns(tmp_path: Path) -> None:
    server: ServerDaemon = start_server(tmp_path / "server", extra='agent_ttl = "20s"')
    directory = tmp_path / "agent"
    agent = None
    try:
        with small_filesystem(directory / "data") as data_dir:
            text, socket_path = agent_config(directory, server)
            text = text.replace(f'directory = "{data_dir}"', f'directory = "{directory / "keys"}"')
            health_port = free_port()
            text += (
                f'\nhealth_checks {{\n listener_enabled = true\n bind_address = "127.0.0.1"\n'
                f' bind_port = "{health_port}"\n}}\n'
            )
            agent = AgentDaemon(
                "pyspire-agent", directory, socket_path, text, ["-joinToken", server.join_token()]
            ).start()
            first = _saved_serial(data_dir)

            filler = _fill(data_dir)
            _wait_for(agent, "Cannot save the agent SVID")
            assert _saved_serial(data_dir) == first  # the file still holds the first SVID
            assert _ready(health_port)["agent_svid_saved"] == {
                "save_svid_err": "the agent SVID in use could not be saved in data_dir"
            }

            filler.unlink()
            mark = len(agent.log())
            _wait_for(agent, "Agent SVID saved", after=mark)
            renewed = _saved_serial(data_dir)
            assert renewed != first
            eventually(lambda: _ready(health_port)["agent_svid_saved"] == {}, timeout=10)

            agent.kill()
            restarted_at = len(agent.log())
            agent.start()
            after_restart = agent.log()[restarted_at:]
            assert "Loaded the saved agent SVID" in after_restart
            assert "Node attestation was successful" not in after_restart
            assert agent.stop() == 0
            agent = None
    finally:
        if agent is not None:
            agent.kill()
        server.stop()


def test_a_renewal_key_the_key_manager_cannot_store_is_tried_again_at_the_next_sync(tmp_path: Path) -> None:
    """The disk KeyManager's directory fills up instead: the renewal fails, the agent serves on, then renews."""
    server: ServerDaemon = start_server(tmp_path / "server", extra='agent_ttl = "20s"')
    directory = tmp_path / "agent"
    agent = None
    try:
        with small_filesystem(directory / "keys") as keys_dir:
            text, socket_path = agent_config(directory, server)
            text = text.replace(f'directory = "{directory / "data"}"', f'directory = "{keys_dir}"')
            agent = AgentDaemon(
                "pyspire-agent", directory, socket_path, text, ["-joinToken", server.join_token()]
            ).start()
            first = _saved_serial(directory / "data")

            filler = _fill(keys_dir)
            _wait_for(agent, "Cannot renew the agent SVID; trying again at the next sync")
            assert _saved_serial(directory / "data") == first
            assert "Agent SVID renewed" not in agent.log()

            filler.unlink()
            mark = len(agent.log())
            _wait_for(agent, "Agent SVID renewed", after=mark, timeout=20)
            eventually(lambda: _saved_serial(directory / "data") != first, timeout=10)
            assert agent.stop() == 0
            agent = None
    finally:
        if agent is not None:
            agent.kill()
        server.stop()
