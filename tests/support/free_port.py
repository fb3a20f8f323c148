"""Free TCP ports on the loopback interface for servers started by tests.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same range
every outgoing connection's local port is drawn from. Between the test choosing it and its
server binding it, a client connection elsewhere on the machine could take it (seen in CI:
"Address already in use" from a server started beside the Azure fake's HTTPS clients). So
ports are drawn below that range, where only listeners that chose them bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FALLBACK_EPHEMERAL_START = 32768
_LOWEST = 20000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _FALLBACK_EPHEMERAL_START


def free_port() -> int:
    """A TCP port on 127.0.0.1, below the ephemeral range, that nothing is bound to right now."""
    highest = _ephemeral_start() - 1
    if highest <= _LOWEST:  # an unusual range: let the kernel choose
        return _kernel_chosen_port()
    for _ in range(200):
        port = random.randint(_LOWEST, highest)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return _kernel_chosen_port()


def _kernel_chosen_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
