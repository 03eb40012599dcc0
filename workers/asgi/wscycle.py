"""One WebSocket connection between an ASGI app and the socket (ASGI WebSocket spec 2.4).

After an HTTP/1.1 upgrade request the handler gives the connection to a ``WsCycle``:
the app gets the ``websocket`` scope and ``websocket.connect``, and answers with
``websocket.accept`` (the 101 goes out, the codec of ``mioreactor.workers.websocket``
takes the bytes that follow), ``websocket.close`` (a 403), or the
``websocket.http.response.start``/``body`` denial (a whole HTTP response). Then
``websocket.receive`` carries each message the client sent, ``websocket.send`` frames
one, ``websocket.close`` starts the close handshake, and ``websocket.disconnect`` (with
the code) tells the app the connection ended.

Phases (``phase``)::

    CONNECTING --accept--> OPEN --close handshake, failure, loss--> CLOSED
        |  \\--http.response.start--> DENYING --last body--> CLOSED
        \\--close, return, raise, loss---------------------------> CLOSED

Flow control both ways: while the socket's write buffer is above its high-water mark
(a slow client) ``websocket.send`` waits; while more than ``max_queue`` messages wait
for the app's ``receive`` (a slow app), reading pauses. Bounded in time: the close
handshake (``close_timeout``, then an abort) and the keep-alive pings (a pong within
``ping_timeout``, else a 1011 close). Every method runs under the loop's lock
(``LoopDriver.lock``): the handler's entry points take it, the timers here too.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.handler import Connection, TimerHandle
from ..ops.metrics import WS_COUNTERS
from ..websocket import (
    DEFAULT_MAX_SIZE,
    BytesMessage,
    CloseReceived,
    DeflateConfig,
    Failed,
    Pong,
    State,
    TextMessage,
    UpgradeRequest,
    WebSocketConnection,
    accept,
    deny,
)
from .cycle import ASGIApp, ClientDisconnected, Waiting
from .loop import LoopDriver

_OPEN = State.OPEN

__all__ = ["WS_COUNTERS", "WS_MODES", "WsConfig", "WsCycle"]

log = logging.getLogger("mioreactor.asgi")

WS_MODES = ("auto", "none")
CONNECTING, DENYING, OPEN, CLOSED = 0, 1, 2, 3
# Indexes into the handler's ``ws_counts`` (``WS_COUNTERS``: stats()["websocket"], /metrics).
OPENED, CLOSED_COUNT, MSG_IN, MSG_OUT = 0, 1, 2, 3
_DISCONNECT_LOST = 1006


@dataclass(frozen=True, slots=True)
class WsConfig:
    """WebSocket settings of an ASGI server (uvicorn's names and defaults).

    Attributes:
        enabled: ``--ws auto`` (True) or ``--ws none``: upgrade requests then reach the
            app as plain ``http`` requests.
        max_size: the largest message accepted, after decompression (1009 beyond).
        ping_interval: seconds between keep-alive pings; None or 0: no pings.
        ping_timeout: seconds a pong may take before the connection is closed (1011);
            None or 0: never.
        per_message_deflate: offer permessage-deflate (RFC 7692).
        close_timeout: seconds the close handshake may take before an abort.
        max_queue: messages waiting for the app's ``receive`` before reading pauses.
    """

    enabled: bool = True
    max_size: int = DEFAULT_MAX_SIZE
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    per_message_deflate: bool = True
    close_timeout: float = 5.0
    max_queue: int = 32

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"ws max_size must be positive, got {self.max_size}")
        if self.close_timeout <= 0 or self.max_queue < 1:
            raise ValueError("ws close_timeout and max_queue must be positive")


_DEFLATE = DeflateConfig()


class WsCycle(Waiting):
    """The state of one WebSocket connection between the app and the socket.

    Args:
        conn: the connection (owned by the handler that made this cycle).
        driver: the server's loop; its lock is held around every call into the cycle.
        config: the WebSocket settings.
        target: the upgrade request's target (for the watchdog's report).
        upgrade: the checked handshake (``parse_upgrade_request``); dropped once
            answered.
        scope: the ``websocket`` scope.
        counts: the handler's ``ws_counts`` (``WS_COUNTERS``).
        answered: called with (status, body bytes) once the handshake is answered:
            101, 403, 500 or the app's denial (the handler counts and logs it);
            dropped after that call.

    Memory: what an open WebSocket keeps is this object, the codec, the app's task
    and its scope. The handshake's pieces (the upgrade request, the ``answered``
    callback and the request head it holds, the HTTP parser) are let go once the
    handshake is answered; zlib contexts are made on the first message, and a
    compressor unused from one keep-alive ping to the next is let go
    (``PerMessageDeflate.release_idle``). The inbox is a list read from an index
    (``taken``) and emptied when all is taken: O(1) a message as a ``deque`` is,
    without the 600 bytes an empty ``deque`` holds.
    """

    __slots__ = (
        "answered", "code", "config", "conn", "counts", "deny_body", "deny_headers",
        "deny_status", "driver", "ended", "inbox", "loop", "paused", "pending", "phase",
        "ping_timer", "pong_timer", "read_paused", "reason", "scope", "taken", "target",
        "timer", "upgrade", "waiter", "ws",
    )

    def __init__(
        self, conn: Connection, driver: LoopDriver, config: WsConfig, target: bytes,
        upgrade: UpgradeRequest, scope: dict[str, Any], counts: list[int],
        answered: Callable[[int, int], None],
    ) -> None:
        self.conn = conn
        self.driver = driver
        self.loop: asyncio.AbstractEventLoop = driver.loop
        self.config = config
        self.target = target
        self.upgrade: UpgradeRequest | None = upgrade
        self.scope = scope
        self.counts = counts
        self.answered: Callable[[int, int], None] | None = answered
        self.phase = CONNECTING
        self.ws: WebSocketConnection | None = None
        self.inbox: list[dict[str, Any]] = [{"type": "websocket.connect"}]
        self.taken = 0  # inbox[:taken] went to the app already
        self.pending = b""  # bytes the client sent before the 101 (reading paused)
        self.ended = False  # the disconnect is queued; receive returns it from now on
        self.code = _DISCONNECT_LOST
        self.reason = ""
        self.paused = False
        self.read_paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.timer: TimerHandle | None = None  # the close handshake's deadline
        self.ping_timer: TimerHandle | None = None
        self.pong_timer: TimerHandle | None = None
        self.deny_status = 0
        self.deny_headers: tuple[tuple[bytes, bytes], ...] = ()
        self.deny_body: tuple[bytes, ...] = ()

    # -- what the app calls ------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        """``websocket.connect`` first, then each message, then ``websocket.disconnect``."""
        while True:
            inbox = self.inbox
            taken = self.taken
            if taken < len(inbox):
                message = inbox[taken]
                taken += 1
                if taken == len(inbox):
                    inbox.clear()
                    taken = 0
                self.taken = taken
                if self.read_paused and len(inbox) - taken <= self.config.max_queue // 2:
                    self.read_paused = False
                    self.conn.resume_reading()  # may feed more at once: state is consistent
                return message
            if self.ended:
                return {"type": "websocket.disconnect", "code": self.code, "reason": self.reason}
            await self._park()

    async def send(self, message: dict[str, Any]) -> None:
        """Take one message from the app; ``websocket.send`` waits while the client lags.

        Raises:
            ClientDisconnected: a message after the connection ended.
            RuntimeError: a message the current phase does not allow, or a bad one.
        """
        kind = message["type"]
        if kind == "websocket.send":
            ws = self.ws
            if self.phase != OPEN or ws is None or ws.state is not _OPEN:
                if self.ended or self.phase == OPEN:
                    raise ClientDisconnected("the WebSocket is closed")
                raise RuntimeError("websocket.send before websocket.accept")
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
                if data is None:
                    raise RuntimeError("websocket.send needs text or bytes")
            self.conn.write(ws.send(data))
            self.counts[MSG_OUT] += 1
            while self.paused and not self.ended:
                await self._park()
        elif kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            self._app_close(message)
        elif kind == "websocket.http.response.start":
            if self.phase != CONNECTING:
                raise RuntimeError("websocket.http.response.start after the handshake was answered")
            status = message["status"]
            if type(status) is not int or not 200 <= status <= 599:
                raise RuntimeError(f"invalid denial status {status!r}")
            self.deny_status = status
            self.deny_headers = tuple((bytes(n), bytes(v)) for n, v in message.get("headers", ()))
            self.phase = DENYING
        elif kind == "websocket.http.response.body":
            if self.phase != DENYING:
                raise RuntimeError("websocket.http.response.body without a start")
            self.deny_body += (bytes(message.get("body", b"")),)
            if not message.get("more_body", False):
                self._deny()
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r}")

    def _accept(self, message: dict[str, Any]) -> None:
        if self.phase != CONNECTING:
            if self.ended:
                raise ClientDisconnected("the client left before the handshake was answered")
            raise RuntimeError("websocket.accept after the handshake was answered")
        headers = [(bytes(n), bytes(v)) for n, v in message.get("headers") or ()]
        config = self.config
        upgrade = self.upgrade
        assert upgrade is not None  # kept until the handshake is answered
        try:
            response, ws = accept(
                upgrade, subprotocol=message.get("subprotocol"), headers=headers,
                deflate=_DEFLATE if config.per_message_deflate else None,
                max_size=config.max_size,
            )
        except ValueError as exc:
            raise RuntimeError(f"invalid websocket.accept: {exc}") from None
        self.ws = ws
        self.phase = OPEN
        self.counts[OPENED] += 1
        self.conn.write(response)
        self._answer(101, 0)
        self._arm_ping(config.ping_interval)
        rest, self.pending = self.pending, b""
        if rest:  # reading paused while they waited for the 101
            self.feed(rest)
            if not self.ended and not self.read_paused:
                self.conn.resume_reading()

    def _app_close(self, message: dict[str, Any]) -> None:
        code = message.get("code") or 1000
        reason = message.get("reason") or ""
        if self.phase == CONNECTING:
            self._refuse(deny(403), 403)
            return
        ws = self.ws
        if self.phase != OPEN or ws is None or ws.state is not State.OPEN:
            return  # closing or closed already: nothing more to say
        try:
            frame = ws.close(code, reason)
        except ValueError as exc:
            raise RuntimeError(f"invalid websocket.close: {exc}") from None
        self._start_close(frame)

    def _answer(self, status: int, size: int) -> None:
        """The handshake is answered: report it, and let go of what only it needed."""
        answered = self.answered
        self.answered = self.upgrade = None
        if answered is not None:
            answered(status, size)

    def _deny(self) -> None:
        body = b"".join(self.deny_body)
        try:
            response = deny(self.deny_status, self.deny_headers, body)
        except ValueError as exc:
            self._refuse(deny(500), 500)
            raise RuntimeError(f"invalid websocket.http.response: {exc}") from None
        self._refuse(response, self.deny_status, len(body))

    def _refuse(self, response: bytes, status: int, size: int = 0) -> None:
        """Answer the upgrade with an HTTP response and close."""
        self.phase = CLOSED
        self._end(_DISCONNECT_LOST, "")
        self.conn.write(response)
        self._answer(status, size)
        self.conn.close_lingering(self.config.close_timeout, 1 << 20)

    # -- what the handler calls --------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the client."""
        ws = self.ws
        if ws is None:
            if self.phase == CONNECTING:  # before the 101: keep them, stop reading
                self.pending += data  # one read, or the few already under way
                self.conn.pause_reading()
            return
        events = ws.receive_data(data)
        if ws.outgoing:  # pongs, close replies the codec queued itself
            self.conn.write(ws.data_to_send())
        inbox = self.inbox
        for event in events:
            kind = type(event)
            if kind is TextMessage:
                inbox.append({"type": "websocket.receive", "text": event.data})  # type: ignore[union-attr]
                self.counts[MSG_IN] += 1
            elif kind is BytesMessage:
                inbox.append({"type": "websocket.receive", "bytes": event.data})  # type: ignore[union-attr]
                self.counts[MSG_IN] += 1
            elif kind is Pong:
                if self.pong_timer is not None:
                    self.pong_timer.cancel()
                    self.pong_timer = None
            elif kind is CloseReceived:
                assert isinstance(event, CloseReceived)
                self._end(event.code, event.reason)  # before the close: it reports 1006
                self.conn.write(ws.close())  # the reply when owed (echoes the code); else b""
                self.conn.close()  # RFC 6455 7.1.1: the server closes TCP first
            elif kind is Failed:
                assert isinstance(event, Failed)
                self._end(event.code, event.reason)
                self.conn.close_lingering(self.config.close_timeout, 1 << 20)
        waiting = len(inbox) - self.taken
        if waiting > self.config.max_queue and not self.read_paused and not self.ended:
            self.read_paused = True
            self.conn.pause_reading()
        if waiting:
            waiter = self.waiter  # wake(), with the app resumed here (LoopDriver.resolve)
            if waiter is not None:
                self.waiter = None
                if not waiter.done():
                    self.driver.resolve(waiter)

    def lost(self) -> None:
        """The connection is gone (closed by either side, or failed)."""
        self.phase = CLOSED
        self._end(_DISCONNECT_LOST, "")

    def drain(self) -> None:
        """Graceful stop: an open WebSocket gets a 1001 close."""
        ws = self.ws
        if self.phase == OPEN and ws is not None and ws.state is State.OPEN:
            self._start_close(ws.close(1001, "server shutting down"))

    def app_ended(self, exc: BaseException | None) -> None:
        """The app's coroutine returned (``exc`` None) or raised."""
        if self.phase == CONNECTING:
            if not self.ended:
                if exc is None:
                    log.error("ASGI application returned without accepting or closing the "
                              "WebSocket %s", self.scope["path"])
                self._refuse(deny(500), 500)
        elif self.phase == DENYING:
            self.phase = CLOSED
            self._end(_DISCONNECT_LOST, "")
            self.conn.abort()
        elif self.phase == OPEN:
            ws = self.ws
            if ws is not None and ws.state is State.OPEN:
                self._start_close(ws.close(1000 if exc is None else 1011))

    # -- the close handshake and keep-alive pings --------------------------------------

    def _start_close(self, frame: bytes) -> None:
        """Our close frame is out: wait ``close_timeout`` for the peer's, then abort."""
        self.conn.write(frame)
        self._cancel_pings()
        if self.timer is None:
            self.timer = self.conn.call_later(self.config.close_timeout, self._close_expired)

    def _close_expired(self) -> None:
        self.timer = None
        with self.driver.lock:
            if not self.ended:
                log.info("%r: WebSocket close handshake timed out; aborting", self.conn.peer)
            self.conn.abort()
            self.driver.step()

    def _arm_ping(self, delay: float | None) -> None:
        if delay:
            self.ping_timer = self.conn.call_later(delay, self._ping)

    def _ping(self) -> None:
        with self.driver.lock:
            self.ping_timer = None
            ws = self.ws
            if self.ended or ws is None or ws.state is not State.OPEN:
                return
            self.conn.write(ws.ping(os.urandom(4)))
            deflate = ws.deflate
            if deflate is not None:  # quiet since the last ping: its compressor goes
                deflate.release_idle()
            timeout = self.config.ping_timeout
            if timeout and self.pong_timer is None:
                self.pong_timer = self.conn.call_later(timeout, self._pong_missing)
            self._arm_ping(self.config.ping_interval)

    def _pong_missing(self) -> None:
        with self.driver.lock:
            self.pong_timer = None
            ws = self.ws
            if self.ended or ws is None:
                return
            log.info("%r: no pong within %s s; closing the WebSocket", self.conn.peer,
                     self.config.ping_timeout)
            self._end(1011, "keepalive ping timeout")
            if ws.state is State.OPEN:
                self.conn.write(ws.close(1011, "keepalive ping timeout"))
            self.conn.close()  # no handshake: the peer is silent (a stuck write times out)
            self.driver.step()

    def _cancel_pings(self) -> None:
        for timer in (self.ping_timer, self.pong_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_timer = None

    def _end(self, code: int, reason: str) -> None:
        """The connection ended: the app's next ``receive`` (after the queue) is a disconnect."""
        if self.ended:
            return
        self.ended = True
        self.code = code
        self.reason = reason
        if self.ws is not None:
            self.counts[CLOSED_COUNT] += 1
        self._cancel_pings()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.wake()


async def run_ws(app: ASGIApp, cycle: WsCycle) -> None:
    """Run ``app`` on ``cycle``; its end (or failure) closes the WebSocket properly."""
    try:
        await app(cycle.scope, cycle.receive, cycle.send)
    except BaseException as exc:
        if cycle.ended and isinstance(exc, (ClientDisconnected, asyncio.CancelledError)):
            log.debug("ASGI app ended with %r after the WebSocket closed", exc)
        else:
            log.error("error in ASGI application for WebSocket %s", cycle.scope["path"],
                      exc_info=exc)
        cycle.app_ended(exc)
        if not isinstance(exc, Exception):
            raise
        return
    cycle.app_ended(None)
