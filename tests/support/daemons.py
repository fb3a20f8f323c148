"""Real ``pyspire-server`` and ``pyspire-agent`` processes for end-to-end tests.

Each daemon gets its own directory (config, data, sockets) and free ports, is started as the
installed console script, and is considered up when its socket answers. ``stop()`` sends
SIGTERM and returns the exit code, so tests can assert a clean shutdown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.free_port import free_port

START_TIMEOUT = 30.0


def console_script(name: str) -> str:
    """The installed console script: beside the interpreter running the tests, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (pip install -e .)")
    return found


def _socket_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@dataclass
class Daemon:
    """A daemon process with its working directory."""

    command: str
    directory: Path
    socket_path: Path
    config_text: str
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to the test process's environment (for example AWS_ENDPOINT_URL)."""
    executable: str | None = None
    """The program to run (default: the console script named ``command``; SPIRE's binaries for peers)."""
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / f"{self.command}.log"

    @property
    def program(self) -> str:
        return self.executable or console_script(self.command)

    @property
    def config_path(self) -> Path:
        return self.directory / f"{self.command}.conf"

    def start(self, wait: bool = True) -> Daemon:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.program, "run", "-config", str(self.config_path), *self.extra_args],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill()  # one that never became ready must not outlive the test
                raise
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command} exited with {self.process.returncode}:\n{self.log()}")
            if _socket_answers(self.socket_path):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.command} did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit code (SIGKILL and an error if it does not stop in time)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"{self.command} ignored SIGTERM for {timeout} s:\n{self.log()}") from None
        code = self.process.returncode
        self.process = None
        return code

    def stop_insistently(self, interval: float = 0.002, timeout: float = 20.0) -> int:
        """SIGTERM again and again until the process exits (a supervisor that repeats itself); the exit code."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"{self.command} did not stop for {timeout} s:\n{self.log()}")
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            time.sleep(interval)
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def cli(self, *args: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``<command> <verb...> -socketPath <this daemon's socket>``."""
        argv = [self.program, *args, "-socketPath", str(self.socket_path)]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, input=stdin.decode() if stdin else None, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result


def server_config(
    directory: Path,
    *,
    trust_domain: str = "example.org",
    port: int | None = None,
    extra: str = "",
    plugins: str = "",
    ca_ttl: str = "24h",
    log_level: str = "DEBUG",
    datastore: tuple[str, str] | None = None,
    join_token_data: str = "plugin_data {}",
    blocks: str = "",
    key_manager: str = "",
) -> tuple[str, Path, int]:
    """A server config under ``directory``: (text, socket path, TCP port).

    The datastore is SQLite in ``directory`` unless ``datastore`` gives (database_type,
    connection_string). ``blocks`` are top-level blocks (``telemetry``, ``health_checks``).
    ``key_manager`` replaces the ``disk`` KeyManager with another declaration.
    """
    port = port or free_port()
    socket_path = directory / "sock" / "api.sock"
    database_type, connection_string = datastore or ("sqlite3", str(directory / "data" / "datastore.sqlite3"))
    text = f"""
server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{socket_path}"
    trust_domain = "{trust_domain}"
    data_dir = "{directory / "data"}"
    log_level = "{log_level}"
    ca_ttl = "{ca_ttl}"
    {extra}
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "{database_type}"
            connection_string = "{connection_string}"
        }}
    }}
    {key_manager or _disk_key_manager(directory)}
    NodeAttestor "join_token" {{
        {join_token_data}
    }}
    {plugins}
}}
{blocks}
"""
    return text, socket_path, port


def _disk_key_manager(directory: Path) -> str:
    return f'KeyManager "disk" {{\n plugin_data {{\n  keys_path = "{directory / "data" / "keys.json"}"\n }}\n}}'


def start_server(
    directory: Path, env: Mapping[str, str] | None = None, *, executable: Path | None = None, **kwargs: object
) -> ServerDaemon:
    """A pyspire-server (or, given ``executable``, SPIRE's spire-server: it reads the same config)."""
    text, socket_path, port = server_config(directory, **kwargs)  # type: ignore[arg-type]
    command = executable.name if executable else "pyspire-server"
    server = ServerDaemon(
        command, directory, socket_path, text, env=env or {}, executable=str(executable) if executable else None
    )
    server.port = port
    return server.start()  # type: ignore[return-value]


