"""``SVIDStore "gcp_secretmanager"``: SPIRE's plugin, call for call.

Putting an SVID: ``GetSecret``; a secret that does not exist is created (automatic
replication, the label ``spire-svid`` = hex SHA-1 of the trust domain name, as Secret Manager
label values allow no dots); one that exists must carry that label with this trust domain's
value, or the plugin refuses to write it (a secret another deployment, or nobody's agent,
created is never touched). When the entry asks for an IAM binding (``role`` and
``serviceaccount``), a new secret always gets the policy; an existing one gets it unless its
policy is already exactly that single binding. Then ``AddSecretVersion`` with the document.

Deleting: a secret that does not exist is not an error, one without this deployment's label
is refused, and otherwise ``DeleteSecret`` is sent with the etag ``GetSecret`` returned, so a
secret changed in between (relabelled by someone else) is not deleted.

The plugin never reads a secret's payload: it needs no ``secretmanager.versions.access``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import google.auth
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import Credentials
from google.cloud import secretmanager
from google.oauth2 import service_account
from pyspire.plugin import CoreConfig, PluginLogger, hookimpl, parse_plugin_data
from pyspire.plugin.errors import Internal, InvalidArgument, PluginConfigError, PluginError, Unavailable
from pyspire.plugin.svid_document import secret_document
from pyspire.spiffe import Bundle, TrustDomain, X509Svid

from pyspire_gcp_secretmanager.options import SecretOptions

__all__ = ["DEFAULT_ENDPOINT", "LABEL", "GcpSecretManagerConfig", "GcpSecretManagerStore", "trust_domain_label"]

LABEL = "spire-svid"
"""The label that marks a secret as one this deployment created; its value names the trust domain."""
DEFAULT_ENDPOINT = "https://secretmanager.googleapis.com"
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_TIMEOUT = 20.0
"""Seconds per call: the agent calls again on its next round (5 s) anyway."""
# The REST transport lets requests' own errors through when Google cannot be reached at all.
_UNREACHABLE = (requests.ConnectionError, requests.Timeout, api_exceptions.ServiceUnavailable)
_GoogleErrors = (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, requests.RequestException)

T = TypeVar("T")


def trust_domain_label(trust_domain: TrustDomain) -> str:
    """The ``spire-svid`` label value for ``trust_domain``: hex SHA-1 of its name, as SPIRE computes it."""
    return hashlib.sha1(trust_domain.name.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class GcpSecretManagerConfig:
    """``plugin_data`` of ``SVIDStore "gcp_secretmanager"``: SPIRE's one key, and the endpoint."""

    service_account_file: str = ""
    """A service account key file; Application Default Credentials otherwise."""
    secret_manager_endpoint: str = DEFAULT_ENDPOINT
    """pyspire's addition: the Secret Manager API's base URL (a private endpoint, or a test double)."""

    @classmethod
    def parse(cls, plugin_data: Mapping[str, Any]) -> GcpSecretManagerConfig:
        """SPIRE's refusal of unknown keys (all of them, sorted), then the typed keys."""
        unknown = sorted(key for key in plugin_data if key not in cls.__dataclass_fields__)
        if unknown:
            raise PluginConfigError(unknown[0], f"unknown configurations detected: {','.join(unknown)}")
        config = parse_plugin_data(cls, plugin_data)
        if not config.secret_manager_endpoint.startswith(("https://", "http://")):
            raise PluginConfigError("secret_manager_endpoint", "must be an http:// or https:// URL")
        return config


def _credentials(config: GcpSecretManagerConfig) -> Credentials:
    """The credentials to call Secret Manager with: the file's, or Application Default Credentials."""
    try:
        if config.service_account_file:
            return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call,no-any-return]
                config.service_account_file, scopes=_SCOPES
            )
        default, _ = google.auth.default(scopes=_SCOPES)
    except (OSError, ValueError, auth_exceptions.GoogleAuthError) as err:
        raise PluginConfigError("service_account_file", f"failed to create secretmanager client: {err}") from None
    return default


def _google_error(action: str, err: Exception) -> PluginError:
    """A Google failure as the plugin reports it: unreachable (the agent retries) or refused."""
    if isinstance(err, _UNREACHABLE):
        return Unavailable(f"{action}: {err}")
    return Internal(f"{action}: {err}")


