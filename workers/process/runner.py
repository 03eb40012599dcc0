"""One server process: build it from a ``Config``, start it, serve until a signal.

``serve_single`` is ``reactor serve`` without a supervisor (one process, no
``--reload``). ``child_main`` is the same thing run as a child of
``mioreactor.workers.process.supervisor``: it reads its ``Config`` from the supervisor's socketpair,
answers ``{"event": "ready", ...}`` once it accepts connections (or
``{"event": "error", "message": ...}`` when it cannot start), and treats EOF on the
pair as the supervisor's death: it then stops gracefully, so no orphan keeps serving.

Every start-up failure (an app that does not import, an address in use, a value the
server rejects) becomes a ``ServeError`` with a one-line message for the CLI.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from types import FrameType
from typing import Any

from ...reactor.sys import load_backend
from ..asgi import LifespanError
from ..core.acceptor import BoundListener
from ..ops import gcstats
from ..ops.metrics_server import StatsResponder
from ..server.binds import BindError, open_listeners
from ..server.server import Server
from ..tls.context import TlsError
from .appload import AppLoadError, load_app
from .config import Config, ConfigError
from .logs import LOG_FORMAT, read_log_config, setup_logging
from .settings import PidFile, ProcessError, chown_unix_sockets, drop_privileges
from .title import set_title

__all__ = [
    "LOG_FORMAT",
    "ServeError",
    "announce",
    "build_server",
    "check_config",
    "child_main",
    "serve_single",
    "setup_logging",
    "start_server",
]

log = logging.getLogger("mioreactor.serve")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HEARTBEAT = 1.0  # seconds between a child's "alive" messages to its supervisor


class ServeError(RuntimeError):
    """The server could not start; the message is one line naming the problem."""


def build_server(config: Config, listeners: Sequence[BoundListener] = ()) -> Server:
    """Import the app (or make the demo app) and build, but not start, its ``Server``.

    ``listeners``, when given, are already bound (``--user``: bound before privileges
    are dropped) and replace the config's binds.

    Raises:
        AppLoadError: the app cannot be imported or is not callable.
        ValueError: a value the server rejects.
    """
    kwargs = config.server_kwargs()
    if listeners:
        kwargs.update(bind=[], use_systemd=False, listeners=list(listeners))
    if config.app is None:
        from ..server.demo import DemoApp

        demo = DemoApp(processes=config.processes)
        server = Server(demo, **kwargs)
        demo.attach(server)
        return server
    if config.interface == "handler":
        factory = load_app(
            config.app, factory=config.factory, app_dir=config.app_dir,
            what="a handler factory (factory(worker) -> Handler)",
        )
        if _required_positional(factory) == 2:
            raise AppLoadError(
                f"app {config.app!r} takes (environ, start_response): a WSGI app, not a "
                "handler factory (factory(worker) -> Handler); leave out --interface handler"
            )
        return Server(handler=factory, **kwargs)
    app = load_app(config.app, factory=config.factory, app_dir=config.app_dir)
    return Server(app, **kwargs)


def _required_positional(obj: Any) -> int | None:
    """How many positional arguments calling ``obj`` needs; None when unknown."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def start_server(config: Config) -> Server:
    """``build_server`` and ``start``, with every failure as a one-line ``ServeError``.

    With ``--user``/``--group`` the order is bind, drop privileges, import the app
    (``mioreactor.workers.process.settings``): the app never runs as root, and ports below 1024 work.
    """
    listeners: list[BoundListener] = []
    try:
        if config.user or config.group:
            listeners = open_listeners(
                list(config.effective_binds), backlog=config.backlog,
                reuse_port=config.reuse_port, unix_mode=config.unix_mode,
                proxy_protocol=config.http.proxy_protocol, use_systemd=config.use_systemd,
            )
            chown_unix_sockets([bl.path for bl in listeners if bl.path], config.user, config.group)
            _import_ours(config)
            drop_privileges(config.user, config.group)
        server = build_server(config, listeners)
    except (AppLoadError, BindError, ConfigError, LifespanError, ProcessError, TlsError) as exc:
        _close(listeners)
        raise ServeError(str(exc)) from None
    except Exception as exc:
        _close(listeners)
        raise ServeError(f"cannot start: {_describe(exc)}") from None
    try:
        server.start()
    except (BindError, LifespanError, TlsError) as exc:
        _close(listeners)
        raise ServeError(str(exc)) from None
    except OSError as exc:
        _close(listeners)
        raise ServeError(f"cannot start: {_describe(exc)}") from None
    except Exception as exc:
        # Not ours: the handler factory (or the app's set-up) raised on a worker.
        _close(listeners)
        what = "handler factory" if config.interface == "handler" else "app"
        raise ServeError(
            f"{what} {config.app!r} failed as the server started: {_describe(exc)}"
        ) from None
    settle_heap()
    return server


