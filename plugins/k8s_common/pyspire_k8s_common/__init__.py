"""The Kubernetes client as pyspire's Kubernetes plugins build it, and the API server's refusals in its words.

Each plugin names its kubeconfig key differently (``kube_config_file``, ``kube_config_file_path``,
``clusters.<id>.kubeconfig_path``, as in SPIRE), so the key and the wording of a failure are the
caller's; how the client is made, and that it never retries on its own, is decided here once.
"""

from __future__ import annotations

import json

import kubernetes.client
import kubernetes.config
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pyspire.plugin.errors import PluginConfigError

__all__ = ["api_client", "status_reason"]


def api_client(kube_config_file: str, *, key: str, failure: str = "") -> kubernetes.client.ApiClient:
    """A client for the cluster of ``kube_config_file``, or the in-cluster one when it is empty.

    Only local files are read (the kubeconfig, or the service account's token and CA), so a bad
    path is found when the plugin is configured, not at its first call. ``key`` is the config key
    a failure names, ``failure`` what the message starts with (SPIRE's wording for the plugin).
    Retries are off: urllib3's would hold a server's call for minutes behind an unreachable API
    server, and every caller already has its own next attempt (a later rotation, sync or
    attestation).
    """
    configuration = kubernetes.client.Configuration()
    try:
        if kube_config_file:
            kubernetes.config.load_kube_config(config_file=kube_config_file, client_configuration=configuration)
        else:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
    except (ConfigException, yaml.YAMLError, OSError, ValueError, TypeError) as err:
        where = kube_config_file or "the in-cluster service account (no kubeconfig given)"
        prefix = f"{failure}: " if failure else ""
        raise PluginConfigError(key, f"{prefix}cannot load {where}: {err}") from None
    configuration.retries = 0
    return kubernetes.client.ApiClient(configuration)


def status_reason(err: Exception) -> str:
    """``Reason: message`` from the Status the API server sent, or the transport error's own text."""
    if not isinstance(err, ApiException):
        return str(err)
    try:
        status = json.loads(err.body or "")
        return f"{status.get('reason') or err.reason}: {status.get('message') or err.reason}"
    except (ValueError, AttributeError):
        return f"HTTP {err.status} {err.reason}"
