"""Run a ``Config``: one server process, or a supervisor over several.

``run(config)`` is what ``reactor serve`` calls. With ``processes == 1`` and no
``reload`` it serves in this process (``mioreactor.workers.process.runner.serve_single``). Otherwise
this process becomes a ``Supervisor``: it never imports the app, and runs
``processes`` children (``mioreactor.workers.process.runner.child_main``), each a full ``Server`` with
its own acceptor and worker threads.

How children share a TCP port (``Config.share``):

* ``reuseport`` (``auto`` on Linux): the supervisor claims the address with a socket
  that binds and listens *without* SO_REUSEPORT (``_claim``), so the start fails, as
  a single process's does, when anything else listens there: a plain listener, or
  another server's SO_REUSEPORT group, which a socket with SO_REUSEPORT of the same
  user would silently join. Once it listens, SO_REUSEPORT is turned on; it is slot 0's
  listener, and for each other process *slot* (1 .. processes-1) the supervisor opens
  one more SO_REUSEPORT socket in its group (``Supervisor.slot_listeners``). The
  kernel spreads connections over the slots' accept queues. The process in a slot
  inherits its slot's sockets as ``fd://N``, and so does the process that replaces
  it: a queue outlives the process that accepts from it, so a replacement (or a
  death) resets none of the connections waiting in it, and no replacement binds
  anything. The supervisor itself never accepts. ``--share reuseport`` given by name
  is the one exception to the refusal: the user asks to share, so an address in use
  is joined (the kernel allows it only for a SO_REUSEPORT group of the same user),
  with a warning in the log.
* ``inherit`` (elsewhere, and always for ``unix:``, ``fd://`` and systemd sockets):
  the supervisor opens the listener and every child inherits it as ``fd://N``.

Signals to the supervisor: SIGTERM/SIGINT stop gracefully (forwarded to every
child, which drains within ``graceful_timeout``; a second one kills them); SIGHUP
does a rolling restart, one child at a time: start a new one, wait until it serves,
then tell the old one to retire (``Child.retire``). A child that dies is replaced
at once (in its slot); one that dies before it serves is retried with a growing
delay. With ``reload`` a change to a
watched ``.py`` file does the same rolling restart.

Replacing one child (``Supervisor.replace``) works the same way: start the new one,
wait until it serves, then tell the old one to retire: it stops accepting and drains,
keeping idle keep-alive connections for their next request (answered with
``Connection: close``); one still running past its graceful timeout is killed.
A child asks for it over its socketpair (``mioreactor.workers.process.runner._ChildReports``): with
``max_requests`` once it has served its limit (``max_requests`` plus a random
``0..max_requests_jitter``, drawn here for each child), and with ``timeout`` when
every one of its workers has been stuck in the app for longer than that (logged
first, with what they serve). ``max_requests`` runs this supervisor even for one
process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from enum import Enum
from types import FrameType
from typing import Any

from ...reactor import backend_name
from ..core.acceptor import BoundListener
from ..ops.metrics_server import METRICS_FD_ENV, ChildStats, ListenQueues
from ..server.binds import BindError, open_listeners, parse_bind, parse_tcp_bind, split_scheme
from ..server.server import MetricsServer
from ..tls.context import TlsError
from .config import Config, ConfigError
from .reloader import Watcher
from .runner import ServeError, announce, serve_single, setup_logging
from .settings import (
    PidFile,
    ProcessError,
    apply_umask,
    check_can_switch,
    chown_unix_sockets,
)
from .title import set_title

__all__ = ["ServeError", "Supervisor", "run"]

log = logging.getLogger("mioreactor.supervisor")

_CHILD_MODULE = "mioreactor.workers.process.child"  # ps shows: python -m ... FD
_BACKOFF_MIN, _BACKOFF_MAX = 0.5, 10.0
_KILL_GRACE = 5.0  # seconds past graceful_timeout before stragglers get SIGKILL
HEARTBEAT_FLOOR = 5.0  # a child silent this long (or --timeout, if longer) is wedged


def run(config: Config) -> int:
    """Serve ``config`` until stopped; return the process exit status.

    Raises:
        ServeError: it could not start (a bad app, an address in use, ...); nothing is
            left running.
    """
    try:
        apply_umask(config.umask)  # first: it governs socket files and the pid file
        check_can_switch(config.user, config.group)  # fail before anything starts
        if config.pid_file:
            PidFile(config.pid_file).check()  # another server's: before we log a word
    except ProcessError as exc:
        raise ServeError(str(exc)) from None
    if config.tls is not None:
        try:
            config.tls.check()  # a key that does not match: one line, before anything runs
        except TlsError as exc:
            raise ServeError(str(exc)) from None
    if not config.supervised:
        return serve_single(config)
    try:
        setup_logging(config)
    except ConfigError as exc:
        raise ServeError(str(exc)) from None
    set_title("supervisor", config.name)
    return Supervisor(config).run()


def reuseport_available() -> bool:
    """Whether SO_REUSEPORT balances connections here (Linux); BSDs only share."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _claim(spec: str, backlog: int, *, join: bool) -> tuple[socket.socket, str, bool]:
    """Listen on ``spec`` as the port's only holder; the first slot's listener.

    The socket binds and listens *without* SO_REUSEPORT, so the kernel refuses it
    (EADDRINUSE, at ``bind`` or at ``listen``) when any other socket listens on the
    address: a plain listener, another user's, or a SO_REUSEPORT group such as
    another supervisor's. Two supervisors starting at once cannot both pass: the
    kernel lets one ``listen`` win. Only then is SO_REUSEPORT turned on, so the
    other slots' listeners (``_slot_listener``) join its group.

    With ``join`` (``--share reuseport`` asked for by name) an address in use is
    not an error: the socket is opened with SO_REUSEPORT from the start and joins
    what listens there, if the kernel allows it (a SO_REUSEPORT group of the same
    user).

    Returns:
        The listening socket, the address as ``HOST:PORT`` (port 0 resolved), and
        whether it joined another process's listeners.

    Raises:
        BindError: the host does not resolve, or the address is in use (and may not
            be shared); the message is the one line ``open_listeners`` gives.
    """
    _, bare = split_scheme(spec)
    host, port = parse_tcp_bind(bare)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"bind {spec!r}: cannot resolve host ({exc})") from None
    family, _, _, _, sockaddr = infos[0]
    joined = False
    try:
        sock = _listen(family, sockaddr, host, backlog, join=False)
    except OSError as exc:
        if not (join and exc.errno == errno.EADDRINUSE):
            raise BindError(f"bind {spec!r}: {exc.strerror or exc}") from None
        try:
            sock = _listen(family, sockaddr, host, backlog, join=True)
        except OSError as exc2:
            raise BindError(f"bind {spec!r}: {exc2.strerror or exc2}") from None
        joined = True
    real_port = sock.getsockname()[1]
    where = f"[{host}]:{real_port}" if ":" in host else f"{host}:{real_port}"
    return sock, where, joined


