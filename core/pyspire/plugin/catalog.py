"""The catalog: loads exactly the plugins a config file declares, and nothing else.

Plugins are found as :mod:`pyspire.plugin.discovery` describes (entry points named as in
config, type-qualified where one name serves two types, development entries from
``PYSPIRE_DEV_PLUGINS``). Built-in plugins register exactly like third-party ones.

For each declaration the catalog imports the entry point, instantiates the class with no
arguments, refuses ``async def`` hooks, registers it with a pluggy manager holding the hook
specifications of its type (which rejects a class that implements hooks its type does not
have), checks the type's required hooks, and calls ``validate`` (when the plugin has it)
and ``configure``; SPIRE's cardinalities are enforced before any plugin is loaded. The
``validate`` commands make the same checks without configuring
(:func:`validate_declarations`). Every error names the file, the plugin declaration and what to do. The types
themselves, with their cardinalities and required hooks, are declared in
:mod:`pyspire.plugin.types`.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import pluggy

from pyspire.plugin import facades
from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.discovery import find_plugin
from pyspire.plugin.errors import CatalogError, PluginConfigError, PluginError
from pyspire.plugin.markers import PROJECT
from pyspire.plugin.types import LIFECYCLE, PluginType, Role, plugin_type, plugin_types

__all__ = [
    "TRACE_ENV",
    "AgentCatalog",
    "CatalogError",
    "Declaration",
    "Role",
    "ServerCatalog",
    "check_declarations",
    "load_agent_catalog",
    "load_server_catalog",
    "validate_declarations",
    "validate_single_plugin",
]

_log = logging.getLogger(__name__)

TRACE_ENV = "PYSPIRE_TRACE_PLUGINS"
"""Set to 1 to log every hook call and result at DEBUG level (like DATASETTE_TRACE_PLUGINS)."""


class Declaration(Protocol):
    """A plugin as the config file declares it (``pyspire.config.PluginDeclaration``)."""

    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def plugin_data(self) -> Mapping[str, Any]: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def where(self) -> object: ...


def _where(declaration: Declaration) -> str:
    where = str(declaration.where or "")
    return where or f'plugins: {declaration.type} "{declaration.name}"'


def _declared_type(role: Role, declaration: Declaration) -> PluginType:
    declared = plugin_type(role, declaration.type)
    if declared is None:
        known = ", ".join(sorted(plugin_types(role)))
        raise CatalogError(
            f'{_where(declaration)}: unknown plugin type "{declaration.type}" for the {role} (known: {known})'
        )
    return declared


def _find_class(role: Role, declaration: Declaration, extra: Mapping[str, type] | None) -> type:
    candidates = (f"{declaration.type}.{declaration.name}", declaration.name)
    if extra:
        for candidate in candidates:
            if candidate in extra:
                return extra[candidate]
    try:
        source = find_plugin(role, declaration.type, declaration.name)
        loaded = source.load()
    except CatalogError as err:
        raise CatalogError(f"{_where(declaration)}: {err}") from err
    if source.development:
        _log.warning(
            "Loading a development plugin",
            extra={"plugin_type": declaration.type, "plugin_name": declaration.name, "target": source.target},
        )
    return loaded


def _refuse_async_hooks(declaration: Declaration, cls: type) -> None:
    """Hooks are called synchronously from worker threads: a coroutine would never run."""
    for attribute, value in inspect.getmembers(cls):
        if not hasattr(value, f"{PROJECT}_impl"):
            continue
        if inspect.iscoroutinefunction(value) or inspect.isasyncgenfunction(value):
            raise CatalogError(
                f"{_where(declaration)}: {cls.__module__}.{cls.__qualname__}.{attribute} is an async hook; "
                "pyspire calls hooks as plain functions from worker threads, so its coroutine would never run. "
                'Make it a plain "def" (it may block, or run async client code with asyncio.run)'
            )


def _new_manager(declared: PluginType) -> pluggy.PluginManager:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(LIFECYCLE)
    manager.add_hookspecs(declared.spec)
    if os.environ.get(TRACE_ENV) == "1":
        manager.trace.root.setwriter(_log.debug)
        manager.enable_tracing()
    return manager


def _instantiate(role: Role, declaration: Declaration, extra: Mapping[str, type] | None) -> facades.PluginHandle:
    """The declared plugin, found, instantiated and checked to be of its declared type (not configured)."""
    declared = _declared_type(role, declaration)
    cls = _find_class(role, declaration, extra)
    _refuse_async_hooks(declaration, cls)
    try:
        instance = cls()
    except Exception as err:
        raise CatalogError(f"{_where(declaration)}: cannot instantiate {cls.__qualname__}: {err}") from err
    manager = _new_manager(declared)
    try:
        manager.register(instance, name=declaration.name)
        manager.check_pending()
    except pluggy.PluginValidationError as err:
        raise CatalogError(
            f"{_where(declaration)}: {cls.__module__}.{cls.__qualname__} is not a valid "
            f"{declaration.type} plugin: {err}"
        ) from err
    handle = declared.handle(declaration.name, instance, manager, declared.name)
    missing = [hook for hook in ("configure", *declared.required_hooks) if not handle.implements(hook)]
    if missing:
        raise CatalogError(
            f"{_where(declaration)}: {cls.__module__}.{cls.__qualname__} does not implement "
            f"{', '.join(missing)}; is it a {declaration.type} plugin?"
        )
    return handle


def _configuration_step(handle: facades.PluginHandle, declaration: Declaration, step: Callable[[], None]) -> None:
    """Run ``validate`` or ``configure``; a refusal becomes a CatalogError naming the declaration."""
    try:
        step()
    except PluginConfigError as err:
        raise CatalogError(f"{_where(declaration)}: plugin_data: {err}") from err
    except PluginError as err:
        raise CatalogError(f"{_where(declaration)}: configure failed: {err}") from err


def _load_one(
    role: Role, declaration: Declaration, core: CoreConfig, extra: Mapping[str, type] | None
) -> facades.PluginHandle:
    handle = _instantiate(role, declaration, extra)
    if handle.implements("validate"):
        # The same check the validate commands make, so both refuse alike.
        _configuration_step(handle, declaration, partial(handle.validate, declaration.plugin_data, core))
    _configuration_step(handle, declaration, partial(handle.configure, declaration.plugin_data, core))
    _log.info(
        "Plugin loaded",
        extra={
            "plugin_type": declaration.type,
            "plugin_name": declaration.name,
            "plugin_class": type(handle.instance).__qualname__,
        },
    )
    return handle


H = TypeVar("H", bound=facades.PluginHandle)


class _Loaded:
    """The handles of every enabled declaration, grouped by type."""

    def __init__(self, role: Role, handles: Mapping[str, Sequence[facades.PluginHandle]]) -> None:
        self.role = role
        self.by_type = handles

    def all(self, type_name: str, handle: type[H]) -> tuple[H, ...]:
        found = self.by_type.get(type_name, ())
        assert all(isinstance(item, handle) for item in found)
        return tuple(found)  # type: ignore[arg-type]

    def one(self, type_name: str, handle: type[H]) -> H:
        return self.all(type_name, handle)[0]

    def optional(self, type_name: str, handle: type[H]) -> H | None:
        found = self.all(type_name, handle)
        return found[0] if found else None

    def close(self) -> None:
        for handles in self.by_type.values():
            for handle in handles:
                handle.close()

    def instrument(self, observer: facades.HookObserver) -> None:
        for handles in self.by_type.values():
            for handle in handles:
                handle.observer = observer


def _check_cardinality(role: Role, enabled: Sequence[Declaration], source: str) -> None:
    for type_name, declared in plugin_types(role).items():
        count = sum(1 for d in enabled if d.type == type_name)
        cardinality = declared.cardinality
        if not cardinality.allows(count):
            names = ", ".join(f'"{d.name}"' for d in enabled if d.type == type_name) or "none"
            raise CatalogError(
                f"{source}: the {role} needs {cardinality.describe()} {type_name} plugin"
                f"{'' if cardinality.maximum == 1 else 's'}; declared: {names}"
            )


def _load_all(
    role: Role,
    declarations: Iterable[Declaration],
    core: CoreConfig,
    extra: Mapping[str, type] | None,
    source: str,
) -> _Loaded:
    enabled = [declaration for declaration in declarations if declaration.enabled]
    seen: set[tuple[str, str]] = set()
    for declaration in enabled:
        key = (declaration.type, declaration.name)
        if key in seen:
            raise CatalogError(f'{_where(declaration)}: {declaration.type} "{declaration.name}" is declared twice')
        seen.add(key)
    _check_cardinality(role, enabled, source)
    grouped: dict[str, list[facades.PluginHandle]] = {}
    loaded = _Loaded(role, grouped)
    try:
        for declaration in enabled:
            grouped.setdefault(declaration.type, []).append(_load_one(role, declaration, core, extra))
    except BaseException:
        loaded.close()
        raise
    return loaded


@dataclass(frozen=True)
class ServerCatalog:
    """The server's configured plugins, by type."""

    datastore: facades.DataStore
    key_manager: facades.KeyManager
    node_attestors: Mapping[str, facades.ServerNodeAttestor]
    upstream_authority: facades.UpstreamAuthority | None
    notifiers: tuple[facades.Notifier, ...]
    bundle_publishers: tuple[facades.BundlePublisher, ...]
    credential_composers: tuple[facades.CredentialComposer, ...]
    _loaded: _Loaded

    def close(self) -> None:
        """Close every plugin (once, at shutdown)."""
        self._loaded.close()

    def instrument(self, observer: facades.HookObserver) -> None:
        """Have ``observer`` watch every hook call of every plugin from now on (metrics, traces)."""
        self._loaded.instrument(observer)


