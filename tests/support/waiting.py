"""Waiting for real daemons: retry a check until it holds or a deadline passes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from grpclib.exceptions import GRPCError
from pyspire.spiffe.workloadapi import WorkloadApiError

T = TypeVar("T")

NOT_YET = (AssertionError, WorkloadApiError, GRPCError, OSError, TimeoutError)
"""What a check may raise while the daemons are still catching up."""


def eventually(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.3) -> T:
    """``check()``'s first truthy result, retrying while it raises NOT_YET or returns a falsy value."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except NOT_YET as err:
            last = err
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {last}")


def until_listening(path: Path, running: Callable[[], bool], timeout: float = 10.0) -> None:
    """Return once the Unix socket at ``path`` accepts a connection; raise if ``running()`` turns false first.

    A server binds its socket, which makes the file appear, before it listens: a client that
    connects in between is refused, so the file existing does not say the server is ready.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(str(path))
            return
        except OSError as err:
            if not running():
                raise RuntimeError(f"the server of {path} exited before it listened ({err})") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listened on {path} within {timeout} s ({err})") from None
        time.sleep(0.02)
