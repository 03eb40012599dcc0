"""Server: the embedding API (start, stop, stats), and ``serve`` for scripts.

::

    with Server(app, bind="127.0.0.1:0", workers=4) as server:
        requests.get(server.url)

``start()`` returns once every listener is bound and every thread runs; ``stop()``
returns only when every thread has ended. See docs/embedding.md.
"""

from __future__ import annotations

import logging
import signal
import ssl as _ssl
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TypeAlias

from ...reactor import Poll, available_backends
from ..asgi import AsgiServer
from ..core.acceptor import Acceptor, BoundListener
from ..core.handler import HandlerFactory
from ..core.scheduler import RunSlots, default_slots
from ..core.worker import Dispatch, Worker
from ..ops import gcstats
from ..ops.metrics import request_counters, websocket_counters
from ..ops.metrics_server import Source, check_metrics_bind, metrics_app, single_process_source
from ..ops.watchdog import Watchdog
from ..tls.context import DEFAULT_HANDSHAKE_TIMEOUT, TlsConfig
from ..tls.listener import TlsListener
from .binds import BindError, open_listeners, parse_bind
from .interface import INTERFACES, detect_interface

TlsSource: TypeAlias = "_ssl.SSLContext | TlsConfig"
"""What makes a listener speak TLS: a server ``SSLContext`` or ``TlsConfig`` settings."""

_DEFAULT: Any = object()  # a bind with no TLS choice of its own: the server's rule

__all__ = ["MetricsServer", "Server", "serve"]

log = logging.getLogger("mioreactor")

_OVERLOADED_HTTP = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 19\r\nRetry-After: 1\r\n\r\nserver overloaded\r\n"
)


def _check_arguments(
    app: Any, handler: Any, *, http: Any, workers: int, backlog: int, max_connections: int,
    graceful_timeout: float, run_slots: int | None, handoff_after: float, timeout: float,
    backend: str | None, tls_handshake_timeout: float | None,
) -> None:
    """What ``reactor serve`` checks, checked for ``Server(...)`` too.

    Raises:
        TypeError: an app or handler factory that is not callable, an ``http`` that
            is not an ``HttpConfig``.
        ValueError: a count below 1, a negative time, a backend this kernel lacks.
    """
    from ..http import HttpConfig

    if app is not None and not callable(app):
        shown = f"{type(app).__name__} {app!r}"[:80]
        raise TypeError(f"app must be a WSGI application (a callable taking environ and "
                        f"start_response), got {shown}")
    if handler is not None and not callable(handler):
        raise TypeError(f"handler must be a handler factory (factory(worker) -> Handler), "
                        f"got {type(handler).__name__}")
    if app is not None and http is not None and not isinstance(http, HttpConfig):
        raise TypeError(f"http must be an HttpConfig, got {type(http).__name__}")
    counts = {"workers": workers, "backlog": backlog, "max_connections": max_connections}
    if run_slots is not None:
        counts["run_slots"] = run_slots
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"{name} must be an int, got {type(count).__name__}")
        if count < 1:
            raise ValueError(f"{name} must be at least 1, got {count}")
    times = {"graceful_timeout": graceful_timeout, "handoff_after": handoff_after,
             "timeout": timeout}
    for name, seconds in times.items():
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise TypeError(f"{name} must be a number of seconds, got {type(seconds).__name__}")
        if not seconds >= 0:  # also NaN
            raise ValueError(f"{name} must not be negative, got {seconds}")
    if tls_handshake_timeout is not None and not tls_handshake_timeout > 0:
        raise ValueError(f"tls_handshake_timeout must be positive, got {tls_handshake_timeout}")
    if backend is not None and backend not in available_backends():
        raise ValueError(f"backend {backend!r} is not available on this system; it offers "
                         f"{', '.join(available_backends())}")


