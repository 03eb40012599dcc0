"""Slot: one concurrent connection of the load generator, and its response parser.

A slot lives for the whole run; the connection inside it may be replaced many times
(``--close`` mode, server closes, failures). Its states, and who moves it::

    NOCONN --_open--> CONNECTING --connected (https: HANDSHAKING --done)--> BUSY (request in flight) --response--> READY | NOCONN
                          |                       |  (keep-alive: BUSY again at once)
                          +--failed--> WAIT       +--reset/timeout--> NOCONN (and on)
    WAIT --backoff over--> NOCONN;   READY --server closed--> NOCONN

The slot is also the ``httptools`` protocol object: the parser calls
``on_headers_complete`` and ``on_message_complete`` on it, nothing else (no per-header
callbacks on the hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from httptools import HttpParserError, HttpResponseParser

from ....reactor.net import TcpStream

__all__ = ["BUSY", "CONNECTING", "HANDSHAKING", "NOCONN", "READY", "WAIT", "Slot"]

NOCONN = 0
CONNECTING = 1
READY = 2
BUSY = 3
WAIT = 4
HANDSHAKING = 5  # https://: connected, TLS handshake under way


def _no_stream(*_args: object) -> int:
    raise OSError("this slot has no connection")


def _no_recv(_n: int) -> bytes:
    raise OSError("this slot has no connection")


class Slot:
    """Per-connection state, flat and slotted for the hot loop.

    Attributes:
        index: the slot number (0 .. connections-1).
        stream, token: the current connection and its registration token, if any.
        state: one of NOCONN, CONNECTING, READY, BUSY, WAIT.
        has_req: a request is assigned (connecting for it, or in flight).
        t_req: when the request was taken (or scheduled, in open loop).
        deadline: perf_counter time when the connect/response times out, or the
            backoff ends (WAIT); 0.0 for none.
        pending: the unsent rest of the request, if a send was short.
        done, headers_done: parser progress of the current response.
        keep: the complete response allows keeping the connection (HTTP version and
            ``Connection`` header, as llhttp judges it).
        head: bytes received for the current response until its head was complete
            (only read to decide whether a body ends at end of stream).
        fails: consecutive failed connects (drives the backoff).
    """

    __slots__ = (
        "deadline",
        "done",
        "fails",
        "feed",
        "has_req",
        "head",
        "headers_done",
        "index",
        "is_head",
        "keep",
        "parser",
        "pending",
        "recv",
        "send",
        "state",
        "stream",
        "t_req",
        "tls",
        "token",
    )

    def __init__(self, index: int, is_head: bool) -> None:
        self.index = index
        self.is_head = is_head
        self.stream: TcpStream | None = None
        self.token = 0
        self.state = NOCONN
        self.has_req = False
        self.t_req = 0.0
        self.deadline = 0.0
        self.pending: memoryview | None = None
        self.parser = HttpResponseParser(self)
        self.feed: Callable[[bytes], None] = self.parser.feed_data
        self.recv: Callable[[int], bytes] = _no_recv
        self.send: Callable[[bytes | memoryview], int] = _no_stream
        self.done = False
        self.keep = False
        self.headers_done = False
        self.head: list[bytes] = []
        self.fails = 0
        self.tls: Any = None  # mioreactor.workers.tools.loadgen.tls.TlsClient on an https:// connection

    # -- httptools callbacks -------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.is_head and self.parser.get_status_code() >= 200:
            self.keep = self.parser.should_keep_alive()
            self.done = True  # a response to HEAD has no body, whatever its headers say

    def on_message_complete(self) -> None:
        code = self.parser.get_status_code()
        if 100 <= code < 200 and code != 101:
            self.headers_done = False  # an interim response: the final one follows
            self.head.clear()
            return
        # llhttp clears its flags once this callback returns: ask now, not later.
        self.keep = self.parser.should_keep_alive()
        self.done = True

    def take(self, data: bytes) -> None:
        """Bytes read for the current response: kept while its head is incomplete, and
        fed to the parser (``HttpParserError`` propagates)."""
        if not self.headers_done:
            self.head.append(data)
        self.feed(data)

    # -- life cycle --------------------------------------------------------------------
    def attach(self, stream: TcpStream, token: int) -> None:
        """Take a new connection: bind its I/O methods and start a fresh parser."""
        self.stream = stream
        self.token = token
        self.tls = None
        self.recv = stream.recv
        self.send = stream.send
        self._new_parser()
        self.reset_response()

    def detach(self) -> None:
        """Forget the (closed) connection."""
        self.stream = None
        self.tls = None
        self.token = 0
        self.state = NOCONN
        self.deadline = 0.0
        self.recv = _no_recv
        self.send = _no_stream

    def reset_response(self) -> None:
        """Ready for the next response on this connection (``has_req`` is the caller's)."""
        self.done = False
        self.keep = False
        self.headers_done = False
        self.pending = None
        if self.head:
            self.head.clear()
        if self.is_head:
            self._new_parser()  # the parser may still wait for a body HEAD never gets

    def _new_parser(self) -> None:
        self.parser = HttpResponseParser(self)
        self.feed = self.parser.feed_data

    def body_until_eof(self) -> bool:
        """After end of stream with the head complete: was the body close-delimited?

        True when the final response head has neither ``Content-Length`` nor a
        ``Transfer-Encoding`` ending in chunked (RFC 9112 6.3, rule 8). Re-parses the
        saved head with a throwaway parser that does collect headers: this is the rare
        path, so the hot path never pays for per-header callbacks.
        """
        found: dict[bytes, bytes] = {}

        class _Collect:
            @staticmethod
            def on_header(name: bytes, value: bytes) -> None:
                found[name.lower()] = value.strip().lower()

        try:
            HttpResponseParser(_Collect()).feed_data(b"".join(self.head))
        except HttpParserError:
            return False
        coding = found.get(b"transfer-encoding")
        if coding is not None:
            return not coding.endswith(b"chunked")
        return b"content-length" not in found