class ServerDaemon(Daemon):
    """A server; ``port`` is its TCP port."""

    port: int = 0

    def bundle_pem(self) -> str:
        return self.cli("bundle", "show").stdout

    def x509_authority_id(self, verb: str = "show", label: str = "Active", *args: str) -> str:
        """Run ``localauthority x509 <verb>`` and read the authority ID listed under ``label``."""
        output = self.cli("localauthority", "x509", verb, *args).stdout
        section = output.split(f"{label} X.509 authority:", 1)[1]
        return section.split("Authority ID: ", 1)[1].split()[0]

    def x509_rotation(self) -> Iterator[int]:
        """Walk the X.509 CA through a full rotation; after each step, yield how many roots the bundle then has.

        The next CA is prepared (2: the bundle has both roots), then activated, the old one
        tainted and revoked (1). A test waits for its destination to reflect each count before
        going on: ``for roots in server.x509_rotation(): ...``.
        """
        old = self.x509_authority_id()
        new = self.x509_authority_id("prepare", "Prepared")
        yield 2
        self.cli("localauthority", "x509", "activate", "-authorityID", new)
        self.cli("localauthority", "x509", "taint", "-authorityID", old)
        self.cli("localauthority", "x509", "revoke", "-authorityID", old)
        yield 1

    def join_token(self, spiffe_id: str = "") -> str:
        args = ["token", "generate"]
        if spiffe_id:
            args += ["-spiffeID", spiffe_id]
        out = self.cli(*args).stdout
        return out.split("Token: ", 1)[1].split()[0]


def agent_config(
    directory: Path,
    server: ServerDaemon,
    *,
    unix_data: str = "",
    extra: str = "",
    node_attestor: str = 'NodeAttestor "join_token" {\n        plugin_data {}\n    }',
    sync_interval: str = "1s",
    log_level: str = "DEBUG",
    bootstrap: str | None = None,
    trust_domain: str = "example.org",
    server_address: str = "127.0.0.1",
    blocks: str = "",
) -> tuple[str, Path]:
    """An agent config for ``server`` under ``directory``: (text, Workload API socket path).

    ``blocks`` are top-level blocks (``telemetry``, ``health_checks``).
    """
    socket_path = directory / "public" / "api.sock"
    bundle = directory / "bootstrap.pem"
    directory.mkdir(parents=True, exist_ok=True)
    bundle.write_text(server.bundle_pem())
    text = f"""
agent {{
    trust_domain = "{trust_domain}"
    server_address = "{server_address}"
    server_port = "{server.port}"
    socket_path = "{socket_path}"
    {bootstrap if bootstrap is not None else f'trust_bundle_path = "{bundle}"'}
    data_dir = "{directory / "data"}"
    log_level = "{log_level}"
    experimental {{
        sync_interval = "{sync_interval}"
    }}
    {extra}
}}

plugins {{
    {node_attestor}
    KeyManager "disk" {{
        plugin_data {{
            directory = "{directory / "data"}"
        }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{
            {unix_data}
        }}
    }}
}}
{blocks}
"""
    return text, socket_path


class AgentDaemon(Daemon):
    """An agent; ``address`` is its Workload API address for clients."""

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"


def start_agent(
    directory: Path,
    server: ServerDaemon,
    join_token: str | None = None,
    *,
    wait: bool = True,
    env: Mapping[str, str] | None = None,
    executable: Path | None = None,
    **kwargs: object,
) -> AgentDaemon:
    """A pyspire-agent of ``server`` (or, given ``executable``, SPIRE's spire-agent with the same config)."""
    text, socket_path = agent_config(directory, server, **kwargs)  # type: ignore[arg-type]
    extra_args = ["-joinToken", join_token] if join_token else []
    command = executable.name if executable else "pyspire-agent"
    agent = AgentDaemon(
        command,
        directory,
        socket_path,
        text,
        extra_args,
        env=env or {},
        executable=str(executable) if executable else None,
    )
    return agent.start(wait=wait)  # type: ignore[return-value]