def settle_heap() -> None:
    """Collect once, then freeze what the app and server set up (``gc.freeze``).

    What is alive once the server runs (modules, the app, its framework's tables)
    lives as long as the process; frozen, the cyclic collector no longer walks it, and
    a full collection costs what the garbage of the moment costs, not 10-14 ms over
    the ~50k objects of a FastAPI process (docs/design.md, "No garbage cycles").
    Only the command does this: the process is ours. An application that embeds
    ``Server`` owns its heap, and may call ``gc.freeze()`` itself.
    """
    gc.collect()
    gc.freeze()
    gcstats.reset()  # the pauses while serving, not this one pass over everything


_OURS = tuple(
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), d, "")
    for d in ("workers", "reactor")
)


def _describe(exc: BaseException) -> str:
    """One line for an exception: its message (the type when there is none), and
    where it was raised when that is outside this package."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror if not exc.filename else f"{exc.filename}: {exc.strerror}"
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and not os.path.abspath(frames[-1].filename).startswith(_OURS):
        last = frames[-1]
        name = os.path.relpath(last.filename) if os.path.isabs(last.filename) else last.filename
        text += f" ({name}:{last.lineno})"
    return text


def check_config(config: Config) -> str:
    """``reactor serve --check-config``: everything but serving; one line saying so.

    Checks the TLS files, the log configuration, and imports the app (as a server
    process would: with ``--user`` that is done as the user, here it is done as the
    caller) and builds its ``Server`` without binding.

    Raises:
        ServeError: the first problem, in one line.
    """
    try:
        if config.tls is not None:
            config.tls.check()
        if config.log_config:
            read_log_config(config.log_config)
        server = build_server(config)
    except (AppLoadError, BindError, ConfigError, TlsError) as exc:
        raise ServeError(str(exc)) from None
    except Exception as exc:
        raise ServeError(f"cannot build the server: {_describe(exc)}") from None
    app = config.app or "the built-in demo app"
    binds = ", ".join(config.effective_binds) or "the systemd sockets"
    return (f"configuration OK: {app} ({server.interface}) imports; it would listen on "
            f"{binds} with {config.processes} process(es) x {config.workers} worker "
            "thread(s)")


def _import_ours(config: Config) -> None:
    """Import, before privileges are dropped, every module of ours the server would
    import later, so that afterwards only the app is read from disk as the new user:
    mioreactor itself may lie where that user cannot read (a virtualenv under
    ``/root``, a checkout in a folder only root can read).

    Plain import statements, not names in strings, so that mypy fails here when a
    module moves. Loaded later otherwise: the poll backend (at start), what reads the
    listen queue (stats, ``/metrics``), TLS connections (at accept), the demo app.

    Raises:
        ValueError: the configured backend is not available here.
    """
    load_backend(config.backend)
    from ..tools import doctor, hostinfo  # noqa: F401

    if config.tls is not None:
        from ..tls import conn  # noqa: F401
    if config.app is None:
        from ..server import demo  # noqa: F401  (loaded, not used: see the docstring)


def _close(listeners: list[BoundListener]) -> None:
    for bl in listeners:
        bl.listener.close()
        if bl.path:
            with contextlib.suppress(OSError):
                os.unlink(bl.path)


def announce(
    listeners: list[str], backend: str, config: Config, pid: int, interface: str | None = None
) -> None:
    """Log what is served where, and by what: one line per listener, then a summary.

    ``interface`` is what the app was found to be (``Server.interface``: ``wsgi``,
    ``asgi`` or ``handler``); without it, the configured one (``auto`` unless given).
    """
    from ..server.demo import version

    for where in listeners:
        log.info("listening on %s", where)
    app = config.app or "the built-in demo app"
    log.info(
        "mioreactor %s serving %s (%s): %d process(es) x %d worker thread(s), backend %s, pid %d",
        version(), app, interface or config.interface, config.processes, config.workers, backend, pid,
    )


class _StopFlag:
    """Set once by SIGTERM/SIGINT (or a lost lifeline); later signals change nothing."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.hup = threading.Event()  # SIGHUP in a single process: reload certificates
        self.retire = False  # the supervisor replaced this process: no hurry to close

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
        self.event.set()