@dataclass(frozen=True)
class AgentCatalog:
    """The agent's configured plugins, by type."""

    key_manager: facades.KeyManager
    node_attestor: facades.AgentNodeAttestor
    workload_attestors: tuple[facades.WorkloadAttestor, ...]
    svid_stores: tuple[facades.SvidStore, ...]
    _loaded: _Loaded

    def close(self) -> None:
        """Close every plugin (once, at shutdown)."""
        self._loaded.close()

    def instrument(self, observer: facades.HookObserver) -> None:
        """Have ``observer`` watch every hook call of every plugin from now on (metrics, traces)."""
        self._loaded.instrument(observer)


def load_server_catalog(
    declarations: Iterable[Declaration],
    core: CoreConfig,
    *,
    source: str = "config",
    extra_plugins: Mapping[str, type] | None = None,
) -> ServerCatalog:
    """Load and configure the server plugins ``declarations`` names.

    ``extra_plugins`` maps entry-point-style names to classes that are not installed (the
    test kit uses it for plugins under development).
    """
    loaded = _load_all("server", declarations, core, extra_plugins, source)
    return ServerCatalog(
        datastore=loaded.one("DataStore", facades.DataStore),
        key_manager=loaded.one("KeyManager", facades.KeyManager),
        node_attestors={h.name: h for h in loaded.all("NodeAttestor", facades.ServerNodeAttestor)},
        upstream_authority=loaded.optional("UpstreamAuthority", facades.UpstreamAuthority),
        notifiers=loaded.all("Notifier", facades.Notifier),
        bundle_publishers=loaded.all("BundlePublisher", facades.BundlePublisher),
        credential_composers=loaded.all("CredentialComposer", facades.CredentialComposer),
        _loaded=loaded,
    )


