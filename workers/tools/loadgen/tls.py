"""TLS for ``reactor bench https://``: a sans-IO client over a non-blocking stream.

``TlsClient`` wraps a connected ``TcpStream`` with an ``ssl.SSLObject`` over memory
BIOs and offers the two calls the engine's hot loop makes, ``recv`` and ``send``,
with the stream's contract: ``recv`` returns plaintext, ``b""`` at the end, and
raises ``BlockingIOError`` only when the socket is drained **and** the TLS object holds
no plaintext (records decrypted from one read are all handed over before the next
read, the edge-triggered rule as the server keeps it, docs/tls.md); ``send`` returns
how much plaintext it took once the ciphertext is on its way, and raises
``BlockingIOError`` while earlier ciphertext still waits for the socket (the engine
then retries with the same bytes on a writable event, and nothing is encrypted twice).
"""

from __future__ import annotations

import ssl
from typing import Any

from ....reactor.net import TcpStream

__all__ = ["TlsClient", "client_context"]

_RECV = 65536


def client_context(*, insecure: bool = False, cacert: str | None = None) -> ssl.SSLContext:
    """The client context of a bench run: verified against ``cacert`` (or the system's
    CAs), or not verified at all with ``insecure``. ALPN offers ``http/1.1``.

    Raises:
        ValueError: ``cacert`` cannot be read as PEM CA certificates.
    """
    if insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        try:
            ctx = ssl.create_default_context(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--cacert {cacert}: not a PEM file of CA certificates ({exc})") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TlsClient:
    """One TLS connection of the load generator (see the module docstring).

    Args:
        stream: a connected, non-blocking stream.
        ctx: the client context.
        server_hostname: the SNI name, checked against the certificate (None for an
            IP address: then the certificate's IP addresses are checked).
    """

    __slots__ = ("_cipher", "_eof", "_inc", "_obj", "_out", "_owed", "_pending", "_read",
                 "_write", "stream")

    def __init__(self, stream: TcpStream, ctx: ssl.SSLContext, server_hostname: str) -> None:
        self.stream = stream
        self._inc = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._inc, self._out, server_hostname=server_hostname)
        raw: Any = getattr(self._obj, "_sslobj", self._obj)
        self._read = raw.read
        self._write = raw.write
        self._pending = raw.pending
        self._cipher = b""  # ciphertext the socket has not taken yet
        self._owed = 0  # plaintext accepted whose ciphertext is still in _cipher
        self._eof = False  # the socket reached its end while the handshake drained it

    def handshake(self) -> bool:
        """Advance the handshake as far as the socket allows; True once it is done.

        Raises:
            ssl.SSLError: the handshake failed (an unknown CA, a name mismatch, ...).
            OSError: the socket failed; ``ConnectionResetError`` if it closed.
        """
        while True:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_out()
                data = self.stream.recv(_RECV)  # BlockingIOError: wait for readable
                if not data:
                    raise ConnectionResetError("the server closed during the TLS handshake") from None
                self._inc.write(data)
                continue
            self._flush_out()
            self._drain_after_handshake()
            return True

    def _drain_after_handshake(self) -> None:
        """The drain rule: the read that finished the handshake returned data, so read
        on until ``BlockingIOError`` (into the engine, for ``recv`` to decrypt later).
        Without it the fallback backend, which re-arms only on ``BlockingIOError``, never
        reports the response (epoll would, as a new edge)."""
        while not self._eof:
            try:
                data = self.stream.recv(_RECV)
            except BlockingIOError:
                return
            if not data:
                self._eof = True
            else:
                self._inc.write(data)

    def _flush_out(self) -> None:
        data = self._out.read()
        if data:
            self._cipher += data
        while self._cipher:
            n = self.stream.send(self._cipher)  # BlockingIOError propagates
            self._cipher = self._cipher[n:]

    def send(self, data: bytes | memoryview) -> int:
        """Encrypt and send ``data``; see the module docstring for the contract."""
        if not self._cipher:
            self._write(data)
            self._owed = len(data)
            self._cipher = self._out.read()
        while self._cipher:
            n = self.stream.send(self._cipher)  # BlockingIOError: retried with the same data
            self._cipher = self._cipher[n:]
        owed, self._owed = self._owed, 0
        return owed

    def recv(self, n: int) -> bytes:
        """Plaintext, ``b""`` at the end of the stream; ``BlockingIOError`` when drained."""
        inc = self._inc
        while True:
            if inc.pending or self._pending():
                try:
                    data: bytes = self._read(n)
                except ssl.SSLWantReadError:
                    pass  # a partial record: read more below
                except ssl.SSLZeroReturnError:
                    return b""
                else:
                    return data  # b"" is close_notify: the end
            if self._eof:
                return b""
            raw = self.stream.recv(_RECV)
            if not raw:
                return b""
            inc.write(raw)
