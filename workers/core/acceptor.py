"""The acceptor thread: owns the Poll, drains ``accept()``, forwards readiness.

The rule this project exists for
--------------------------------
On a listener event the acceptor calls ``accept()`` until ``BlockingIOError``. A
server that accepts once per edge-triggered event leaves the rest of the accept queue
unannounced; after a load test that queue holds connections the client already
closed, and every new arrival's edge accepts one of those dead connections instead
of the new one: "every new connection hangs up immediately" (docs/the-load-test-bug.md).

Accept errors
-------------
- ``ECONNABORTED``, ``EPROTO``, ``EPERM`` and friends: that connection is gone; count
  it and keep draining.
- ``EMFILE``/``ENFILE``/``ENOBUFS``/``ENOMEM`` (out of descriptors or memory): close the
  reserve descriptor, accept the client, tell it (the handler's overload response)
  and close it, reopen the reserve; then stop draining and retry on a timer with
  backoff (5 ms doubling to 500 ms) or as soon as a connection closes. No new edge
  will come for connections already queued, so waiting for one would strand them,
  and retrying at once would spin the CPU.

Dispatch
--------
All readiness of one poll cycle goes to the shared queue as one batch (a deque), with
the cycle's new connections. After each cycle the acceptor asks the run-slot
scheduler whether the running worker has been stuck in a blocking app call for
longer than the hand-off threshold while work waits; if so a standby worker takes
over (``mioreactor.workers.core.scheduler``). While work waits, it polls with that threshold as
its timeout, so the check happens even when no new event comes.

Backpressure
------------
At ``max_connections`` the acceptor stops accepting (clients wait in the kernel
backlog) and asks workers to wake it when a connection closes; it then drains at
once, because a new edge may never come.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any

from ...reactor import Events, Interest, Poll, Waker
from ...reactor.net import TcpListener, UnixListener
from .worker import DRAIN, FIRST_CONN_TOKEN, Dispatch, NewConnection, Worker

__all__ = ["FIRST_CONN_TOKEN", "Acceptor", "BoundListener"]

log = logging.getLogger("mioreactor")

WAKER_TOKEN = 0
_RW = Interest.READABLE | Interest.WRITABLE
_SKIP_ERRNOS = {
    errno.ECONNABORTED,
    errno.EPROTO,
    errno.EPERM,
    errno.EINTR,
    getattr(errno, "ENONET", -1),
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.ENETUNREACH,
    errno.EOPNOTSUPP,
    errno.ENOPROTOOPT,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
}
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BACKOFF_MIN = 0.005
_BACKOFF_MAX = 0.5


class BoundListener:
    """A listening socket and what the server knows of it."""

    __slots__ = (
        "address", "kind", "listener", "local", "path", "proxy_protocol", "scheme", "tls", "token",
    )

    def __init__(
        self,
        listener: TcpListener | UnixListener,
        kind: str,
        address: Any,
        path: str | None = None,
        proxy_protocol: bool = False,
    ) -> None:
        self.listener = listener
        self.kind = kind  # "tcp" or "unix"
        self.address = address
        # The local address of every connection accepted here, when it is known
        # without asking (a TCP listener bound to one address); None: getsockname().
        self.local: Any = (
            address
            if kind == "tcp" and isinstance(address, tuple) and address[0] not in ("0.0.0.0", "::", "")
            else None
        )
        self.path = path
        self.proxy_protocol = proxy_protocol
        self.token = -1
        # "https" / "http" when the bind spec said so, else None (mioreactor.workers.server.binds).
        self.scheme: str | None = None
        # A mioreactor.workers.tls.listener.TlsListener: connections accepted here speak TLS.
        self.tls: Any = None

    def describe(self) -> str:
        prefix = "https://" if self.tls is not None else ""
        if self.kind == "unix":
            return f"{prefix}unix:{self.path or self.address}"
        host, port = self.address[0], self.address[1]
        return f"{prefix}[{host}]:{port}" if ":" in host else f"{prefix}{host}:{port}"


class Acceptor:
    """The ``reactor-acceptor`` thread. See the module docstring for the rules."""

    def __init__(
        self,
        poll: Poll,
        listeners: list[BoundListener],
        workers: list[Worker],
        dispatch: Dispatch,
        *,
        max_connections: int,
        graceful_timeout: float,
        overload_response: bytes = b"",
        limit_concurrency: int = 0,
    ) -> None:
        self.poll = poll
        self.limit_concurrency = limit_concurrency  # 0: none; beyond it, shed at once
        self.listeners = listeners
        self.workers = workers
        self.dispatch = dispatch
        self.max_connections = max_connections
        self.graceful_timeout = graceful_timeout
        self.overload_response = overload_response
        self.waker = Waker(poll.registry, WAKER_TOKEN)
        self.accepted = 0
        self.accept_errors: dict[str, int] = {}
        self.shed = 0
        self.paused_full = 0  # times accepting paused at max_connections
        self.want_close_notice = False
        self._by_token: dict[int, BoundListener] = {}
        self._next_token = FIRST_CONN_TOKEN
        self._stop_requested = False
        self._retry_at: float | None = None
        self._backoff = _BACKOFF_MIN
        self._last_log = 0.0
        self._reserve = self._open_reserve()
        self._thread = threading.Thread(target=self._run, name="reactor-acceptor", daemon=True)
        for i, bl in enumerate(listeners, start=1):
            bl.token = i
            self._by_token[i] = bl
            poll.registry.register(bl.listener, i, Interest.READABLE)

    # -- control from other threads ----------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def request_stop(self) -> None:
        self._stop_requested = True
        self.waker.wake()

    def connection_closed(self) -> None:
        """Called by workers after a close; wakes us only when we wait for capacity."""
        if self.want_close_notice:
            try:
                self.waker.wake()
            except OSError:  # the acceptor has shut down and closed its waker
                pass

    @property
    def active(self) -> int:
        return self.accepted - sum(w.closed for w in self.workers)

    # -- the loop ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("the acceptor failed; stopping the server")
            self._stop_requested = True
            self._shutdown(time.monotonic())

    def _poll(self, events: Events, timeout: float | None) -> None:
        """Poll under the dispatch's poll lock (one poller at a time, as in mio), then
        add the listener and waker events the hot worker met and handed back."""
        handback = self.dispatch.handback
        with self.dispatch.poll_lock:
            # Looked at under the lock, where the worker parks them: one parked
            # just before we block would otherwise wait for an unrelated event.
            if handback:
                timeout = 0
            self.poll.poll(events, timeout)
            while handback:
                events.raw.append(handback.popleft())

    def _loop(self) -> None:
        events = Events(1024)
        raw = events.raw
        poll = self._poll
        put = self.dispatch.queue.put
        qsize = self.dispatch.queue.qsize
        check = self.dispatch.slots.check
        first = FIRST_CONN_TOKEN
        by_token = self._by_token
        timeout: float | None = None
        # With one run slot there is one consumer: poll again when it is ready.
        pace = self.dispatch.slots.slots == 1
        idle_clear = self.dispatch.idle.clear
        while True:
            if self._retry_at is not None:
                retry = max(0.0, self._retry_at - time.monotonic())
                timeout = retry if timeout is None else min(timeout, retry)
            poll(events, timeout)
            batch: deque[Any] = deque()
            append = batch.append
            ready: list[BoundListener] = []
            woke = False
            for item in raw:
                token = item[0]
                if token >= first:
                    append(item)
                elif token == WAKER_TOKEN:
                    woke = True
                else:
                    bl = by_token.get(token)
                    if bl is not None:
                        ready.append(bl)
            if self._stop_requested:
                if batch:
                    put(batch)
                self._shutdown(time.monotonic())
                return
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self._retry_at = None
                ready = list(self.listeners)
            elif woke and self.want_close_notice and self.active < self.max_connections:
                ready = list(self.listeners)
            for bl in ready:
                self._drain(bl, batch)
            if batch:
                if pace:
                    idle_clear()
                    put(batch)
                    self._wait_for_worker()
                else:
                    put(batch)
            timeout = check(qsize())

    def _wait_for_worker(self) -> None:
        """Pacing: wait until the hot worker has served what we gave it.

        Polling again at once would wake this thread for every event the worker's
        own responses provoke, and each wake takes the GIL from the worker in the
        middle of its batch (measured: a third of echo throughput). Waiting lets
        readiness pile up in the kernel, so the next poll returns one larger batch
        and the two threads switch twice per cycle instead of once per event.
        The wait is cut at the hand-off threshold, to detach a worker stuck in a
        blocking call, and by a stop request or a pending accept retry.

        While the hot worker polls for itself, the work waiting is in the kernel
        where ``check`` cannot see it: when the worker sits in a blocking section
        with nothing queued, go and poll, so that what waits is queued and the next
        check can hand the slot over. A worker that is merely busy polls again
        itself when its batch is done, and sets ``idle`` when it finds nothing or
        meets listener or waker events, which are ours.
        """
        idle = self.dispatch.idle
        slots = self.dispatch.slots
        check = slots.check
        qsize = self.dispatch.queue.qsize
        step = slots.handoff_after
        self_poll = self.dispatch.poll is not None
        wait = step
        while not idle.wait(wait):
            if self._stop_requested or self._retry_at is not None:
                return
            due = check(qsize())
            if due is None:
                if not self_poll or slots.blocked():
                    return  # nothing queued: poll for what waits in the kernel
                wait = step
            else:
                wait = max(due, 0.0001)  # the next hand-off is due then, not a step later

    def _drain(self, bl: BoundListener, batch: deque[Any]) -> None:
        """accept() until BlockingIOError, capacity, or a resource error."""
        accept = bl.listener.accept
        append = batch.append
        tcp = bl.kind == "tcp"
        active = self.active
        limit = self.max_connections
        while True:
            if active >= limit:
                if not self.want_close_notice:
                    self.paused_full += 1
                self.want_close_notice = True
                # A close may have happened between our count and the flag: recheck.
                active = self.active
                if active >= limit:
                    return
            try:
                stream, peer = accept()
            except BlockingIOError:
                self.want_close_notice = self._retry_at is not None
                self._backoff = _BACKOFF_MIN
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    self._out_of_resources(bl, exc)
                    return
                self._count_error(exc)
                continue
            if self.limit_concurrency and active >= self.limit_concurrency:
                self._refuse(bl, stream)
                continue
            token = self._next_token
            self._next_token = token + 1
            try:
                if tcp:
                    stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.poll.registry.register(stream, token, _RW)
            except OSError as exc:
                self._count_error(exc)
                stream.close()
                continue
            self.accepted += 1
            active += 1
            append(NewConnection(token, stream, peer, bl))

    def _count_error(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.accept_errors[name] = self.accept_errors.get(name, 0) + 1

    def _out_of_resources(self, bl: BoundListener, exc: OSError) -> None:
        self._count_error(exc)
        now = time.monotonic()
        if now - self._last_log >= 5.0:
            self._last_log = now
            log.warning(
                "accept failed: %s; shedding with the reserve descriptor and retrying in "
                "%.0f ms (errors so far: %s)",
                exc.strerror,
                self._backoff * 1000,
                self.accept_errors,
            )
        self._shed_one(bl)
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        self.want_close_notice = True

    def _refuse(self, bl: BoundListener, stream: Any) -> None:
        """``limit_concurrency``: answer 503 (plain listeners) and close at once."""
        try:
            if self.overload_response and bl.tls is None:
                stream.send(self.overload_response)
        except OSError:
            pass
        stream.close()
        self.shed += 1

    def _shed_one(self, bl: BoundListener) -> None:
        """Use the reserve descriptor to tell one queued client we are full."""
        if self._reserve < 0:
            self._reserve = self._open_reserve()
            return
        os.close(self._reserve)
        self._reserve = -1
        try:
            stream, _ = bl.listener.accept()
        except OSError:
            pass
        else:
            try:
                if self.overload_response:
                    stream.send(self.overload_response)
            except OSError:
                pass
            stream.close()
            self.shed += 1
        finally:
            self._reserve = self._open_reserve()

    @staticmethod
    def _open_reserve() -> int:
        try:
            return os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return -1

    # -- graceful stop -------------------------------------------------------------------
    def _shutdown(self, started: float) -> None:
        """Stop accepting, let workers finish, then stop them and close everything.

        Each listener is drained right before it closes: closing a listener resets the
        connections still in its accept queue, so the last ``accept()`` comes as late
        as possible. A connection whose handshake the kernel completes between that
        last ``accept()`` and the close is still reset (every server has this window;
        docs/reliability.md, "Known limits").
        """
        for bl in self.listeners:
            try:
                self.poll.registry.deregister(bl.listener)
            except (OSError, ValueError):
                pass
            batch: deque[Any] = deque()
            self._drain(bl, batch)
            if batch:
                self.dispatch.queue.put(batch)
            bl.listener.close()
            if bl.path:
                try:
                    os.unlink(bl.path)
                except OSError:
                    pass
        put = self.dispatch.queue.put
        put(DRAIN)
        self.want_close_notice = True
        deadline = started + self.graceful_timeout
        events = Events(1024)
        while self.active > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("graceful stop: %d connection(s) cut at the timeout", self.active)
                break
            self._poll(events, min(left, 0.05))
            batch = deque(item for item in events.raw if item[0] >= FIRST_CONN_TOKEN)
            if batch:
                put(batch)
            self.dispatch.slots.check(self.dispatch.queue.qsize())
        self.dispatch.stop_workers(len(self.workers))
        for w in self.workers:
            w.join()
        self.waker.close()
        if self._reserve >= 0:
            os.close(self._reserve)
            self._reserve = -1
        self.poll.close()
