"""The threads the server's blocking work runs in: one pool per kind, so no kind starves another.

Plugin hooks are synchronous, so the server runs them (and its own CPU-bound signing) in
threads. Sharing one pool let the cheapest work for an unauthenticated caller crowd out the
most important: eight AttestAgent streams presenting a public x509pop certificate and never
answering the challenge held every worker thread (a NodeAttestor waits for the answer in its
thread), and SVID signing for every agent stalled. So:

- node attestation (the NodeAttestor hook, challenges included) has its own pool; once it
  is busy, further attestations wait for it, and only attestations do;
- signing (X509-SVIDs, JWT-SVIDs, downstream CAs: the CA's key in the KeyManager) has its own,
  except that a few signatures with an EC key held in this process, and no plugin taking
  part, are made on the event loop: each takes tens of microseconds, and handing them to a
  thread and back costs more (MintJWTSVID ran 40 % faster so);
- everything else (the datastore, the CA's rotation, federation) keeps asyncio's default pool.

A challenge unanswered after ``CHALLENGE_TIMEOUT`` seconds frees its thread (see
:mod:`pyspire.server.attestation`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["ATTESTATION_THREADS", "INLINE_SIGNATURES", "SIGNING_THREADS", "WorkPools"]

T = TypeVar("T")

ATTESTATION_THREADS = 16
"""Node attestations in progress at once (each may hold a thread while it waits for an agent)."""
SIGNING_THREADS = min(32, (os.cpu_count() or 1) + 4)
"""As asyncio's default pool: signing is CPU work (or a KeyManager's remote call)."""
INLINE_SIGNATURES = 10
"""At most this many signatures are made on the event loop at once (with ``inline_signing``).

An X509-SVID takes about 0.1 ms to encode and sign: ten hold the loop about a millisecond."""


class WorkPools:
    """The attestation and signing pools; :meth:`close` when the server stops."""

    def __init__(
        self,
        attestation_threads: int = ATTESTATION_THREADS,
        signing_threads: int = SIGNING_THREADS,
        *,
        inline_signing: bool = False,
    ) -> None:
        """Threads are started on demand, up to these numbers.

        ``inline_signing``: :meth:`sign_one` signs on the caller's thread. Only for keys that
        sign in microseconds without I/O (an EC key of an in-process KeyManager, no
        CredentialComposer): anything slower would stall every other call of the server.
        """
        self.inline_signing = inline_signing
        self._attestation = ThreadPoolExecutor(attestation_threads, thread_name_prefix="pyspire-attestation")
        self._signing = ThreadPoolExecutor(signing_threads, thread_name_prefix="pyspire-signing")

    async def attest(self, function: Callable[..., T], *args: Any) -> T:
        """Run a NodeAttestor hook in the attestation pool."""
        return await _run(self._attestation, function, *args)

    async def sign_one(self, function: Callable[..., T], *args: Any) -> T:
        """Make one signature: here with ``inline_signing``, else in the signing pool."""
        return await self.sign_some(1, function, *args)

    async def sign_some(self, count: int, function: Callable[..., T], *args: Any) -> T:
        """Make ``count`` signatures: here with ``inline_signing`` if they are few, else in the signing pool.

        The hand-off to a thread and back costs the loop about as much as a few signatures
        (BatchNewX509SVID with 10 CSRs ran 30 % faster inline); more than ``INLINE_SIGNATURES``
        would hold every other call too long.
        """
        if self.inline_signing and count <= INLINE_SIGNATURES:
            return function(*args)
        return await _run(self._signing, function, *args)

    def close(self) -> None:
        """Stop taking work; running calls finish in their threads."""
        self._attestation.shutdown(wait=False, cancel_futures=True)
        self._signing.shutdown(wait=False, cancel_futures=True)


async def _run(pool: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> T:
    # As asyncio.to_thread: the call sees the caller's context variables (log fields).
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args)
    return await asyncio.get_running_loop().run_in_executor(pool, call)
