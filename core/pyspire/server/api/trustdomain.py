"""SPIRE's TrustDomain service: federation relationships."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from google.protobuf import empty_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.plugin.errors import AlreadyExists, NotFound
from pyspire.plugin.records import BundleRecord, FederationRelationship, Page
from pyspire.proto.spire.api.server.trustdomain.v1 import trustdomain_grpc, trustdomain_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.rpc_stream import ApiStream
from pyspire.server.api.auth import Caller, rpc
from pyspire.server.api.convert import InvalidInput, bundle_from_proto, relationship_from_proto, relationship_to_proto
from pyspire.server.api.errors import status_message
from pyspire.server.context import ServerContext
from pyspire.server.federation.fetch import FetchError
from pyspire.server.federation.refresher import UnknownRelationship
from pyspire.spiffe import SpiffeIdError, TrustDomain

__all__ = ["TrustDomainService"]

_SERVICE = "/spire.api.server.trustdomain.v1.TrustDomain/"
MAX_PAGE = 1000


def _invalid(message: object) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, str(message))


def _mask(request: Any, name: str) -> types_pb2.FederationRelationshipMask | None:
    return getattr(request, name) if request.HasField(name) else None


def _updated(
    existing: FederationRelationship, update: FederationRelationship, mask: types_pb2.FederationRelationshipMask | None
) -> FederationRelationship:
    """``existing`` with the fields ``mask`` names taken from ``update`` (every field without a mask)."""
    if mask is None:
        return update
    if mask.bundle_endpoint_url:
        existing = replace(existing, bundle_endpoint_url=update.bundle_endpoint_url)
    if mask.bundle_endpoint_profile:
        existing = replace(existing, profile=update.profile, endpoint_spiffe_id=update.endpoint_spiffe_id)
    return existing


class TrustDomainService(trustdomain_grpc.TrustDomainBase):
    """The TrustDomain service (``spire.api.server.trustdomain.v1.TrustDomain``)."""

    def __init__(self, ctx: ServerContext) -> None:
        """Serve with the server's shared parts."""
        self.ctx = ctx

    def _domain(self, name: str) -> TrustDomain:
        try:
            return TrustDomain.parse(name)
        except SpiffeIdError as err:
            raise _invalid(f"failed to parse trust domain: {err.reason}") from None

    async def _bundle(self, trust_domain: TrustDomain) -> BundleRecord | None:
        return await self.ctx.call(self.ctx.datastore.fetch_bundle, trust_domain)

    @rpc(_SERVICE + "ListFederationRelationships")
    async def ListFederationRelationships(
        self,
        stream: ApiStream[
            trustdomain_pb2.ListFederationRelationshipsRequest, trustdomain_pb2.ListFederationRelationshipsResponse
        ],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        # As SPIRE: a page size of zero or less lists every relationship.
        page = Page(min(request.page_size, MAX_PAGE), request.page_token) if request.page_size > 0 else Page()
        found, token = await self.ctx.call(self.ctx.datastore.list_federation_relationships, page)
        mask = _mask(request, "output_mask")
        protos = [relationship_to_proto(r, self.ctx.bundles.get(r.trust_domain), mask) for r in found]
        await stream.send_message(
            trustdomain_pb2.ListFederationRelationshipsResponse(federation_relationships=protos, next_page_token=token)
        )

    @rpc(_SERVICE + "GetFederationRelationship")
    async def GetFederationRelationship(
        self,
        stream: ApiStream[trustdomain_pb2.GetFederationRelationshipRequest, types_pb2.FederationRelationship],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        trust_domain = self._domain(request.trust_domain)
        found = await self.ctx.call(self.ctx.datastore.fetch_federation_relationship, trust_domain)
        if found is None:
            raise GRPCError(Status.NOT_FOUND, "federation relationship does not exist")
        await stream.send_message(
            relationship_to_proto(found, self.ctx.bundles.get(trust_domain), _mask(request, "output_mask"))
        )

    async def _apply(self, proto: Any, request: Any, create: bool) -> tuple[Any, Any]:
        """One relationship of a batch: created, or updated with the fields the input mask names."""
        input_mask = None if create else _mask(request, "input_mask")
        try:
            relationship = relationship_from_proto(proto)
            if create and relationship.trust_domain == self.ctx.trust_domain:
                raise GRPCError(
                    Status.INVALID_ARGUMENT, "unable to create federation relationship for server trust domain"
                )
            if not create:
                existing = await self.ctx.call(
                    self.ctx.datastore.fetch_federation_relationship, relationship.trust_domain
                )
                if existing is None:
                    raise NotFound("federation relationship does not exist")
                relationship = _updated(existing, relationship, input_mask)
            if (input_mask is None or input_mask.trust_domain_bundle) and (
                proto.HasField("trust_domain_bundle") and proto.trust_domain_bundle.trust_domain
            ):
                bundle = bundle_from_proto(proto.trust_domain_bundle)
                if bundle.trust_domain != relationship.trust_domain:
                    raise InvalidInput(
                        f'trust domain bundle ("{bundle.trust_domain}") must match the trust domain of the '
                        f'federation relationship ("{relationship.trust_domain}")'
                    )
                await self.ctx.call(self.ctx.datastore.set_bundle, bundle)
            write = (
                self.ctx.datastore.create_federation_relationship
                if create
                else self.ctx.datastore.update_federation_relationship
            )
            stored = await self.ctx.call(write, relationship)
            answer = relationship_to_proto(
                stored, await self._bundle(stored.trust_domain), _mask(request, "output_mask")
            )
            return status_message(Status.OK, "OK"), answer
        except InvalidInput as err:
            return status_message(Status.INVALID_ARGUMENT, f"failed to convert federation relationship: {err}"), None
        except GRPCError as err:
            return status_message(err.status, str(err.message)), None
        except AlreadyExists:
            return status_message(Status.ALREADY_EXISTS, "federation relationship already exists"), None
        except NotFound:
            return status_message(Status.NOT_FOUND, "federation relationship does not exist"), None

    @rpc(_SERVICE + "BatchCreateFederationRelationship")
    async def BatchCreateFederationRelationship(
        self,
        stream: ApiStream[
            trustdomain_pb2.BatchCreateFederationRelationshipRequest,
            trustdomain_pb2.BatchCreateFederationRelationshipResponse,
        ],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        Result = trustdomain_pb2.BatchCreateFederationRelationshipResponse.Result
        results = []
        for proto in request.federation_relationships:
            status, stored = await self._apply(proto, request, create=True)
            results.append(Result(status=status, federation_relationship=stored))
        await self.ctx.wrote()
        await stream.send_message(trustdomain_pb2.BatchCreateFederationRelationshipResponse(results=results))

    @rpc(_SERVICE + "BatchUpdateFederationRelationship")
    async def BatchUpdateFederationRelationship(
        self,
        stream: ApiStream[
            trustdomain_pb2.BatchUpdateFederationRelationshipRequest,
            trustdomain_pb2.BatchUpdateFederationRelationshipResponse,
        ],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        Result = trustdomain_pb2.BatchUpdateFederationRelationshipResponse.Result
        results = []
        for proto in request.federation_relationships:
            status, stored = await self._apply(proto, request, create=False)
            results.append(Result(status=status, federation_relationship=stored))
        await self.ctx.wrote()
        await stream.send_message(trustdomain_pb2.BatchUpdateFederationRelationshipResponse(results=results))

    @rpc(_SERVICE + "BatchDeleteFederationRelationship")
    async def BatchDeleteFederationRelationship(
        self,
        stream: ApiStream[
            trustdomain_pb2.BatchDeleteFederationRelationshipRequest,
            trustdomain_pb2.BatchDeleteFederationRelationshipResponse,
        ],
        caller: Caller,
    ) -> None:
        request = await stream.request()
        Result = trustdomain_pb2.BatchDeleteFederationRelationshipResponse.Result
        results = []
        for name in request.trust_domains:
            try:
                if not name:
                    raise _invalid("missing trust domain")
                await self.ctx.call(self.ctx.datastore.delete_federation_relationship, self._domain(name))
                results.append(Result(status=status_message(Status.OK, "OK"), trust_domain=name))
            except GRPCError as err:
                results.append(Result(status=status_message(err.status, str(err.message)), trust_domain=name))
            except NotFound:
                results.append(
                    Result(
                        status=status_message(Status.NOT_FOUND, "federation relationship not found"),
                        trust_domain=name,
                    )
                )
        await self.ctx.wrote()
        await stream.send_message(trustdomain_pb2.BatchDeleteFederationRelationshipResponse(results=results))

    @rpc(_SERVICE + "RefreshBundle")
    async def RefreshBundle(
        self, stream: ApiStream[trustdomain_pb2.RefreshBundleRequest, empty_pb2.Empty], caller: Caller
    ) -> None:
        request = await stream.request()
        trust_domain = self._domain(request.trust_domain)
        if self.ctx.refresher is None:
            raise GRPCError(Status.UNAVAILABLE, "federation is not running yet")
        try:
            await self.ctx.refresher.refresh(trust_domain)
        except UnknownRelationship:
            raise GRPCError(Status.NOT_FOUND, f'no relationship with trust domain "{trust_domain}"') from None
        except FetchError as err:
            raise GRPCError(Status.UNAVAILABLE, f"failed to refresh the bundle of {trust_domain}: {err}") from None
        await stream.send_message(empty_pb2.Empty())
