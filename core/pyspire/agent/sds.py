"""Envoy SDS v3 on the agent socket: the caller's SVIDs and bundles as Envoy secrets.

A proxy asks for secrets by name, as SPIRE names them: a SPIFFE ID for a TLS certificate
(or ``default_svid_name`` for the caller's first identity), a trust domain's ID for its
validation context (or ``default_bundle_name`` for the agent's own), and
``default_all_bundles_name`` for one SPIFFE validator holding every bundle. An empty request
means everything the caller may have. Callers are attested exactly as on the Workload API.

On a stream every response carries a fresh nonce and a version that changes whenever the
secrets' contents do. A request that echoes an older nonce is stale and ignored; one that
echoes the current nonce with another version is a NACK, logged with Envoy's reason. New
resource names are answered at once; a change in the cache is pushed only when the caller's
secrets changed. A requested name the caller has no right to ends the call with
INVALID_ARGUMENT; one whose SVID is still being minted is answered when it arrives.

Unlike SPIRE, callers must send the Workload API's security header (``workload.spiffe.io:
true``, Cure53 SPI-01-008), which Envoy does with ``initial_metadata``; ``sds {
require_security_header = false }`` serves Envoy configs written for SPIRE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from secrets import token_hex
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf import any_pb2, struct_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import WorkloadCache, WorkloadIdentity
from pyspire.agent.rpc import typed_stream
from pyspire.agent.serving import SECURITY_HEADER, CallerAttestor, OpenStreams, check_security_header
from pyspire.config.sections import Sds
from pyspire.plugin.errors import InvalidArgument
from pyspire.plugin.selectors import Selector
from pyspire.proto.envoy import sds_pb2
from pyspire.proto.envoy_sds import (
    SECRET_TYPE_URL,
    SPIFFE_VALIDATOR_TYPE_URL,
    SecretDiscoveryServiceBase,
    pack,
)
from pyspire.rpc_stream import ApiStream
from pyspire.spiffe import Bundle, TrustDomain

__all__ = ["SPIFFE_VALIDATOR", "SecretDiscoveryService"]

_log = logging.getLogger(__name__)

SPIFFE_VALIDATOR = "envoy.tls.cert_validator.spiffe"
"""The name of Envoy's SPIFFE certificate validator extension."""

_DISABLE_VALIDATOR_KEY = "disable_spiffe_cert_validation"
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class _NotReady(Exception):
    """A requested secret is an SVID still being minted: answer once it is there."""


@dataclass(frozen=True)
class _Snapshot:
    """What the caller may have right now."""

    identities: list[WorkloadIdentity]
    pending: frozenset[str]
    """SPIFFE IDs of the caller's entries that have no valid SVID yet."""
    bundle: Bundle | None
    federated: dict[TrustDomain, Bundle]


