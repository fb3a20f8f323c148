"""What every contract suite shares: the plugin loaded as a daemon loads it, and error checks.

Every plugin is also held to what the ``validate`` commands rely on: checking a
configuration refuses what ``configure`` refuses, and leaves the disk as it found it, whether
the plugin implements the ``validate`` hook or (without one) has its ``configure`` and
``close`` run instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import CatalogError, PluginError
from pyspire.plugin.facades import PluginHandle
from pyspire.plugin.testing.loading import load_plugin, make_core_config, validate_plugin
from pyspire.plugin.types import Role

__all__ = ["PluginContract", "assert_deliberate"]


def assert_deliberate(error: BaseException, handle: PluginHandle) -> None:
    """``error`` is one the plugin raised on purpose, prefixed with the plugin once.

    A hook that lets an unexpected exception escape (a ``KeyError`` on a missing field, a
    ``UnicodeDecodeError`` on binary input) is reported by the daemon as ``Internal`` with a
    traceback in its log; the contract wants a :class:`~pyspire.plugin.PluginError` that says
    what was wrong.
    """
    assert isinstance(error, PluginError), f"expected a PluginError, got {type(error).__name__}: {error}"
    assert isinstance(error.__cause__, PluginError), (
        f"the plugin did not raise a PluginError but {type(error.__cause__).__name__}: {error.__cause__} "
        "(raise InvalidArgument, PermissionDenied... with a message saying what is wrong)"
    )
    message = str(error)
    assert message.startswith(f"{handle.prefix}: "), message
    assert not message.startswith(f"{handle.prefix}: {handle.name}: "), (
        f"the plugin prefixes its own name; the core does: {message}"
    )


def _disk_state(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root`` with whether it is a folder, its size and its modification time."""
    state = {}
    for path in sorted(root.rglob("*")):
        status = path.lstat()
        state[str(path.relative_to(root))] = (path.is_dir(), status.st_size, status.st_mtime_ns)
    return state


class PluginContract:
    """The plugin under test, loaded through the real catalog code path.

    Set ``plugin`` to the plugin's name (its entry point); set ``plugin_class`` as well to
    test a class that is not installed yet. Override the ``plugin_data`` fixture to
    configure it.
    """

    role: ClassVar[Role]
    plugin_type: ClassVar[str]
    plugin: ClassVar[str]
    plugin_class: ClassVar[type | None] = None

    @pytest.fixture
    def plugin_data(self, tmp_path: Path) -> Mapping[str, Any]:
        """The plugin's configuration for a test (``tmp_path`` is fresh for each test)."""
        return {}

    @pytest.fixture
    def core_config(self, tmp_path: Path) -> CoreConfig:
        """Daemon settings handed to the plugin: ``example.org`` and a scratch data dir."""
        return make_core_config(tmp_path / "data")

    def load(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> PluginHandle:
        """Load and configure the plugin as the daemon would."""
        return load_plugin(
            self.role, self.plugin_type, self.plugin, plugin_data, core_config, plugin_class=self.plugin_class
        )

    def validate(self, plugin_data: Mapping[str, Any], core_config: CoreConfig) -> None:
        """Check the configuration as the ``validate`` commands do (raises CatalogError)."""
        validate_plugin(
            self.role, self.plugin_type, self.plugin, plugin_data, core_config, plugin_class=self.plugin_class
        )

    def test_unknown_plugin_data_key_is_refused_by_name(
        self, plugin_data: Mapping[str, Any], core_config: CoreConfig
    ) -> None:
        with pytest.raises(CatalogError, match='key "no_such_key"'):
            self.load({**plugin_data, "no_such_key": True}, core_config)

    def test_validate_refuses_an_unknown_plugin_data_key_by_name(
        self, plugin_data: Mapping[str, Any], core_config: CoreConfig
    ) -> None:
        with pytest.raises(CatalogError, match='key "no_such_key"'):
            self.validate({**plugin_data, "no_such_key": True}, core_config)

    def test_validate_leaves_the_disk_as_it_was(
        self, plugin_data: Mapping[str, Any], core_config: CoreConfig, tmp_path: Path
    ) -> None:
        before = _disk_state(tmp_path)
        self.validate(plugin_data, core_config)
        after = _disk_state(tmp_path)
        assert after == before, (
            "checking the configuration changed the disk (created: "
            f"{sorted(set(after) - set(before))}, changed or removed: "
            f"{sorted(path for path in before if after.get(path) != before[path])}); "
            "a plugin whose configure creates or writes files implements a validate hook that does not"
        )
