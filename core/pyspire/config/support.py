"""SPIRE settings pyspire knows about but does not implement, and what it does with them.

An operator's SPIRE config should load as it is wherever that is safe. So each key SPIRE
documents that pyspire lacks is listed here with a verdict:

- ``IGNORE``: nothing about identity, security or what the daemon does depends on it
  (profiling, log source locations...). The file loads; the daemon logs a warning naming
  the key and why it changes nothing.
- ``REFUSE``: honouring it changes who gets an identity or how callers are
  authenticated (an OPA policy, PROXY protocol trust, post-quantum KEM requirements, other
  bootstrap sources...), or the operator would get less than asked for (the M3 metrics
  sink). Silently ignoring it would fail open, so the file is refused with
  a message saying why.

Values that change nothing (SPIRE's default, an empty setting) are accepted silently.

Keys are dotted paths inside the daemon's block (``experimental.named_pipe_name``) or, with a
leading ``/``, inside another top-level block (``/telemetry.Statsd``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from pyspire.config.schema import ConfigError

__all__ = ["AGENT_UNSUPPORTED", "SERVER_UNSUPPORTED", "Rule", "Verdict", "apply_support_table"]


class Verdict(enum.Enum):
    """What pyspire does with a SPIRE key it does not implement."""

    IGNORE = "ignored"
    REFUSE = "refused"


@dataclass(frozen=True)
class Rule:
    """The verdict on one key, why (shown to the operator), and the values that change nothing.

    A harmless value (SPIRE's default, an empty setting) is dropped without a word, whatever
    the verdict.
    """

    verdict: Verdict
    reason: str = ""
    harmless: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        # The operator whose file is refused is owed the reason, in the key's own terms.
        if self.verdict is Verdict.REFUSE and not self.reason:
            raise ValueError("a refused SPIRE key must say why it is refused")


_IGNORE = Rule(Verdict.IGNORE)
_M3 = Rule(
    Verdict.REFUSE,
    "is a SPIRE metrics sink pyspire does not offer (no maintained Python client speaks M3's "
    "protocol); use Prometheus, Statsd, DogStatsd or InMem, or remove it",
)


def _no_pipes(key: str, instead: str) -> Rule:
    # SPIRE's own refusal on Linux (cmd/spire-*/cli/run/run_posix.go); "" is its default.
    return Rule(
        Verdict.REFUSE,
        f"invalid configuration: {key} is not supported in this platform; please use {instead} instead",
        harmless=("",),
    )


_COMMON: Final[Mapping[str, Rule]] = {
    "profiling_enabled": Rule(Verdict.IGNORE, harmless=(False,)),
    "profiling_port": _IGNORE,
    "profiling_freq": _IGNORE,
    "profiling_names": _IGNORE,
    "experimental.named_pipe_name": _no_pipes("named_pipe_name", "socket_path"),
    "experimental.require_pq_kem": Rule(
        Verdict.REFUSE,
        "requires post-quantum key exchange on every TLS connection; the TLS stack pyspire runs on "
        "(OpenSSL through Python's ssl module) cannot require it, and serving without it would accept "
        "the classical exchanges the setting rules out; set it to false or remove it",
        harmless=(False,),
    ),
    "experimental.feature_flags": Rule(
        Verdict.REFUSE,
        "turns on SPIRE features by their names in SPIRE's code, which pyspire does not have; "
        "the daemon would not behave as configured; remove it",
    ),
    "/telemetry.M3": _M3,
    "/telemetry.Prometheus.tls": Rule(
        Verdict.REFUSE,
        "serves metrics over TLS to authorized callers only; pyspire serves Prometheus over plain "
        "HTTP, which would show the metrics to any caller; remove it and put a TLS proxy in front",
    ),
}

SERVER_UNSUPPORTED: Final[Mapping[str, Rule]] = {
    **_COMMON,
    "proxy_protocol_trusted_cidrs": Rule(
        Verdict.REFUSE,
        "makes the server read callers' addresses from PROXY protocol headers sent by these load "
        "balancers; pyspire reads no PROXY headers, so those connections would fail and per-address "
        "rate limits would count the balancer; remove it",
    ),
    "prune_attested_nodes_batch_size": _IGNORE,
    "federation.bundle_endpoint.profile.https_web.acme": Rule(
        Verdict.REFUSE,
        "obtains the bundle endpoint's certificate from an ACME CA; pyspire has no ACME client: "
        "give the certificate with serving_cert_file",
    ),
    "experimental.auth_opa_policy_engine": Rule(
        Verdict.REFUSE,
        "replaces the APIs' authorization with an OPA policy; pyspire applies SPIRE's built-in "
        "authorization only, so a stricter policy would not be enforced; remove it",
    ),
    "experimental.agent_spiffe_id_as_selector": Rule(
        Verdict.REFUSE,
        "adds each agent's SPIFFE ID to its selectors; pyspire does not, so entries written for "
        "that selector would not match the agents they match under SPIRE; remove it",
    ),
    "experimental.sql_transaction_timeout": _IGNORE,
    "experimental.wit_key_type": _IGNORE,
    "experimental.wit_issuer": _IGNORE,
    "experimental.events_based_cache": Rule(
        Verdict.IGNORE,
        "has no effect: pyspire's caches always follow the datastore's change events, and "
        "answer as SPIRE's full reloads would",
        harmless=(True,),
    ),
    "experimental.event_timeout": Rule(
        Verdict.IGNORE,
        "has no effect: pyspire numbers change events without gaps, so there is no skipped event to wait for",
    ),
}

AGENT_UNSUPPORTED: Final[Mapping[str, Rule]] = {
    **_COMMON,
    "trust_bundle_unix_socket": Rule(
        Verdict.REFUSE,
        "bootstraps trust from a bundle served on a local socket, which pyspire's agent cannot "
        "read; starting without it would trust another source or none; use trust_bundle_path or "
        "trust_bundle_url",
    ),
    "trust_bundle_spiffe_workload_api": Rule(
        Verdict.REFUSE,
        "bootstraps trust from another agent's Workload API, which pyspire's agent cannot do; "
        "starting without it would trust another source or none; use trust_bundle_path or "
        "trust_bundle_url",
    ),
    "rebootstrap_mode": Rule(
        Verdict.REFUSE,
        "lets the agent drop its trust and bootstrap again when it no longer trusts the server; "
        'pyspire\'s agent never does (SPIRE\'s "never"); set it to "never" or remove it',
        harmless=("never",),
    ),
    "rebootstrap_delay": _IGNORE,
    "retry_bootstrap": Rule(
        Verdict.REFUSE,
        "false makes the agent give up at the first failed bootstrap; pyspire's agent always "
        "retries with back-off (SPIRE's default; the key is deprecated in SPIRE 1.13); set it to "
        "true or remove it",
        harmless=(True,),
    ),
    "log_selectors": _IGNORE,
    "experimental.admin_named_pipe_name": _no_pipes("admin_named_pipe_name", "admin_socket_path"),
    "experimental.jwt_svid_cache_hit_timeout": _IGNORE,
    "experimental.ratelimit": Rule(
        Verdict.REFUSE,
        "limits each workload's Workload API and SDS calls; pyspire's agent has no such limits, so "
        "workloads could call as often as they like; remove it",
    ),
    "experimental.broker": Rule(
        Verdict.REFUSE,
        "serves the SPIFFE Broker API, which pyspire's agent does not implement; remove it",
    ),
}


def _as_block(value: Any) -> MutableMapping[str, Any] | None:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], MutableMapping):
        value = value[0]
    return value if isinstance(value, MutableMapping) else None


def apply_support_table(
    document: MutableMapping[str, Any], section: str, table: Mapping[str, Rule], source: str
) -> list[str]:
    """Remove the keys of ``table`` from ``document``; return warnings, or raise for REFUSE.

    ``document`` is the whole parsed file and ``section`` the daemon's block name.
    """
    warnings: list[str] = []
    for dotted, rule in table.items():
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
        if any(type(value) is type(harmless) and value == harmless for harmless in rule.harmless):
            continue
        if rule.verdict is Verdict.REFUSE:
            raise ConfigError(source, shown, rule.reason)
        reason = rule.reason or "is a SPIRE setting pyspire does not implement; it is ignored"
        warnings.append(f'{source}: "{shown}" {reason}')
    return warnings
