"""cert-manager's CertificateRequests (``cert-manager.io/v1``) through the kubernetes client.

cert-manager ships no Python client: the requests are custom objects, read and written as
the JSON of the API reference (``spec.request``, ``status.certificate`` and ``status.ca`` are
base64 of PEM). The conditions that end a request are cert-manager's: ``Denied=True`` (an
approver refused it), ``Ready=True`` (signed) and ``Ready=False`` with reason ``Failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from pyspire_k8s_common import api_client, status_reason

__all__ = ["TRUST_DOMAIN_LABEL", "CertificateRequests", "KubeError", "condition"]

GROUP = "cert-manager.io"
VERSION = "v1"
PLURAL = "certificaterequests"
TRUST_DOMAIN_LABEL = "cert-manager.spiffe.io/trust-domain"
"""Labels every request the plugin makes, so finished ones can be found and deleted (SPIRE's label)."""
TIMEOUT_SECONDS = 10.0

_TERMINAL = (("Denied", "True", ""), ("Ready", "True", ""), ("Ready", "False", "Failed"))


class KubeError(Exception):
    """A request to the API server failed; the message says which and why."""


def condition(request: Mapping[str, Any], kind: str, status: str, reason: str = "") -> Mapping[str, Any] | None:
    """The request's condition of type ``kind`` with ``status`` (and ``reason`` when given), if any."""
    for found in (request.get("status") or {}).get("conditions") or ():
        if (found.get("type"), found.get("status")) == (kind, status) and reason in ("", found.get("reason")):
            return dict(found)
    return None


@dataclass(frozen=True)
class CertificateRequests:
    """The CertificateRequests of one namespace."""

    api: kubernetes.client.CustomObjectsApi
    namespace: str

    @classmethod
    def connect(cls, kube_config_file: str, namespace: str) -> CertificateRequests:
        """A client for the cluster of ``kube_config_file`` (in-cluster when empty); reads files only."""
        # Not retried on its own: the server asks again for its CA.
        client = api_client(kube_config_file, key="kube_config_file", failure="failed to create cert-manager client")
        return cls(kubernetes.client.CustomObjectsApi(client), namespace)

    def _call(self, action: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(GROUP, VERSION, self.namespace, PLURAL, *args, _request_timeout=TIMEOUT_SECONDS, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            raise KubeError(f"{action}: {status_reason(err)}") from None

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("failed to create object", self.api.create_namespaced_custom_object, body))

    def get(self, name: str) -> dict[str, Any]:
        return dict(
            self._call("kubernetes cluster client failed to get object", self.api.get_namespaced_custom_object, name)
        )

    def finished(self, trust_domain: str) -> list[tuple[str, Mapping[str, Any]]]:
        """This trust domain's requests in a terminal state: (name, the condition that ended it)."""
        listed = self._call(
            "failed to list CertificateRequests",
            self.api.list_namespaced_custom_object,
            label_selector=f"{TRUST_DOMAIN_LABEL}={trust_domain}",
        )
        finished = []
        for item in listed.get("items") or ():
            ended = next((c for c in (condition(item, *terminal) for terminal in _TERMINAL) if c), None)
            if ended is not None:
                finished.append((item["metadata"]["name"], ended))
        return finished

    def delete(self, name: str) -> None:
        self._call(f"failed to delete CertificateRequest {name}", self.api.delete_namespaced_custom_object, name)
