"""The plumbing every HTTP(S) fake of an external API shares: serve on a thread, stop cleanly."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(
    handler: type[BaseHTTPRequestHandler], port: int = 0, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """Serve ``handler`` on ``host:port`` (0: a free port), over TLS when ``tls`` is given, until stopped."""
    server = ThreadingHTTPServer((host, port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop(server: ThreadingHTTPServer | None) -> None:
    """Stop serving and close the socket (nothing to do for a server never started)."""
    if server is not None:
        server.shutdown()
        server.server_close()
