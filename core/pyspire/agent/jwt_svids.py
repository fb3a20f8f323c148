"""JWT-SVIDs for workloads: from the agent's cache while fresh, else minted by the server.

Shared by the Workload API (a workload asks for its own) and the DelegatedIdentity API (a
delegate asks on a workload's behalf), so both reuse one cache and report failures alike.
"""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from pyspire.agent.cache import CachedJwtSvid, WorkloadCache, WorkloadEntry
from pyspire.agent.client import ServerClient, ServerUnavailable

__all__ = ["JwtSvidIssuer"]


class JwtSvidIssuer:
    """Hands out JWT-SVIDs of cached entries, minting through the server when none is fresh."""

    def __init__(self, cache: WorkloadCache, client: ServerClient) -> None:
        """Keep tokens in ``cache``; mint new ones through ``client``."""
        self._cache = cache
        self._client = client

    async def issue(self, entry: WorkloadEntry, audience: tuple[str, ...]) -> CachedJwtSvid:
        """A JWT-SVID of ``entry`` for ``audience``; GRPCError (UNAVAILABLE or the server's code) if none can be had."""
        cached = self._cache.cached_jwt(entry.spiffe_id, audience)
        if cached is not None:
            return cached
        try:
            svid = await self._client.new_jwt_svid(entry.id, audience)
        except ServerUnavailable as err:
            raise GRPCError(Status.UNAVAILABLE, f"could not mint a JWT-SVID: {err}") from None
        except GRPCError as err:
            raise GRPCError(err.status, f"could not mint a JWT-SVID: {err.message}") from None
        self._cache.put_jwt(entry.spiffe_id, audience, svid)
        return svid