class Server:
    """A running mioreactor server: one acceptor thread and N worker threads.

    Args:
        app: a WSGI application (served by the HTTP/1.1 handler), or None with
            ``handler``.
        bind: one spec or several: ``HOST:PORT`` (port 0 picks one), ``[::1]:PORT``,
            ``unix:PATH``, ``fd://N``, each optionally prefixed ``https://`` or
            ``http://``; or a ``(spec, tls)`` pair giving that bind its own TLS
            (an ``SSLContext``, a ``TlsConfig``, or None for plain).
        workers: worker threads.
        handler: a handler factory for a raw protocol (``factory(worker) -> Handler``);
            exclusive with ``app``.
        http: an ``HttpConfig`` for the HTTP handler (limits, timeouts, logs).
        backlog: the listen backlog asked of the kernel.
        max_connections: open connections at most; beyond, clients wait in the backlog.
        graceful_timeout: seconds ``stop()`` lets in-flight work finish.
        run_slots: workers that may run Python code at once (default: 1 with a GIL).
        handoff_after: seconds a blocking app call keeps its run slot while others wait.
        self_poll: with one run slot, let the hot worker poll for the next events itself
            when its batch is done, instead of waiting for the acceptor to hand them
            over (docs/design.md, "The hot worker polls"). On by default.
        backend: force a reactor backend (``epoll``, ``kqueue``, ``fallback``).
        reuse_port: set SO_REUSEPORT on TCP listeners (for several processes).
        unix_mode: permission bits for Unix socket files.
        proxy_protocol: expect a PROXY protocol header on every connection.
        listeners: already-open ``BoundListener``s to serve (besides ``bind``).
        metrics_bind: ``HOST:PORT`` to serve ``/metrics`` on (Prometheus text format,
            docs/metrics.md), on threads of its own; None serves none.
        timeout: seconds a request may stay inside the app before it is logged, with
            the stack of its thread, and counted in ``stats()["stuck_requests"]``
            (``mioreactor.workers.ops.watchdog``); it is left to finish. 0 turns the watchdog off.
        ssl: TLS for every TCP bind without a choice of its own (docs/tls.md): a
            server ``ssl.SSLContext`` or a ``mioreactor.workers.tls.context.TlsConfig``. Binds written
            ``http://...`` stay plain; ``https://...`` binds (Unix ones too) need it.
        tls_handshake_timeout: seconds a TLS handshake may take (default: the HTTP
            header timeout, or ``DEFAULT_HANDSHAKE_TIMEOUT`` for a raw handler).
        interface: what ``app`` is: ``wsgi``, ``asgi`` (ASGI 3, or an ASGI 2 class),
            ``handler`` (a handler factory, as ``handler=``), or ``auto`` to tell
            them apart (``mioreactor.workers.server.interface``). See docs/asgi.md.
        lifespan: the ASGI lifespan protocol: ``auto``, ``on`` or ``off``.
        loop: the ASGI event loop: ``auto`` or ``asyncio``.
        limit_concurrency: open connections beyond which a new one is answered
            ``503 Service Unavailable`` and closed at once (uvicorn's option; a raw
            handler's or a TLS listener's is just closed); None: no limit, new
            connections wait in the backlog past ``max_connections``.
        ws: WebSocket for ASGI apps (docs/asgi.md): ``auto`` (on) or ``none`` (an
            upgrade request reaches the app as a plain ``http`` request).
        ws_max_size: the largest WebSocket message in bytes, after decompression.
        ws_ping_interval: seconds between keep-alive pings (0 or None: none).
        ws_ping_timeout: seconds a pong may take before a 1011 close (0 or None: never).
        ws_per_message_deflate: offer permessage-deflate (RFC 7692).
    """

    def __init__(
        self,
        app: Callable[..., Any] | None = None,
        *,
        bind: str | Sequence[str | tuple[str, TlsSource | None]] = "127.0.0.1:8080",
        workers: int = 4,
        handler: HandlerFactory | None = None,
        http: Any = None,
        backlog: int = 1024,
        max_connections: int = 10000,
        graceful_timeout: float = 30.0,
        run_slots: int | None = None,
        handoff_after: float = 0.002,
        self_poll: bool = True,
        backend: str | None = None,
        reuse_port: bool = False,
        unix_mode: int | None = None,
        proxy_protocol: bool = False,
        listeners: Sequence[BoundListener] = (),
        use_systemd: bool = False,
        metrics_bind: str | None = None,
        timeout: float = 0.0,
        ssl: TlsSource | None = None,
        tls_handshake_timeout: float | None = None,
        interface: str = "auto",
        lifespan: str = "auto",
        loop: str = "auto",
        limit_concurrency: int | None = None,
        ws: str = "auto",
        ws_max_size: int = 16 * 1024 * 1024,
        ws_ping_interval: float | None = 20.0,
        ws_ping_timeout: float | None = 20.0,
        ws_per_message_deflate: bool = True,
    ) -> None:
        if interface not in INTERFACES:
            raise ValueError(f"interface must be one of {', '.join(INTERFACES)}, got {interface!r}")
        if app is not None and handler is None:
            kind = detect_interface(app) if interface == "auto" else interface
            if kind == "handler":
                app, handler = None, app
        else:
            kind = "handler" if handler is not None else "wsgi"
        self.interface = kind
        self._asgi: AsgiServer | None = None
        if (app is None) == (handler is None):
            raise ValueError("give exactly one of app (a WSGI app) or handler (a factory)")
        _check_arguments(
            app, handler, http=http, workers=workers, backlog=backlog,
            max_connections=max_connections, graceful_timeout=graceful_timeout,
            run_slots=run_slots, handoff_after=handoff_after, timeout=timeout,
            backend=backend, tls_handshake_timeout=tls_handshake_timeout,
        )
        self.app = app
        binds = [bind] if isinstance(bind, str) else list(bind)
        self.binds: list[str] = []
        self._bind_tls: list[Any] = []
        for item in binds:
            if isinstance(item, tuple):
                self.binds.append(item[0])
                self._bind_tls.append(item[1])
            else:
                self.binds.append(item)
                self._bind_tls.append(_DEFAULT)
        for spec in self.binds:
            parse_bind(spec)  # BindError now, naming the problem, rather than at start()
        self.ssl = ssl
        self.workers_count = workers
        self.backlog = backlog
        self.max_connections = max_connections
        if limit_concurrency is not None and limit_concurrency < 1:
            raise ValueError(f"limit_concurrency must be at least 1, got {limit_concurrency}")
        self.limit_concurrency = limit_concurrency
        self.graceful_timeout = graceful_timeout
        self.run_slots = run_slots if run_slots is not None else default_slots()
        self.handoff_after = handoff_after
        self.self_poll = self_poll
        self.backend = backend
        self.reuse_port = reuse_port
        self.unix_mode = unix_mode
        self.proxy_protocol = proxy_protocol
        self.use_systemd = use_systemd
        self.timeout = timeout
        self._watchdog: Watchdog | None = None
        self._extra_listeners = list(listeners)
        self.metrics_bind = metrics_bind
        self.metrics: MetricsServer | None = None
        if metrics_bind is not None:
            check_metrics_bind(metrics_bind)
        if handler is None and kind == "asgi":
            from ..http import HttpConfig

            self.http = http if http is not None else HttpConfig()
            from ..asgi import WS_MODES, WsConfig

            if ws not in WS_MODES:
                raise ValueError(f"ws must be one of {', '.join(WS_MODES)}, got {ws!r}")
            wscfg = WsConfig(enabled=ws != "none", max_size=ws_max_size,
                             ping_interval=ws_ping_interval, ping_timeout=ws_ping_timeout,
                             per_message_deflate=ws_per_message_deflate)
            self._asgi = AsgiServer(app, self.http, lifespan=lifespan, loop=loop, ws=wscfg)
            self.factory: HandlerFactory = self._asgi.factory
            self.overload_response = _OVERLOADED_HTTP
        elif handler is None:
            from ..http import HttpConfig, make_http_handler_factory

            self.http = http if http is not None else HttpConfig()
            if self.http.root_path and app is not None:
                from ..http.wsgi import mounted

                app = mounted(app, self.http.root_path)
            self.factory = make_http_handler_factory(app, self.http)
            self.overload_response = _OVERLOADED_HTTP
        else:
            self.http = http
            self.factory = handler
            self.overload_response = b""
        self._poll: Poll | None = None
        self._acceptor: Acceptor | None = None
        self._workers: list[Worker] = []
        self._listeners: list[BoundListener] = []
        self._slots: RunSlots | None = None
        self._dispatch: Dispatch | None = None
        self._started = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.started_at = 0.0
        self._lq_cache: tuple[float, dict[str, int | None]] = (-1e9, {})
        if tls_handshake_timeout is None:
            tls_handshake_timeout = (
                self.http.header_timeout if self.http is not None else DEFAULT_HANDSHAKE_TIMEOUT
            )
        self.tls_handshake_timeout = tls_handshake_timeout
        self._tls: list[TlsListener] = []

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> Server:
        """Bind, start every thread, and return once the server accepts connections.

        Raises:
            BindError: a bind spec that is malformed or cannot be bound.
            Exception: whatever the handler factory raised on a worker.
        """
        with self._lock:
            if self._started:
                raise RuntimeError("this Server was started already")
            self._started = True
        gcstats.install()  # collector pauses, for stats() and /metrics
        if self._asgi is not None:
            self._asgi.startup()  # LifespanError: nothing is bound or running yet
        tls_for = self._make_tls()  # before binding: bad TLS settings leave nothing open
        listeners = list(self._extra_listeners)
        opened = open_listeners(
            self.binds,
            backlog=self.backlog,
            reuse_port=self.reuse_port,
            unix_mode=self.unix_mode,
            proxy_protocol=self.proxy_protocol,
            use_systemd=self.use_systemd,
        )
        listeners += opened
        try:
            self._attach_tls(listeners, opened, tls_for)
        except BindError:
            for bl in opened:
                bl.listener.close()
            raise
        self._listeners = listeners
        poll = Poll(self.backend)
        self._poll = poll
        slots = RunSlots(min(self.run_slots, self.workers_count), self.handoff_after)
        self._slots = slots
        acceptor_ref: list[Acceptor] = []

        def on_close() -> None:
            if acceptor_ref:
                acceptor_ref[0].connection_closed()

        dispatch = Dispatch(poll.registry, slots, on_close, poll if self.self_poll else None)
        self._dispatch = dispatch
        self._workers = [Worker(i, self.factory, dispatch) for i in range(self.workers_count)]
        for w in self._workers:
            w.start()
        for w in self._workers:
            w.started.wait()
        failed = next((w.start_error for w in self._workers if w.start_error), None)
        if failed is not None:
            dispatch.stop_workers(len(self._workers))
            for w in self._workers:
                w.join()
            for bl in listeners:
                bl.listener.close()
            poll.close()
            raise failed
        self._acceptor = Acceptor(
            poll,
            listeners,
            self._workers,
            dispatch,
            max_connections=self.max_connections,
            graceful_timeout=self.graceful_timeout,
            overload_response=self.overload_response,
            limit_concurrency=self.limit_concurrency or 0,
        )
        acceptor_ref.append(self._acceptor)
        self._acceptor.start()
        if self.timeout > 0:
            self._watchdog = Watchdog(self._workers, self.timeout)
            self._watchdog.start()
        self.started_at = time.time()
        log.info(
            "serving on %s with %d worker(s), %d run slot(s), backend %s",
            ", ".join(bl.describe() for bl in listeners),
            self.workers_count,
            self.run_slots,
            poll.backend_name,
        )
        if self.metrics_bind is not None:
            self._start_metrics(self.metrics_bind)
        return self

    # -- TLS ------------------------------------------------------------------------------
    def _make_tls(self) -> dict[int, TlsListener]:
        """One ``TlsListener`` per distinct TLS source (their contexts built now).

        Raises:
            TlsError: settings that cannot make a context (one line).
        """
        made: dict[int, TlsListener] = {}
        for source in [self.ssl, *self._bind_tls]:
            if source is None or source is _DEFAULT or id(source) in made:
                continue
            made[id(source)] = TlsListener(
                source, http=self.app is not None, handshake_timeout=self.tls_handshake_timeout
            )
        self._tls = list(made.values())
        return made

    def _attach_tls(
        self, listeners: list[BoundListener], opened: list[BoundListener],
        tls_for: dict[int, TlsListener],
    ) -> None:
        """Give each listener its ``TlsListener`` by the rule in the class docstring."""
        mine = opened[len(opened) - len(self.binds) :]
        own = dict(zip(map(id, mine), self._bind_tls, strict=True))
        default = tls_for.get(id(self.ssl)) if self.ssl is not None else None
        for bl in listeners:
            if bl.tls is not None:
                continue  # an extra listener that came with its own
            choice = own.get(id(bl), _DEFAULT)
            if choice is not _DEFAULT:
                bl.tls = tls_for[id(choice)] if choice is not None else None
            elif bl.scheme == "https":
                if default is None:
                    raise BindError(f"bind https://{bl.describe()}: TLS needs a certificate "
                                    "(--certfile, or ssl= in Server)")
                bl.tls = default
            elif bl.scheme != "http" and bl.kind == "tcp":
                bl.tls = default

    def reload_tls(self) -> int:
        """Read every TLS listener's certificate files again (after a renewal).

        New connections get the new certificate; open ones keep their session. A
        listener given a ready ``SSLContext`` is left alone (reload its files
        yourself with ``load_cert_chain``). Returns how many listeners reloaded.

        Raises:
            TlsError: a file cannot be read or does not match; that listener and the
                ones after it keep the certificate they had.
        """
        return sum(1 for tls in self._tls if tls.reload())

    def stop(self, timeout: float | None = None, idle_grace: float = 0.0) -> None:
        """Stop gracefully and return when every thread has ended.

        Stops accepting (connections already queued are accepted and served), lets
        in-flight requests finish for up to ``timeout`` (default: the
        ``graceful_timeout``), closes idle keep-alive connections, then closes what is
        left and joins every thread. Idempotent.

        With ``idle_grace`` (a process being replaced: nobody waits for it), an idle
        keep-alive connection of the HTTP handler is not closed at once: its next
        request is answered with ``Connection: close``, and it closes after
        ``idle_grace`` seconds of silence (at most the keep-alive timeout). That
        spares clients the race of a request sent just as the server closes.
        """
        acceptor = self._acceptor
        if acceptor is None or self._stopped.is_set():
            self._stopped.set()
            return
        if timeout is not None:
            acceptor.graceful_timeout = timeout
        for w in self._workers:
            handler = w.handler
            if handler is not None and hasattr(handler, "drain_grace"):
                handler.drain_grace = idle_grace  # read by its worker after DRAIN
        acceptor.request_stop()
        acceptor.join()
        for w in self._workers:
            w.join()
        if self._asgi is not None:
            self._asgi.shutdown()
        if self.metrics is not None:
            self.metrics.stop()
        if self._watchdog is not None:
            self._watchdog.stop()
        self._stopped.set()
        log.info("stopped")

    def _start_metrics(self, bind: str) -> None:
        """Serve ``/metrics`` for this server; if it cannot bind, stop and re-raise."""
        try:
            self.metrics = MetricsServer(bind, single_process_source(self.stats)).start()
        except BaseException:
            self.metrics = None
            self.stop(timeout=0)
            raise

    def __enter__(self) -> Server:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, ready: Callable[[Server], object] | None = None) -> None:
        """Start (if needed) and block until stopped; SIGINT/SIGTERM stop gracefully
        when called on the main thread.

        Args:
            ready: called once the server is started and the signal handlers are in
                place. Announce the server here ("serving on ..."), not before the call:
                a process manager that signals as soon as it reads the announcement
                would otherwise meet Python's default handlers (a KeyboardInterrupt
                traceback for SIGINT, death by SIGTERM) instead of a graceful stop.
        """
        if not self._started:
            self.start()
        restore: list[tuple[signal.Signals, Any]] = []
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: FrameType | None) -> None:
                log.info("signal %s: stopping gracefully", signal.Signals(signum).name)
                threading.Thread(target=self.stop, name="reactor-stopper", daemon=True).start()

            for signum in (signal.SIGINT, signal.SIGTERM):
                restore.append((signum, signal.signal(signum, on_signal)))
        try:
            if ready is not None:
                ready(self)
            while not self._stopped.wait(0.5):
                pass
        finally:
            for which, old in restore:
                signal.signal(which, old)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; True if it has."""
        return self._stopped.wait(timeout)

    # -- what it serves ----------------------------------------------------------------
    @property
    def listeners(self) -> list[BoundListener]:
        return list(self._listeners)

    @property
    def address(self) -> Any:
        """The first listener's address: ``(host, port)`` for TCP, the path for Unix."""
        if not self._listeners:
            raise RuntimeError("the server is not started")
        return self._listeners[0].address

    @property
    def addresses(self) -> list[Any]:
        return [bl.address for bl in self._listeners]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (``https://`` with TLS) of the first TCP listener."""
        for bl in self._listeners:
            if bl.kind == "tcp":
                host, port = bl.address[0], bl.address[1]
                if ":" in host:
                    host = f"[{host}]"
                scheme = "https" if bl.tls is not None else "http"
                return f"{scheme}://{host}:{port}"
        raise RuntimeError("the server has no TCP listener")

    @property
    def backend_name(self) -> str:
        return self._poll.backend_name if self._poll else ""

    def stats(self, *, listen_queue: bool = True) -> dict[str, Any]:
        """Counters for operators and tests; a consistent-enough snapshot (no locks).

        ``listen_queue=False`` leaves the listen-queue figure out (an empty dict): on
        Linux it scans ``/proc/net/tcp``, and a supervisor that reads the whole port
        itself asks its children without it (docs/metrics.md).

        Keys: accepted, active, closed, shed, paused_at_max, accept_errors (by errno
        name), handoffs, handed_back (listener and waker events the hot worker met
        while polling for itself and passed to the acceptor), workers (per worker:
        state, batches, polled: the batches it polled for itself, ...), and
        listen_queue (per TCP listener, where Linux tells: connections waiting in
        the kernel backlog), requests (HTTP responses by status class, ``"2xx": n``)
        and request_duration (a histogram: ``bounds``, per-bucket ``buckets``, ``sum``,
        ``count``; docs/metrics.md), tls_handshakes (completed), tls_handshake_failed
        (garbage, a protocol or certificate refused, a timeout, a client gone
        mid-handshake), tls_plain_http (plain HTTP requests answered 400 on a TLS
        listener), tls_reloads (certificate reloads), gc (the process's cyclic collector
        since the first server started: ``collections`` and ``pause_seconds`` per
        generation, youngest first, and ``longest_pause``). With a ``timeout``: stuck_requests (requests reported
        inside the app for longer than it, ever), stuck_now (workers so stuck now),
        and per worker stuck_for (seconds, 0.0 when not stuck).
        """
        acceptor = self._acceptor
        workers = [w.snapshot() for w in self._workers]
        watchdog = self._watchdog
        now = time.monotonic()
        for w, snap in zip(self._workers, workers, strict=True):
            snap["stuck_for"] = round(watchdog.stuck_for(w, now), 3) if watchdog else 0.0
        closed = sum(w["closed"] for w in workers)
        accepted = acceptor.accepted if acceptor else 0
        requests, duration = request_counters(w.handler for w in self._workers)
        return {
            "accepted": accepted,
            "active": accepted - closed,
            "closed": closed,
            "shed": acceptor.shed if acceptor else 0,
            "paused_at_max": acceptor.paused_full if acceptor else 0,
            "accept_errors": dict(acceptor.accept_errors) if acceptor else {},
            "handoffs": self._slots.handoffs if self._slots else 0,
            "handed_back": self._dispatch.handed_back if self._dispatch else 0,
            "run_slots": self._slots.slots if self._slots else self.run_slots,
            "queue_depth": self._dispatch.queue.qsize() if self._dispatch else 0,
            "connections": len(self._dispatch.conns) if self._dispatch else 0,
            "backend": self.backend_name,
            "workers": workers,
            "stuck_requests": watchdog.stuck_requests if watchdog else 0,
            "stuck_now": sum(1 for snap in workers if snap["stuck_for"]),
            "listen_queue": self._listen_queue() if listen_queue else {},
            "uptime": time.time() - self.started_at if self.started_at else 0.0,
            "requests": requests,
            "request_duration": duration,
            "websocket": websocket_counters(w.handler for w in self._workers),
            "tls_handshakes": sum(t.handshakes for t in self._tls),
            "tls_handshake_failed": sum(t.failed for t in self._tls),
            "tls_plain_http": sum(t.plain_http for t in self._tls),
            "tls_reloads": sum(t.reloads for t in self._tls),
            "gc": gcstats.snapshot(),
        }


    def requests_served(self) -> int:
        """Responses sent so far, of every status (HTTP handler; 0 for raw handlers).

        ``--max-requests`` counts these. Read from the handlers' own counters
        (``mioreactor.workers.ops.metrics``), so recycling adds nothing to the request path.
        """
        total = 0
        for w in self._workers:
            handler = w.handler
            counts = getattr(handler, "response_counts", None)
            if counts is not None:
                total += sum(counts) + sum(handler.response_untimed)  # type: ignore[union-attr]
        return total

    def stuck_report(self) -> tuple[int, str] | None:
        """When every worker is stuck in the app (``timeout``): (workers, what the longest
        stuck one serves, and for how long); else None."""
        watchdog = self._watchdog
        if watchdog is None or not watchdog.all_stuck:
            return None
        now = time.monotonic()
        longest = max(self._workers, key=lambda w: watchdog.stuck_for(w, now))
        what = f"{watchdog.describe(longest)} for {watchdog.stuck_for(longest, now):.1f} s"
        return len(self._workers), what

    def _listen_queue(self) -> dict[str, int | None]:
        """Kernel accept-queue depth per TCP listener, read at most once a second:
        it scans /proc/net/tcp, which holds every socket of the host (tens of
        thousands after a load test), so a monitoring scrape must not pay it each
        time."""
        now = time.monotonic()
        cached_at, cached = self._lq_cache
        if now - cached_at < 1.0:
            return dict(cached)
        depths: dict[str, int | None] = {}
        for bl in self._listeners:
            if bl.kind == "tcp":
                depths[bl.describe()] = _listen_queue_depth(bl.address[1])
        self._lq_cache = (now, depths)
        return dict(depths)


def _listen_queue_depth(port: int) -> int | None:
    try:
        from ..tools.doctor import listen_queue_depth
    except (ImportError, OSError):  # OSError: EMFILE while importing, when stats matter most
        return None
    try:
        return listen_queue_depth(port)
    except OSError:
        return None


def serve(app: Callable[..., Any], **kwargs: Any) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (like ``waitress.serve``)."""
    Server(app, **kwargs).serve_forever()


class MetricsServer:
    """``/metrics`` on ``bind``, on threads of its own (``reactor-acceptor`` and one
    ``reactor-worker-0`` of a separate ``Server``).

    Args:
        bind: ``HOST:PORT`` (port 0 picks one).
        source: returns the exposition text; called on the endpoint's worker thread.
    """

    def __init__(self, bind: str, source: Source) -> None:
        check_metrics_bind(bind)
        self.server = Server(metrics_app(source), bind=bind, workers=1, max_connections=64,
                             graceful_timeout=1.0)

    def start(self) -> MetricsServer:
        """Bind and serve.

        Raises:
            BindError: the address is in use or cannot be bound.
        """
        try:
            self.server.start()
        except BindError as exc:
            raise BindError(f"--metrics-bind: {exc}") from None
        log.info("metrics on %s/metrics", self.server.url)
        return self

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``."""
        return f"{self.server.url}/metrics"

    def stop(self) -> None:
        self.server.stop(timeout=1.0)
