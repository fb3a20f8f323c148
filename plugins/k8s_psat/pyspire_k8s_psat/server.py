"""The server side of ``k8s_psat``: the cluster's API server vouches for the agent's token.

Per attestation: the payload names a configured cluster; that cluster's TokenReview must
authenticate the token for the configured audience; the service account must be on the
cluster's allow-list; the pod the token is bound to must still exist with the UID the token
names; its node gives the agent ID (``/k8s_psat/<cluster>/<node UID>``, or ``.../pod/<pod
UID>``). Tokens are short-lived and bound to a pod, so the node may attest again
(re-attestable) — a new token is a new proof, a replayed token outside its pod's life is not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspire.plugin import AttestationResult, Challenge, hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, InvalidArgument, NotFound, PermissionDenied, PluginConfigError

from pyspire_k8s_psat.kube_client import POD_NAME_KEY, POD_UID_KEY, ClusterClient

__all__ = ["ServerK8sPsat"]

PLUGIN_NAME = "k8s_psat"
MAX_PAYLOAD_BYTES = 64 * 1024
_SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class ClusterConfig:
    """One entry of ``clusters``."""

    service_account_allow_list: list[str] = field(default_factory=list)
    audience: list[str] = field(default_factory=lambda: ["spire-server"])
    kube_config_file: str = ""
    allowed_node_label_keys: list[str] = field(default_factory=list)
    allowed_pod_label_keys: list[str] = field(default_factory=list)
    use_pod_uid_for_agent_id: bool = False


@dataclass(frozen=True)
class ServerK8sPsatConfig:
    """``plugin_data`` of the server's ``NodeAttestor "k8s_psat"``."""

    clusters: dict[str, ClusterConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class _Cluster:
    config: ClusterConfig
    client: ClusterClient


def _single(extra: Mapping[str, tuple[str, ...]], key: str, cluster: str) -> str:
    values = extra.get(key, ())
    if len(values) != 1 or not values[0]:
        raise PermissionDenied(
            f'the token is not bound to a pod (no single "{key}" in its TokenReview) for cluster "{cluster}"'
        )
    return values[0]


class ServerK8sPsat:
    """Attests agents running in Kubernetes pods."""

    def __init__(self) -> None:
        self._clusters: dict[str, _Cluster] = {}

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(ServerK8sPsatConfig, plugin_data)
        clusters = {}
        for name, cluster in config.clusters.items():
            if not cluster.service_account_allow_list:
                raise PluginConfigError(f'clusters."{name}".service_account_allow_list', "at least one is required")
            for account in cluster.service_account_allow_list:
                if account.count(":") != 1 or not all(account.split(":")):
                    raise PluginConfigError(
                        f'clusters."{name}".service_account_allow_list', f'"{account}" is not "<namespace>:<name>"'
                    )
            clusters[name] = _Cluster(cluster, ClusterClient(name, cluster.kube_config_file))
        self._clusters = clusters

    @hookimpl
    def attest_node(self, payload: bytes, challenge: Challenge) -> AttestationResult:
        cluster_name, token = self._payload(payload)
        cluster = self._clusters.get(cluster_name)
        if cluster is None:
            raise InvalidArgument(f'not configured for cluster "{cluster_name}"')
        config = cluster.config

        review = cluster.client.review(token, config.audience)
        if not review.authenticated:
            reason = f": {review.error}" if review.error else ""
            raise PermissionDenied(
                f'token not authenticated according to TokenReview API for cluster "{cluster_name}"{reason}'
            )
        if config.audience and not set(review.audiences) & set(config.audience):
            raise PermissionDenied(f'the token is not for audience {config.audience} in "{cluster_name}"')
        if not review.username.startswith(_SERVICE_ACCOUNT_PREFIX) or review.username.count(":") != 3:
            raise PermissionDenied(f'"{review.username}" is not a service account')
        namespace, account = review.username.removeprefix(_SERVICE_ACCOUNT_PREFIX).split(":")
        if f"{namespace}:{account}" not in config.service_account_allow_list:
            raise PermissionDenied(
                f'"{namespace}:{account}" is not an allowed service account for cluster "{cluster_name}"'
            )
        pod_name = _single(review.extra, POD_NAME_KEY, cluster_name)
        pod_uid = _single(review.extra, POD_UID_KEY, cluster_name)

        try:
            pod = cluster.client.pod(namespace, pod_name)
        except NotFound:
            raise PermissionDenied(f'pod {namespace}/{pod_name} no longer exists in "{cluster_name}"') from None
        if pod.uid != pod_uid:
            raise PermissionDenied(
                f'pod UID mismatch for pod "{pod_name}" in cluster "{cluster_name}": token bound to pod UID "{pod_uid}"'
            )
        if not pod.node_name:
            raise PermissionDenied(f"pod {namespace}/{pod_name} is not scheduled on a node")
        try:
            node_uid, node_labels = cluster.client.node(pod.node_name)
        except NotFound:
            raise PermissionDenied(f'node "{pod.node_name}" no longer exists in "{cluster_name}"') from None
        if not node_uid:
            raise Internal(f'node UID is empty for cluster "{cluster_name}"')

        values = [
            f"cluster:{cluster_name}",
            f"agent_ns:{namespace}",
            f"agent_sa:{account}",
            f"agent_pod_name:{pod_name}",
            f"agent_pod_uid:{pod_uid}",
            f"agent_node_ip:{pod.host_ip}",
            f"agent_node_name:{pod.node_name}",
            f"agent_node_uid:{node_uid}",
        ]
        values.extend(
            f"agent_node_label:{key}:{node_labels[key]}"
            for key in sorted(node_labels)
            if key in config.allowed_node_label_keys
        )
        values.extend(
            f"agent_pod_label:{key}:{pod.labels[key]}"
            for key in sorted(pod.labels)
            if key in config.allowed_pod_label_keys
        )
        suffix = f"pod/{pod_uid}" if config.use_pod_uid_for_agent_id else node_uid
        return AttestationResult(
            f"/{PLUGIN_NAME}/{cluster_name}/{suffix}",
            tuple(v for v in values if not v.endswith(":")),
            can_reattest=True,
        )

    @staticmethod
    def _payload(payload: bytes) -> tuple[str, str]:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(f"the attestation payload is larger than {MAX_PAYLOAD_BYTES} bytes")
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument("failed to unmarshal data payload: not JSON") from None
        if not isinstance(data, dict):
            raise InvalidArgument("the attestation payload must be a JSON object")
        cluster, token = data.get("cluster"), data.get("token")
        if not isinstance(cluster, str) or not cluster:
            raise InvalidArgument("missing cluster in attestation data")
        if not isinstance(token, str) or not token:
            raise InvalidArgument("missing token in attestation data")
        return cluster, token
