"""Reconnecting a Workload API watch: go-spiffe's backoff, what ends a watch and what does not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pyspire.spiffe import Backoff, WorkloadApiError
from pyspire.spiffe.watch import watch_forever


def test_the_backoff_grows_by_its_initial_step_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff()
    assert [backoff.next() for _ in range(32)] == [float(n) for n in range(1, 31)] + [30.0, 30.0]
    backoff.reset()
    assert backoff.next() == 1.0
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        Backoff(initial=0)
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        Backoff(initial=5, maximum=1)


def test_a_watch_reopens_after_failures_and_survives_a_bad_item() -> None:
    opened: list[int] = []
    updates: list[int] = []
    errors: list[str] = []

    async def stream() -> AsyncIterator[int]:
        opened.append(len(opened))
        if len(opened) == 1:
            raise ConnectionRefusedError("no agent yet")
        if len(opened) == 2:
            yield 1
            raise WorkloadApiError("UNAVAILABLE: the agent is shutting down", "UNAVAILABLE")
        yield 2
        yield 3  # on_update refuses this one: it is reported, the stream stays open
        yield 4
        raise WorkloadApiError("INVALID_ARGUMENT: security header missing from request", "INVALID_ARGUMENT")

    def update(item: int) -> None:
        if item == 3:
            raise ValueError("the SVID picker failed")
        updates.append(item)

    with pytest.raises(WorkloadApiError, match="INVALID_ARGUMENT"):
        asyncio.run(watch_forever(stream, update, lambda err: errors.append(str(err)), Backoff(initial=0.01)))
    assert updates == [1, 2, 4]
    assert len(opened) == 3
    assert errors == [
        "no agent yet",
        "UNAVAILABLE: the agent is shutting down",
        "the SVID picker failed",
        "INVALID_ARGUMENT: security header missing from request",
    ]