def load_agent_catalog(
    declarations: Iterable[Declaration],
    core: CoreConfig,
    *,
    source: str = "config",
    extra_plugins: Mapping[str, type] | None = None,
) -> AgentCatalog:
    """Load and configure the agent plugins ``declarations`` names."""
    loaded = _load_all("agent", declarations, core, extra_plugins, source)
    return AgentCatalog(
        key_manager=loaded.one("KeyManager", facades.KeyManager),
        node_attestor=loaded.one("NodeAttestor", facades.AgentNodeAttestor),
        workload_attestors=loaded.all("WorkloadAttestor", facades.WorkloadAttestor),
        svid_stores=loaded.all("SVIDStore", facades.SvidStore),
        _loaded=loaded,
    )


def _enabled_and_counted(role: Role, declarations: Iterable[Declaration], source: str) -> list[Declaration]:
    enabled = [declaration for declaration in declarations if declaration.enabled]
    for declaration in enabled:
        _declared_type(role, declaration)
    _check_cardinality(role, enabled, source)
    return enabled


def check_declarations(
    role: Role,
    declarations: Iterable[Declaration],
    *,
    source: str = "config",
    extra_plugins: Mapping[str, type] | None = None,
) -> None:
    """Check what does not depend on ``plugin_data``; raises CatalogError.

    Types and cardinalities, and that every plugin is installed and of its declared type,
    without configuring or validating any: for configs written for another machine (a
    cluster's), whose plugin data only holds there.
    """
    for declaration in _enabled_and_counted(role, declarations, source):
        _instantiate(role, declaration, extra_plugins)


def validate_declarations(
    role: Role,
    declarations: Iterable[Declaration],
    core: CoreConfig,
    *,
    source: str = "config",
    extra_plugins: Mapping[str, type] | None = None,
) -> None:
    """Check what loading would check, without side effects; raises CatalogError.

    Types and cardinalities, that every plugin is installed and of its declared type, and its
    ``plugin_data``: through the plugin's ``validate`` hook, or (for a plugin without one,
    whose ``configure`` has no side effects by the hook contract) ``configure`` and ``close``.
    """
    for declaration in _enabled_and_counted(role, declarations, source):
        validate_single_plugin(role, declaration, core, extra_plugins=extra_plugins)


def validate_single_plugin(
    role: Role,
    declaration: Declaration,
    core: CoreConfig,
    *,
    extra_plugins: Mapping[str, type] | None = None,
) -> None:
    """Check one plugin as the ``validate`` commands do, without cardinality checks.

    For the plugin test kit, which holds a plugin's ``validate`` to its promise.
    """
    handle = _instantiate(role, declaration, extra_plugins)
    if handle.implements("validate"):
        _configuration_step(handle, declaration, partial(handle.validate, declaration.plugin_data, core))
        return
    try:
        _configuration_step(handle, declaration, partial(handle.configure, declaration.plugin_data, core))
    finally:
        handle.close()


def load_single_plugin(
    role: Role,
    declaration: Declaration,
    core: CoreConfig,
    *,
    extra_plugins: Mapping[str, type] | None = None,
) -> facades.PluginHandle:
    """Load and configure one plugin on its own, without cardinality checks.

    For tools and the plugin test kit, which exercise one plugin at a time.
    """
    return _load_one(role, declaration, core, extra_plugins)
