"""The agent's own identity: node attestation, renewal and what survives a restart.

On start the agent reuses the SVID it saved in ``data_dir/agent-data.json`` when the key it
belongs to is still in the KeyManager and it has not expired, so a restart does not attest
again (a join token can only be used once). Otherwise it attests: a new key in the
KeyManager (``agent-svid-A``/``agent-svid-B`` alternate, so the old key stays usable until
the new SVID is in hand), a CSR, the NodeAttestor's evidence, and the challenges of the
server's plugin answered by the agent's. The bundle the server returns afterwards replaces
the bootstrap bundle, and is saved too.

A save that fails (``data_dir`` full, read-only) does not stop the agent, which goes on with
the SVID it holds: the error is logged, readiness says so (``agent_svid_saved``), and the save
is tried again at every sync until it succeeds. Otherwise a restart would find the previous,
soon expired, SVID, and an agent attested by join token could not come back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire.agent.client import ServerClient, ServerUnavailable, UnusableAnswer
from pyspire.config.sections import AgentSection
from pyspire.crypto import KeyManagerSigner, build_csr
from pyspire.files import atomic_write
from pyspire.plugin.catalog import AgentCatalog
from pyspire.plugin.errors import PluginError, Unavailable
from pyspire.plugin.keys import KeyType
from pyspire.spiffe import SpiffeId, X509SvidError
from pyspire.spiffe.pem import der_certificate
from pyspire.spiffe.x509svid import leaf_spiffe_id
from pyspire.telemetry.metrics import NO_METRICS, Metrics
from pyspire.telemetry.tracing import start_span

__all__ = ["AgentIdentity", "NodeError", "NodeIdentityManager"]

_log = logging.getLogger(__name__)

STATE_FILE = "agent-data.json"
_KEY_IDS = ("agent-svid-A", "agent-svid-B")


class NodeError(Exception):
    """The agent cannot obtain an identity and must stop (the message says why and what to do)."""


@dataclass(frozen=True)
class AgentIdentity:
    """The agent SVID, its key's ID in the KeyManager, and whether the node may re-attest."""

    chain: tuple[x509.Certificate, ...]
    key_id: str
    reattestable: bool

    @property
    def spiffe_id(self) -> SpiffeId:
        return leaf_spiffe_id(self.chain[0])

    @property
    def not_before(self) -> datetime:
        return self.chain[0].not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        return self.chain[0].not_valid_after_utc


