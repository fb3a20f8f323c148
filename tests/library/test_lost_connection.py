"""An agent that drops the connection mid-call: the library's own error, with gRPC's status for it.

Regression: grpclib's StreamTerminatedError ("Connection lost") escaped from every
WorkloadApiClient call, an error type callers could not know to catch or retry on (a test
waiting for an agent to serve again after running out of descriptors failed on it).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspire.spiffe.workloadapi import WorkloadApiClient, WorkloadApiError


@pytest.fixture
def dropping_agent(tmp_path: Path) -> Iterator[str]:
    """A Unix socket that reads what a caller sends and hangs up without a gRPC answer."""
    path = tmp_path / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def hang_up_on_each() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)

    threading.Thread(target=hang_up_on_each, daemon=True).start()
    yield f"unix://{path}"
    listener.close()


Call = Callable[[WorkloadApiClient], Coroutine[Any, Any, object]]
CALLS: dict[str, Call] = {
    "fetch_x509_context": lambda c: c.fetch_x509_context(),
    "fetch_x509_bundles": lambda c: c.fetch_x509_bundles(),
    "fetch_jwt_bundles": lambda c: c.fetch_jwt_bundles(),
    "fetch_jwt_svids": lambda c: c.fetch_jwt_svids(["db"]),
    "validate_jwt_svid": lambda c: c.validate_jwt_svid("a.b.c", "db"),
}


@pytest.mark.parametrize("name", CALLS)
def test_a_dropped_connection_is_a_workload_api_error_with_status_unavailable(dropping_agent: str, name: str) -> None:
    async def call() -> None:
        async with WorkloadApiClient(dropping_agent, timeout=5) as client:
            await CALLS[name](client)

    with pytest.raises(WorkloadApiError, match="connection to the agent was lost") as caught:
        asyncio.run(call())
    assert caught.value.status == "UNAVAILABLE"
