"""SPIRE keys pyspire used to parse and then never read: each is honoured, refused, or (only when
it changes nothing) accepted with a warning that says why."""

from __future__ import annotations

import pytest
from pyspire.config import ConfigError, load_agent_config_text, load_server_config_text

SERVER = 'server {\n  trust_domain = "example.org"\n  data_dir = "d"\n%s\n}\n%s'
AGENT = 'agent {\n  trust_domain = "example.org"\n  server_address = "s"\n%s\n}\n%s'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SERVER % ('experimental { named_pipe_name = "\\\\spire-server\\\\private\\\\api" }', ""),
            'key "server.experimental.named_pipe_name": invalid configuration: named_pipe_name is not '
            "supported in this platform; please use socket_path instead",
        ),
        (
            AGENT % ('experimental { named_pipe_name = "\\\\spire-agent\\\\public\\\\api" }', ""),
            "named_pipe_name is not supported in this platform; please use socket_path instead",
        ),
        (
            AGENT % ('experimental { admin_named_pipe_name = "\\\\admin" }', ""),
            "admin_named_pipe_name is not supported in this platform; please use admin_socket_path instead",
        ),
        (
            SERVER % ("", 'telemetry {\n  M3 = [{ address = "localhost:9000", env = "prod" }]\n}\n'),
            'key "telemetry.M3": is a SPIRE metrics sink',
        ),
    ],
)
def test_settings_pyspire_cannot_honour_are_refused_by_name(text: str, message: str) -> None:
    load = load_server_config_text if text.startswith("server") else load_agent_config_text
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        SERVER % ('experimental { named_pipe_name = "" }', ""),
        AGENT % ('experimental {\n named_pipe_name = ""\n admin_named_pipe_name = ""\n}', ""),
        SERVER % ("experimental { events_based_cache = true }", ""),
    ],
)
def test_values_that_change_nothing_load_without_a_word(text: str) -> None:
    load = load_server_config_text if text.startswith("server") else load_agent_config_text
    assert load(text).warnings == ()


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        (
            SERVER % ("experimental { events_based_cache = false }", ""),
            '"server.experimental.events_based_cache" has no effect: pyspire\'s caches always follow',
        ),
        (
            SERVER % ('experimental { event_timeout = "30m" }', ""),
            '"server.experimental.event_timeout" has no effect',
        ),
        (
            AGENT % ("experimental { use_sync_authorized_entries = true }", ""),
            '"agent.experimental.use_sync_authorized_entries" is deprecated',
        ),
    ],
)
def test_settings_that_change_nothing_say_why(text: str, warning: str) -> None:
    load = load_server_config_text if text.startswith("server") else load_agent_config_text
    warnings = load(text).warnings
    assert len(warnings) == 1
    assert warning in warnings[0]


def test_full_cache_reload_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match='key "full_cache_reload_interval": must be a positive duration'):
        load_server_config_text(SERVER % ('experimental { full_cache_reload_interval = "0s" }', ""))
