"""``pyspire-oidc-discovery`` as a real process for the tests, and HTTP clients for each way it listens."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.daemons import console_script

START_TIMEOUT = 30.0


def _answers(address: tuple[str, int] | Path) -> bool:
    family = socket.AF_UNIX if isinstance(address, Path) else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.connect(str(address) if isinstance(address, Path) else address)
    except OSError:
        return False
    finally:
        probe.close()
    return True


@dataclass
class Provider:
    """One provider process: its config file, its log, where it listens (a TCP port or a Unix socket)."""

    directory: Path
    config_text: str
    listens_on: tuple[str, int] | Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / "provider.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "oidc-discovery-provider.conf"

    def start(self) -> Provider:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [console_script("pyspire-oidc-discovery"), "-config", str(self.config_path)],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.listens_on):
            if self.process.poll() is not None:
                raise RuntimeError(f"the provider exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the provider did not listen within {START_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_logged(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} not logged:\n{self.log()}"
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGQUIT)  # its stacks into the log, to show where it hangs
                time.sleep(2)
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"the provider ignored SIGTERM:\n{self.log()}") from None
        code = self.process.returncode
        self.process = None
        return code

    def client(self, ca_file: Path | None = None) -> httpx.Client:
        """An HTTP client for this provider: over its Unix socket, or TCP (HTTPS verified with ``ca_file``)."""
        if isinstance(self.listens_on, Path):
            return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.listens_on)), base_url="http://localhost")
        host, port = self.listens_on
        if ca_file is not None:
            return httpx.Client(base_url=f"https://localhost:{port}", verify=ssl.create_default_context(cafile=ca_file))
        return httpx.Client(base_url=f"http://{host}:{port}")


def run_provider(directory: Path, config_text: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the provider on ``config_text`` expecting it to exit by itself (a config it refuses)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "oidc-discovery-provider.conf"
    path.write_text(config_text)
    return subprocess.run(
        [console_script("pyspire-oidc-discovery"), "-config", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
