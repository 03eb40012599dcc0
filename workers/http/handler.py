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

Where the rest lives: ``state.py`` (the per-connection ``_State``, phases, timer
kinds), ``respond.py`` (``Responder``: the application's result to bytes, framing,
lazy pulling), ``deadlines.py`` (``Deadlines``: the phase and send timers), and beside
this file the two ways a head is read, ``express.py`` (the common request, whole, in
one regular expression) and ``protocol.py`` (llhttp, everything else).

Application failures: before the head is sent, a 500 and a close; after, an abort.
Either way the traceback goes to the ``mioreactor.http`` logger.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

from ..core.handler import Connection, Handler, HandlerFactory, WorkerContext
from ..ops.metrics import BUCKETS, DURATION_BOUNDS, STATUS_CLASSES
from .accesslog import AccessLog
from .body import EMPTY_BODY, InputBody
from .deadlines import Deadlines, fire_phase
from .errors import HTTPError
from .express import CLOSE as _X_CLOSE
from .express import match_next as express_next
from .limits import HttpConfig
from .protocol import END_OF_MESSAGE, HttpProtocol, Request
from .proxy import take_proxy_header
from .respond import Responder
from .response import CONTINUE_RESPONSE, ResponseEncoder
from .state import (
    _BODY_INDEX,
    _LENGTH_LINES,
    _PROTO_POOL,
    BODY,
    CLOSED,
    IDLE,
    RESPONDING,
    T_BODY,
    T_HEADER,
    T_KEEPALIVE,
    _in_head,
    _length_line,
    _State,
)
from .wsgi import StartResponse, base_environ, request_environ

__all__ = ["HttpHandler", "make_http_handler_factory"]

log = logging.getLogger("mioreactor.http")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

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


class HttpHandler(Deadlines, Responder):
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
        self._call: Callable[
            [WSGIApp, dict[str, Any], Callable[..., Any], float | None], Iterable[bytes]
        ] = (
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
        # The express lane (``mioreactor.workers.http.express``), inline: whole bodiless
        # heads on a connection at rest (no parser held, nothing queued) are served
        # here, in this one frame: the common read of one head, and a pipelined read
        # head after head, answered in one write. The first head the lane declines
        # (a body, an odd field, a head cut by the read's end) and all after it go the
        # general way (``_receive``), in order.
        if not (st.express and st.proto is None and not st.phase):
            self._receive(conn, st, data)
            return
        text = data.decode("latin-1")
        found = express_next(text, 0, st.base, self._express_max, self._max_headers)
        if found is None:
            self._receive(conn, st, data)
            return
        size = len(text)
        out: list[bytes] = []  # the answers so far: one write for the whole read
        # Two clock reads a request (docs/design.md, "Clock reads"): this one before the
        # app, and ``now`` after it, which is also the next pipelined request's start.
        started = monotonic()
        while True:
            environ, extra, end = found  # its wsgi.input is the base's EMPTY_BODY
            st.fresh = False
            st.environ = environ  # for the watchdog's describe()
            st.timer_kind = -1  # the phase deadline, if it falls due meanwhile, does nothing
            start = st.start  # reset for this request (as _begin_start, inline)
            start.status = ""
            start.headers_sent = False
            if start.written:
                start.written = []
            try:
                result = self._call(self.app, environ, st.start_call, started)
            except Exception as exc:
                if out:
                    conn.write(b"".join(out))
                self._express_request(st, environ, extra, started)
                self._app_error(conn, st, exc, environ)
                return
            # The common result, framed here: one ``bytes`` in a list, a validated status
            # that allows a body, a Content-Length (if any) that matches, not HEAD.
            if not (
                type(result) is list
                and len(result) == 1
                and type(body := result[0]) is bytes
                and (index := _BODY_INDEX.get(status := start.status)) is not None
                and not start.written
                and (start.content_length is None or start.content_length == len(body))
                and environ["REQUEST_METHOD"] != "HEAD"
            ):
                # Any other result: the general response path, with a Request made for
                # it, after the answers before it; what follows it waits its turn.
                if out:
                    conn.write(b"".join(out))
                request = self._express_request(st, environ, extra, started)
                self._respond(conn, st, request, environ, start, result)
                if end < size:
                    self._receive(conn, st, data[end:])
                return
            if start.close:
                extra = _X_CLOSE
            length = len(body)
            # ResponseEncoder.whole, inline (this worker's encoder; one frame less)
            encoder = self.encoder
            line = encoder._status_lines.get(status) or encoder.status_line(status)
            date = encoder._date
            now = monotonic()  # duration, Date, keep-alive deadline
            if now >= date.mono_until:
                date.line()
            out.append(
                b"".join((
                    line, date._line, encoder._server, start.headers,
                    _LENGTH_LINES.get(length) or _length_line(length), extra, b"\r\n", body,
                ))
            )
            elapsed = now - started
            self.response_counts[index + bisect_left(DURATION_BOUNDS, elapsed)] += 1
            self.response_seconds += elapsed
            st.environ = None
            if end == size or extra is _X_CLOSE:
                break
            found = express_next(text, end, st.base, self._express_max, self._max_headers)
            if found is None:
                break
            started = now
        conn.write(out[0] if len(out) == 1 else b"".join(out))
        if extra is _X_CLOSE or st.phase:  # closing; or the write failed (CLOSED)
            self._close(conn, st)
        elif end < size:  # a head the lane declined, or one cut by the read's end
            self._receive(conn, st, data[end:])
        elif st.write_paused:
            st.timer = None  # the send timer governs; resume_writing goes on
        else:
            st.timer_kind = T_KEEPALIVE
            st.timer = conn.rearm(self._keepalive, fire_phase, now)

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
        proto = st.proto
        if proto is not None:  # not at rest (else the pool has it): the cycle goes now
            st.proto = None
            proto.discard()

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
                    st.started = monotonic()
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
        st.started = monotonic()
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
                st.timer = conn.rearm(self.config.keepalive_timeout, fire_phase)
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
            elapsed = monotonic() - st.started
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
            result = self._call(self.app, environ, st.start_call, None)
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
        self, app: WSGIApp, environ: dict[str, Any], start: Callable[..., Any],
        now: float | None = None,
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

    # -- PROXY protocol ------------------------------------------------------------------

    def _proxy_header(self, conn: Connection, st: _State, data: bytes) -> bytes:
        """Consume the PROXY header; return the bytes after it (b"" if incomplete)."""
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
        base = st.base
        if src is not None:
            base["REMOTE_ADDR"], base["REMOTE_PORT"] = src[0], str(src[1])
        if dst is not None:
            base["SERVER_NAME"], base["SERVER_PORT"] = dst[0], str(dst[1])
        return rest
