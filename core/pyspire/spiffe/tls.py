"""TLS with SPIFFE identities: standard ``ssl.SSLContext`` objects that follow rotation.

::

    source = X509Source()
    server = tls.server_context(source, tls.authorize_member_of("example.org"))
    client = tls.client_context(source, tls.authorize_id("spiffe://example.org/billing"))

Hand the context to anything that takes an ``ssl.SSLContext`` (asyncio streams, grpclib,
httpx, aiohttp, requests through an adapter, http.server...). Every new connection:

- presents the source's newest SVID and verifies the peer with the source's newest bundles
  (a context rebuilds what it hands OpenSSL when the source's material changes, so a rotated
  SVID or CA takes effect at the next handshake, and an authority removed from the bundle
  stops being trusted there);
- verifies the peer's certificate as an X509-SVID against the bundle of the peer's own trust
  domain only (the SPIFFE rule: another trust domain's CA never vouches for this one), then
  asks the authorizer whether that SPIFFE ID may connect. OpenSSL checks signatures,
  validity and the path to one of the generation's bundle authorities (each authority is an
  anchor, self-signed or not, as in go-spiffe); :func:`~pyspire.spiffe.x509svid.check_verified_path`
  then applies the X509-SVID rules to that path and scopes its anchor to the leaf's trust
  domain. A context remembers paths it checked, so a peer connecting again costs a lookup;
  the authorizer is asked every time.

Both checks run inside the handshake: the contexts' socket and object classes
(``sslsocket_class``/``sslobject_class``) do them as ``do_handshake`` completes, and before any
application data is read or written, so every library handed the context enforces them
without knowing about SPIFFE. A refused peer is a :class:`PeerRefusedError`, an
``ssl.SSLCertVerificationError`` naming the reason; the connection is closed.

:func:`server_context`/:func:`client_context` are mutual TLS (each side presents its SVID);
:func:`tls_server_context`/:func:`tls_client_context` authenticate the server only.

What a context keeps from the standard ``ssl`` API: options, versions, ciphers, ALPN, SNI
callbacks and the key log apply as usual. ``load_cert_chain`` is refused (the identity is the
source's SVID) and so is NPN; CAs loaded with ``load_verify_locations`` (requests does, with
certifi's) are accepted and change nothing, since a peer must verify against the source's
bundle; the hostname check is off (the SPIFFE ID identifies a peer; a client may turn it on
as well). ``verify_mode`` stays what makes the peer prove itself: setting another is refused.
Sessions are never resumed: every connection is verified against its own handshake's bundle.
"""

from __future__ import annotations

import _ssl
import contextlib
import os
import socket
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pyspire.spiffe.bundleset import BundleSet
from pyspire.spiffe.match import MatchError, match_any, match_member_of, match_one_of
from pyspire.spiffe.pem import der_certificate
from pyspire.spiffe.spiffeid import SpiffeId, TrustDomain
from pyspire.spiffe.x509svid import X509Svid, X509SvidError, check_verified_path

__all__ = [
    "Authorizer",
    "PeerRefusedError",
    "SpiffeClientContext",
    "SpiffeSSLObject",
    "SpiffeSSLSocket",
    "SpiffeServerContext",
    "X509MaterialSource",
    "authorize_any",
    "authorize_id",
    "authorize_member_of",
    "authorize_one_of",
    "client_context",
    "load_identity",
    "peer_spiffe_id",
    "server_context",
    "tls_client_context",
    "tls_server_context",
]

CHECKED_PATHS: Final = 1024
"""Verified paths a context remembers as SVIDs (per source generation): a peer connecting again
costs a lookup, not the SPIFFE checks again."""

Authorizer = Callable[[SpiffeId, Sequence[x509.Certificate]], None]
"""Decides whether a verified peer may connect: called with its SPIFFE ID and its verified chain
(leaf first, trusted authority last); raises (any exception) to refuse."""


class X509MaterialSource(Protocol):
    """What a context needs: an SVID, bundles, and a counter that moves when either changes.

    :class:`~pyspire.spiffe.X509Source` and :class:`~pyspire.spiffe.AsyncX509Source` are such
    sources.
    """

    @property
    def generation(self) -> int:
        """Changes whenever ``svid`` or ``bundles`` do."""
        ...

    @property
    def svid(self) -> X509Svid:
        """The SVID to present."""
        ...

    @property
    def bundles(self) -> BundleSet:
        """The X.509 bundles to verify peers with."""
        ...


