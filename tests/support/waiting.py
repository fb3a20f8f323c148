"""Waiting for real daemons: retry a check until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
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
