"""``health_checks``: ``ready`` and ``live`` on a listener of their own (port 8008 by default).

- ready: 200 while the keys were fetched successfully within the threshold, else 500.
- live: the same once the keys have been fetched; before the first success, 200 until the
  threshold has passed since start-up (a provider still waiting for its source is alive), then 500.

The threshold is five poll intervals, and at least three minutes, so a source that is briefly
unreachable (a server restart) does not get the provider restarted by its orchestrator. SPIRE's
README says the same; its code uses the bare poll interval once five of them exceed three
minutes, which would flap with every poll (docs/compatibility.md).

Both answer GET only (405 otherwise), with an empty body, as SPIRE's do; other paths get 404.
"""

from __future__ import annotations

import time
from datetime import timedelta

from aiohttp import web

from pyspire_oidc_discovery.config import HealthChecksConfig
from pyspire_oidc_discovery.handler import plain_error
from pyspire_oidc_discovery.sources import KeySource

__all__ = ["HealthChecks", "threshold"]

_MULTIPLIER = 5
_MINIMUM = timedelta(minutes=3)


def threshold(poll_interval: timedelta) -> timedelta:
    """How long after the last successful fetch the provider still counts as healthy."""
    return max(poll_interval * _MULTIPLIER, _MINIMUM)


class HealthChecks:
    """The two checks of ``source``, served at the configured paths."""

    def __init__(self, config: HealthChecksConfig, source: KeySource) -> None:
        """Judge ``source`` against five of its poll intervals (three minutes at least)."""
        self._config = config
        self._source = source
        self._threshold = threshold(source.interval).total_seconds()
        self._started = time.monotonic()

    def application(self) -> web.Application:
        """An aiohttp application answering the two paths (and 404 elsewhere)."""
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        return app

    def _fresh(self) -> bool:
        last = self._source.last_successful_poll
        return last is not None and time.monotonic() - last < self._threshold

    def ready(self) -> bool:
        """Whether the keys were fetched within the threshold."""
        return self._fresh()

    def live(self) -> bool:
        """Ready, or not yet past the threshold since start-up without a first fetch."""
        if self._source.last_successful_poll is None:
            return time.monotonic() - self._started < self._threshold
        return self._fresh()

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        checks = {self._config.ready_path: self.ready, self._config.live_path: self.live}
        check = checks.get(request.path)
        if check is None:
            return plain_error(404, "404 page not found")
        if request.method != "GET":
            return plain_error(405, "method not allowed")
        return web.Response(status=200 if check() else 500)
