"""The ASGI handler: HTTP/1.1 from ``HttpProtocol`` to an ASGI 3 app's coroutines.

One ``AsgiHandler`` per worker thread, all sharing one ``LoopDriver`` (the server's
asyncio loop, stepped by the worker that feeds it: ``loop``). Per connection a
``_State`` on ``conn.context``; per request a ``Cycle`` (``cycle``) and a task that
runs the app. A connection is:

* idle: no request in progress. Timer: ``header_timeout`` while a head is partial (or
  none came yet), ``keepalive_timeout`` between requests;
* in a cycle: the app's task runs; body pieces go to the cycle as they arrive, and
  beyond ``_BODY_HIGH`` unread bytes reading pauses until the app takes them (a slow
  app pauses reading). Bytes of the next request (pipelining) wait as parsed events,
  and reading pauses until this response is complete: responses go in order.

Framing of a response: the app's ``Content-Length``; else the body's length when the
first body message is the last; else chunked (HTTP/1.1) or close-delimited (1.0).
HEAD, 204 and 304 carry no body. A slow client pauses ``send`` (``Cycle.paused``)
and is aborted after ``send_timeout`` without progress.

Application failures: before the head is written, a 500 and a close; after, an
abort. Either way the traceback goes to the ``mioreactor.asgi`` logger.
"""

from __future__ import annotations

import asyncio
import logging
import os
from asyncio import Task
from bisect import bisect_left
from collections.abc import Awaitable
from time import monotonic
from types import CoroutineType
from typing import Any

from ..core.handler import Connection, Handler, HandlerFactory, TimerHandle, WorkerContext
from ..http.accesslog import AccessLog
from ..http.errors import HTTPError, InternalServerError, RequestTimeout
from ..http.limits import HttpConfig
from ..http.protocol import END_OF_MESSAGE, Event, HttpProtocol, Request
from ..http.proxy import take_proxy_header
from ..http.response import CHUNKED_END, CONTINUE_RESPONSE, ResponseEncoder
from ..http.state import CHUNKED, LENGTH, NO_BODY, frame_body, framing
from ..http.wsgi import AppError, StartResponse
from ..ops.metrics import BUCKETS, DURATION_BOUNDS, STATUS_CLASSES
from ..websocket import HandshakeError, is_upgrade_request, parse_upgrade_request
from .cycle import ASGIApp, Cycle, LaneCycle
from .express import match
from .loop import LoopDriver, Poster
from .scope import ConnInfo, express_scope, http_scope, websocket_scope
from .wscycle import WS_COUNTERS, WsConfig, WsCycle, run_ws

__all__ = ["AsgiHandler", "make_asgi_handler_factory"]

log = logging.getLogger("mioreactor.asgi")

T_HEADER, T_KEEPALIVE, T_BODY = 0, 1, 2
_BODY_HIGH = 256 * 1024  # unread request body bytes before reading pauses
_STATUS: dict[int, str] = {}
# (status, *headers) as the app sent them -> (status line, validated header lines,
# Content-Length, Connection: close): a response head validated once is not checked
# again. Only hashable heads (tuples of bytes) are kept, at most _HEADS_MAX of them.
# The fifth item: the fields with the app's Content-Length, for a response whole in
# one message that needs no other framing (``_Responder.start_body``), else None.
_HEADS: dict[tuple[Any, ...], tuple[str, bytes, int | None, bool, bytes | None]] = {}
_HEADS_MAX = 256


# Reason phrases (RFC 9110), written out: ``from http import HTTPStatus`` would find
# an app's own ``http`` package first when the app directory leads sys.path.
_PHRASES = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable",
    417: "Expectation Failed",
    418: "I'm a Teapot",
    421: "Misdirected Request",
    422: "Unprocessable Entity",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    510: "Not Extended",
    511: "Network Authentication Required",
}


_new_lane = LaneCycle.__new__


async def _awaiting(awaitable: Awaitable[None]) -> None:
    """A coroutine for an app that returned another awaitable (a task needs a coroutine)."""
    await awaitable


def _status(code: int) -> str:
    line = _STATUS.get(code)
    if line is None:
        line = _STATUS[code] = f"{code} {_PHRASES.get(code, 'Unknown')}"
    return line


