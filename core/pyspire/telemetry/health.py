"""Health as SPIRE reports it: named checks, the ``health_checks`` HTTP listener, and gRPC health.

Each daemon registers SPIRE's checks under SPIRE's names (server: ``server``,
``catalog.datastore``, ``server.ca``, ``server.ca.rotator``; agent: ``agent``). A check says
whether its subsystem is live and ready, with details naming the error (``get_bundle_err``...).
The checker runs them every second until all pass, then once a minute (:data:`STEADY_INTERVAL`),
and logs a check that fails and one that recovers, as SPIRE does.

The HTTP listener answers ``live_path`` and ``ready_path`` with 200 when every check is live
(ready) and 500 otherwise, the body a JSON object of each check's details, as SPIRE's does.
The gRPC health service answers ``Check`` for the whole daemon (a named service is
INVALID_ARGUMENT, as in SPIRE) from a check of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthBase
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from pyspire.http_listener import HttpListener, Response

__all__ = ["STEADY_INTERVAL", "CheckResult", "GrpcHealth", "HealthChecker", "HealthListener"]

_log = logging.getLogger("pyspire.health")

STARTING_INTERVAL = 1.0
STEADY_INTERVAL = 60.0
CHECK_TIMEOUT = 60.0  # SPIRE gives each check a minute


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict; the details are what the HTTP answers show for it (empty when healthy)."""

    live: bool
    ready: bool
    details: Mapping[str, str] = field(default_factory=dict)
    """Shown by ``ready_path`` (and by ``live_path`` unless ``live_details`` says otherwise)."""
    live_details: Mapping[str, str] | None = None

    @classmethod
    def of(cls, detail_key: str, error: str | None) -> CheckResult:
        """Live and ready unless ``error``."""
        return cls(error is None, error is None, {detail_key: error} if error else {})


Check = Callable[[], Awaitable[CheckResult]]


@dataclass
class _State:
    result: CheckResult | None = None
    failures: int = 0
    first_failure: float = 0.0


class HealthChecker:
    """Runs the named checks in the background and keeps their last results."""

    def __init__(self) -> None:
        """No checks yet."""
        self._checks: dict[str, Check] = {}
        self._instant: dict[str, Callable[[], CheckResult]] = {}
        self._states: dict[str, _State] = {}
        self._task: asyncio.Task[None] | None = None
        self._checked = asyncio.Event()

    def add_check(self, name: str, check: Check) -> None:
        """Register ``check`` under SPIRE's ``name``; it runs on the checker's schedule."""
        if name in self._checks or name in self._instant:
            raise ValueError(f"check {name!r} has already been added")
        self._checks[name] = check
        self._states[name] = _State()

    def add_instant_check(self, name: str, check: Callable[[], CheckResult]) -> None:
        """Register a check of the daemon's own state, cheap enough to answer every request from."""
        if name in self._checks or name in self._instant:
            raise ValueError(f"check {name!r} has already been added")
        self._instant[name] = check

    async def _run_one(self, name: str, check: Check) -> None:
        try:
            result = await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except Exception as err:  # a check that breaks is a failing check, never a crash
            result = CheckResult(False, False, {"error": f"{type(err).__name__}: {err}"})
        state = self._states[name]
        failing = not (result.live and result.ready)
        was_failing = state.result is not None and not (state.result.live and state.result.ready)
        fields = {"check": name, "details": json.dumps(dict(result.details))}
        if failing and not was_failing:
            state.failures, state.first_failure = 1, time.monotonic()
            _log.warning("Health check failed", extra=fields)
        elif failing:
            state.failures += 1
        elif was_failing:
            _log.info(
                "Health check recovered",
                extra={
                    **fields,
                    "failures": state.failures,
                    "duration": round(time.monotonic() - state.first_failure, 3),
                },
            )
            state.failures = 0
        state.result = result

    async def check_now(self) -> None:
        """Run every check once."""
        await asyncio.gather(*(self._run_one(name, check) for name, check in self._checks.items()))
        self._checked.set()

    async def _loop(self) -> None:
        while True:
            await self.check_now()
            settled = all(s.result is not None and s.result.live and s.result.ready for s in self._states.values())
            await asyncio.sleep(STEADY_INTERVAL if settled else STARTING_INTERVAL)

    def start(self) -> None:
        """Start checking in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="pyspire-health")

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def state(self) -> tuple[bool, bool, dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        """(live, ready, live details, ready details by check); a check not run yet is neither."""
        results_by_name = {name: state.result for name, state in self._states.items()}
        results_by_name.update({name: check() for name, check in self._instant.items()})
        ready_details = {name: dict(r.details) if r else {} for name, r in results_by_name.items()}
        live_details = {
            name: dict(r.details if r.live_details is None else r.live_details) if r else {}
            for name, r in results_by_name.items()
        }
        results = list(results_by_name.values())
        live = all(r is not None and r.live for r in results)
        ready = all(r is not None and r.ready for r in results)
        return live, ready, live_details, ready_details


class HealthListener:
    """SPIRE's ``health_checks`` listener: ``live_path`` and ``ready_path`` over HTTP."""

    def __init__(self, checker: HealthChecker, address: str, port: int, live_path: str, ready_path: str) -> None:
        """Serve ``checker``'s state on ``address:port``."""

        async def live() -> Response:
            return self._answer(0)

        async def ready() -> Response:
            return self._answer(1)

        self._checker = checker
        self._listener = HttpListener(address.strip("[]") or "localhost", port, {live_path: live, ready_path: ready})

    def _answer(self, which: int) -> Response:
        live, ready, live_details, ready_details = self._checker.state()
        healthy, details = ((live, live_details), (ready, ready_details))[which]
        return Response(200 if healthy else 500, "application/json", (json.dumps(details) + "\n").encode())

    @property
    def port(self) -> int:
        """The port listened on."""
        return self._listener.port

    async def start(self) -> None:
        """Start listening (OSError when the address cannot be bound)."""
        await self._listener.start()
        _log.info("Serving health checks", extra={"address": f"{self._listener.address}:{self._listener.port}"})

    async def stop(self) -> None:
        """Stop listening."""
        await self._listener.stop()


class GrpcHealth(HealthBase):
    """``grpc.health.v1.Health`` for the whole daemon: SERVING while ``serving()`` holds."""

    def __init__(self, serving: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        """``serving()`` gives (healthy, why not) for each ``Check``."""
        self._serving = serving

    async def Check(self, stream: object) -> None:
        """SERVING or NOT_SERVING; a named service is refused, as SPIRE refuses it."""
        request: HealthCheckRequest = await stream.recv_message()  # type: ignore[attr-defined]
        if request.service:
            raise GRPCError(Status.INVALID_ARGUMENT, "per-service health is not supported")
        healthy, reason = await self._serving()
        if not healthy:
            _log.warning("Health check failed", extra={"reason": reason})
        status = HealthCheckResponse.SERVING if healthy else HealthCheckResponse.NOT_SERVING
        await stream.send_message(HealthCheckResponse(status=status))  # type: ignore[attr-defined]

    async def Watch(self, stream: object) -> None:
        """Not offered, as in SPIRE."""
        raise GRPCError(Status.UNIMPLEMENTED, "method Watch not implemented")
