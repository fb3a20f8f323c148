"""The agent's connection to the server: one TLS channel, the calls the agent makes.

Every connection verifies the server's chain against the agent's current bundle and requires
the server's SPIFFE ID (``spiffe://<td>/spire/server``) before a request is written. After
attestation the agent presents its SVID; the channel is rebuilt whenever the SVID or the
bundle changes, so a rotated server CA or a renewed agent SVID takes effect on the next call.
With several servers (on one datastore) a call that cannot reach one goes to the next. When
none answers the failure surfaces as :class:`ServerUnavailable` (the caller backs off and
retries), or :class:`ServerNotTrusted` when every server answered but none proved it is the
trust domain's server (a bundle or trust domain that does not match: a misconfiguration); the
server's refusals stay :class:`grpclib.exceptions.GRPCError`, also when a streaming call ends
with one after messages were exchanged (a refusal after a challenge).

What the server answers comes back as pyspire's types (certificate chains, :class:`Bundle`,
:class:`~pyspire.agent.cache.WorkloadEntry`, :class:`~pyspire.agent.cache.CachedJwtSvid`): the
API's messages stay in this module. An answer that cannot be read is :class:`UnusableAnswer`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from grpclib.const import Status
from grpclib.events import SendRequest, listen
from grpclib.exceptions import GRPCError, StreamTerminatedError

from pyspire import spire_ids
from pyspire.agent.cache import CachedJwtSvid, WorkloadEntry
from pyspire.bundle_messages import bundle_from_proto, tainted_jwt_key_ids, tainted_key_ids
from pyspire.plugin.selectors import Selector
from pyspire.proto.spire.api.server.agent.v1 import agent_grpc, agent_pb2
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.server.entry.v1 import entry_grpc, entry_pb2
from pyspire.proto.spire.api.server.svid.v1 import svid_grpc, svid_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.spiffe import Bundle, BundleError, SpiffeId, SpiffeIdError, TrustDomain, match_id
from pyspire.spiffe.pem import der_certificate
from pyspire.telemetry.tracing import inject_context
from pyspire.transport import ServerIdentityError, SpiffeChannel, client_tls_context

__all__ = [
    "CALL_TIMEOUT",
    "AttestationAnswer",
    "RateLimited",
    "ServerClient",
    "ServerNotTrusted",
    "ServerUnavailable",
    "UnusableAnswer",
]

_log = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0
T = TypeVar("T")

AttestationAnswer = Callable[[bytes], Awaitable[bytes]]
"""Answers one server challenge during node attestation."""

_UNAVAILABLE = (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED)
"""Statuses worth retrying later: the server is down or slow."""

_OUTSIDE_VALIDITY = (9, 10)
"""OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID and X509_V_ERR_CERT_HAS_EXPIRED: the chain is the
right one, read on a clock it does not fit."""


class ServerUnavailable(Exception):
    """The server could not be reached (or did not answer); the call may be retried."""


class RateLimited(ServerUnavailable):
    """The server refused the call under its per-address rate limit: retry within a second."""


class ServerNotTrusted(ServerUnavailable):
    """Every server answered, and none proved it is the trust domain's server.

    ``untrusted_chain`` says a server's certificate did not chain to the agent's bundle,
    ``wrong_identity`` that a server's chain verified but named another SPIFFE ID (another
    trust domain's server), ``out_of_time`` that a certificate of the chain was not valid at
    this host's time (not yet, or no longer: a clock off, more often than a lapsed server).
    Each is a misconfiguration more often than an attack.
    """

    def __init__(self, message: str, *, untrusted_chain: bool, wrong_identity: bool, out_of_time: bool = False) -> None:
        super().__init__(message)
        self.untrusted_chain = untrusted_chain
        self.wrong_identity = wrong_identity
        self.out_of_time = out_of_time


class UnusableAnswer(ValueError):
    """The server answered with something the agent cannot use (a certificate that does not parse)."""


def _chain(svid: types_pb2.X509SVID, what: str) -> tuple[x509.Certificate, ...]:
    try:
        chain = tuple(der_certificate(der) for der in svid.cert_chain)
    except ValueError as err:
        raise UnusableAnswer(f"the server returned an unusable {what}: {err}") from None
    if not chain:
        raise UnusableAnswer(f"the server returned an unusable {what}: it holds no certificate")
    return chain


def _entry(proto: types_pb2.Entry) -> WorkloadEntry:
    """An authorized entry; UnusableAnswer when its IDs cannot be read."""
    try:
        return WorkloadEntry(
            id=proto.id,
            spiffe_id=SpiffeId.from_path(TrustDomain.parse(proto.spiffe_id.trust_domain), proto.spiffe_id.path),
            parent_id=SpiffeId.from_path(TrustDomain.parse(proto.parent_id.trust_domain), proto.parent_id.path),
            selectors=frozenset(Selector(s.type, s.value) for s in proto.selectors),
            federates_with=tuple(TrustDomain.parse(td) for td in proto.federates_with),
            hint=proto.hint,
            revision=proto.revision_number,
            created_at=proto.created_at,
            store_svid=proto.store_svid,
            admin=proto.admin,
            downstream=proto.downstream,
        )
    except SpiffeIdError as err:
        raise UnusableAnswer(f"entry {proto.id}: {err}") from None


def _usable_entries(protos: Sequence[types_pb2.Entry]) -> list[WorkloadEntry]:
    entries = []
    for proto in protos:
        try:
            entries.append(_entry(proto))
        except UnusableAnswer as err:
            _log.warning("Ignoring an entry the agent cannot use", extra={"error": str(err)})
    return entries


@dataclass(frozen=True)
class _Credentials:
    roots: tuple[bytes, ...]
    chain: tuple[bytes, ...]


async def _send_trace_context(event: SendRequest) -> None:
    """Carry the current span to the server (``traceparent``), so its spans join the agent's trace."""
    inject_context(event.metadata)