class PeerRefusedError(ssl.SSLCertVerificationError):
    """The peer is not an X509-SVID this side trusts, or the authorizer refused its SPIFFE ID."""

    def __init__(self, reason: str, spiffe_id: SpiffeId | None = None) -> None:
        # (1, message): the shape OpenSSL's own verification errors have (errno SSL_ERROR_SSL).
        super().__init__(1, f"certificate verify failed: {reason}")
        self.library = "SPIFFE"
        self.reason = "PEER_REFUSED"
        self.verify_message = reason
        self.verify_code = 0
        self.spiffe_id = spiffe_id
        """The peer's SPIFFE ID when it verified (and the authorizer refused it), else None."""


# -- authorizers ---------------------------------------------------------------------------


def _from_matcher(matcher: Callable[[SpiffeId | None], None]) -> Authorizer:
    def authorize(spiffe_id: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
        matcher(spiffe_id)

    return authorize


def _spiffe_id(value: SpiffeId | str) -> SpiffeId:
    return value if isinstance(value, SpiffeId) else SpiffeId.parse(value)


def authorize_any() -> Authorizer:
    """Any peer whose SVID verifies against the bundle (of any trust domain the source trusts)."""
    return _from_matcher(match_any())


def authorize_id(spiffe_id: SpiffeId | str) -> Authorizer:
    """Exactly ``spiffe_id`` (a string is parsed strictly, now)."""
    return _from_matcher(match_one_of(_spiffe_id(spiffe_id)))


def authorize_one_of(*spiffe_ids: SpiffeId | str) -> Authorizer:
    """Any of ``spiffe_ids`` (none given: nobody)."""
    return _from_matcher(match_one_of(*(_spiffe_id(value) for value in spiffe_ids)))


def authorize_member_of(trust_domain: TrustDomain | str) -> Authorizer:
    """Any SPIFFE ID of ``trust_domain`` ("example.org" or a TrustDomain)."""
    domain = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
    return _from_matcher(match_member_of(domain))


# -- loading an identity into OpenSSL --------------------------------------------------------


def load_identity(context: ssl.SSLContext, chain: Sequence[x509.Certificate], private_key: PrivateKeyTypes) -> None:
    """Give ``context`` a certificate chain and its key without writing the key to a disk.

    Python's ssl loads keys only from a path: on Linux an anonymous memory file (memfd) serves
    as one and is gone when closed; elsewhere a file readable by this user only, in a private
    directory, removed at once.
    """
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    pem += private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("pyspire-tls-identity", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="pyspire-tls-") as directory:
        path = os.path.join(directory, "identity.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
        finally:
            os.close(fd)
        context.load_cert_chain(path)


def _no_resumption(session: ssl.SSLSession | None) -> None:
    # A resumed session skips the certificate exchange: the peer would be trusted on the
    # strength of an earlier handshake, perhaps with a bundle that has changed since.
    if session is not None:
        raise ValueError("a pyspire.spiffe.tls context does not resume TLS sessions: every connection is verified")


def _trusted_roots_pem(bundles: BundleSet) -> str:
    return "".join(
        authority.public_bytes(serialization.Encoding.PEM).decode("ascii")
        for bundle in bundles
        for authority in bundle.x509_authorities
    )


# -- contexts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Material:
    """What one generation of the source becomes: the context OpenSSL uses, and the bundles."""

    generation: int
    ssl_context: ssl.SSLContext
    bundles: BundleSet


@dataclass(frozen=True)
class _CheckedPath:
    """A verified path that passed the SPIFFE rules, and the window in which that holds."""

    spiffe_id: SpiffeId
    path: tuple[x509.Certificate, ...]
    not_before: datetime
    not_after: datetime


class _SpiffeContext(ssl.SSLContext):
    """The part both sides share: building per-generation contexts and checking peers."""

    _verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED
    _presents_svid: bool = True

    def __new__(cls, protocol: int, source: X509MaterialSource, authorize: Authorizer | None) -> Self:
        return super().__new__(cls, protocol)

    def __init__(self, protocol: int, source: X509MaterialSource, authorize: Authorizer | None) -> None:
        self._source = source
        self._authorize = authorize
        self._replayed: dict[str, tuple[Any, ...]] = {}
        self._user_sni: Callable[..., Any] | None = None
        self._user_keylog: str | None = None
        self._material_lock = threading.Lock()
        self._material: _Material | None = None
        self._checked: OrderedDict[tuple[int, tuple[bytes, ...]], _CheckedPath] = OrderedDict()
        self._checked_lock = threading.Lock()
        self.minimum_version = ssl.TLSVersion.TLSv1_2
        self.check_hostname = False
        ssl.SSLContext.verify_mode.fset(self, self._verify_mode)  # type: ignore[attr-defined]
        # Every authority of the bundle anchors a path, self-signed or not, as in go-spiffe.
        self.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        self._current()  # fail now, not at the first handshake, when the source has nothing

    # OpenSSL checks the peer's chain against this generation's authorities only as long as
    # the verify mode stays what the context was made with: _check_peer relies on it.

    @property  # type: ignore[override]  # typeshed: int on _SSLContext, VerifyMode on SSLContext
    def verify_mode(self) -> ssl.VerifyMode:
        """``CERT_REQUIRED`` (``CERT_NONE`` for a server-only TLS server), and it stays so."""
        return ssl.VerifyMode(ssl.SSLContext.verify_mode.fget(self))  # type: ignore[attr-defined]

    @verify_mode.setter
    def verify_mode(self, value: ssl.VerifyMode) -> None:
        if value != self._verify_mode:
            raise ValueError(
                f"a pyspire.spiffe.tls context keeps verify_mode {self._verify_mode.name}; {value!r} would "
                "change what the peer must prove"
            )

    @property
    def check_hostname(self) -> bool:
        """As ``ssl.SSLContext.check_hostname`` (a DNS name check on top of the SPIFFE checks; clients only)."""
        return bool(ssl.SSLContext.check_hostname.__get__(self))  # type: ignore[attr-defined]

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        if value and self._verify_mode is ssl.CERT_NONE:
            raise ValueError("a server-only TLS server context checks no host name")
        ssl.SSLContext.check_hostname.__set__(self, value)  # type: ignore[attr-defined]

    # Settings OpenSSL reads from a connection's *current* context during the handshake (ALPN
    # selection, SNI, the security level, DH parameters, the key log): each is applied to
    # this context as usual and replayed on every per-generation context.

    def _replay(self, name: str, *args: Any) -> None:
        # Clients such as httpcore and urllib3 set ALPN again before every connection: only a
        # change costs a rebuild.
        if self._replayed.get(name) != args:
            self._replayed[name] = args
            self._material = None

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        """As ``ssl.SSLContext.set_alpn_protocols``."""
        protocols = list(alpn_protocols)
        super().set_alpn_protocols(protocols)
        self._replay("set_alpn_protocols", protocols)

    def set_ciphers(self, cipherlist: str, /) -> None:
        """As ``ssl.SSLContext.set_ciphers``."""
        super().set_ciphers(cipherlist)
        self._replay("set_ciphers", cipherlist)

    def set_ecdh_curve(self, name: str, /) -> None:
        """As ``ssl.SSLContext.set_ecdh_curve``."""
        super().set_ecdh_curve(name)
        self._replay("set_ecdh_curve", name)

    def load_dh_params(self, path: str, /) -> None:
        """As ``ssl.SSLContext.load_dh_params``."""
        super().load_dh_params(path)
        self._replay("load_dh_params", path)

    @property
    def sni_callback(self) -> Callable[..., Any] | None:
        """As ``ssl.SSLContext.sni_callback``: called with this context as its third argument."""
        return self._user_sni

    @sni_callback.setter
    def sni_callback(self, callback: Callable[..., Any] | None) -> None:
        if callback is not None and not callable(callback):
            raise TypeError("not a callable object")
        self._user_sni = callback
        self._material = None

    @property  # type: ignore[override]
    def keylog_filename(self) -> str | None:
        """As ``ssl.SSLContext.keylog_filename``."""
        return self._user_keylog

    @keylog_filename.setter
    def keylog_filename(self, path: str | None) -> None:
        ssl.SSLContext.keylog_filename.__set__(self, path)  # type: ignore[attr-defined]
        self._user_keylog = path
        self._material = None

    def wrap_socket(  # noqa: PLR0917 - the stdlib signature
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """As ``ssl.SSLContext.wrap_socket``; a ``session`` to resume is refused (see _no_resumption)."""
        _no_resumption(session)
        return super().wrap_socket(sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, server_hostname)

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """As ``ssl.SSLContext.wrap_bio``; a ``session`` to resume is refused (see _no_resumption)."""
        _no_resumption(session)
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname)

    def load_cert_chain(self, *args: Any, **kwargs: Any) -> None:
        """Refused: a SPIFFE context presents its source's SVID."""
        raise ValueError("a pyspire.spiffe.tls context presents its source's SVID; it takes no load_cert_chain")

    def set_npn_protocols(self, npn_protocols: Any) -> None:
        """Refused: NPN is obsolete; use ALPN (set_alpn_protocols)."""
        raise ValueError("a pyspire.spiffe.tls context does not negotiate NPN; use set_alpn_protocols")

    # -- per-generation contexts --

    def _current(self) -> _Material:
        material = self._material
        generation = self._source.generation
        if material is not None and material.generation == generation:
            return material
        with self._material_lock:
            material = self._material
            if material is None or material.generation != generation:
                material = self._build(generation)
                self._material = material
        return material

    def _build(self, generation: int) -> _Material:
        # Read the generation before the material: an update in between only causes one more
        # rebuild at the next handshake, never a stale context.
        bundles = self._source.bundles
        context = ssl.SSLContext(self.protocol)
        if self._presents_svid:
            svid = self._source.svid
            load_identity(context, svid.chain, svid.private_key)
        roots = _trusted_roots_pem(bundles)
        if roots:
            context.load_verify_locations(cadata=roots)
        for name, args in self._replayed.items():
            getattr(context, name)(*args)
        if self._user_sni is not None:
            user, outer = self._user_sni, self
            context.sni_callback = lambda ssl_object, name, _ctx: user(ssl_object, name, outer)
        if self._user_keylog is not None:
            context.keylog_filename = self._user_keylog
        return _Material(generation, context, bundles)

    # -- the peer check --

    def _checked_path(
        self, material: _Material, verified_der: tuple[bytes, ...]
    ) -> tuple[SpiffeId, tuple[x509.Certificate, ...]]:
        """The SPIFFE ID and certificates of a verified path; remembered, as peers connect again and again."""
        key = (material.generation, verified_der)
        with self._checked_lock:
            known = self._checked.get(key)
            if known is not None:
                self._checked.move_to_end(key)
        now = datetime.now(UTC)
        if known is not None and known.not_before <= now <= known.not_after:
            return known.spiffe_id, known.path
        try:
            path = tuple(der_certificate(der) for der in verified_der)
            spiffe_id = check_verified_path(path, material.bundles, now=now)
        except X509SvidError as err:
            raise PeerRefusedError(f"the peer's certificate is not a valid X509-SVID here: {err}") from None
        except ValueError as err:
            raise PeerRefusedError(f"the peer's certificate cannot be read: {err}") from None
        checked = _CheckedPath(
            spiffe_id, path, max(c.not_valid_before_utc for c in path), min(c.not_valid_after_utc for c in path)
        )
        with self._checked_lock:
            self._checked[key] = checked
            if len(self._checked) > CHECKED_PATHS:
                self._checked.popitem(last=False)
        return spiffe_id, path

    def _check_peer(self, material: _Material, verified_der: tuple[bytes, ...]) -> SpiffeId | None:
        """The peer's SPIFFE ID, from the path OpenSSL verified with this generation's authorities.

        OpenSSL checked the signatures, the validity periods and the path to one of the
        generation's bundle authorities (of any trust domain); the SPIFFE rules are checked
        here: the leaf and the signing certificates are those of an X509-SVID, and the anchor
        is an authority of the leaf's own trust domain.
        """
        if self._verify_mode is ssl.CERT_NONE:
            return None  # a server-only TLS server asks its clients for nothing
        if not verified_der:
            raise PeerRefusedError("the peer presented no certificate")
        spiffe_id, path = self._checked_path(material, verified_der)
        assert self._authorize is not None
        try:
            self._authorize(spiffe_id, path)
        except MatchError as err:
            raise PeerRefusedError(f"{spiffe_id} is not authorized: {err}", spiffe_id) from None
        except Exception as err:  # a failing authorizer refuses: security checks fail closed
            raise PeerRefusedError(
                f"{spiffe_id} is not authorized: the authorizer raised {type(err).__name__}: {err}", spiffe_id
            ) from None
        return spiffe_id


SslConnection = ssl.SSLObject | ssl.SSLSocket


class _PeerState:
    """One connection's SPIFFE state: the material its handshake uses, then the peer it proved."""

    def __init__(self) -> None:
        self.context: _SpiffeContext | None = None
        self.material: _Material | None = None
        self.checked = False
        self.peer_id: SpiffeId | None = None


def _before_handshake(connection: SslConnection, state: _PeerState) -> None:
    if state.material is not None:
        return
    context = connection.context
    if not isinstance(context, _SpiffeContext):
        raise ssl.SSLError("a SPIFFE connection lost its pyspire.spiffe.tls context")
    try:
        material = context._current()
    except Exception as err:  # a closed source: no handshake without material
        raise ssl.SSLError(f"no SPIFFE material for this handshake: {err}") from err
    state.context, state.material = context, material
    # Swapping the connection's OpenSSL context before the first handshake message gives it
    # this generation's certificate, key and trust store; everything else it already copied
    # from the SPIFFE context when it was created.
    connection.context = material.ssl_context


def _after_handshake(connection: SslConnection, state: _PeerState) -> None:
    if state.checked:
        return
    assert state.context is not None
    assert state.material is not None
    try:
        state.peer_id = state.context._check_peer(state.material, _verified_chain(connection))
    except PeerRefusedError:
        raise
    except Exception as err:  # whatever went wrong, the peer is not accepted
        raise PeerRefusedError(f"the peer could not be checked: {type(err).__name__}: {err}") from err
    state.checked = True


def _verified_chain(connection: SslConnection) -> tuple[bytes, ...]:
    """The path OpenSSL verified, the peer's certificate first and the trusted authority last."""
    public = getattr(connection, "get_verified_chain", None)  # Python >= 3.13
    chain = public() if public is not None else connection._sslobj.get_verified_chain()  # type: ignore[union-attr]
    return tuple(c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain or ())


class SpiffeSSLObject(ssl.SSLObject):
    """An ``ssl.SSLObject`` (asyncio, anyio) that checks the peer's SPIFFE identity in the handshake."""

    _spiffe: _PeerState | None = None

    @property
    def spiffe_state(self) -> _PeerState:
        """This connection's SPIFFE state (created with the connection's first use)."""
        if self._spiffe is None:
            self._spiffe = _PeerState()
        return self._spiffe

    def do_handshake(self) -> None:
        """As ``ssl.SSLObject.do_handshake``, then the SPIFFE check (PeerRefusedError)."""
        state = self.spiffe_state
        _before_handshake(self, state)
        super().do_handshake()
        _after_handshake(self, state)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """As ``ssl.SSLObject.read``, never before the SPIFFE check."""
        if not self.spiffe_state.checked:
            self.do_handshake()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        """As ``ssl.SSLObject.write``, never before the SPIFFE check."""
        if not self.spiffe_state.checked:
            self.do_handshake()
        return super().write(data)


class SpiffeSSLSocket(ssl.SSLSocket):
    """An ``ssl.SSLSocket`` (blocking code) that checks the peer's SPIFFE identity in the handshake."""

    _spiffe: _PeerState | None = None

    @property
    def spiffe_state(self) -> _PeerState:
        """This connection's SPIFFE state (created with the connection's first use)."""
        if self._spiffe is None:
            self._spiffe = _PeerState()
        return self._spiffe

    def do_handshake(self, block: bool = False) -> None:
        """As ``ssl.SSLSocket.do_handshake``, then the SPIFFE check (PeerRefusedError)."""
        state = self.spiffe_state
        _before_handshake(self, state)
        super().do_handshake(block)
        _after_handshake(self, state)

    def _checked(self) -> None:
        # Data before the handshake would make OpenSSL do it implicitly, without the check.
        if self._sslobj is not None and not self.spiffe_state.checked:  # type: ignore[attr-defined]
            self.do_handshake()

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """As ``ssl.SSLSocket.read``, never before the SPIFFE check."""
        self._checked()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        """As ``ssl.SSLSocket.write``, never before the SPIFFE check."""
        self._checked()
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        """As ``ssl.SSLSocket.send``, never before the SPIFFE check."""
        self._checked()
        return super().send(data, flags)


class SpiffeServerContext(_SpiffeContext):
    """A server-side ``ssl.SSLContext`` presenting the source's SVID (see :func:`server_context`)."""

    sslsocket_class = SpiffeSSLSocket
    sslobject_class = SpiffeSSLObject

    def __new__(cls, source: X509MaterialSource, authorize: Authorizer | None, *, mtls: bool = True) -> Self:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER, source, authorize)

    def __init__(self, source: X509MaterialSource, authorize: Authorizer | None, *, mtls: bool = True) -> None:
        self._verify_mode = ssl.CERT_REQUIRED if mtls else ssl.CERT_NONE
        super().__init__(ssl.PROTOCOL_TLS_SERVER, source, authorize)
        # No resumption: every connection is verified against the bundle of its own handshake.
        self.options |= ssl.OP_NO_TICKET
        self.num_tickets = 0


class SpiffeClientContext(_SpiffeContext):
    """A client-side ``ssl.SSLContext`` verifying the server's SVID (see :func:`client_context`)."""

    sslsocket_class = SpiffeSSLSocket
    sslobject_class = SpiffeSSLObject

    def __new__(cls, source: X509MaterialSource, authorize: Authorizer, *, mtls: bool = True) -> Self:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT, source, authorize)

    def __init__(self, source: X509MaterialSource, authorize: Authorizer, *, mtls: bool = True) -> None:
        self._presents_svid = mtls
        super().__init__(ssl.PROTOCOL_TLS_CLIENT, source, authorize)


