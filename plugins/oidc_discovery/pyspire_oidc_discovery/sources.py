"""Where the JWT keys come from, polled every ``poll_interval``: the server API, the Workload API, a file.

Each source fetches the trust domain's JWT authorities, keeps the last set it got, and
records when that set last changed (the JWKS's ``Last-Modified``) and when a fetch last
succeeded (the health checks' measure). A failed fetch is logged and changes nothing: the
keys fetched before keep being served, so a server restart or a briefly absent agent does
not take the JWKS away from relying parties. Until the first fetch succeeds there is no key
set, and ``/keys`` answers 500.

- ``server_api``: ``GetBundle`` (JWT authorities only) on the server's admin socket.
- ``workload_api``: ``FetchJWTBundles`` on an agent's Workload API; the provider is a workload
  there and needs a registration entry, like any other.
- ``file``: a SPIFFE bundle document read from disk.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_der_public_key
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError
from pyspire.proto.spire.api.server.bundle.v1 import bundle_grpc, bundle_pb2
from pyspire.proto.spire.api.types import types_pb2
from pyspire.spiffe import Bundle, BundleError, TrustDomain
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError

from pyspire_oidc_discovery.config import ProviderConfig
from pyspire_oidc_discovery.documents import JwtKey

__all__ = ["FileSource", "KeySet", "KeySource", "ServerApiSource", "SourceError", "WorkloadApiSource", "key_source"]

_log = logging.getLogger("pyspire.oidc_discovery.sources")

CALL_TIMEOUT = 30.0
"""How long one fetch may take before it counts as failed (SPIRE waits without limit)."""
_FILE_TRUST_DOMAIN = TrustDomain.parse("oidc-discovery.invalid")
"""A SPIFFE bundle file names no trust domain; the bundle reader needs one, and only the keys are used."""


class SourceError(Exception):
    """A fetch failed; the message says what to log."""


@dataclass(frozen=True)
class KeySet:
    """The keys a source last fetched, and when they last changed (seconds since the epoch).

    Each change is at least a second after the one before, so that ``Last-Modified`` (in whole
    seconds) moves with every change.
    """

    keys: tuple[JwtKey, ...]
    modified: float


def _same_keys(old: Sequence[JwtKey], new: Sequence[JwtKey]) -> bool:
    return [(key.key_id, key.public_key) for key in old] == [(key.key_id, key.public_key) for key in new]


class KeySource(abc.ABC):
    """Polls :meth:`fetch` every ``interval`` while :meth:`run` runs."""

    failure = "Failed to fetch the JWT keys"
    """What a failed fetch is logged as (SPIRE's message for the source)."""

    def __init__(self, interval: timedelta) -> None:
        """Poll every ``interval``."""
        self.interval = interval
        self._key_set: KeySet | None = None
        self._last_success: float | None = None

    @property
    def key_set(self) -> KeySet | None:
        """The last keys fetched, or None before the first successful fetch."""
        return self._key_set

    @property
    def last_successful_poll(self) -> float | None:
        """When (``time.monotonic()``) a fetch last succeeded; None if none has."""
        return self._last_success

    @abc.abstractmethod
    async def fetch(self) -> list[JwtKey]:
        """The trust domain's JWT keys now; SourceError when they cannot be had."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection, if any."""

    async def poll_once(self) -> None:
        """Fetch once; keep the keys if they changed; log a failure."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancellation that
            # arrives as the fetch completes, and the poll loop would then outlive a stop request.
            async with asyncio.timeout(CALL_TIMEOUT):
                keys = await self.fetch()
        except TimeoutError:
            _log.warning(self.failure, extra={"error": f"no answer within {CALL_TIMEOUT:g}s"})
            return
        except SourceError as err:
            _log.warning(self.failure, extra={"error": str(err)})
            return
        if self._key_set is None or not _same_keys(self._key_set.keys, keys):
            modified = time.time()
            if self._key_set is not None:
                # Last-Modified has whole seconds: a change within the second of the one before
                # would answer If-Modified-Since with 304, and a relying party would miss a new key.
                modified = max(modified, math.floor(self._key_set.modified) + 1)
            self._key_set = KeySet(tuple(keys), modified)
            _log.info("JWT keys updated", extra={"key_ids": ",".join(key.key_id for key in keys)})
        self._last_success = time.monotonic()

    async def run(self) -> None:
        """Poll until cancelled."""
        _log.debug("Polling started", extra={"interval": f"{self.interval.total_seconds():g}s"})
        try:
            while True:
                await self.poll_once()
                await asyncio.sleep(self.interval.total_seconds())
        finally:
            await self.close()


class ServerApiSource(KeySource):
    """The JWT authorities of the server's own bundle, from its Bundle API on the admin socket."""

    failure = "Failed to fetch bundle"

    def __init__(self, socket_path: Path, interval: timedelta) -> None:
        """Ask the server listening on ``socket_path``."""
        super().__init__(interval)
        self.socket_path = socket_path
        self._channel = Channel(path=str(socket_path))
        self._stub = bundle_grpc.BundleStub(self._channel)

    async def fetch(self) -> list[JwtKey]:
        """``GetBundle`` with only the JWT authorities; a key that cannot be read is left out and logged."""
        request = bundle_pb2.GetBundleRequest(output_mask=types_pb2.BundleMask(jwt_authorities=True))
        try:
            bundle = await self._stub.GetBundle(request)
        except GRPCError as err:
            raise SourceError(f"the server refused GetBundle: {err.status.name}: {err.message}") from None
        except (OSError, StreamTerminatedError) as err:
            raise SourceError(f"cannot reach the server at {self.socket_path}: {err}") from None
        keys = []
        for authority in bundle.jwt_authorities:
            try:
                public_key = load_der_public_key(authority.public_key)
            except (ValueError, TypeError) as err:
                _log.warning("Malformed public key in bundle", extra={"kid": authority.key_id, "error": str(err)})
                continue
            keys.append(JwtKey(authority.key_id, public_key))
        return keys

    async def close(self) -> None:
        """Close the channel."""
        self._channel.close()


class WorkloadApiSource(KeySource):
    """The JWT bundle of ``trust_domain``, from an agent's Workload API."""

    failure = "Failed to fetch JWKS from the Workload API"

    def __init__(self, socket_path: Path, trust_domain: TrustDomain, interval: timedelta) -> None:
        """Ask the agent listening on ``socket_path`` for ``trust_domain``'s keys."""
        super().__init__(interval)
        self.socket_path = socket_path
        self.trust_domain = trust_domain
        self._client = WorkloadApiClient(f"unix://{socket_path}")

    async def fetch(self) -> list[JwtKey]:
        """``FetchJWTBundles``, then this trust domain's bundle out of the answer."""
        try:
            bundles = await self._client.fetch_jwt_bundles()
        except WorkloadApiError as err:
            raise SourceError(f"the Workload API refused FetchJWTBundles: {err}") from None
        except (OSError, StreamTerminatedError) as err:
            raise SourceError(f"cannot reach the Workload API at {self.socket_path}: {err}") from None
        except BundleError as err:
            raise SourceError(f"the Workload API sent a JWT bundle that cannot be read: {err}") from None
        bundle = bundles.get(self.trust_domain)
        if bundle is None:
            raise SourceError(f'no bundle for trust domain "{self.trust_domain}" in the Workload API response')
        return [JwtKey(key_id, key) for key_id, key in bundle.jwt_authorities.items()]

    async def close(self) -> None:
        """Close the client."""
        self._client.close()


class FileSource(KeySource):
    """The JWT authorities of a SPIFFE bundle document on disk."""

    failure = "Failed to load SPIFFE trust bundle"

    def __init__(self, path: Path, interval: timedelta) -> None:
        """Read ``path``."""
        super().__init__(interval)
        self.path = path

    async def fetch(self) -> list[JwtKey]:
        """Read and parse the file (off the event loop)."""
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
        except OSError as err:
            raise SourceError(f"cannot read the SPIFFE trust bundle {self.path}: {err.strerror or err}") from None
        try:
            bundle = Bundle.parse(_FILE_TRUST_DOMAIN, data)
        except BundleError as err:
            raise SourceError(f"{self.path} is not a SPIFFE trust bundle: {err}") from None
        return [JwtKey(key_id, key) for key_id, key in bundle.jwt_authorities.items()]

    async def close(self) -> None:
        """Nothing to release: the file is opened per read."""


def key_source(config: ProviderConfig) -> KeySource:
    """The source the config names (it names exactly one)."""
    if config.server_api is not None:
        return ServerApiSource(config.server_api.socket_path, config.server_api.interval)
    if config.workload_api is not None:
        return WorkloadApiSource(
            config.workload_api.socket, config.workload_api.trust_domain, config.workload_api.interval
        )
    assert config.file is not None  # the config requires exactly one source
    return FileSource(Path(config.file.path), config.file.interval)
