"""One request's ASGI cycle: the ``receive`` and ``send`` an app is given.

``receive`` hands out the body as it arrives (``http.request`` with ``more_body``),
sends ``100 Continue`` the first time it would wait for a body the client holds back,
and returns ``http.disconnect`` once the client is gone or the response is complete.
``send`` checks the messages and passes them to the connection's ``Responder`` (the
handler), and waits while the client does not read (the write buffer above its
high-water mark): a slow client pauses the app. After the client is gone ``send``
raises ``ClientDisconnected`` (an ``OSError``, ASGI HTTP spec 2.4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..http.protocol import Request

__all__ = ["ClientDisconnected", "Cycle", "LaneCycle", "Responder"]

Message = dict[str, Any]
_Future = asyncio.Future
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]


class ClientDisconnected(OSError):
    """``send`` after the client went away (ASGI HTTP spec 2.4: an ``OSError``)."""


class Responder(Protocol):
    """What a cycle asks of the handler that owns its connection."""

    def start_body(self, cycle: Cycle, body: bytes, more: bool) -> None: ...

    def more_body(self, cycle: Cycle, body: bytes, more: bool) -> None: ...

    def send_file(self, cycle: Cycle, path: str) -> None: ...

    def send_continue(self, cycle: Cycle) -> None: ...

    def body_taken(self, cycle: Cycle) -> None: ...


class Waiting:
    """One future the app's coroutine waits on, woken by the worker (``Cycle``, ``WsCycle``).

    ``await self._park()`` parks the coroutine until ``wake``: a body chunk, a message,
    the end, a disconnect or write space. Subclasses set ``loop`` and ``waiter``.
    """

    loop: asyncio.AbstractEventLoop
    waiter: asyncio.Future[None] | None

    def wake(self) -> None:
        """Something the app may wait for happened (body, message, disconnect, write space)."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _park(self) -> asyncio.Future[None]:
        """The future to await until ``wake``.

        The caller awaits it itself, so a parked coroutine holds no frame of ours (an
        idle WebSocket's app is parked in ``receive`` for as long as it stays open:
        216 bytes a connection), and a wait makes no coroutine. A future left behind
        by a cancelled wait is dropped by the next ``wake``, or replaced by the next
        ``_park``.
        """
        waiter = self.waiter = _Future(loop=self.loop)  # create_future, less a frame
        return waiter


class Cycle(Waiting):
    """The state of one request between the app and the connection.

    Attributes:
        request: the parsed head.
        scope: the ``http`` scope given to the app.
        body: body pieces received and not yet taken by ``receive``.
        body_size: their total length.
        body_done: the whole body has arrived.
        status: the response status once ``http.response.start`` came, else 0.
        headers: the response headers as sent by the app.
        started: the head is on the wire (or in the write buffer).
        complete: the last body message was sent.
        disconnected: the client is gone (or the connection failed).
        paused: the write buffer is above its high-water mark.
    """

    # No __slots__: most attributes start from these class defaults, so a request
    # sets only what is its own (a Cycle is made per request; measured with
    # bench/calls.py: 80 -> 32 bytecodes for __init__).
    body_size = 0
    done_sent = False
    status = 0
    headers: Any = ()
    started = False
    complete = False
    disconnected = False
    paused = False
    close = False
    mode = 0
    remaining = 0
    sent = 0
    waiter: asyncio.Future[None] | None = None

    def __init__(
        self, loop: asyncio.AbstractEventLoop, responder: Responder, request: Request,
        scope: dict[str, Any], start_time: float,
    ) -> None:
        self.loop = loop
        self.responder = responder
        self.request = request
        self.scope = scope
        self.start_time = start_time
        # What the response path reads of the head, as the lane's cycle has them.
        self.method = request.method
        self.version = request.version
        self.keep_alive = request.keep_alive
        self.body: list[bytes] = []
        if request.chunked or request.content_length:  # Request.has_body, inline
            self.body_done = False
            self.continue_due = request.expect_continue
        else:
            self.body_done = True
            self.continue_due = False

    method: str
    version: str
    keep_alive: bool

    async def receive(self) -> Message:
        """The next ``http.request`` piece, or ``http.disconnect``."""
        while True:
            if self.body:
                body = self.body
                data = body[0] if len(body) == 1 else b"".join(body)
                body.clear()
                self.body_size = 0
                more = not self.body_done
                self.done_sent = not more
                self.responder.body_taken(self)
                return {"type": "http.request", "body": data, "more_body": more}
            if self.body_done and not self.done_sent:
                self.done_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            if self.continue_due:
                self.continue_due = False
                self.responder.send_continue(self)
            await self._park()

    async def send(self, message: Message) -> None:
        """Take one response message; wait while the client does not read."""
        if self.disconnected:
            raise ClientDisconnected("the client closed the connection")
        kind = message["type"]
        if kind == "http.response.body":
            if not self.status:
                raise RuntimeError("http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body after the response was complete")
            body = message.get("body", b"")
            more = message.get("more_body", False)  # its truth is what counts
            if type(body) is not bytes:
                body = bytes(body)
            self.continue_due = False
            if self.started:
                self.responder.more_body(self, body, more)
            else:
                self.responder.start_body(self, body, more)
        elif kind == "http.response.start":
            if self.status:
                raise RuntimeError("http.response.start sent twice")
            status = message["status"]
            if type(status) is not int or not 100 <= status <= 599:
                raise RuntimeError(f"invalid status {status!r}")
            self.headers = message.get("headers", ())
            self.status = status  # "trailers": the extension is not offered, so ignored
            return
        elif kind == "http.response.pathsend":
            if not self.status or self.started:
                raise RuntimeError("http.response.pathsend needs a start and no body before it")
            self.continue_due = False
            self.responder.send_file(self, message["path"])
        elif kind == "http.response.trailers":
            return  # not advertised in extensions: ignored
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r}")
        while self.paused and not self.disconnected:
            await self._park()
        if self.disconnected and not self.complete:
            raise ClientDisconnected("the client closed the connection")


class LaneCycle(Cycle):
    """The cycle of a head the express lane read: bodiless, its ``Request`` made on demand.

    ``AsgiHandler.data_received`` makes it without ``__init__`` (``LaneCycle.__new__``)
    and sets ``loop``, ``responder``, ``scope``, ``start_time``, ``method``, ``target``,
    ``version``, ``raw_headers`` and ``keep_alive`` itself, one frame less per request. No body
    follows the head, so ``body`` stays the empty tuple and ``receive`` answers the
    one empty ``http.request`` at once. The ``Request`` (for the access log, an error
    line, the watchdog) is built from those attributes the first time it is read.
    """

    body_done = True
    continue_due = False
    body: Any = ()
    target: bytes
    raw_headers: list[tuple[bytes, bytes]]  # as sent (``headers`` is the response's)

    @property
    def request(self) -> Request:  # type: ignore[override]
        request: Request | None = self.__dict__.get("_request")
        if request is None:
            request = self.__dict__["_request"] = Request(
                self.method, self.target, self.version, self.raw_headers, None, False,
                self.keep_alive, False)
        return request