def _pem(certificates: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _inline(data: bytes) -> sds_pb2.DataSource:
    return sds_pb2.DataSource(inline_bytes=data)


def _packed(secret: sds_pb2.Secret) -> any_pb2.Any:
    return pack(secret, SECRET_TYPE_URL)


def _tls_certificate(name: str, identity: WorkloadIdentity) -> any_pb2.Any:
    key = identity.svid.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _packed(
        sds_pb2.Secret(
            name=name,
            tls_certificate=sds_pb2.TlsCertificate(
                certificate_chain=_inline(_pem(identity.svid.chain)), private_key=_inline(key)
            ),
        )
    )


def _spiffe_validator(name: str, bundles: Sequence[Bundle]) -> any_pb2.Any:
    config = sds_pb2.SPIFFECertValidatorConfig(
        trust_domains=[
            sds_pb2.SPIFFECertValidatorConfig.TrustDomain(
                name=bundle.trust_domain.name, trust_bundle=_inline(_pem(bundle.x509_authorities))
            )
            for bundle in sorted(bundles, key=lambda b: b.trust_domain.name)
        ]
    )
    typed = pack(config, SPIFFE_VALIDATOR_TYPE_URL)
    return _packed(
        sds_pb2.Secret(
            name=name,
            validation_context=sds_pb2.CertificateValidationContext(
                custom_validator_config=sds_pb2.TypedExtensionConfig(name=SPIFFE_VALIDATOR, typed_config=typed)
            ),
        )
    )


def _root_ca(name: str, bundle: Bundle) -> any_pb2.Any:
    return _packed(
        sds_pb2.Secret(
            name=name,
            validation_context=sds_pb2.CertificateValidationContext(trusted_ca=_inline(_pem(bundle.x509_authorities))),
        )
    )


def _flag(value: struct_pb2.Value) -> bool | None:
    kind = value.WhichOneof("kind")
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "string_value":
        if value.string_value in _TRUE:
            return True
        if value.string_value in _FALSE:
            return False
    return None


def _check_type(request: sds_pb2.DiscoveryRequest) -> None:
    if request.type_url and request.type_url != SECRET_TYPE_URL:
        raise GRPCError(Status.INVALID_ARGUMENT, f"SDS serves {SECRET_TYPE_URL}, not {request.type_url!r}")


class _Secrets:
    """The secrets a caller asks for, built from the cache as it is now."""

    def __init__(self, cache: WorkloadCache, names: Sds) -> None:
        self._cache = cache
        self._names = names

    # --- what the caller gets --------------------------------------------------------

    def _snapshot(self, selectors: frozenset[Selector]) -> _Snapshot:
        identities = self._cache.identities(selectors)
        issued = {identity.entry.id for identity in identities}
        matched = self._cache.matching(selectors)
        return _Snapshot(
            identities=identities,
            pending=frozenset(str(e.spiffe_id) for e in matched if e.id not in issued),
            bundle=self._cache.bundle,
            federated=self._cache.federated_bundles(matched),
        )

    def _uses_spiffe_validator(self, node: sds_pb2.Node) -> bool:
        disabled = self._names.disable_spiffe_cert_validation
        if _DISABLE_VALIDATOR_KEY in node.metadata.fields:
            override = _flag(node.metadata.fields[_DISABLE_VALIDATOR_KEY])
            if override is not None:
                disabled = override
        if disabled:
            return False
        if node.HasField("user_agent_build_version"):
            version = node.user_agent_build_version.version
            return (int(version.major_number), int(version.minor_number)) > (1, 17)
        return True

    def build(self, selectors: frozenset[Selector], names: Sequence[str], node: sds_pb2.Node) -> list[any_pb2.Any]:
        """The secrets named (all of them when ``names`` is empty); raises _NotReady or GRPCError."""
        snapshot = self._snapshot(selectors)
        wanted = {name for name in names if name}
        everything = not wanted
        if snapshot.bundle is None or (everything and snapshot.pending):
            raise _NotReady
        spiffe = self._uses_spiffe_validator(node)
        own = snapshot.bundle
        resources: list[any_pb2.Any] = []

        def validation_context(name: str, bundle: Bundle) -> any_pb2.Any:
            return _spiffe_validator(name, [bundle]) if spiffe else _root_ca(name, bundle)

        own_name = own.trust_domain.id_string()
        if everything or own_name in wanted:
            resources.append(validation_context(own_name, own))
            wanted.discard(own_name)
        if self._names.default_bundle_name in wanted:
            resources.append(validation_context(self._names.default_bundle_name, own))
            wanted.discard(self._names.default_bundle_name)
        if self._names.default_all_bundles_name in wanted:
            if not spiffe:
                raise GRPCError(
                    Status.FAILED_PRECONDITION,
                    f"{self._names.default_all_bundles_name!r} needs Envoy's SPIFFE certificate validator "
                    "(Envoy 1.18 or later, with disable_spiffe_cert_validation off)",
                )
            everyone = [own, *snapshot.federated.values()]
            resources.append(_spiffe_validator(self._names.default_all_bundles_name, everyone))
            wanted.discard(self._names.default_all_bundles_name)
        for trust_domain, bundle in sorted(snapshot.federated.items(), key=lambda item: item[0].name):
            name = trust_domain.id_string()
            if everything or name in wanted:
                resources.append(validation_context(name, bundle))
                wanted.discard(name)
        for identity in snapshot.identities:
            name = str(identity.entry.spiffe_id)
            if everything or name in wanted:
                resources.append(_tls_certificate(name, identity))
                wanted.discard(name)
        if self._names.default_svid_name in wanted:
            if snapshot.pending:
                raise _NotReady  # the first identity may be one still being minted
            if snapshot.identities:
                resources.append(_tls_certificate(self._names.default_svid_name, snapshot.identities[0]))
                wanted.discard(self._names.default_svid_name)
        if wanted & snapshot.pending:
            raise _NotReady
        if wanted:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"workload is not authorized for the requested identities {sorted(wanted)}",
            )
        return resources


_Incoming = sds_pb2.DiscoveryRequest | InvalidArgument | None
"""What the reader of a StreamSecrets call hands on: a request, a malformed one's refusal, or the end."""


