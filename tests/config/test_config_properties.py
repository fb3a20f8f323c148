"""Property tests over the config loaders: any text gives a config or a ConfigError, nothing else.

Texts are valid configs with pieces of HCL (and of what HCL is not) cut out or spliced in, and
strings of those pieces alone: unbalanced braces, heredocs, interpolations, duplicate keys,
values of the wrong type, numbers beyond any range.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspire.config import ConfigError, load_agent_config_text, load_server_config_text

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SERVER = """
server {
    trust_domain = "example.org"
    data_dir = "/tmp/data"
    ca_ttl = "24h"
    bind_port = "8081"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "/tmp/data/datastore.sqlite3"
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
"""

AGENT = """
agent {
    trust_domain = "example.org"
    server_address = "127.0.0.1"
    server_port = "8081"
    insecure_bootstrap = true
    data_dir = "/tmp/agent"
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
"""

PIECES = [
    "{", "}", "[", "]", "=", ",", '"', "\n", " ", "#", "//", "/*", "*/", "<<EOT\n", "\nEOT\n", "${", "%{", "true",
    "false", "null", "0", "-1", "1e400", "99999999999999999999", '"1h"', '"-5s"', '"0s"', '"forever"', "trust_domain",
    "server", "agent", "plugins", "plugin_data", "experimental", "ratelimit", "federation", "health_checks",
    "telemetry", 'NodeAttestor "x509pop"', 'DataStore "sql"', "ca_subject", "admin_ids", '["a", 1]', "{}", "\\",
    "é", "\x00", "max_attested_node_info_staleness", "bind_port",
]  # fmt: skip
fragments = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)


@st.composite
def _spliced(draw: st.DrawFn, base: str) -> str:
    text = base
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 20)))
        text = text[:start] + draw(fragments) + text[end:]
    return text


def _load(loader: object, text: str) -> None:
    with contextlib.suppress(ConfigError):
        loader(text)  # type: ignore[operator]


@SETTINGS
@given(st.one_of(_spliced(SERVER), fragments, st.text(max_size=60)))
def test_server_config_loader_raises_only_config_errors(text: str) -> None:
    _load(load_server_config_text, text)


@SETTINGS
@given(st.one_of(_spliced(AGENT), fragments, st.text(max_size=60)))
def test_agent_config_loader_raises_only_config_errors(text: str) -> None:
    _load(load_agent_config_text, text)


def test_the_unspliced_configs_load() -> None:
    """The bases are valid, so splicing explores near valid configs, not only garbage."""
    assert str(load_server_config_text(SERVER).server.trust_domain) == "example.org"
    assert str(load_agent_config_text(AGENT).agent.trust_domain) == "example.org"
