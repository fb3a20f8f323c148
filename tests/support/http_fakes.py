"""The plumbing every HTTP(S) fake of an external API shares: serve on a thread, stop cleanly."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve(
    handler: type[BaseHTTPRequestHandler], port: int = 0, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """Serve ``handler`` on ``host:port`` (0: a free port), over TLS when ``tls`` is given, until stopped."""
    server = ThreadingHTTPServer((host, port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    # shutdown() waits for the serving loop's next poll: 50 ms instead of the default 0.5 s per fake stopped.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop(server: ThreadingHTTPServer | None) -> None:
    """Stop serving and close the socket (nothing to do for a server never started)."""
    if server is not None:
        server.shutdown()
        server.server_close()


def send_json(handler: BaseHTTPRequestHandler, code: int, body: Any) -> None:
    """Answer with ``body`` as JSON (``None``: an empty body, as for HTTP 204)."""
    data = json.dumps(body).encode() if body is not None else b""
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
