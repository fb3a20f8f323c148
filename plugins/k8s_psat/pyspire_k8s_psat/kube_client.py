"""One cluster's API server, through the official Kubernetes client and a kubeconfig.

With ``kube_config_file`` the client authenticates as that file says (token, client
certificate, exec plugin...); without it the server is assumed to run in the cluster and uses
the in-cluster service account. Calls time out after ``TIMEOUT_SECONDS`` and are not retried
here: a failed attestation is retried by the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from pyspire.plugin.errors import Internal, NotFound
from pyspire_k8s_common import api_client

__all__ = ["ClusterClient", "Pod", "TokenReview"]

TIMEOUT_SECONDS = 10.0
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"


@dataclass(frozen=True)
class TokenReview:
    """What the API server says about a token."""

    authenticated: bool
    username: str = ""
    audiences: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Pod:
    uid: str
    node_name: str
    host_ip: str
    labels: Mapping[str, str]


class ClusterClient:
    """TokenReview, pods and nodes of one cluster."""

    def __init__(self, cluster: str, kube_config_file: str) -> None:
        self._cluster = cluster
        self._api = api_client(kube_config_file, key=f'clusters."{cluster}"')

    def _call(self, action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, _request_timeout=TIMEOUT_SECONDS, **kwargs)
        except ApiException as err:
            if err.status == 404:
                raise NotFound(f"{action} in cluster {self._cluster!r}: not found") from None
            raise Internal(f"{action} in cluster {self._cluster!r} failed: HTTP {err.status} {err.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise Internal(f"{action} in cluster {self._cluster!r} failed: {err}") from None

    def review(self, token: str, audiences: list[str]) -> TokenReview:
        """Ask the API server whether ``token`` is valid for ``audiences`` (its own when empty)."""
        spec = kubernetes.client.V1TokenReviewSpec(token=token, audiences=audiences or None)
        body = kubernetes.client.V1TokenReview(spec=spec)
        api = kubernetes.client.AuthenticationV1Api(self._api)
        result = self._call("TokenReview", api.create_token_review, body)
        status = result.status
        if status is None:
            raise Internal(f"TokenReview in cluster {self._cluster!r} returned no status")
        user = status.user
        return TokenReview(
            authenticated=bool(status.authenticated),
            username=(user.username or "") if user else "",
            audiences=tuple(status.audiences or ()),
            extra={key: tuple(values or ()) for key, values in ((user.extra or {}) if user else {}).items()},
            error=status.error or "",
        )

    def pod(self, namespace: str, name: str) -> Pod:
        api = kubernetes.client.CoreV1Api(self._api)
        pod = self._call(f"reading pod {namespace}/{name}", api.read_namespaced_pod, name, namespace)
        return Pod(
            uid=pod.metadata.uid or "",
            node_name=(pod.spec.node_name if pod.spec else "") or "",
            host_ip=(pod.status.host_ip if pod.status else "") or "",
            labels=dict(pod.metadata.labels or {}),
        )

    def node(self, name: str) -> tuple[str, Mapping[str, str]]:
        """The node's UID and labels."""
        api = kubernetes.client.CoreV1Api(self._api)
        node = self._call(f"reading node {name}", api.read_node, name)
        return node.metadata.uid or "", dict(node.metadata.labels or {})