class SecretDiscoveryService(SecretDiscoveryServiceBase):
    """StreamSecrets and FetchSecrets over the agent's cache."""

    def __init__(self, streams: OpenStreams, caller: CallerAttestor, names: Sds) -> None:
        """Serve ``streams.cache`` to callers attested by ``caller``, with the resource names in ``names``."""
        self._streams = streams
        self._caller = caller
        self._secrets = _Secrets(streams.cache, names)
        self._require_header = names.require_security_header

    # --- the methods -----------------------------------------------------------------

    async def _attest(self, stream: Any) -> frozenset[Selector]:
        if self._require_header:
            check_security_header(
                stream,
                f': give the SDS grpc_service initial_metadata {{ key: "{SECURITY_HEADER}", value: "true" }} '
                "(or set sds { require_security_header = false })",
            )
        return await self._caller.attest(stream)

    @typed_stream
    async def FetchSecrets(self, stream: ApiStream[sds_pb2.DiscoveryRequest, sds_pb2.DiscoveryResponse]) -> None:
        request = await stream.request()
        _check_type(request)
        selectors = await self._attest(stream.raw)
        with self._streams.open(selectors):
            while True:
                generation = self._streams.cache.generation
                try:
                    resources = self._secrets.build(selectors, request.resource_names, request.node)
                    break
                except _NotReady:
                    await self._streams.next_change(generation)
        await stream.send_message(sds_pb2.DiscoveryResponse(type_url=SECRET_TYPE_URL, resources=resources))

    @typed_stream
    async def StreamSecrets(self, stream: ApiStream[sds_pb2.DiscoveryRequest, sds_pb2.DiscoveryResponse]) -> None:
        selectors = await self._attest(stream.raw)
        requests: asyncio.Queue[_Incoming] = asyncio.Queue()
        reader = asyncio.create_task(self._read_requests(stream, requests))
        try:
            with self._streams.open(selectors):
                await _SecretStream(self._secrets, self._streams, stream, selectors, requests).run()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    @staticmethod
    async def _read_requests(
        stream: ApiStream[sds_pb2.DiscoveryRequest, sds_pb2.DiscoveryResponse], requests: asyncio.Queue[_Incoming]
    ) -> None:
        try:
            while (request := await stream.recv_message()) is not None:
                await requests.put(request)
        except InvalidArgument as err:
            await requests.put(err)  # ends the call with it, from the handler's task
        finally:
            await requests.put(None)

    async def DeltaSecrets(self, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "DeltaSecrets is not implemented; use StreamSecrets")


class _SecretStream:
    """One StreamSecrets call: the xDS state machine between Envoy's requests and the cache."""

    def __init__(
        self,
        secrets: _Secrets,
        streams: OpenStreams,
        stream: ApiStream[sds_pb2.DiscoveryRequest, sds_pb2.DiscoveryResponse],
        selectors: frozenset[Selector],
        requests: asyncio.Queue[_Incoming],
    ) -> None:
        self._secrets = secrets
        self._streams = streams
        self._stream = stream
        self._selectors = selectors
        self._requests = requests
        self._request: sds_pb2.DiscoveryRequest | None = None
        self._node = sds_pb2.Node()
        self._nonce = ""
        self._version = 0
        self._sent: list[any_pb2.Any] | None = None

    async def run(self) -> None:
        streams = self._streams
        generation = streams.cache.generation
        incoming: asyncio.Task[_Incoming] | None = None
        change: asyncio.Task[int] | None = None
        try:
            while True:
                if incoming is None:
                    incoming = asyncio.create_task(self._requests.get())
                if change is None:
                    change = asyncio.create_task(streams.next_change(generation))
                done, _ = await asyncio.wait({incoming, change}, return_when=asyncio.FIRST_COMPLETED)
                if change in done:
                    generation = change.result()  # UNAVAILABLE when the agent is stopping
                    change = None
                    if self._request is not None:
                        await self._answer(force=False)
                if incoming in done:
                    request = incoming.result()
                    incoming = None
                    if request is None:
                        return  # Envoy closed its side
                    if isinstance(request, InvalidArgument):
                        raise request
                    if self._accept(request):
                        await self._answer(force=True)
        finally:
            for task in (incoming, change):
                if task is not None:
                    task.cancel()

    def _accept(self, request: sds_pb2.DiscoveryRequest) -> bool:
        """Take in a request; whether it asks for something new."""
        _check_type(request)
        names = list(request.resource_names)
        _log.debug(
            "Received StreamSecrets request",
            extra={
                "resource_names": ",".join(names),
                "version_info": request.version_info,
                "nonce": request.response_nonce,
            },
        )
        if request.HasField("error_detail"):
            _log.error(
                "Envoy reported errors applying secrets",
                extra={"resource_names": names, "error": request.error_detail.message},
            )
        if self._nonce:
            if request.response_nonce != self._nonce:
                _log.warning(
                    "Received unexpected nonce; ignoring request",
                    extra={"nonce": request.response_nonce, "expect": self._nonce},
                )
                return False
            if request.version_info != str(self._version):
                _log.error(
                    "Client rejected expected version and rolled back",
                    extra={"version_info": request.version_info, "expect": str(self._version)},
                )
        if request.HasField("node"):
            self._node = request.node
        changed = self._request is None or sorted(self._request.resource_names) != sorted(names)
        self._request = request
        return changed

    async def _answer(self, *, force: bool) -> None:
        assert self._request is not None
        try:
            resources = self._secrets.build(self._selectors, self._request.resource_names, self._node)
        except _NotReady:
            return  # answered when the SVID arrives
        if resources == self._sent and not force:
            return
        if resources != self._sent:
            self._version += 1
            self._sent = resources
        self._nonce = token_hex(4)
        _log.debug(
            "Sending StreamSecrets response",
            extra={"version_info": self._version, "nonce": self._nonce, "count": len(resources)},
        )
        await self._stream.send_message(
            sds_pb2.DiscoveryResponse(
                version_info=str(self._version), nonce=self._nonce, type_url=SECRET_TYPE_URL, resources=resources
            )
        )
