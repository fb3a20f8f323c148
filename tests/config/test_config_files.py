"""SPIRE's config files load as operators write them; every mistake names file, block, key."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from datetime import timedelta
from pathlib import Path

import pytest
from pyspire.config import (
    ConfigError,
    load_agent_config,
    load_agent_config_text,
    load_server_config,
    load_server_config_text,
)
from pyspire.config.reader import read_config_file
from pyspire.config.sections import AgentSection, LogLevel, ServerSection
from pyspire.config.support import AGENT_UNSUPPORTED, SERVER_UNSUPPORTED, Rule, Verdict
from pyspire.spiffe import SpiffeId, TrustDomain

REPO = Path(__file__).resolve().parents[2]

SERVER = 'server {\n  trust_domain = "example.org"\n  data_dir = "./.data"\n%s\n}\n'
AGENT = 'agent {\n  trust_domain = "example.org"\n  server_address = "127.0.0.1"\n%s\n}\n'


def server(body: str = "", rest: str = "") -> str:
    return SERVER % body + rest


def agent(body: str = "", rest: str = "") -> str:
    return AGENT % body + rest


# --- SPIRE's own files and ours ----------------------------------------------------------


def test_spires_server_conf_loads_as_written(spire_conf_dir: Path) -> None:
    config = load_server_config(spire_conf_dir / "server.conf")
    assert config.server.trust_domain == TrustDomain("example.org")
    assert config.server.bind_port == 8081  # written as the string "8081"
    assert config.server.log_level is LogLevel.DEBUG
    assert [(p.type, p.name) for p in config.plugins] == [
        ("DataStore", "sql"),
        ("NodeAttestor", "join_token"),
        ("KeyManager", "memory"),
        ("UpstreamAuthority", "disk"),
    ]
    datastore = config.plugins[0]
    assert datastore.plugin_data == {
        "database_type": "sqlite3",
        "connection_string": "./.data/datastore.sqlite3",
    }
    assert datastore.where == 'server.conf: plugins: DataStore "sql"'


def test_spires_agent_conf_loads_as_written(spire_conf_dir: Path) -> None:
    config = load_agent_config(spire_conf_dir / "agent.conf")
    assert config.agent.server_address == "127.0.0.1"
    assert config.agent.trust_bundle_path == Path("./conf/agent/dummy_root_ca.crt")
    assert {(p.type, p.name) for p in config.plugins} == {
        ("NodeAttestor", "join_token"),
        ("KeyManager", "disk"),
        ("WorkloadAttestor", "unix"),
    }


@pytest.mark.parametrize("name", ["server.conf", "agent.conf"])
def test_contrib_configs_load(name: str) -> None:
    path = REPO / "contrib" / "conf" / name
    config = load_server_config(path) if name == "server.conf" else load_agent_config(path)
    assert config.warnings == ()
    assert config.health_checks.listener_enabled


def _documented_keys(text: str, block: str) -> set[str]:
    """Every key (active or commented out) inside the top-level ``block`` of a *_full.conf."""
    start = text.index(f"{block} {{")
    end = min(text.index(marker, start) for marker in ("\nplugins {", "\n# plugins:") if marker in text)
    keys = set()
    for line in text[start:end].splitlines()[1:]:
        match = re.match(r'^\s*#?\s*#?\s*([a-z_]+)\s*(=|\{|"[^"]*"\s*\{)', line)
        if match:
            keys.add(match.group(1))
    return keys


def _known_keys(section: type) -> set[str]:
    """Every key name in a section dataclass and its nested dataclasses."""
    names: set[str] = set()
    pending = [section]
    while pending:
        current = pending.pop()
        for field in dataclasses.fields(current):
            names.add(field.metadata.get("key", field.name))
            hints = typing.get_type_hints(current)
            for arg in (hints[field.name], *typing.get_args(hints[field.name])):
                for inner in (arg, *typing.get_args(arg)):
                    if dataclasses.is_dataclass(inner) and inner not in pending:
                        pending.append(inner)  # type: ignore[arg-type]
    return names


@pytest.mark.parametrize(
    ("conf", "block", "section", "table"),
    [
        ("server_full.conf", "server", ServerSection, SERVER_UNSUPPORTED),
        ("agent_full.conf", "agent", AgentSection, AGENT_UNSUPPORTED),
    ],
)
def test_every_key_spire_documents_is_handled(
    spire_conf_dir: Path, conf: str, block: str, section: type, table: dict[str, object]
) -> None:
    """A key SPIRE documents is either implemented or in the support table: nothing drifts."""
    documented = _documented_keys((spire_conf_dir / conf).read_text(), block)
    assert len(documented) > 30, "the key extraction found too little to be meaningful"
    handled = _known_keys(section) | {key.lstrip("/").split(".")[-1] for key in table}
    # Keys nested inside blocks the support table already handles as a whole (ACME, OPA).
    nested = {
        "domain_name",
        "email",
        "directory_url",
        "tos_accepted",
        "local",
        "rego_path",
        "policy_data_path",
    }
    unhandled = sorted(documented - handled - nested)
    assert unhandled == []


@pytest.mark.parametrize("conf", ["server_full.conf", "agent_full.conf"])
def test_spires_full_configs_parse(spire_conf_dir: Path, conf: str) -> None:
    """The reference files are valid HCL to our reader (they are not meant to run)."""
    document = read_config_file(spire_conf_dir / conf)
    assert "plugins" in document


def test_unsupported_spire_features_in_the_full_server_conf_are_refused(spire_conf_dir: Path) -> None:
    # server_full.conf enables ACME for the bundle endpoint, which pyspire does not do.
    with pytest.raises(ConfigError, match=r"federation\.bundle_endpoint\.profile\.https_web\.acme"):
        load_server_config(spire_conf_dir / "server_full.conf")


# --- values ------------------------------------------------------------------------------


def test_defaults_are_spires() -> None:
    config = load_server_config_text(server())
    s = config.server
    assert (s.bind_address, s.bind_port) == ("0.0.0.0", 8081)
    assert s.socket_path == Path("/tmp/spire-server/private/api.sock")
    assert s.ca_ttl == timedelta(hours=24)
    assert s.default_x509_svid_ttl == timedelta(hours=1)
    assert s.default_jwt_svid_ttl == timedelta(minutes=5)
    assert s.effective_agent_ttl == timedelta(hours=1)
    assert s.effective_jwt_key_type == "ec-p256"
    assert (s.ca_subject.country, s.ca_subject.organization) == (("US",), ("SPIFFE",))
    assert s.ratelimit.attestation
    assert s.ratelimit.signing
    assert s.server_id == SpiffeId.parse("spiffe://example.org/spire/server")
    a = load_agent_config_text(agent()).agent
    assert a.socket_path == Path("/tmp/spire-agent/public/api.sock")
    assert a.experimental.sync_interval == timedelta(seconds=5)
    assert (a.x509_svid_cache_max_size, a.jwt_svid_cache_max_size) == (1000, 1000)
    assert (a.sds.default_svid_name, a.sds.default_bundle_name, a.sds.default_all_bundles_name) == (
        "default",
        "ROOTCA",
        "ALL",
    )


def test_nested_blocks_and_labels() -> None:
    config = load_server_config_text(
        server(
            """
  admin_ids = ["spiffe://example.org/admin"]
  ca_subject { country = ["DE"] organization = ["Acme"] common_name = "ca" }
  ratelimit = { attestation = false }
  federation {
    bundle_endpoint { port = 8443 }
    federates_with "partner.test" {
      bundle_endpoint_url = "https://partner.test/bundle"
      bundle_endpoint_profile "https_spiffe" { endpoint_spiffe_id = "spiffe://partner.test/spire/server" }
    }
    federates_with "web.test" {
      bundle_endpoint_url = "https://web.test/bundle"
      bundle_endpoint_profile "https_web" {}
    }
  }
  experimental { cache_reload_interval = "1s" }"""
        )
    )
    s = config.server
    assert s.admin_ids == (SpiffeId.parse("spiffe://example.org/admin"),)
    assert s.ca_subject.country == ("DE",)
    assert not s.ratelimit.attestation
    assert s.ratelimit.signing
    partners = s.federation.federates_with
    assert set(partners) == {TrustDomain("partner.test"), TrustDomain("web.test")}
    spiffe_profile = partners[TrustDomain("partner.test")].bundle_endpoint_profile.https_spiffe
    assert spiffe_profile is not None
    assert spiffe_profile.endpoint_spiffe_id == SpiffeId.parse("spiffe://partner.test/spire/server")
    assert s.federation.bundle_endpoint is not None
    assert s.federation.bundle_endpoint.port == 8443
    assert s.experimental.cache_reload_interval == timedelta(seconds=1)


def test_json_config_loads_like_hcl() -> None:
    document = {
        "server": {"trust_domain": "example.org", "data_dir": ".", "bind_port": 9000},
        "plugins": {
            "KeyManager": {"memory": {"plugin_data": {}}},
            "NodeAttestor": [
                {"join_token": {}},
                {"x509pop": {"plugin_data": {"ca_bundle_path": "ca.pem"}}},
            ],
        },
    }
    config = load_server_config_text(json.dumps(document), source="server.json")
    assert config.server.bind_port == 9000
    assert [(p.type, p.name, dict(p.plugin_data)) for p in config.plugins] == [
        ("KeyManager", "memory", {}),
        ("NodeAttestor", "join_token", {}),
        ("NodeAttestor", "x509pop", {"ca_bundle_path": "ca.pem"}),
    ]


def test_plugin_data_file_is_read(tmp_path: Path) -> None:
    data_file = tmp_path / "x509pop.hcl"
    data_file.write_text('ca_bundle_path = "/etc/ca.pem"\n')
    config = load_server_config_text(
        server(rest=f'plugins {{\n NodeAttestor "x509pop" {{ plugin_data_file = "{data_file}" }}\n}}\n')
    )
    assert config.plugins[0].plugin_data == {"ca_bundle_path": "/etc/ca.pem"}


def test_disabled_plugin_is_kept_and_marked() -> None:
    config = load_server_config_text(server(rest='plugins {\n KeyManager "disk" { enabled = false }\n}\n'))
    assert not config.plugins[0].enabled


def test_expand_env_substitutes_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TD", "from-env.org")
    monkeypatch.setenv("PORT", "9443")
    monkeypatch.delenv("UNSET_VARIABLE", raising=False)
    path = tmp_path / "server.conf"
    path.write_text('server {\n trust_domain = "$TD"\n data_dir = "./x${UNSET_VARIABLE}"\n bind_port = "${PORT}"\n}\n')
    config = load_server_config(path, expand_env=True)
    assert config.server.trust_domain == TrustDomain("from-env.org")
    assert config.server.bind_port == 9443
    assert config.server.data_dir == Path("./x")
    with pytest.raises(ConfigError, match="trust domain"):
        load_server_config(path)  # without -expandEnv "$TD" is not a trust domain


def test_command_line_overrides_replace_file_values() -> None:
    config = load_server_config_text(server(), overrides={"trust_domain": "other.org", "bind_port": "9999"})
    assert config.server.trust_domain == TrustDomain("other.org")
    assert config.server.bind_port == 9999
    with pytest.raises(ConfigError, match='key "bind_port": expected an integer, got "x"'):
        load_server_config_text(server(), overrides={"bind_port": "x"})


def test_ignored_spire_settings_produce_warnings() -> None:
    config = load_server_config_text(server('  profiling_enabled = true\n  experimental { event_timeout = "1m" }'))
    assert len(config.warnings) == 2
    assert any('"server.profiling_enabled"' in warning for warning in config.warnings)
    assert any('"server.experimental.event_timeout" has no effect' in warning for warning in config.warnings)


def test_harmless_default_of_a_refused_setting_loads() -> None:
    config = load_agent_config_text(agent('  trust_bundle_path = "b.pem"\n  rebootstrap_mode = "never"'))
    assert config.agent.trust_bundle_path == Path("b.pem")


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            server("  bind_prot = 1"),
            'server.conf: server: key "bind_prot": unknown key (known keys: ',
        ),
        (
            server('  bind_port = "eighty"'),
            'server.conf: server: key "bind_port": expected an integer, got "eighty"',
        ),
        (
            server("  bind_port = 70000"),
            'server.conf: server: key "bind_port": 70000 is not a TCP port',
        ),
        ('server { data_dir = "." }', 'server.conf: server: key "trust_domain": is required'),
        (
            server('  ca_ttl = "1x"'),
            'server.conf: server: key "ca_ttl": invalid duration "1x": unknown unit or stray text at "1x"',
        ),
        (server('  ca_ttl = "-5m"'), 'key "ca_ttl": must be a positive duration'),
        (
            server('  default_x509_svid_ttl = "30"'),
            'key "default_x509_svid_ttl": invalid duration "30": missing unit',
        ),
        (
            server('  log_level = "LOUD"'),
            'key "log_level": must be one of "DEBUG", "INFO", "WARN", "ERROR", got "LOUD"',
        ),
        (server('  ca_key_type = "ed25519"'), 'key "ca_key_type": must be one of "ec-p256"'),
        (
            server('  admin_ids = ["spiffe://Example.org/a"]'),
            'key "admin_ids[0]": invalid SPIFFE ID',
        ),
        (
            server('  audit_log_enabled = "yes"'),
            'key "audit_log_enabled": expected true or false, got "yes"',
        ),
        (
            server("  ratelimit { attestation = true }\n  ratelimit { signing = true }"),
            "block given 2 times",
        ),
        (
            server("  federation { nonsense = 1 }"),
            'server.conf: server: federation: key "nonsense": unknown key',
        ),
        (
            server('  proxy_protocol_trusted_cidrs = ["10.0.0.0/8"]'),
            'key "server.proxy_protocol_trusted_cidrs": makes the server read callers\' addresses from PROXY',
        ),
        (
            'server { trust_domain = "Example.org" data_dir = "." }',
            'key "trust_domain": invalid trust domain "Example.org"',
        ),
        (server() + "serverr {}\n", 'server.conf: key "serverr": unknown top-level block'),
        ('agent { trust_domain = "x" }', "the server { ... } block is missing"),
        ("server {\n  trust_domain = \n}\n", "server.conf: invalid HCL at line"),
        ('{"server": ', "server.conf: invalid JSON at line 1"),
    ],
)
def test_server_config_errors_name_file_block_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_server_config_text(text)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        (
            'Keymanager "disk" {}',
            'server.conf: plugins: key "Keymanager": unknown plugin type (known: ',
        ),
        (
            'KeyManager "disk" { plugin_data {} plugin_data_file = "x" }',
            'server.conf: plugins: KeyManager "disk": key "plugin_data_file": '
            "plugin_data and plugin_data_file are mutually exclusive",
        ),
        (
            'KeyManager "disk" { plugin_cmd = "/bin/x" }',
            "external plugin binaries are not supported",
        ),
        ('KeyManager "disk" { plugin_dat {} }', 'KeyManager "disk": key "plugin_dat": unknown key'),
        ('KeyManager "disk" {}\nKeyManager "disk" {}', '"disk" is declared twice'),
        ('KeyManager "disk" { enabled = "no" }', 'key "enabled": expected true or false'),
        ('WorkloadAttestor "unix" {}', 'key "WorkloadAttestor": unknown plugin type'),
        (
            'KeyManager "disk" { plugin_data_file = "/nonexistent/file.hcl" }',
            "/nonexistent/file.hcl: cannot read",
        ),
    ],
)
def test_plugin_declaration_errors(plugins: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_server_config_text(server(rest=f"plugins {{\n{plugins}\n}}\n"))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '  trust_bundle_path = "a"\n  trust_bundle_url = "https://b"',
            "only one of trust_bundle_path and trust_bundle_url",
        ),
        (
            '  trust_bundle_path = "a"\n  insecure_bootstrap = true',
            "insecure_bootstrap cannot be used together with",
        ),
        ('  trust_bundle_url = "http://plain"', "must be an https:// URL"),
        (
            '  join_token = "t"\n  join_token_file = "f"',
            "only one of join_token and join_token_file",
        ),
        ('  availability_target = "1h"', 'key "availability_target": must be at least 24h'),
        ('  trust_bundle_unix_socket = "/x"', "use trust_bundle_path or trust_bundle_url"),
        ('  rebootstrap_mode = "auto"', 'key "agent.rebootstrap_mode": lets the agent drop its trust'),
        (
            '  experimental { sync_interval = "0s" }',
            'key "sync_interval": must be a positive duration',
        ),
        (
            '  trust_bundle_format = "der"',
            'key "trust_bundle_format": must be one of "pem", "spiffe"',
        ),
    ],
)
def test_agent_config_errors(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_agent_config_text(agent(body))
    assert message in str(raised.value)


def _agent_at(address: str) -> str:
    return AGENT.replace('"127.0.0.1"', json.dumps(address)) % '  server_port = "8081"'


@pytest.mark.parametrize(
    ("address", "servers"),
    [
        ("spire.example", (("spire.example", 8081),)),
        ("10.0.0.1, 10.0.0.2:9081", (("10.0.0.1", 8081), ("10.0.0.2", 9081))),
        ("[::1]:9081,[fd00::2]", (("::1", 9081), ("fd00::2", 8081))),
        ("::1", (("::1", 8081),)),
    ],
)
def test_server_address_may_list_several_servers(address: str, servers: tuple[tuple[str, int], ...]) -> None:
    assert load_agent_config_text(_agent_at(address)).agent.servers == servers


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("a,,b", 'key "server_address": empty address in "a,,b"'),
        ("a:http", '"a:http" is not host, host:port or [ipv6]:port'),
        ("a:70000", '"a:70000" is not host, host:port'),
        ("[::1]x", '"[::1]x" is not host'),
        (":8081", '":8081" has no host'),
    ],
)
def test_malformed_server_lists_are_refused(address: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_agent_config_text(_agent_at(address))
    assert message in str(raised.value)


def test_agent_without_any_way_to_trust_the_server_is_refused_when_run() -> None:
    section = load_agent_config_text(agent()).agent  # tools may read such a file
    with pytest.raises(ValueError, match=r"needs trust_bundle_path or trust_bundle_url"):
        section.require_bootstrap()


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.conf: cannot read the config file"):
        load_server_config(tmp_path / "nope.conf")


def test_a_refused_spire_key_must_say_why() -> None:
    # Every refusal reaches an operator migrating from SPIRE: a rule without its reason is a bug.
    with pytest.raises(ValueError, match="must say why"):
        Rule(Verdict.REFUSE)
    assert all(
        rule.reason
        for table in (SERVER_UNSUPPORTED, AGENT_UNSUPPORTED)
        for rule in table.values()
        if rule.verdict is Verdict.REFUSE
    )
