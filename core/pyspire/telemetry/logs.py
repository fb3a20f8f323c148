"""Log setup for the daemons: SPIRE-like text lines or JSON, with structured fields.

Fields given with ``extra=`` are printed after the message (``key=value``, or as JSON
members), so a line says what happened and to what. Only pyspire's own records carry
structured fields; library records print as plain messages.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

__all__ = ["configure_logging"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD and not key.startswith("_")}


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``time="..." level=info msg="..." subsystem_name=... key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f'time="{_time(record)}"',
            f"level={record.levelname.lower()}",
            f"msg={json.dumps(record.getMessage())}",
        ]
        parts.append(f"subsystem_name={record.name.removeprefix('pyspire.')}")
        for key, value in _fields(record).items():
            text = value if isinstance(value, (int, float, bool)) else json.dumps(str(value))
            parts.append(f"{key}={text}")
        if record.exc_info:
            parts.append(f"error={json.dumps(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "subsystem_name": record.name.removeprefix("pyspire."),
        }
        document.update(
            {
                key: value if isinstance(value, (int, float, bool, type(None))) else str(value)
                for key, value in _fields(record).items()
            }
        )
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure_logging(level: str, log_format: str, log_file: Path | None = None, stream: TextIO | None = None) -> None:
    """Send pyspire's logs to ``log_file`` (or stderr) at ``level`` in ``log_format``."""
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    numeric = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}[
        level.upper()
    ]
    logging.getLogger("pyspire").setLevel(numeric)
