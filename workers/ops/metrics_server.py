"""The ``/metrics`` endpoint, and how a supervisor reads its children's figures.

The endpoint is a ``Server`` of our own (one worker thread, its own acceptor and
Poll) serving a small WSGI app, bound to ``--metrics-bind``. It shares nothing with
the served app's threads: a scrape never waits for the app's workers and never takes
their run slot; all it reads is ``Server.stats()``, which takes no lock.

With ``--processes`` each child is a full server, and the supervisor serves the
endpoint. It keeps one private socketpair per child (the child's end is passed as
the descriptor named in ``REACTOR_METRICS_FD``): on a scrape it writes ``?\\n`` to
every child and reads back one JSON line each, its ``Server.stats()`` with its pid
(``StatsResponder`` on the child's ``reactor-metrics`` thread). Children answer in
parallel, within ``COLLECT_TIMEOUT``; a child that does not answer in time is counted
with its last answer. A child also sends its figures unasked when it starts and once
more after its last request (after ``Server.stop()``), so when it exits, for a rolling
restart or a crash, its final counters (or the last ones seen) are kept in a carry and
the summed counters never go backwards. The children leave the listen-queue depth out
(``Server.stats(listen_queue=False)``): the supervisor reads it for each port itself
(``ListenQueues``), so a scrape costs the processes serving the app no ``/proc`` scan.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ...reactor.net import parse_host_port
from .metrics import CONTENT_TYPE, add_counters, merge, render

__all__ = [
    "COLLECT_TIMEOUT",
    "METRICS_FD_ENV",
    "ChildStats",
    "ListenQueues",
    "StatsResponder",
    "check_metrics_bind",
    "metrics_app",
    "single_process_source",
]

log = logging.getLogger("mioreactor.metrics")

METRICS_FD_ENV = "REACTOR_METRICS_FD"
COLLECT_TIMEOUT = 1.0

Source = Callable[[], str]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def check_metrics_bind(spec: str) -> str:
    """``HOST:PORT`` or ``[V6]:PORT`` for the metrics endpoint.

    Raises:
        ValueError: anything else, with the offending text.
    """
    parse_host_port(spec)
    return spec


def metrics_app(source: Source) -> Callable[[dict[str, Any], StartResponse], list[bytes]]:
    """A WSGI app: ``GET /metrics`` answers ``source()``; other paths 404, other methods 405."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/metrics/"):
            body = b"not found: the metrics are at /metrics\n"
            start_response("404 Not Found", [("Content-Type", "text/plain"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            body = b"method not allowed: GET /metrics\n"
            start_response("405 Method Not Allowed", [
                ("Content-Type", "text/plain"), ("Allow", "GET, HEAD"),
                ("Content-Length", str(len(body)))])
            return [body]
        body = source().encode()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


# -- the child's side ------------------------------------------------------------------
class StatsResponder:
    """Answers the supervisor's ``?`` lines with this process's stats, one JSON line each.

    Args:
        sock: the child's end of the metrics socketpair.
        stats: returns this process's ``Server.stats()``.
    """

    def __init__(self, sock: socket.socket, stats: Callable[[], dict[str, Any]]) -> None:
        self.sock = sock
        self.stats = stats
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="reactor-metrics", daemon=True)

    @staticmethod
    def take_channel() -> socket.socket | None:
        """The child's end of the metrics channel named by ``REACTOR_METRICS_FD``, or None.

        Call it first thing in a child: it removes the variable from the environment
        and makes the descriptor non-inheritable, so the app's own subprocesses see
        neither.
        """
        value = os.environ.pop(METRICS_FD_ENV, "")
        if not value.isdigit():
            return None
        try:
            os.set_inheritable(int(value), False)
            return socket.socket(fileno=int(value))
        except OSError as exc:
            log.warning("metrics channel %s unusable: %s", value, exc)
            return None

    def start(self) -> StatsResponder:
        self._thread.start()
        return self

    def send(self) -> None:
        """Send the stats now (unasked: at start and after the last request)."""
        doc = {**self.stats(), "pid": os.getpid()}
        line = json.dumps(doc, default=str).encode() + b"\n"
        with self._lock, contextlib.suppress(OSError):
            self.sock.sendall(line)

    def _run(self) -> None:
        self.send()
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return  # the supervisor is gone
            self.send()  # one answer for however many questions were waiting

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


# -- the supervisor's side -------------------------------------------------------------
class _Channel:
    __slots__ = ("buf", "eof", "last", "pid", "sock")

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.buf = b""
        self.last: dict[str, Any] | None = None
        self.eof = False
        sock.setblocking(False)

    def read(self) -> bool:
        """Read what is there; True if a complete document arrived (or the child left)."""
        got = False
        while not self.eof:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.eof = True
                return True
            self.buf += data
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                try:
                    doc = json.loads(line)
                except ValueError:
                    log.warning("server process %d sent a bad metrics line", self.pid)
                    continue
                if isinstance(doc, dict):
                    self.last = doc
                    got = True
        return got


class ChildStats:
    """The supervisor's view of its children's stats (thread-safe).

    Args:
        listen_queue: the listen-queue depth of every TCP port the children serve,
            read by the supervisor itself (the children leave it out: one scan of
            ``/proc/net/tcp`` per scrape instead of one per child, and none in a
            process that serves the app).
    """

    def __init__(self, listen_queue: Callable[[], dict[str, int | None]] | None = None) -> None:
        self._lock = threading.Lock()
        self._channels: list[_Channel] = []
        self._carry: dict[str, Any] = {}
        self._listen_queue = listen_queue

    def channel(self) -> tuple[socket.socket, socket.socket]:
        """A new socketpair: (the supervisor's end, the child's end to pass on)."""
        mine, theirs = socket.socketpair()
        return mine, theirs

    def add(self, pid: int, sock: socket.socket) -> None:
        """Watch child ``pid`` on ``sock`` (the supervisor's end of its channel)."""
        with self._lock:
            self._sweep()  # fold children that have left: bounded by live children
            self._channels.append(_Channel(pid, sock))

    def _sweep(self) -> None:
        for ch in self._channels:
            ch.read()
        self._fold_departed()

    def _fold_departed(self) -> None:
        keep = []
        for ch in self._channels:
            if ch.eof:
                if ch.last is not None:
                    add_counters(self._carry, ch.last)
                ch.sock.close()
            else:
                keep.append(ch)
        self._channels = keep

    def collect(self, timeout: float = COLLECT_TIMEOUT) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Ask every serving child for its stats; wait up to ``timeout`` for answers.

        Returns:
            ``(docs, carry)``: the latest document of every live child that has served
            (an answer, or its last one if it did not answer in time), and the summed
            counters of children that have exited.
        """
        with self._lock:
            self._sweep()
            pending: list[_Channel] = []
            for ch in self._channels:
                if ch.last is None:
                    continue  # still starting: nothing to count yet
                try:
                    ch.sock.send(b"?\n")
                    pending.append(ch)
                except OSError:
                    pass
            deadline = time.monotonic() + timeout
            with selectors.DefaultSelector() as waiting:  # no FD_SETSIZE limit, unlike select()
                for ch in pending:
                    waiting.register(ch.sock, selectors.EVENT_READ, ch)
                while pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    for key, _ in waiting.select(left):
                        ch = key.data
                        if ch.read():
                            pending.remove(ch)
                            waiting.unregister(ch.sock)
            self._fold_departed()
            docs = [ch.last for ch in self._channels if ch.last is not None]
            return docs, json.loads(json.dumps(self._carry))

    def render(self) -> str:
        """The exposition text of every child's stats summed (``mioreactor.workers.ops.metrics.merge``)."""
        docs, carry = self.collect()
        merged = merge(docs, carry)
        if self._listen_queue is not None:
            merged["listen_queue"] = self._listen_queue()
        return render(merged)

    def close(self) -> None:
        with self._lock:
            for ch in self._channels:
                ch.sock.close()
            self._channels = []


class ListenQueues:
    """Listen-queue depth per TCP port, read from ``/proc/net/tcp`` at most once a second
    (``mioreactor.workers.tools.hostinfo.listen_queue_depth``: the whole port, every SO_REUSEPORT socket
    on it summed).

    Args:
        ports: returns ``(label, port)`` for each TCP listener.
    """

    def __init__(self, ports: Callable[[], list[tuple[str, int]]]) -> None:
        self.ports = ports
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, int | None]] = (-1e9, {})

    def __call__(self) -> dict[str, int | None]:
        from ..tools.hostinfo import listen_queue_depth

        with self._lock:
            at, depths = self._cached
            if time.monotonic() - at >= 1.0:
                depths = {}
                for label, port in self.ports():
                    try:
                        depths[label] = listen_queue_depth(port)
                    except OSError:
                        depths[label] = None
                self._cached = (time.monotonic(), depths)
            return dict(depths)


def single_process_source(stats: Callable[[], dict[str, Any]]) -> Source:
    """The endpoint's source for one process: its own ``Server.stats()``."""

    def source() -> str:
        return render(merge([{**stats(), "pid": os.getpid()}]))

    return source
