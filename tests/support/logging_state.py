"""Every test starts with the logging set-up the one before it found (a pytest plugin, ``-p``).

The daemons' entry points configure logging for the whole process: ``validate`` called in
process, say, sets the ``pyspire`` tree to WARN and replaces the root handlers. A later test on
the same xdist worker that waits for a plugin's DEBUG line would then never see it, and fail
only when the two tests happen to share a worker. Loaded from ``addopts`` so that it covers the
plugin distributions' tests as well as ``tests/``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


def _levels() -> dict[str, int]:
    """The level of the root logger and of every ``pyspire`` logger that has one of its own."""
    named = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and (name == "pyspire" or name.startswith("pyspire."))
    }
    return {"": logging.getLogger().level, **named}


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = _levels()
    yield
    for name in _levels().keys() - levels.keys():
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for added in [handler for handler in root.handlers if handler not in handlers]:
        root.removeHandler(added)
    for removed in [handler for handler in handlers if handler not in root.handlers]:
        root.addHandler(removed)
