"""The threads the server's blocking work runs in: one pool per kind, so no kind starves another.

Plugin hooks are synchronous, so the server runs them (and its own CPU-bound signing) in
threads. Sharing one pool let the cheapest work for an unauthenticated caller crowd out the
most important: eight AttestAgent streams presenting a public x509pop certificate and never
answering the challenge held every worker thread (a NodeAttestor waits for the answer in its
thread), and SVID signing for every agent stalled. So:

- node attestation (the NodeAttestor hook, challenges included) has its own pool; once it
  is busy, further attestations wait for it, and only attestations do;
- signing (X509-SVIDs, JWT-SVIDs, downstream CAs: the CA's key in the KeyManager) has its own;
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

__all__ = ["ATTESTATION_THREADS", "SIGNING_THREADS", "WorkPools"]

T = TypeVar("T")

ATTESTATION_THREADS = 16
"""Node attestations in progress at once (each may hold a thread while it waits for an agent)."""
SIGNING_THREADS = min(32, (os.cpu_count() or 1) + 4)
"""As asyncio's default pool: signing is CPU work (or a KeyManager's remote call)."""


class WorkPools:
    """The attestation and signing pools; :meth:`close` when the server stops."""

    def __init__(self, attestation_threads: int = ATTESTATION_THREADS, signing_threads: int = SIGNING_THREADS) -> None:
        """Threads are started on demand, up to these numbers."""
        self._attestation = ThreadPoolExecutor(attestation_threads, thread_name_prefix="pyspire-attestation")
        self._signing = ThreadPoolExecutor(signing_threads, thread_name_prefix="pyspire-signing")

    async def attest(self, function: Callable[..., T], *args: Any) -> T:
        """Run a NodeAttestor hook in the attestation pool."""
        return await _run(self._attestation, function, *args)

    async def sign(self, function: Callable[..., T], *args: Any) -> T:
        """Run a signing in the signing pool."""
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
