"""TLS settings, contexts and listeners: what a TLS listener knows before a connection.

``TlsConfig`` is the plain-data form of a listener's TLS settings (what ``reactor
serve --certfile ...`` builds; it crosses to ``--processes`` children as JSON), and
``TlsConfig.context()`` turns it into an ``ssl.SSLContext`` with one-line errors
(``TlsError``). ``listener.TlsListener`` is attached to a ``BoundListener``: it holds the
context new connections are made with, swaps it on a certificate reload (connections
already open keep the session they have), counts handshakes, and makes the
connection object (``mioreactor.workers.tls.conn.TlsConn``) at accept time, so that plain
listeners never pay a TLS check.

What the application sees of a session is ``TlsSession``: the protocol, cipher, SNI
name, ALPN protocol and client certificate, and ``environ()``, the mod_ssl-style
``SSL_*`` keys (docs/tls.md lists them).
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CERT_REQS",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "MIN_VERSIONS",
    "TlsConfig",
    "TlsError",
    "TlsSession",
    "distinguished_name",
    "prepare_context",
]

log = logging.getLogger("mioreactor.tls")

CERT_REQS = ("none", "optional", "required")
"""``--cert-reqs``: whether a client certificate is not asked for, asked for, or needed."""

MIN_VERSIONS = ("1.2", "1.3")
"""``--ssl-min-version``: TLS 1.0 and 1.1 are not offered at all."""

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds a raw-protocol listener gives a handshake (HTTP listeners use the header timeout)."""

