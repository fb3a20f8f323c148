"""Signals sent to real daemons: SPIRE's meanings, SIGHUP survived, nothing dies silently.

A logrotate rule written for SPIRE (move the file, then SIGUSR2) must leave pyspire writing to
the new file; SIGHUP must not take a daemon down; every other terminating signal stops it
gracefully with its sockets removed and the signal named in the log.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemons import Daemon, ServerDaemon, start_agent, start_server
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # every test here runs real daemons


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory = tmp_path_factory.mktemp("server")
    daemon = start_server(directory, extra=f'log_file = "{directory / "server.log"}"')
    yield daemon
    daemon.stop()


def _signal(daemon: Daemon, signum: int) -> None:
    assert daemon.process is not None
    daemon.process.send_signal(signum)


def _running(daemon: Daemon) -> bool:
    return daemon.process is not None and daemon.process.poll() is None


def _exit_code(daemon: Daemon, timeout: float = 20.0) -> int:
    assert daemon.process is not None
    try:
        code = daemon.process.wait(timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise
    daemon.process = None
    return code


def test_sigusr2_reopens_the_log_file_after_logrotate_moved_it(server: ServerDaemon) -> None:
    log = server.directory / "server.log"
    rotated = log.with_suffix(".log.1")
    eventually(lambda: "Server started" in log.read_text())
    log.rename(rotated)
    _signal(server, signal.SIGUSR2)
    eventually(lambda: log.exists() and "Log file reopened" in log.read_text())
    assert (log.stat().st_mode & 0o777) == 0o640  # SPIRE's mode for a log file it creates
    server.cli("entry", "show")
    assert "Server started" in rotated.read_text()
    assert "Server started" not in log.read_text()
    assert "Log file reopened" not in rotated.read_text()


def test_sighup_is_survived_and_explained(server: ServerDaemon) -> None:
    _signal(server, signal.SIGHUP)
    log = server.directory / "server.log"
    eventually(lambda: "SIGHUP received" in log.read_text())
    assert _running(server)
    assert "Server is healthy." in server.cli("healthcheck").stdout


def test_sigusr1_reconfigure_reports_a_changed_plugin_data_file(tmp_path: Path) -> None:
    """SPIRE re-reads plugin_data_file on SIGUSR1; pyspire says whether it changed and that a restart applies it."""
    data_file = tmp_path / "join_token.hcl"
    data_file.write_text("")
    log = tmp_path / "server.log"
    daemon = start_server(tmp_path, extra=f'log_file = "{log}"', join_token_data=f'plugin_data_file = "{data_file}"')
    try:
        _signal(daemon, signal.SIGUSR1)
        eventually(lambda: "Plugin not reconfigured since the config is unchanged" in log.read_text())
        assert "Reconfigure signal received" in log.read_text()
        data_file.write_text("tokens_from_elsewhere = true\n")
        _signal(daemon, signal.SIGUSR1)
        eventually(lambda: "restart the daemon to apply the changed plugin_data_file" in log.read_text())
        assert _running(daemon)
        assert "Server is healthy." in daemon.cli("healthcheck").stdout
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 0), (signal.SIGINT, 0), (signal.SIGQUIT, 128 + 3), (signal.SIGALRM, 128 + 14)],
    ids=["SIGTERM", "SIGINT", "SIGQUIT", "SIGALRM"],
)
def test_terminating_signals_stop_the_server_gracefully(tmp_path: Path, signum: int, code: int) -> None:
    daemon = start_server(tmp_path)
    _signal(daemon, signum)
    assert _exit_code(daemon) == code
    assert not daemon.socket_path.exists()
    name = signal.Signals(signum).name
    assert f"signal={name}" in daemon.log()
    assert "Server stopped" in daemon.log()
    if signum == signal.SIGQUIT:
        assert "Thread 0x" in daemon.log()  # every thread's stack, as Go's runtime prints goroutines


def test_a_real_time_signal_is_named_and_stops_gracefully(tmp_path: Path) -> None:
    daemon = start_server(tmp_path)
    _signal(daemon, signal.SIGRTMIN + 2)
    assert _exit_code(daemon) == 128 + signal.SIGRTMIN + 2
    assert "signal=SIGRTMIN+2" in daemon.log()
    assert not daemon.socket_path.exists()


def test_agent_survives_sighup_reopens_its_log_and_removes_its_socket_on_sigint(
    server: ServerDaemon, tmp_path: Path
) -> None:
    log = tmp_path / "agent.log"
    agent = start_agent(tmp_path / "agent", server, server.join_token(), extra=f'log_file = "{log}"')
    try:
        eventually(lambda: "Agent started" in log.read_text())
        log.rename(tmp_path / "agent.log.1")
        _signal(agent, signal.SIGHUP)
        eventually(lambda: log.exists() and "SIGHUP received" in log.read_text())
        time.sleep(0.5)
        assert _running(agent)
        _signal(agent, signal.SIGINT)
        assert _exit_code(agent) == 0
        assert not agent.socket_path.exists()
        assert "Agent stopped" in log.read_text()
    finally:
        agent.kill()


# A process that takes and gives back the daemons' signal handling over and over, as a daemon
# does once at start and once at its stop. Each round stops itself (SIGTERM to its own pid),
# so every round also unwinds the handlers.
_HANDOVER = """
import asyncio, os, signal, sys
from pyspire.signals import handle_signals

async def round_trip():
    with handle_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        await stop.wait()

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # between rounds, as after a daemon's stop
print("ready", flush=True)
for _ in range(int(sys.argv[1])):
    asyncio.run(round_trip())
"""


def test_a_repeated_stop_signal_never_finds_the_default_action_while_the_handlers_unwind() -> None:
    # Regression: the handlers were removed one by one, each left at SIG_DFL until the next line
    # set it to "ignore". A SIGTERM repeated in that window (systemd's stop and its timeout, a
    # test that stops an agent failing to start) killed the process before its exit handlers ran.
    child = subprocess.Popen([sys.executable, "-c", _HANDOVER, "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 60
        while child.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()
    _, errors = child.communicate(timeout=20)
    assert child.returncode == 0, errors.decode()
