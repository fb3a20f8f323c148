"""moto's standalone server as a child process: real HTTP on loopback, reached by real boto3.

One per test session is enough: :meth:`MotoServer.reset` empties every service between tests.
A plugin whose tests need behaviour moto lacks passes ``launcher``, a script that adds it to
moto and then runs moto's own server (the script says which AWS behaviour it adds and why).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.free_port import free_port

ACCOUNT = "123456789012"
"""moto's default account."""

NO_AWS_FILES = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
"""Environment that keeps boto3 from reading the machine's AWS config and credentials files."""

__all__ = ["ACCOUNT", "NO_AWS_FILES", "MotoServer", "aws", "aws_environment", "moto_server"]


def aws_environment(endpoint: str) -> dict[str, str]:
    """What a process needs for boto3 to talk to ``endpoint`` with test credentials, and never to real AWS."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-west-2",
        **NO_AWS_FILES,
    }


class MotoServer:
    """moto's server on ``127.0.0.1:<port>``; :meth:`environment` points boto3 at it."""

    def __init__(self, port: int | None = None, launcher: Path | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        if launcher is not None:
            command = [sys.executable, str(launcher)]
        else:
            executable = Path(sys.executable).parent / "moto_server"
            command = [str(executable)] if executable.exists() else [shutil.which("moto_server") or "moto_server"]
        self._process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)

    def reset(self) -> None:
        """Forget every resource of every service."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def environment(self) -> dict[str, str]:
        """What a process needs for boto3 to talk to this server (and never to real AWS)."""
        return aws_environment(self.endpoint)

    def use_here(self, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
        """This server, emptied, and boto3 in this test's process pointed at it for the test."""
        self.reset()
        for name, value in self.environment().items():
            monkeypatch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        return self

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop within 10 s)."""
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the test session (a plugin's conftest imports this fixture, or its own)."""
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto, and boto3 in this process pointed at it (never at real AWS)."""
    return moto_server.use_here(monkeypatch)
