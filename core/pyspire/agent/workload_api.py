"""The SPIFFE Workload API, served on the agent's Unix socket.

Who is calling is read from the accepted socket (SO_PEERCRED), never from the request. The
caller's selectors are the union of what every WorkloadAttestor says about its PID; a failing
attestor fails the call (UNAVAILABLE) rather than serving an identity chosen on partial facts.
After attestation the process is checked again (same PID, same start time, same owner), so a
process that exited and whose PID was reused cannot receive the first one's identity.

Streams answer at once, push a full replacement whenever the cache changes, and end with
UNAVAILABLE (never OK) when the agent shuts down. As SPIRE does, a caller that matches no
entry gets PERMISSION_DENIED "no identity issued"; one that matches entries whose SVIDs are
still being minted waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import struct_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import CachedJwtSvid, WorkloadCache, WorkloadEntry, WorkloadIdentity
from pyspire.agent.client import ServerClient, ServerUnavailable
from pyspire.plugin.errors import PluginError
from pyspire.plugin.facades import WorkloadAttestor
from pyspire.plugin.selectors import Selector
from pyspire.proto.spiffe.workload import workload_pb2 as pb
from pyspire.proto.spiffe.workload.service import SpiffeWorkloadAPIBase
from pyspire.spiffe import Bundle, BundleSet, JwtSvid, JwtSvidError, SpiffeId, SpiffeIdError
from pyspire.transport import ProcessIdentity, peer_credentials

__all__ = ["SECURITY_HEADER", "WorkloadApiService"]

_log = logging.getLogger(__name__)

SECURITY_HEADER = "workload.spiffe.io"


def _der_chain(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certificates)


class WorkloadApiService(SpiffeWorkloadAPIBase):
    """The seven Workload API methods over the agent's cache."""

    def __init__(self, cache: WorkloadCache, attestors: Sequence[WorkloadAttestor], client: ServerClient) -> None:
        """Serve ``cache`` to callers attested by ``attestors``; JWT-SVIDs are minted through ``client``."""
        self._cache = cache
        self._attestors = tuple(attestors)
        self._client = client
        self._stopping = asyncio.Event()
        self._streams = 0
        self._drained = asyncio.Event()
        self._drained.set()

    async def stop(self, timeout: float = 5.0) -> None:
        """End every open stream with UNAVAILABLE, and wait (up to ``timeout``) until they have."""
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)

    @contextlib.contextmanager
    def _open_stream(self, selectors: frozenset[Selector]) -> Iterator[None]:
        self._streams += 1
        self._drained.clear()
        try:
            with self._cache.subscription(selectors):
                yield
        finally:
            self._streams -= 1
            if not self._streams:
                self._drained.set()

    # --- the caller ------------------------------------------------------------------

    async def _attest(self, stream: Any) -> frozenset[Selector]:
        metadata = stream.metadata
        values = metadata.getall(SECURITY_HEADER, []) if metadata is not None else []
        if values != ["true"]:
            # Exactly one header with exactly "true": a repeated or differently spelt header is
            # a client that is not following the standard, and gets nothing.
            raise GRPCError(Status.INVALID_ARGUMENT, "security header missing from request")
        credentials = peer_credentials(stream)
        process = ProcessIdentity.of(credentials) if credentials is not None else None
        if process is None:
            raise GRPCError(Status.UNAUTHENTICATED, "unable to determine the calling process")
        selectors: set[Selector] = set()
        for attestor in self._attestors:
            try:
                selectors.update(await asyncio.to_thread(attestor.attest, process.pid))
            except PluginError as err:
                _log.error(
                    "Workload attestor failed", extra={"attestor": attestor.name, "pid": process.pid, "error": str(err)}
                )
                raise GRPCError(
                    Status.UNAVAILABLE, f"workload attestor {attestor.name!r} failed: {err.message}"
                ) from None
        if not process.still_running():
            raise GRPCError(
                Status.PERMISSION_DENIED, "the calling process exited or was replaced while it was being attested"
            )
        return frozenset(selectors)

    async def _next(self, generation: int) -> int:
        change = asyncio.ensure_future(self._cache.wait_for_change(generation))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({change, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            change.cancel()
            stopping.cancel()
        if self._stopping.is_set():
            raise GRPCError(Status.UNAVAILABLE, "the agent is shutting down")
        return self._cache.generation

    async def _identities(self, selectors: frozenset[Selector]) -> tuple[list[WorkloadIdentity], int]:
        """The caller's identities, waiting while matched entries still lack SVIDs."""
        generation = self._cache.generation
        while True:
            identities = self._cache.identities(selectors)
            if identities:
                return identities, generation
            if not self._cache.matching(selectors):
                raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
            generation = await self._next(generation)

    def _stream_loop_guard(self) -> None:
        if self._stopping.is_set():
            raise GRPCError(Status.UNAVAILABLE, "the agent is shutting down")

    # --- X.509 -----------------------------------------------------------------------

    def _x509_response(self, identities: list[WorkloadIdentity]) -> pb.X509SVIDResponse:
        bundle = self._cache.bundle
        own = _der_chain(bundle.x509_authorities) if bundle else b""
        response = pb.X509SVIDResponse()
        hints: set[str] = set()
        for identity in identities:
            hint = identity.entry.hint
            if hint:
                if hint in hints:
                    continue
                hints.add(hint)
            response.svids.append(
                pb.X509SVID(
                    spiffe_id=str(identity.entry.spiffe_id),
                    x509_svid=_der_chain(identity.svid.chain),
                    x509_svid_key=identity.svid.private_key_der,
                    bundle=own,
                    hint=hint,
                )
            )
        for trust_domain, federated in self._cache.federated_bundles(i.entry for i in identities).items():
            response.federated_bundles[trust_domain.id_string()] = _der_chain(federated.x509_authorities)
        return response

    async def FetchX509SVID(self, stream: Any) -> None:
        await stream.recv_message()
        selectors = await self._attest(stream)
        last: pb.X509SVIDResponse | None = None
        with self._open_stream(selectors):
            while True:
                self._stream_loop_guard()
                identities, generation = await self._identities(selectors)
                response = self._x509_response(identities)
                if response != last:
                    await stream.send_message(response)
                    last = response
                await self._next(generation)

    def _bundles_for(self, selectors: frozenset[Selector]) -> dict[str, Bundle]:
        entries = self._cache.matching(selectors)
        if not entries or self._cache.bundle is None:
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        bundles = {self._cache.bundle.trust_domain.id_string(): self._cache.bundle}
        for trust_domain, bundle in self._cache.federated_bundles(entries).items():
            bundles[trust_domain.id_string()] = bundle
        return bundles

    async def FetchX509Bundles(self, stream: Any) -> None:
        await stream.recv_message()
        selectors = await self._attest(stream)
        await self._stream_bundles(
            stream,
            selectors,
            lambda bundles: pb.X509BundlesResponse(
                bundles={td: _der_chain(b.x509_authorities) for td, b in bundles.items()}
            ),
        )

    async def FetchJWTBundles(self, stream: Any) -> None:
        await stream.recv_message()
        selectors = await self._attest(stream)
        await self._stream_bundles(
            stream,
            selectors,
            lambda bundles: pb.JWTBundlesResponse(bundles={td: b.marshal_jwks() for td, b in bundles.items()}),
        )

    async def _stream_bundles(self, stream: Any, selectors: frozenset[Selector], build: Any) -> None:
        last = None
        with self._open_stream(selectors):
            while True:
                generation = self._cache.generation
                response = build(self._bundles_for(selectors))
                if response != last:
                    await stream.send_message(response)
                    last = response
                await self._next(generation)

    # --- JWT -------------------------------------------------------------------------

    async def FetchJWTSVID(self, stream: Any) -> None:
        request = await stream.recv_message()
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        wanted: SpiffeId | None = None
        if request.spiffe_id:
            try:
                wanted = SpiffeId.parse(request.spiffe_id)
            except SpiffeIdError as err:
                raise GRPCError(Status.INVALID_ARGUMENT, f"invalid requested SPIFFE ID: {err}") from None
        selectors = await self._attest(stream)
        entries = self._cache.matching(selectors)
        if wanted is not None:
            entries = [e for e in entries if e.spiffe_id == wanted]
        if not entries:
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        audience = tuple(request.audience)
        response = pb.JWTSVIDResponse()
        hints: set[str] = set()
        for entry in entries:
            if entry.hint:
                if entry.hint in hints:
                    continue
                hints.add(entry.hint)
            token = await self._jwt_svid(entry, audience)
            response.svids.append(pb.JWTSVID(spiffe_id=str(entry.spiffe_id), svid=token, hint=entry.hint))
        await stream.send_message(response)

    async def _jwt_svid(self, entry: WorkloadEntry, audience: tuple[str, ...]) -> str:
        cached = self._cache.cached_jwt(entry.spiffe_id, audience)
        if cached is not None:
            return cached.token
        try:
            svid = await self._client.new_jwt_svid(entry.id, audience)
        except ServerUnavailable as err:
            raise GRPCError(Status.UNAVAILABLE, f"could not mint a JWT-SVID: {err}") from None
        except GRPCError as err:
            raise GRPCError(err.status, f"could not mint a JWT-SVID: {err.message}") from None
        self._cache.put_jwt(
            entry.spiffe_id,
            audience,
            CachedJwtSvid(
                svid.token,
                datetime.fromtimestamp(svid.issued_at, UTC),
                datetime.fromtimestamp(svid.expires_at, UTC),
            ),
        )
        return str(svid.token)

    async def ValidateJWTSVID(self, stream: Any) -> None:
        request = await stream.recv_message()
        if not request.audience:
            raise GRPCError(Status.INVALID_ARGUMENT, "audience must be specified")
        if not request.svid:
            raise GRPCError(Status.INVALID_ARGUMENT, "svid must be specified")
        await self._attest(stream)
        bundles = BundleSet(self._cache.federated.values())
        if self._cache.bundle is not None:
            bundles.put(self._cache.bundle)
        try:
            svid = JwtSvid.parse_and_validate(request.svid, bundles, [request.audience])
        except JwtSvidError as err:
            raise GRPCError(Status.INVALID_ARGUMENT, str(err)) from None
        claims = struct_pb2.Struct()
        claims.update(dict(svid.claims))
        await stream.send_message(pb.ValidateJWTSVIDResponse(spiffe_id=str(svid.spiffe_id), claims=claims))

    # --- not offered -----------------------------------------------------------------

    async def FetchWITSVID(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "WIT-SVIDs are not supported")

    async def FetchWITBundles(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "WIT-SVIDs are not supported")
