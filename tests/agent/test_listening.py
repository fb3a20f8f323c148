"""The Workload API socket under a burst of connections and when the agent runs out of descriptors."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.test_end_to_end import _entry
from tests.support.daemons import AgentDaemon, ServerDaemon, start_agent, start_server
from tests.support.waiting import eventually
from tests.support.workloads import x509_context

BURST = 500


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentDaemon]:
    directory = tmp_path_factory.mktemp("listening")
    server: ServerDaemon = start_server(directory / "server")
    alias = "spiffe://example.org/node/listening"
    daemon = start_agent(directory / "agent", server, server.join_token(alias))
    _entry(server, alias, "spiffe://example.org/listening", f"unix:uid:{os.getuid()}")
    eventually(lambda: x509_context(daemon))
    yield daemon
    daemon.stop()
    server.stop()


def _connect_all(path: str, count: int) -> tuple[list[socket.socket], int]:
    """``count`` non-blocking connections (as Go clients make them): (the open ones, how many were refused)."""
    opened, refused = [], 0
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:  # EAGAIN: the listen queue is full
            refused += 1
            sock.close()
            continue
        opened.append(sock)
    return opened, refused


def test_a_burst_of_connections_waits_in_the_listen_queue(agent: AgentDaemon) -> None:
    """Regression: with asyncio's default backlog of 100, 89 of 500 connections were refused.

    The agent is stopped (SIGSTOP) while the burst arrives, so nothing is accepted meanwhile:
    every connection must fit in the queue, as it does for SPIRE (somaxconn).
    """
    assert agent.process is not None
    os.kill(agent.process.pid, signal.SIGSTOP)
    try:
        opened, refused = _connect_all(str(agent.socket_path), BURST)
    finally:
        os.kill(agent.process.pid, signal.SIGCONT)
    try:
        assert refused == 0
        assert len(opened) == BURST
        assert x509_context(agent).default_svid is not None
    finally:
        for sock in opened:
            sock.close()


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextlib.contextmanager
def _descriptors_exhausted(agent: AgentDaemon) -> Iterator[list[socket.socket]]:
    """The agent limited to 20 descriptors more than it holds, and 300 callers queued; the limit restored after."""
    assert agent.process is not None
    pid = agent.process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    held: list[socket.socket] = []
    try:
        eventually(lambda: _open_fds(pid) < 50, timeout=20)  # connections of earlier tests are closed
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (_open_fds(pid) + 20, limits[1]))
        held, _ = _connect_all(str(agent.socket_path), 300)
        yield held
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)


def test_running_out_of_descriptors_is_reported_once_and_serving_resumes(agent: AgentDaemon) -> None:
    """Regression: at descriptor exhaustion the agent logged a traceback for every failed
    accept (5,584 in the attack). It reports it once per interval, and serves again as soon as
    descriptors are free.

    Regression too: asyncio scheduled a retry for every failed accept of a pass (4,096 with
    the full backlog), and each retry thousands more, until the loop did nothing else (an
    agent so held on a loaded machine ignored SIGTERM for 20 s). Waiting out of descriptors
    must cost next to nothing.
    """
    assert agent.process is not None
    pid = agent.process.pid
    mark = len(agent.log())
    with _descriptors_exhausted(agent) as held:
        eventually(lambda: "Too many open files" in agent.log()[mark:], timeout=10)
        cpu = _cpu_seconds(pid)
        time.sleep(5)  # the agent retries accept() every second: each retry fails again
        assert _cpu_seconds(pid) - cpu < 0.5  # 1.5 s before the fix, on a quiet machine
        log = agent.log()[mark:]
        assert log.count("Cannot accept connections") == 1
        assert "out of file descriptors" in log
        assert "Traceback" not in log
        # The callers go away: under the same limit the agent serves again.
        for sock in held:
            sock.close()
        held.clear()
        assert eventually(lambda: x509_context(agent).default_svid, timeout=20)


def test_an_agent_stopped_while_out_of_descriptors_stops_cleanly(agent: AgentDaemon) -> None:
    """Regression: the retry asyncio had pending fired on the closed socket and logged a traceback.

    This test stops the module's agent (the fixture's stop then has nothing to do): it runs last.
    """
    mark = len(agent.log())
    with _descriptors_exhausted(agent):
        eventually(lambda: "Too many open files" in agent.log()[mark:], timeout=10)
        assert agent.stop(timeout=10) == 0
    assert "Traceback" not in agent.log()[mark:]
