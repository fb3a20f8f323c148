"""``pyspire-server plugins`` and ``pyspire-agent plugins``, run as the installed commands."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pyspire.plugin.discovery import DEV_PLUGINS_ENV

from tests.plugin.test_discovery import ATTESTOR_MODULE, install
from tests.support.daemons import console_script

AGENT_CONF = """
agent {{
    trust_domain = "example.org"
    server_address = "127.0.0.1"
}}
plugins {{
    NodeAttestor "join_token" {{}}
    KeyManager "memory" {{}}
    WorkloadAttestor "unix" {{}}
    {extra}
}}
"""


def plugins(role: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(f"pyspire-{role}"), "plugins", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def agent_conf(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "agent.conf"
    path.write_text(AGENT_CONF.format(extra=extra))
    return str(path)


def test_server_plugins_are_listed_by_type_with_distribution_and_version() -> None:
    listed = plugins("server")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "Installed server plugins:"
    headings = [line for line in lines if line and not line.startswith(" ")][1:]
    assert headings == ["DataStore", "KeyManager", "NodeAttestor", "UpstreamAuthority", "Notifier", "BundlePublisher"]
    rows = {line.split()[0]: line for line in lines if line.startswith("    ")}
    assert rows["sql"].split()[1:3] == ["pyspire", "0.1.0"]
    assert rows["aws_iid"].split()[1:3] == ["pyspire-aws-iid", "0.1.0"]
    assert "pyspire_aws_iid.server:ServerAwsIid" in rows["aws_iid"]
    assert "[entry point UpstreamAuthority.disk]" in listed.stdout
    assert rows["aws_s3"].split()[1:3] == ["pyspire-aws-s3", "0.1.0"]
    assert rows["k8sbundle"].split()[1:3] == ["pyspire-k8sbundle", "0.1.0"]
    assert rows["k8s_configmap"].split()[1:3] == ["pyspire-k8s-configmap", "0.1.0"]
    assert rows["cert-manager"].split()[1:3] == ["pyspire-cert-manager", "0.1.0"]


def test_what_a_config_selects_is_marked(tmp_path: Path) -> None:
    listed = plugins("agent", "-config", agent_conf(tmp_path))
    assert listed.returncode == 0, listed.stderr
    selected = sorted(line.split()[1] for line in listed.stdout.splitlines() if line.startswith("  * "))
    assert selected == ["join_token", "memory", "unix"]
    assert "(* = selected by" in listed.stdout
    as_json = json.loads(plugins("agent", "-config", agent_conf(tmp_path), "-output", "json").stdout)
    unix = next(row for row in as_json if row["name"] == "unix")
    assert unix == {
        "type": "WorkloadAttestor",
        "name": "unix",
        "entry_point": "unix",
        "distribution": "pyspire-unix-workload",
        "version": "0.1.0",
        "target": "pyspire_unix_workload:UnixWorkloadAttestor",
        "selected": True,
        "problem": "",
    }
    assert not next(row for row in as_json if row["name"] == "k8s")["selected"]


def test_a_selected_plugin_that_is_not_installed_fails_the_command(tmp_path: Path) -> None:
    # A name no distribution provides (docker, the example this test used, is installed now).
    listed = plugins("agent", "-config", agent_conf(tmp_path, 'WorkloadAttestor "not_a_plugin" {}'))
    assert listed.returncode == 1
    (missing,) = [line.split() for line in listed.stdout.splitlines() if " not_a_plugin " in line]
    assert missing == ["*", "not_a_plugin", "(not", "installed)"]
    expected = 'Error: WorkloadAttestor "not_a_plugin": no WorkloadAttestor plugin named "not_a_plugin" is installed'
    assert expected in listed.stderr
    assert "Traceback" not in listed.stderr


def test_a_bad_config_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "agent.conf").write_text("agent {")
    listed = plugins("agent", "-config", str(tmp_path / "agent.conf"))
    assert listed.returncode == 1
    assert listed.stderr.startswith("Error: ")
    assert "Traceback" not in listed.stderr


def test_development_broken_and_duplicate_plugins_are_shown_for_what_they_are(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (tmp_path / "dev_attestor.py").write_text(ATTESTOR_MODULE.format(origin="dev"))
    install(site, "acme-broken", "0.3", "broken", "acme_missing_module", write_module=False)
    install(site, "acme-one", "1.0", "twin", "acme_one")
    install(site, "acme-two", "2.0", "twin", "acme_two")
    env = {"PYTHONPATH": str(site), DEV_PLUGINS_ENV: f"agent:devel={tmp_path / 'dev_attestor.py'}:Attestor"}
    rows = json.loads(plugins("agent", "-output", "json", env=env).stdout)
    by_name: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_name.setdefault(str(row["name"]), []).append(row)
    (devel,) = by_name["devel"]
    assert devel["type"] == "WorkloadAttestor"
    assert devel["distribution"] == DEV_PLUGINS_ENV
    (broken,) = by_name["broken"]
    assert broken["type"] == ""
    assert "ModuleNotFoundError" in str(broken["problem"])
    assert sorted(str(row["distribution"]) for row in by_name["twin"]) == ["acme-one", "acme-two"]
    pretty = plugins("agent", env=env).stdout
    assert "Unusable (no plugin type)" in pretty
    assert f"Development plugins come from {DEV_PLUGINS_ENV}." in pretty

    selecting = agent_conf(tmp_path, 'WorkloadAttestor "twin" {}')
    refused = plugins("agent", "-config", selecting, env=env)
    assert refused.returncode == 1
    assert 'two plugins register the name "twin"' in refused.stderr


@pytest.mark.parametrize("role", ["server", "agent"])
def test_the_command_is_in_the_help(role: str) -> None:
    helped = subprocess.run([console_script(f"pyspire-{role}"), "--help"], capture_output=True, text=True, check=True)
    assert "plugins" in helped.stdout
