"""What the SVIDStore plugins' end-to-end tests share: an agent with a store, stored entries, SPIRE's document.

An SVIDStore keeps, for each entry created with ``-storeSVID``, SPIRE's JSON document
(``spiffeID``, ``x509SVID``, ``x509SVIDKey``, ``bundle``, ``federatedBundles``) wherever the
plugin keeps secrets; each plugin's tests read it back through the cloud's own client and check
it here the same way.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyspire.spiffe import Bundle, BundleSet, SpiffeId, TrustDomain, X509Svid, verify_x509_svid

from tests.support.daemons import AgentDaemon, ServerDaemon, agent_config


class StoringAgent(AgentDaemon):
    """An agent whose config holds the SVIDStore block ``store``, attested by join token as ``alias``."""

    alias: str
    store: str


def storing_agent(
    directory: Path, server: ServerDaemon, store: str, env: Mapping[str, str] | None = None
) -> StoringAgent:
    """An agent of ``server`` with the SVIDStore block ``store``, not started."""
    text, socket_path = agent_config(directory, server)
    text = text.replace("plugins {", f"plugins {{\n    {store}", 1)
    alias = f"spiffe://example.org/node/{uuid.uuid4()}"
    agent = StoringAgent(
        "pyspire-agent", directory, socket_path, text, ["-joinToken", server.join_token(alias)], env=env or {}
    )
    agent.alias = alias
    agent.store = store
    return agent


def create_stored(server: ServerDaemon, agent: StoringAgent, spiffe_id: str, selectors: list[str], ttl: int = 0) -> str:
    """A ``-storeSVID`` entry under ``agent`` with ``selectors`` (``type:value``); its entry ID."""
    args = ["entry", "create", "-parentID", agent.alias, "-spiffeID", spiffe_id, "-storeSVID"]
    for selector in selectors:
        args += ["-selector", selector]
    if ttl:
        args += ["-x509SVIDTTL", str(ttl)]
    return server.cli(*args).stdout.split("Entry ID         : ", 1)[1].split()[0]


def svid_of(document: dict[str, Any]) -> X509Svid:
    return X509Svid.parse(document["x509SVID"].encode(), document["x509SVIDKey"].encode())


def bundles_of(document: dict[str, Any]) -> dict[TrustDomain, Bundle]:
    """The trust domain's bundle (named by the SVID's SPIFFE ID) and the federated ones."""
    own = SpiffeId.parse(document["spiffeID"]).trust_domain
    bundles = {own: Bundle.parse_x509(own, document["bundle"].encode())}
    for name, pem in document.get("federatedBundles", {}).items():
        trust_domain = TrustDomain.parse(name.removeprefix("spiffe://"))
        bundles[trust_domain] = Bundle.parse_x509(trust_domain, pem.encode())
    return bundles


def check_document(document: dict[str, Any], server: ServerDaemon, spiffe_id: str) -> X509Svid:
    """The document's SVID, checked: ``spiffe_id``'s, chaining to ``server``'s bundle, the only one held."""
    assert document["spiffeID"] == spiffe_id
    svid = svid_of(document)
    bundles = bundles_of(document)
    own = SpiffeId.parse(spiffe_id).trust_domain
    assert list(bundles) == [own]
    assert bundles[own].x509_authorities == Bundle.parse_x509(own, server.bundle_pem().encode()).x509_authorities
    # Checked at a moment inside its life: on a loaded machine the first document read can hold an
    # SVID of a few seconds already past its end, which is a rotation to come, not a fault.
    inside = svid.leaf.not_valid_before_utc + timedelta(seconds=1)
    verified_id, _ = verify_x509_svid(list(svid.chain), BundleSet(list(bundles.values())), now=inside)
    assert str(verified_id) == spiffe_id
    return svid


def refused_start(agent: StoringAgent, directory: Path, store: str) -> str:
    """Start ``agent``'s config with ``store`` in its place, in ``directory``: the last line it logged.

    The agent must stop with an error, never serve the Workload API and never obtain an SVID.
    """
    shutil.copy(agent.directory / "bootstrap.pem", directory / "bootstrap.pem")
    text = agent.config_text.replace(str(agent.directory), str(directory)).replace(agent.store, store)
    refused = AgentDaemon("pyspire-agent", directory, directory / "public" / "api.sock", text, env=agent.env)
    refused.start(wait=False)
    assert refused.process is not None
    assert refused.process.wait(30) != 0
    assert not (directory / "public" / "api.sock").exists()
    assert not (directory / "data" / "agent-data.json").exists(), "no SVID was ever obtained"
    return refused.log().splitlines()[-1]
