"""Daemon start-up with each cloud node attestor: what the agent and the server import.

An agent attesting with aws_iid needs no AWS SDK and one attesting with k8s_psat no
Kubernetes client: those are the server halves' clients. For each configuration this starts
the real ``pyspire-agent`` / ``pyspire-server`` (``run``) several times and measures, from
process start:

- until the last ``Plugin loaded`` line is logged (interpreter, core, config, plugins);
- for the server, until its admin socket answers (the whole start);

and once more with ``PYTHONPROFILEIMPORTTIME=1`` to list which heavy client libraries the
process imported. Figures are medians. The agent has no server to attest to: it is stopped
once its plugins are loaded.

Run: python bench/startup_bench.py [--rounds 5] [--label before|after] [--write]
``--write`` records the figures in bench/RESULTS.md under the column ``--label``, keeping the
other column, so a change is shown as before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import RESULTS, update_section  # noqa: E402
from tests.support.daemons import console_script  # noqa: E402
from tests.support.free_port import free_port  # noqa: E402

TITLE = "Start-up by node attestor (bench/startup_bench.py)"
HEAVY = ("boto3", "botocore", "kubernetes", "google.auth", "requests", "hvac", "asn1crypto")
"""Client libraries of the plugins' halves; each one present in a process is listed."""
_TIME = re.compile(r'time="([^"]+)" level=info msg="Plugin loaded"')


@dataclass(frozen=True)
class Scenario:
    label: str
    role: str
    attestor: str
    plugin_data: str


AGENT_SCENARIOS = (
    Scenario("agent, join_token (core only)", "agent", "join_token", ""),
    Scenario("agent, aws_iid", "agent", "aws_iid", ""),
    Scenario("agent, k8s_psat", "agent", "k8s_psat", 'cluster = "c1"'),
    Scenario("agent, gcp_iit", "agent", "gcp_iit", ""),
)
SERVER_SCENARIOS = (
    Scenario("server, join_token (core only)", "server", "join_token", ""),
    Scenario("server, aws_iid", "server", "aws_iid", ""),
    Scenario("server, k8s_psat", "server", "k8s_psat", ""),
    Scenario("server, gcp_iit", "server", "gcp_iit", 'projectid_allow_list = ["p1"]'),
)


def agent_config(directory: Path, scenario: Scenario) -> str:
    return f"""
agent {{
    data_dir = "{directory / "data"}"
    log_level = "INFO"
    log_file = "{directory / "daemon.log"}"
    server_address = "127.0.0.1"
    server_port = "{free_port()}"
    socket_path = "{directory / "api.sock"}"
    trust_domain = "example.org"
    insecure_bootstrap = true
}}
plugins {{
    KeyManager "memory" {{ plugin_data {{}} }}
    WorkloadAttestor "unix" {{ plugin_data {{}} }}
    NodeAttestor "{scenario.attestor}" {{ plugin_data {{ {scenario.plugin_data} }} }}
}}
"""


def server_config(directory: Path, scenario: Scenario) -> str:
    extra = "" if scenario.attestor == "join_token" else 'NodeAttestor "join_token" { plugin_data {} }'
    return f"""
server {{
    bind_address = "127.0.0.1"
    bind_port = "{free_port()}"
    socket_path = "{directory / "api.sock"}"
    trust_domain = "example.org"
    data_dir = "{directory / "data"}"
    log_level = "INFO"
    log_file = "{directory / "daemon.log"}"
}}
plugins {{
    DataStore "sql" {{ plugin_data {{ database_type = "sqlite3" connection_string = "{directory / "ds.sqlite3"}" }} }}
    KeyManager "memory" {{ plugin_data {{}} }}
    {extra}
    NodeAttestor "{scenario.attestor}" {{ plugin_data {{ {scenario.plugin_data} }} }}
}}
"""


def _socket_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _loaded_at(log: str, count: int) -> float | None:
    stamps = _TIME.findall(log)
    if len(stamps) < count:
        return None
    return datetime.fromisoformat(stamps[count - 1].replace("Z", "+00:00")).timestamp()


