"""The handler protocol: what a worker tells a raw protocol about its connections.

A handler sees each connection's life as callbacks, in this order::

    connection_made(conn)
    data_received(conn, data)*   eof_received(conn)?   pause_writing / resume_writing*
    connection_lost(conn, exc)

Every callback runs on the worker thread that owns the connection, so a handler never
needs a lock for its own state. One handler instance serves all the connections of
one worker: the server calls ``factory(worker)`` once per worker thread. Per-connection
state belongs on ``conn.context`` (free for the handler to set).

The worker does the socket I/O: it reads until the kernel says "would block" and
hands the bytes over, and ``conn.write()`` sends at once and buffers what the kernel
does not take. A handler therefore never touches the socket and never needs to drain
anything itself; spurious readiness never reaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BaseHandler",
    "Connection",
    "EchoHandler",
    "Handler",
    "HandlerFactory",
    "TimerHandle",
    "WorkerContext",
]


class TimerHandle(Protocol):
    """A timer set with ``call_later``; ``cancel()`` is idempotent."""

    def cancel(self) -> None: ...


class WorkerContext(Protocol):
    """What a handler may ask of the worker thread that runs it.

    Attributes:
        index: the worker's number, 0 to N-1.
        name: the thread name, ``reactor-worker-K``.
    """

    index: int
    name: str

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` on this worker thread after ``delay`` seconds."""
        ...

    def blocking(self) -> AbstractContextManager[None]:
        """Mark a section that may block (a WSGI app call, a body iterator).

        The worker scheduler lets only a few workers run Python code at once (see
        docs/design.md, "The GIL"); a section that runs longer than the hand-off
        threshold gives its run slot to a waiting worker. Handlers must wrap any call
        into user code that may block in ``with worker.blocking():``.
        """
        ...


class Connection(Protocol):
    """One accepted stream, as a handler sees it. Only its worker thread may use it.

    Attributes:
        token: the never-reused reactor token of this connection.
        peer: the peer address (``(host, port)`` for TCP, a path or ``""`` for Unix).
        local: the local address.
        context: free for the handler (per-connection protocol state).
        worker: the worker that owns this connection.
        guard: None, or a re-entrant lock whose holder owns the connection: the
            handler's own ``guard`` attribute, copied by the worker at adoption. A
            handler has one when code outside a connection's own callbacks may touch
            it (the ASGI handler: its loop's lock, as a coroutine may write to any
            connection); every worker then holds it around each callback it serves
            on the connection (docs/design.md, "Ownership").
    """

    token: int
    peer: Any
    local: Any
    context: Any
    guard: Any

    @property
    def worker(self) -> WorkerContext:
        """The worker serving this connection now."""
        ...

    @property
    def handler(self) -> Handler:
        """The handler of the worker serving this connection now.

        A timer callback should call its handler through this, not through a handler
        captured when the timer was set: the timer may fire on another worker.
        """
        ...

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` now; buffer what the kernel does not take and flush it later.

        When the buffer rises above the high-water mark the handler's
        ``pause_writing`` is called; below the low-water mark, ``resume_writing``.
        Writing to a closing or closed connection is silently ignored.
        """
        ...

    def writelines(self, chunks: list[bytes]) -> None:
        """Send several buffers in one system call where possible (``sendmsg``)."""
        ...

    def sendfile(self, file: Any, offset: int, count: int | None) -> None:
        """Queue ``count`` bytes of ``file`` from ``offset`` (None: to the end).

        Uses ``os.sendfile`` when the file has a real descriptor, else reads it in
        chunks. Ordered with ``write()``: it goes out after what was written before.
        """
        ...

    @property
    def write_buffer_size(self) -> int:
        """Bytes accepted by ``write`` and not yet taken by the kernel."""
        ...

    @property
    def closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was called or the connection is gone."""
        ...

    def close(self) -> None:
        """Flush what is buffered, then close. ``connection_lost`` follows."""
        ...

    def close_lingering(self, timeout: float, max_bytes: int) -> None:
        """Flush, shut the write side, discard input (bounded by ``timeout`` seconds
        and ``max_bytes``) until the peer's EOF, then close. ``connection_lost``
        follows. For error responses the peer must read although it still sends."""
        ...

    def abort(self) -> None:
        """Close now, dropping buffered output. ``connection_lost`` follows."""
        ...

    def pause_reading(self) -> None:
        """Stop delivering ``data_received`` until ``resume_reading``."""
        ...

    def resume_reading(self) -> None:
        """Deliver data again; reads at once, because the edge was already consumed."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """A timer bound to this connection: cancelled when the connection closes."""
        ...

    def rearm(
        self, delay: float, callback: Callable[[Connection], None], now: float | None = None
    ) -> TimerHandle:
        """The connection's own timer, set or moved to ``delay`` seconds from now;
        ``callback(conn)`` runs then.

        Returns the same handle every time; re-arming allocates nothing, so use it for
        per-request deadlines (header, body, keep-alive) with a callback that is not
        made anew each time. Cancelled when the connection closes. ``now`` is
        ``time.monotonic()`` if the caller has just read it (None: read here).
        """
        ...


@runtime_checkable
class Handler(Protocol):
    """The event handler of a raw protocol. All methods run on the owning worker."""

    def connection_made(self, conn: Connection) -> None: ...

    def data_received(self, conn: Connection, data: bytes) -> None: ...

    def eof_received(self, conn: Connection) -> bool:
        """The peer shut down its sending side. Return True to keep writing."""
        ...

    def pause_writing(self, conn: Connection) -> None: ...

    def resume_writing(self, conn: Connection) -> None: ...

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None: ...


HandlerFactory = Callable[[WorkerContext], Handler]


class BaseHandler:
    """A handler with do-nothing callbacks, to subclass."""

    def __init__(self, worker: WorkerContext) -> None:
        self.worker = worker

    def connection_made(self, conn: Connection) -> None:
        pass

    def data_received(self, conn: Connection, data: bytes) -> None:
        pass

    def eof_received(self, conn: Connection) -> bool:
        return False

    def pause_writing(self, conn: Connection) -> None:
        pass

    def resume_writing(self, conn: Connection) -> None:
        pass

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        pass


class EchoHandler(BaseHandler):
    """The smallest protocol: send back what arrives. Stops reading while the peer lags."""

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.write(data)

    def pause_writing(self, conn: Connection) -> None:
        conn.pause_reading()

    def resume_writing(self, conn: Connection) -> None:
        conn.resume_reading()

