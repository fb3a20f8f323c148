"""``Notifier "k8sbundle"``: the bundle's X.509 roots pushed to a ConfigMap, webhooks and APIServices.

On "bundle loaded" (start) and "bundle updated" the plugin writes the PEM of the bundle's
X.509 authorities to ``<namespace>/<config_map>`` under ``config_map_key`` in every configured
cluster, and, with ``webhook_label`` / ``api_service_label``, to every webhook configuration
and APIService labelled ``<label>=true``. Each write is SPIRE's read-modify-write: read the
object, take the newest bundle the plugin has been handed, patch at the resourceVersion read;
a 409 (another server wrote in between) reads again, up to client-go's ``DefaultRetry``
(5 attempts, 10 ms apart). Every object is tried; the failures are reported together, so a
"bundle loaded" that reached no ConfigMap stops the server, as SPIRE's does.

SPIRE watches the labelled kinds with informers, so a webhook or APIService created later
gets the bundle when it appears. pyspire lists them every ``LABELLED_POLL_SECONDS`` instead
(docs/compatibility.md): the same objects end with the same bundle, within seconds.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyspire.plugin import CoreConfig, PluginLogger, hookimpl, parse_plugin_data
from pyspire.plugin.errors import Internal, PluginConfigError
from pyspire.spiffe import Bundle

from pyspire_k8sbundle.targets import ApiError, ConflictError, Target, UpToDate, connect, targets_for

__all__ = ["ClusterConfig", "K8sBundleConfig", "K8sBundleNotifier"]

DEFAULT_NAMESPACE = "spire"
DEFAULT_CONFIG_MAP = "spire-bundle"
DEFAULT_CONFIG_MAP_KEY = "bundle.crt"
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_SECONDS = 0.01
LABELLED_POLL_SECONDS = 5.0
POLLER_JOIN_SECONDS = 15.0


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster: the root of ``plugin_data``, or an entry of ``clusters``."""

    namespace: str = ""
    config_map: str = ""
    config_map_key: str = ""
    kube_config_file_path: str = ""
    webhook_label: str = ""
    api_service_label: str = ""

    def with_defaults(self) -> ClusterConfig:
        return dataclasses.replace(
            self,
            namespace=self.namespace or DEFAULT_NAMESPACE,
            config_map=self.config_map or DEFAULT_CONFIG_MAP,
            config_map_key=self.config_map_key or DEFAULT_CONFIG_MAP_KEY,
        )


@dataclass(frozen=True)
class K8sBundleConfig(ClusterConfig):
    """``plugin_data`` of ``Notifier "k8sbundle"`` (SPIRE's keys): the local cluster, and more."""

    clusters: list[ClusterConfig] = field(default_factory=list)

    def resolved(self) -> list[tuple[str, ClusterConfig]]:
        """Every cluster to write to, with SPIRE's defaults, and the key prefix naming it in errors.

        As in SPIRE: the root settings are a cluster when any of them is set, or when nothing at
        all is (the in-cluster default); each ``clusters`` entry must name its kubeconfig.
        """
        root = ClusterConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ClusterConfig)})
        resolved = []
        if root != ClusterConfig() or not self.clusters:
            resolved.append(("", root.with_defaults()))
        for index, cluster in enumerate(self.clusters):
            prefix = f"clusters[{index}]."
            if not cluster.kube_config_file_path:
                raise PluginConfigError(
                    f"{prefix}kube_config_file_path", "cluster configuration is missing kube_config_file_path"
                )
            resolved.append((prefix, cluster.with_defaults()))
        return resolved


def _targets(plugin_data: Mapping[str, Any]) -> tuple[list[Target], list[Target]]:
    config = parse_plugin_data(K8sBundleConfig, plugin_data)
    config_maps: list[Target] = []
    labelled: list[Target] = []
    for prefix, cluster in config.resolved():
        client = connect(cluster.kube_config_file_path, f"{prefix}kube_config_file_path")
        mine, theirs = targets_for(
            client,
            namespace=cluster.namespace,
            config_map=cluster.config_map,
            config_map_key=cluster.config_map_key,
            webhook_label=cluster.webhook_label,
            api_service_label=cluster.api_service_label,
        )
        config_maps += mine
        labelled += theirs
    return config_maps, labelled


class K8sBundleNotifier:
    """Keeps the bundle's X.509 roots in ConfigMaps (and labelled webhooks and APIServices)."""

    def __init__(self) -> None:
        self._config_maps: list[Target] = []
        self._labelled: list[Target] = []
        self._logger: PluginLogger | None = None
        self._bundle: Bundle | None = None
        self._writing = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @hookimpl
    def validate(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        _targets(plugin_data)  # reads the kubeconfig files; sends no request

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig, logger: PluginLogger) -> None:
        self._config_maps, self._labelled = _targets(plugin_data)
        self._logger = logger
        if self._labelled:
            self._poller = threading.Thread(target=self._poll_labelled, name="k8sbundle-labelled", daemon=True)
            self._poller.start()

    @hookimpl
    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=POLLER_JOIN_SECONDS)

    @hookimpl
    def notify_bundle_loaded(self, bundle: Bundle) -> None:
        self._update_all(bundle)

    @hookimpl
    def notify_bundle_updated(self, bundle: Bundle) -> None:
        self._update_all(bundle)

    def _update_all(self, bundle: Bundle) -> None:
        self._bundle = bundle
        failures = []
        with self._writing:
            for target in self._config_maps + self._labelled:
                try:
                    names = target.names()
                except ApiError as err:
                    failures.append(f"unable to get list: {err}")
                    continue
                for namespace, name in names:
                    try:
                        self._update(target, namespace, name)
                    except ApiError as err:
                        failures.append(f"{namespace}/{name}: {err}" if namespace else f"{name}: {err}")
        if failures:
            raise Internal(f"unable to update: {', '.join(failures)}")

    def _update(self, target: Target, namespace: str, name: str) -> bool:
        """Read, patch at the version read with the newest bundle, again on a conflict; False: up to date."""
        attempt = 1
        while True:
            obj = target.get(namespace, name)
            bundle = self._bundle  # read after the object: a racing writer's change is corrected
            assert bundle is not None
            try:
                target.patch(namespace, name, target.patch_for(obj, bundle.marshal_x509_pem()))
                return True
            except UpToDate:
                return False
            except ConflictError:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
            attempt += 1
            time.sleep(CONFLICT_BACKOFF_SECONDS)

    def _poll_labelled(self) -> None:
        """Give labelled objects created since the last bundle change the current bundle."""
        assert self._logger is not None
        while not self._stop.wait(LABELLED_POLL_SECONDS):
            if self._bundle is None:
                continue  # "bundle loaded" has not come yet; it will write them all
            with self._writing:
                for target in self._labelled:
                    try:
                        for namespace, name in target.names():
                            if self._update(target, namespace, name):
                                self._logger.debug("Set bundle for object", extra={"object": name})
                    except Exception as err:  # one bad answer (an API error, an odd object) must not end the loop
                        self._logger.error("Unable to set bundle for object", extra={"error": str(err)})