@contextlib.contextmanager
def _stop_signals(stop: _StopFlag, *, supervised: bool) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop`` (installed before the server starts, so a signal
    that comes while it starts is not lost); SIGHUP is left to the supervisor, or
    in a single process sets ``stop.hup`` (reload the TLS certificates)."""

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set(f"signal {signal.Signals(signum).name}")

    def on_hup(signum: int, frame: FrameType | None) -> None:
        if not supervised:
            stop.hup.set()

    previous = [(s, signal.signal(s, on_stop)) for s in STOP_SIGNALS]
    previous.append((signal.SIGHUP, signal.signal(signal.SIGHUP, on_hup)))
    try:
        yield
    finally:
        for signum, handler in previous:
            signal.signal(signum, handler)


def _serve_until_stopped(
    server: Server,
    stop: _StopFlag,
    tick: Callable[[], None] | None = None,
    interval: float = 0.25,
) -> None:
    """Block until ``stop`` is set (by a signal or the lifeline), then stop gracefully.

    ``tick`` runs every ``interval`` seconds meanwhile (a child's reports).
    """
    while not stop.event.wait(interval):
        if server.wait(0):
            return
        if stop.hup.is_set():
            stop.hup.clear()
            _on_hup(server)
        if tick is not None:
            tick()
    log.info("%s: stopping gracefully (up to %.1f s)", stop.reason, server.graceful_timeout)
    grace = 0.0
    if stop.retire and server.http is not None:
        grace = float(server.http.keepalive_timeout)
    server.stop(idle_grace=grace)


def _on_hup(server: Server) -> None:
    """SIGHUP without a supervisor: read the TLS certificates again (docs/tls.md).

    Connections that are open keep their session; new ones get the new certificate.
    A renewal that does not load leaves the old certificate serving.
    """
    if not server.listeners or all(bl.tls is None for bl in server.listeners):
        log.warning("SIGHUP ignored: no TLS certificate to reload, and rolling restarts "
                    "need the supervisor (--processes 2 or more, or --reload)")
        return
    try:
        count = server.reload_tls()
    except TlsError as exc:
        log.error("SIGHUP: the TLS certificate was not reloaded, the old one serves on: %s",
                  exc)
        return
    log.info("SIGHUP: reloaded the TLS certificate of %d listener(s); open connections "
             "keep theirs", count)


def serve_single(config: Config) -> int:
    """Serve ``config`` in this process until SIGTERM/SIGINT; return the exit status.

    Raises:
        ServeError: the app or a bind failed; nothing is left running.
    """
    try:
        setup_logging(config)
    except ConfigError as exc:
        raise ServeError(str(exc)) from None
    set_title("server", config.name)
    stop = _StopFlag()
    with _stop_signals(stop, supervised=False):
        server = start_server(config)
        pid_file = PidFile(config.pid_file) if config.pid_file else None
        try:
            if pid_file is not None:
                pid_file.create()
        except ProcessError as exc:
            server.stop(0)
            raise ServeError(str(exc)) from None
        try:
            announce([bl.describe() for bl in server.listeners], server.backend_name, config,
                     os.getpid(), server.interface)
            _serve_until_stopped(server, stop)
        finally:
            if pid_file is not None:
                pid_file.remove()
    return 0


# -- the child side of the supervisor ------------------------------------------------
def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the supervisor is gone; the lifeline thread notices


def _read_line(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk or len(data) > limit:
            raise ConfigError("the supervisor closed the pipe before sending a configuration")
        data += chunk
    return data


def child_main(fd: int) -> None:
    """Entry point of a supervised server process; ``fd`` is its end of the socketpair.

    Reads its ``Config``, starts the server, reports ``ready`` (or ``error``), serves
    until SIGTERM/SIGINT or until the supervisor's end closes, drains, exits.
    """
    # A terminal's ^C reaches the whole process group; until the handlers below are
    # installed, leave it to the supervisor (it forwards a stop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    metrics_sock = StatsResponder.take_channel()
    try:
        config = Config.from_json(_read_line(sock).decode())
    except (ConfigError, OSError, UnicodeDecodeError) as exc:
        print(f"reactor child: {exc}", file=sys.stderr)
        sys.exit(3)
    try:
        setup_logging(config)
    except ConfigError as exc:
        _send(sock, {"event": "error", "pid": os.getpid(), "message": str(exc)})
        sys.exit(3)
    set_title("server process", config.name)
    stop = _StopFlag()
    with _stop_signals(stop, supervised=True):
        try:
            server = start_server(config)
        except ServeError as exc:
            _send(sock, {"event": "error", "pid": os.getpid(), "message": str(exc)})
            sys.exit(3)
        _serve_child(server, sock, stop, metrics_sock, config.max_requests)
    sys.exit(0)


def _serve_child(
    server: Server,
    sock: socket.socket,
    stop: _StopFlag,
    metrics_sock: socket.socket | None = None,
    max_requests: int = 0,
) -> None:
    """Report ``ready``, watch the lifeline, serve until ``stop``, drain.

    With ``metrics_sock`` (``--metrics-bind``), this process's stats are answered there
    to the supervisor (``mioreactor.workers.ops.metrics_server.StatsResponder``). With
    ``max_requests``, the supervisor is told once this process has served that many.
    """
    _send(sock, {
        "event": "ready",
        "pid": os.getpid(),
        "listeners": [bl.describe() for bl in server.listeners],
        "backend": server.backend_name,
        "interface": server.interface,  # what the app was found to be (the banner)
    })

    def lifeline() -> None:
        # The supervisor writes one line here: "retire" (a new process serves in our
        # place: drain, keeping keep-alive connections for their next request).
        try:
            while data := sock.recv(4096):
                if b"retire" in data:
                    stop.retire = True
                    stop.set("replaced by a new server process")
        except OSError:
            pass
        stop.set("the supervisor is gone")

    threading.Thread(target=lifeline, name="reactor-lifeline", daemon=True).start()
    # --metrics-bind: the supervisor asks for this process's stats on a channel of its own.
    # The listen queue is the supervisor's to read (the whole port, once for all).
    responder = (StatsResponder(metrics_sock, partial(server.stats, listen_queue=False)).start()
                 if metrics_sock else None)
    reports = _ChildReports(server, sock, max_requests)
    # Checked often with --max-requests: each tick past the limit is overshoot.
    _serve_until_stopped(server, stop, reports.tick, 0.05 if max_requests else 0.25)
    if responder is not None:
        responder.send()  # the final counters, kept by the supervisor after this exits


class _ChildReports:
    """What a child tells its supervisor while it serves (one JSON line each).

    * ``{"event": "recycle", "requests": N}``: it has served its ``--max-requests``;
      sent once. The supervisor starts a replacement, then stops this one gracefully.
    * ``{"event": "stuck", "workers": N, "what": ...}``: every worker has been inside
      the app for longer than ``--timeout``; sent once per episode. The supervisor
      replaces it the same way, after saying why.
    * ``{"event": "alive"}``: every ``HEARTBEAT`` seconds. A process silent for
      ``--timeout`` (at least ``mioreactor.workers.process.supervisor.HEARTBEAT_FLOOR``) cannot run
      Python at all, and is replaced.
    """

    def __init__(self, server: Server, sock: socket.socket, limit: int) -> None:
        self.server = server
        self.sock = sock
        self.limit = limit
        self.recycle_sent = False
        self.stuck_sent = False
        self.alive_sent = 0.0

    def tick(self) -> None:
        server = self.server
        if self.limit and not self.recycle_sent:
            served = server.requests_served()
            if served >= self.limit:
                self.recycle_sent = True
                _send(self.sock, {"event": "recycle", "pid": os.getpid(), "requests": served,
                                  "limit": self.limit})
        stuck = server.stuck_report()
        if stuck is None:
            self.stuck_sent = False
        elif not self.stuck_sent:
            self.stuck_sent = True
            workers, what = stuck
            _send(self.sock, {"event": "stuck", "pid": os.getpid(), "workers": workers,
                              "what": what, "timeout": server.timeout})
        now = time.monotonic()
        if now - self.alive_sent >= HEARTBEAT:
            # The heartbeat: this thread runs Python, so the interpreter is not wedged
            # (a C extension holding the GIL stops it, and the watchdog, alike).
            self.alive_sent = now
            _send(self.sock, {"event": "alive"})
