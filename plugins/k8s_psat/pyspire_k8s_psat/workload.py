"""Agent WorkloadAttestor "k8s": a calling process's pod and container, as the kubelet knows them.

The process's cgroups name its pod (UID) and container (64 hex digits), in every layout the
kubelet and the container runtimes write: cgroup v1 and v2, cgroupfs and systemd drivers,
docker, containerd and CRI-O. The kubelet's ``/pods`` (on this node) then says what the pod
is. A process outside any pod has no k8s selectors; one inside a pod the kubelet does not
know yet is looked up again (``max_poll_attempts`` x ``poll_retry_interval``) and then
refused, never answered with a partial guess.

The kubelet is reached on its secure port (10250, TLS verified against ``kubelet_ca_path``
unless ``skip_kubelet_verification``; a bearer token, a client certificate or anonymous) or
on its read-only port over plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import urllib3
from pyspire.plugin import hookimpl, parse_plugin_data
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import Internal, NotFound, PermissionDenied, PluginConfigError, Unavailable

__all__ = ["K8sWorkloadAttestor", "pod_and_container"]

_log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KUBELET_TIMEOUT = 10.0

_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CONTAINER_ID = re.compile(r"(?:^|[-:/])([0-9a-f]{64})(?:\.scope)?$")


@dataclass(frozen=True)
class K8sWorkloadConfig:
    """``plugin_data`` of ``WorkloadAttestor "k8s"`` (SPIRE's keys)."""

    kubelet_read_only_port: int = 0
    kubelet_secure_port: int = 0
    kubelet_ca_path: str = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
    skip_kubelet_verification: bool = False
    token_path: str = f"{SERVICE_ACCOUNT_DIR}/token"
    certificate_path: str = ""
    private_key_path: str = ""
    use_anonymous_authentication: bool = False
    node_name_env: str = "MY_NODE_NAME"
    node_name: str = ""
    max_poll_attempts: int = 60
    poll_retry_interval: timedelta = timedelta(milliseconds=500)
    reload_interval: timedelta = timedelta(minutes=1)
    disable_container_selectors: bool = False
    disable_kubelet_client: bool = False
    enable_namespace_labels: bool = False
    use_new_container_locator: bool = True
    verbose_container_locator_logs: bool = False
    experimental: dict[str, Any] = field(default_factory=dict)
    sigstore: dict[str, Any] = field(default_factory=dict)


def pod_and_container(cgroup_text: str) -> tuple[str | None, str | None]:
    """The pod UID and container ID that ``/proc/<pid>/cgroup`` names; (None, None) outside a pod."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1].strip()
        if "kubepods" not in path:
            continue
        pod = _POD_UID.search(path)
        container = _CONTAINER_ID.search(path.rstrip("/"))
        if pod or container:
            return (pod.group(1).replace("_", "-") if pod else None, container.group(1) if container else None)
    return None, None


def _images(statuses: Iterable[Mapping[str, Any]]) -> set[str]:
    return {image for status in statuses for image in (status.get("image"), status.get("imageID")) if image}


def _pod_selectors(pod: Mapping[str, Any]) -> list[str]:
    metadata, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    containers = status.get("containerStatuses") or []
    init_containers = status.get("initContainerStatuses") or []
    values = [
        f"sa:{spec.get('serviceAccountName', '')}",
        f"ns:{metadata.get('namespace', '')}",
        f"node-name:{spec.get('nodeName', '')}",
        f"pod-uid:{metadata.get('uid', '')}",
        f"pod-name:{metadata.get('name', '')}",
        f"pod-image-count:{len(containers)}",
        f"pod-init-image-count:{len(init_containers)}",
    ]
    values += sorted(f"pod-image:{image}" for image in _images(containers))
    values += sorted(f"pod-init-image:{image}" for image in _images(init_containers))
    values += sorted(f"pod-label:{key}:{value}" for key, value in (metadata.get("labels") or {}).items())
    for owner in metadata.get("ownerReferences") or []:
        values.append(f"pod-owner:{owner.get('kind')}:{owner.get('name')}")
        values.append(f"pod-owner-uid:{owner.get('kind')}:{owner.get('uid')}")
    return values


def _container_status(pod: Mapping[str, Any], container_id: str) -> Mapping[str, Any] | None:
    status = pod.get("status", {})
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for container in status.get(key) or []:
            # "containerd://<id>", "docker://<id>", "cri-o://<id>"
            if str(container.get("containerID", "")).rsplit("://", 1)[-1] == container_id:
                return container  # type: ignore[no-any-return]
    return None


class _Kubelet:
    """GET /pods on this node's kubelet."""

    def __init__(self, config: K8sWorkloadConfig) -> None:
        self._config = config
        self._token = ""
        self._token_read_at = 0.0
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._pods: list[Mapping[str, Any]] | None = None
        self._pods_version = 0
        self._pods_fetched_at = 0.0
        if config.kubelet_read_only_port:
            self.url = f"http://127.0.0.1:{config.kubelet_read_only_port}/pods"
            self._pool: urllib3.PoolManager = urllib3.PoolManager(retries=False)
            return
        node = config.node_name or os.environ.get(config.node_name_env, "")
        self.url = f"https://{node or '127.0.0.1'}:{config.kubelet_secure_port or 10250}/pods"
        context = ssl.create_default_context()
        if config.skip_kubelet_verification:
            _log.warning("skip_kubelet_verification is set: the kubelet's certificate is not verified")
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context.load_verify_locations(cafile=config.kubelet_ca_path)
            except (OSError, ssl.SSLError) as err:
                raise PluginConfigError("kubelet_ca_path", f"cannot read {config.kubelet_ca_path}: {err}") from None
            # Without a node name the kubelet is 127.0.0.1, which its certificate does not name:
            # its chain is still verified, as SPIRE does.
            context.check_hostname = bool(node)
        if config.certificate_path:
            try:
                context.load_cert_chain(config.certificate_path, config.private_key_path)
            except (OSError, ssl.SSLError) as err:
                raise PluginConfigError("certificate_path", f"cannot load the client certificate: {err}") from None
        self._pool = urllib3.PoolManager(ssl_context=context, retries=False)

    def _bearer(self) -> str:
        config = self._config
        if config.kubelet_read_only_port or config.certificate_path or config.use_anonymous_authentication:
            return ""
        with self._lock:
            if not self._token or time.monotonic() - self._token_read_at > config.reload_interval.total_seconds():
                try:
                    self._token = Path(config.token_path).read_text().strip()
                except OSError as err:
                    raise Unavailable(f"cannot read the kubelet token {config.token_path}: {err.strerror}") from None
                self._token_read_at = time.monotonic()
            return self._token

    def pods(self, newer_than: int = 0) -> tuple[int, list[Mapping[str, Any]]]:
        """The pod list and its version, newer than version ``newer_than``.

        Callers at the same time share one request, and a list younger than
        ``poll_retry_interval`` is answered again: a burst of Workload API calls costs the
        kubelet one request, as in SPIRE.
        """
        with self._fetch_lock:
            young = time.monotonic() - self._pods_fetched_at < self._config.poll_retry_interval.total_seconds()
            if self._pods is None or self._pods_version <= newer_than or not young:
                self._pods = self._fetch()
                self._pods_version += 1
                self._pods_fetched_at = time.monotonic()
            return self._pods_version, self._pods

    def _fetch(self) -> list[Mapping[str, Any]]:
        token = self._bearer()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = self._pool.request(
                "GET", self.url, headers=headers, timeout=KUBELET_TIMEOUT, preload_content=True
            )
        except urllib3.exceptions.HTTPError as err:
            raise Unavailable(f"cannot reach the kubelet at {self.url}: {err}") from None
        if response.status in (401, 403):
            raise PermissionDenied(f"the kubelet at {self.url} refused the agent ({response.status})")
        if response.status != 200:
            raise Unavailable(f"the kubelet at {self.url} answered {response.status}")
        try:
            items = json.loads(response.data)["items"]
        except (ValueError, KeyError, TypeError) as err:
            raise Internal(f"the kubelet at {self.url} sent an unreadable pod list: {err}") from None
        return list(items or [])


class K8sWorkloadAttestor:
    """WorkloadAttestor ``k8s``: selectors from the caller's pod and container."""

    def __init__(self) -> None:
        self._config: K8sWorkloadConfig | None = None
        self._kubelet: _Kubelet | None = None

    @hookimpl
    def configure(self, plugin_data: Mapping[str, Any], core: CoreConfig) -> None:
        config = parse_plugin_data(K8sWorkloadConfig, plugin_data)
        for key in ("disable_kubelet_client", "enable_namespace_labels"):
            if getattr(config, key):
                raise PluginConfigError(key, "is a SPIRE feature this plugin does not offer")
        for key in ("experimental", "sigstore"):
            if getattr(config, key):
                raise PluginConfigError(key, "is a SPIRE feature this plugin does not offer")
        if config.kubelet_read_only_port and config.kubelet_secure_port:
            raise PluginConfigError("kubelet_read_only_port", "cannot be set together with kubelet_secure_port")
        if bool(config.certificate_path) != bool(config.private_key_path):
            raise PluginConfigError("certificate_path", "and private_key_path must be set together")
        if config.use_anonymous_authentication and config.certificate_path:
            raise PluginConfigError("use_anonymous_authentication", "cannot be set together with a client certificate")
        if config.max_poll_attempts < 1:
            raise PluginConfigError("max_poll_attempts", "must be at least 1")
        self._kubelet = _Kubelet(config)
        self._config = config

    @hookimpl
    def attest_workload(self, pid: int) -> Sequence[str]:
        if self._config is None or self._kubelet is None:
            raise Internal("the k8s workload attestor is not configured")
        try:
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError as err:
            raise Unavailable(f"cannot read the cgroups of process {pid}: {err.strerror}") from None
        pod_uid, container_id = pod_and_container(cgroups)
        if pod_uid is None and container_id is None:
            return []  # not in a pod: nothing to say
        config = self._config
        seen = 0
        for attempt in range(config.max_poll_attempts):
            if attempt:
                time.sleep(config.poll_retry_interval.total_seconds())
            seen, pods = self._kubelet.pods(newer_than=seen)  # each attempt looks at a newer list
            found = self._find(pods, pod_uid, container_id)
            if found is not None:
                return found
        raise NotFound(
            f"process {pid} is in pod {pod_uid or '?'} container {container_id or '?'}, which the kubelet "
            f"did not list after {config.max_poll_attempts} attempts"
        )

    def _find(self, pods: list[Mapping[str, Any]], pod_uid: str | None, container_id: str | None) -> list[str] | None:
        assert self._config is not None
        for pod in pods:
            if pod_uid is not None and pod.get("metadata", {}).get("uid") != pod_uid:
                continue
            if self._config.disable_container_selectors and pod_uid is not None:
                return _pod_selectors(pod)
            container = _container_status(pod, container_id) if container_id else None
            if container is None:
                continue  # the container is not reported yet (or this is another pod)
            values = _pod_selectors(pod)
            if not self._config.disable_container_selectors:
                values.append(f"container-name:{container.get('name', '')}")
                values += sorted(f"container-image:{image}" for image in _images([container]))
            return values
        return None
