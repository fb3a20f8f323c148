"""The running provider: the key source polling, the endpoints listening, until a stop signal.

It listens in exactly one of three ways: HTTPS with ``serving_cert_file``, plain HTTP on
``listen_socket_path`` (mode 0777, for the proxy in front; removed again at exit), or plain
HTTP on ``insecure_addr``. Health checks, when configured, listen on their own port. Signals
are the daemons' (:mod:`pyspire.signals`): SIGTERM and SIGINT stop it cleanly (exit 0),
SIGUSR2 and SIGHUP reopen ``log_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import stat
from pathlib import Path

from aiohttp import web
from pyspire.listening import AcceptExhaustionLog, listen_backlog, tcp_listener, unix_listener
from pyspire.signals import handle_signals

from pyspire_oidc_discovery.config import ProviderConfig
from pyspire_oidc_discovery.domains import DomainPolicy
from pyspire_oidc_discovery.handler import DiscoveryHandler
from pyspire_oidc_discovery.health import HealthChecks
from pyspire_oidc_discovery.serving_certificate import CertificateError, ServingCertificate
from pyspire_oidc_discovery.sources import KeySource, key_source

__all__ = ["StartupError", "serve"]

_log = logging.getLogger("pyspire.oidc_discovery")

SHUTDOWN_TIMEOUT = 5.0
"""How long requests in flight may take to finish once a stop is asked for."""


class StartupError(Exception):
    """The provider cannot start (a port taken, a certificate unreadable); the message says which."""


def _warn_about(config: ProviderConfig) -> None:
    if config.allow_insecure_scheme:
        _log.warning(
            "allow_insecure_scheme is enabled. JWKS keys will be served over HTTP. Only enable this when the "
            "network path to the provider is trusted end-to-end (for example, when TLS is terminated at a trusted "
            "reverse proxy or load balancer on a private network)"
        )
        if config.serving_cert_file is not None:
            _log.warning("allow_insecure_scheme has no effect with serving_cert_file: every request arrives over TLS")
    if config.jwt_issuer and not config.jwks_uri:
        _log.warning("The jwt_issuer configuration also sets the jwks_uri (under the issuer) when jwks_uri is not set")


def _prepare_socket(path: Path) -> None:
    """Remove a socket left by an earlier run; refuse to replace anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"listen_socket_path {path} exists and is not a socket; remove it or choose another path")
    path.unlink()


async def _listen(
    config: ProviderConfig, runner: web.AppRunner, certificate: ServingCertificate | None
) -> web.BaseSite:
    context = None
    if config.insecure_address is not None:
        where = f"insecure_addr {config.insecure_addr}"
    elif config.listen_socket_path:
        where = f"listen_socket_path {config.listen_socket_path}"
    else:
        # The config requires one listener; this is the last.
        assert config.serving_cert_file is not None
        assert certificate is not None
        context = certificate.context
        where = f"serving_cert_file addr {config.serving_cert_file.addr}"
    try:
        sock = _listening_socket(config)
    except OSError as err:
        raise StartupError(f"cannot listen on {where}: {err.strerror or err}") from None
    site = web.SockSite(runner, sock, ssl_context=context, backlog=listen_backlog())
    try:
        await site.start()
    except OSError as err:
        sock.close()
        raise StartupError(f"cannot listen on {where}: {err.strerror or err}") from None
    if config.insecure_address is not None:
        _log.warning("Serving HTTP (insecure)", extra={"address": config.insecure_addr})
    elif config.listen_socket_path:
        _log.info("Serving HTTP", extra={"network": "unix", "address": config.listen_socket_path})
    else:
        assert config.serving_cert_file is not None
        _log.info(
            "Serving HTTPS using certificate loaded from disk",
            extra={"cert_file_path": config.serving_cert_file.cert_file_path, "address": config.serving_cert_file.addr},
        )
    return site


def _listening_socket(config: ProviderConfig) -> socket.socket:
    if config.insecure_address is not None:
        return tcp_listener(config.insecure_address.host, config.insecure_address.port)
    if config.listen_socket_path:
        path = Path(config.listen_socket_path)
        _prepare_socket(path)
        # The proxy in front runs as another user, as in SPIRE; the mode is set before it listens.
        return unix_listener(str(path), 0o777)
    assert config.serving_cert_file is not None
    return tcp_listener(config.serving_cert_file.address.host, config.serving_cert_file.address.port)


async def _health_runner(config: ProviderConfig, source: KeySource) -> web.AppRunner | None:
    if config.health_checks is None:
        return None
    runner = web.AppRunner(HealthChecks(config.health_checks, source).application(), access_log=None)
    await runner.setup()
    try:
        sock = tcp_listener(None, config.health_checks.bind_port)
        site = web.SockSite(runner, sock, backlog=listen_backlog())
        try:
            await site.start()
        except BaseException:
            sock.close()
            raise
    except OSError as err:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on health_checks bind_port {config.health_checks.bind_port}: {err.strerror or err}"
        ) from None
    _log.info("Serving health checks", extra={"port": config.health_checks.bind_port})
    return runner


async def serve(config: ProviderConfig) -> int:
    """Run until a stop signal; the exit code. StartupError when it cannot start."""
    _warn_about(config)
    AcceptExhaustionLog().install(asyncio.get_running_loop())
    certificate = None
    if config.serving_cert_file is not None:
        try:
            certificate = ServingCertificate(
                Path(config.serving_cert_file.cert_file_path), Path(config.serving_cert_file.key_file_path)
            )
        except CertificateError as err:
            raise StartupError(str(err)) from None
    source = key_source(config)
    handler = DiscoveryHandler(config, source, DomainPolicy(config.domains))
    runner = web.AppRunner(handler.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    tasks: list[asyncio.Task[None]] = []
    health: web.AppRunner | None = None
    listening = False
    try:
        # Everything that can refuse to start happens before the signal handlers are installed:
        # a refusal ends the process with its message, and leaves a caller's handlers as they were.
        await _listen(config, runner, certificate)
        listening = True
        health = await _health_runner(config, source)
        with handle_signals() as stop:
            tasks.append(asyncio.create_task(source.run(), name="poll keys"))
            if certificate is not None:
                assert config.serving_cert_file is not None
                interval = config.serving_cert_file.sync_interval.total_seconds()
                tasks.append(asyncio.create_task(certificate.watch(interval), name="watch certificate"))
            await stop.wait()
        return stop.exit_code
    finally:
        await _stop(tasks)
        if not tasks:
            await source.close()
        if health is not None:
            await health.cleanup()
        await runner.cleanup()
        if listening and config.listen_socket_path:
            with contextlib.suppress(FileNotFoundError):
                Path(config.listen_socket_path).unlink()


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
