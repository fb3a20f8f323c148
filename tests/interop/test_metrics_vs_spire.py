"""The metric names of pyspire and of a real SPIRE after the same scenario, side by side.

The same configs (Prometheus on both daemons) run once with spire-server and spire-agent and
once with pyspire's; the agent attests, this process is registered and fetches an X509-SVID
and a JWT-SVID, and an entry that does not exist is asked for. Every name SPIRE exports then
is exported by pyspire too, or pyspire's metrics catalog (docs/metrics.md) does not claim it:
a dashboard written for SPIRE finds whatever pyspire says it shares.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspire.server.api.ratelimit import LIMITED_METHODS
from pyspire.spiffe.workloadapi import WorkloadApiClient
from pyspire.telemetry.catalog import MetricInfo, catalog, prometheus_names

from tests.support.daemons import start_agent, start_server
from tests.support.free_port import free_port
from tests.support.waiting import eventually
from tests.support.workloads import fetched_spiffe_id, register_this_process

pytestmark = pytest.mark.slow

WORKLOAD = "spiffe://example.org/metrics/workload"


CALLED_ONLY_BY_SPIRE = frozenset(
    {
        # SPIRE's server reads its own bundle from the datastore to sign; pyspire's from its cache.
        "spire_server_datastore_bundle_fetch",
        "spire_server_datastore_bundle_fetch_elapsed_time",
        # SPIRE's agent lists its key manager's keys at start-up; pyspire's asks for the one it needs.
        "spire_agent_agent_key_manager_get_keys",
        "spire_agent_agent_key_manager_get_keys_elapsed_time",
    }
)
"""Plugin calls pyspire has under SPIRE's names but does not make in this scenario."""


@dataclass(frozen=True)
class Scraped:
    server: frozenset[str]
    agent: frozenset[str]


def _names(port: int) -> frozenset[str]:
    """The metric families a daemon exports under SPIRE's prefixes (not the runtime's own)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    names = set(re.findall(r"^(spire_(?:server|agent)_\w+?)(?:_(?:sum|count))?(?:\{| )", text, re.M))
    return frozenset(names)


def _prometheus(port: int) -> str:
    return f'telemetry {{\n Prometheus {{\n  host = "127.0.0.1"\n  port = {port}\n }}\n}}'


def _scenario(directory: Path, server_bin: Path | None, agent_bin: Path | None) -> Scraped:
    server_port, agent_port = free_port(), free_port()
    server = start_server(directory / "server", executable=server_bin, blocks=_prometheus(server_port))
    try:
        alias = "spiffe://example.org/node/metrics"
        agent = start_agent(
            directory / "agent", server, server.join_token(alias), executable=agent_bin, blocks=_prometheus(agent_port)
        )
        try:
            register_this_process(server, alias, WORKLOAD)
            assert fetched_spiffe_id(agent) == WORKLOAD

            async def fetch_jwt() -> None:
                async with WorkloadApiClient(agent.address, timeout=10) as client:
                    await client.fetch_jwt_svids(["db"])

            asyncio.run(fetch_jwt())
            server.cli("entry", "show", "-entryID", "no-such-entry", check=False)
            # The agent's sync statistics follow its next sync (1 s in these configs).
            eventually(lambda: any("sync_entries_total" in name for name in _names(agent_port)), timeout=30)
            return Scraped(_names(server_port), _names(agent_port))
        finally:
            agent.stop()
    finally:
        server.stop()


def _catalog(daemon: str) -> list[MetricInfo]:
    """pyspire's catalog of ``daemon``, the server's rate limits included (the server's policy)."""
    return catalog(daemon, LIMITED_METHODS if daemon == "server" else ())  # type: ignore[arg-type]


def _claimed(daemon: str) -> frozenset[str]:
    """The Prometheus names pyspire's catalog says SPIRE emits too."""
    service = f"spire_{daemon}"
    return frozenset(name for info in _catalog(daemon) if info.spire for name in prometheus_names(info, service))


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, spire_server_bin: Path, spire_agent_bin: Path
) -> dict[str, Scraped]:
    return {
        "spire": _scenario(tmp_path_factory.mktemp("spire"), spire_server_bin, spire_agent_bin),
        "pyspire": _scenario(tmp_path_factory.mktemp("pyspire"), None, None),
    }


@pytest.mark.parametrize("daemon", ["server", "agent"])
def test_every_name_pyspire_shares_with_spire_is_exported_after_the_same_scenario(
    scraped: dict[str, Scraped], daemon: str
) -> None:
    # go-metrics' runtime.* describe the Go runtime (docs/metrics.md): left out of the count.
    go_runtime = f"spire_{daemon}_runtime_"
    spire = frozenset(name for name in getattr(scraped["spire"], daemon) if not name.startswith(go_runtime))
    pyspire: frozenset[str] = getattr(scraped["pyspire"], daemon)
    shared = spire & pyspire
    print(f"{daemon}: pyspire exports {len(shared)} of the {len(spire)} names SPIRE exported")
    missing_but_claimed = (spire - pyspire) & _claimed(daemon)
    assert missing_but_claimed <= CALLED_ONLY_BY_SPIRE, (
        f"the catalog says these are SPIRE's names too, yet the {daemon} did not export them: "
        f"{sorted(missing_but_claimed - CALLED_ONLY_BY_SPIRE)}"
    )
    # The scenario is the same: most of what SPIRE reported, pyspire reports under the same name.
    assert len(shared) >= 0.75 * len(spire), sorted(spire - pyspire)


@pytest.mark.parametrize("daemon", ["server", "agent"])
def test_what_pyspire_exports_under_spires_prefix_is_in_its_catalog(scraped: dict[str, Scraped], daemon: str) -> None:
    pyspire: frozenset[str] = getattr(scraped["pyspire"], daemon)
    service = f"spire_{daemon}"
    listed = {name for info in _catalog(daemon) for name in prometheus_names(info, service)}
    assert sorted(pyspire - listed) == []
