"""A worker thread: its queue, its handler, its connections and its timers.

The acceptor registers each accepted stream and sends the worker a batch per poll
cycle: ``NewConnection`` items and ``(token, bits)`` readiness tuples. From then on
only this thread reads, writes, deregisters and closes that stream. Events for a
token this worker no longer knows (closed meanwhile) are ignored: tokens are never
reused, so such an event cannot belong to anyone else.

Before touching its batch the worker takes a run slot (``workers.scheduler``), so
that on a GIL build CPU-light work runs on one thread at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from reactor import Registry
from reactor.event import ERROR, READ_CLOSED, READABLE, WRITABLE
from reactor.net import Stream
from workers.connection import Conn
from workers.scheduler import RunSlots
from workers.timers import Timer, Timers

if TYPE_CHECKING:
    from workers.handler import Handler, HandlerFactory

__all__ = ["DRAIN", "STOP", "NewConnection", "Worker"]

log = logging.getLogger("workers")

_READ_BITS = READABLE | READ_CLOSED | ERROR


class NewConnection:
    """The hand-off of an accepted, registered stream to its worker."""

    __slots__ = ("listener", "peer", "stream", "token")

    def __init__(self, token: int, stream: Stream, peer: Any, listener: Any) -> None:
        self.token = token
        self.stream = stream
        self.peer = peer
        self.listener = listener


class _Control:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


DRAIN = _Control("DRAIN")  # graceful stop: close idle connections, finish the rest
STOP = _Control("STOP")  # final: abort what is left and end the thread


class Worker:
    """One worker thread (``reactor-worker-K``).

    Args:
        index: K, 0-based.
        factory: makes this worker's handler (called on the worker thread).
        registry: to deregister connections before closing them.
        slots: the run-slot scheduler shared by all workers, or None for no limit.
        on_close: called after a connection is closed (wakes the acceptor when it
            waits for capacity).
    """

    def __init__(
        self,
        index: int,
        factory: HandlerFactory,
        registry: Registry,
        slots: RunSlots | None,
        on_close: Callable[[], None],
    ) -> None:
        self.index = index
        self.name = f"reactor-worker-{index}"
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.conns: dict[int, Conn] = {}
        self.timers = Timers()
        self.closed = 0
        self.adopted = 0
        self.handler_errors = 0
        self.draining = False
        self.handler: Handler | None = None
        self.started = threading.Event()
        self.start_error: BaseException | None = None
        self._factory = factory
        self._registry = registry
        self._slots = slots
        self._holder = slots.holder(self.name) if slots is not None else None
        self._blocking: AbstractContextManager[None] = (
            slots.section(self._holder) if slots is not None and self._holder else nullcontext()
        )
        self._on_close = on_close
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    # -- WorkerContext -------------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.timers.call_later(delay, callback)

    def blocking(self) -> AbstractContextManager[None]:
        return self._blocking

    # -- thread control --------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self.handler = self._factory(self)
        except BaseException as exc:
            self.start_error = exc
            self.started.set()
            return
        self.started.set()
        get = self.queue.get
        timers = self.timers
        slots = self._slots
        holder = self._holder
        run_batch = self._run_batch
        while True:
            timeout = timers.timeout()
            try:
                msg = get(True, timeout)
            except queue.Empty:
                msg = None
            if slots is not None and holder is not None:
                slots.acquire(holder)
            try:
                if type(msg) is list:
                    run_batch(msg)
                elif msg is STOP:
                    self._abort_all()
                    return
                elif msg is DRAIN:
                    self._drain()
                elif msg is not None:
                    msg()  # a callable sent with call_soon_threadsafe
                for error in timers.run_due():
                    self.handler_errors += 1
                    log.error("timer callback failed in %s", self.name, exc_info=error)
            except Exception:
                log.exception("unexpected error in %s; it goes on", self.name)
            finally:
                if slots is not None and holder is not None:
                    slots.release(holder)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on this worker thread."""
        self.queue.put(fn)

    # -- the hot path ------------------------------------------------------------------
    def _run_batch(self, batch: list[Any]) -> None:
        conns = self.conns
        for item in batch:
            if type(item) is tuple:
                token, bits = item
                conn = conns.get(token)
                if conn is None:
                    continue  # closed meanwhile; tokens are never reused
                try:
                    if bits & _READ_BITS:
                        conn.on_readable()
                    if bits & WRITABLE and conn._wbuf:
                        conn.on_writable()
                    if bits & ERROR and conn._state != 2:
                        conn.on_closed(bits)
                except Exception as exc:
                    self._handler_failed(conn, exc)
            else:
                self._adopt(item)

    def _adopt(self, nc: NewConnection) -> None:
        handler = self.handler
        assert handler is not None
        conn = Conn(nc.token, nc.stream, nc.peer, self, handler)
        self.conns[nc.token] = conn
        self.adopted += 1
        try:
            handler.connection_made(conn)
            if self.draining:
                self._drain_one(conn)
            # Clients often send at once: read now rather than wait for the event the
            # registration will raise (which then finds nothing: a spurious event).
            conn.on_readable()
        except Exception as exc:
            self._handler_failed(conn, exc)

    def _handler_failed(self, conn: Conn, exc: Exception) -> None:
        self.handler_errors += 1
        log.error("handler failed on %r; closing it", conn, exc_info=exc)
        conn.abort()

    def forget(self, conn: Conn) -> None:
        """Called by ``Conn`` teardown: deregister before close, then drop it."""
        if self.conns.pop(conn.token, None) is None:
            return
        stream = conn.stream
        try:
            self._registry.deregister(stream)
        except (OSError, ValueError):
            pass
        stream.close()
        self.closed += 1
        self._on_close()

    # -- graceful stop -----------------------------------------------------------------
    def _drain(self) -> None:
        self.draining = True
        for conn in list(self.conns.values()):
            self._drain_one(conn)

    def _drain_one(self, conn: Conn) -> None:
        drain = getattr(self.handler, "drain", None)
        try:
            if drain is not None:
                drain(conn)
            else:
                conn.close()
        except Exception as exc:
            self._handler_failed(conn, exc)

    def _abort_all(self) -> None:
        for conn in list(self.conns.values()):
            conn.abort()

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "connections": len(self.conns),
            "queue_depth": self.queue.qsize(),
            "adopted": self.adopted,
            "closed": self.closed,
            "handler_errors": self.handler_errors,
        }
