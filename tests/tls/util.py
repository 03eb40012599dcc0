"""A blocking TLS client over memory BIOs, so a test decides exactly which records go
out in one ``send`` (a burst), and a hand-made TLS 1.0 ClientHello."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from typing import Any

from tests.workers.util import recv_all as recv_all  # re-exported for the TLS tests


class BioClient:
    """A TLS client whose records the test writes into one burst.

    Args:
        address: the server's ``(host, port)``.
        ctx: the client context.
        server_hostname: the SNI name (and the name checked).
        hold_finished: keep the client's last handshake flight (its Finished) unsent,
            so that the next ``burst`` sends it together with the first records.
    """

    def __init__(self, address: Any, ctx: ssl.SSLContext, server_hostname: str | None = "localhost",
                 *, hold_finished: bool = False) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_hostname)
        self.eof = False
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
        if not hold_finished:
            self._flush()

    def _flush(self) -> None:
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.inc.write_eof()
            self.eof = True
        else:
            self.inc.write(data)

    def encrypt(self, pieces: list[bytes]) -> bytes:
        """Each piece as its own record(s): the ciphertext, not sent."""
        for piece in pieces:
            self.obj.write(piece)
        return self.out.read()

    def burst(self, pieces: list[bytes]) -> int:
        """Encrypt each piece as its own record(s) and send them all with one ``sendall``.

        Returns the number of ciphertext bytes sent.
        """
        data = self.encrypt(pieces)
        self.sock.sendall(data)
        return len(data)

    def read(self, n: int, timeout: float = 10.0) -> bytes:
        """Exactly ``n`` plaintext bytes (fewer only if the server closes)."""
        got = bytearray()
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                piece = self.obj.read(min(n - len(got), 1 << 20))
                if not piece:
                    break  # close_notify
                got += piece
                continue
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                break
            if self.eof or time.monotonic() > deadline:
                break
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._fill()
            except TimeoutError:
                break
        return bytes(got)

    def close(self) -> None:
        self.sock.close()


def tls10_client_hello() -> bytes:
    """A ClientHello that offers TLS 1.0 at most (no supported_versions extension)."""
    suites = [0x002F, 0x0035, 0xC013, 0xC014]  # AES-CBC-SHA suites a TLS 1.0 client offers
    body = b"\x03\x01" + os.urandom(32) + b"\x00"
    body += struct.pack("!H", 2 * len(suites)) + b"".join(struct.pack("!H", s) for s in suites)
    body += b"\x01\x00"  # compression: null only
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def real_client_hello(ctx: ssl.SSLContext) -> bytes:
    """The first flight a real client sends (a modern ClientHello)."""
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()
