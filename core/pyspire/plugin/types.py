"""The plugin types, each declared once: what everything else about a type is derived from.

A type is its name in config (``NodeAttestor``), the daemon it runs in, its hook
specification module, the typed handle the daemon calls it through, how many a config may
declare, and which of its hooks a plugin must implement. The config parser, the catalog,
the handles' error prefixes, ``plugins`` listings, the plugin starter, the contract suites
and the generated hook reference all read this table; adding a type means a hookspec
module, a handle and a line here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from pyspire.plugin import facades
from pyspire.plugin.hookspecs import (
    agent_node_attestor,
    bundle_publisher,
    credential_composer,
    datastore,
    key_manager,
    lifecycle,
    notifier,
    server_node_attestor,
    svid_store,
    upstream_authority,
    workload_attestor,
)
from pyspire.plugin.markers import PROJECT

__all__ = [
    "LIFECYCLE",
    "PLUGIN_TYPES",
    "ROLES",
    "Cardinality",
    "PluginType",
    "Role",
    "entry_point_group",
    "hook_names",
    "implemented_hooks",
    "plugin_type",
    "plugin_types",
    "types_of",
]

Role = Literal["server", "agent"]
ROLES: tuple[Role, ...] = ("server", "agent")
LIFECYCLE = lifecycle
"""The hooks every plugin may have (``configure``, ``validate``, ``close``), whatever its type."""


def entry_point_group(role: Role) -> str:
    """The entry-point group plugins of ``role`` register in (``pyspire.server``)."""
    return f"{PROJECT}.{role}"


def hook_names(spec: ModuleType) -> tuple[str, ...]:
    """The hooks a specification module declares, in source order."""
    hooks = [
        obj
        for _, obj in inspect.getmembers(spec, inspect.isfunction)
        if obj.__module__ == spec.__name__ and hasattr(obj, f"{PROJECT}_spec")
    ]
    hooks.sort(key=lambda hook: hook.__code__.co_firstlineno)
    return tuple(hook.__name__ for hook in hooks)


@dataclass(frozen=True)
class Cardinality:
    """How many plugins of a type one config may declare (SPIRE's catalog rules)."""

    minimum: int
    maximum: int | None

    def allows(self, count: int) -> bool:
        """Whether ``count`` declarations are acceptable."""
        return count >= self.minimum and (self.maximum is None or count <= self.maximum)

    def describe(self) -> str:
        """``exactly 1``, ``at most 1``, ``at least 1``, ``any number of``."""
        if self.maximum == self.minimum:
            return f"exactly {self.minimum}"
        if self.maximum is None:
            return f"at least {self.minimum}" if self.minimum else "any number of"
        return f"at most {self.maximum}"


ANY = Cardinality(0, None)
ONE = Cardinality(1, 1)


@dataclass(frozen=True)
class PluginType:
    """One plugin type of one daemon."""

    name: str
    """As written in config and in SPIRE: ``NodeAttestor``, ``KeyManager``..."""
    role: Role
    spec: ModuleType
    """The hookspec module: the plugin author's reference for the type."""
    handle: type[facades.PluginHandle]
    """The typed handle the daemon calls plugins of this type through."""
    cardinality: Cardinality
    required_hooks: tuple[str, ...]
    """Hooks a plugin must implement besides ``configure``; the others are optional."""

    @property
    def hooks(self) -> tuple[str, ...]:
        """Every hook of the type (the lifecycle hooks excluded)."""
        return hook_names(self.spec)

    @property
    def optional_hooks(self) -> tuple[str, ...]:
        """The type's hooks a plugin may leave out."""
        return tuple(hook for hook in self.hooks if hook not in self.required_hooks)

    @property
    def summary(self) -> str:
        """The first line of the hookspec module's docstring."""
        return (self.spec.__doc__ or "").strip().splitlines()[0]

    @property
    def group(self) -> str:
        """The entry-point group plugins of this type register in."""
        return entry_point_group(self.role)

    @property
    def prefix(self) -> str:
        """SPIRE's lower-case form used in error prefixes: ``nodeattestor``."""
        return self.name.lower()

    def __post_init__(self) -> None:
        unknown = set(self.required_hooks) - set(self.hooks)
        if unknown:
            raise ValueError(
                f"{self.role} {self.name}: required hooks {sorted(unknown)} are not in {self.spec.__name__}"
            )


_EVENT_LOOP_READS = ("read_attested_node_at_once", "read_attested_node_on_loop")

PLUGIN_TYPES: tuple[PluginType, ...] = (
    PluginType(
        "DataStore",
        "server",
        datastore,
        facades.DataStore,
        ONE,
        # Every hook but the event-loop reads, which the server does without (it reads from a thread).
        tuple(hook for hook in hook_names(datastore) if hook not in _EVENT_LOOP_READS),
    ),
    PluginType(
        "KeyManager",
        "server",
        key_manager,
        facades.KeyManager,
        ONE,
        ("generate_key", "get_public_key", "get_public_keys", "sign_data"),
    ),
    PluginType("NodeAttestor", "server", server_node_attestor, facades.ServerNodeAttestor, ANY, ("attest_node",)),
    PluginType(
        "UpstreamAuthority",
        "server",
        upstream_authority,
        facades.UpstreamAuthority,
        Cardinality(0, 1),
        ("mint_x509_ca",),
    ),
    PluginType("Notifier", "server", notifier, facades.Notifier, ANY, ("notify_bundle_updated",)),
    PluginType("BundlePublisher", "server", bundle_publisher, facades.BundlePublisher, ANY, ("publish_bundle",)),
    PluginType("CredentialComposer", "server", credential_composer, facades.CredentialComposer, ANY, ()),
    PluginType(
        "KeyManager",
        "agent",
        key_manager,
        facades.KeyManager,
        ONE,
        ("generate_key", "get_public_key", "get_public_keys", "sign_data", "export_private_key"),
    ),
    PluginType("NodeAttestor", "agent", agent_node_attestor, facades.AgentNodeAttestor, ONE, ("attestation_payload",)),
    PluginType(
        "WorkloadAttestor",
        "agent",
        workload_attestor,
        facades.WorkloadAttestor,
        Cardinality(1, None),
        ("attest_workload",),
    ),
    PluginType("SVIDStore", "agent", svid_store, facades.SvidStore, ANY, ("put_x509_svid", "delete_x509_svid")),
)


def implemented_hooks(cls: type) -> frozenset[str]:
    """The hooks a plugin class marks with ``@hookimpl``."""
    return frozenset(name for name in dir(cls) if hasattr(getattr(cls, name, None), f"{PROJECT}_impl"))


def types_of(role: Role, cls: type) -> tuple[PluginType, ...]:
    """The types of ``role`` whose hooks ``cls`` implements (and no hook of another type)."""
    own = implemented_hooks(cls) - set(hook_names(lifecycle))
    return tuple(declared for declared in plugin_types(role).values() if own and own <= set(declared.hooks))


def plugin_types(role: Role) -> dict[str, PluginType]:
    """The types of ``role`` by config name, in the table's order."""
    return {declared.name: declared for declared in PLUGIN_TYPES if declared.role == role}


def plugin_type(role: Role, name: str) -> PluginType | None:
    """The type called ``name`` in ``role``'s config, or None."""
    return plugin_types(role).get(name)