class _State:
    """Per-connection state (``conn.context``)."""

    __slots__ = (
        "closed", "cycle", "draining", "eof", "events", "file", "info", "proto", "proxy_buf",
        "read_paused", "responder", "rest", "send_mark", "send_timer", "timer_kind",
        "write_paused", "ws",
    )

    def __init__(self, info: ConnInfo, proto: HttpProtocol, proxy: bool = False) -> None:
        self.info = info
        self.proto = proto
        # The parser is between messages (HttpProtocol.at_rest, as of its last feed).
        # Not while a PROXY protocol header is awaited: the express lane, which takes
        # only reads at rest, must not take a head before it (``_proxy_header``).
        self.rest = not proxy
        self.proxy_buf: bytearray | None = bytearray() if proxy else None
        self.events: list[Event] = []
        self.cycle: Cycle | None = None
        self.closed = False
        self.draining = False
        self.eof = False
        self.read_paused = False
        self.write_paused = False
        self.timer_kind = -1
        self.send_timer: TimerHandle | None = None
        self.send_mark = 0
        self.file: Any = None  # a file queued with sendfile, closed once sent
        self.ws: WsCycle | None = None  # the WebSocket, once the upgrade came
        self.responder: _Responder | None = None  # made with the first request, reused


def make_asgi_handler_factory(
    app: ASGIApp, driver: LoopDriver, config: HttpConfig | None = None,
    state: dict[str, Any] | None = None, ws: WsConfig | None = None,
) -> HandlerFactory:
    """A ``HandlerFactory`` serving the ASGI 3 ``app`` on ``driver``'s loop.

    Args:
        app: the ASGI 3 application (single callable).
        driver: the server's loop (``LoopDriver``); attached to the first worker.
        config: limits and timeouts; the defaults when None.
        state: the lifespan state, copied into each request's scope; None: no key.
        ws: the WebSocket settings; the defaults (WebSocket on) when None.
    """
    cfg = config if config is not None else HttpConfig()
    wscfg = ws if ws is not None else WsConfig()

    def factory(worker: WorkerContext) -> Handler:
        driver.attach(_as_poster(worker))
        # On the worker's own thread: its steps count as time in the app (--timeout).
        driver.watch(getattr(worker.blocking(), "holder", None))
        return AsgiHandler(worker, app, driver, cfg, state, wscfg)

    return factory


def _as_poster(worker: WorkerContext) -> Poster:
    if not hasattr(worker, "post"):
        raise TypeError("the ASGI handler needs a worker with post() (mioreactor's Worker)")
    return worker  # type: ignore[return-value]


