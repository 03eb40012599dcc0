"""The HTTP/1.1 + WSGI handler: the ``Handler`` protocol spoken over ``HttpProtocol``.

One ``HttpHandler`` serves all connections of one worker thread; each connection's
state is a ``_State`` on ``conn.context``. A connection moves through these phases::

    IDLE --head--> BODY --end--> RESPONDING --done--> IDLE (keep-alive) | CLOSED
      \\--head, no body--------> RESPONDING

* IDLE: waiting for a head. Timer: ``header_timeout`` on a fresh connection or once
  the first byte of a head arrived (expiry: 408 if a partial head came, else a silent
  close); ``keepalive_timeout`` between requests (expiry: silent close).
* BODY: receiving the body into ``wsgi.input``; the application runs only when the
  body is complete, because the worker thread cannot block on the socket inside the
  application. ``100 Continue`` is sent when the request becomes current and no body
  byte has arrived yet. Timer: ``body_timeout`` of no progress (expiry: 408).
* RESPONDING: the application ran; its body is pulled lazily. While the worker's write
  buffer is above its high-water mark (``pause_writing``), pulling stops and
  ``resume_writing`` continues it. Bytes that arrive meanwhile (pipelining) wait unparsed in a backlog;
  beyond ``max_pipeline_buffer`` reading is paused until the response is done.

The send timer is separate from the phase timer: it runs whenever the write buffer
is above its high-water mark, in any phase (a response buffered whole may outlive its
request, and a lingering close still has bytes to flush), and aborts the connection
after ``send_timeout`` without progress, i.e. without the buffer shrinking (nginx's
``send_timeout`` rule: between two successive writes, not for the whole response).

Graceful stop (``drain``): an idle keep-alive connection closes at once (after
reading any request already in the kernel, which is answered); a request that has
begun (a head or body arriving, a response being sent, a request queued behind it)
completes and its response says ``Connection: close``; a connection accepted during
the drain that has sent nothing yet may send one request. With ``drain_grace`` (a
process the supervisor replaced), an idle keep-alive connection stays open for its
next request, answered with ``Connection: close``, and closes after that many seconds
of silence. The server's ``graceful_timeout`` bounds it all.

Application failures: before the head is sent, a 500 and a close; after, an abort.
Either way the traceback goes to the ``mioreactor.workers.http`` logger.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from time import perf_counter
from time import time as _time
from typing import Any

from ..core.handler import Connection, Handler, HandlerFactory, TimerHandle, WorkerContext
from ..ops.metrics import BUCKETS, DURATION_BOUNDS, STATUS_CLASSES
from .accesslog import AccessLog
from .body import EMPTY_BODY, InputBody
from .errors import HTTPError, InternalServerError, RequestTimeout
from .express import CLOSE as _X_CLOSE
from .express import match as express_match
from .limits import HttpConfig
from .protocol import END_OF_MESSAGE, Event, HttpProtocol, Request
from .proxy import parse_proxy_header
from .response import CHUNKED_END, CONTINUE_RESPONSE, ResponseEncoder
from .wsgi import AppError, FileWrapper, StartResponse, base_environ, request_environ

__all__ = ["HttpHandler", "make_http_handler_factory"]

log = logging.getLogger("mioreactor.http")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

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


def make_http_handler_factory(app: WSGIApp | Any, config: HttpConfig | None = None) -> HandlerFactory:
    """A ``HandlerFactory`` that serves ``app`` with an ``HttpHandler`` per worker.

    Args:
        app: the WSGI application.
        config: limits and timeouts; the defaults when None.

    Returns:
        ``factory(worker) -> HttpHandler``.
    """
    cfg = config if config is not None else HttpConfig()

    def factory(worker: WorkerContext) -> Handler:
        return HttpHandler(worker, app, cfg)

    return factory


class HttpHandler:
    """Serve a WSGI application over HTTP/1.1 on the connections of one worker.

    Args:
        worker: the worker thread this instance belongs to.
        app: the WSGI application.
        config: limits, timeouts and switches.
    """

    def __init__(self, worker: WorkerContext, app: WSGIApp | Any, config: HttpConfig) -> None:
        self.worker = worker
        self.app = app
        self.config = config
        self.encoder = ResponseEncoder(config.server_header)
        self.trusted = frozenset(config.forwarded_allow_ips)
        self.access = AccessLog(config.access_log_format) if config.access_log else None
        # Request accounting (workers/ops/metrics.py): written only by this handler's worker
        # thread, read without a lock by Server.stats(). Index: status class * BUCKETS +
        # duration bucket. Error responses sent before a head was parsed have no
        # duration: they count in ``response_untimed`` by class.
        self.response_counts = [0] * (STATUS_CLASSES * BUCKETS)
        self.response_untimed = [0] * STATUS_CLASSES
        self.response_seconds = 0.0
        # Set by Server.stop(idle_grace=...) before the drain (see ``drain``).
        self.drain_grace = 0.0
        # Parsers of connections at rest between requests, for the next one to need
        # one: an idle keep-alive connection holds none (~1.1 KiB each, with llhttp's
        # state; docs/performance.md, "Memory per idle connection").
        self._protos: list[HttpProtocol] = []
        # The application call inside the worker's blocking section, in one frame
        # (``BlockingSection.call``) where the worker offers it.
        section = worker.blocking()
        call = getattr(section, "call", None)
        self._call: Callable[[WSGIApp, dict[str, Any], Callable[..., Any]], Iterable[bytes]] = (
            call if call is not None else self._call_in_section
        )
        # The express lane (workers/http/express.py): off with an access log (its line
        # wants the parsed head) and PROXY protocol.
        self.express = config.express and not config.access_log and not config.proxy_protocol
        self._express_max = min(config.max_request_line, config.max_header_size)
        self._max_headers = config.max_headers
        self._bases: dict[Any, dict[str, Any]] = {}  # local address -> base environ template
        self._keepalive = config.keepalive_timeout

    # -- Handler protocol ----------------------------------------------------------------

    def connection_made(self, conn: Connection) -> None:
        config = self.config
        # PROXY protocol: on every listener (HttpConfig) or on the one that asks for it.
        listener = getattr(conn, "listener", None)
        proxy = config.proxy_protocol or bool(getattr(listener, "proxy_protocol", False))
        peer = conn.peer
        local = conn.local
        # The base environ of a TCP connection differs from its listener's others only
        # in the peer: copied from a template made once per local address.
        template = self._bases.get(local) if type(peer) is tuple else None
        if template is None:
            base = base_environ(peer, local, config)
            if type(peer) is tuple and len(self._bases) < 64:
                self._bases[local] = base.copy()
        else:
            base = template.copy()
            host = peer[0]
            base["REMOTE_ADDR"] = host
            base["REMOTE_PORT"] = str(peer[1])
            allow = self.trusted
            if allow:
                base["mioreactor.trusted_proxy"] = "*" in allow or host in allow
        tls = getattr(conn, "tls", None)  # a TLS connection is made after its handshake
        if tls is not None:
            base.update(tls.environ())
        st = _State(None, base, proxy)  # the parser comes with the first bytes
        st.express = self.express and not proxy and not base["mioreactor.trusted_proxy"]
        conn.context = st
        self._arm(conn, st, T_HEADER, config.header_timeout)

    def data_received(self, conn: Connection, data: bytes) -> None:
        st: _State = conn.context
        # The express lane (``mioreactor.workers.http.express``), inline: the common read, one
        # whole bodiless head on a connection at rest (no parser held, nothing
        # queued), is served here, in this one frame. Anything else: ``_receive``.
        if not (st.express and st.proto is None and not st.phase):
            self._receive(conn, st, data)
            return
        found = express_match(data, st.base, self._express_max, self._max_headers)
        if found is None:
            self._receive(conn, st, data)
            return
        environ, extra = found  # its wsgi.input is the base's EMPTY_BODY
        st.fresh = False
        st.environ = environ  # for the watchdog's describe()
        st.timer_kind = -1  # the phase deadline, if it falls due meanwhile, does nothing
        started = perf_counter()
        start = st.start  # reset for this request (as _begin_start, inline)
        start.status = ""
        start.headers_sent = False
        if start.written:
            start.written = []
        try:
            result = self._call(self.app, environ, st.start_call)
        except Exception as exc:
            self._express_request(st, environ, extra, started)
            self._app_error(conn, st, exc, environ)
            return
        # The common result, framed here: one ``bytes`` in a list, a validated status
        # that allows a body, a Content-Length (if any) that matches, not HEAD.
        if (
            type(result) is list
            and len(result) == 1
            and type(body := result[0]) is bytes
            and (index := _BODY_INDEX.get(status := start.status)) is not None
            and not start.written
            and (start.content_length is None or start.content_length == len(body))
            and environ["REQUEST_METHOD"] != "HEAD"
        ):
            if start.close:
                extra = _X_CLOSE
            length = len(body)
            # ResponseEncoder.whole, inline (this worker's encoder; one frame less)
            encoder = self.encoder
            line = encoder._status_lines.get(status) or encoder.status_line(status)
            date = encoder._date
            if not date._second <= _time() < date._until:
                date.line()
            conn.write(
                b"".join((
                    line, date._line, encoder._server, start.headers,
                    _LENGTH_LINES.get(length) or _length_line(length), extra, b"\r\n", body,
                ))
            )
            elapsed = perf_counter() - started
            self.response_counts[index + bisect_left(DURATION_BOUNDS, elapsed)] += 1
            self.response_seconds += elapsed
            st.environ = None
            if extra is _X_CLOSE or st.phase:  # closing; or the write failed (CLOSED)
                self._close(conn, st)
            elif st.write_paused:
                st.timer = None  # the send timer governs; resume_writing goes on
            else:
                st.timer_kind = T_KEEPALIVE
                st.timer = conn.rearm(self._keepalive, _fire_phase)
            return
        # Any other result: the general response path, with a Request made for it.
        self._respond(conn, st, self._express_request(st, environ, extra, started), environ, start, result)

    def _receive(self, conn: Connection, st: _State, data: bytes) -> None:
        """The general path: the bytes go to this connection's ``HttpProtocol``."""
        phase = st.phase
        if phase == RESPONDING:
            st.backlog += data
            if len(st.backlog) > self.config.max_pipeline_buffer and not st.read_paused:
                st.read_paused = True
                conn.pause_reading()
            return
        if phase == CLOSED:
            return
        if st.proxy_buf is not None:
            data = self._proxy_header(conn, st, data)
            if not data:
                return
        if phase == BODY:
            st.last_rx = time.monotonic()
        # The keep-alive timer gives way to the header timer only if a head is still
        # incomplete after this feed (``_idle``): a whole request in one read, the
        # common case, re-arms nothing until its response is out.
        proto = st.proto
        if proto is None:
            pool = self._protos
            proto = st.proto = pool.pop() if pool else HttpProtocol(self.config)
        new = proto.feed(data)
        if st.events:
            st.events.extend(new)
            new.clear()  # the parser keeps this list until its next feed: hold no request
        else:
            st.events = new  # consumed by _process; the parser's next feed makes a new one
        self._process(conn, st)

    def eof_received(self, conn: Connection) -> bool:
        st: _State = conn.context
        st.eof = True
        # Keep the connection while a response (or a complete pipelined request) is due.
        return st.phase == RESPONDING

    def pause_writing(self, conn: Connection) -> None:
        st: _State = conn.context
        st.write_paused = True
        self._arm_send(conn, st)

    def resume_writing(self, conn: Connection) -> None:
        st: _State = conn.context
        st.write_paused = False
        if st.send_timer is not None:
            st.send_timer.cancel()
            st.send_timer = None
        if st.phase == RESPONDING:
            self._pump(conn, st)
        elif st.phase == IDLE and not st.events:
            self._idle(conn, st)  # the keep-alive wait starts once the response is out

    def drain(self, conn: Connection) -> None:
        """Graceful stop: close when idle; finish a begun request first (module docstring)."""
        st: _State = conn.context
        st.draining = True
        st.express = False
        if st.phase == CLOSED:
            conn.close()  # stops a lingering close; a flush in progress goes on
            return
        if st.phase == IDLE and not st.fresh and not st.events and not st.backlog and not _in_head(st):
            # A request may be in the kernel already, its edge not served yet: closing
            # with unread bytes sends RST, and the client reads a reset instead of an
            # answer. Read first (resume_reading reads at once); a request found is
            # answered with Connection: close, and only a connection still idle closes.
            conn.pause_reading()
            conn.resume_reading()
            if st.phase == IDLE and not st.events and not st.backlog and not _in_head(st):
                grace = self.drain_grace
                if grace > 0:
                    # A process being replaced (--max-requests, SIGHUP) is in no hurry:
                    # closing an idle keep-alive connection races with the request the
                    # client may be sending on it (it then sees EOF or RST instead of an
                    # answer). So the connection stays open for its next request, which
                    # is answered with Connection: close, and closes after ``grace``
                    # seconds of silence, as a keep-alive timeout would close it.
                    self._arm(conn, st, T_KEEPALIVE, min(grace, self.config.keepalive_timeout))
                    return
                self._close(conn, st)

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        st: _State = conn.context
        st.phase = CLOSED
        if st.timer is not None:  # _disarm, inline
            st.timer.cancel()
            st.timer = None
        st.timer_kind = -1
        if st.send_timer is not None:
            st.send_timer.cancel()
            st.send_timer = None
        resp = st.response
        if resp is not None:
            st.response = None
            self._close_result(resp.result)
        if st.body is not EMPTY_BODY:
            st.body.close()
        if st.events:
            st.events.clear()
        if st.backlog:
            st.backlog.clear()

    def describe(self, conn: Connection) -> str:
        """``METHOD /target`` of the request ``conn`` is serving (for the watchdog).

        Called from another thread: it only reads.
        """
        st = getattr(conn, "context", None)
        request = getattr(st, "request", None)
        if request is None:
            environ = getattr(st, "environ", None)  # an express request
            if environ is None:
                return "a request"
            return f"{environ['REQUEST_METHOD']} {environ['RAW_URI'][:200]}"
        return f"{request.method} {request.target.decode('latin-1')[:200]}"

    # -- request flow --------------------------------------------------------------------

    def _process(self, conn: Connection, st: _State) -> None:
        """Consume queued events until a response is in progress or the queue is empty.

        Hot path: a request without a body is begun inline (no timer call: the phase
        timer is only marked off), and a response finished inside this loop returns
        to it (``st.looping``) instead of entering it again.
        """
        events = st.events
        st.looping = True
        while events and st.phase < RESPONDING:
            event = events.pop(0)
            kind = type(event)
            if kind is bytes:
                st.body.append(event)  # type: ignore[arg-type]
            elif event is END_OF_MESSAGE:
                self._run(conn, st)
            elif kind is Request:
                if event.chunked or event.content_length:  # type: ignore[union-attr]
                    self._begin(conn, st, event)  # type: ignore[arg-type]
                else:
                    st.request = event  # type: ignore[assignment]
                    st.fresh = False
                    st.started = perf_counter()
                    st.body = EMPTY_BODY
                    timer = st.timer
                    if timer is not None:  # _disarm, inline
                        timer.cancel()
                        st.timer = None
                    st.timer_kind = -1
            else:
                st.looping = False
                self._fail(conn, st, event)  # type: ignore[arg-type]
                return
        st.looping = False
        if st.phase == IDLE and not events:
            self._idle(conn, st)

    def _begin(self, conn: Connection, st: _State, request: Request) -> None:
        st.request = request
        st.fresh = False
        st.started = perf_counter()
        if request.has_body:
            st.phase = BODY
            st.body = InputBody(self.config.body_spool_threshold)
            st.last_rx = time.monotonic()
            self._arm(conn, st, T_BODY, self.config.body_timeout)
            if request.expect_continue and (not st.events or type(st.events[0]) is Request):
                conn.write(CONTINUE_RESPONSE)
        else:
            st.body = EMPTY_BODY
            self._disarm(st)

    def _idle(self, conn: Connection, st: _State) -> None:
        """Nothing queued: continue with the backlog, or wait for the next request."""
        if st.backlog:
            data = bytes(st.backlog)
            st.backlog.clear()
            proto = st.proto
            if proto is None:  # not at rest with a backlog; kept simple all the same
                proto = st.proto = HttpProtocol(self.config)
            new = proto.feed(data)
            st.events.extend(new)
            new.clear()
            self._process(conn, st)
            return
        proto = st.proto
        if proto is None:
            in_head = broken = False
        else:
            # ``proto.in_head`` and ``proto.broken``, read directly (no property call)
            in_head = not proto._head_done and proto._head_raw > 0
            broken = proto._dead
        if st.eof or broken or (st.draining and not st.fresh and not in_head):
            self._close(conn, st)
            return
        if in_head:
            if st.timer_kind != T_HEADER:
                self._arm(conn, st, T_HEADER, self.config.header_timeout)
        elif st.write_paused:
            self._disarm(st)  # still sending: the send timer governs; resume_writing re-enters
        else:
            if st.timer_kind != T_KEEPALIVE:
                st.timer_kind = T_KEEPALIVE
                st.timer = conn.rearm(self.config.keepalive_timeout, _fire_phase)
            if proto is not None and not st.events and proto.at_rest:
                # Between requests with nothing pending: the parser goes to the pool.
                st.proto = None
                if len(self._protos) < _PROTO_POOL:
                    self._protos.append(proto)
        if st.read_paused:
            st.read_paused = False
            conn.resume_reading()  # may call data_received at once: state is consistent

    def _fail(self, conn: Connection, st: _State, error: HTTPError) -> None:
        """Answer a protocol error and close lingering; nothing after it is parsed."""
        log.debug("%r: %s %s", conn.peer, error.status, error.detail)
        data = self.encoder.error(error)
        conn.write(data)
        if st.request is not None:
            elapsed = perf_counter() - st.started
            self.response_counts[
                error.status // 100 * BUCKETS + bisect_left(DURATION_BOUNDS, elapsed)
            ] += 1
            self.response_seconds += elapsed
        else:
            self.response_untimed[error.status // 100] += 1
        if self.access is not None and st.request is not None:
            self.access.log(st.base["REMOTE_ADDR"], st.request, error.status, 0, st.started)
        # Lingering close (``Conn.close_lingering``): a client still sending must be
        # able to read this response before the connection goes.
        self._disarm(st)
        st.phase = CLOSED
        conn.close_lingering(self.config.linger_timeout, self.config.linger_max_bytes)

    def _close(self, conn: Connection, st: _State) -> None:
        # No _disarm: closing cancels the connection's deadline (and connection_lost
        # clears the phase timer) when the close is done; a close that waits for the
        # write buffer to drain keeps it, and its expiry then finds the phase CLOSED.
        st.phase = CLOSED
        conn.close()

    # -- running the application ---------------------------------------------------------

    def _run(self, conn: Connection, st: _State) -> None:
        """The request is complete: call the application and start the response."""
        request = st.request
        assert request is not None
        body = st.body
        if body is not EMPTY_BODY:
            body.finish()
        if st.timer is not None:
            self._disarm(st)
        st.phase = RESPONDING
        environ = request_environ(st.base, request, body, self.trusted)
        start = self._begin_start(st)
        try:
            result = self._call(self.app, environ, st.start_call)
        except Exception as exc:
            self._app_error(conn, st, exc, environ)
            return
        self._respond(conn, st, request, environ, start, result)

    @staticmethod
    def _begin_start(st: _State) -> StartResponse:
        """The connection's ``StartResponse``, reset for a new request."""
        start = st.start
        start.status = ""
        start.headers_sent = False
        if start.written:
            start.written = []  # a new list: the last response may still hold the old one
        return start

    def _call_in_section(
        self, app: WSGIApp, environ: dict[str, Any], start: Callable[..., Any]
    ) -> Iterable[bytes]:
        with self.worker.blocking():
            return app(environ, start)

    @staticmethod
    def _express_request(st: _State, environ: dict[str, Any], extra: bytes, started: float) -> Request:
        """The ``Request`` of an express request, for the general response path.

        Its ``headers`` are empty: the response path does not read them (the access
        log, which does, turns the lane off).
        """
        st.environ = None
        request = Request(
            environ["REQUEST_METHOD"],
            environ["RAW_URI"].encode("latin-1"),
            environ["SERVER_PROTOCOL"][5:],
            [],
            None,
            False,
            extra is not _X_CLOSE,
            False,
        )
        st.request = request
        st.started = started
        st.phase = RESPONDING
        st.body = EMPTY_BODY
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        return request

    def _respond(
        self,
        conn: Connection,
        st: _State,
        request: Request,
        environ: dict[str, Any],
        start: StartResponse,
        result: Iterable[bytes],
    ) -> None:
        """The application returned ``result``: check it and start the response."""
        chunks: list[bytes] = []
        first = b""
        exhausted = True  # every body byte is in ``chunks``: the length is known
        iterator: Iterator[bytes] = _NO_ITERATOR
        try:
            if type(result) is list:
                chunks = result  # read, never changed (a new list if anything is added)
            elif type(result) is tuple:
                chunks = list(result)
            elif isinstance(result, FileWrapper):
                iterator = iter(result)
                exhausted = False
            else:
                # PEP 3333: the head waits for the first non-empty chunk.
                with self.worker.blocking():
                    iterator = iter(result)
                    for first in iterator:
                        if first:
                            exhausted = False
                            break
            if not start.status:
                raise AppError("the application did not call start_response")
            for item in chunks:
                if type(item) is not bytes:
                    raise AppError(f"response body item is {type(item).__name__}, not bytes")
            if type(first) is not bytes:
                raise AppError(f"response body item is {type(first).__name__}, not bytes")
        except Exception as exc:
            self._close_result(result)
            self._app_error(conn, st, exc, environ)
            return
        if start.written:
            chunks = start.written + chunks
        if first:
            chunks.append(first)
        status = start.status
        code = _CODES.get(status)
        if code is None:
            code = int(status[:3])
            if len(_CODES) < 256:
                _CODES[status] = code
                if code >= 200 and code != 204 and code != 304:
                    _BODY_INDEX[status] = code // 100 * BUCKETS
        resp = _Response(result, iterator, code)
        st.response = resp
        self._send_head(conn, st, request, start, resp, chunks, exhausted)

    def _send_head(
        self,
        conn: Connection,
        st: _State,
        request: Request,
        start: StartResponse,
        resp: _Response,
        chunks: list[bytes],
        exhausted: bool,
    ) -> None:
        """Choose the framing, write the head with the body at hand, go on pulling.

        Framing: the application's ``Content-Length`` if it set one; else the summed
        length when the whole body is already known (a list, or an iterator that
        ended); else the file size for a ``wsgi.file_wrapper`` over a real file; else
        chunked on HTTP/1.1 and close-delimited on HTTP/1.0. HEAD, 204 and 304 carry
        no body (the iterable is closed unread).
        """
        status = resp.status
        # After the client's EOF, requests it completed before are still answered:
        # close only after the last of them.
        keep_alive = (
            request.keep_alive
            and not start.close
            and not st.draining
            and not (st.eof and not st.events and not st.backlog)
        )
        result = resp.result
        length = start.content_length
        if request.method == "HEAD" or status == 204 or status == 304:
            resp.mode = NO_BODY
            extra = b"" if length is None or status == 204 else b"Content-Length: %d\r\n" % length
        else:
            if length is None:
                if exhausted:
                    length = sum(map(len, chunks))
                elif isinstance(result, FileWrapper):
                    length = self._file_length(result)
            if length is not None:
                resp.mode = LENGTH
                resp.remaining = length
                extra = _LENGTH_LINES.get(length) or _length_line(length)
            elif request.version == "1.1":
                resp.mode = CHUNKED
                extra = b"Transfer-Encoding: chunked\r\n"
            else:
                resp.mode = UNTIL_CLOSE
                keep_alive = False
                extra = b""
        resp.close = not keep_alive
        if not keep_alive:
            extra += b"Connection: close\r\n"
        elif request.version == "1.0":
            extra += b"Connection: keep-alive\r\n"
        start.headers_sent = True
        head = self.encoder.head(start.status, start.headers, extra)
        if resp.mode == NO_BODY:
            conn.write(head)
            self._finish(conn, st)
            return
        if (
            isinstance(result, FileWrapper)
            and not chunks
            and resp.mode == LENGTH
            and self._sendfile(conn, resp, head, result)
        ):
            self._finish(conn, st)
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not data:
            conn.write(head)
        elif resp.mode == LENGTH and len(data) <= resp.remaining:  # _frame, inline
            resp.remaining -= len(data)
            resp.sent = len(data)
            conn.write(head + data)
        else:
            conn.write(head + self._frame(resp, data))
        if exhausted:
            self._finish(conn, st)
        else:
            self._pump(conn, st)

    @staticmethod
    def _file_length(wrapper: FileWrapper) -> int | None:
        """Bytes a file wrapper would send from its position, if it is a real file."""
        f = wrapper.filelike
        try:
            fd = f.fileno()
            pos = f.tell()
            size = os.fstat(fd).st_size
        except (AttributeError, OSError, ValueError):
            return None
        return max(size - pos, 0)

    def _sendfile(self, conn: Connection, resp: _Response, head: bytes, wrapper: FileWrapper) -> bool:
        """Send the head, then the file with ``conn.sendfile``; False if it has no fd."""
        f = wrapper.filelike
        try:
            offset = f.tell()
            f.fileno()
        except (AttributeError, OSError, ValueError):
            return False
        conn.write(head)
        if resp.remaining:
            conn.sendfile(f, offset, resp.remaining)
        resp.sent = resp.remaining
        resp.remaining = 0
        return True

    def _frame(self, resp: _Response, data: bytes) -> bytes:
        """Frame ``data`` for the response's body mode, enforcing Content-Length."""
        mode = resp.mode
        if mode == CHUNKED:
            resp.sent += len(data)
            return b"%x\r\n%b\r\n" % (len(data), data)
        if mode == LENGTH:
            if len(data) > resp.remaining:
                log.warning("application sent more than its Content-Length; truncated")
                data = data[: resp.remaining]
                resp.close = True
            resp.remaining -= len(data)
        resp.sent += len(data)
        return data

    def _pump(self, conn: Connection, st: _State) -> None:
        """Pull the body iterator while the connection takes more; finish at its end."""
        resp = st.response
        if resp is None:
            return
        write = conn.write
        frame = self._frame
        nxt = resp.iterator.__next__
        try:
            with self.worker.blocking():
                while not st.write_paused:
                    try:
                        data = nxt()
                    except StopIteration:
                        break
                    if type(data) is not bytes:
                        raise AppError(f"response body item is {type(data).__name__}, not bytes")
                    if data:
                        write(frame(resp, data))
                        if st.phase != RESPONDING:
                            return  # the connection went away under us
                else:
                    return  # paused: resume_writing continues
        except Exception:
            log.exception("application failed while streaming its response")
            st.response = None
            self._close_result(resp.result)
            st.phase = CLOSED
            self._disarm(st)
            conn.abort()
            return
        self._finish(conn, st)

    def _finish(self, conn: Connection, st: _State) -> None:
        """The body is fully handed over: frame its end, log, go on or close."""
        resp = st.response
        request = st.request
        if resp is None or request is None:
            return  # the connection was lost while the head and body were written
        st.response = None
        if resp.mode == CHUNKED:
            conn.write(CHUNKED_END)
        elif resp.mode == LENGTH and resp.remaining:
            log.warning("application sent %d bytes less than its Content-Length", resp.remaining)
            resp.close = True
        if type(resp.result) is not list:
            self._close_result(resp.result)
        elapsed = perf_counter() - st.started
        self.response_counts[resp.status // 100 * BUCKETS + bisect_left(DURATION_BOUNDS, elapsed)] += 1
        self.response_seconds += elapsed
        if self.access is not None:
            self.access.log(st.base["REMOTE_ADDR"], request, resp.status, resp.sent, st.started)
        if st.body is not EMPTY_BODY:
            st.body.close()
            st.body = EMPTY_BODY
        st.request = None
        if st.phase != RESPONDING:
            return
        if resp.close:
            self._close(conn, st)
            return
        st.phase = IDLE
        if not st.looping:  # else the loop in _process goes on with the next event
            self._process(conn, st)

    def _app_error(self, conn: Connection, st: _State, exc: Exception, environ: dict[str, Any]) -> None:
        log.error(
            "error in WSGI application for %s %s",
            environ.get("REQUEST_METHOD"),
            environ.get("RAW_URI"),
            exc_info=exc,
        )
        st.response = None
        self._fail(conn, st, InternalServerError(str(exc)))

    def _close_result(self, result: Iterable[bytes]) -> None:
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            with self.worker.blocking():
                close()
        except Exception:
            log.exception("error closing the WSGI response iterable")

    # -- PROXY protocol ------------------------------------------------------------------

    def _proxy_header(self, conn: Connection, st: _State, data: bytes) -> bytes:
        """Consume the PROXY header; return the bytes after it (b"" if incomplete)."""
        buf = st.proxy_buf
        assert buf is not None
        buf += data
        try:
            # The buffer itself, not a copy: a header trickled in one byte per read
            # costs each read its own bytes (a copy per read would be quadratic).
            parsed = parse_proxy_header(buf)
        except HTTPError as exc:
            st.proxy_buf = None
            self._fail(conn, st, exc)
            return b""
        if parsed is None:
            return b""
        consumed, src, dst = parsed
        st.proxy_buf = None
        base = st.base
        if src is not None:
            base["REMOTE_ADDR"], base["REMOTE_PORT"] = src[0], str(src[1])
        if dst is not None:
            base["SERVER_NAME"], base["SERVER_PORT"] = dst[0], str(dst[1])
        return bytes(buf[consumed:])

    # -- timers --------------------------------------------------------------------------

    def _arm(self, conn: Connection, st: _State, kind: int, delay: float) -> None:
        # The phase timer (head, body, keep-alive) is the connection's own deadline:
        # re-armed on every request without allocating (mioreactor.workers.core.timers.Deadline).
        st.timer_kind = kind
        st.timer = conn.rearm(delay, _fire_phase)

    def _arm_send(self, conn: Connection, st: _State) -> None:
        if st.send_timer is not None:
            st.send_timer.cancel()
        st.send_mark = conn.write_buffer_size
        st.send_timer = conn.call_later(self.config.send_timeout, partial(_fire_timer, conn, T_SEND))

    def _on_send_timer(self, conn: Connection, st: _State) -> None:
        """No write progress for ``send_timeout``: abort, in whatever phase."""
        st.send_timer = None
        if not st.write_paused:
            return
        size = conn.write_buffer_size
        if 0 < size < st.send_mark:  # the client reads, slowly: wait another period
            self._arm_send(conn, st)
            return
        log.info("%r: client stopped reading; aborting", conn.peer)
        st.phase = CLOSED
        self._disarm(st)
        conn.abort()

    @staticmethod
    def _disarm(st: _State) -> None:
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        st.timer_kind = -1

    def on_timer(self, conn: Connection, kind: int) -> None:
        """A connection timer fired (called through ``conn.handler``)."""
        if kind == T_SEND:
            self._on_send_timer(conn, conn.context)
            return
        self._on_timer(conn, kind)

    def _on_timer(self, conn: Connection, kind: int) -> None:
        st: _State = conn.context
        if st.timer_kind != kind or st.phase == CLOSED:
            return
        st.timer = None
        st.timer_kind = -1
        if kind == T_BODY:
            idle = time.monotonic() - st.last_rx
            if idle < self.config.body_timeout:  # progress since armed: wait the rest
                st.timer_kind = T_BODY
                st.timer = conn.rearm(self.config.body_timeout - idle, _fire_phase)
                return
            self._fail(conn, st, RequestTimeout("request body stalled"))
        elif kind == T_HEADER and _in_head(st):
            self._fail(conn, st, RequestTimeout("request head incomplete"))
        else:
            self._close(conn, st)


def _in_head(st: _State) -> bool:
    """A request head has begun arriving on this connection and is not complete."""
    proto = st.proto
    return proto is not None and proto.in_head


def _fire_phase(conn: Connection) -> None:
    """The connection's phase deadline fell due: run it for the phase armed last."""
    st = conn.context
    kind = st.timer_kind
    if kind >= 0:
        _fire_timer(conn, kind)


def _fire_timer(conn: Connection, kind: int) -> None:
    """Run a timer on the handler of whichever worker serves ``conn`` now.

    The worker that fires a timer sets ``conn.handler`` to its own handler first, so
    a handler instance is only ever used by its own thread.
    """
    handler = conn.handler
    assert isinstance(handler, HttpHandler)
    handler.on_timer(conn, kind)
