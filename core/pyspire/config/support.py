"""SPIRE settings pyspire knows about but does not implement, and what it does with them.

An operator's SPIRE config should load as it is wherever that is safe. So each key SPIRE
documents that pyspire lacks is listed here with a verdict:

- ``IGNORE``: nothing about identity or security depends on it (profiling, log source
  locations, Windows pipe names on Linux...). The file loads; the daemon logs a warning
  naming the key.
- ``REFUSE``: honouring it changes who gets an identity or how callers are
  authenticated (an OPA policy, PROXY protocol trust, post-quantum KEM requirements, other
  bootstrap sources...). Silently ignoring it would fail open, so the file is refused with a
  message saying pyspire does not support the key yet.

Keys are dotted paths inside the daemon's block (``experimental.named_pipe_name``) or, with a
leading ``/``, inside another top-level block (``/telemetry.Statsd``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from pyspire.config.schema import ConfigError

__all__ = ["AGENT_UNSUPPORTED", "SERVER_UNSUPPORTED", "Verdict", "apply_support_table"]


class Verdict(enum.Enum):
    """What pyspire does with a SPIRE key it does not implement."""

    IGNORE = "ignored"
    REFUSE = "refused"


_I, _R = Verdict.IGNORE, Verdict.REFUSE

_COMMON: Final[Mapping[str, Verdict]] = {
    "log_source_location": _I,
    "profiling_enabled": _I,
    "profiling_port": _I,
    "profiling_freq": _I,
    "profiling_names": _I,
    "experimental.named_pipe_name": _I,
    "experimental.require_pq_kem": _R,
    "experimental.feature_flags": _R,
    "/telemetry.M3": _R,
    "/telemetry.Prometheus.tls": _R,
}

SERVER_UNSUPPORTED: Final[Mapping[str, Verdict]] = {
    **_COMMON,
    "proxy_protocol_trusted_cidrs": _R,
    "max_attested_node_info_staleness": _I,
    "prune_attested_nodes_batch_size": _I,
    "federation.bundle_endpoint.profile.https_web.acme": _R,
    "experimental.auth_opa_policy_engine": _R,
    "experimental.agent_spiffe_id_as_selector": _R,
    "experimental.sql_transaction_timeout": _I,
    "experimental.wit_key_type": _I,
    "experimental.wit_issuer": _I,
}

AGENT_UNSUPPORTED: Final[Mapping[str, Verdict]] = {
    **_COMMON,
    "trust_bundle_unix_socket": _R,
    "trust_bundle_spiffe_workload_api": _R,
    "rebootstrap_mode": _R,
    "rebootstrap_delay": _I,
    "log_selectors": _I,
    "authorized_delegates": _R,
    "experimental.admin_named_pipe_name": _I,
    "experimental.jwt_svid_cache_hit_timeout": _I,
    "experimental.ratelimit": _R,
    "experimental.broker": _R,
}

# Values equal to SPIRE's defaults change nothing, so they never cause a refusal.
_HARMLESS_VALUES: Final[Mapping[str, object]] = {
    "rebootstrap_mode": "never",
    "experimental.require_pq_kem": False,
}


def _as_block(value: Any) -> MutableMapping[str, Any] | None:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], MutableMapping):
        value = value[0]
    return value if isinstance(value, MutableMapping) else None


def apply_support_table(
    document: MutableMapping[str, Any], section: str, table: Mapping[str, Verdict], source: str
) -> list[str]:
    """Remove the keys of ``table`` from ``document``; return warnings, or raise for REFUSE.

    ``document`` is the whole parsed file and ``section`` the daemon's block name.
    """
    warnings: list[str] = []
    for dotted, verdict in table.items():
        root, path = (dotted[1:], "") if dotted.startswith("/") else (section, dotted)
        parts = [part for part in f"{root}.{path}".strip(".").split(".") if part]
        block: MutableMapping[str, Any] | None = document
        for part in parts[:-1]:
            block = _as_block(block.get(part)) if block is not None else None
            if block is None:
                break
        if block is None or parts[-1] not in block:
            continue
        value = block.pop(parts[-1])
        shown = ".".join(parts)
        if verdict is Verdict.REFUSE and _HARMLESS_VALUES.get(dotted, object()) != value:
            raise ConfigError(
                source,
                shown,
                "is a SPIRE setting pyspire does not support yet; remove it "
                "(ignoring it could change who gets an identity)",
            )
        warnings.append(f'{source}: "{shown}" is a SPIRE setting pyspire does not implement; it is ignored')
    return warnings
