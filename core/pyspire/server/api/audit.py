"""Audit log lines as SPIRE writes them (``audit_log_enabled``).

Each API call produces one line on the ``pyspire.audit`` logger with ``type=audit``, a
``request_id``, the method, the caller (``caller_uid``/``caller_gid``/``caller_path`` on the
local socket; ``caller_addr``/``caller_id`` over TLS), ``status`` success or error, and
``status_code``/``status_message`` for errors. Secrets (tokens, keys, CSRs) are never logged.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

__all__ = ["AuditLog"]

_log = logging.getLogger("pyspire.audit")


class AuditLog:
    """Writes one audit line per API call when enabled."""

    def __init__(self, enabled: bool) -> None:
        """Audit when ``enabled`` (SPIRE's ``audit_log_enabled``)."""
        self.enabled = enabled

    @staticmethod
    def request_id() -> str:
        """A fresh request ID."""
        return str(uuid.uuid4())

    def record(
        self,
        request_id: str,
        method: str,
        caller: dict[str, Any],
        *,
        status_code: int,
        status_message: str = "",
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Log the outcome of one call."""
        if not self.enabled:
            return
        extra: dict[str, Any] = {
            "type": "audit",
            "request_id": request_id,
            "method": method,
            "status": "success" if status_code == 0 else "error",
            **caller,
            **(fields or {}),
        }
        if status_code:
            extra["status_code"] = status_code
            extra["status_message"] = status_message
        _log.info("API accessed", extra=extra)


def caller_path(pid: int) -> str:
    """The executable of a local caller, for audit lines ("" if it cannot be read)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""
