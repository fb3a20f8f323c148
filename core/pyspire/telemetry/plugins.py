"""Plugin hook calls as SPIRE's metric wrappers count them, and a span for every one.

SPIRE wraps its DataStore and KeyManagers in metric decorators (``datastore.<object>.<op>``,
``server_key_manager.<op>``, ``agent_key_manager.<op>``). pyspire's hooks map onto those keys
where the operation is the same; where one pyspire hook does what SPIRE does in two calls
(``take_join_token`` is SPIRE's fetch then delete) both keys are counted, and where pyspire's
single change log stands for SPIRE's two event tables both event keys are. Hooks SPIRE has no
counterpart for are counted under ``datastore.<object>.<hook>`` with pyspire's names (listed in
docs/metrics.md). Other plugin types get spans only, as SPIRE meters them nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

from pyspire.plugin.catalog import Role
from pyspire.plugin.facades import PluginHandle
from pyspire.telemetry.metrics import Key, Metrics
from pyspire.telemetry.tracing import start_span, tracing_enabled

__all__ = ["PluginObserver", "plugin_metric_keys"]


def _ds(*keys: tuple[str, str]) -> tuple[Key, ...]:
    return tuple(("datastore", obj, op) for obj, op in keys)


_DATASTORE: Mapping[str, tuple[Key, ...]] = {
    "fetch_bundle": _ds(("bundle", "fetch")),
    "list_bundles": _ds(("bundle", "list")),
    "count_bundles": _ds(("bundle", "count")),
    "create_bundle": _ds(("bundle", "create")),
    "set_bundle": _ds(("bundle", "set")),
    "modify_bundle": _ds(("bundle", "update")),
    "delete_bundle": _ds(("bundle", "delete")),
    "create_registration_entries": _ds(("registration_entry", "create")),
    "fetch_registration_entry": _ds(("registration_entry", "fetch")),
    "fetch_registration_entries": _ds(("registration_entry", "fetch")),
    "list_registration_entries": _ds(("registration_entry", "list")),
    "count_registration_entries": _ds(("registration_entry", "count")),
    "update_registration_entry": _ds(("registration_entry", "update")),
    "delete_registration_entry": _ds(("registration_entry", "delete")),
    "prune_registration_entries": _ds(("registration_entry", "prune")),
    "create_attested_node": _ds(("node", "create")),
    "fetch_attested_node": _ds(("node", "fetch")),
    "read_attested_node_at_once": _ds(("node", "fetch")),
    "read_attested_node_on_loop": _ds(("node", "fetch")),
    "list_attested_nodes": _ds(("node", "list")),
    "count_attested_nodes": _ds(("node", "count")),
    "modify_attested_node": _ds(("node", "update")),
    "delete_attested_node": _ds(("node", "delete")),
    "prune_attested_nodes": _ds(("node", "prune")),
    "create_join_token": _ds(("join_token", "create")),
    "take_join_token": _ds(("join_token", "fetch"), ("join_token", "delete")),
    "prune_join_tokens": _ds(("join_token", "prune")),
    "create_federation_relationship": _ds(("federation_relationship", "create")),
    "fetch_federation_relationship": _ds(("federation_relationship", "fetch")),
    "list_federation_relationships": _ds(("federation_relationship", "list")),
    "update_federation_relationship": _ds(("federation_relationship", "update")),
    "delete_federation_relationship": _ds(("federation_relationship", "delete")),
    "set_ca_journal": _ds(("ca_journal", "set")),
    "fetch_ca_journal": _ds(("ca_journal", "fetch")),
    "list_ca_journals": _ds(("ca_journal", "list")),
    "delete_ca_journal": _ds(("ca_journal", "prune")),
    "list_change_events": _ds(("registration_entry_event", "list"), ("node_event", "list")),
    "prune_change_events": _ds(("registration_entry_event", "prune"), ("node_event", "prune")),
    "last_change_sequence": _ds(("change_event", "last_sequence")),
}

_KEY_MANAGER: Mapping[Role, Mapping[str, tuple[Key, ...]]] = {
    "server": {
        "generate_key": (("server_key_manager", "generate_key"),),
        "get_public_key": (("server_key_manager", "get_public_key"),),
        "get_public_keys": (("server_key_manager", "get_public_keys"),),
        "sign_data": (("server_key_manager", "sign_data"),),
        "export_private_key": (("server_key_manager", "export_private_key"),),
    },
    "agent": {
        "generate_key": (("agent_key_manager", "generate_key"),),
        "get_public_key": (("agent_key_manager", "get_key"),),
        "get_public_keys": (("agent_key_manager", "get_keys"),),
        "sign_data": (("agent_key_manager", "sign_data"),),
        "export_private_key": (("agent_key_manager", "export_private_key"),),
    },
}


def plugin_metric_keys(role: Role, plugin_type: str, hook: str) -> tuple[Key, ...]:
    """The metric keys one call of ``hook`` on a plugin of ``plugin_type`` counts (none for most types)."""
    if plugin_type == "DataStore":
        return _DATASTORE.get(hook, ())
    if plugin_type == "KeyManager":
        return _KEY_MANAGER[role].get(hook, ())
    return ()


class PluginObserver:
    """The hook observer the daemons hand their catalog: call counters and one span per hook call."""

    def __init__(self, metrics: Metrics, role: Role) -> None:
        """Count into ``metrics`` under the keys of ``role``'s daemon."""
        self._metrics = metrics
        self._role = role

    def __call__(self, handle: PluginHandle, hook: str) -> AbstractContextManager[object]:
        """Measure one call of ``hook`` on ``handle``."""
        keys = plugin_metric_keys(self._role, handle.type_name, hook)
        # The common cases (no tracing; no key or one) skip the ExitStack: the node lookup
        # every agent call makes runs through here on the event loop.
        if not tracing_enabled() and len(keys) <= 1:
            return self._metrics.call(*keys[0]) if keys else nullcontext()
        return self._spanned(handle, hook, keys)

    @contextmanager
    def _spanned(self, handle: PluginHandle, hook: str, keys: tuple[Key, ...]) -> Iterator[None]:
        with ExitStack() as stack:
            if tracing_enabled():  # else not even the span's name and attributes are built
                attributes = {"pyspire.plugin.type": handle.type_name, "pyspire.plugin.name": handle.name}
                stack.enter_context(start_span(f"{handle.prefix}.{hook}", attributes=attributes))
            for key in keys:
                stack.enter_context(self._metrics.call(*key))
            yield
