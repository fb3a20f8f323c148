"""What the Google Cloud API fakes share: OAuth for service accounts, JSON errors, REST serving.

Google's client libraries authenticate a service account key file by signing a JWT with its key
and trading it at the file's ``token_uri`` for an access token (or, with a self-signed JWT, by
sending the JWT itself). ``GoogleRestFake`` serves both: ``/token`` issues tokens, and any other
request must carry one it issued or a JWT one of its accounts' keys signed. Errors are answered
as Google answers them, ``{"error": {"code", "message", "status"}}``, which the clients turn
into their ``google.api_core.exceptions`` types. A subclass implements ``dispatch`` for its API's
``/v1/`` resources and is served over plain HTTP on loopback (the clients' ``api_endpoint``).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support import http_fakes

# The status Google names for each HTTP code (several share one: FAILED_PRECONDITION comes as 400).
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
          503: "UNAVAILABLE"}  # fmt: skip


class ApiError(Exception):
    """An error answer: the HTTP code, and the status Google names in the body (default: the code's)."""

    def __init__(self, code: int, message: str, status: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.status = status or STATUS.get(code, "UNKNOWN")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GoogleRestFake:
    """A Google REST API on 127.0.0.1 (``url``) that authenticates as Google does.

    ``dispatch`` runs under ``lock``, so a subclass's state needs no locking of its own against
    requests; a test that reads or changes that state while the fake serves takes ``lock`` too.
    """

    default_account = "spire-server@test-project.iam.gserviceaccount.com"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._tokens: set[str] = set()
        self._account_keys: list[rsa.RSAPublicKey] = []
        self._server = http_fakes.serve(self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        http_fakes.stop(self._server)

    def service_account_file(self, directory: Path, email: str = "") -> Path:
        """A service account key file whose token endpoint is this fake."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self._account_keys.append(private.public_key())
        path = directory / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "test-project", "private_key_id": "1",
            "private_key": pem, "client_email": email or self.default_account, "client_id": "1",
            "token_uri": f"{self.url}/token",
        }))  # fmt: skip
        return path

    def dispatch(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        """Answer ``method`` on ``path`` (after ``/v1/``), or raise ApiError."""
        raise NotImplementedError

    def _authenticated(self, authorization: str) -> bool:
        """A token this fake issued, or a JWT self-signed by one of its service accounts' keys."""
        token = authorization.removeprefix("Bearer ")
        if token in self._tokens:
            return True
        parts = token.split(".")
        if len(parts) != 3:
            return False
        for public in self._account_keys:
            try:
                public.verify(_unb64(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
            except (InvalidSignature, ValueError):
                continue
            return True
        return False

    def _answer(self, method: str, target: str, authorization: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        url = urlsplit(target)
        if url.path == "/token":
            token = secrets.token_urlsafe(16)
            self._tokens.add(token)
            return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        try:
            if not self._authenticated(authorization):
                raise ApiError(401, "Request had invalid authentication credentials.")
            if not url.path.startswith("/v1/"):
                raise ApiError(404, f"no such resource {url.path}")
            with self.lock:
                return 200, self.dispatch(method, url.path[4:], query, json.loads(raw or b"{}"))
        except ApiError as err:
            return err.code, {"error": {"code": err.code, "message": str(err), "status": err.status}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, payload = fake._answer(self.command, self.path, self.headers.get("Authorization", ""), raw)
                http_fakes.send_json(self, code, payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

        return Handler
