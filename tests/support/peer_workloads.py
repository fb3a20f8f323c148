"""Workload API clients of other implementations, run as their own processes.

go-peer (go-spiffe), java-peer (java-spiffe) and py-peer (py-spiffe with spiffe-tls) share one
command line and one output: a JSON object per line (see tests/peers/go/main.go). Each is
pointed at an agent through SPIFFE_ENDPOINT_SOCKET, as a real workload would be.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.daemons import AgentDaemon
from tests.support.peers import PEER_SOURCES

PY_PEER = PEER_SOURCES / "python" / "py_peer.py"


class PeerWorkloadError(AssertionError):
    """A peer client reported a failure (its ``{"error": ...}`` line) or printed something else."""


@dataclass(frozen=True)
class PeerWorkload:
    """One client implementation: ``name`` (go-spiffe, java-spiffe, py-spiffe) and how to start it."""

    name: str
    argv: tuple[str, ...]

    def _env(self, agent: AgentDaemon) -> dict[str, str]:
        return {**os.environ, "SPIFFE_ENDPOINT_SOCKET": agent.address}

    def run(self, agent: AgentDaemon, *args: str, timeout: float = 90.0) -> dict[str, Any]:
        """Run one command against ``agent``; its last JSON line (PeerWorkloadError if it failed)."""
        result = subprocess.run(
            [*self.argv, *args], env=self._env(agent), capture_output=True, text=True, timeout=timeout, check=False
        )
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines or "error" in lines[-1]:
            raise PeerWorkloadError(
                f"{self.name} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
            )
        return lines[-1]

    def start(self, agent: AgentDaemon, *args: str) -> RunningPeer:
        """Start a long-running command (x509 watching rotation, serve); read its lines as they come."""
        process = subprocess.Popen(
            [*self.argv, *args],
            env=self._env(agent),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return RunningPeer(self.name, process)


@dataclass
class RunningPeer:
    """A peer client process whose stdout lines are read on a thread."""

    name: str
    process: subprocess.Popen[str]
    lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def next_line(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next JSON line; PeerWorkloadError if it reports an error or none comes in time."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise PeerWorkloadError(f"{self.name} printed nothing within {timeout} s:\n{self.stderr()}") from None
        if "error" in line:
            raise PeerWorkloadError(f"{self.name}: {line['error']}\n{self.stderr()}")
        return line

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()[-3000:]

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def py_peer() -> PeerWorkload:
    """py-spiffe's client: py_peer.py under the interpreter running the tests (py-spiffe is a dev extra)."""
    return PeerWorkload("py-spiffe", (sys.executable, str(PY_PEER)))


def built_peer(name: str, program: Path) -> PeerWorkload:
    """A compiled peer (go-peer, java-peer) from its cache directory."""
    return PeerWorkload(name, (str(program),))
