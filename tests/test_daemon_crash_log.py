"""A daemon stopped by a bug leaves the traceback in its log, where an operator can report it.

The command line says "unexpected ... (a bug in pyspire: please report it)" in one line; before
this, the log then ended with "Server stopped" and nothing said where the error came from
(a start-up TypeError seen once in CI could not be traced).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyspire.daemon_cli import run_daemon


class _Level(enum.Enum):
    INFO = "INFO"


class _Format(enum.Enum):
    TEXT = "text"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """run_daemon sets up the process's logging, as a daemon does: put this worker's back after."""
    root, pyspire = logging.getLogger(), logging.getLogger("pyspire")
    handlers, levels = list(root.handlers), (root.level, pyspire.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(levels[0])
    pyspire.setLevel(levels[1])


@pytest.mark.usefixtures("restored_logging")
def test_an_unexpected_error_is_logged_with_its_traceback_and_raised(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    section = SimpleNamespace(
        log_level=_Level.INFO, log_format=_Format.TEXT, log_file=log_file, log_source_location=False
    )

    def run(config: object) -> int:
        raise TypeError("'<' not supported between instances of 'str' and 'NoneType'")

    with pytest.raises(TypeError):
        run_daemon(object, lambda config: section, run, "server")  # type: ignore[type-var]
    logged = log_file.read_text()
    assert "The server stopped on an unexpected error" in logged
    assert "Traceback" in logged
    assert "in run" in logged  # the frame that raised
