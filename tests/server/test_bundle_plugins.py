"""Notifier and BundlePublisher plugins on a real server: called as SPIRE calls them.

The plugins are written here, installed as real entry points (``Notifier.recording`` and
``BundlePublisher.recording``) and loaded by the server from its config. They record what
they are handed in files the test reads.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from pyspire.config import PluginDeclaration
from pyspire.plugin.catalog import load_single_plugin
from pyspire.plugin.facades import BundlePublisher, Notifier
from pyspire.plugin.records import BundleRecord, X509Authority
from pyspire.plugin.testing import make_core_config
from pyspire.server.bundle_delivery import BundleDelivery
from pyspire.server.cache.bundles import BundleCache
from pyspire.spiffe import Bundle, TrustDomain

from tests.support.daemons import ServerDaemon, server_config
from tests.support.pki import make_ca
from tests.support.plugins_in_tests import install_plugins
from tests.support.waiting import eventually

TD = TrustDomain.parse("example.org")

PLUGINS = '''
import json
from pathlib import Path

from pyspire.plugin import Unavailable, hookimpl


def _authorities(bundle):
    return sorted(cert.serial_number for cert in bundle.x509_authorities)


class RecordingNotifier:
    """Writes each event it hears to a JSON-lines file."""

    @hookimpl
    def configure(self, plugin_data, core):
        self.path = Path(plugin_data["record_to"])
        self.fail_loaded = plugin_data.get("fail_loaded", False)
        self._write({"event": "configured", "message": plugin_data.get("message", "")})

    def _write(self, record):
        with self.path.open("a") as out:
            out.write(json.dumps(record) + "\\n")

    @hookimpl
    def notify_bundle_loaded(self, bundle):
        if self.fail_loaded:
            raise Unavailable("the bundle store is out of reach")
        self._write({"event": "loaded", "authorities": _authorities(bundle)})

    @hookimpl
    def notify_bundle_updated(self, bundle):
        self._write({"event": "updated", "authorities": _authorities(bundle)})


class RecordingPublisher:
    """Writes the SPIFFE bundle it is handed to a file, failing the first ``fail_first`` times."""

    @hookimpl
    def configure(self, plugin_data, core):
        self.path = Path(plugin_data["publish_to"])
        self.fail_first = int(plugin_data.get("fail_first", 0))
        self.calls = 0

    @hookimpl
    def publish_bundle(self, bundle):
        self.calls += 1
        with self.path.with_suffix(".calls").open("a") as out:
            out.write(json.dumps({"call": self.calls, "authorities": _authorities(bundle)}) + "\\n")
        if self.calls <= self.fail_first:
            raise Unavailable(f"publish {self.calls} refused by the store")
        self.path.write_bytes(bundle.marshal())
'''

ENTRY_POINTS = {
    "server": {"Notifier.recording": "RecordingNotifier", "BundlePublisher.recording": "RecordingPublisher"},
}


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start(directory: Path, plugins: str, *, wait: bool = True) -> ServerDaemon:
    env = install_plugins(directory / "site", "recording_plugins", PLUGINS, ENTRY_POINTS)
    text, socket_path, port = server_config(directory, plugins=plugins)
    daemon = ServerDaemon("pyspire-server", directory, socket_path, text, env=env)
    daemon.port = port
    return daemon.start(wait=wait)  # type: ignore[return-value]


def authorities(server: ServerDaemon) -> list[int]:
    return sorted(cert.serial_number for cert in Bundle.parse_x509(TD, server.bundle_pem().encode()).x509_authorities)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDaemon]:
    directory = tmp_path_factory.mktemp("server")
    plugins = f"""
    Notifier "recording" {{
        plugin_data {{
            record_to = "{directory / "notifier.jsonl"}"
            message = <<-EOT
                heredocs arrive decoded
                  (indentation kept past the marker's)
                EOT
        }}
    }}
    BundlePublisher "recording" {{
        plugin_data {{
            publish_to = "{directory / "published.json"}"
            fail_first = 1
        }}
    }}
"""
    daemon = start(directory, plugins)
    yield daemon
    daemon.stop()


def test_notifier_hears_bundle_loaded_once_at_start_with_the_servers_bundle(server: ServerDaemon) -> None:
    recorded = events(server.directory / "notifier.jsonl")
    assert [r["event"] for r in recorded[:2]] == ["configured", "loaded"]
    assert recorded[1]["authorities"] == authorities(server)
    assert [r["event"] for r in recorded].count("loaded") == 1


def test_plugin_data_heredocs_reach_the_plugin_decoded(server: ServerDaemon) -> None:
    configured = events(server.directory / "notifier.jsonl")[0]
    assert configured["message"] == "heredocs arrive decoded\n  (indentation kept past the marker's)\n"


def test_a_failed_publish_is_logged_and_the_next_change_publishes_the_new_bundle(server: ServerDaemon) -> None:
    calls = server.directory / "published.calls"
    assert events(calls)[0]["call"] == 1  # refused at start ...
    assert 'msg="Failed to publish bundle"' in server.log()
    assert "publish 1 refused by the store" in server.log()

    before = authorities(server)
    server.cli("localauthority", "x509", "prepare")
    after = eventually(lambda: (now := authorities(server)) != before and now, timeout=10)
    assert len(after) == len(before) + 1

    published = server.directory / "published.json"
    eventually(lambda: published.exists() and Bundle.parse(TD, published.read_bytes()).x509_authorities, timeout=10)
    assert sorted(c.serial_number for c in Bundle.parse(TD, published.read_bytes()).x509_authorities) == after
    # ... and the notifier heard the same change.
    updates = eventually(
        lambda: [r for r in events(server.directory / "notifier.jsonl") if r["event"] == "updated"], timeout=10
    )
    assert updates[-1]["authorities"] == after


def test_a_notifier_failing_bundle_loaded_fails_the_start(tmp_path: Path) -> None:
    plugins = f"""
    Notifier "recording" {{
        plugin_data {{
            record_to = "{tmp_path / "notifier.jsonl"}"
            fail_loaded = true
        }}
    }}
"""
    daemon = start(tmp_path, plugins, wait=False)
    assert daemon.process is not None
    try:
        code = daemon.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise AssertionError(f"the server started although its notifier failed:\n{daemon.log()}") from None
    assert code == 1
    log = daemon.log()
    assert 'msg="Notifier failed to handle event"' in log
    assert "Server failed to start: a notifier failed the bundle loaded event" in log
    assert "the bundle store is out of reach" in log
    assert not daemon.socket_path.exists()


def test_publishers_are_called_again_every_interval_whether_or_not_the_bundle_changed(tmp_path: Path) -> None:
    """The republish timer (SPIRE: 30 s), shortened, with the same plugins and a real bundle cache."""
    classes: dict[str, Any] = {}
    exec(compile(PLUGINS, "recording_plugins", "exec"), classes)
    core = make_core_config(tmp_path)
    publisher = load_single_plugin(
        "server",
        PluginDeclaration("BundlePublisher", "recording", {"publish_to": str(tmp_path / "b.json")}),
        core,
        extra_plugins={"BundlePublisher.recording": classes["RecordingPublisher"]},
    )
    notifier = load_single_plugin(
        "server",
        PluginDeclaration("Notifier", "recording", {"record_to": str(tmp_path / "n.jsonl")}),
        core,
        extra_plugins={"Notifier.recording": classes["RecordingNotifier"]},
    )
    assert isinstance(publisher, BundlePublisher)
    assert isinstance(notifier, Notifier)

    async def run() -> None:
        cache = BundleCache()
        der = make_ca().certificate.public_bytes(serialization.Encoding.DER)
        cache.put(BundleRecord(TD, (X509Authority(der),)))
        delivery = BundleDelivery(TD, cache, [notifier], [publisher], republish_interval=0.2)
        await delivery.start()
        # Four publishes of the one bundle, waited for rather than timed: a loaded machine may
        # run the 0.2 s timer late, never not at all.
        deadline = time.monotonic() + 20
        while len(events(tmp_path / "b.calls")) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await delivery.stop()

    asyncio.run(run())
    assert len(events(tmp_path / "b.calls")) >= 4
    assert [r["event"] for r in events(tmp_path / "n.jsonl")] == ["configured", "loaded"]