def _listen(family: int, sockaddr: Any, host: str, backlog: int, *, join: bool) -> socket.socket:
    """A TCP socket bound to ``sockaddr``, listening, with SO_REUSEADDR and SO_REUSEPORT.

    SO_REUSEPORT is set before ``bind`` with ``join`` (it may join a group already
    there), else only once the socket listens (the address was free of listeners).
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if join:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(backlog)
        if not join:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _slot_listener(first: socket.socket, backlog: int) -> socket.socket:
    """A listening socket on ``first``'s address, in its SO_REUSEPORT group."""
    family = first.family
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            v6only = first.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sock.bind(first.getsockname())
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class State(Enum):
    STARTING = "starting"
    READY = "ready"
    RETIRING = "retiring"
    EXITED = "exited"


class Child:
    """One server process as the supervisor sees it."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.state = State.STARTING
        self.buffer = b""
        self.error = ""
        self.backend = ""
        self.started = time.monotonic()
        self.max_requests = 0  # this child's own limit (with its jitter); 0: none
        self.replacing = False  # a replacement was asked for
        self.retired_at = 0.0  # when it was told to stop (RETIRING)
        self.last_heard = self.started  # its last message (the heartbeat, at least)
        self.slot = 0  # its process slot: its reuseport listeners (Supervisor.slot_listeners)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def live(self) -> bool:
        return self.state in (State.STARTING, State.READY)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)

    def retire(self, replaced: bool) -> None:
        """Tell it to stop gracefully. ``replaced``: a new process serves in its place,
        so it need not hurry: it says ``retire`` on the socketpair, and the child keeps
        idle keep-alive connections for their next request (``Server.stop``'s
        ``idle_grace``). Otherwise, or if the pair is gone, SIGTERM."""
        self.state = State.RETIRING
        self.retired_at = time.monotonic()
        if replaced:
            try:
                self.sock.send(b"retire\n")
                return
            except OSError:
                pass
        self.signal(signal.SIGTERM)

    def describe_exit(self) -> str:
        code = self.proc.returncode
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"


class Supervisor:
    """Runs ``config.processes`` server processes; see the module docstring.

    Args:
        config: what to serve; ``config.processes`` children are kept running.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.children: list[Child] = []
        self.child_binds: list[str] = []
        self.pass_fds: list[int] = []
        self.described: list[str] = []
        self._held_sockets: list[socket.socket] = []
        # --share reuseport: for each such bind, its scheme prefix and the socket that
        # claimed the address (``_claim``: slot 0's listener); each other process slot
        # gets its own listening socket in its SO_REUSEPORT group (_slot_socks), which
        # outlives the processes in that slot (see ``slot_listeners``).
        self._reuse: list[tuple[str, socket.socket]] = []
        self._slot_socks: dict[int, list[socket.socket]] = {}
        self._bind_order: list[str | int] = []  # a child bind, or an index into _reuse
        self._held_listeners: list[BoundListener] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._signals: list[int] = []
        self.stopping = 0  # the stop signal received, 0 while running
        self.forced = False
        self.restart_requested = ""
        self._backoff = _BACKOFF_MIN
        self._next_spawn = 0.0
        self._serving = False  # True once the first children all serve
        self._replace: list[tuple[Child, str]] = []  # children to replace, and why
        self.pid_file = PidFile(config.pid_file) if config.pid_file else None
        self.replaced = 0
        self.backend = config.backend or backend_name()
        # What the children found the app to be (their "ready" message): the banner's.
        self.interface: str | None = None
        # --metrics-bind: the endpoint is served here, from the children's stats
        # (workers/ops/metrics_server.py); None without it.
        self.child_stats: ChildStats | None = (
            ChildStats(ListenQueues(self._tcp_ports)) if config.metrics_bind else None
        )
        self.metrics: MetricsServer | None = None

    # -- listeners ---------------------------------------------------------------------
    def open_listeners(self) -> None:
        """Hold every bind for the children (see the module docstring for how).

        Raises:
            ServeError: a bind is malformed or in use; whatever was opened is closed.
        """
        cfg = self.config
        share = cfg.share
        if share == "auto":
            share = "reuseport" if reuseport_available() else "inherit"
        elif share == "reuseport" and not hasattr(socket, "SO_REUSEPORT"):
            raise ServeError("--share reuseport: SO_REUSEPORT is not available on this platform")
        try:
            inherited: list[BoundListener] = []
            if cfg.use_systemd:
                inherited += open_listeners([], proxy_protocol=cfg.http.proxy_protocol)
            for spec in cfg.effective_binds:
                kind, _ = parse_bind(spec)
                scheme = split_scheme(spec)[0]
                if kind == "tcp" and share == "reuseport":
                    sock, where, joined = _claim(spec, cfg.backlog, join=cfg.share == "reuseport")
                    if joined:
                        log.warning("another process listens on %s: sharing the port with it "
                                    "(--share reuseport; the kernel spreads new connections "
                                    "over its listeners and ours)", where)
                    self._held_sockets.append(sock)
                    prefix = f"{scheme}://" if scheme else ""
                    self._bind_order.append(len(self._reuse))
                    self._reuse.append((prefix, sock))
                    self.child_binds.append(prefix + where)
                    self.described.append(self._described(scheme, kind, where))
                else:
                    inherited += open_listeners(
                        [spec], backlog=cfg.backlog, unix_mode=cfg.unix_mode,
                        proxy_protocol=cfg.http.proxy_protocol, use_systemd=False,
                    )
            for bl in inherited:
                self._held_listeners.append(bl)
                fd = bl.listener.fileno()
                # The bind's https:// or http:// goes with it (docs/tls.md).
                prefix = f"{bl.scheme}://" if bl.scheme else ""
                self.child_binds.append(f"{prefix}fd://{fd}")
                self._bind_order.append(f"{prefix}fd://{fd}")
                self.pass_fds.append(fd)
                self.described.append(self._described(bl.scheme, bl.kind, bl.describe()))
        except BindError as exc:
            self.close_listeners()
            raise ServeError(str(exc)) from None
        if not self.child_binds:
            raise ServeError("nothing to listen on: give --bind (or systemd sockets)")

    def _described(self, scheme: str | None, kind: str, where: str) -> str:
        """How a held listener is announced: ``https://`` when its children serve TLS."""
        tls = self.config.tls is not None and (
            scheme == "https" or (scheme is None and kind == "tcp")
        )
        return f"https://{where}" if tls else where

    def slot_listeners(self, slot: int) -> list[socket.socket]:
        """The listening sockets of process slot ``slot`` (``--share reuseport``).

        One per reuseport bind, listening in the SO_REUSEPORT group of the socket
        that claimed the address (``_claim``), which is slot 0's own; the kernel
        spreads new connections over the slots' accept queues.
        The supervisor never accepts on them: the process in the slot inherits them
        (``fd://N``), and so does its replacement (``--max-requests``, SIGHUP, a
        death). A queue therefore outlives the process that accepts from it: closing
        a process's own listener would reset the connections that reached its queue
        after its last accept, once per replacement.

        Raises:
            ServeError: the socket cannot be made (it was bound once already).
        """
        socks = self._slot_socks.get(slot)
        if socks is None:
            socks = []
            made: list[socket.socket] = []
            try:
                for _, first in self._reuse:
                    if slot == 0:
                        socks.append(first)
                    else:
                        made.append(_slot_listener(first, self.config.backlog))
                        socks.append(made[-1])
            except OSError as exc:
                for s in made:
                    s.close()
                raise ServeError(f"cannot open a listener for process slot {slot}: "
                                 f"{exc.strerror or exc}") from None
            self._slot_socks[slot] = socks
        return socks

    def close_listeners(self) -> None:
        for socks in self._slot_socks.values():
            for sock in socks:
                sock.close()
        self._slot_socks.clear()
        for sock in self._held_sockets:
            sock.close()
        for bl in self._held_listeners:
            bl.listener.close()
            if bl.path:
                with contextlib.suppress(OSError):
                    os.unlink(bl.path)
        self._held_sockets.clear()
        self._held_listeners.clear()

    def child_config(self, slot: int = 0) -> Config:
        """The ``Config`` a child in ``slot`` serves: the supervisor's binds, as it holds
        them (its slot's listeners for reuseport binds)."""
        socks = self.slot_listeners(slot) if self._reuse else []
        binds = [
            entry if isinstance(entry, str) else f"{self._reuse[entry][0]}fd://{socks[entry].fileno()}"
            for entry in self._bind_order
        ]
        return self.config.replace(
            binds=tuple(binds),
            use_systemd=False,
            reuse_port=False,
            reload=False,
            metrics_bind=None,
        )

    # -- children ------------------------------------------------------------------------
    def spawn(self, slot: int = 0) -> Child:
        """Start one server process in ``slot`` and send it its configuration."""
        config = self.child_config(slot)
        slot_fds = [s.fileno() for s in self._slot_socks.get(slot, ())]
        mine, theirs = socket.socketpair()
        fd = theirs.fileno()
        env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        stats_mine: socket.socket | None = None
        stats_theirs: socket.socket | None = None
        extra_fds: list[int] = []
        if self.child_stats is not None:
            stats_mine, stats_theirs = self.child_stats.channel()
            env[METRICS_FD_ENV] = str(stats_theirs.fileno())
            extra_fds.append(stats_theirs.fileno())
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", _CHILD_MODULE, str(fd)],
                pass_fds=[fd, *self.pass_fds, *slot_fds, *extra_fds],
                env=env,
            )
        except BaseException:
            if stats_mine is not None:
                stats_mine.close()
            raise
        finally:
            theirs.close()
            if stats_theirs is not None:
                stats_theirs.close()
        if self.child_stats is not None and stats_mine is not None:
            self.child_stats.add(proc.pid, stats_mine)
        limit = 0
        if config.max_requests:
            limit = config.max_requests + random.randint(0, config.max_requests_jitter)
            config = config.replace(max_requests=limit, max_requests_jitter=0)
        payload = config.to_json().encode() + b"\n"
        with contextlib.suppress(OSError):  # a child that died at once is reaped below
            mine.sendall(payload)
        mine.setblocking(False)
        child = Child(proc, mine)
        child.slot = slot
        child.max_requests = limit
        self._selector.register(mine, selectors.EVENT_READ, child)
        self.children.append(child)
        log.debug("started server process %d", proc.pid)
        return child

    def _on_message(self, child: Child, message: dict[str, Any]) -> None:
        child.last_heard = time.monotonic()
        event = message.get("event")
        if event == "ready" and child.state is State.STARTING:
            child.state = State.READY
            child.backend = str(message.get("backend", ""))
            self.backend = child.backend or self.backend
            self.interface = str(message.get("interface") or "") or self.interface
            self._backoff = _BACKOFF_MIN
            log.info("server process %d is serving", child.pid)
        elif event == "error":
            child.error = str(message.get("message", "unknown error"))
        elif event == "recycle" and child.state is State.READY and not child.replacing:
            child.replacing = True
            why = (f"server process {child.pid} has served {message.get('requests')} requests "
                   f"(--max-requests {self.config.max_requests}, its limit {child.max_requests})")
            log.info("%s: replacing it", why)
            self._replace.append((child, why))
        elif event == "stuck" and child.state is State.READY and not child.replacing:
            child.replacing = True
            why = (f"server process {child.pid}: all {message.get('workers')} worker threads "
                   f"have been inside the app for more than --timeout "
                   f"{message.get('timeout')} s (the longest: {message.get('what')})")
            log.warning("%s: replacing it; its requests may finish within "
                        "--graceful-timeout %g s", why, self.config.graceful_timeout)
            self._replace.append((child, why))

    def _read(self, child: Child) -> None:
        while True:
            try:
                data = child.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._selector.unregister(child.sock)
                return
            child.buffer += data
            *lines, child.buffer = child.buffer.split(b"\n")
            for line in lines:
                try:
                    self._on_message(child, json.loads(line))
                except ValueError:
                    log.warning("server process %d sent %r", child.pid, line[:200])

    def _reap(self) -> None:
        for child in self.children:
            if child.state is State.EXITED or child.proc.poll() is None:
                continue
            was = child.state
            child.state = State.EXITED
            with contextlib.suppress(KeyError, ValueError):
                self._read(child)  # a last message (an error) may still be queued
                self._selector.unregister(child.sock)
            child.sock.close()
            if was is State.RETIRING or self.stopping:
                log.log(logging.INFO if self._serving else logging.DEBUG,
                        "server process %d has exited (%s)", child.pid, child.describe_exit())
            elif was is State.READY:
                log.warning("server process %d died (%s); starting a new one",
                            child.pid, child.describe_exit())
            else:
                why = child.error or child.describe_exit()
                # While starting, the ServeError carries the reason: no second line.
                level = logging.ERROR if self._serving else logging.DEBUG
                log.log(level, "server process %d failed to start: %s", child.pid, why)
                self._next_spawn = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        self.children = [c for c in self.children if c.state is not State.EXITED]

    # -- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self.stopping:
                    log.warning("%s again: killing the server processes", name)
                    self.forced = True
                    for child in self.children:
                        child.signal(signal.SIGKILL)
                else:
                    log.info("%s: stopping gracefully (up to %.1f s)", name,
                             self.config.graceful_timeout)
                    self.stopping = signum
            elif signum == signal.SIGHUP:
                self.restart_requested = "SIGHUP"

    def pump(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a child message, a child exit or a signal; handle it."""
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
            else:
                self._read(key.data)
        self._handle_signals()
        self._reap()

    def wait_ready(self, child: Child, timeout: float) -> bool:
        """Pump until ``child`` serves (True), or fails, times out or a stop comes (False)."""
        deadline = time.monotonic() + timeout
        while child.state is State.STARTING and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                child.error = child.error or f"not serving after {timeout:g} s"
                return False
            self.pump(min(left, 0.1))
        return child.state is State.READY

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Open the listeners and start every child; return when all serve.

        Raises:
            ServeError: with the first child's error message; nothing is left running.
        """
        self.open_listeners()
        cfg = self.config
        try:
            paths = [bl.path for bl in self._held_listeners if bl.path]
            chown_unix_sockets(paths, cfg.user, cfg.group)
            if self.pid_file is not None:
                self.pid_file.create()  # after binding, as gunicorn's arbiter
        except ProcessError as exc:
            self.close_listeners()
            raise ServeError(str(exc)) from None
        first = [self.spawn(slot) for slot in range(self.config.processes)]
        for child in first:
            if not self.wait_ready(child, self.config.startup_timeout):
                reason = child.error or f"the server process {child.describe_exit()}"
                if self.stopping:
                    reason = "stopped while starting"
                self.shutdown(signal.SIGTERM)
                raise ServeError(reason)
        self._serving = True

    def ensure_children(self) -> None:
        """Start children until ``processes`` are starting or serving."""
        used = {c.slot for c in self.children if c.live}
        if len(used) < self.config.processes and time.monotonic() >= self._next_spawn:
            for slot in range(self.config.processes):
                if slot not in used:
                    self.spawn(slot)

    def rolling_restart(self, reason: str) -> bool:
        """Replace every child, one at a time; the old one stops once the new one serves.

        Returns:
            True when every child was replaced; False when a new one failed (the old
            ones keep serving) or a stop signal came.
        """
        self.restart_requested = ""
        old = [c for c in self.children if c.live]
        log.info("%s: rolling restart of %d server process(es)", reason, len(old))
        for child in old:
            if self.stopping:
                return False
            new = self.spawn(child.slot)
            if not self.wait_ready(new, self.config.startup_timeout):
                if not self.stopping:
                    log.error("rolling restart stopped: the new server process failed (%s); "
                              "the old ones keep serving", new.error or new.describe_exit())
                if new.live:
                    new.retire(replaced=False)
                return False
            if child.live:
                child.retire(replaced=True)
        log.info("rolling restart done")
        return True

    def replace(self, child: Child, why: str) -> bool:
        """Start a new child, wait until it serves, then stop ``child`` gracefully.

        The old child keeps accepting until the new one serves, so no connection is
        refused; then it is told to retire (``Child.retire``): it stops accepting and
        drains, answering the next request of each keep-alive connection with
        ``Connection: close``. Returns False when the new child failed (the old one
        keeps serving) or a stop came.
        """
        if not child.live:
            return False
        new = self.spawn(child.slot)
        if not self.wait_ready(new, self.config.startup_timeout):
            if not self.stopping:
                log.error("could not replace server process %d (%s): the new one failed "
                          "(%s); the old one keeps serving", child.pid, why,
                          new.error or new.describe_exit())
                child.replacing = False
            if new.live:
                new.retire(replaced=False)
            return False
        if child.live:
            child.retire(replaced=True)
            self.replaced += 1
            log.info("server process %d replaces %d", new.pid, child.pid)
        return True

    def check_heartbeats(self) -> None:
        """Replace a serving child silent for ``--timeout`` (at least ``HEARTBEAT_FLOOR``).

        Its main thread says ``alive`` every second (``mioreactor.workers.process.runner``); silence means
        the interpreter runs no Python at all: a C extension holding the GIL, or the
        process stopped. Its own watchdog cannot report that, so the log says it here.
        """
        timeout = self.config.timeout
        if timeout <= 0:
            return
        limit = max(timeout, HEARTBEAT_FLOOR)
        now = time.monotonic()
        for child in self.children:
            silent = now - child.last_heard
            if child.state is State.READY and not child.replacing and silent > limit:
                child.replacing = True
                why = (f"server process {child.pid} has sent no heartbeat for {silent:.0f} s "
                       f"(--timeout {timeout:g}): it runs no Python at all (a C extension "
                       "holding the GIL, or the process is stopped)")
                log.warning("%s: replacing it", why)
                self._replace.append((child, why))

    def kill_overdue(self) -> None:
        """SIGKILL a retiring child still running past its graceful timeout (plus the
        keep-alive grace and ``_KILL_GRACE``): a request stuck in the app forever keeps
        its worker thread, so the child cannot end by itself."""
        limit = self.config.graceful_timeout + self.config.http.keepalive_timeout + _KILL_GRACE
        now = time.monotonic()
        for child in self.children:
            if child.state is State.RETIRING and child.retired_at and now - child.retired_at > limit:
                log.warning("server process %d still runs %.0f s after it was told to stop: "
                            "killing it", child.pid, now - child.retired_at)
                child.retired_at = 0.0
                child.signal(signal.SIGKILL)

    def shutdown(self, signum: int) -> None:
        """Forward ``signum`` to every child and wait for them (SIGKILL after the grace)."""
        self.stopping = self.stopping or signum
        for child in self.children:
            if child.state is not State.EXITED:
                child.signal(signum)
        # Let go of the listeners the children share: each closes once the last child
        # has made its final accept and closed its copy, and new connections are then
        # refused, not queued where nobody will accept them (and reset at the end).
        for socks in self._slot_socks.values():
            for sock in socks:
                sock.close()
        for bl in self._held_listeners:
            bl.listener.close()
        deadline = time.monotonic() + self.config.graceful_timeout + _KILL_GRACE
        while self.children and time.monotonic() < deadline:
            self.pump(0.1)
        for child in self.children:
            log.warning("server process %d did not stop in time: killing it", child.pid)
            child.signal(signal.SIGKILL)
            child.proc.wait()
        self._reap()
        self.close_listeners()

    def run(self) -> int:
        """Start, supervise until SIGTERM/SIGINT, stop; the exit status.

        Raises:
            ServeError: the servers could not start.
        """
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        previous = [(s, signal.signal(s, self._on_signal)) for s in handled]
        try:
            self.start_metrics()
            self.start()
            announce(self.described, self.backend, self.config, os.getpid(), self.interface)
            log.info("supervisor pid %d: SIGHUP restarts the server processes one by one, "
                     "SIGTERM stops gracefully", os.getpid())
            watcher = self._watcher()
            next_scan = time.monotonic() + self.config.reload_interval
            while not self.stopping:
                self.pump(0.2)
                if self.stopping:
                    break
                if self.restart_requested:
                    self.rolling_restart(self.restart_requested)
                    continue
                if self._replace:
                    child, why = self._replace.pop(0)
                    self.replace(child, why)
                    continue
                self.kill_overdue()
                self.check_heartbeats()
                self.ensure_children()
                if watcher is not None and time.monotonic() >= next_scan:
                    changed = watcher.changed()
                    next_scan = time.monotonic() + self.config.reload_interval
                    if changed:
                        shown = watcher.display(changed[0])
                        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
                        self.rolling_restart(f"reload: {shown}{more} changed")
            self.shutdown(self.stopping)
            return 0
        finally:
            for signum, handler in previous:
                signal.signal(signum, handler)
            self.stop_metrics()
            self.close_listeners()
            if self.pid_file is not None:
                self.pid_file.remove()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def start_metrics(self) -> None:
        """Serve ``/metrics`` from the children's stats (with ``--metrics-bind``).

        Raises:
            ServeError: the metrics address cannot be bound.
        """
        if self.child_stats is None or self.config.metrics_bind is None:
            return
        try:
            self.metrics = MetricsServer(self.config.metrics_bind, self.child_stats.render).start()
        except BindError as exc:
            raise ServeError(str(exc)) from None

    def _tcp_ports(self) -> list[tuple[str, int]]:
        """``(label, port)`` of every TCP port the children listen on (for /metrics)."""
        out: list[tuple[str, int]] = []
        for sock in list(self._held_sockets):
            try:
                host, port = sock.getsockname()[:2]
            except OSError:
                continue  # closed meanwhile (stopping)
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            out.append((self._described(None, "tcp", where), port))
        for bl in list(self._held_listeners):
            if bl.kind == "tcp":
                out.append((self._described(bl.scheme, bl.kind, bl.describe()), bl.address[1]))
        return out

    def stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        if self.child_stats is not None:
            self.child_stats.close()

    def _watcher(self) -> Watcher | None:
        if not self.config.reload:
            return None
        dirs = self.config.reload_dirs or (self.config.app_dir,)
        patterns = ("*.py", *self.config.reload_includes)
        watcher = Watcher(dirs, patterns, self.config.reload_excludes)
        log.info("reload: watching %d file(s) (%s) under %s", watcher.count,
                 " ".join(patterns), ", ".join(dirs))
        return watcher
