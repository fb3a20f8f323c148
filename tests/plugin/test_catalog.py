"""The catalog loads exactly what config declares, checks it, and explains every refusal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pyspire.config import load_agent_config_text, load_server_config_text
from pyspire.plugin import (
    AttestationResult,
    CoreConfig,
    Internal,
    InvalidArgument,
    PluginConfigError,
    facades,
    hookimpl,
    parse_plugin_data,
)
from pyspire.plugin.builtin.sql.store import SqlDataStore
from pyspire.plugin.catalog import CatalogError, load_agent_catalog, load_server_catalog, load_single_plugin
from pyspire.plugin.records import AttestedNode, NodeReadAtOnce
from pyspire.plugin.testing import PluginDeclaration, make_core_config
from pyspire.spiffe import SpiffeId


class GoodWorkloadAttestor:
    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        self.configured_with = dict(plugin_data)

    @hookimpl
    def attest_workload(self, pid: int) -> Sequence[str]:
        return [f"pid:{pid}"]


class BrokenWorkloadAttestor:
    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        pass

    @hookimpl
    def attest_workload(self, pid: int) -> Sequence[str]:
        raise RuntimeError("kaboom")


class EmptyStringWorkloadAttestor(BrokenWorkloadAttestor):
    @hookimpl
    def attest_workload(self, pid: int) -> Sequence[str]:
        return ["uid:1", ""]


@dataclass(frozen=True)
class StrictConfig:
    ca_bundle_path: Path


class StrictConfigNodeAttestor:
    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        self.config = parse_plugin_data(StrictConfig, plugin_data)

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Any) -> AttestationResult:
        if not payload:
            raise InvalidArgument("payload is empty")
        return AttestationResult(agent_path="/strict/node", selector_values=("model:x",))


class NotAnAttestor:
    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        pass

    @hookimpl
    def sign_data(self, key_id: str, data: bytes) -> bytes:
        return b""


AGENT_PLUGINS = """
plugins {
    NodeAttestor "join_token" { plugin_data {} }
    KeyManager "memory" { plugin_data {} }
    WorkloadAttestor "good" { plugin_data { answer = "yes" } }
}
"""


def agent_config(plugins: str = AGENT_PLUGINS) -> str:
    return f'agent {{\n trust_domain = "example.org"\n server_address = "127.0.0.1"\n}}\n{plugins}'


@pytest.fixture
def core(tmp_path: Path) -> CoreConfig:
    return make_core_config(tmp_path)


@pytest.fixture
def datastore(tmp_path: Path) -> PluginDeclaration:
    """Every server needs exactly one DataStore: an SQLite file for these tests."""
    return PluginDeclaration(
        "DataStore", "sql", {"database_type": "sqlite3", "connection_string": str(tmp_path / "ds.db")}
    )


def test_agent_catalog_loads_declared_plugins_only(core: CoreConfig) -> None:
    config = load_agent_config_text(agent_config())
    catalog = load_agent_catalog(
        config.plugins,
        core,
        extra_plugins={"good": GoodWorkloadAttestor, "join_token": GoodNodeAgent},
    )
    (attestor,) = catalog.workload_attestors
    assert attestor.name == "good"
    assert attestor.instance.configured_with == {"answer": "yes"}
    assert [str(s) for s in attestor.attest(42)] == ["good:pid:42"]
    assert catalog.key_manager.name == "memory"
    catalog.close()


class GoodNodeAgent:
    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        pass

    @hookimpl
    def attestation_payload(self) -> bytes:
        return b"evidence"


def test_unknown_plugin_name_lists_installed_plugins(core: CoreConfig) -> None:
    config = load_agent_config_text(agent_config(AGENT_PLUGINS.replace('"good"', '"goood"')))
    with pytest.raises(CatalogError) as raised:
        load_agent_catalog(config.plugins, core, extra_plugins={"join_token": GoodNodeAgent})
    message = str(raised.value)
    assert 'agent.conf: plugins: WorkloadAttestor "goood"' in message
    assert 'no WorkloadAttestor plugin named "goood" is installed' in message
    # the installed agent plugins are listed
    assert "memory" in message
    assert "disk" in message


@pytest.mark.parametrize(
    ("plugins", "expected"),
    [
        (
            'KeyManager "memory" {}\nWorkloadAttestor "good" {}',
            "needs exactly 1 NodeAttestor plugin; declared: none",
        ),
        (
            'NodeAttestor "join_token" {}\nWorkloadAttestor "good" {}',
            "needs exactly 1 KeyManager plugin",
        ),
        (
            'NodeAttestor "join_token" {}\nKeyManager "memory" {}',
            "needs at least 1 WorkloadAttestor plugins",
        ),
        (
            'NodeAttestor "join_token" {}\nKeyManager "memory" {}\nKeyManager "disk" {}\nWorkloadAttestor "good" {}',
            'needs exactly 1 KeyManager plugin; declared: "memory", "disk"',
        ),
    ],
)
def test_agent_cardinalities_are_enforced(core: CoreConfig, plugins: str, expected: str) -> None:
    config = load_agent_config_text(agent_config(f"plugins {{\n{plugins}\n}}"))
    with pytest.raises(CatalogError, match=expected):
        load_agent_catalog(
            config.plugins,
            core,
            extra_plugins={"good": GoodWorkloadAttestor, "join_token": GoodNodeAgent},
        )


def test_disabled_plugins_are_not_loaded(core: CoreConfig) -> None:
    plugins = AGENT_PLUGINS.replace(
        'WorkloadAttestor "good" { plugin_data { answer = "yes" } }',
        'WorkloadAttestor "good" { plugin_data {} }\n    WorkloadAttestor "broken" { enabled = false }',
    )
    config = load_agent_config_text(agent_config(plugins))
    catalog = load_agent_catalog(
        config.plugins,
        core,
        extra_plugins={"good": GoodWorkloadAttestor, "join_token": GoodNodeAgent},
    )
    assert [a.name for a in catalog.workload_attestors] == ["good"]


def test_class_implementing_another_types_hooks_is_refused(core: CoreConfig, datastore: PluginDeclaration) -> None:
    declaration = PluginDeclaration("NodeAttestor", "fake", where='server.conf: plugins: NodeAttestor "fake"')
    with pytest.raises(CatalogError, match=r"is not a valid NodeAttestor plugin.*sign_data"):
        load_server_catalog(
            [datastore, declaration, PluginDeclaration("KeyManager", "memory")],
            core,
            extra_plugins={"fake": NotAnAttestor},
        )


def test_missing_required_hook_is_named(core: CoreConfig) -> None:
    class ConfigureOnly:
        @hookimpl
        def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
            pass

    declaration = PluginDeclaration("WorkloadAttestor", "lazy")
    with pytest.raises(CatalogError, match="does not implement attest_workload"):
        load_agent_catalog(
            [
                declaration,
                PluginDeclaration("KeyManager", "memory"),
                PluginDeclaration("NodeAttestor", "join_token"),
            ],
            core,
            extra_plugins={"lazy": ConfigureOnly, "join_token": GoodNodeAgent},
        )


def test_plugin_data_errors_name_file_plugin_and_key(core: CoreConfig, tmp_path: Path) -> None:
    config = load_server_config_text(
        'server {\n trust_domain = "example.org"\n data_dir = "."\n}\n'
        'plugins {\n KeyManager "memory" {}\n'
        f' DataStore "sql" {{ plugin_data {{ database_type = "sqlite3" connection_string = "{tmp_path}/x.db" }} }}\n'
        ' NodeAttestor "strict" { plugin_data { ca_bundle = "x" } }\n}\n'
    )
    with pytest.raises(CatalogError) as raised:
        load_server_catalog(config.plugins, core, extra_plugins={"strict": StrictConfigNodeAttestor})
    message = str(raised.value)
    assert message.startswith('server.conf: plugins: NodeAttestor "strict": plugin_data: key "ca_bundle": unknown key')
    assert "ca_bundle_path" in message  # the known keys are listed


@dataclass(frozen=True)
class _Cluster:
    namespace: str = ""


@dataclass(frozen=True)
class _Clusters:
    clusters: dict[str, _Cluster] = field(default_factory=dict)
    remote: list[_Cluster] = field(default_factory=list)


@pytest.mark.parametrize(
    ("plugin_data", "key"),
    [
        ({"clusters": {"east": {"namespace": 1}}}, "clusters.east.namespace"),
        ({"clusters": {"east": {"name_space": "x"}}}, "clusters.east.name_space"),
        ({"remote": [{}, {"namespace": ["x"]}]}, "remote[1].namespace"),
        ({"remote": "x"}, "remote"),
    ],
)
def test_a_plugin_data_error_inside_a_block_names_the_blocks(plugin_data: dict[str, Any], key: str) -> None:
    """A mistake in one of several clusters names that cluster, not just the key all of them have."""
    with pytest.raises(PluginConfigError) as raised:
        parse_plugin_data(_Clusters, plugin_data)
    assert str(raised.value).startswith(f'key "{key}": ')


def test_missing_required_plugin_data_key(core: CoreConfig, datastore: PluginDeclaration) -> None:
    with pytest.raises(CatalogError, match='key "ca_bundle_path": is required'):
        load_server_catalog(
            [
                datastore,
                PluginDeclaration("KeyManager", "memory"),
                PluginDeclaration("NodeAttestor", "strict"),
            ],
            core,
            extra_plugins={"strict": StrictConfigNodeAttestor},
        )


def test_plugin_errors_carry_the_plugin_prefix_and_code(core: CoreConfig, datastore: PluginDeclaration) -> None:
    catalog = load_server_catalog(
        [
            datastore,
            PluginDeclaration("KeyManager", "memory"),
            PluginDeclaration("NodeAttestor", "strict", {"ca_bundle_path": "/x"}),
        ],
        core,
        extra_plugins={"strict": StrictConfigNodeAttestor},
    )
    attestor = catalog.node_attestors["strict"]
    with pytest.raises(InvalidArgument, match=r"^nodeattestor\(strict\): payload is empty$"):
        attestor.attest(b"", lambda challenge: b"")
    result = attestor.attest(b"ok", lambda challenge: b"")
    assert [str(s) for s in attestor.selectors(result)] == ["strict:model:x"]


def test_unexpected_plugin_exception_fails_closed(core: CoreConfig, caplog: pytest.LogCaptureFixture) -> None:
    catalog = load_agent_catalog(
        [
            PluginDeclaration("KeyManager", "memory"),
            PluginDeclaration("NodeAttestor", "join_token"),
            PluginDeclaration("WorkloadAttestor", "broken"),
        ],
        core,
        extra_plugins={"broken": BrokenWorkloadAttestor, "join_token": GoodNodeAgent},
    )
    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(Internal, match=r"workloadattestor\(broken\): attest_workload failed: kaboom"),
    ):
        catalog.workload_attestors[0].attest(1)
    assert "raised unexpectedly" in caplog.text


def test_malformed_plugin_result_is_refused(core: CoreConfig) -> None:
    catalog = load_agent_catalog(
        [
            PluginDeclaration("KeyManager", "memory"),
            PluginDeclaration("NodeAttestor", "join_token"),
            PluginDeclaration("WorkloadAttestor", "sloppy"),
        ],
        core,
        extra_plugins={"sloppy": EmptyStringWorkloadAttestor, "join_token": GoodNodeAgent},
    )
    with pytest.raises(Internal, match="non-empty strings"):
        catalog.workload_attestors[0].attest(1)


class YieldingWorkloadAttestor(GoodWorkloadAttestor):
    @hookimpl
    def attest_workload(self, pid: int) -> Iterator[str]:
        yield f"pid:{pid}"
        yield "uid:0"


def test_a_hook_that_yields_its_selectors_loses_none(core: CoreConfig) -> None:
    catalog = load_agent_catalog(
        [
            PluginDeclaration("KeyManager", "memory"),
            PluginDeclaration("NodeAttestor", "join_token"),
            PluginDeclaration("WorkloadAttestor", "yielding"),
        ],
        core,
        extra_plugins={"yielding": YieldingWorkloadAttestor, "join_token": GoodNodeAgent},
    )
    assert [str(s) for s in catalog.workload_attestors[0].attest(3)] == ["yielding:pid:3", "yielding:uid:0"]


def test_configure_raising_plugin_config_error_directly(core: CoreConfig) -> None:
    class Picky(GoodWorkloadAttestor):
        @hookimpl
        def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
            raise PluginConfigError("mode", 'must be "fast" or "slow"')

    with pytest.raises(CatalogError, match='plugin_data: key "mode": must be "fast" or "slow"'):
        load_agent_catalog(
            [
                PluginDeclaration("KeyManager", "memory"),
                PluginDeclaration("NodeAttestor", "join_token"),
                PluginDeclaration("WorkloadAttestor", "picky"),
            ],
            core,
            extra_plugins={"picky": Picky, "join_token": GoodNodeAgent},
        )


def test_tracing_logs_hook_calls(
    core: CoreConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PYSPIRE_TRACE_PLUGINS", "1")
    catalog = load_agent_catalog(
        [
            PluginDeclaration("KeyManager", "memory"),
            PluginDeclaration("NodeAttestor", "join_token"),
            PluginDeclaration("WorkloadAttestor", "good"),
        ],
        core,
        extra_plugins={"good": GoodWorkloadAttestor, "join_token": GoodNodeAgent},
    )
    with caplog.at_level(logging.DEBUG, logger="pyspire.plugin.catalog"):
        catalog.workload_attestors[0].attest(7)
    assert "attest_workload" in caplog.text


class SanAddingComposer:
    """Tries to slip a second SPIFFE ID into workload SVIDs."""

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        pass

    @hookimpl
    def compose_workload_x509_svid(self, spiffe_id: Any, subject: x509.Name, extensions: tuple[Any, ...]) -> Any:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/admin")])
        return subject, (*extensions, x509.Extension(san.oid, False, san))


def test_a_composer_may_not_set_the_servers_extensions(core: CoreConfig) -> None:
    handle = load_single_plugin(
        "server", PluginDeclaration("CredentialComposer", "sneaky"), core, extra_plugins={"sneaky": SanAddingComposer}
    )
    assert isinstance(handle, facades.CredentialComposer)
    spiffe_id = SpiffeId.parse("spiffe://example.org/workload")
    with pytest.raises(
        Internal, match=r"^credentialcomposer\(sneaky\): compose_workload_x509_svid may not set subjectAltName$"
    ):
        handle.compose_workload_x509_svid(spiffe_id, x509.Name([]), ())


def test_a_datastore_without_the_event_loop_read_loads_and_is_read_from_a_thread(
    core: CoreConfig, tmp_path: Path
) -> None:
    """Regression: read_attested_node_at_once is optional, but a DataStore without it was refused."""

    class WithoutReadAtOnce(SqlDataStore):
        read_attested_node_at_once = None  # no hookimpl: the hook is not implemented

    declaration = PluginDeclaration(
        "DataStore", "plain", {"database_type": "sqlite3", "connection_string": str(tmp_path / "plain.db")}
    )
    catalog = load_server_catalog(
        [declaration, PluginDeclaration("KeyManager", "memory")], core, extra_plugins={"plain": WithoutReadAtOnce}
    )
    try:
        store = catalog.datastore
        assert not store.implements("read_attested_node_at_once")
        agent = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/plain")
        store.create_attested_node(AttestedNode(agent, "join_token", "1", 10**10))
        assert store.read_attested_node_at_once(agent) is None  # the server then reads from a thread
        fetched = store.fetch_attested_node(agent)
        assert fetched is not None
        assert fetched.cert_serial_number == "1"
    finally:
        catalog.close()


async def _answered(spiffe_id: SpiffeId) -> NodeReadAtOnce:
    return NodeReadAtOnce(AttestedNode(spiffe_id, "join_token", "from-the-loop", 10**10))


async def _raises(spiffe_id: SpiffeId) -> NodeReadAtOnce:
    raise RuntimeError("the driver broke")


async def _wrong_type(spiffe_id: SpiffeId) -> object:
    return "a node"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (_answered, "from-the-loop"),
        (lambda spiffe_id: None, None),
        (_raises, None),
        (_wrong_type, None),
        (lambda spiffe_id: NodeReadAtOnce(None), None),  # not a coroutine
    ],
    ids=["answers", "cannot-now", "raises", "wrong-type", "not-awaitable"],
)
def test_the_event_loop_read_of_a_datastore_is_awaited_and_whatever_goes_wrong_answers_none(
    core: CoreConfig, tmp_path: Path, answer: Callable[[SpiffeId], Any], expected: str | None
) -> None:
    """None sends the server to the worker-thread read, which reports what is wrong."""

    class OnLoopRead(SqlDataStore):
        @hookimpl
        def read_attested_node_on_loop(self, spiffe_id: SpiffeId) -> Any:
            return answer(spiffe_id)

    declaration = PluginDeclaration(
        "DataStore", "loop", {"database_type": "sqlite3", "connection_string": str(tmp_path / "loop.db")}
    )
    catalog = load_server_catalog(
        [declaration, PluginDeclaration("KeyManager", "memory")], core, extra_plugins={"loop": OnLoopRead}
    )
    agent = SpiffeId.parse("spiffe://example.org/spire/agent/join_token/loop")
    try:
        read = asyncio.run(catalog.datastore.read_attested_node_on_loop(agent))
    finally:
        catalog.close()
    if expected is None:
        assert read is None
    else:
        assert read is not None
        assert read.node is not None
        assert read.node.cert_serial_number == expected
