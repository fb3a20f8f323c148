"""moto's standalone server as a child process: the AWS APIs the plugins' tests talk to.

Every AWS plugin's tests run one per test session (a session fixture in the plugin's
``conftest.py``), reset it between tests, and reach it through boto3's own
``AWS_ENDPOINT_URL``, so the plugin code under test is the code that talks to AWS.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.free_port import free_port

__all__ = ["ACCOUNT", "MotoServer"]

ACCOUNT = "123456789012"
"""moto's default account."""


class MotoServer:
    """moto's standalone server on a loopback port (a free one unless ``port`` is given)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
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
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)

    def reset(self) -> None:
        """Forget every resource (buckets, secrets, instances...) of every account."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def environment(self) -> dict[str, str]:
        """What a process needs for boto3 to talk to this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-west-2",
        }

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
