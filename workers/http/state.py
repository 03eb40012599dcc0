"""One HTTP connection's state on its worker: phases, timers, the response in progress.

``HttpHandler`` (``handler.py``) keeps a ``_State`` on each connection's
``conn.context``; ``Responder`` (``respond.py``) writes the response of the request
it holds. The phases and what moves a connection between them are in ``handler.py``'s
module docstring. Shared caches here (status codes, ``Content-Length`` lines) are
filled by every worker: single dict gets and sets, atomic, bounded, and keyed by
values the application chose (never by a client's bytes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from ..core.handler import TimerHandle
from .body import EMPTY_BODY, InputBody
from .protocol import Event, HttpProtocol, Request
from .wsgi import StartResponse

__all__ = [
    "BODY",
    "CHUNKED",
    "CLOSED",
    "IDLE",
    "LENGTH",
    "NO_BODY",
    "RESPONDING",
    "T_BODY",
    "T_HEADER",
    "T_KEEPALIVE",
    "T_SEND",
    "UNTIL_CLOSE",
    "framing",
]

# Phases (ints: compared on every callback).
IDLE, BODY, RESPONDING, CLOSED = 0, 1, 2, 3
# Body framing of a response.
NO_BODY, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3
# Timer kinds: the phase timer (header, keep-alive, body); the send timer has a slot
# of its own (``_State.send_timer``).
T_HEADER, T_KEEPALIVE, T_BODY, T_SEND = 0, 1, 2, 3
_PROTO_POOL = 64  # parsers kept per handler for connections that need one again
_NO_ITERATOR: Iterator[bytes] = iter(())  # exhausted: the body was a list
# Validated status strings -> code, and "Content-Length: N" lines for small N: each
# formatted once, not per response (shared by the workers: dict get/set are atomic).
_CODES: dict[str, int] = {}
_LENGTH_LINES: dict[int, bytes] = {}
# Validated status strings whose response has a body (not 1xx, 204, 304) -> the first
# index of their status class in ``response_counts``: the express lane's test and
# its metrics index in one lookup.
_BODY_INDEX: dict[str, int] = {}


def _length_line(length: int) -> bytes:
    line = b"Content-Length: %d\r\n" % length
    if length < 65536 and len(_LENGTH_LINES) < 1024:
        _LENGTH_LINES[length] = line
    return line


def framing(no_body: bool, status: int, length: int | None, version: str,
            keep_alive: bool) -> tuple[int, bytes, bool]:
    """The body framing of a response head: ``(mode, extra lines, keep_alive)``.

    One rule for WSGI and ASGI responses (the caller decides ``no_body`` and the
    ``length`` it knows): no body for HEAD, 204 and 304, with the ``Content-Length``
    GET would have (none for 204); else the length when known, chunked on HTTP/1.1,
    close-delimited on HTTP/1.0. The ``Connection`` line follows: ``close`` when the
    connection will not be kept, ``keep-alive`` for a kept HTTP/1.0 one.
    """
    if no_body:
        mode = NO_BODY
        extra = b"" if length is None or status == 204 else (
            _LENGTH_LINES.get(length) or _length_line(length))
    elif length is not None:
        mode = LENGTH
        extra = _LENGTH_LINES.get(length) or _length_line(length)
    elif version == "1.1":
        mode = CHUNKED
        extra = b"Transfer-Encoding: chunked\r\n"
    else:
        mode = UNTIL_CLOSE
        keep_alive = False
        extra = b""
    if not keep_alive:
        extra += b"Connection: close\r\n"
    elif version == "1.0":
        extra += b"Connection: keep-alive\r\n"
    return mode, extra, keep_alive


def frame_body(resp: Any, data: bytes, log: logging.Logger, who: str) -> bytes:
    """``data`` framed for ``resp.mode`` (chunked or length), counted in ``resp.sent``.

    A body beyond the declared ``Content-Length`` is cut there, logged (``log``, as ``who``)
    and closes the connection after the response (``resp.close``). ``resp``: a WSGI
    ``_Response`` or an ASGI ``Cycle`` (``mode``, ``remaining``, ``sent``, ``close``).
    """
    mode = resp.mode
    if mode == CHUNKED:
        resp.sent += len(data)
        return b"%x\r\n%b\r\n" % (len(data), data)
    if mode == LENGTH:
        if len(data) > resp.remaining:
            log.warning("%s sent more than its Content-Length; truncated", who)
            data = data[: resp.remaining]
            resp.close = True
        resp.remaining -= len(data)
    resp.sent += len(data)
    return data


class _Response:
    """The response in progress on a connection."""

    __slots__ = ("close", "iterator", "mode", "remaining", "result", "sent", "status")

    def __init__(self, result: Iterable[bytes], iterator: Iterator[bytes], status: int) -> None:
        self.result = result
        self.iterator = iterator
        self.status = status
        self.mode = NO_BODY
        self.remaining = 0  # LENGTH: bytes still allowed
        self.sent = 0  # body bytes handed to the connection
        self.close = False


class _State:
    """Per-connection protocol state (``conn.context``)."""

    __slots__ = (
        "backlog",
        "base",
        "body",
        "draining",
        "environ",
        "eof",
        "events",
        "express",
        "fresh",
        "last_rx",
        "looping",
        "phase",
        "proto",
        "proxy_buf",
        "read_paused",
        "request",
        "response",
        "send_mark",
        "send_timer",
        "start",
        "start_call",
        "started",
        "timer",
        "timer_kind",
        "write_paused",
    )

    def __init__(self, proto: HttpProtocol | None, base: dict[str, Any], proxy: bool) -> None:
        # None while the connection is between requests with nothing pending: the
        # parser went back to the handler's pool (``HttpHandler._rest``).
        self.proto = proto
        self.base = base
        self.events: list[Event] = []  # a list: 56 bytes idle, a deque 600
        self.backlog = bytearray()
        self.phase = IDLE
        self.request: Request | None = None
        self.body: InputBody = EMPTY_BODY
        self.response: _Response | None = None
        self.timer: TimerHandle | None = None
        self.timer_kind = -1
        self.send_timer: TimerHandle | None = None
        self.send_mark = 0  # write_buffer_size when the send timer was armed
        self.last_rx = 0.0
        self.looping = False  # inside _process: _finish returns to its loop
        self.started = 0.0
        self.eof = False
        self.fresh = True  # no request head has arrived yet
        self.draining = False
        # The express lane (workers/http/express.py) may take this connection's next
        # read; off for PROXY-protocol and trusted-proxy connections and once draining.
        self.express = False
        self.environ: dict[str, Any] | None = None  # the express request's (for describe)
        self.read_paused = False
        self.write_paused = False
        self.proxy_buf: bytearray | None = bytearray() if proxy else None
        # The connection's start_response, reused by each request (``_begin_start``),
        # and its bound ``__call__``: what the application gets, called without
        # ``type.__call__``'s slot dispatch.
        self.start = StartResponse()
        self.start_call = self.start.__call__


def _in_head(st: _State) -> bool:
    """A request head has begun arriving on this connection and is not complete."""
    proto = st.proto
    return proto is not None and proto.in_head
