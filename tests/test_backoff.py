"""The one back-off of the daemons' retry loops, on a clock the test moves."""

from __future__ import annotations

import itertools

import pytest
from grpclib.const import Status
from pyspire.backoff import Backoff, attestation_backoff, transient_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_attestation_backoff_is_spires_bootstrap_schedule() -> None:
    """5 s, then 1.5 times the last (±10 %), until the next wait would end after a minute."""
    backoff = attestation_backoff()
    assert backoff.window == 60.0
    clock = Clock()
    backoff = Backoff(5.0, window=60.0, clock=clock)
    waits = []
    while (wait := backoff.next_wait()) is not None:
        waits.append(wait)
        clock.now += wait
    assert 4.5 <= waits[0] <= 5.5
    for earlier, later in itertools.pairwise(waits):
        assert 1.5 * 0.9 / 1.1 <= later / earlier <= 1.5 * 1.1 / 0.9
    assert sum(waits) <= 60.0
    assert 4 <= len(waits) <= 6


def test_waits_stop_growing_at_the_cap() -> None:
    backoff = Backoff(10.0, multiplier=2.0, jitter=0.0, max_interval=60.0)
    assert [backoff.next_wait() for _ in range(6)] == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_reset_after_a_success_starts_again_from_the_first_wait() -> None:
    clock = Clock()
    backoff = Backoff(1.0, multiplier=2.0, jitter=0.0, window=10.0, clock=clock)
    assert [backoff.next_wait(), backoff.next_wait(), backoff.next_wait()] == [1.0, 2.0, 4.0]
    clock.now += 9.5
    assert backoff.next_wait() is None, "the window is spent"
    backoff.reset()
    assert backoff.next_wait() == 1.0


def test_without_a_window_the_backoff_never_gives_up() -> None:
    clock = Clock()
    backoff = Backoff(1.0, multiplier=2.0, max_interval=5.0, clock=clock)
    clock.now += 1e9
    assert backoff.next_wait() is not None


def test_jitter_spreads_waits_within_its_bounds() -> None:
    waits = {Backoff(0.75, multiplier=1.0, jitter=1 / 3).next_wait() for _ in range(200)}
    assert all(w is not None and 0.5 <= w <= 1.0 for w in waits)
    assert len(waits) > 100


@pytest.mark.parametrize(
    "status",
    [Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.RESOURCE_EXHAUSTED, Status.INTERNAL, Status.UNKNOWN],
)
def test_statuses_that_may_pass_by_themselves_are_transient(status: Status) -> None:
    assert transient_status(status.value)


@pytest.mark.parametrize(
    "status",
    [
        Status.INVALID_ARGUMENT,
        Status.PERMISSION_DENIED,
        Status.NOT_FOUND,
        Status.FAILED_PRECONDITION,
        Status.UNIMPLEMENTED,
        Status.UNAUTHENTICATED,
    ],
)
def test_answers_about_the_request_or_the_set_up_are_not_transient(status: Status) -> None:
    assert not transient_status(status.value)


@pytest.mark.parametrize(
    "arguments", [{"interval": 0.0}, {"interval": 1.0, "multiplier": 0.5}, {"interval": 1.0, "jitter": 1.0}]
)
def test_a_backoff_that_cannot_wait_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="a back-off needs"):
        Backoff(**arguments)  # type: ignore[arg-type]
