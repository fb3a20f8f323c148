"""The objects whose CA bundle ``k8sbundle`` keeps current, and how each is read and patched.

Three kinds, as in SPIRE: the ConfigMap (the PEM under one key), and, with the label options,
every validating and mutating webhook configuration and every APIService labelled
``<label>=true`` (the PEM, base64-encoded, as each webhook's ``clientConfig.caBundle`` or the
APIService's ``spec.caBundle``). Each patch is a strategic merge patch that carries the
``resourceVersion`` the object was read at, so a write racing another server's is refused by
the API server (409) instead of silently overwriting it; the caller reads again and retries.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from pyspire_k8s_common import api_client, status_reason

__all__ = ["ApiError", "ConflictError", "Target", "UpToDate", "connect", "targets_for"]

TIMEOUT_SECONDS = 10.0


class ApiError(Exception):
    """A request to the API server failed (the message says which and why)."""


class ConflictError(ApiError):
    """The object changed between our read and our patch (HTTP 409): read it again."""


class UpToDate(Exception):
    """The object already holds the bundle: nothing to patch."""


def connect(kube_config_file_path: str, key: str) -> kubernetes.client.ApiClient:
    """A client for the cluster of ``kube_config_file_path`` (in-cluster credentials when empty).

    Not retried on its own: the server notifies again at the next change, as SPIRE's does.
    """
    return api_client(kube_config_file_path, key=key)


def _call(action: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, _request_timeout=TIMEOUT_SECONDS, **kwargs)
    except ApiException as err:
        message = status_reason(err)
        if err.status == 409 and "AlreadyExists" not in message:
            raise ConflictError(f"{action}: {message}") from None
        raise ApiError(f"{action}: {message}") from None
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise ApiError(f"{action}: {err}") from None


class Target(Protocol):
    """One kind of object in one cluster."""

    def names(self) -> list[tuple[str, str]]:
        """The (namespace, name) of every object to keep current ("" namespace: cluster-wide)."""

    def get(self, namespace: str, name: str) -> Any:
        """The object as the API server has it now."""

    def patch_for(self, obj: Any, pem: bytes) -> dict[str, Any]:
        """The patch putting ``pem`` in ``obj``, at its resourceVersion; UpToDate if it holds it."""

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ConfigMapTarget:
    api: kubernetes.client.CoreV1Api
    namespace: str
    config_map: str
    config_map_key: str

    def names(self) -> list[tuple[str, str]]:
        # SPIRE lists the one ConfigMap by reading it: a missing one fails the whole notification.
        self.get(self.namespace, self.config_map)
        return [(self.namespace, self.config_map)]

    def get(self, namespace: str, name: str) -> Any:
        return _call(f"unable to get object {namespace}/{name}", self.api.read_namespaced_config_map, name, namespace)

    def patch_for(self, obj: Any, pem: bytes) -> dict[str, Any]:
        # Written even when equal, as SPIRE does: it is asked only when the bundle changed.
        return {
            "metadata": {"resourceVersion": obj.metadata.resource_version},
            "data": {self.config_map_key: pem.decode()},
        }

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        _call(f"unable to patch {namespace}/{name}", self.api.patch_namespaced_config_map, name, namespace, body)


def _webhooks_patch(obj: Any, pem: bytes) -> dict[str, Any]:
    encoded = base64.b64encode(pem).decode()
    webhooks = obj.webhooks or []
    if all(webhook.client_config.ca_bundle == encoded for webhook in webhooks):
        raise UpToDate
    return {
        "metadata": {"resourceVersion": obj.metadata.resource_version},
        "webhooks": [
            {
                "name": webhook.name,
                "admissionReviewVersions": webhook.admission_review_versions,
                "sideEffects": webhook.side_effects,
                "clientConfig": {"caBundle": encoded},
            }
            for webhook in webhooks
        ],
    }


@dataclass(frozen=True)
class ValidatingWebhookTarget:
    api: kubernetes.client.AdmissionregistrationV1Api
    label: str

    def names(self) -> list[tuple[str, str]]:
        listed = _call(
            "unable to get list",
            self.api.list_validating_webhook_configuration,
            label_selector=f"{self.label}=true",
        )
        return [("", item.metadata.name) for item in listed.items]

    def get(self, namespace: str, name: str) -> Any:
        return _call(f"unable to get object {name}", self.api.read_validating_webhook_configuration, name)

    def patch_for(self, obj: Any, pem: bytes) -> dict[str, Any]:
        return _webhooks_patch(obj, pem)

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        _call(f"unable to patch {name}", self.api.patch_validating_webhook_configuration, name, body)


@dataclass(frozen=True)
class MutatingWebhookTarget:
    api: kubernetes.client.AdmissionregistrationV1Api
    label: str

    def names(self) -> list[tuple[str, str]]:
        listed = _call(
            "unable to get list",
            self.api.list_mutating_webhook_configuration,
            label_selector=f"{self.label}=true",
        )
        return [("", item.metadata.name) for item in listed.items]

    def get(self, namespace: str, name: str) -> Any:
        return _call(f"unable to get object {name}", self.api.read_mutating_webhook_configuration, name)

    def patch_for(self, obj: Any, pem: bytes) -> dict[str, Any]:
        return _webhooks_patch(obj, pem)

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        _call(f"unable to patch {name}", self.api.patch_mutating_webhook_configuration, name, body)


@dataclass(frozen=True)
class ApiServiceTarget:
    api: kubernetes.client.ApiregistrationV1Api
    label: str

    def names(self) -> list[tuple[str, str]]:
        listed = _call("unable to get list", self.api.list_api_service, label_selector=f"{self.label}=true")
        return [("", item.metadata.name) for item in listed.items]

    def get(self, namespace: str, name: str) -> Any:
        return _call(f"unable to get object {name}", self.api.read_api_service, name)

    def patch_for(self, obj: Any, pem: bytes) -> dict[str, Any]:
        encoded = base64.b64encode(pem).decode()
        if obj.spec.ca_bundle == encoded:
            raise UpToDate
        return {
            "metadata": {"resourceVersion": obj.metadata.resource_version},
            "spec": {
                "caBundle": encoded,
                "groupPriorityMinimum": obj.spec.group_priority_minimum,
                "versionPriority": obj.spec.version_priority,
            },
        }

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        _call(f"unable to patch {name}", self.api.patch_api_service, name, body)


def targets_for(
    client: kubernetes.client.ApiClient,
    *,
    namespace: str,
    config_map: str,
    config_map_key: str,
    webhook_label: str,
    api_service_label: str,
) -> tuple[list[Target], list[Target]]:
    """(the ConfigMap, the labelled kinds) of one cluster; the second is empty without labels."""
    config_map_target = ConfigMapTarget(kubernetes.client.CoreV1Api(client), namespace, config_map, config_map_key)
    labelled: list[Target] = []
    if webhook_label:
        admission = kubernetes.client.AdmissionregistrationV1Api(client)
        labelled += [MutatingWebhookTarget(admission, webhook_label), ValidatingWebhookTarget(admission, webhook_label)]
    if api_service_label:
        labelled.append(ApiServiceTarget(kubernetes.client.ApiregistrationV1Api(client), api_service_label))
    return [config_map_target], labelled
