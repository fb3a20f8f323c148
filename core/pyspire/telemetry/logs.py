"""Log setup for the daemons: lines shaped as SPIRE's (logrus) text or JSON, with structured fields.

Fields given with ``extra=`` are printed after the message as logrus prints them: ``time``,
``level`` and ``msg`` first, then the fields sorted by name (``subsystem_name`` among them),
``key=value`` with the value quoted only when it holds a character outside logrus's plain set.
Times are RFC 3339 in local time with the fraction of a second (Go's RFC3339Nano), booleans
are ``true``/``false``, absent values ``<nil>``. Logs go to stdout, as SPIRE's do, or to
``log_file``, which :meth:`LogOutput.reopen` reopens for logrotate (SIGUSR2, as in SPIRE).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

__all__ = ["JsonFormatter", "LogOutput", "TextFormatter", "configure_logging", "reopen_log_files", "rfc3339"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_PLAIN = re.compile(r"[A-Za-z0-9\-._/@^+]+")
_FILE_MODE = 0o640  # SPIRE's mode for log files
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD and not key.startswith("_")}


def rfc3339(timestamp: float) -> str:
    """``timestamp`` as Go's RFC3339Nano writes local time: trailing zeros of the fraction dropped, ``Z`` for UTC."""
    moment = datetime.fromtimestamp(timestamp).astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _scalar(value: object) -> object:
    """A field value as logrus would hold it: booleans and numbers stay, the rest becomes text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def _text_value(value: object) -> str:
    if value is None:
        text = "<nil>"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    # As logrus (QuoteEmptyFields off): an empty value is written as nothing, not as "".
    return text if not text or _PLAIN.fullmatch(text) else json.dumps(text)


def _subsystem(record: logging.LogRecord) -> str:
    return record.name.removeprefix("pyspire.")


def _caller(record: logging.LogRecord) -> dict[str, str]:
    """``log_source_location``: where the line was logged, as logrus's caller fields (``func``, ``file``)."""
    return {"func": f"{record.module}.{record.funcName}", "file": f"{record.pathname}:{record.lineno}"}


class TextFormatter(logging.Formatter):
    """``time="..." level=info msg="..." key=value ...``, fields sorted as logrus sorts them.

    With ``source_location``, ``func`` and ``file`` follow ``msg``, where logrus puts its caller.
    """

    def __init__(self, *, source_location: bool = False) -> None:
        """Add the caller to each line when ``source_location`` is set."""
        super().__init__()
        self.source_location = source_location

    def format(self, record: logging.LogRecord) -> str:
        """One line for ``record``."""
        fields = {"subsystem_name": _subsystem(record), **_fields(record)}
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        parts = [
            f"time={_text_value(rfc3339(record.created))}",
            f"level={record.levelname.lower().replace('warning', 'warn')}",
            f"msg={_text_value(record.getMessage())}",
        ]
        if self.source_location:
            parts.extend(f"{key}={_text_value(value)}" for key, value in _caller(record).items())
        parts.extend(f"{key}={_text_value(fields[key])}" for key in sorted(fields))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, keys sorted as Go's encoder writes logrus's fields (``func``, ``file`` too)."""

    def __init__(self, *, source_location: bool = False) -> None:
        """Add the caller to each line when ``source_location`` is set."""
        super().__init__()
        self.source_location = source_location

    def format(self, record: logging.LogRecord) -> str:
        """One line for ``record``."""
        document: dict[str, Any] = {key: _scalar(value) for key, value in _fields(record).items()}
        document.update(
            {
                "time": rfc3339(record.created),
                "level": record.levelname.lower().replace("warning", "warn"),
                "msg": record.getMessage(),
                "subsystem_name": _subsystem(record),
            }
        )
        if self.source_location:
            document.update(_caller(record))
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return json.dumps(document, sort_keys=True)


class LogOutput(logging.StreamHandler[TextIO]):
    """Where the lines go: stdout, or a file opened for appending that can be reopened in place."""

    def __init__(self, log_file: Path | None = None, stream: TextIO | None = None) -> None:
        """Write to ``log_file`` (created 0640 when absent, as SPIRE does) or to ``stream`` (stdout)."""
        self.log_file = log_file
        super().__init__(self._open() if log_file is not None else (stream or sys.stdout))
        self._swap = threading.Lock()

    def _open(self) -> TextIO:
        assert self.log_file is not None
        descriptor = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE)
        return open(descriptor, "a", encoding="utf-8", buffering=1)

    def reopen(self) -> bool:
        """Open ``log_file`` again (logrotate moved it away) and switch to it; False when there is none.

        The old file is closed only after the new one is open, so a failure (a missing directory)
        leaves logging on the old descriptor, which then says what went wrong, as SPIRE does.
        """
        if self.log_file is None:
            return False
        with self._swap:
            fresh = self._open()
            self.acquire()
            try:
                old, self.stream = self.stream, fresh
            finally:
                self.release()
            old.close()
        return True

    def close(self) -> None:
        """Close the file (never stdout)."""
        if self.log_file is not None:
            self.acquire()
            try:
                self.stream.close()
            finally:
                self.release()
        super().close()


def configure_logging(
    level: str,
    log_format: str,
    log_file: Path | None = None,
    stream: TextIO | None = None,
    *,
    source_location: bool = False,
) -> LogOutput:
    """Send pyspire's logs to ``log_file`` (or stdout) at ``level`` in ``log_format``; the output, for reopening.

    ``source_location`` (``log_source_location``) adds where each line was logged.
    """
    output = LogOutput(log_file, stream)
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    output.setFormatter(formatter(source_location=source_location))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
        if isinstance(existing, LogOutput):
            existing.close()
    root.addHandler(output)
    root.setLevel(logging.WARNING)
    logging.getLogger("pyspire").setLevel(_LEVELS[level.upper()])
    return output


def reopen_log_files() -> bool:
    """Reopen the log file of every :class:`LogOutput` in use; whether there was one (OSError if it cannot be)."""
    outputs = [handler for handler in logging.getLogger().handlers if isinstance(handler, LogOutput)]
    return any([output.reopen() for output in outputs])
