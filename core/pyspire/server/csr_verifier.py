"""Checking batches of CSRs on a second core.

Verifying a CSR's self-signature costs about as much as signing the certificate, and neither
releases the GIL: checked in the server's process, the CSRs of a busy server take a quarter of
its one core. Large batches (agents ask for up to 500 SVIDs at once) go to a worker process
instead, whole, while the event loop serves other calls; the certificates are then signed
here, where the KeyManager lives. The worker only ever sees CSRs, which are public. When the
worker already has ``QUEUED_BATCHES`` batches waiting, the next is checked here, so a worker
that falls behind never makes a batch wait longer than checking it would take. Small batches
are checked inline: the round trip to the worker would cost more than it saves.
The worker starts with the first large batch, not with the server: a fresh interpreter costs
about 0.3 s of CPU and 20 MB, which a server whose agents never ask for many SVIDs at once
should not pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pyspire.crypto import CsrError, parse_csr

__all__ = ["POOLED_BATCH", "QUEUED_BATCHES", "CsrVerifier"]

_log = logging.getLogger(__name__)

POOLED_BATCH = 8
"""Batches at least this large go to the worker process."""
QUEUED_BATCHES = 4
"""Batches the worker may have waiting; one more is checked in the server's process."""
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
    """The worker process: check ``(number, batch)`` requests until told to stop (None) or the pipe closes."""
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        number, batch = request
        connection.send((number, _check_remote(batch)))


class CsrVerifier:
    """Checks CSRs, handing large batches to one worker process when there is a spare core.

    Requests go to the worker over a pipe written from the event loop's thread, and its answers
    are read when the pipe is readable (a reader on the loop): no thread waits for the worker.
    A worker that fails is not started again: checking inline is always correct, only slower.
    """

    def __init__(self, workers: int | None = None) -> None:
        """Use a worker process if ``workers`` (default: if this machine has more than one CPU)."""
        self._enabled = bool(workers if workers is not None else (os.cpu_count() or 1) > 1)
        self._connection: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[list[bytes | str]]] = {}
        self._numbers = itertools.count()

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
        if len(ders) < POOLED_BATCH or len(self._waiting) >= QUEUED_BATCHES or not self._enabled:
            return _check_local(ders)
        if self._connection is None:
            self.start()  # the batch that starts the worker is checked here while it imports
            return _check_local(ders)
        try:
            answer = await asyncio.wait_for(self._ask_worker(list(ders)), WORKER_TIMEOUT)
        except (EOFError, OSError, TimeoutError) as err:
            reason = f"no answer in {WORKER_TIMEOUT:g} s" if isinstance(err, TimeoutError) else str(err)
            _log.warning("The CSR worker process failed (%s); checking CSRs inline from now on", reason)
            self._stop_worker(err)
            return _check_local(ders)
        return [_from_remote(item) for item in answer]

    async def _ask_worker(self, ders: list[bytes]) -> list[bytes | str]:
        connection = self._connection
        if connection is None:
            raise EOFError("the worker was stopped")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            loop.add_reader(connection.fileno(), self._read_answer)
        number = next(self._numbers)
        future: asyncio.Future[list[bytes | str]] = loop.create_future()
        self._waiting[number] = future
        try:
            connection.send((number, ders))
            return await future
        finally:
            self._waiting.pop(number, None)

    def _read_answer(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            number, answer = connection.recv()
        except (EOFError, OSError) as err:
            self._stop_worker(err if str(err) else EOFError("the worker closed its pipe"))
            return
        future = self._waiting.get(number)
        if future is not None and not future.done():
            future.set_result(answer)

    def _stop_worker(self, reason: BaseException) -> None:
        """Fail what waits for the worker, and check inline from now on.

        Runs on the event loop: the failed worker is killed, not waited for (one that stopped
        answering would hold the loop for ``close``'s five seconds).
        """
        self._enabled = False
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(EOFError(f"the CSR worker failed: {reason}"))
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        self.close()

    async def aclose(self) -> None:
        """Stop the worker from the event loop: its reader comes off the loop here, the wait in a thread."""
        self._detach_reader()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the worker (from the event loop's thread, or once ``aclose`` has detached it)."""
        self._detach_reader()
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

    def _detach_reader(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and self._connection is not None and not loop.is_closed():
            loop.remove_reader(self._connection.fileno())