class NodeIdentityManager:
    """Obtains, renews and persists the agent's identity."""

    def __init__(
        self, section: AgentSection, catalog: AgentCatalog, client: ServerClient, metrics: Metrics = NO_METRICS
    ) -> None:
        """Attest with ``catalog``'s NodeAttestor through ``client``."""
        self._metrics = metrics
        self._section = section
        self._catalog = catalog
        self._client = client
        self._state_path = Path(section.data_dir) / STATE_FILE
        self.identity: AgentIdentity | None = None
        self.roots: tuple[x509.Certificate, ...] = ()
        self.saved = True
        """Whether ``data_dir`` holds the identity and bundle in use (False after a failed save)."""

    # --- persistence ----------------------------------------------------------------

    def load(self) -> bool:
        """Reload a saved identity and bundle; False when there is no identity that can be used.

        The bundle is reloaded even without an identity (a banned or evicted agent keeps it, as
        SPIRE's does): an agent restarted with new attestation data still trusts the server it
        knew, not whatever its bootstrap settings would accept now.
        """
        try:
            data = json.loads(self._state_path.read_text())
            roots = tuple(der_certificate(base64.b64decode(c)) for c in data["bundle"])
            identity = None
            if data.get("svid"):
                chain = tuple(der_certificate(base64.b64decode(c)) for c in data["svid"])
                identity = AgentIdentity(chain, str(data["key_id"]), bool(data["reattestable"]))
        except FileNotFoundError:
            return False
        except (ValueError, KeyError, TypeError) as err:
            _log.warning("Ignoring unreadable agent state", extra={"path": str(self._state_path), "error": str(err)})
            return False
        if roots:
            self.roots = roots
        if identity is None:
            return False
        if identity.not_after <= datetime.now(UTC):
            _log.info("Saved agent SVID has expired; attesting again", extra={"expired_at": str(identity.not_after)})
            return False
        key = self._catalog.key_manager.get_public_key(identity.key_id)
        if key is None:
            _log.info("The saved agent SVID's key is gone from the KeyManager; attesting again")
            return False
        certified = (
            identity.chain[0]
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        if key.der != certified:
            # Renewed (with this key ID) since that SVID was saved, and the newer one was not.
            _log.info("The saved agent SVID is not for the KeyManager's key; attesting again")
            return False
        self.identity = identity
        self._present(identity)
        _log.info("Loaded the saved agent SVID", extra={"spiffe_id": str(identity.spiffe_id)})
        return True

    def save(self) -> bool:
        """Write the identity (if any) and bundle (0600, atomically); False (logged) when it cannot be written."""
        data: dict[str, Any] = {"svid": None, "bundle": [_b64(c) for c in self.roots]}
        if self.identity is not None:
            data.update(
                svid=[_b64(c) for c in self.identity.chain],
                key_id=self.identity.key_id,
                reattestable=self.identity.reattestable,
            )
        elif not self.roots:
            return True
        try:
            atomic_write(self._state_path, json.dumps(data, indent=1).encode())
        except OSError as err:
            self.saved = False
            _log.error(
                "Cannot save the agent SVID; trying again at every sync (a restart now would find the previous one)",
                extra={"path": str(self._state_path), "error": err.strerror or str(err)},
            )
            return False
        if not self.saved:
            _log.info("Agent SVID saved", extra={"path": str(self._state_path)})
        self.saved = True
        return True

    def forget(self) -> None:
        """Delete the saved SVID (a banned agent must not keep it); the server's bundle stays, as in SPIRE."""
        self.identity = None
        self._client.set_identity((), None)
        if not self.roots or not self.save():
            self._state_path.unlink(missing_ok=True)  # whatever happens, the SVID is not left behind

    def set_roots(self, roots: tuple[x509.Certificate, ...]) -> None:
        """Trust ``roots`` for the server from now on (the latest bundle from the server)."""
        if roots and roots != self.roots:
            self.roots = roots
            self._client.set_roots(roots)
            self.save()

    # --- attestation and renewal ----------------------------------------------------

    def _next_key_id(self) -> str:
        if self.identity is None:
            return _KEY_IDS[0]
        return _KEY_IDS[1] if self.identity.key_id == _KEY_IDS[0] else _KEY_IDS[0]

    async def _new_csr(self, key_id: str) -> bytes:
        key_manager = self._catalog.key_manager
        public_key = await asyncio.to_thread(key_manager.generate_key, key_id, KeyType.EC_P256)
        signer = KeyManagerSigner(key_manager, public_key)
        return await asyncio.to_thread(build_csr, signer)

    def _payload(self) -> tuple[str, bytes]:
        attestor = self._catalog.node_attestor
        if attestor.name == "join_token":
            token = self._section.join_token
            if not token and self._section.join_token_file:
                try:
                    token = Path(self._section.join_token_file).read_text().strip()
                except OSError as err:
                    raise NodeError(f"cannot read join_token_file {self._section.join_token_file}: {err}") from None
            if not token:
                raise NodeError(
                    "the agent has no saved SVID and no join token: generate one with "
                    "`pyspire-server token generate` and pass it with -joinToken"
                )
            return "join_token", token.encode()
        try:
            return attestor.name, attestor.payload()
        except Unavailable as err:
            raise ServerUnavailable(f"nodeattestor({attestor.name}) cannot gather evidence yet: {err}") from None
        except PluginError as err:
            raise NodeError(f"nodeattestor({attestor.name}) failed: {err}") from None

    async def attest(self, *, reattest: bool = False) -> AgentIdentity:
        """Attest the node (again, to renew, when ``reattest``) and adopt the SVID the server issues."""
        key = ("node", "attest") if reattest else ("node", "attestor", "new_svid")
        with self._metrics.call(*key), start_span("agent.node_attestation") as span:
            identity = await self._attest()
            span.set_attribute("pyspire.spiffe_id", str(identity.spiffe_id))
        return identity

    async def _attest(self) -> AgentIdentity:
        attestation_type, payload = await asyncio.to_thread(self._payload)
        key_id = self._next_key_id()
        csr = await self._new_csr(key_id)
        attestor = self._catalog.node_attestor

        async def answer(challenge: bytes) -> bytes:
            try:
                return await asyncio.to_thread(attestor.answer_challenge, challenge)
            except PluginError as err:
                raise NodeError(f"nodeattestor({attestor.name}) could not answer the challenge: {err}") from None

        self._client.set_identity((), None)
        try:
            chain, reattestable = await self._client.attest(attestation_type, payload, csr, answer)
        except BaseException as err:
            # A failed attempt (the attestor's backend briefly down, say) leaves the SVID in hand
            # presented: without it every later call went out anonymous, was refused for want of
            # an SVID, and the agent never attested again.
            if self.identity is not None:
                self._present(self.identity)
            if isinstance(err, UnusableAnswer):
                raise NodeError(str(err)) from None
            raise
        identity = self._adopt(chain, key_id, reattestable)
        _log.info(
            "Node attestation was successful",
            extra={"spiffe_id": str(identity.spiffe_id), "reattestable": reattestable},
        )
        return identity

    async def renew(self) -> AgentIdentity:
        """RenewAgent with a fresh key."""
        if self.identity is None:
            raise NodeError("cannot renew: the agent has no SVID")
        with self._metrics.call("agent_svid", "rotate"), start_span("agent.rotate_agent_svid"):
            _log.debug("Rotating agent SVID")
            key_id = self._next_key_id()
            csr = await self._new_csr(key_id)
            try:
                chain = await self._client.renew(csr)
            except UnusableAnswer as err:
                raise NodeError(str(err)) from None
            identity = self._adopt(chain, key_id, self.identity.reattestable)
        _log.info(
            "Agent SVID renewed", extra={"spiffe_id": str(identity.spiffe_id), "expiration": str(identity.not_after)}
        )
        return identity

    def _adopt(self, chain: tuple[x509.Certificate, ...], key_id: str, reattestable: bool) -> AgentIdentity:
        try:
            leaf_spiffe_id(chain[0])
        except X509SvidError as err:
            raise NodeError(f"the server returned an unusable agent SVID: {err}") from None
        identity = AgentIdentity(chain, key_id, reattestable)
        self.identity = identity
        self._present(identity)
        self.save()
        return identity

    def _present(self, identity: AgentIdentity) -> None:
        self._client.set_identity(identity.chain, self.private_key(identity.key_id))

    def private_key(self, key_id: str) -> PrivateKeyTypes:
        """The agent SVID key, exported from the KeyManager for Python's TLS stack."""
        der = self._catalog.key_manager.export_private_key(key_id)
        return serialization.load_der_private_key(der, password=None)


def _b64(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()