class ServerClient:
    """Calls the server on behalf of the agent."""

    def __init__(self, servers: Sequence[tuple[str, int]], trust_domain: TrustDomain) -> None:
        """Talk to one of ``servers`` (host, port), which must prove it is ``trust_domain``'s server."""
        if not servers:
            raise ValueError("at least one server address is needed")
        self._servers = tuple(servers)
        self._server = 0
        self._server_id = spire_ids.server_id(trust_domain)
        self._roots: tuple[x509.Certificate, ...] = ()
        self._chain: tuple[x509.Certificate, ...] = ()
        self._key: PrivateKeyTypes | None = None
        self._verify = True
        self._channel: SpiffeChannel | None = None
        self._channel_for: _Credentials | None = None

    def set_roots(self, roots: Sequence[x509.Certificate], *, verify: bool = True) -> None:
        """Trust ``roots`` for the server's chain (``verify=False`` only for insecure bootstrap)."""
        self._roots = tuple(roots)
        self._verify = verify

    def set_identity(self, chain: Sequence[x509.Certificate], private_key: PrivateKeyTypes | None) -> None:
        """Present ``chain`` (the agent SVID) from now on; an empty chain presents nothing."""
        self._chain = tuple(chain)
        self._key = private_key

    def _current(self) -> SpiffeChannel:
        wanted = _Credentials(
            tuple(c.tbs_certificate_bytes for c in self._roots), tuple(c.tbs_certificate_bytes for c in self._chain)
        )
        if self._channel is None or self._channel_for != wanted:
            if self._channel is not None:
                self._channel.close()
            context = client_tls_context(self._roots, self._chain, self._key)
            if not self._verify:
                context.verify_mode = ssl.CERT_NONE
            host, port = self.server
            self._channel = SpiffeChannel(host, port, ssl_context=context, server_id=match_id(self._server_id))
            listen(self._channel, SendRequest, _send_trace_context)
            self._channel_for = wanted
        return self._channel

    def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._channel_for = None

    @property
    def server(self) -> tuple[str, int]:
        """The server (host, port) the agent is talking to now."""
        return self._servers[self._server]

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        """Make ``call`` on the current server; when it cannot be reached, on each other one in turn.

        The agent stays with the server that answered. Only when none answers is the call
        :class:`ServerUnavailable` (its message lists every server's failure).
        """
        failures = []
        untrusted_chain = wrong_identity = out_of_time = unreachable = False
        for _ in self._servers:
            host, port = self.server
            try:
                return await call()
            except GRPCError as err:
                if err.status is Status.RESOURCE_EXHAUSTED:
                    raise RateLimited(f"server {host}:{port}: {err.message}") from None
                if err.status not in _UNAVAILABLE:
                    raise
                unreachable = True
                failures.append(f"server {host}:{port}: {err.message}")
            except ServerIdentityError as err:
                wrong_identity = True
                failures.append(
                    f"server {host}:{port} is not the server of trust domain {self._server_id.trust_domain.name}: {err}"
                )
            except ssl.SSLCertVerificationError as err:
                if err.verify_code in _OUTSIDE_VALIDITY:
                    out_of_time = True
                    failures.append(
                        f"server {host}:{port} presented a certificate that is not valid at this host's time "
                        f"({datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}): {err.verify_message}"
                    )
                else:
                    untrusted_chain = True
                    failures.append(
                        f"server {host}:{port} presented a certificate that does not chain to the agent's "
                        f"trust bundle: {err.verify_message}"
                    )
            except (TimeoutError, OSError, StreamTerminatedError) as err:
                unreachable = True
                failures.append(f"server {host}:{port} unreachable: {err or type(err).__name__}")
            self.close()
            self._server = (self._server + 1) % len(self._servers)
            if len(self._servers) > 1:
                _log.warning("Server call failed; trying the next server", extra={"error": failures[-1]})
        if not unreachable:
            raise ServerNotTrusted(
                "; ".join(failures),
                untrusted_chain=untrusted_chain,
                wrong_identity=wrong_identity,
                out_of_time=out_of_time,
            )
        raise ServerUnavailable("; ".join(failures))

    # --- node attestation -----------------------------------------------------------

    async def attest(
        self, attestation_type: str, payload: bytes, csr: bytes, answer: AttestationAnswer
    ) -> tuple[tuple[x509.Certificate, ...], bool]:
        """Run AttestAgent: the agent SVID's chain and whether the node may re-attest."""
        svid, reattestable = await self._guard(lambda: self._attest(attestation_type, payload, csr, answer))
        return _chain(svid, "agent SVID"), reattestable

    async def _attest(
        self, attestation_type: str, payload: bytes, csr: bytes, answer: AttestationAnswer
    ) -> tuple[types_pb2.X509SVID, bool]:
        stub = agent_grpc.AgentStub(self._current())
        params = agent_pb2.AttestAgentRequest.Params(
            data=types_pb2.AttestationData(type=attestation_type, payload=payload),
            params=agent_pb2.AgentX509SVIDParams(csr=csr),
        )
        async with stub.AttestAgent.open(timeout=CALL_TIMEOUT * 4) as stream:
            await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
            while True:
                reply: Any = await stream.recv_message()
                if reply is None:
                    await _raise_server_status(stream)
                if reply.WhichOneof("step") == "challenge":
                    response = await answer(bytes(reply.challenge))
                    await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=response))
                    continue
                await stream.end()
                return reply.result.svid, reply.result.reattestable

    async def renew(self, csr: bytes) -> tuple[x509.Certificate, ...]:
        """RenewAgent: a new agent SVID (its chain) for the key in ``csr``."""
        request = agent_pb2.RenewAgentRequest(params=agent_pb2.AgentX509SVIDParams(csr=csr))
        reply = await self._guard(
            lambda: agent_grpc.AgentStub(self._current()).RenewAgent(request, timeout=CALL_TIMEOUT)
        )
        return _chain(reply.svid, "agent SVID")

    # --- bundles, entries, SVIDs -----------------------------------------------------

    async def bundle(self) -> tuple[Bundle, frozenset[bytes], frozenset[str]]:
        """The server's own trust bundle, the subject key IDs of its tainted X.509 authorities
        and the key IDs of its tainted JWT authorities."""
        proto = await self._guard(
            lambda: bundle_grpc.BundleStub(self._current()).GetBundle(
                bundle_pb2.GetBundleRequest(), timeout=CALL_TIMEOUT
            )
        )
        try:
            return bundle_from_proto(proto), tainted_key_ids(proto), tainted_jwt_key_ids(proto)
        except (ValueError, BundleError) as err:
            raise UnusableAnswer(f"the server's bundle cannot be read: {err}") from None

    async def federated_bundle(self, trust_domain: str) -> Bundle | None:
        """A federated trust domain's bundle, or None when the server has none."""
        request = bundle_pb2.GetFederatedBundleRequest(trust_domain=trust_domain)
        try:
            proto = await self._guard(
                lambda: bundle_grpc.BundleStub(self._current()).GetFederatedBundle(request, timeout=CALL_TIMEOUT)
            )
        except GRPCError as err:
            if err.status is Status.NOT_FOUND:
                return None
            raise
        try:
            return bundle_from_proto(proto)
        except (ValueError, BundleError) as err:
            raise UnusableAnswer(f"the bundle of {trust_domain} cannot be read: {err}") from None

    async def authorized_entries(self) -> list[WorkloadEntry]:
        """GetAuthorizedEntries: every usable entry authorized for this agent, in full, in one answer."""

        async def call() -> list[WorkloadEntry]:
            stub = entry_grpc.EntryStub(self._current())
            reply = await stub.GetAuthorizedEntries(entry_pb2.GetAuthorizedEntriesRequest(), timeout=CALL_TIMEOUT * 4)
            return _usable_entries(list(reply.entries))

        return await self._guard(call)

    async def sync_entries(self, known: Mapping[str, WorkloadEntry]) -> list[WorkloadEntry]:
        """The full set of usable entries authorized for this agent (revision-diffed against ``known``).

        Entries the agent cannot use (IDs that do not parse) are logged and left out.
        """
        return await self._guard(lambda: self._sync_entries(known))

    async def _sync_entries(self, known: Mapping[str, WorkloadEntry]) -> list[WorkloadEntry]:
        stub = entry_grpc.EntryStub(self._current())
        async with stub.SyncAuthorizedEntries.open(timeout=CALL_TIMEOUT * 4) as stream:
            await stream.send_message(entry_pb2.SyncAuthorizedEntriesRequest())
            entries: list[types_pb2.Entry] = []
            revisions: list[Any] = []
            while True:
                reply: Any = await stream.recv_message()
                if reply is None:
                    break
                entries.extend(reply.entries)
                revisions.extend(reply.entry_revisions)
                if not reply.more:
                    break
            if not revisions:
                await stream.end()
                return _usable_entries(entries)
            wanted = [r.id for r in revisions if r.id not in known or known[r.id].revision != r.revision_number]
            kept = [known[r.id] for r in revisions if r.id in known and known[r.id].revision == r.revision_number]
            await stream.send_message(entry_pb2.SyncAuthorizedEntriesRequest(ids=wanted), end=True)
            fetched: list[types_pb2.Entry] = []
            while True:
                reply = await stream.recv_message()
                if reply is None:
                    break
                fetched.extend(reply.entries)
                if not reply.more:
                    break
            return kept + _usable_entries(fetched)

    async def new_x509_svids(
        self, requests: Sequence[tuple[str, bytes]]
    ) -> list[tuple[str, tuple[x509.Certificate, ...] | None, str]]:
        """BatchNewX509SVID: per entry ID, the SVID's chain (None when not issued) and the server's message."""
        request = svid_pb2.BatchNewX509SVIDRequest(
            params=[svid_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr) for entry_id, csr in requests]
        )
        reply = await self._guard(
            lambda: svid_grpc.SVIDStub(self._current()).BatchNewX509SVID(request, timeout=CALL_TIMEOUT)
        )
        results: list[tuple[str, tuple[x509.Certificate, ...] | None, str]] = []
        for (entry_id, _), result in zip(requests, reply.results, strict=False):
            if result.status.code != 0:
                results.append((entry_id, None, result.status.message))
                continue
            try:
                results.append((entry_id, _chain(result.svid, "X509-SVID"), result.status.message))
            except UnusableAnswer as err:
                results.append((entry_id, None, str(err)))
        return results

    async def new_jwt_svid(self, entry_id: str, audience: Sequence[str]) -> CachedJwtSvid:
        """NewJWTSVID for one entry: the token and its times."""
        request = svid_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=list(audience))
        reply = await self._guard(lambda: svid_grpc.SVIDStub(self._current()).NewJWTSVID(request, timeout=CALL_TIMEOUT))
        return CachedJwtSvid(
            str(reply.svid.token),
            datetime.fromtimestamp(reply.svid.issued_at, UTC),
            datetime.fromtimestamp(reply.svid.expires_at, UTC),
        )


async def _raise_server_status(stream: Any) -> None:
    """The server ended a stream without its result: raise the status it ended it with.

    A refusal that comes after messages were exchanged (after a challenge) arrives in the
    trailers, which grpclib reads only once the agent has ended its own side.
    """
    await stream.end()
    await stream.recv_trailing_metadata()  # raises GRPCError with the server's status and message
    raise GRPCError(Status.INTERNAL, "the server ended attestation without a result or an error")