def _authorizer(authorize: object) -> Authorizer:
    if isinstance(authorize, (str, SpiffeId, TrustDomain)) or not callable(authorize):
        raise TypeError(
            f"authorize must be an authorizer such as tls.authorize_id(...), not {type(authorize).__name__}"
        )
    return authorize


def server_context(source: X509MaterialSource, authorize: Authorizer) -> SpiffeServerContext:
    """Mutual TLS, server side: present the source's SVID, require the client's and authorize it."""
    return SpiffeServerContext(source, _authorizer(authorize))


def client_context(source: X509MaterialSource, authorize: Authorizer) -> SpiffeClientContext:
    """Mutual TLS, client side: present the source's SVID, verify the server's and authorize it."""
    return SpiffeClientContext(source, _authorizer(authorize))


def tls_server_context(source: X509MaterialSource) -> SpiffeServerContext:
    """TLS, server side: present the source's SVID; clients present no certificate."""
    return SpiffeServerContext(source, None, mtls=False)


def tls_client_context(source: X509MaterialSource, authorize: Authorizer) -> SpiffeClientContext:
    """TLS, client side: present nothing, verify the server's SVID with the source's bundles and authorize it."""
    return SpiffeClientContext(source, _authorizer(authorize), mtls=False)


def peer_spiffe_id(connection: object) -> SpiffeId | None:
    """The SPIFFE ID a connection's peer proved in the handshake (None: a TLS-only server's client).

    ``connection`` is the SSL object of a connection made with one of this module's contexts,
    or anything holding one: an asyncio transport or ``StreamWriter``
    (``get_extra_info("ssl_object")``), a grpclib ``stream.peer``. Raises ValueError for a
    connection that is not a SPIFFE one or whose handshake has not completed.
    """
    ssl_object = _ssl_object_of(connection)
    if not isinstance(ssl_object, (SpiffeSSLObject, SpiffeSSLSocket)):
        raise ValueError(f"{type(connection).__name__} is not a connection made with a pyspire.spiffe.tls context")
    state = ssl_object.spiffe_state
    if not state.checked:
        raise ValueError("the TLS handshake has not completed: the peer has proved nothing yet")
    return state.peer_id


def _ssl_object_of(connection: object) -> object:
    if isinstance(connection, (ssl.SSLObject, ssl.SSLSocket)):
        return connection
    get_extra_info = getattr(connection, "get_extra_info", None)
    if get_extra_info is None:
        # grpclib's Peer holds the transport without exposing it (pinned to grpclib 0.4.x).
        transport = getattr(connection, "_transport", None)
        get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return connection
    with contextlib.suppress(Exception):
        return get_extra_info("ssl_object")
    return connection
