"""SPIRE's Bundle service: this trust domain's bundle and the federated bundles.

Reads are answered from the bundle cache; writes go to the datastore and the cache catches up
before the answer is sent.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.plugin.errors import AlreadyExists, FailedPrecondition, NotFound, PluginError
from pyspire.plugin.records import BundleDeleteMode, BundleRecord
from pyspire.plugin.upstream import JwtKey
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.convert import (
    InvalidInput,
    bundle_from_proto,
    bundle_to_proto,
    jwt_authorities_from_proto,
    x509_authorities_from_proto,
)
from pyspire.server.api.errors import status_message
from pyspire.server.api.unserved import unknown_method
from pyspire.server.context import ServerContext
from pyspire.spiffe import SpiffeIdError, TrustDomain

__all__ = ["BundleService"]

_log = logging.getLogger(__name__)

_SERVICE = "/spire.api.server.bundle.v1.Bundle/"
MAX_PAGE = 1000


def _invalid(message: object) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, str(message))


def _mask(request: Any) -> types_pb2.BundleMask | None:
    return request.output_mask if request.HasField("output_mask") else None


def _masked(existing: BundleRecord, update: BundleRecord, mask: types_pb2.BundleMask | None) -> BundleRecord:
    """``existing`` with the fields ``mask`` names taken from ``update`` (every field without a mask)."""
    if mask is None:
        return update
    return replace(
        existing,
        x509_authorities=update.x509_authorities if mask.x509_authorities else existing.x509_authorities,
        jwt_authorities=update.jwt_authorities if mask.jwt_authorities else existing.jwt_authorities,
        refresh_hint=update.refresh_hint if mask.refresh_hint else existing.refresh_hint,
        sequence_number=update.sequence_number if mask.sequence_number else existing.sequence_number,
    )


class BundleService(bundle_grpc.BundleBase):
    """The Bundle service (``spire.api.server.bundle.v1.Bundle``)."""

    def __init__(self, ctx: ServerContext) -> None:
        """Serve with the server's shared parts."""
        self.ctx = ctx

    def _federated_domain(self, name: str, verb: str) -> TrustDomain:
        """A federated trust domain named in a request; SPIRE's refusals, ``verb`` saying what was asked."""
        try:
            trust_domain = TrustDomain.parse(name)
        except SpiffeIdError as err:
            raise _invalid(f"trust domain argument is not valid: {err.reason}") from None
        if trust_domain == self.ctx.trust_domain:
            if verb == "removing":
                raise _invalid("removing the bundle for the server trust domain is not allowed")
            raise _invalid(f"{verb} a federated bundle for the server's own trust domain is not allowed")
        return trust_domain

    @rpc(_SERVICE + "GetBundle")
    async def GetBundle(self, stream: ApiStream[bundle_pb2.GetBundleRequest, types_pb2.Bundle], caller: Caller) -> None:
        request = await stream.request()
        bundle = self.ctx.bundles.get(self.ctx.trust_domain)
        if bundle is None:
            raise GRPCError(Status.NOT_FOUND, "bundle not found")
        await stream.send_message(bundle_to_proto(bundle, _mask(request)))

    @rpc(_SERVICE + "AppendBundle")
    async def AppendBundle(
        self, stream: ApiStream[bundle_pb2.AppendBundleRequest, types_pb2.Bundle], caller: Caller
    ) -> None:
        request = await stream.request()
        if not request.x509_authorities and not request.jwt_authorities:
            raise _invalid("no authorities to append")
        # SPIRE's words here: "failed to convert X.509 authority: <what the parser said>".
        try:
            x509_new = x509_authorities_from_proto(request.x509_authorities)
        except InvalidInput as err:
            raise _invalid(f"failed to convert X.509 authority: {err.reason}") from None
        try:
            jwt_new = jwt_authorities_from_proto(request.jwt_authorities)
        except InvalidInput as err:
            raise _invalid(f"failed to convert JWT authority: {err.reason}") from None

        def append(current: BundleRecord | None) -> BundleRecord | None:
            record = current or BundleRecord(self.ctx.trust_domain)
            have_x509 = {a.der for a in record.x509_authorities}
            have_jwt = {k.key_id for k in record.jwt_authorities}
            added_x509 = tuple(a for a in x509_new if a.der not in have_x509)
            added_jwt = tuple(k for k in jwt_new if k.key_id not in have_jwt)
            if not added_x509 and not added_jwt:
                return current
            return replace(
                record,
                x509_authorities=record.x509_authorities + added_x509,
                jwt_authorities=record.jwt_authorities + added_jwt,
                sequence_number=record.sequence_number + 1,
            )

        stored = await self.ctx.call(self.ctx.datastore.modify_bundle, self.ctx.trust_domain, append)
        await self.ctx.wrote()
        await stream.send_message(bundle_to_proto(stored or BundleRecord(self.ctx.trust_domain), _mask(request)))

    @rpc(_SERVICE + "PublishJWTAuthority")
    async def PublishJWTAuthority(
        self,
        stream: ApiStream[bundle_pb2.PublishJWTAuthorityRequest, bundle_pb2.PublishJWTAuthorityResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        if not request.HasField("jwt_authority"):
            raise _invalid("missing JWT authority")
        try:
            (key,) = jwt_authorities_from_proto([request.jwt_authority])
        except InvalidInput as err:
            raise _invalid(err) from None

        def publish(current: BundleRecord | None) -> BundleRecord | None:
            record = current or BundleRecord(self.ctx.trust_domain)
            if any(k.key_id == key.key_id for k in record.jwt_authorities):
                return current
            return replace(
                record, jwt_authorities=(*record.jwt_authorities, key), sequence_number=record.sequence_number + 1
            )

        stored = await self.ctx.call(self.ctx.datastore.modify_bundle, self.ctx.trust_domain, publish)
        # Nested here too: pass the key on up at once (what fails is tried again at each
        # rotation step until the upstream has it).
        upstream_key = JwtKey(
            key.key_id, key.public_key_der, datetime.fromtimestamp(key.expires_at, UTC) if key.expires_at else None
        )
        try:
            if await asyncio.to_thread(self.ctx.authority.forward_jwt_key, upstream_key):
                stored = await self.ctx.call(self.ctx.datastore.fetch_bundle, self.ctx.trust_domain)
        except PluginError as err:
            _log.warning("Could not pass a downstream JWT key upstream; retried later: %s", err)
        await self.ctx.wrote()
        keys = bundle_to_proto(stored).jwt_authorities if stored else []
        await stream.send_message(bundle_pb2.PublishJWTAuthorityResponse(jwt_authorities=keys))

    async def PublishWITAuthority(self, stream: Any) -> None:
        """Not a method of the SPIRE pyspire follows: unknown, to every caller (see ``unserved``)."""
        raise unknown_method(_SERVICE.strip("/"), "PublishWITAuthority")

    @rpc(_SERVICE + "CountBundles")
    async def CountBundles(
        self, stream: ApiStream[bundle_pb2.CountBundlesRequest, bundle_pb2.CountBundlesResponse], caller: Caller
    ) -> None:
        await stream.request()
        await stream.send_message(bundle_pb2.CountBundlesResponse(count=len(self.ctx.bundles.all())))

    @rpc(_SERVICE + "ListFederatedBundles")
    async def ListFederatedBundles(
        self,
        stream: ApiStream[bundle_pb2.ListFederatedBundlesRequest, bundle_pb2.ListFederatedBundlesResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        # As SPIRE: a page size of zero or less lists every bundle.
        size = min(request.page_size, MAX_PAGE) if request.page_size > 0 else len(self.ctx.bundles.all())
        federated = [b for b in self.ctx.bundles.all() if b.trust_domain != self.ctx.trust_domain]
        start = 0
        if request.page_token:
            start = next(
                (i for i, b in enumerate(federated) if b.trust_domain.name > request.page_token), len(federated)
            )
        page = federated[start : start + size]
        token = page[-1].trust_domain.name if start + size < len(federated) and page else ""
        await stream.send_message(
            bundle_pb2.ListFederatedBundlesResponse(
                bundles=[bundle_to_proto(b, _mask(request)) for b in page], next_page_token=token
            )
        )

    @rpc(_SERVICE + "GetFederatedBundle")
    async def GetFederatedBundle(
        self, stream: ApiStream[bundle_pb2.GetFederatedBundleRequest, types_pb2.Bundle], caller: Caller
    ) -> None:
        request = await stream.request()
        trust_domain = self._federated_domain(request.trust_domain, "getting")
        if caller.agent is not None and not caller.admin and not caller.local:
            # An agent may read the bundles its authorized entries federate with.
            authorized = self.ctx.entries.authorized(
                caller.agent.spiffe_id, self.ctx.nodes.selectors(caller.agent.spiffe_id)
            )
            if not any(trust_domain in entry.federates_with for entry in authorized.entries):
                raise GRPCError(
                    Status.PERMISSION_DENIED, f'no entry authorized to this agent federates with "{trust_domain}"'
                )
        bundle = self.ctx.bundles.get(trust_domain)
        if bundle is None:
            raise GRPCError(Status.NOT_FOUND, "bundle not found")
        await stream.send_message(bundle_to_proto(bundle, _mask(request)))

    async def _batch(
        self, bundles: Any, operation: str, input_mask: types_pb2.BundleMask | None = None
    ) -> list[tuple[types_pb2.Status, BundleRecord | None]]:
        """Each bundle's outcome, as SPIRE answers it: one bad bundle fails only itself."""
        verb = {"create": "creating", "update": "updating", "set": "setting"}[operation]
        outcomes: list[tuple[types_pb2.Status, BundleRecord | None]] = []
        for proto in bundles:
            try:
                self._federated_domain(proto.trust_domain, verb)
                record = bundle_from_proto(proto)
                if operation == "create":
                    stored = await self.ctx.call(self.ctx.datastore.create_bundle, record)
                elif operation == "update":
                    existing = await self.ctx.call(self.ctx.datastore.fetch_bundle, record.trust_domain)
                    if existing is None:
                        raise NotFound("bundle not found")
                    stored = await self.ctx.call(self.ctx.datastore.set_bundle, _masked(existing, record, input_mask))
                else:
                    stored = await self.ctx.call(self.ctx.datastore.set_bundle, record)
                outcomes.append((status_message(Status.OK, "OK"), stored))
            except InvalidInput as err:
                outcomes.append((status_message(Status.INVALID_ARGUMENT, f"failed to convert bundle: {err}"), None))
            except GRPCError as err:
                outcomes.append((status_message(err.status, str(err.message)), None))
            except AlreadyExists:
                outcomes.append((status_message(Status.ALREADY_EXISTS, "bundle already exists"), None))
            except NotFound:
                outcomes.append((status_message(Status.NOT_FOUND, "bundle not found"), None))
        if any(stored is not None for _, stored in outcomes):
            await self.ctx.wrote()
        return outcomes

    @rpc(_SERVICE + "BatchCreateFederatedBundle")
    async def BatchCreateFederatedBundle(
        self,
        stream: ApiStream[bundle_pb2.BatchCreateFederatedBundleRequest, bundle_pb2.BatchCreateFederatedBundleResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        outcomes = await self._batch(request.bundle, "create")
        Result = bundle_pb2.BatchCreateFederatedBundleResponse.Result
        results = [Result(status=s, bundle=bundle_to_proto(b, _mask(request)) if b else None) for s, b in outcomes]
        await stream.send_message(bundle_pb2.BatchCreateFederatedBundleResponse(results=results))

    @rpc(_SERVICE + "BatchUpdateFederatedBundle")
    async def BatchUpdateFederatedBundle(
        self,
        stream: ApiStream[bundle_pb2.BatchUpdateFederatedBundleRequest, bundle_pb2.BatchUpdateFederatedBundleResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        input_mask = request.input_mask if request.HasField("input_mask") else None
        outcomes = await self._batch(request.bundle, "update", input_mask)
        Result = bundle_pb2.BatchUpdateFederatedBundleResponse.Result
        results = [Result(status=s, bundle=bundle_to_proto(b, _mask(request)) if b else None) for s, b in outcomes]
        await stream.send_message(bundle_pb2.BatchUpdateFederatedBundleResponse(results=results))

    @rpc(_SERVICE + "BatchSetFederatedBundle")
    async def BatchSetFederatedBundle(
        self,
        stream: ApiStream[bundle_pb2.BatchSetFederatedBundleRequest, bundle_pb2.BatchSetFederatedBundleResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        outcomes = await self._batch(request.bundle, "set")
        Result = bundle_pb2.BatchSetFederatedBundleResponse.Result
        results = [Result(status=s, bundle=bundle_to_proto(b, _mask(request)) if b else None) for s, b in outcomes]
        await stream.send_message(bundle_pb2.BatchSetFederatedBundleResponse(results=results))

    @rpc(_SERVICE + "BatchDeleteFederatedBundle")
    async def BatchDeleteFederatedBundle(
        self,
        stream: ApiStream[bundle_pb2.BatchDeleteFederatedBundleRequest, bundle_pb2.BatchDeleteFederatedBundleResponse],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        try:
            mode = BundleDeleteMode(request.mode)
        except ValueError:
            raise _invalid(f"unknown delete mode {request.mode}") from None
        Result = bundle_pb2.BatchDeleteFederatedBundleResponse.Result
        results = []
        for name in request.trust_domains:
            try:
                trust_domain = self._federated_domain(name, "removing")
                await self.ctx.call(self.ctx.datastore.delete_bundle, trust_domain, mode)
                results.append(Result(status=status_message(Status.OK, "OK"), trust_domain=name))
            except GRPCError as err:
                results.append(Result(status=status_message(err.status, str(err.message)), trust_domain=name))
            except NotFound:
                results.append(Result(status=status_message(Status.NOT_FOUND, "bundle not found"), trust_domain=name))
            except FailedPrecondition as err:
                results.append(
                    Result(status=status_message(Status.FAILED_PRECONDITION, err.message), trust_domain=name)
                )
        await self.ctx.wrote()
        await stream.send_message(bundle_pb2.BatchDeleteFederatedBundleResponse(results=results))
