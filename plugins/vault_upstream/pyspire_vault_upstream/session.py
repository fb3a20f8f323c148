"""A logged-in Vault client that stays logged in.

The CA is signed rarely (at start and at each rotation, hours or days apart) while Vault
tokens commonly live minutes to hours. So, as SPIRE does, the token is renewed in the
background for as long as Vault allows (at two thirds of each lease), and when it cannot be
renewed any more, or Vault refuses it, the session logs in again before the next signing.
A static ``token_auth`` token cannot be replaced: once Vault refuses it, signing fails with
that reason until an operator provides a new one.

Every failure leaves here as a plugin error whose message names Vault, the request and
Vault's own words; tokens and secret IDs never appear in messages or logs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
from pyspire.plugin import FailedPrecondition, Internal, PermissionDenied, PluginError, Unavailable

from pyspire_vault_upstream.config import AppRoleAuth, CertAuth, K8sAuth, TokenAuth, VaultSettings

__all__ = ["Lease", "VaultSession"]

_T = TypeVar("_T")

_log = logging.getLogger("pyspire.upstreamauthority.vault")

REQUEST_TIMEOUT = 10.0
RENEW_FRACTION = 2 / 3
"""A lease is renewed once this much of it has passed (Vault's own clients do the same)."""
EXPIRY_MARGIN = 5.0
"""A lease this close to its end (or within its last tenth) is treated as expired: a request would race it."""


@dataclass(frozen=True)
class Lease:
    """The current token's lease as Vault described it when it was issued or renewed."""

    duration: float
    """Seconds the token lives from ``obtained``; 0 means it never expires."""
    renewable: bool
    obtained: float

    def expired(self, now: float) -> bool:
        margin = min(EXPIRY_MARGIN, self.duration / 10)
        return self.duration > 0 and now >= self.obtained + self.duration - margin

    def renew_at(self) -> float | None:
        if self.duration <= 0 or not self.renewable:
            return None
        return self.obtained + self.duration * RENEW_FRACTION


class VaultSession:
    """Signs with Vault's PKI engine through an hvac client it keeps authenticated."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.RLock()
        self._client: hvac.Client | None = None
        self._lease: Lease | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.renewals = 0
        """Successful renewals so far (for metrics and tests)."""

    @property
    def lease(self) -> Lease | None:
        """The lease of the token in use (None before the first login)."""
        return self._lease

    def sign_intermediate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/<pki mount>/root/sign-intermediate``; Vault's ``data`` object."""
        mount = self._settings.pki_mount_point
        action = f"signing the intermediate CA at {mount}/root/sign-intermediate"
        response = self.call(
            action,
            lambda client: client.secrets.pki.sign_intermediate(
                csr=payload["csr"],
                common_name=payload["common_name"],
                extra_params={k: v for k, v in payload.items() if k not in ("csr", "common_name")},
                mount_point=mount,
            ),
        )
        if not isinstance(response, dict) or not isinstance(response.get("data"), dict):
            raise Internal(f"{action}: the response has no data object")
        _log_warnings(action, response)
        return response["data"]

    def call(self, action: str, request: Callable[[hvac.Client], _T]) -> _T:
        """Run ``request`` with the logged-in client; its failures become plugin errors naming ``action``.

        A refusal (403) makes the session log in again and retry once: the token may have been
        revoked or outlived its lease. Other plugins on Vault (the ``hashicorp_vault`` key
        manager) make their calls through here so that they log in and renew the same way.
        """
        with self._lock:
            for attempt in (1, 2):
                client = self._logged_in()
                try:
                    with _vault_errors(action, self._settings.vault_addr):
                        return request(client)
                except PermissionDenied:
                    if attempt == 2:
                        raise
                    _log.info("Vault refused the token; logging in again")
                    self._forget_login()
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop renewing and drop the connection; the token is not revoked.

        A ``token_auth`` token belongs to the operator, and a login token dies with its lease.
        """
        self._stop.set()
        with self._lock:
            renewer = self._renewer
        if renewer is not None:
            renewer.join(timeout=REQUEST_TIMEOUT + 1)
        with self._lock:
            if self._client is not None:
                self._client.adapter.close()
            self._client = None

    # --- login -------------------------------------------------------------------------

    def _logged_in(self) -> hvac.Client:
        if self._client is not None and self._lease is not None and not self._lease.expired(self._clock()):
            return self._client
        self._forget_login()
        settings = self._settings
        client = hvac.Client(
            url=settings.vault_addr,
            token="",  # never the ambient VAULT_TOKEN or ~/.vault-token: only what was configured
            verify=settings.verify,
            cert=settings.client_certificate,
            timeout=self._timeout,
            namespace=settings.namespace or None,
        )
        auth = settings.auth
        with _vault_errors(f"logging in ({_describe(auth)})", settings.vault_addr):
            if isinstance(auth, TokenAuth):
                client.token = auth.token
                info = client.auth.token.lookup_self()
                data = info.get("data") if isinstance(info, dict) else None
                if not isinstance(data, dict):
                    raise Internal("auth/token/lookup-self answered without a data object")
                lease = Lease(float(data.get("ttl") or 0), bool(data.get("renewable")), self._clock())
            else:
                response = _login(client, auth)
                lease = _lease_of(response, self._clock())
        self._client, self._lease = client, lease
        _log.info(
            "Logged in to Vault",
            extra={"auth_method": _describe(auth), "lease_seconds": lease.duration, "renewable": lease.renewable},
        )
        self._start_renewing()
        return client

    def _forget_login(self) -> None:
        self._lease = None
        if self._client is not None:
            self._client.adapter.close()
        self._client = None

    # --- renewal -----------------------------------------------------------------------

    def _start_renewing(self) -> None:
        """Start the renewer unless one is running (it follows whatever lease is current)."""
        with self._lock:
            if self._renewer is None and self._lease is not None and self._lease.renew_at() is not None:
                self._renewer = threading.Thread(target=self._renew_forever, name="vault-token-renewer", daemon=True)
                self._renewer.start()

    def _renew_forever(self) -> None:
        while True:
            with self._lock:
                lease = self._lease
                renew_at = lease.renew_at() if lease is not None else None
                if renew_at is None or self._stop.is_set():
                    self._renewer = None
                    return
            if self._stop.wait(max(0.0, renew_at - self._clock())):
                continue
            with self._lock:
                if self._lease is not lease or self._client is None:
                    continue  # logged in again meanwhile: follow the new lease
                try:
                    with _vault_errors("renewing the token", self._settings.vault_addr):
                        response = self._client.auth.token.renew_self()
                    renewed = _lease_of(response, self._clock())
                    _log_warnings("renewing the token", response, level=logging.INFO)
                    self.renewals += 1
                    if renewed.duration <= 0:
                        # Capped at its max TTL to (less than) a second: not "never expires",
                        # but the end of this token. The next signing logs in again.
                        _log.info("The Vault token reached its max TTL; logging in again when needed")
                        self._lease = None
                        continue
                    self._lease = renewed
                    _log.debug("Renewed the Vault token", extra={"lease_seconds": renewed.duration})
                except PluginError as err:
                    # The next signing logs in again (or, for token_auth, reports Vault's refusal).
                    _log.warning("Could not renew the Vault token; will log in again when needed: %s", err)
                    self._lease = None


def _login(client: hvac.Client, auth: AppRoleAuth | CertAuth | K8sAuth) -> dict[str, Any]:
    if isinstance(auth, AppRoleAuth):
        return client.auth.approle.login(  # type: ignore[no-any-return]
            role_id=auth.approle_id, secret_id=auth.approle_secret_id, mount_point=auth.approle_auth_mount_point
        )
    if isinstance(auth, K8sAuth):
        try:
            jwt = Path(auth.token_path).read_text().strip()
        except OSError as err:
            raise FailedPrecondition(
                f"cannot read the Kubernetes service account token {auth.token_path}: {err.strerror}"
            ) from None
        return client.auth.kubernetes.login(  # type: ignore[no-any-return]
            role=auth.k8s_auth_role_name, jwt=jwt, mount_point=auth.k8s_auth_mount_point
        )
    # The client certificate is already on the connection (hvac's ``cert``); the login call
    # only names the role, as Vault's own CLI does.
    body = {"name": auth.cert_auth_role_name} if auth.cert_auth_role_name else {}
    return client.adapter.login(f"/v1/auth/{auth.cert_auth_mount_point}/login", json=body)  # type: ignore[no-any-return]


def _log_warnings(action: str, response: Any, level: int = logging.WARNING) -> None:
    """Pass on what Vault warned about (a certificate past its CA's end, a TTL capped by a max TTL)."""
    warnings = response.get("warnings") if isinstance(response, dict) else None
    if isinstance(warnings, list) and warnings:
        _log.log(level, "Vault warned while %s: %s", action, "; ".join(str(w) for w in warnings))


def _lease_of(response: Any, now: float) -> Lease:
    auth = response.get("auth") if isinstance(response, dict) else None
    if not isinstance(auth, dict) or not auth.get("client_token"):
        raise Internal("the login response carries no token")
    return Lease(float(auth.get("lease_duration") or 0), bool(auth.get("renewable")), now)


def _describe(auth: object) -> str:
    if isinstance(auth, TokenAuth):
        return "token_auth"
    if isinstance(auth, CertAuth):
        return f"cert_auth at auth/{auth.cert_auth_mount_point}"
    if isinstance(auth, AppRoleAuth):
        return f"approle_auth at auth/{auth.approle_auth_mount_point}"
    assert isinstance(auth, K8sAuth)
    return f"k8s_auth at auth/{auth.k8s_auth_mount_point}, role {auth.k8s_auth_role_name}"


@contextlib.contextmanager
def _vault_errors(action: str, address: str) -> Iterator[None]:
    """Turn what hvac and requests raise into plugin errors that say what failed and why."""
    try:
        yield
    except requests.exceptions.SSLError as err:
        raise Unavailable(
            f"{action}: TLS with {address} failed: {_reason(err)} "
            "(check that ca_cert_path holds the CA of Vault's certificate and, with cert_auth, "
            "that Vault accepts the client certificate)"
        ) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        raise Unavailable(f"{action}: cannot reach {address}: {_reason(err)}") from None
    except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as err:
        raise PermissionDenied(f"{action}: refused: {_errors(err)}") from None
    except hvac.exceptions.InvalidPath as err:
        raise FailedPrecondition(f"{action}: no such path (check the mount points): {_errors(err)}") from None
    except (
        hvac.exceptions.VaultDown,
        hvac.exceptions.BadGateway,
        hvac.exceptions.InternalServerError,
        hvac.exceptions.RateLimitExceeded,
    ) as err:
        raise Unavailable(f"{action}: Vault is not serving: {_errors(err)}") from None
    except hvac.exceptions.VaultError as err:
        raise FailedPrecondition(f"{action}: {_errors(err)}") from None
    except requests.exceptions.RequestException as err:
        raise Unavailable(f"{action}: {_reason(err)}") from None


def _errors(err: hvac.exceptions.VaultError) -> str:
    errors = getattr(err, "errors", None)
    if isinstance(errors, list) and errors:
        # Vault wraps some refusals as "1 error occurred:\n\t* permission denied\n\n": one line.
        return "; ".join(" ".join(str(e).split()) for e in errors)
    return str(err) or type(err).__name__


def _reason(err: Exception) -> str:
    """The innermost cause, which is what an operator can act on (refused, timed out, untrusted)."""
    cause: BaseException = err
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    return str(cause) or type(cause).__name__
