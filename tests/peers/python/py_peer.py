"""py-peer: an independent Workload API client on py-spiffe and spiffe-tls, for the interop tests.

The same commands and JSON lines as go-peer (tests/peers/go/main.go): x509, jwt, validate,
serve, dial. It imports nothing from pyspire, so what it reports is what py-spiffe saw. The
agent is the one SPIFFE_ENDPOINT_SOCKET names.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from spiffe import JwtSource, JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient, X509Source
from spiffetls import ListenOptions, dial, listen
from spiffetls.tlsconfig.authorize import authorize_id, authorize_member_of


def emit(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def authorizer(spec: str) -> Any:
    if spec.startswith("td:"):
        return authorize_member_of(TrustDomain(spec[3:]))
    return authorize_id(SpiffeId(spec))


def describe(source: X509Source) -> dict[str, Any]:
    svid = source.svid
    bundle = source.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    authorities = list(bundle.x509_authorities) if bundle else []
    store = crypto.X509Store()
    for authority in authorities:
        store.add_cert(crypto.X509.from_cryptography(authority))
    leaf, *intermediates = svid.cert_chain
    try:
        crypto.X509StoreContext(
            store, crypto.X509.from_cryptography(leaf), [crypto.X509.from_cryptography(c) for c in intermediates]
        ).verify_certificate()
        verified = True
    except crypto.X509StoreContextError:
        verified = False
    return {
        "spiffe_id": str(svid.spiffe_id),
        "hint": getattr(svid, "hint", "") or "",
        "serial": str(leaf.serial_number),
        "not_after": int(leaf.not_valid_after_utc.timestamp()),
        "chain_length": len(svid.cert_chain),
        "verified": verified,
        "bundle_authorities": len(authorities),
    }


def run_x509(args: argparse.Namespace) -> None:
    changed = threading.Event()
    with X509Source(timeout_in_seconds=args.timeout) as source:
        source.subscribe_for_updates(changed.set)
        deadline = time.monotonic() + args.timeout
        last, seen = "", 0
        while seen < args.updates:
            current = describe(source)
            key = f"{current['serial']}/{current['bundle_authorities']}"
            if key != last:
                emit(current)
                last, seen = key, seen + 1
                continue
            if not changed.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{seen} of {args.updates} X.509 updates seen")
            changed.clear()


def run_jwt(args: argparse.Namespace) -> None:
    with JwtSource(timeout_in_seconds=30) as source:
        subject = SpiffeId(args.spiffe_id) if args.spiffe_id else None
        svid = source.fetch_svid({args.audience}, subject)
        bundle = source.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        if bundle is None:
            raise RuntimeError(f"no JWT bundle for {svid.spiffe_id.trust_domain}")
        validated = JwtSvid.parse_and_validate(svid.token, bundle, {args.audience})
        emit(
            {
                "spiffe_id": str(svid.spiffe_id),
                "token": svid.token,
                "audience": sorted(validated.audience),
                "expiry": int(validated.expiry),
                "validated_locally": str(validated.spiffe_id),
            }
        )


def run_validate(args: argparse.Namespace) -> None:
    with WorkloadApiClient() as client:
        svid = client.validate_jwt_svid(args.token, args.audience, timeout=30)
    # py-spiffe keeps the claims private (no accessor): read their names from the token it validated.
    payload = svid.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    emit({"spiffe_id": str(svid.spiffe_id), "audience": sorted(svid.audience), "claims": sorted(claims)})


def run_serve(args: argparse.Namespace) -> None:
    with X509Source(timeout_in_seconds=30) as source:
        listener = listen(args.listen, source, ListenOptions(authorize_fn=authorizer(args.authorize)))
        host, port = listener.getsockname()[:2]
        emit({"listening": f"{host}:{port}", "spiffe_id": str(source.svid.spiffe_id)})
        for _ in range(args.connections):
            conn, _address = listener.accept()
            try:
                conn.do_handshake()
                said = _read_line(conn)
                peer = conn.get_peer_certificate()
                client = _uri_san(peer)
                conn.sendall(f"{source.svid.spiffe_id} answers {client}: {said}\n".encode())
                emit({"client": client, "said": said})
            except (SSL.Error, OSError) as err:
                emit({"refused": str(err)})
            finally:
                conn.close()
        listener.close()


def _read_line(conn: SSL.Connection) -> str:
    """One line from a blocking pyOpenSSL connection (a socket timeout would turn reads into WantReadError)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _uri_san(certificate: crypto.X509 | None) -> str:
    if certificate is None:
        raise ValueError("the peer sent no certificate")
    names = certificate.to_cryptography().extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return str(names.value.get_values_for_type(x509.UniformResourceIdentifier)[0])


def run_dial(args: argparse.Namespace) -> None:
    with X509Source(timeout_in_seconds=30) as source:
        conn = dial(args.address, source, authorize_fn=authorizer(args.authorize))
        try:
            server = _uri_san(conn.get_peer_certificate())
            conn.sendall(f"{args.message}\n".encode())
            reply = _read_line(conn)
        finally:
            conn.close()
    if not reply:
        raise ConnectionError("the server closed the connection without answering")
    emit({"server": server, "reply": reply})


def main() -> None:
    parser = argparse.ArgumentParser(prog="py-peer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    x509 = commands.add_parser("x509")
    x509.add_argument("-updates", type=int, default=1)
    x509.add_argument("-timeout", type=float, default=30)
    jwt = commands.add_parser("jwt")
    jwt.add_argument("-audience", required=True)
    jwt.add_argument("-spiffe-id", dest="spiffe_id", default="")
    validate = commands.add_parser("validate")
    validate.add_argument("-audience", required=True)
    validate.add_argument("-token", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("-listen", default="127.0.0.1:0")
    serve.add_argument("-authorize", required=True)
    serve.add_argument("-connections", type=int, default=1)
    dial_ = commands.add_parser("dial")
    dial_.add_argument("-address", required=True)
    dial_.add_argument("-authorize", required=True)
    dial_.add_argument("-message", default="ping")
    args = parser.parse_args()
    run = {"x509": run_x509, "jwt": run_jwt, "validate": run_validate, "serve": run_serve, "dial": run_dial}
    try:
        run[args.command](args)
    except Exception as err:  # every failure is reported as the Go and Java peers report theirs
        emit({"error": f"{type(err).__name__}: {err}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
