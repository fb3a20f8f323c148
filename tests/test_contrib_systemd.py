"""contrib/systemd: the units verify, are hardened, create their user, and their configs start the daemons.

``systemd-analyze`` and ``systemd-sysusers`` (Debian's systemd package) check the files without
systemd running as PID 1: ``verify`` against a root holding the host's units and stand-ins for
the binaries the units start, ``security --offline`` for the exposure score, ``sysusers`` into a
scratch root. The configs made for the units then run real daemons, with the directories the
units have systemd create (StateDirectory, RuntimeDirectory) made the same way under a scratch
prefix, as on a fresh host.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemons import AgentDaemon, ServerDaemon
from tests.support.free_port import free_port
from tests.support.workloads import fetched_spiffe_id, register_this_process

SYSTEMD = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
UNITS = ("pyspire-server.service", "pyspire-agent.service", "pyspire-oidc-discovery.service")
HOST_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
# The exposure `systemd-analyze security` gives each unit must not get worse than this.
MAX_EXPOSURE = {"pyspire-server.service": 2.0, "pyspire-agent.service": 3.0, "pyspire-oidc-discovery.service": 2.0}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: .ci/services installs Debian's systemd package")
    return path


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def _root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A root with the host's units, ``units`` installed, and executables for every ExecStart/ExecReload."""
    assert HOST_UNITS is not None, "no systemd unit directory on this host"
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
        for command in re.findall(r"^Exec\w+=(\S+)", text, re.M):
            stand_in = root / command.lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("#!/bin/sh\n")
            stand_in.chmod(0o755)
    return root


def _verify(root: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("systemd-analyze"), "verify", f"--root={root}", *names],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_units_verify_without_a_warning(tmp_path: Path) -> None:
    root = _root(tmp_path, {name: (SYSTEMD / name).read_text() for name in UNITS})
    result = _verify(root, *UNITS)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad value are reported."""
    broken = (SYSTEMD / UNITS[0]).read_text().replace("ProtectSystem=strict", "ProtectSistem=strict")
    broken = broken.replace("Type=simple", "Type=simpel")
    result = _verify(_root(tmp_path, {UNITS[0]: broken}), UNITS[0])
    assert "ProtectSistem" in result.stderr
    assert "simpel" in result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_the_units_exposure_score_is_low(name: str) -> None:
    result = subprocess.run(
        [_tool("systemd-analyze"), "security", "--offline=true", str(SYSTEMD / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert score is not None, result.stdout + result.stderr
    print(f"{name}: systemd-analyze security exposure {score.group(1)}")
    assert float(score.group(1)) <= MAX_EXPOSURE[name]


def test_sysusers_creates_the_server_user_and_group(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        [_tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSTEMD / "pyspire.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    assert re.search(r"^pyspire:x:\d+:\d+:pyspire server:/var/lib/pyspire:\S*nologin$", passwd, re.M)
    assert re.search(r"^pyspire:x:\d+:", (tmp_path / "etc/group").read_text(), re.M)
    assert _unit(UNITS[0])["Service"]["User"] == "pyspire"


def _unit_directories(name: str) -> dict[str, tuple[Path, int]]:
    """/var/lib/..., /run/..., /etc/... directories the unit has systemd create, with their modes."""
    service = _unit(name)["Service"]
    found = {}
    for kind, base in (
        ("StateDirectory", "/var/lib"),
        ("RuntimeDirectory", "/run"),
        ("ConfigurationDirectory", "/etc"),
    ):
        found[kind] = (Path(base) / service[kind], int(service.get(f"{kind}Mode", "0755"), 8))
    return found


@pytest.mark.parametrize(("unit", "conf"), [(UNITS[0], "server.conf"), (UNITS[1], "agent.conf")])
def test_every_path_in_a_units_config_is_one_the_unit_provides(unit: str, conf: str) -> None:
    directories = [path for path, _ in _unit_directories(unit).values()]
    paths = re.findall(r'"(/[^"]+)"', (SYSTEMD / conf).read_text())
    assert paths
    for path in map(Path, paths):
        assert any(path.is_relative_to(directory) for directory in directories), f"{path} is outside {directories}"
    assert f"-config /etc/pyspire/{conf}" in _unit(unit)["Service"]["ExecStart"]


def _fresh_host(prefix: Path, unit: str, conf: str, replacements: dict[str, int | str]) -> str:
    """The unit's config with its directories made under ``prefix`` as systemd would make them."""
    text = (SYSTEMD / conf).read_text()
    for path, mode in _unit_directories(unit).values():
        target = prefix / path.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(mode)
    for base in ("/var/lib/pyspire", "/run/spire-server", "/run/spire-agent", "/etc/pyspire"):
        text = text.replace(f'"{base}', f'"{prefix}{base}')
    for old, new in replacements.items():
        text = text.replace(old, str(new))
    return text


@pytest.fixture
def host() -> Iterator[Path]:
    """A short scratch prefix: the units' socket paths below it must stay within AF_UNIX's 108 bytes."""
    prefix = Path(tempfile.mkdtemp(prefix="host-", dir="/tmp"))
    yield prefix
    shutil.rmtree(prefix, ignore_errors=True)


@pytest.mark.slow
def test_the_units_configs_run_a_server_and_agent_on_a_fresh_host(tmp_path: Path, host: Path) -> None:
    prefix = host
    server_port = free_port()
    server_text = _fresh_host(
        prefix,
        UNITS[0],
        "server.conf",
        {'"8081"': server_port, '"8082"': free_port(), "9988": free_port(), '"0.0.0.0"': '"127.0.0.1"'},
    )
    server = ServerDaemon(
        "pyspire-server", tmp_path / "server", prefix / "run/spire-server/private/api.sock", server_text
    )
    server.port = server_port
    server.start()
    try:
        (prefix / "etc/pyspire/bootstrap.pem").write_text(server.bundle_pem())
        agent_text = _fresh_host(
            prefix,
            UNITS[1],
            "agent.conf",
            {
                "spire-server.example.org": "127.0.0.1",
                '"8081"': server_port,
                '"8083"': free_port(),
                "9989": free_port(),
            },
        )
        alias = "spiffe://example.org/node/systemd"
        agent = AgentDaemon(
            "pyspire-agent",
            tmp_path / "agent",
            prefix / "run/spire-agent/public/api.sock",
            agent_text,
            ["-joinToken", server.join_token(alias)],
        )
        agent.start()
        try:
            register_this_process(server, alias, "spiffe://example.org/systemd/workload")
            assert fetched_spiffe_id(agent) == "spiffe://example.org/systemd/workload"
            assert (prefix / "var/lib/pyspire/agent").stat().st_mode & 0o777 == 0o700
        finally:
            assert agent.stop() == 0
        assert not (prefix / "run/spire-agent/public/api.sock").exists()
    finally:
        assert server.stop() == 0
    assert (prefix / "var/lib/pyspire/server/datastore.sqlite3").exists()
    assert not (prefix / "run/spire-server/private/api.sock").exists()
