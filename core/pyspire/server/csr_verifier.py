"""Checking batches of CSRs on a second core.

Verifying a CSR's self-signature costs about as much as signing the certificate, and neither
releases the GIL, so one server process signs at most half as fast as ``cryptography`` can.
For large batches (agents ask for up to 500 SVIDs at once) half of the CSRs are checked in a
worker process while the event loop's thread checks the other half; the certificates are then
signed here, where the KeyManager lives. The worker only ever sees CSRs, which are public.
Small batches are checked inline: the round trip to the worker would cost more than it saves.
The worker starts with the first large batch, not with the server: a fresh interpreter costs
about 0.3 s of CPU and 20 MB, which a server whose agents never ask for many SVIDs at once
should not pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pyspire.crypto import CsrError, parse_csr

__all__ = ["POOLED_BATCH", "CsrVerifier"]

_log = logging.getLogger(__name__)

POOLED_BATCH = 16
"""Batches at least this large are split with the worker process."""
SHORT_WAIT = 0.02
WORKER_TIMEOUT = 10.0

CheckedKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | CsrError


def _check_remote(ders: Sequence[bytes]) -> list[bytes | str]:
    """In the worker: each CSR's SubjectPublicKeyInfo, or the reason it was refused."""
    checked: list[bytes | str] = []
    for der in ders:
        try:
            key = parse_csr(der)
        except CsrError as err:
            checked.append(str(err))
            continue
        checked.append(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    return checked


def _check_local(ders: Sequence[bytes]) -> list[CheckedKey]:
    checked: list[CheckedKey] = []
    for der in ders:
        try:
            checked.append(parse_csr(der))
        except CsrError as err:
            checked.append(err)
    return checked


def _from_remote(item: bytes | str) -> CheckedKey:
    if isinstance(item, str):
        return CsrError(item)
    key = serialization.load_der_public_key(item)
    assert isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey))  # parse_csr allowed nothing else
    return key


def _serve(connection: Connection) -> None:
    """The worker process: check batches until told to stop (None) or the pipe closes."""
    while True:
        try:
            batch = connection.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        connection.send(_check_remote(batch))


class CsrVerifier:
    """Checks CSRs, sharing large batches with one worker process when there is a spare core.

    The batch goes to the worker over a pipe written from this thread (an executor would hand it
    over from a helper thread, which waits for the GIL while this thread verifies), and only one
    batch at a time is shared; a batch arriving meanwhile is checked inline. The batch that starts
    the worker is checked inline too, while the worker imports. A worker that fails is not
    started again: checking inline is always correct, only slower.
    """

    def __init__(self, workers: int | None = None) -> None:
        """Use a worker process if ``workers`` (default: if this machine has more than one CPU)."""
        self._enabled = bool(workers if workers is not None else (os.cpu_count() or 1) > 1)
        self._connection: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._busy = False

    @property
    def worker_started(self) -> bool:
        """Whether a worker process is running (it starts with the first large batch)."""
        return self._process is not None

    def start(self) -> None:
        """Start the worker process now instead of at the first large batch."""
        if not self._enabled or self._process is not None:
            return
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="pyspire-csr-worker", daemon=True)
        self._process.start()
        child.close()

    async def check(self, ders: Sequence[bytes]) -> list[CheckedKey]:
        """For each CSR (in order): its public key, or the CsrError saying why it was refused."""
        connection = self._connection
        if len(ders) < POOLED_BATCH or self._busy:
            return _check_local(ders)
        if connection is None:
            self.start()
            return _check_local(ders)
        half = len(ders) // 2
        self._busy = True
        try:
            connection.send(list(ders[:half]))
            local = _check_local(ders[half:])
            # The worker had the same amount of work and started first, so its answer is due
            # about now: wait briefly in this thread, longer (off the loop) only if it is late.
            if not connection.poll(SHORT_WAIT) and not await asyncio.to_thread(connection.poll, WORKER_TIMEOUT):
                raise TimeoutError("the CSR worker did not answer")
            first = [_from_remote(item) for item in connection.recv()]
        except (EOFError, OSError, TimeoutError) as err:
            _log.warning("The CSR worker process failed (%s); checking CSRs inline from now on", err)
            self.close()
            self._enabled = False
            return _check_local(ders)
        finally:
            self._busy = False
        return first + local

    def close(self) -> None:
        """Stop the worker."""
        connection, process = self._connection, self._process
        self._connection = self._process = None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.send(None)
            connection.close()
        if process is not None:
            process.join(5)
            if process.is_alive():
                process.kill()