class AsgiHandler:
    """Serve an ASGI 3 application over HTTP/1.1 on the connections of one worker."""

    def __init__(
        self, worker: WorkerContext, app: ASGIApp, driver: LoopDriver, config: HttpConfig,
        state: dict[str, Any] | None, ws: WsConfig | None = None,
    ) -> None:
        self.worker = worker
        self.app = app
        self.driver = driver
        self.loop = driver.loop
        self.lock = driver.lock
        # The owner of every connection of this handler is whoever holds the loop's
        # lock (the worker copies it to ``conn.guard``; docs/design.md, "Ownership"):
        # a coroutine stepped on one worker may write to a connection another served.
        self.guard = driver.lock
        self.config = config
        # The express lane (``express.match``), as ``HttpConfig.express`` says for WSGI;
        # the head's budget is counted as the WSGI lane counts it.
        self.express = config.express
        self.proxies = frozenset(config.forwarded_allow_ips)
        self.head_max = min(config.max_request_line, config.max_header_size)
        self.max_fields = config.max_headers
        self.state = state
        self.encoder = ResponseEncoder(config.server_header)
        self.access = AccessLog(config.access_log_format) if config.access_log else None
        self.response_counts = [0] * (STATUS_CLASSES * BUCKETS)
        self.response_untimed = [0] * STATUS_CLASSES
        self.response_seconds = 0.0
        self.drain_grace = 0.0
        self.ws_config = ws if ws is not None else WsConfig()
        self.ws_counts = [0] * len(WS_COUNTERS)  # WebSocket opened, closed, messages in/out
        # What every upgraded connection keeps as its parser: one discarded protocol,
        # which takes no byte and changes no more (``HttpProtocol.discard``).
        self.spent = HttpProtocol(config)
        self.spent.discard()

    # -- Handler protocol ----------------------------------------------------------------

    def connection_made(self, conn: Connection) -> None:
        config = self.config
        scheme = "https" if getattr(conn, "tls", None) is not None else config.url_scheme
        info = ConnInfo(conn.peer, conn.local, scheme, self.state, config.root_path, self.proxies)
        # PROXY protocol: on every listener (HttpConfig) or on the one that asks for it.
        proxy = config.proxy_protocol or bool(
            getattr(getattr(conn, "listener", None), "proxy_protocol", False)
        )
        conn.context = _State(info, HttpProtocol(config), proxy)
        self._arm(conn, conn.context, T_HEADER, config.header_timeout)

    def data_received(self, conn: Connection, data: bytes) -> None:
        st: _State = conn.context
        if st.closed:
            return
        ws = st.ws
        if ws is not None:
            with self.lock:
                ws.feed(data)
                driver = self.driver
                if driver.ready or driver.scheduled:  # anything for step() to do
                    driver.step()
            return
        with self.lock:
            if st.rest and st.cycle is None and not st.events and self.express:
                found = match(data, self.head_max, self.max_fields)
                if found is not None:  # _begin, inline (the common request)
                    method, target, raw_path, query, version, headers, lowered, keep_alive = found
                    st.timer_kind = -1
                    responder = st.responder
                    if responder is None:
                        responder = st.responder = _Responder(self, conn, st)
                    # A LaneCycle, its attributes set here (LaneCycle says which).
                    cycle = st.cycle = _new_lane(LaneCycle)
                    cycle.loop = self.loop
                    cycle.responder = responder
                    cycle.method = method
                    cycle.target = target
                    cycle.version = version
                    cycle.raw_headers = headers
                    cycle.keep_alive = keep_alive
                    scope = cycle.scope = express_scope(
                        st.info, method, raw_path, query, version, lowered,
                        {"http.response.pathsend": {}})
                    cycle.start_time = now = monotonic()
                    driver = self.driver
                    # usually the whole request, inside the task's creation
                    coro: Any = self.app(scope, cycle.receive, cycle.send)
                    if type(coro) is not CoroutineType:
                        coro = _awaiting(coro)
                    task = driver.start(coro, now)
                    if not (task.done() and cycle.complete and not task.cancelled()
                            and task.exception() is None):
                        self._watch(conn, st, cycle, task)
                    if driver.ready or driver.scheduled:  # anything for step() to do
                        driver.step()
                    return
            if st.proxy_buf is not None:  # a PROXY protocol header first
                data = self._proxy_header(conn, st, data)
                if not data:
                    return
            proto = st.proto
            new = proto.feed(data)
            st.rest = proto.at_rest  # the lane takes a read only from a parser at rest
            if st.events:
                st.events.extend(new)
                new.clear()
            else:
                st.events = new
            self._process(conn, st)
            self.driver.step()

    def eof_received(self, conn: Connection) -> bool:
        st: _State = conn.context
        st.eof = True
        cycle = st.cycle
        # Half-closed after a whole request: finish the response in progress. Before
        # its body ended, the request can never complete: close now, and the app's
        # receive() says http.disconnect (connection_lost), as when the socket goes.
        return cycle is not None and st.ws is None and cycle.body_done

    def pause_writing(self, conn: Connection) -> None:
        st: _State = conn.context
        st.write_paused = True
        if st.cycle is not None:
            st.cycle.paused = True
        elif st.ws is not None:
            st.ws.paused = True
        self._arm_send(conn, st)

    def resume_writing(self, conn: Connection) -> None:
        st: _State = conn.context
        st.write_paused = False
        if st.send_timer is not None:
            st.send_timer.cancel()
            st.send_timer = None
        self._close_file(conn, st)
        cycle = st.cycle
        with self.lock:
            if st.ws is not None:
                st.ws.paused = False
                st.ws.wake()
                self.driver.step()
            elif cycle is not None:
                cycle.paused = False
                cycle.wake()
                self.driver.step()
            elif not st.events and not st.closed:
                self._idle(conn, st)

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        st: _State = conn.context
        st.closed = True
        st.timer_kind = -1
        # Let go of what refers back (the parser holds the protocol's callbacks, the
        # responder the state): freed now by reference counting, not at the cyclic
        # collector's next full pass (docs/design.md, "No garbage cycles").
        st.responder = None
        st.proto.discard()
        if st.send_timer is not None:
            st.send_timer.cancel()
            st.send_timer = None
        if st.file is not None:
            st.file.close()
            st.file = None
        st.events.clear()
        if st.ws is not None:
            with self.lock:
                st.ws.lost()
                self.driver.step()
            st.ws = None  # an app still running holds it; it no longer holds us back
            return
        cycle = st.cycle
        if cycle is not None:
            with self.lock:
                cycle.disconnected = True
                cycle.wake()
                self.driver.step()
            st.cycle = None

    def drain(self, conn: Connection) -> None:
        """Graceful stop: close an idle connection; a request in progress finishes."""
        st: _State = conn.context
        st.draining = True
        if st.ws is not None:
            with self.lock:
                st.ws.drain()
                self.driver.step()
            return
        if st.closed or st.cycle is not None or st.events:
            return
        conn.pause_reading()
        conn.resume_reading()  # answers a request already in the kernel (Connection: close)
        if st.cycle is None and not st.events and not st.closed and not st.proto.in_head:
            self._close(conn, st)

    def describe(self, conn: Connection) -> str:
        """``METHOD /target`` of the request ``conn`` is serving (for the watchdog)."""
        ws = getattr(getattr(conn, "context", None), "ws", None)
        if ws is not None:
            return f"WebSocket {ws.target.decode('latin-1')[:200]}"
        cycle = getattr(getattr(conn, "context", None), "cycle", None)
        if cycle is None:
            return "a request"
        request = cycle.request
        return f"{request.method} {request.target.decode('latin-1')[:200]}"

    # -- request flow --------------------------------------------------------------------

    def _process(self, conn: Connection, st: _State) -> None:
        """Hand parsed events to the current cycle; begin the next request when free."""
        events = st.events
        while events:
            event = events[0]
            kind = type(event)
            cycle = st.cycle
            if kind is Request:
                if cycle is not None:
                    break  # pipelined: waits for the response in progress
                del events[0]
                if (not event.keep_alive and self.ws_config.enabled  # type: ignore[union-attr]
                        and is_upgrade_request(event.headers)):  # type: ignore[union-attr]
                    events.clear()  # END_OF_MESSAGE; the parser takes no more bytes
                    self._upgrade(conn, st, event)  # type: ignore[arg-type]
                    return
                self._begin(conn, st, event)  # type: ignore[arg-type]
            elif kind is bytes:
                del events[0]
                assert cycle is not None
                cycle.body.append(event)  # type: ignore[arg-type]
                cycle.body_size += len(event)  # type: ignore[arg-type]
                cycle.continue_due = False
                cycle.wake()
                self.body_wait_restarts(conn, st)  # a byte came
                if cycle.body_size > _BODY_HIGH and not st.read_paused:
                    st.read_paused = True
                    conn.pause_reading()
            elif event is END_OF_MESSAGE:
                del events[0]
                if st.timer_kind == T_BODY:
                    st.timer_kind = -1
                if cycle is not None:
                    cycle.body_done = True
                    if cycle.waiter is not None:
                        cycle.wake()
            else:
                events.clear()
                self._fail(conn, st, event)  # type: ignore[arg-type]
                return
        if events:
            if not st.read_paused:
                st.read_paused = True
                conn.pause_reading()
        elif st.cycle is None and st.ws is None:
            # (With ``st.ws`` set, a request that completed during this loop, in its
            # task's eager start, went on to a pipelined upgrade: the connection is the
            # WebSocket's now, and the HTTP side has nothing to wait for.)
            self._idle(conn, st)

    def _begin(self, conn: Connection, st: _State, request: Request,
               scope: dict[str, Any] | None = None) -> None:
        st.timer_kind = -1  # the app's time is the watchdog's (--timeout), not a deadline's
        if scope is None:
            scope = http_scope(st.info, request, {"http.response.pathsend": {}})  # its own copy
        responder = st.responder
        if responder is None:
            responder = st.responder = _Responder(self, conn, st)
        loop = self.loop
        cycle = Cycle(loop, responder, request, scope, monotonic())
        st.cycle = cycle
        if not cycle.body_done:  # the body may stall: --body-timeout, as for WSGI
            self._arm(conn, st, T_BODY, self.config.body_timeout)
        coro: Any = self.app(scope, cycle.receive, cycle.send)
        task = self.driver.start(coro if type(coro) is CoroutineType else _awaiting(coro))
        if not (task.done() and cycle.complete and not task.cancelled()
                and task.exception() is None):
            self._watch(conn, st, cycle, task)

    def _upgrade(self, conn: Connection, st: _State, request: Request) -> None:
        """A WebSocket upgrade: check the handshake, then the app gets the connection."""
        st.timer_kind = -1
        start = monotonic()
        try:
            if request.has_body:
                raise HandshakeError(400, "a WebSocket handshake has no body")
            upgrade = parse_upgrade_request(request.method, request.version, request.headers)
        except HandshakeError as exc:
            conn.write(exc.response())
            self._answered(st, request, start, exc.status, len(exc.reason) + 1)
            st.closed = True
            conn.close_lingering(self.config.linger_timeout, self.config.linger_max_bytes)
            return
        scope = websocket_scope(st.info, request, list(upgrade.subprotocols))

        def answered(status: int, size: int) -> None:
            self._answered(st, request, start, status, size)

        ws = WsCycle(conn, self.driver, self.ws_config, request.target, upgrade, scope,
                     self.ws_counts, answered)
        st.ws = ws
        # What followed the head in its read: the client's first frames (a client may
        # send them with the handshake). Later reads go to the WebSocket itself.
        proto = st.proto
        rest = proto.upgrade_rest
        proto.discard()  # llhttp's state and this protocol go now, not at a cycle collection
        st.proto = self.spent
        if rest:
            ws.feed(rest)
        self.loop.create_task(run_ws(self.app, ws))
        if st.read_paused:
            # The upgrade waited behind a pipelined request, with reading paused (the
            # HTTP side's order); the bytes still in the kernel are the WebSocket's.
            st.read_paused = False
            conn.resume_reading()  # may feed them at once: ``st.ws`` is set

    def _answered(self, st: _State, request: Request, start: float, status: int,
                  size: int) -> None:
        elapsed = monotonic() - start
        self.response_counts[status // 100 * BUCKETS + bisect_left(DURATION_BOUNDS, elapsed)] += 1
        self.response_seconds += elapsed
        if self.access is not None:
            self.access.log(_host(st), request, status, size, start)

    def _watch(self, conn: Connection, st: _State, cycle: Cycle, task: Task[Any]) -> None:
        """The app's task is not done, or ended without its response: see it through.

        The common request needs none of this: its task completes inside its creation
        with the response sent (``data_received`` checks). Otherwise ``_finished``
        runs now (the task is done) or when the task ends.
        """
        if task.done():
            self._finished(conn, st, cycle, task)
        else:
            task.add_done_callback(lambda t: self._finished(conn, st, cycle, t))

    def _finished(self, conn: Connection, st: _State, cycle: Cycle, task: Task[Any]) -> None:
        """The app's task ended: log its error or its missing response, answer 500 if due."""
        exc: BaseException | None = (
            asyncio.CancelledError() if task.cancelled() else task.exception())
        if exc is not None:
            if cycle.disconnected:
                log.debug("ASGI app ended with %r after the client left", exc)
                return
            log.error(
                "error in ASGI application for %s %s", cycle.method,
                cycle.request.target.decode("latin-1")[:200], exc_info=exc,
            )
            self._app_failed(conn, st, cycle)
            return
        if not cycle.complete and not cycle.disconnected:
            log.error(
                "ASGI application returned without %s for %s %s",
                "completing its response" if cycle.started else "a response",
                cycle.method, cycle.request.target.decode("latin-1")[:200],
            )
            self._app_failed(conn, st, cycle)

    def _app_failed(self, conn: Connection, st: _State, cycle: Cycle) -> None:
        cycle.complete = True
        if st.cycle is cycle:
            st.cycle = None
        if st.closed:
            return
        if cycle.started:
            st.closed = True
            conn.abort()
        else:
            self._fail(conn, st, InternalServerError("application error"), cycle)

    def _idle(self, conn: Connection, st: _State) -> None:
        """No request in progress and nothing queued: wait for the next request."""
        if st.closed:
            return
        if st.rest:  # the parser between messages: neither broken nor in a head
            if st.eof or st.draining:
                self._close(conn, st)
                return
            if st.timer_kind != T_KEEPALIVE:
                st.timer_kind = T_KEEPALIVE
                conn.rearm(self.config.keepalive_timeout, _fire_phase)
            if st.read_paused:
                st.read_paused = False
                conn.resume_reading()
            return
        proto = st.proto
        if st.eof or proto.broken or (st.draining and not proto.in_head):
            self._close(conn, st)
            return
        if proto.in_head:
            if st.timer_kind != T_HEADER:
                self._arm(conn, st, T_HEADER, self.config.header_timeout)
        elif st.timer_kind != T_KEEPALIVE:
            st.timer_kind = T_KEEPALIVE  # _arm, inline
            conn.rearm(self.config.keepalive_timeout, _fire_phase)
        if st.read_paused:
            st.read_paused = False
            conn.resume_reading()  # may call data_received at once: state is consistent

    def _fail(self, conn: Connection, st: _State, error: HTTPError, cycle: Cycle | None = None) -> None:
        """Answer a protocol error (or a 500) and close lingering."""
        cycle = cycle or st.cycle
        conn.write(self.encoder.error(error))
        if cycle is not None:
            self._count(error.status, cycle)
            if self.access is not None:
                self.access.log(_host(st), cycle.request, error.status, 0, cycle.start_time)
            cycle.disconnected = True
            cycle.wake()
        else:
            self.response_untimed[error.status // 100] += 1
        st.cycle = None
        st.closed = True
        st.timer_kind = -1
        conn.close_lingering(self.config.linger_timeout, self.config.linger_max_bytes)

    def _close(self, conn: Connection, st: _State) -> None:
        st.closed = True
        st.timer_kind = -1
        conn.close()

    def _count(self, status: int, cycle: Cycle) -> None:
        elapsed = monotonic() - cycle.start_time
        self.response_counts[status // 100 * BUCKETS + bisect_left(DURATION_BOUNDS, elapsed)] += 1
        self.response_seconds += elapsed

    def _proxy_header(self, conn: Connection, st: _State, data: bytes) -> bytes:
        """Consume the PROXY header (v1 or v2); the bytes after it (b"": none yet).

        As the WSGI handler does (``http.proxy.take_proxy_header``): the header's
        addresses become the connection's ``client`` and ``server``; a connection
        that does not begin with a valid header is answered 400 and closed.
        """
        assert st.proxy_buf is not None
        try:
            taken = take_proxy_header(st.proxy_buf, data)
        except HTTPError as exc:
            st.proxy_buf = None
            self._fail(conn, st, exc)
            return b""
        if taken is None:
            return b""
        rest, src, dst = taken
        st.proxy_buf = None
        st.rest = True  # the lane may take the next head
        st.info.proxied(src, dst)
        return rest

    # -- the response (called by the cycle through _Responder) ---------------------------

    def head(self, conn: Connection, st: _State, cycle: Cycle, body: bytes, more: bool,
             size: int | None = None) -> bytes:
        """Validate the app's head, choose the framing, return the head bytes."""
        raw = cycle.headers
        status = cycle.status
        key: tuple[Any, ...] | None = (status, *raw)
        try:
            known = _HEADS.get(key)  # type: ignore[arg-type]
        except TypeError:  # a list pair, a bytearray: validated below, never kept
            known = key = None
        if known is None:
            start = StartResponse()
            try:
                start(_status(status), [(n.decode("latin-1"), v.decode("latin-1"))
                                        for n, v in raw])
            except (AppError, AttributeError, TypeError, ValueError) as exc:
                raise RuntimeError(f"invalid response head: {exc}") from None
            plain: bytes | None = None  # the fields of a whole response (start_body)
            if 200 <= status and status != 204 and status != 304:
                plain = start.headers
                if start.content_length is not None:
                    plain += b"Content-Length: %d\r\n" % start.content_length
            known = (start.status, start.headers, start.content_length, start.close, plain)
            if key is not None and len(_HEADS) < _HEADS_MAX:
                _HEADS[key] = known
        status_line, header_lines, length, app_close, _ = known
        method = cycle.method
        keep_alive = (
            cycle.keep_alive and not app_close and not st.draining
            and not (st.eof and not st.events)
        )
        no_body = method == "HEAD" or status == 204 or status == 304 or status < 200
        if length is None:
            if no_body:
                if method == "HEAD" and not more and (body or size):
                    length = size if size is not None else len(body)  # what GET would send
            else:
                length = size if size is not None else (None if more else len(body))
        cycle.mode, extra, keep_alive = framing(no_body, status, length, cycle.version,
                                                keep_alive)
        if cycle.mode == LENGTH:
            cycle.remaining = length  # type: ignore[assignment]
        cycle.close = not keep_alive
        cycle.started = True
        return self.encoder.head(status_line, header_lines, extra)

    def frame(self, cycle: Cycle, data: bytes) -> bytes:
        """Frame ``data`` for the response's body mode, enforcing Content-Length."""
        if not data or cycle.mode == NO_BODY:
            return b""
        return frame_body(cycle, data, log, "ASGI app")

    def complete(self, conn: Connection, st: _State, cycle: Cycle) -> None:
        """The last body message was sent: frame the end, log, go on or close."""
        cycle.complete = True
        if cycle.mode == CHUNKED:
            conn.write(CHUNKED_END)
        elif cycle.mode == LENGTH and cycle.remaining:
            log.warning("ASGI app sent %d bytes less than its Content-Length", cycle.remaining)
            cycle.close = True
        elapsed = monotonic() - cycle.start_time  # _count, inline
        status = cycle.status
        self.response_counts[status // 100 * BUCKETS + bisect_left(DURATION_BOUNDS, elapsed)] += 1
        self.response_seconds += elapsed
        if self.access is not None:
            self.access.log(_host(st), cycle.request, status, cycle.sent, cycle.start_time)
        if cycle.waiter is not None:
            cycle.wake()
        if st.cycle is cycle:
            st.cycle = None
        if st.closed:
            return
        if cycle.close or not cycle.body_done:
            self._close(conn, st)  # an unread body would be read as the next request
            return
        if st.file is not None:
            self._close_file(conn, st)
        if st.events or st.cycle is not None:
            self._process(conn, st)
        else:
            self._idle(conn, st)  # what _process would do with nothing queued

    def send_file(self, conn: Connection, st: _State, cycle: Cycle, path: str) -> None:
        """``http.response.pathsend``: the head, then the file through ``sendfile``."""
        f = open(path, "rb")  # closed once sent (_close_file)
        try:
            size = os.fstat(f.fileno()).st_size
            head = self.head(conn, st, cycle, b"", False, size)
        except BaseException:
            f.close()
            raise
        conn.write(head)
        count = cycle.remaining if cycle.mode == LENGTH else 0
        if count:
            self._close_file(conn, st)
            conn.sendfile(f, 0, min(count, size))
            cycle.remaining -= min(count, size)
            cycle.sent += min(count, size)
            st.file = f
        else:
            f.close()
        self.complete(conn, st, cycle)

    @staticmethod
    def _close_file(conn: Connection, st: _State) -> None:
        """Close the last ``sendfile`` file once the write buffer has taken it all."""
        if st.file is not None and not conn.write_buffer_size:
            st.file.close()
            st.file = None

    # -- timers --------------------------------------------------------------------------

    def _arm(self, conn: Connection, st: _State, kind: int, delay: float) -> None:
        st.timer_kind = kind
        conn.rearm(delay, _fire_phase)

    def body_wait_restarts(self, conn: Connection, st: _State) -> None:
        """The client's time to send the body counts from now, if the body timeout
        runs (a byte came, a 100 Continue went out, the app took what was read)."""
        if st.timer_kind == T_BODY:
            conn.rearm(self.config.body_timeout, _fire_phase)

    def _arm_send(self, conn: Connection, st: _State) -> None:
        if st.send_timer is not None:
            st.send_timer.cancel()
        st.send_mark = conn.write_buffer_size
        st.send_timer = conn.call_later(self.config.send_timeout, lambda: _fire_send(conn))

    def on_send_timer(self, conn: Connection) -> None:
        st: _State = conn.context
        st.send_timer = None
        if not st.write_paused or st.closed:
            return
        size = conn.write_buffer_size
        if 0 < size < st.send_mark:  # the client reads, slowly: wait another period
            self._arm_send(conn, st)
            return
        log.info("%r: client stopped reading; aborting", conn.peer)
        st.closed = True
        conn.abort()

    def on_phase_timer(self, conn: Connection) -> None:
        st: _State = conn.context
        kind = st.timer_kind
        if kind == T_BODY and not st.closed:
            self._body_stalled(conn, st)
            return
        if kind < 0 or st.closed or st.cycle is not None:
            return
        st.timer_kind = -1
        if kind == T_HEADER and st.proto.in_head:
            with self.lock:
                self._fail(conn, st, RequestTimeout("request head incomplete"))
        else:
            self._close(conn, st)

    def _body_stalled(self, conn: Connection, st: _State) -> None:
        """No body byte for ``body_timeout``: 408 and close (the app's ``receive``
        says ``http.disconnect``), or, once the response began, abort. A stall that is
        not the client's (the app has not read what came, or has not yet asked for a
        body announced with ``Expect: 100-continue``) waits another period."""
        cycle = st.cycle
        if cycle is None or cycle.body_done:
            st.timer_kind = -1
            return
        if st.read_paused or cycle.continue_due:
            self.body_wait_restarts(conn, st)  # another period
            return
        log.info("%r: request body stalled for %g s", conn.peer, self.config.body_timeout)
        with self.lock:
            if cycle.started:
                st.timer_kind = -1
                st.closed = True
                conn.abort()  # connection_lost: the app's receive says disconnect
            else:
                self._fail(conn, st, RequestTimeout("request body stalled"), cycle)
            self.driver.step()


class _Responder:
    """The ``Responder`` of one cycle: the handler's response methods, bound."""

    __slots__ = ("conn", "handler", "st")

    def __init__(self, handler: AsgiHandler, conn: Connection, st: _State) -> None:
        self.handler = handler
        self.conn = conn
        self.st = st

    def start_body(self, cycle: Cycle, body: bytes, more: bool) -> None:
        h = self.handler
        st = self.st
        if not more and not st.closed:
            # The common response, whole in one message: a head validated before
            # (``_HEADS``), a length known now, keep-alive on HTTP/1.1, not HEAD, no
            # 1xx/204/304. What ``head`` and ``frame`` would decide, in one frame, and
            # one ``bytes`` for head and body. Anything else goes the general way.
            try:
                known = _HEADS.get((cycle.status, *cycle.headers))
            except TypeError:
                known = None
            if (known is not None and cycle.keep_alive and cycle.version == "1.1"
                    and not known[3] and not st.draining and not st.eof
                    and cycle.method != "HEAD"):
                lines = known[4]
                if lines is not None:
                    length = known[2]
                    size = len(body)
                    if length is None:
                        lines += b"Content-Length: %d\r\n" % size
                    elif length != size:
                        lines = None
                    if lines is not None:
                        cycle.mode = LENGTH
                        cycle.sent = size
                        cycle.started = True
                        conn = self.conn
                        # ResponseEncoder.whole, inline (one frame less, as the WSGI lane)
                        encoder = h.encoder
                        line = encoder._status_lines.get(known[0]) or encoder.status_line(
                            known[0])
                        date = encoder._date
                        # The response's one clock read: Date, duration, deadline.
                        now = monotonic()
                        if now >= date.mono_until:
                            date.line()
                        conn.write(b"".join(
                            (line, date._line, encoder._server, lines, b"\r\n", body)))
                        if (st.rest and not st.events and st.cycle is cycle and cycle.body_done
                                and h.access is None and cycle.waiter is None
                                and st.file is None and not st.closed and not st.read_paused):
                            # complete() and _idle(), for the common case: counted, and
                            # the keep-alive wait begins; anything else goes there.
                            cycle.complete = True
                            elapsed = now - cycle.start_time
                            h.response_counts[cycle.status // 100 * BUCKETS
                                              + bisect_left(DURATION_BOUNDS, elapsed)] += 1
                            h.response_seconds += elapsed
                            st.cycle = None
                            if st.timer_kind != T_KEEPALIVE:
                                st.timer_kind = T_KEEPALIVE
                                conn.rearm(h.config.keepalive_timeout, _fire_phase, now)
                            return
                        h.complete(conn, st, cycle)
                        return
        head = h.head(self.conn, self.st, cycle, body, more)
        if not self.st.closed:
            self.conn.write(head + h.frame(cycle, body) if body else head)
        if not more:
            h.complete(self.conn, self.st, cycle)

    def more_body(self, cycle: Cycle, body: bytes, more: bool) -> None:
        h = self.handler
        if body:
            data = h.frame(cycle, body)
            if data:
                self.conn.write(data)
        if not more:
            h.complete(self.conn, self.st, cycle)

    def send_file(self, cycle: Cycle, path: str) -> None:
        self.handler.send_file(self.conn, self.st, cycle, path)

    def send_continue(self, cycle: Cycle) -> None:
        st = self.st
        if not st.closed:
            self.conn.write(CONTINUE_RESPONSE)
            self.handler.body_wait_restarts(self.conn, st)

    def body_taken(self, cycle: Cycle) -> None:
        st = self.st
        if st.read_paused and not st.events and not st.closed:
            st.read_paused = False
            self.handler.body_wait_restarts(self.conn, st)  # the wait was the app's
            self.conn.resume_reading()


def _host(st: _State) -> str:
    client = st.info.client
    return client[0] if client is not None else ""


def _fire_phase(conn: Connection) -> None:
    handler = conn.handler
    assert isinstance(handler, AsgiHandler)
    handler.on_phase_timer(conn)


def _fire_send(conn: Connection) -> None:
    handler = conn.handler
    assert isinstance(handler, AsgiHandler)
    handler.on_send_timer(conn)
