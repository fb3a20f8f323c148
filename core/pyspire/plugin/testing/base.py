"""What every contract suite shares: the plugin loaded as a daemon loads it, and error checks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pyspire.plugin.core_config import CoreConfig
from pyspire.plugin.errors import CatalogError, PluginError
from pyspire.plugin.facades import PluginHandle
from pyspire.plugin.testing.loading import load_plugin, make_core_config
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

    def test_unknown_plugin_data_key_is_refused_by_name(
        self, plugin_data: Mapping[str, Any], core_config: CoreConfig
    ) -> None:
        with pytest.raises(CatalogError, match='key "no_such_key"'):
            self.load({**plugin_data, "no_such_key": True}, core_config)
