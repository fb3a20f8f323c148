"""The HTTP endpoints: ``/.well-known/openid-configuration`` and ``/keys`` (under ``server_path_prefix``).

Answers are SPIRE's, status codes and bodies included, so a relying party or probe written
against SPIRE's provider reads the same here:

- the discovery document names an issuer and a JWKS address built from the request: its host
  (``X-Forwarded-Host`` when a proxy sets it) and ``https`` (``http`` only with
  ``allow_insecure_scheme``, over plain HTTP, unless the proxy says ``X-Forwarded-Proto:
  https``), or ``jwt_issuer`` / ``jwks_uri`` when configured. A host outside ``domains`` gets
  400 ``domain "..." is not allowed``: the document must not advertise an issuer the operator
  never chose. ``/keys`` carries nothing taken from the request, and is served for any host.
- ``/keys``: 500 ``document not available`` until the keys have been fetched once, 501 when the
  trust domain has no JWT keys, else the JWKS, never cached (``Cache-Control: no-cache``), with
  ``Last-Modified`` set to when the keys last changed (``If-Modified-Since`` gets 304).
- any other method: 405 ``method not allowed``; any other path: 404 ``404 page not found``.
"""

from __future__ import annotations

import email.utils
import logging
import posixpath
import re
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

from pyspire_oidc_discovery.config import ProviderConfig
from pyspire_oidc_discovery.documents import discovery_document, jwks_document
from pyspire_oidc_discovery.domains import DomainError, DomainPolicy
from pyspire_oidc_discovery.sources import KeySource

__all__ = ["DiscoveryHandler", "plain_error", "split_host_port"]

_log = logging.getLogger("pyspire.oidc_discovery.handler")

WELL_KNOWN = "/.well-known/openid-configuration"
KEYS = "/keys"
_FORWARDED_PROTO = re.compile(r"(?i)(?:proto=)(https|http)")
_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache", "Expires": "0"}


def _join(base: str, *elements: str) -> str:
    """Go's ``url.JoinPath`` on paths: joined and cleaned (``//`` and ``..`` resolved)."""
    joined = posixpath.normpath(posixpath.join(base, *(element.lstrip("/") for element in elements)))
    return "/" + joined.lstrip("/")


def plain_error(status: int, message: str) -> web.Response:
    """An error as Go's ``http.Error`` writes it."""
    return web.Response(
        status=status,
        text=f"{message}\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def split_host_port(host: str) -> str:
    """The host name of a ``Host`` value: without its port, unbracketed; the whole value when it has no port.

    As Go's ``net.SplitHostPort`` and SPIRE's fallback on its error: ``a.org:443`` -> ``a.org``,
    ``[::1]:443`` -> ``::1``, ``a.org`` -> ``a.org``, ``[::1]`` -> ``[::1]``.
    """
    if host.startswith("["):
        end = host.find("]")
        if end != -1 and host[end + 1 : end + 2] == ":" and ":" not in host[end + 2 :]:
            return host[1:end]
        return host
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def _forwarded_scheme(request: web.BaseRequest) -> str:
    """The scheme a proxy says the client used (gorilla's ProxyHeaders: X-Forwarded-Proto, -Scheme, Forwarded)."""
    for header in ("X-Forwarded-Proto", "X-Forwarded-Scheme"):
        value = request.headers.get(header, "")
        if value:
            return value.lower()
    match = _FORWARDED_PROTO.search(request.headers.get("Forwarded", ""))
    return match.group(1).lower() if match else ""


class DiscoveryHandler:
    """Serves the two documents for ``source``'s keys as ``config`` says."""

    def __init__(self, config: ProviderConfig, source: KeySource, policy: DomainPolicy) -> None:
        """Serve under ``config.server_path_prefix`` for the hosts ``policy`` allows."""
        self._source = source
        self._policy = policy
        self._allow_insecure_scheme = config.allow_insecure_scheme
        self._set_key_use = config.set_key_use
        self._log_requests = config.log_requests
        self._prefix = config.server_path_prefix or "/"
        self._issuer = config.jwt_issuer
        self._jwks_uri = config.jwks_uri
        self._routes: dict[str, Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]] = {
            _join(self._prefix, WELL_KNOWN): self._well_known,
            _join(self._prefix, KEYS): self._keys,
        }

    def application(self) -> web.Application:
        """An aiohttp application answering every path and method (unknown ones as Go's mux does)."""
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        return app

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        if self._log_requests:
            _log.debug(
                "Incoming request",
                extra={
                    "remote-addr": request.remote or "",
                    "method": request.method,
                    "url": str(request.rel_url),
                    "user-agent": request.headers.get("User-Agent", ""),
                },
            )
        route = self._routes.get(request.path)
        if route is None:
            return plain_error(404, "404 page not found")
        if request.method != "GET":
            return plain_error(405, "method not allowed")
        return await route(request)

    def _scheme(self, request: web.BaseRequest) -> str:
        if self._allow_insecure_scheme and not request.secure and _forwarded_scheme(request) != "https":
            return "http"
        return "https"

    async def _well_known(self, request: web.BaseRequest) -> web.StreamResponse:
        host = request.headers.get("X-Forwarded-Host") or request.headers.get("Host") or ""
        scheme = self._scheme(request)
        issuer = self._issuer or f"{scheme}://{host}" + (self._prefix if self._prefix != "/" else "")
        if self._jwks_uri:
            jwks_uri = self._jwks_uri
        elif self._issuer:
            # SPIRE's behaviour since 1.11.1: without jwks_uri, the keys live under jwt_issuer.
            parts = urllib.parse.urlsplit(self._issuer)
            jwks_uri = f"{parts.scheme}://{parts.netloc}{_join(parts.path or '/', 'keys')}"
        else:
            jwks_uri = f"{scheme}://{host}{_join(self._prefix, 'keys')}"
        try:
            self._policy.check(split_host_port(host))
        except DomainError as err:
            return plain_error(400, str(err))
        return web.Response(
            body=discovery_document(issuer, jwks_uri),
            content_type="application/json",
            headers={"Access-Control-Allow-Origin": "*"},
        )

    async def _keys(self, request: web.BaseRequest) -> web.StreamResponse:
        key_set = self._source.key_set
        if key_set is None:
            return plain_error(500, "document not available")
        if not key_set.keys:
            return plain_error(501, "jwt not supported/enabled in this service")
        modified = int(key_set.modified)
        headers = {**_NO_CACHE, "Access-Control-Allow-Origin": "*", "Last-Modified": _http_date(modified)}
        since = _parse_http_date(request.headers.get("If-Modified-Since", ""))
        if since is not None and modified <= since:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=jwks_document(key_set.keys, self._set_key_use), content_type="application/json", headers=headers
        )


def _http_date(seconds: int) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def _parse_http_date(text: str) -> int | None:
    if not text:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return int(parsed.timestamp())