class GcpSecretManagerStore:
    """Keeps X509-SVIDs in Secret Manager secrets labelled ``spire-svid=<trust domain hash>``."""

    def __init__(self) -> None:
        self._client: secretmanager.SecretManagerServiceClient | None = None
        self._logger: PluginLogger | None = None
        self._label = ""
        self._lock = threading.Lock()

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        """The keys, and the service account file when one is named (Application Default
        Credentials are not looked for: that may ask the metadata server)."""
        config = GcpSecretManagerConfig.parse(plugin_data)
        if config.service_account_file:
            _credentials(config)

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        config = GcpSecretManagerConfig.parse(plugin_data)
        credentials = _credentials(config)
        client = secretmanager.SecretManagerServiceClient(
            credentials=credentials,
            transport="rest",
            client_options=ClientOptions(api_endpoint=config.secret_manager_endpoint),
        )
        with self._lock:
            previous, self._client, self._logger = self._client, client, logger
            self._label = trust_domain_label(core.trust_domain)
        if previous is not None:  # configured again: the old client's connections are not needed
            previous.transport.close()  # type: ignore[no-untyped-call]

    @hookimpl
    def put_x509_svid(
        self, svid: X509Svid, bundle: Bundle, federated_bundles: Mapping[TrustDomain, Bundle], metadata: Sequence[str]
    ) -> None:
        options = SecretOptions.parse(metadata)
        client = self._current()
        secret = self._get(client, options)
        found = secret is not None
        if secret is None:
            request = {
                "parent": options.parent,
                "secret_id": options.name,
                "secret": {"replication": {"automatic": {}}, "labels": {LABEL: self._label}},
            }
            secret = self._call(
                "failed to create secret", lambda: client.create_secret(request=request, timeout=_TIMEOUT)
            )
            self._log("Secret created", secret_name=secret.name)
        if options.wants_policy and self._should_set_policy(client, secret.name, options, found):
            policy = {"bindings": [{"role": options.role, "members": [options.service_account]}]}
            set_request = {"resource": options.secret_name, "policy": policy}
            updated = self._call(
                "failed to set IAM policy to secret",
                lambda: client.set_iam_policy(request=set_request, timeout=_TIMEOUT),
            )
            self._log("Secret IAM Policy updated", secret_name=secret.name, etag=updated.etag.decode(errors="replace"))
        payload = secret_document(svid, bundle, federated_bundles)
        add_request = {"parent": secret.name, "payload": {"data": payload}}
        version = self._call(
            "failed to add secret version", lambda: client.add_secret_version(request=add_request, timeout=_TIMEOUT)
        )
        self._log("Secret payload updated", name=version.name, state=version.state.name)

    @hookimpl
    def delete_x509_svid(self, metadata: Sequence[str]) -> None:
        options = SecretOptions.parse(metadata)
        client = self._current()
        secret = self._get(client, options)
        if secret is None:
            self._log("Secret to delete not found", secret_name=options.secret_name)
            return
        request = {"name": secret.name, "etag": secret.etag}
        self._call("failed to delete secret", lambda: client.delete_secret(request=request, timeout=_TIMEOUT))
        self._log("Secret deleted", secret_name=options.secret_name)

    @hookimpl
    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.transport.close()  # type: ignore[no-untyped-call]

    def _current(self) -> secretmanager.SecretManagerServiceClient:
        with self._lock:
            if self._client is None:
                raise Internal("plugin is not configured")
            return self._client

    def _get(self, client: secretmanager.SecretManagerServiceClient, options: SecretOptions) -> Any | None:
        """The secret, None when there is none; refused when this deployment did not create it."""
        try:
            secret = client.get_secret(request={"name": options.secret_name}, timeout=_TIMEOUT)
        except api_exceptions.NotFound:
            return None
        except _GoogleErrors as err:
            raise _google_error("failed to get secret", err) from None
        if secret.labels.get(LABEL) != self._label:
            raise InvalidArgument("secret is not managed by this SPIRE deployment")
        return secret

    def _should_set_policy(
        self, client: secretmanager.SecretManagerServiceClient, name: str, options: SecretOptions, found: bool
    ) -> bool:
        """Always for a new secret; for an existing one, unless it already has exactly the one binding."""
        if not found:
            return True
        policy = self._call(
            "failed to get IAM policy", lambda: client.get_iam_policy(request={"resource": name}, timeout=_TIMEOUT)
        )
        if len(policy.bindings) != 1:
            return True
        binding = policy.bindings[0]
        return binding.role != options.role or list(binding.members) != [options.service_account]

    def _call(self, action: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except _GoogleErrors as err:
            raise _google_error(action, err) from None

    def _log(self, message: str, **fields: str) -> None:
        if self._logger is not None:
            self._logger.debug(message, extra=fields)
