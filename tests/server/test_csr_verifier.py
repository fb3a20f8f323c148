"""CSR checking shared with a worker process: same answers, same order, survives the worker."""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyspire.crypto import CsrError, LocalSigner, build_csr
from pyspire.server.csr_verifier import POOLED_BATCH, CsrVerifier


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