_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsError(ValueError):
    """TLS settings that cannot work (a missing file, a key that does not match the
    certificate, a wrong password, bad ciphers); the message is one line naming it."""


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings of a listener, as ``reactor serve`` takes them (gunicorn's names).

    Attributes:
        certfile: PEM file with the server certificate (and its chain after it).
        keyfile: PEM file with the private key; ``None`` when it is in ``certfile``.
        keyfile_password: the key's password, if it is encrypted.
        ca_certs: PEM file of the CAs that client certificates must chain to.
        cert_reqs: ``"none"`` (no client certificate asked), ``"optional"`` (asked,
            checked when given), ``"required"`` (the handshake fails without one).
        ciphers: an OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are OpenSSL's).
        min_version: ``"1.2"`` or ``"1.3"``; older versions are never offered.
    """

    certfile: str
    keyfile: str | None = None
    keyfile_password: str | None = None
    ca_certs: str | None = None
    cert_reqs: Literal["none", "optional", "required"] = "none"
    ciphers: str | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"

    def __post_init__(self) -> None:
        if not self.certfile:
            raise TlsError("--certfile: give the PEM file of the server certificate")
        if self.cert_reqs not in CERT_REQS:
            raise TlsError(
                f"--cert-reqs must be one of {', '.join(CERT_REQS)}, got {self.cert_reqs!r}"
            )
        if self.min_version not in MIN_VERSIONS:
            raise TlsError(
                f"--ssl-min-version must be 1.2 or 1.3, got {self.min_version!r} "
                "(TLS 1.0 and 1.1 are not supported)"
            )
        if self.cert_reqs != "none" and not self.ca_certs:
            raise TlsError(
                f"--cert-reqs {self.cert_reqs} needs --ca-certs: the CAs client "
                "certificates must chain to"
            )

    def context(self, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A server ``SSLContext`` with these settings, the files read now.

        Args:
            alpn: protocols offered by ALPN, most preferred first (``("http/1.1",)``
                for HTTP listeners); empty offers none.

        Raises:
            TlsError: a file that cannot be read, a key that does not match the
                certificate, a wrong key password, a cipher string OpenSSL rejects.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[self.min_version]
        ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        for name, path in (("--certfile", self.certfile), ("--keyfile", self.keyfile),
                           ("--ca-certs", self.ca_certs)):
            if path is not None and not os.path.isfile(path):
                raise TlsError(f"{name} {path}: no such file")
        encrypted = self._check_pem()
        try:
            # A callable, never None: without a password OpenSSL would prompt on the
            # terminal (at start, and again on every SIGHUP reload).
            ctx.load_cert_chain(self.certfile, self.keyfile, self._password)
        except TlsError:
            raise
        except ssl.SSLError as exc:
            raise TlsError(self._describe_load_error(exc, encrypted)) from None
        except OSError as exc:
            raise TlsError(f"--certfile/--keyfile: cannot read ({exc.strerror or exc})") from None
        if self.ca_certs:
            try:
                ctx.load_verify_locations(cafile=self.ca_certs)
            except (ssl.SSLError, OSError) as exc:
                raise TlsError(f"--ca-certs {self.ca_certs}: not a PEM file of CA "
                               f"certificates ({exc})") from None
        ctx.verify_mode = _VERIFY[self.cert_reqs]
        if self.ciphers:
            try:
                ctx.set_ciphers(self.ciphers)
            except ssl.SSLError:
                raise TlsError(f"--ciphers {self.ciphers!r}: OpenSSL matches no cipher "
                               "(see `openssl ciphers`)") from None
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def _password(self) -> str:
        """The key's password for OpenSSL; called only for an encrypted key.

        Raises:
            TlsError: no password is configured (OpenSSL is never left to prompt).
        """
        if self.keyfile_password is None:
            raise TlsError(self._no_password())
        return self.keyfile_password

    def _no_password(self) -> str:
        key = self.keyfile or self.certfile
        return (f"--keyfile {key}: the private key is encrypted: set --keyfile-password "
                "or REACTOR_KEYFILE_PASSWORD")

    def _check_pem(self) -> bool:
        """Say what a certificate or key file lacks, before OpenSSL's ``PEM lib`` does.

        Returns:
            Whether the private key is encrypted.

        Raises:
            TlsError: no certificate in ``certfile``, no private key where one is
                expected, an encrypted key without a password.
        """
        cert = _read_text(self.certfile, "--certfile")
        if "-----BEGIN CERTIFICATE-----" not in cert and (
            "-----BEGIN TRUSTED CERTIFICATE-----" not in cert
        ):
            what = "is empty" if not cert.strip() else "has no certificate in it"
            raise TlsError(f"--certfile {self.certfile} {what} (expected a PEM "
                           "'-----BEGIN CERTIFICATE-----' block)")
        if self.keyfile is None:
            key = cert
            if "PRIVATE KEY-----" not in key:
                raise TlsError(f"--certfile {self.certfile} has no private key in it: give "
                               "the key with --keyfile")
        else:
            key = _read_text(self.keyfile, "--keyfile")
            if "PRIVATE KEY-----" not in key:
                what = "is empty" if not key.strip() else "has no private key in it"
                raise TlsError(f"--keyfile {self.keyfile} {what} (expected a PEM "
                               "'-----BEGIN PRIVATE KEY-----' block)")
        # PKCS#8 says so in its label; the traditional format in a header line.
        encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----" in key or "Proc-Type: 4,ENCRYPTED" in key
        if encrypted and self.keyfile_password is None:
            raise TlsError(self._no_password())
        return encrypted

    def _describe_load_error(self, exc: ssl.SSLError, encrypted: bool) -> str:
        reason = (exc.reason or "").upper()
        key = self.keyfile or self.certfile
        if encrypted and ("PEM" in reason or "DECRYPT" in reason or not reason):
            # OpenSSL 3 reports a failed decryption as a bare "PEM lib".
            return f"--keyfile {key}: wrong --keyfile-password (the key does not decrypt with it)"
        if "KEY_VALUES_MISMATCH" in reason:
            return (f"--keyfile {key} does not match the certificate in --certfile "
                    f"{self.certfile}")
        if "BAD_DECRYPT" in reason or "BAD_PASSWORD" in reason or "PASSWORD" in reason:
            return f"--keyfile {key}: wrong --keyfile-password (the key does not decrypt with it)"
        if "NO_START_LINE" in reason or "PEM" in reason:
            return (f"--certfile {self.certfile} / --keyfile {key}: not a PEM certificate "
                    "and key")
        return f"--certfile {self.certfile} / --keyfile {key}: {exc.reason or exc}"

    def check(self) -> None:
        """Load the files once, to fail at start with one line rather than later.

        Raises:
            TlsError: as ``context``.
        """
        self.context()


def _read_text(path: str, option: str) -> str:
    """The text of a PEM file (undecodable bytes replaced: a DER file reads as no PEM).

    Raises:
        TlsError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return f.read(1 << 22).decode("ascii", "replace")
    except OSError as exc:
        raise TlsError(f"{option} {path}: cannot read ({exc.strerror or exc})") from None


def _sni_recorder(previous: Any) -> Any:
    """An SNI callback that notes the name on the connection's ``SSLObject``, then
    calls the one the context had (which may switch ``sslobj.context``)."""

    def on_sni(sslobj: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
        sslobj.reactor_sni = name
        if previous is not None:
            result: int | None = previous(sslobj, name, ctx)
            return result
        return None

    on_sni.reactor_sni = True  # type: ignore[attr-defined]
    return on_sni


def prepare_context(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Make ``ctx`` report the SNI name to ``TlsSession`` (once; idempotent).

    A callback the context already has keeps running, after ours. Renegotiation is
    switched off (``OP_NO_RENEGOTIATION``): a renegotiation needs a handshake in
    the middle of a request stream, which this server does not support.

    Raises:
        TlsError: ``ctx`` is a client context.
    """
    if not isinstance(ctx, ssl.SSLContext):
        raise TlsError(f"ssl must be an ssl.SSLContext or a TlsConfig, not {type(ctx).__name__}")
    if ctx.protocol == ssl.PROTOCOL_TLS_CLIENT:
        raise TlsError("ssl: this SSLContext is a client context (use PROTOCOL_TLS_SERVER, "
                       "or ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))")
    current = ctx.sni_callback
    if not getattr(current, "reactor_sni", False):
        ctx.sni_callback = _sni_recorder(current)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def _peer_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "a Unix socket peer"


# RFC 4514 short names for the attributes ``getpeercert()`` spells out.
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "emailAddress",
}


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def distinguished_name(rdns: Any) -> str:
    """An RFC 4514 string (``CN=alice,O=Example,C=FR``) from ``getpeercert()``'s
    ``subject`` or ``issuer``: most specific first, as mod_ssl and RFC 4514 write it."""
    parts = []
    for rdn in reversed(rdns or ()):
        parts.append("+".join(f"{_SHORT_NAMES.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(parts)


def _first(rdns: Any, key: str) -> str | None:
    for rdn in rdns or ():
        for k, v in rdn:
            if k == key:
                return str(v)
    return None


class TlsSession:
    """What a completed handshake agreed (``conn.tls`` on a TLS connection).

    Attributes:
        version: ``"TLSv1.3"`` or ``"TLSv1.2"``.
        cipher: the cipher suite's OpenSSL name.
        server_name: the SNI name the client asked for, or None.
        alpn_protocol: the ALPN protocol agreed, or None.
        peer_cert: the verified client certificate as ``SSLObject.getpeercert()``
            gives it, or None when the client sent none.
    """

    __slots__ = ("alpn_protocol", "cipher", "peer_cert", "server_name", "version")

    def __init__(self, sslobj: ssl.SSLObject) -> None:
        self.version = sslobj.version() or ""
        cipher = sslobj.cipher()
        self.cipher = cipher[0] if cipher else ""
        self.server_name: str | None = getattr(sslobj, "reactor_sni", None)
        self.alpn_protocol = sslobj.selected_alpn_protocol()
        cert = sslobj.getpeercert()
        self.peer_cert: dict[str, Any] | None = cert or None

    def environ(self) -> dict[str, str]:
        """The WSGI environ keys of this session (docs/tls.md, "What the app sees")."""
        env = {
            "wsgi.url_scheme": "https",
            "HTTPS": "on",
            "SSL_PROTOCOL": self.version,
            "SSL_CIPHER": self.cipher,
            "SSL_CLIENT_VERIFY": "SUCCESS" if self.peer_cert else "NONE",
        }
        if self.server_name:
            env["SSL_SERVER_NAME"] = self.server_name
        cert = self.peer_cert
        if cert:
            subject = cert.get("subject", ())
            issuer = cert.get("issuer", ())
            env["SSL_CLIENT_S_DN"] = distinguished_name(subject)
            env["SSL_CLIENT_I_DN"] = distinguished_name(issuer)
            cn = _first(subject, "commonName")
            if cn is not None:
                env["SSL_CLIENT_S_DN_CN"] = cn
            for key, name in (("serialNumber", "SSL_CLIENT_M_SERIAL"),
                              ("notBefore", "SSL_CLIENT_V_START"),
                              ("notAfter", "SSL_CLIENT_V_END")):
                if key in cert:
                    env[name] = str(cert[key])
        return env
