"""How the agent comes to trust its server at first, and the rules its config must meet to start.

The rules are checked by ``pyspire-agent run`` before anything starts and by ``pyspire-agent
validate``, with the same messages: a way to trust the server (``trust_bundle_path``,
``trust_bundle_url`` or ``insecure_bootstrap``, as SPIRE requires), an admin socket apart from
the workload socket, and a ``trust_bundle_path`` that holds a readable bundle.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from pathlib import Path

from cryptography import x509

from pyspire.config.sections import AgentSection
from pyspire.daemon_cli import StartupRefusal
from pyspire.spiffe import Bundle, BundleError
from pyspire.telemetry.metrics import Metrics

__all__ = ["TRUST_BUNDLE_URL_TIMEOUT", "BootstrapGauges", "StartupError", "check_before_start", "read_trust_bundle"]

TRUST_BUNDLE_URL_TIMEOUT = 30.0


class StartupError(StartupRefusal):
    """The agent cannot start; the message says what to fix."""


def check_before_start(section: AgentSection, *, read_bundle_file: bool) -> None:
    """The agent's start-up rules on its config; raises StartupError.

    ``read_bundle_file`` also reads and parses ``trust_bundle_path`` (``validate`` does; ``run``
    reads it only when it has no saved identity, and then with :func:`read_trust_bundle`).
    """
    try:
        section.require_bootstrap()
    except ValueError as err:
        raise StartupError(str(err)) from None
    if section.admin_socket_path is not None and Path(section.admin_socket_path) == Path(section.socket_path):
        raise StartupError("admin_socket_path must differ from socket_path: workloads must not reach the admin API")
    if section.join_token_file is not None:
        # SPIRE reads the file when it loads the config, so a missing one stops run and validate.
        try:
            Path(section.join_token_file).read_bytes()
        except OSError as err:
            raise StartupError(f"cannot read join_token_file {section.join_token_file}: {err.strerror}") from None
    if read_bundle_file and section.trust_bundle_path is not None:
        read_trust_bundle(section)


def read_trust_bundle(section: AgentSection) -> tuple[x509.Certificate, ...]:
    """The roots of ``trust_bundle_path`` or ``trust_bundle_url`` (none for insecure bootstrap)."""
    if section.trust_bundle_path is not None:
        try:
            data = Path(section.trust_bundle_path).read_bytes()
        except OSError as err:
            raise StartupError(f"cannot read trust_bundle_path {section.trust_bundle_path}: {err.strerror}") from None
        return _parse(section, data, str(section.trust_bundle_path))
    if section.trust_bundle_url is not None:
        try:
            with urllib.request.urlopen(  # noqa: S310 - the config requires https://
                section.trust_bundle_url, timeout=TRUST_BUNDLE_URL_TIMEOUT, context=ssl.create_default_context()
            ) as response:
                data = response.read(4 * 1024 * 1024)
        except OSError as err:
            raise StartupError(f"cannot fetch trust_bundle_url {section.trust_bundle_url}: {err}") from None
        return _parse(section, data, section.trust_bundle_url)
    return ()


def _parse(section: AgentSection, data: bytes, where: str) -> tuple[x509.Certificate, ...]:
    trust_domain = section.trust_domain
    try:
        bundle = (
            Bundle.parse(trust_domain, data)
            if section.trust_bundle_format == "spiffe"
            else Bundle.parse_x509(trust_domain, data)
        )
    except BundleError as err:
        raise StartupError(f"the trust bundle from {where} cannot be read: {err}") from None
    if not bundle.x509_authorities:
        raise StartupError(f"the trust bundle from {where} holds no X.509 authority")
    return bundle.x509_authorities


class BootstrapGauges:
    """SPIRE's bootstrap gauges: whether the agent got its first SVID, since when it tries, how often.

    SPIRE labels them ``mode="bootstrap"`` while the agent attests without an SVID and
    ``mode="rebootstrap"`` once it has one, so an alert on ``bootstraped == 0`` or on a growing
    ``bootstrap_attempts`` written for SPIRE's agent works here. Once bootstrapped, SPIRE's
    ``bootstrap_seconds`` holds Go's zero time; here it holds 0, which reads the same to a
    rule that compares it with the current time.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._started: float | None = None
        self._attempts = 0

    def attempting(self) -> None:
        """One more attestation attempt, the first one starting the clock."""
        if self._started is None:
            self._started = time.time()
        self._attempts += 1
        self._report(bootstrapped=False, mode="bootstrap")

    def bootstrapped(self) -> None:
        """The agent holds an SVID (attested now, or kept from before a restart)."""
        self._started, self._attempts = None, 0
        self._report(bootstrapped=True, mode="rebootstrap")

    def _report(self, *, bootstrapped: bool, mode: str) -> None:
        labels = (("mode", mode),)
        self._metrics.set_gauge(("bootstraped",), 1.0 if bootstrapped else 0.0)
        self._metrics.set_gauge(("bootstrap_seconds",), float(int(self._started or 0)), labels)
        self._metrics.set_gauge(("bootstrap_attempts",), float(self._attempts), labels)