def start_once(scenario: Scenario, profile_imports: bool) -> tuple[float, float | None, str]:
    """(seconds to plugins loaded, seconds to socket ready or None, stderr) for one start."""
    with tempfile.TemporaryDirectory(prefix="pyspire-startup-") as tmp:
        directory = Path(tmp)
        (directory / "data").mkdir()
        text = agent_config(directory, scenario) if scenario.role == "agent" else server_config(directory, scenario)
        config = directory / f"{scenario.role}.conf"
        config.write_text(text)
        plugins = 3 if scenario.role == "agent" else (3 if scenario.attestor == "join_token" else 4)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if profile_imports:
            env["PYTHONPROFILEIMPORTTIME"] = "1"
        log_path = directory / "daemon.log"
        with (directory / "output").open("wb") as output:
            started = time.time()
            process = subprocess.Popen(
                [console_script(f"pyspire-{scenario.role}"), "run", "-config", str(config)],
                cwd=directory,
                stdout=output,
                stderr=output,
                env=env,
            )
        loaded = ready = None
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                text = log_path.read_text(errors="replace") if log_path.exists() else ""
                if loaded is None:
                    loaded = _loaded_at(text, plugins)
                if scenario.role == "server" and ready is None and _socket_answers(directory / "api.sock"):
                    ready = time.time()
                if loaded is not None and (scenario.role == "agent" or ready is not None):
                    break
                if process.poll() is not None:
                    output_text = (directory / "output").read_text(errors="replace")
                    raise RuntimeError(f"{scenario.label}: exited with {process.returncode}:\n{text}{output_text}")
                time.sleep(0.005)
            else:
                raise RuntimeError(f"{scenario.label}: not started within 60 s:\n{(directory / 'output').read_text()}")
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert loaded is not None
        imports_text = (directory / "output").read_text(errors="replace") if profile_imports else ""
        return loaded - started, (ready - started) if ready is not None else None, imports_text


def heavy_imports(importtime: str) -> list[str]:
    """The HEAVY libraries a ``-X importtime`` log shows imported."""
    names = {line.rsplit("|", 1)[1].strip() for line in importtime.splitlines() if line.startswith("import time:")}
    return [library for library in HEAVY if library in names]


def measure(scenario: Scenario, rounds: int) -> str:
    loaded, ready = [], []
    for _ in range(rounds):
        seconds_loaded, seconds_ready, _ = start_once(scenario, profile_imports=False)
        loaded.append(seconds_loaded)
        if seconds_ready is not None:
            ready.append(seconds_ready)
    heavy = heavy_imports(start_once(scenario, profile_imports=True)[2])
    figures = f"{statistics.median(loaded):.2f} s"
    if ready:
        figures += f" / {statistics.median(ready):.2f} s"
    return f"{figures}; {', '.join(heavy) or 'no client library'}"


def _existing_columns() -> dict[str, dict[str, str]]:
    """The figures already in RESULTS.md's section, by column label then scenario."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    match = re.search(rf"^## {re.escape(TITLE)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    if match is None:
        return {}
    rows = [line.strip().strip("|").split("|") for line in match.group(1).splitlines() if line.startswith("|")]
    if len(rows) < 2:
        return {}
    header = [cell.strip() for cell in rows[0]]
    columns: dict[str, dict[str, str]] = {label: {} for label in header[1:]}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row]
        for label, value in zip(header[1:], cells[1:], strict=False):
            columns[label][cells[0]] = value
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--label", default="now", help="The column the figures go in (before, after...)")
    parser.add_argument("--write", action="store_true", help="Record the figures in bench/RESULTS.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    figures = {}
    for scenario in (*AGENT_SCENARIOS, *SERVER_SCENARIOS):
        figures[scenario.label] = measure(scenario, args.rounds)
        print(f"{scenario.label}: {figures[scenario.label]}", flush=True)
    if not args.write:
        return
    columns = _existing_columns()
    columns[args.label] = figures
    labels = list(columns)
    lines = [
        "Real daemons (`run`), from process start. Agent: until its three plugins are loaded (KeyManager "
        '"memory", WorkloadAttestor "unix", the NodeAttestor). Server: until its plugins are loaded / until its '
        "admin socket answers (SQLite datastore, memory key manager, join_token and the NodeAttestor). Medians of "
        f"{args.rounds} starts; then the client libraries the process imported (`PYTHONPROFILEIMPORTTIME=1`).",
        "",
        "| configuration | " + " | ".join(labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for scenario in (*AGENT_SCENARIOS, *SERVER_SCENARIOS):
        lines.append(
            f"| {scenario.label} | " + " | ".join(columns[label].get(scenario.label, "") for label in labels) + " |"
        )
    lines += [
        "",
        f"2 CPUs ({platform.machine()}), Python {platform.python_version()}; {args.label} measured "
        f"{datetime.now(UTC):%Y-%m-%d} with a load average of {load:.1f} (a shared machine: a few tenths of a "
        "second either way are noise; what the agent rows lose is the server halves' client libraries)",
    ]
    update_section(TITLE, "\n".join(lines))


if __name__ == "__main__":
    main()
