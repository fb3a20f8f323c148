"""The one error every configuration mistake becomes.

In a module of its own so that code which only reports configuration errors (the CLIs, the
plugin listing) does not load the schema machinery to catch them.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value is wrong; the message says where, which key, and why."""

    def __init__(self, where: str, key: str | None, reason: str) -> None:
        location = f"{where}: " if where else ""
        super().__init__(f'{location}key "{key}": {reason}' if key else f"{location}{reason}")
        self.where = where
        self.key = key
        self.reason = reason
