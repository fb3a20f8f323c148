"""SPIRE's config keys: defaults as SPIRE's, every mistake one error naming the key, refusals by name."""

from __future__ import annotations

import dataclasses
import socket
import typing
from datetime import timedelta
from pathlib import Path

import pytest
from pyspire.config import ConfigError
from pyspire.config.reader import parse_config_text
from pyspire.config.schema import config_key
from pyspire_oidc_discovery.cli import main
from pyspire_oidc_discovery.config import ProviderConfig, parse_config
from pyspire_oidc_discovery.daemon import StartupError, serve

from plugins.oidc_discovery.tests.provider import run_provider
from tests.support.free_port import free_port

SOURCE = 'server_api { address = "unix:///run/spire-server/private/api.sock" }'


def _parse(text: str) -> object:
    return parse_config(parse_config_text(text, "provider.conf"), "provider.conf")


def test_spires_example_loads_with_spires_defaults() -> None:
    config = _parse(
        """
log_level = "debug"
domains = ["mypublicdomain.test", "mypublicdomain.test"]
serving_cert_file {
 cert_file_path = "/some/path/on/disk/to/cert.pem"
 key_file_path = "/some/path/on/disk/to/key.pem"
}
server_api {
    address = "unix:///tmp/spire-server/private/api.sock"
}
health_checks {}
"""
    )
    assert config.domains == ("mypublicdomain.test",)  # type: ignore[attr-defined]
    serving = config.serving_cert_file  # type: ignore[attr-defined]
    assert (serving.address.host, serving.address.port, serving.sync_interval) == ("", 443, timedelta(minutes=1))
    server_api = config.server_api  # type: ignore[attr-defined]
    assert (server_api.socket_path, server_api.interval) == (
        Path("/tmp/spire-server/private/api.sock"),
        timedelta(seconds=10),
    )
    health = config.health_checks  # type: ignore[attr-defined]
    assert (health.bind_port, health.ready_path, health.live_path) == (8008, "/ready", "/live")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'domains = ["a.test"]\nacme { email = "me@a.test"\n tos_accepted = true }\n' + SOURCE,
            'key "acme": ACME is not implemented',
        ),
        (f'domains = []\ninsecure_addr = ":8080"\n{SOURCE}', 'key "domains": at least one domain must be configured'),
        (
            f'domains = ["A.test"]\ninsecure_addr = ":8080"\n{SOURCE}',
            'key "domains[0]": domain "A.test" must already be punycode encoded',
        ),
        (
            f'domains = ["bücher.test"]\ninsecure_addr = ":8080"\n{SOURCE}',
            'key "domains[0]": domain "bücher.test" must already be punycode encoded',
        ),
        (f'insecure_addr = ":8080"\n{SOURCE}', 'key "domains": is required'),
        (
            f'domains = ["a.test"]\n{SOURCE}',
            "either serving_cert_file, insecure_addr or listen_socket_path must be configured",
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"',
            "exactly one of the server_api, workload_api, or file sections must be configured",
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nfile {{ path = "/b.json" }}',
            'key "file": the server_api, workload_api, and file sections are mutually exclusive',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\nlisten_socket_path = "/s.sock"\n{SOURCE}',
            'key "listen_socket_path": insecure_addr and listen_socket_path are mutually exclusive',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\nserving_cert_file {{\n cert_file_path = "c"\n key_file_path = "k"\n}}\n{SOURCE}',
            'key "insecure_addr": serving_cert_file and insecure_addr are mutually exclusive',
        ),
        (
            f'domains = ["a.test"]\nserving_cert_file {{ cert_file_path = "c" }}\n{SOURCE}',
            'serving_cert_file: key "key_file_path": must be configured in the serving_cert_file configuration section',
        ),
        (
            f'domains = ["a.test"]\nserving_cert_file {{\n cert_file_path = "c"\n key_file_path = "k"\n addr = "443"\n}}\n{SOURCE}',
            'serving_cert_file: key "addr": "443" is not host:port (missing port)',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = "localhost:http2"\n{SOURCE}',
            'key "insecure_addr": "localhost:http2" has no valid port',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"\nserver_api { address = "dns:///server:8081" }',
            'server_api: key "address": must use the unix name system',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"\nserver_api { address = "unix://server/api.sock" }',
            'server_api: key "address": "unix://server/api.sock" names a host',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"\nserver_api {\n address = "unix:///a.sock"\n poll_interval = "10"\n}',
            'server_api: key "poll_interval": invalid duration "10": missing unit',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"\nserver_api {\n address = "unix:///a.sock"\n experimental { named_pipe_name = "\\\\spire-server\\\\private\\\\api" }\n}',
            'server_api: experimental: key "named_pipe_name": named pipes exist only on Windows',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"\nworkload_api { socket_path = "/a.sock" }',
            'workload_api: key "trust_domain": is required',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"\nworkload_api { trust_domain = "a.test" }',
            'workload_api: key "socket_path": must be configured in the workload_api configuration section',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"\nworkload_api {\n socket_path = "/a.sock"\n trust_domain = "A.test"\n}',
            'workload_api: key "trust_domain": invalid trust domain',
        ),
        (
            'domains = ["a.test"]\ninsecure_addr = ":8080"\nfile {}',
            'file: key "path": must be configured in the file configuration section',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nexperimental {{ listen_named_pipe_name = "oidc" }}',
            'experimental: key "listen_named_pipe_name": named pipes exist only on Windows',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nhealth_checks {{ bind_address = "127.0.0.1" }}',
            'health_checks: key "bind_address": unknown key (known keys: bind_port, live_path, ready_path)',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nhealth_checks {{ ready_path = "ready" }}',
            'health_checks: key "ready_path": "ready" must start with "/"',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\njwt_issuer = "issuer.example"',
            'key "jwt_issuer": the url must contain a scheme',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\njwks_uri = "https://"',
            'key "jwks_uri": the url must contain a host',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nserver_path_prefix = "instance"',
            'key "server_path_prefix": "instance" must start with "/"',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nlog_format = "logfmt"',
            'key "log_format": must be "text" or "json"',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nlog_level = "verbose"',
            'key "log_level": must be one of',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nset_key_use = "yes"',
            'key "set_key_use": expected true or false',
        ),
        (
            f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nlog_file = "/var/log/oidc.log"',
            'key "log_file": unknown key',
        ),
    ],
)
def test_a_mistake_is_one_error_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _parse(text)
    assert message in str(raised.value)
    assert str(raised.value).startswith("provider.conf: ")


