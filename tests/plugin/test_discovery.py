"""Finding plugins: duplicate names refused, development plugins, async hooks, one prefix, the logger.

Installed distributions are real ones: ``*.dist-info`` folders with ``METADATA`` and
``entry_points.txt`` on ``sys.path``, which is all ``importlib.metadata`` reads.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspire.plugin import AttestationResult, CoreConfig, InvalidArgument, PluginLogger, hookimpl
from pyspire.plugin.catalog import CatalogError, load_agent_catalog, load_server_catalog
from pyspire.plugin.discovery import DEV_PLUGINS_ENV, installed_sources
from pyspire.plugin.testing import PluginDeclaration, load_plugin, make_core_config
from pyspire.telemetry.logs import configure_logging

from tests.support.daemons import console_script
from tests.support.plugins_in_tests import install_plugins

ATTESTOR_MODULE = '''
from pyspire.plugin import hookimpl


class Attestor:
    """Answers one selector naming the module it lives in."""

    @hookimpl
    def configure(self, plugin_data, core):
        pass

    @hookimpl
    def attest_workload(self, pid):
        return ["origin:{origin}"]
'''


def install(
    site: Path, distribution: str, version: str, plugin: str, module: str, *, write_module: bool = True
) -> None:
    """A minimal installed distribution under ``site`` (a sys.path entry) with one agent plugin."""
    source = ATTESTOR_MODULE.format(origin=module) if write_module else None
    install_plugins(site, module, source, {"agent": {plugin: "Attestor"}}, distribution=distribution, version=version)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    yield path
    for name in [name for name in sys.modules if name.startswith(("acme_", "pyspire_dev_"))]:
        del sys.modules[name]


@pytest.fixture
def core(tmp_path: Path) -> CoreConfig:
    return make_core_config(tmp_path)


def agent_plugins(*extra: PluginDeclaration) -> list[PluginDeclaration]:
    return [PluginDeclaration("KeyManager", "memory"), PluginDeclaration("NodeAttestor", "join_token"), *extra]


def test_two_distributions_registering_one_name_are_refused_naming_both(site: Path, core: CoreConfig) -> None:
    install(site, "acme-one", "1.0", "acme", "acme_one")
    install(site, "acme-two", "2.3", "acme", "acme_two")
    declaration = PluginDeclaration("WorkloadAttestor", "acme", where='agent.conf: plugins: WorkloadAttestor "acme"')
    with pytest.raises(CatalogError) as raised:
        load_agent_catalog(agent_plugins(declaration), core)
    message = str(raised.value)
    assert message.startswith('agent.conf: plugins: WorkloadAttestor "acme": two plugins register the name "acme"')
    assert "acme-one 1.0 (acme_one:Attestor)" in message
    assert "acme-two 2.3 (acme_two:Attestor)" in message
    assert "pip uninstall" in message


def test_a_distribution_found_twice_on_the_path_is_one_plugin(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, core: CoreConfig
) -> None:
    install(site, "acme-one", "1.0", "acme", "acme_one")
    again = tmp_path / "again"
    install(again, "acme-one", "1.0", "acme", "acme_one", write_module=False)
    monkeypatch.syspath_prepend(str(again))
    handle = load_plugin("agent", "WorkloadAttestor", "acme", {}, core)
    assert [str(s) for s in handle.attest(1)] == ["acme:origin:acme_one"]


def test_a_name_used_for_another_type_does_not_clash_with_a_qualified_one(site: Path, core: CoreConfig) -> None:
    """``KeyManager.disk`` (the core's) and a third party's plain ``disk`` answer different declarations."""
    install(site, "acme-disk", "1.0", "WorkloadAttestor.disk", "acme_disk")
    handle = load_plugin("agent", "WorkloadAttestor", "disk", {}, core)
    assert [str(s) for s in handle.attest(1)] == ["disk:origin:acme_disk"]
    assert load_plugin("agent", "KeyManager", "disk", {"directory": str(core.data_dir)}, core).name == "disk"


def test_development_plugin_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: Path, core: CoreConfig, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "work" / "acme_attestor.py"
    source.parent.mkdir()
    source.write_text(ATTESTOR_MODULE.format(origin="file"))
    monkeypatch.setenv(DEV_PLUGINS_ENV, f"agent:acme={source}:Attestor")
    with caplog.at_level(logging.WARNING, logger="pyspire.plugin.catalog"):
        catalog = load_agent_catalog(agent_plugins(PluginDeclaration("WorkloadAttestor", "acme")), core)
    assert [str(s) for s in catalog.workload_attestors[0].attest(1)] == ["acme:origin:file"]
    assert "Loading a development plugin" in caplog.text
    (listed,) = [s for s in installed_sources("agent") if s.name == "acme"]
    assert listed.development
    assert listed.describe() == f"{DEV_PLUGINS_ENV} ({source}:Attestor)"


def test_development_plugin_from_a_module_on_the_path(
    monkeypatch: pytest.MonkeyPatch, site: Path, core: CoreConfig
) -> None:
    (site / "acme_module.py").write_text(ATTESTOR_MODULE.format(origin="module"))
    monkeypatch.setenv(DEV_PLUGINS_ENV, "server:ignored=acme_module:Attestor, agent:acme=acme_module:Attestor")
    handle = load_plugin("agent", "WorkloadAttestor", "acme", {}, core)
    assert [str(s) for s in handle.attest(1)] == ["acme:origin:module"]
    assert "ignored" not in {s.name for s in installed_sources("agent")}


def test_development_plugin_cannot_shadow_an_installed_one(
    monkeypatch: pytest.MonkeyPatch, site: Path, core: CoreConfig
) -> None:
    (site / "acme_module.py").write_text(ATTESTOR_MODULE.format(origin="module"))
    monkeypatch.setenv(DEV_PLUGINS_ENV, "agent:memory=acme_module:Attestor")
    with pytest.raises(CatalogError, match=r'two plugins register the name "memory"') as raised:
        load_plugin("agent", "KeyManager", "memory", {}, core)
    assert "pyspire 0.1.0 (pyspire.plugin.builtin.key_managers:AgentMemoryKeyManager)" in str(raised.value)
    assert f"{DEV_PLUGINS_ENV} (acme_module:Attestor)" in str(raised.value)


@pytest.mark.parametrize(
    "value",
    ["acme=./x.py:Attestor", "robot:acme=./x.py:Attestor", "agent:acme", "agent:=x:Y", "agent:acme=module_only"],
)
def test_malformed_development_entry_is_explained(
    monkeypatch: pytest.MonkeyPatch, core: CoreConfig, value: str
) -> None:
    monkeypatch.setenv(DEV_PLUGINS_ENV, value)
    with pytest.raises(CatalogError, match=rf'{DEV_PLUGINS_ENV}: ".*" is not of the form <role>:<name>='):
        load_plugin("agent", "KeyManager", "memory", {}, core)


def test_missing_development_file_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, core: CoreConfig) -> None:
    monkeypatch.setenv(DEV_PLUGINS_ENV, f"agent:acme={tmp_path}/nowhere.py:Attestor")
    with pytest.raises(
        CatalogError, match=r"cannot import .*nowhere\.py:Attestor \(PYSPIRE_DEV_PLUGINS\).*no such file"
    ):
        load_plugin("agent", "WorkloadAttestor", "acme", {}, core)


def test_validate_command_loads_a_development_plugin(tmp_path: Path) -> None:
    """The documented development path, through the real CLI: ``validate`` finds the plugin."""
    (tmp_path / "acme_attestor.py").write_text(ATTESTOR_MODULE.format(origin="cli"))
    config = tmp_path / "agent.conf"
    config.write_text(
        # insecure_bootstrap: validate applies the agent's bootstrap rules before it looks at plugins.
        'agent {\n trust_domain = "example.org"\n server_address = "127.0.0.1"\n insecure_bootstrap = true\n}\n'
        'plugins {\n NodeAttestor "join_token" {}\n KeyManager "memory" {}\n WorkloadAttestor "acme" {}\n}\n'
    )
    command = [console_script("pyspire-agent"), "validate", "-config", str(config)]
    refused = subprocess.run(command, capture_output=True, text=True, check=False)
    assert refused.returncode == 1
    assert 'no WorkloadAttestor plugin named "acme" is installed' in refused.stderr
    accepted = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", DEV_PLUGINS_ENV: "agent:acme=./acme_attestor.py:Attestor"},
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "configuration file is valid" in accepted.stdout


class AsyncAttestor:
    @hookimpl
    def configure(self, plugin_data: object, core: object) -> None:
        pass

    @hookimpl
    async def attest_workload(self, pid: int) -> list[str]:
        return [f"pid:{pid}"]


def test_async_hook_is_refused_at_load_with_the_reason(core: CoreConfig) -> None:
    declaration = PluginDeclaration("WorkloadAttestor", "eager", where='agent.conf: plugins: WorkloadAttestor "eager"')
    with pytest.raises(CatalogError) as raised:
        load_agent_catalog(agent_plugins(declaration), core, extra_plugins={"eager": AsyncAttestor})
    message = str(raised.value)
    assert message.startswith('agent.conf: plugins: WorkloadAttestor "eager": ')
    assert "AsyncAttestor.attest_workload is an async hook" in message
    assert "coroutine would never run" in message


class SelfPrefixingAttestor:
    """Writes its messages the way plugins used to: starting with its own name."""

    @hookimpl
    def configure(self, plugin_data: object, core: object) -> None:
        pass

    @hookimpl
    def attest_node(self, payload: bytes, challenge: object) -> AttestationResult:
        if payload == b"old":
            raise InvalidArgument("legacy: the payload is old-style")
        raise InvalidArgument("the payload is not legacy evidence")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"old", "nodeattestor(legacy): the payload is old-style"),
        (b"new", "nodeattestor(legacy): the payload is not legacy evidence"),
    ],
)
def test_the_core_adds_the_plugin_prefix_once(core: CoreConfig, tmp_path: Path, payload: bytes, message: str) -> None:
    catalog = load_server_catalog(
        [
            PluginDeclaration(
                "DataStore", "sql", {"database_type": "sqlite3", "connection_string": str(tmp_path / "d")}
            ),
            PluginDeclaration("KeyManager", "memory"),
            PluginDeclaration("NodeAttestor", "legacy"),
        ],
        core,
        extra_plugins={"legacy": SelfPrefixingAttestor},
    )
    with pytest.raises(InvalidArgument) as raised:
        catalog.node_attestors["legacy"].attest(payload, lambda challenge: b"")
    assert str(raised.value) == message
    catalog.close()


class ChattyAttestor:
    @hookimpl
    def configure(self, plugin_data: object, core: object, logger: PluginLogger) -> None:
        self.logger = logger
        logger.info("Configured", extra={"mode": "chatty"})

    @hookimpl
    def attest_workload(self, pid: int) -> list[str]:
        self.logger.debug("Looking at a process", extra={"pid": pid})
        logging.getLogger("chatty_package").info("This line goes through the package's own logger")
        return ["chatty:yes"]


@pytest.fixture
def daemon_log() -> Iterator[io.StringIO]:
    """The daemons' own log set-up, writing to a buffer; the test process's logging restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("pyspire").level)
    stream = io.StringIO()
    configure_logging("DEBUG", "text", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("pyspire").setLevel(saved[2])


def test_plugins_are_handed_a_logger_whose_info_and_debug_lines_reach_the_log(
    core: CoreConfig, daemon_log: io.StringIO
) -> None:
    handle = load_plugin("agent", "WorkloadAttestor", "chatty", {}, core, plugin_class=ChattyAttestor)
    handle.attest(42)
    lines = daemon_log.getvalue().splitlines()
    # logrus quotes a value only when it needs quoting.
    configured = next(line for line in lines if "msg=Configured" in line)
    assert "level=info" in configured
    assert "mode=chatty" in configured
    assert "plugin_type=WorkloadAttestor" in configured
    assert "plugin_name=chatty" in configured
    assert "subsystem_name=plugins.workloadattestor.chatty" in configured
    looking = next(line for line in lines if 'msg="Looking at a process"' in line)
    assert "level=debug" in looking
    assert "pid=42" in looking
    # A library-style logger outside pyspire's tree stays at WARNING, as documented.
    assert "package's own logger" not in daemon_log.getvalue()
