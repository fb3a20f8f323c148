"""``BundlePublisher "k8s_configmap"``: server-side apply of the bundle to a ConfigMap per cluster.

As SPIRE's plugin: each entry of ``clusters`` names a ConfigMap (namespace, name, key), the
format the bundle is written in there and, optionally, the kubeconfig and a refresh hint
that replaces the bundle's. Publishing applies ``{data: {<key>: <bundle>}}`` with the field
manager ``spire-bundlepublisher-k8s_configmap``: the ConfigMap is created when missing, other
keys (owned by other managers) are left alone, and a key another manager owns is refused by
the API server (not forced). Every cluster is tried; the failures are reported together,
and the bundle is remembered as published only when every cluster took it, so the server's
next call (at the next change or within 30 seconds) tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from pyspire.plugin import CoreConfig, PluginLogger, hookimpl, parse_plugin_data
from pyspire.plugin.bundle_format import BundleFormat
from pyspire.plugin.errors import Internal, PluginConfigError
from pyspire.spiffe import Bundle
from pyspire_k8s_common import api_client, status_reason

__all__ = ["ClusterConfig", "K8sConfigMapConfig", "K8sConfigMapPublisher"]

FIELD_MANAGER = "spire-bundlepublisher-k8s_configmap"
TIMEOUT_SECONDS = 10.0
_HIGH_REFRESH_HINT = timedelta(hours=24)
_MINIMUM_REFRESH_HINT = timedelta(minutes=1)


@dataclass(frozen=True)
class ClusterConfig:
    """One entry of ``clusters``."""

    format: str = ""
    namespace: str = ""
    configmap_name: str = ""
    configmap_key: str = ""
    kubeconfig_path: str = ""
    refresh_hint: timedelta = timedelta(0)
    """Replaces the bundle's refresh hint when set (whole seconds, as SPIRE keeps it)."""

    def checked(self, cluster_id: str) -> BundleFormat:
        """Refuse what cannot work, naming the key; the bundle format."""
        where = f"clusters.{cluster_id}"
        for key, what in (
            ("format", "bundle format"),
            ("namespace", "namespace"),
            ("configmap_name", "configmap name"),
            ("configmap_key", "configmap key"),
        ):
            if not getattr(self, key):
                raise PluginConfigError(f"{where}.{key}", f'missing {what} in cluster "{cluster_id}"')
        if self.refresh_hint < timedelta(0):
            raise PluginConfigError(f"{where}.refresh_hint", "a refresh hint cannot be negative")
        try:
            return BundleFormat.parse(self.format)
        except ValueError as err:
            raise PluginConfigError(f"{where}.format", str(err)) from None


@dataclass(frozen=True)
class K8sConfigMapConfig:
    """``plugin_data`` of ``BundlePublisher "k8s_configmap"`` (SPIRE's keys)."""

    clusters: dict[str, ClusterConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class _Cluster:
    cluster_id: str
    config: ClusterConfig
    format: BundleFormat
    api: kubernetes.client.CoreV1Api

    def render(self, bundle: Bundle) -> str:
        seconds = int(self.config.refresh_hint.total_seconds())
        if seconds:
            bundle = bundle.with_refresh_hint(timedelta(seconds=seconds))
        return self.format.render(bundle).decode()

    def apply(self, data: str) -> None:
        config = self.config
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config.configmap_name, "namespace": config.namespace},
            "data": {config.configmap_key: data},
        }
        self.api.patch_namespaced_config_map(
            config.configmap_name,
            config.namespace,
            body,
            field_manager=FIELD_MANAGER,
            _content_type="application/apply-patch+yaml",
            _request_timeout=TIMEOUT_SECONDS,
        )


def _client(cluster_id: str, kubeconfig_path: str) -> kubernetes.client.CoreV1Api:
    """A client for the cluster, not retried on its own: the server publishes again within 30 seconds."""
    client = api_client(
        kubeconfig_path,
        key=f"clusters.{cluster_id}.kubeconfig_path",
        failure=f'failed to create Kubernetes client for cluster "{cluster_id}"',
    )
    return kubernetes.client.CoreV1Api(client)


def _clusters(plugin_data: Mapping[str, Any]) -> list[_Cluster]:
    config = parse_plugin_data(K8sConfigMapConfig, plugin_data)
    clusters = []
    for cluster_id, cluster in sorted(config.clusters.items()):
        bundle_format = cluster.checked(cluster_id)
        clusters.append(_Cluster(cluster_id, cluster, bundle_format, _client(cluster_id, cluster.kubeconfig_path)))
    return clusters


class K8sConfigMapPublisher:
    """Applies the server's bundle to the ConfigMap of each configured cluster."""

    def __init__(self) -> None:
        self._clusters: list[_Cluster] = []
        self._logger: PluginLogger | None = None
        self._published: Bundle | None = None
        self._lock = threading.Lock()

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        _clusters(plugin_data)  # reads the kubeconfig files; sends no request

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        clusters = _clusters(plugin_data)
        if not clusters:
            logger.warning("No clusters configured, bundle will not be published")
        for cluster in clusters:
            hint = cluster.config.refresh_hint
            if hint >= _HIGH_REFRESH_HINT:
                logger.info(
                    "Bundle endpoint refresh hint set to a high value. To cover the case of unscheduled trust "
                    "bundle updates, it's recommended to have a smaller value, e.g. 5m",
                    extra={"cluster_id": cluster.cluster_id},
                )
            elif hint and hint < _MINIMUM_REFRESH_HINT:
                logger.info(
                    "Bundle endpoint refresh hint set too low. SPIRE will not refresh more often than 1 minute",
                    extra={"cluster_id": cluster.cluster_id},
                )
        self._clusters = clusters
        self._logger = logger
        self._published = None

    @hookimpl
    def publish_bundle(self, bundle: Bundle) -> None:
        assert self._logger is not None
        with self._lock:
            if bundle == self._published:
                return
            failures = []
            for cluster in self._clusters:
                try:
                    cluster.apply(cluster.render(bundle))
                except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
                    reason = status_reason(err)
                    failures.append(f'failed to apply ConfigMap for cluster "{cluster.cluster_id}": {reason}')
                    continue
                config = cluster.config
                self._logger.debug(
                    "Bundle published to Kubernetes ConfigMap",
                    extra={
                        "cluster_id": cluster.cluster_id,
                        "format": cluster.format.value,
                        "kubeconfig_path": config.kubeconfig_path,
                        "namespace": config.namespace,
                        "configmap": config.configmap_name,
                        "key": config.configmap_key,
                    },
                )
            if failures:
                raise Internal("; ".join(failures))
            self._published = bundle