def test_a_non_positive_interval_means_the_default_as_in_spire() -> None:
    config = _parse(
        'domains = ["a.test"]\ninsecure_addr = ":8080"\n'
        'workload_api {\n socket_path = "a.sock"\n trust_domain = "a.test"\n poll_interval = "-1s"\n}'
    )
    workload_api = config.workload_api  # type: ignore[attr-defined]
    assert workload_api.interval == timedelta(seconds=10)
    assert workload_api.socket.is_absolute()


def test_the_command_line_reports_a_bad_file_in_one_line_and_exits_1(tmp_path: Path) -> None:
    result = run_provider(tmp_path, f'domains = ["a.test"]\ninsecure_addr = ":8080"\n{SOURCE}\nacme {{}}')
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert 'key "acme"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stdout + result.stderr


def _config(text: str) -> ProviderConfig:
    config = _parse(text)
    assert isinstance(config, ProviderConfig)
    return config


async def test_a_certificate_that_cannot_be_loaded_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    config = _config(
        f'domains = ["a.test"]\nserving_cert_file {{\n cert_file_path = "{tmp_path / "cert.pem"}"\n'
        f' key_file_path = "{tmp_path / "key.pem"}"\n addr = "127.0.0.1:{free_port()}"\n}}\n{SOURCE}'
    )
    with pytest.raises(StartupError, match=r"failed to load certificate: .*cert\.pem and .*key\.pem are not a PEM"):
        await serve(config)


async def test_an_address_in_use_stops_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(f'domains = ["a.test"]\ninsecure_addr = "127.0.0.1:{port}"\n{SOURCE}')
        with pytest.raises(StartupError, match=f"cannot listen on insecure_addr 127.0.0.1:{port}: "):
            await serve(config)


async def test_a_file_at_the_socket_path_is_not_replaced(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    config = _config(f'domains = ["a.test"]\nlisten_socket_path = "{precious}"\n{SOURCE}')
    with pytest.raises(StartupError, match="exists and is not a socket"):
        await serve(config)
    assert precious.read_text() == "keep me\n"


def test_flags_are_spires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"
    with pytest.raises(SystemExit) as exited:
        main(["-bogus"])
    assert exited.value.code == 2
    assert "flag provided but not defined: -bogus" in capsys.readouterr().err
    assert main(["-config", "a.conf", "extra"]) == 1
    assert "Error: unexpected arguments: extra" in capsys.readouterr().err
    # The default config file is SPIRE's name, in the working directory.
    monkeypatch.chdir(tmp_path)
    assert main([]) == 1
    assert "oidc-discovery-provider.conf: cannot read the config file" in capsys.readouterr().err


def test_expand_env_replaces_variables_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "provider.conf"
    config.write_text(f'domains = ["${{OIDC_DOMAIN}}"]\ninsecure_addr = ":8080"\n{SOURCE}')
    monkeypatch.setenv("OIDC_DOMAIN", "Upper.test")
    assert main(["-config", str(config), "-expandEnv"]) == 1
    assert 'domain "Upper.test" must already be punycode encoded' in capsys.readouterr().err
    assert main(["-config", str(config), "-expandEnv=false"]) == 1
    assert 'domain "${OIDC_DOMAIN}" is not a valid domain name' in capsys.readouterr().err


def test_the_readme_documents_every_key() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    sections: list[type] = [ProviderConfig]
    documented = []
    while sections:
        section = sections.pop()
        for field in dataclasses.fields(section):  # type: ignore[arg-type]
            if not field.init:
                continue
            documented.append(config_key(field))
            nested = [
                arg
                for arg in typing.get_args(typing.get_type_hints(section)[field.name])
                if dataclasses.is_dataclass(arg)
            ]
            hint = typing.get_type_hints(section)[field.name]
            sections.extend([*nested, *([hint] if dataclasses.is_dataclass(hint) else [])])
    assert {"cert_file_path", "socket_path", "trust_domain", "bind_port", "named_pipe_name"} <= set(documented)
    for key in [*documented, "acme"]:
        assert f"`{key}`" in readme, key
