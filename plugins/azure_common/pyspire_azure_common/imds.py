"""Requests to the Instance Metadata Service, as every Azure agent half makes them.

IMDS answers plain HTTP at a link-local address and requires the ``Metadata: true`` header
(which a browser or a server-side request forgery cannot add). An IMDS that cannot be reached
or answers 5xx is :class:`~pyspire.plugin.errors.Unavailable`, so the agent retries; any other
refusal or a malformed answer is :class:`~pyspire.plugin.errors.Internal`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from pyspire.plugin.errors import Internal, PluginConfigError, Unavailable

__all__ = ["DEFAULT_HOST", "MAX_RESPONSE_BYTES", "check_host", "compute_metadata", "get_json"]

DEFAULT_HOST = "169.254.169.254"
MAX_RESPONSE_BYTES = 64 * 1024
TIMEOUT_SECONDS = 10.0
INSTANCE_API_VERSION = "2025-04-07"


def check_host(host: str, key: str = "imds_host") -> str:
    """``host`` if it is a host name or address with an optional port; a config error on ``key`` otherwise."""
    if not host or "/" in host or "@" in host or "?" in host or "#" in host:
        raise PluginConfigError(key, f'"{host}" is not a host name (with an optional port)')
    return host


def get_json(host: str, path: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET http://<host><path>?<query>`` with ``Metadata: true``; the JSON object IMDS answers."""
    url = f"http://{host}{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Metadata": "true"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            body: bytes = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as err:
        if err.code >= 500:
            raise Unavailable(f"IMDS answered {path} with HTTP {err.code}") from None
        raise Internal(f"IMDS refused {path} (HTTP {err.code})") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise Unavailable(f"IMDS at {host} is unreachable: {reason}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise Internal(f"IMDS answered {path} with more than {MAX_RESPONSE_BYTES} bytes")
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Internal(f"IMDS answered {path} with something other than JSON: {err}") from None
    if not isinstance(parsed, dict):
        raise Internal(f"IMDS answered {path} with something other than a JSON object")
    return parsed


def compute_metadata(host: str) -> dict[str, Any]:
    """``/metadata/instance``'s ``compute``: the VM's name, subscription and resource group are required."""
    compute = get_json(host, "/metadata/instance", {"api-version": INSTANCE_API_VERSION, "format": "json"}).get(
        "compute"
    )
    if not isinstance(compute, dict):
        raise Internal('unable to fetch compute metadata: response missing "compute"')
    for key in ("name", "subscriptionId", "resourceGroupName"):
        if not isinstance(compute.get(key), str) or not compute[key]:
            raise Internal(f"unable to fetch compute metadata: response missing instance {key}")
    return compute
