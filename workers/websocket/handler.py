"""A raw handler that takes over a connection with the WebSocket upgrade.

``WebSocketHandler`` reads the HTTP/1.1 upgrade request (httptools parses the head),
answers 101 or refuses, then drives a ``WebSocketConnection`` with the bytes its
worker reads. Subclass it and override ``on_message`` (and ``on_connect``,
``on_ping``, ``on_close`` as needed); ``send`` and ``close`` write frames. Everything
about one connection lives on ``conn.context`` (a ``Session``), as the handler
protocol requires: the next event may be served by another worker's handler.

    class Echo(WebSocketHandler):
        def on_message(self, conn, data):
            self.send(conn, data)

    Server(handler=Echo, bind="127.0.0.1:0")

Bounded: the head may be at most ``max_head`` bytes (431 beyond), a message
``max_size`` bytes (1009), and the close handshake ``close_timeout`` seconds (then the
connection is aborted). The writer's backpressure pauses reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools

from ..core.handler import BaseHandler, Connection, TimerHandle, WorkerContext
from .connection import DEFAULT_MAX_SIZE, State, WebSocketConnection
from .deflate import DeflateConfig
from .events import BytesMessage, CloseReceived, Failed, Ping, TextMessage
from .handshake import HandshakeError, UpgradeRequest, accept, deny, parse_upgrade_request

__all__ = ["Session", "WebSocketHandler"]


@dataclass(slots=True)
class Session:
    """One connection's WebSocket state, kept on ``conn.context``.

    Attributes:
        head: the upgrade request's bytes until its end was found.
        target: the request target (path and query) once parsed.
        ws: the codec, once the 101 is sent.
        closed: ``on_close`` was called.
        timer: the close handshake's deadline, while it runs.
    """

    head: bytearray = field(default_factory=bytearray)
    target: str = ""
    ws: WebSocketConnection | None = None
    closed: bool = False
    timer: TimerHandle | None = None


class _Head:
    __slots__ = ("headers", "target")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.target = b""

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[bytes, bytes]]]:
    """(method, target, HTTP version, headers) of a request head ending in CRLF CRLF."""
    cb = _Head()
    parser = httptools.HttpRequestParser(cb)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # httptools stops at an upgrade: the head is all there is
    except httptools.HttpParserError as exc:
        raise HandshakeError(400, f"malformed request: {exc}") from None
    return (parser.get_method().decode("latin-1"), cb.target.decode("latin-1"),
            parser.get_http_version(), cb.headers)


class WebSocketHandler(BaseHandler):
    """Serve WebSocket connections on a raw handler; subclass and override ``on_message``.

    Args:
        worker: the worker this instance serves (the handler factory's argument).
        max_size: the largest message accepted (after decompression); 1009 beyond.
        deflate: permessage-deflate settings, None to never negotiate it.
        max_head: the largest upgrade request head, in bytes.
        close_timeout: seconds the close handshake may take before an abort.
    """

    def __init__(
        self,
        worker: WorkerContext,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        deflate: DeflateConfig | None = None,
        max_head: int = 16384,
        close_timeout: float = 5.0,
    ) -> None:
        super().__init__(worker)
        self.max_size = max_size
        self.deflate = DeflateConfig() if deflate is None else deflate
        self.max_head = max_head
        self.close_timeout = close_timeout

    # ---- what a subclass overrides --------------------------------------------------

    def on_connect(self, conn: Connection, target: str, request: UpgradeRequest) -> str | None:
        """Accept (return the chosen subprotocol or None) or raise ``HandshakeError``."""
        return None

    def on_message(self, conn: Connection, data: str | bytes) -> None:
        """A whole text (``str``) or binary (``bytes``) message arrived."""

    def on_ping(self, conn: Connection, payload: bytes) -> None:
        """The peer pinged (the pong is already sent)."""

    def on_close(self, conn: Connection, code: int, reason: str) -> None:
        """The WebSocket ended: the peer's code, our failure code, or 1006 (no close frame)."""

    # ---- what a subclass calls ------------------------------------------------------

    def send(self, conn: Connection, data: str | bytes) -> None:
        """Send one message (ignored once the close handshake has begun on our side)."""
        session: Session = conn.context
        ws = session.ws
        if ws is not None and (ws.state is State.OPEN or ws.state is State.REMOTE_CLOSING):
            conn.write(ws.send(data))

    def close(self, conn: Connection, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; the connection is aborted after ``close_timeout``."""
        session: Session = conn.context
        ws = session.ws
        if ws is None or ws.state is not State.OPEN:
            return
        conn.write(ws.close(code, reason))
        session.timer = conn.call_later(self.close_timeout, conn.abort)

    # ---- the handler protocol -------------------------------------------------------

    def connection_made(self, conn: Connection) -> None:
        conn.context = Session()

    def data_received(self, conn: Connection, data: bytes) -> None:
        session: Session = conn.context
        ws = session.ws
        if ws is None:
            ws = self._handshake(conn, session, data)
            if ws is None:
                return
            data = bytes(session.head)
            session.head = bytearray()
            if not data:
                return
        events = ws.receive_data(data)
        out = ws.data_to_send()
        if out:
            conn.write(out)
        for event in events:
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                self.on_message(conn, event.data)  # type: ignore[union-attr]
            elif kind is Ping:
                self.on_ping(conn, event.payload)  # type: ignore[union-attr]
            elif kind is CloseReceived:
                assert isinstance(event, CloseReceived)
                self._ended(conn, session, event.code, event.reason)
                conn.write(ws.close())  # the reply, when it is owed; b"" otherwise
                conn.close()
            elif kind is Failed:
                assert isinstance(event, Failed)
                self._ended(conn, session, event.code, event.reason)
                conn.close_lingering(self.close_timeout, 1 << 20)

    def _handshake(self, conn: Connection, session: Session, data: bytes) -> WebSocketConnection | None:
        """Collect the head; on its end answer 101 (keeping what follows in ``head``)."""
        head = session.head
        start = max(0, len(head) - 3)
        head += data
        end = head.find(b"\r\n\r\n", start)
        if end < 0:
            if len(head) > self.max_head:
                self._refuse(conn, deny(431, body=b"request head too large\n"))
            return None
        end += 4
        if end > self.max_head:
            self._refuse(conn, deny(431, body=b"request head too large\n"))
            return None
        try:
            method, target, version, headers = _parse_head(bytes(head[:end]))
            request = parse_upgrade_request(method, version, headers)
            session.target = target
            subprotocol = self.on_connect(conn, target, request)
        except HandshakeError as exc:
            self._refuse(conn, exc.response())
            return None
        response, ws = accept(request, subprotocol=subprotocol, deflate=self.deflate,
                              max_size=self.max_size)
        del head[:end]
        session.ws = ws
        conn.write(response)
        return ws

    def _refuse(self, conn: Connection, response: bytes) -> None:
        conn.context.head = bytearray()
        conn.write(response)
        conn.close_lingering(self.close_timeout, 1 << 20)

    def _ended(self, conn: Connection, session: Session, code: int, reason: str) -> None:
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        if not session.closed:
            session.closed = True
            self.on_close(conn, code, reason)

    def pause_writing(self, conn: Connection) -> None:
        conn.pause_reading()

    def resume_writing(self, conn: Connection) -> None:
        conn.resume_reading()

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        session = conn.context
        if isinstance(session, Session) and session.ws is not None:
            self._ended(conn, session, 1006, "" if exc is None else str(exc))
