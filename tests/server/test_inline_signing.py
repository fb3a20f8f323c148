"""Which KeyManagers the server signs with on its event loop (pyspire.server.work).

A thread hand-off costs more than a few ECDSA signatures, so the server makes up to
INLINE_SIGNATURES of them at once on the loop, but only with its own ``memory`` and ``disk`` KeyManagers: a plugin, even one
derived from them, may do I/O in ``sign_data`` and would stall every call of the server
(``tests/server/test_api_edge.py::test_agent_banned_while_it_reattests_is_permission_denied``
runs such a plugin, which calls the server's admin API from ``sign_data``, on a real server).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from pyspire.plugin.builtin.key_managers import MemoryKeyManager, signs_in_process
from pyspire.plugin.testing import load_plugin, make_core_config
from pyspire.server.work import INLINE_SIGNATURES, WorkPools


@pytest.mark.parametrize(("name", "data"), [("memory", {}), ("disk", {"keys_path": "keys.json"})])
def test_the_builtin_key_managers_sign_in_process(tmp_path: Path, name: str, data: dict[str, str]) -> None:
    data = {key: str(tmp_path / value) for key, value in data.items()}
    handle = load_plugin("server", "KeyManager", name, data, make_core_config(tmp_path))
    assert signs_in_process(handle.instance)


def test_a_key_manager_derived_from_a_builtin_one_is_not_taken_on_trust() -> None:
    class Derived(MemoryKeyManager):
        pass

    assert signs_in_process(MemoryKeyManager())
    assert not signs_in_process(Derived())
    assert not signs_in_process(object())


@pytest.mark.parametrize(
    ("inline_signing", "count", "on_the_loop"),
    [(True, 1, True), (True, INLINE_SIGNATURES, True), (True, INLINE_SIGNATURES + 1, False), (False, 1, False)],
)
def test_a_few_signatures_are_made_on_the_loop_and_more_in_the_signing_pool(
    inline_signing: bool, count: int, on_the_loop: bool
) -> None:
    pools = WorkPools(inline_signing=inline_signing)

    async def run() -> tuple[str, str]:
        return threading.current_thread().name, await pools.sign_some(count, lambda: threading.current_thread().name)

    try:
        loop_thread, signing_thread = asyncio.run(run())
    finally:
        pools.close()
    assert (signing_thread == loop_thread) is on_the_loop
    if not on_the_loop:
        assert signing_thread.startswith("pyspire-signing")
