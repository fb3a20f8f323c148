"""Errors a plugin raises, and the gRPC status each becomes.

Plugins are plain Python and never import gRPC; they raise one of these and the daemon turns
it into the matching status code, prefixing the plugin, e.g.
``nodeattestor(aws_iid): account "123" is not allowed`` (SPIRE's format). Any other exception
escaping a hook is a bug in the plugin and is reported as ``INTERNAL``.
"""

from __future__ import annotations

import enum

__all__ = [
    "AlreadyExists",
    "CatalogError",
    "ErrorCode",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PluginConfigError",
    "PluginError",
    "Unavailable",
    "Unimplemented",
]


class ErrorCode(enum.Enum):
    """The gRPC status codes a plugin may choose from (values are gRPC's numbers)."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class PluginError(Exception):
    """Base of every error a plugin raises on purpose; ``code`` picks the gRPC status."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(PluginError):
    """The input is malformed: a bad payload, an unknown key ID, a truncated signature."""

    code = ErrorCode.INVALID_ARGUMENT


class PermissionDenied(PluginError):
    """The input is well formed but not allowed: an account off the allow-list, a replay."""

    code = ErrorCode.PERMISSION_DENIED


class NotFound(PluginError):
    """The thing asked for does not exist (a key, a process)."""

    code = ErrorCode.NOT_FOUND


class AlreadyExists(PluginError):
    """The thing to create exists already (an entry with the same identity, a node)."""

    code = ErrorCode.ALREADY_EXISTS


class FailedPrecondition(PluginError):
    """The plugin cannot act in its current state (not configured, wrong platform)."""

    code = ErrorCode.FAILED_PRECONDITION


class Unimplemented(PluginError):
    """The plugin does not offer this optional operation."""

    code = ErrorCode.UNIMPLEMENTED


class Internal(PluginError):
    """Something broke inside the plugin or a service it calls (fail closed)."""

    code = ErrorCode.INTERNAL


class Unavailable(PluginError):
    """A service the plugin needs is unreachable right now; the caller may retry."""

    code = ErrorCode.UNAVAILABLE


class PluginConfigError(ValueError):
    """``plugin_data`` is wrong. Raised by ``configure``; names the offending key.

    The catalog adds the plugin's type, name and config file, so a plugin only says what
    is wrong with which key: ``PluginConfigError("keys_path", "is required")``.
    """

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(f'key "{key}": {message}' if key else message)
        self.key = key
        self.reason = message


class CatalogError(Exception):
    """A plugin could not be found, loaded or configured, or the set of plugins is not valid.

    Raised by the daemons' plugin catalog (never by plugins); the message names the config
    file, the declaration and what to do.
    """
