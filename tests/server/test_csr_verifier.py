"""CSR checking shared with a worker process: same answers, same order, survives the worker."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.crypto import CsrError, LocalSigner, build_csr
from pyspire.server import csr_verifier
from pyspire.server.csr_verifier import POOLED_BATCH, QUEUED_BATCHES, CsrVerifier


def _csrs(count: int) -> tuple[list[bytes], list[ec.EllipticCurvePrivateKey]]:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)]
    return [build_csr(LocalSigner(k)) for k in keys], keys


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def test_worker_and_inline_agree_item_by_item() -> None:
    csrs, keys = _csrs(POOLED_BATCH + 4)
    csrs[1] = b"garbage"
    csrs[-2] = b"\x30\x00"

    async def run() -> list[object]:
        verifier = CsrVerifier(workers=1)
        verifier.start()
        try:
            return await verifier.check(csrs)  # type: ignore[return-value]
        finally:
            verifier.close()

    checked = asyncio.run(run())
    for index, item in enumerate(checked):
        if index in (1, len(csrs) - 2):
            assert isinstance(item, CsrError)
        else:
            assert _spki(item) == _spki(keys[index].public_key())


def test_a_dead_worker_falls_back_to_inline_checking() -> None:
    csrs, keys = _csrs(POOLED_BATCH)

    async def run() -> list[object]:
        verifier = CsrVerifier(workers=1)
        verifier.start()
        assert verifier._process is not None
        verifier._process.kill()
        verifier._process.join()
        try:
            first = await verifier.check(csrs)
            second = await verifier.check(csrs)  # inline from now on
            return [*first, *second]
        finally:
            verifier.close()

    checked = asyncio.run(run())
    assert [_spki(k) for k in checked] == [_spki(k.public_key()) for k in keys] * 2


def test_the_worker_starts_with_the_first_large_batch_and_only_then() -> None:
    csrs, keys = _csrs(POOLED_BATCH)

    async def run() -> tuple[bool, bool, bool, list[object]]:
        verifier = CsrVerifier(workers=1)
        try:
            await verifier.check(csrs[: POOLED_BATCH - 1])
            after_small = verifier.worker_started
            first = await verifier.check(csrs)  # checked inline while the worker starts
            after_large = verifier.worker_started
            second = await verifier.check(csrs)  # shared with the worker
            return after_small, after_large, verifier.worker_started, [*first, *second]
        finally:
            verifier.close()

    after_small, after_large, still, checked = asyncio.run(run())
    assert (after_small, after_large, still) == (False, True, True)
    assert [_spki(k) for k in checked] == [_spki(k.public_key()) for k in keys] * 2


def test_no_worker_on_a_single_cpu_setting() -> None:
    csrs, _ = _csrs(POOLED_BATCH)

    async def run() -> bool:
        verifier = CsrVerifier(workers=0)
        try:
            await verifier.check(csrs)
            return verifier.worker_started
        finally:
            verifier.close()

    assert asyncio.run(run()) is False


def test_concurrent_batches_beyond_the_queue_are_all_answered_in_their_order() -> None:
    """More batches at once than the worker may have queued: the overflow is checked inline,
    and every batch gets its own answers, whichever side checked it."""
    batches = [_csrs(POOLED_BATCH + index) for index in range(QUEUED_BATCHES + 3)]

    async def run() -> list[list[object]]:
        verifier = CsrVerifier(workers=1)
        verifier.start()
        try:
            await verifier.check(batches[0][0])  # the worker is up once this one is answered
            return await asyncio.gather(*(verifier.check(csrs) for csrs, _ in batches))  # type: ignore[arg-type]
        finally:
            await verifier.aclose()

    for checked, (_, keys) in zip(asyncio.run(run()), batches, strict=True):
        assert [_spki(k) for k in checked] == [_spki(k.public_key()) for k in keys]


def test_a_worker_that_stops_answering_is_killed_and_the_batch_checked_inline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that hangs (stopped here) costs one timeout, not the timeout and then a wait for
    the process to exit: the loop kills it and checks the batch itself."""
    csrs, keys = _csrs(POOLED_BATCH)

    async def run() -> tuple[list[object], float, bool]:
        verifier = CsrVerifier(workers=1)
        verifier.start()
        process = verifier._process
        assert process is not None
        try:
            await verifier.check(csrs)  # answered by the worker, given its usual time to start
            assert verifier.worker_started
            assert process.pid is not None
            monkeypatch.setattr(csr_verifier, "WORKER_TIMEOUT", 0.5)
            os.kill(process.pid, signal.SIGSTOP)
            started = time.monotonic()
            checked = await verifier.check(csrs)
            return checked, time.monotonic() - started, process.is_alive()
        finally:
            verifier.close()

    checked, seconds, alive = asyncio.run(run())
    assert [_spki(k) for k in checked] == [_spki(k.public_key()) for k in keys]
    assert seconds < 2.5, seconds
    assert not alive
    assert "The CSR worker process failed (no answer in 0.5 s)" in caplog.text
