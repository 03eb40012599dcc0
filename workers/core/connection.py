"""The worker side of one accepted stream: buffered writes, reads, timers, teardown.

Ownership: one thread at a time uses a ``Conn`` (docs/design.md, "Ownership"): the
worker that is serving it, which sets ``conn.worker`` and ``conn.handler`` to itself
before each use. ``_busy`` marks a connection that a detached worker still serves;
other workers stash its events in ``_pending`` and its timers in ``_deferred``.
With ``REACTOR_DEBUG=1`` every entry point asserts that the calling thread is the
worker the connection was last handed to, or, for a connection with a ``guard`` (a
lock its handler set: the ASGI loop's), that the calling thread holds that lock: the
workers take it around every callback they serve on such a connection, so its holder
is the one thread that may touch it.

Hot path: ``on_readable`` drains the socket (edge-triggered rule) and hands each
chunk to the handler; ``write`` sends at once and queues only what the kernel did
not take; a writable event flushes the queue with one ``sendmsg``. On epoll and
kqueue a short read or a short send counts as drained (``Stream.short_io_drains``,
docs/design.md, "The edge-triggered rule in the worker"): the read loop stops at a read that returned
less than ``RECV_SIZE`` instead of paying one more ``recv`` that raises
``BlockingIOError``, unless the event said the peer closed its side (then it reads
to end of stream); the fallback backend drains strictly.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ...reactor.event import ERROR, READ_CLOSED
from ...reactor.net import Stream
from .handler import WorkerContext
from .timers import Deadline, Timer, Timers

if TYPE_CHECKING:
    from .handler import Handler

__all__ = ["Conn", "FileSlice", "Owner"]


class Owner(WorkerContext, Protocol):
    """What a connection needs from the worker thread that owns it (``worker.Worker``).

    A ``Protocol`` here, so that this module does not import ``worker`` (which imports
    this one): the owner is the thread whose name the ownership check compares, the
    timer heap the connection's deadlines live in, and the two calls of its life; and,
    for the handler, all a ``WorkerContext`` offers.
    """

    timers: Timers

    def reschedule(self, conn: Conn) -> None:
        """Serve ``conn``'s readability again in the owner's next batch."""

    def forget(self, conn: Conn) -> None:
        """Deregister ``conn`` and drop it (teardown; deregister before close)."""

log = logging.getLogger("mioreactor")

DEBUG = os.environ.get("REACTOR_DEBUG", "") not in ("", "0")
RECV_SIZE = 65536
READ_BUDGET = 4  # chunks read in one go before the connection yields (on_readable)
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
_IOV_MAX = 64
_HUP_BITS = READ_CLOSED | ERROR  # after these, read to end of stream (no edge follows)
_LINGER_ZERO = struct.pack("ii", 1, 0)
_LOST_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


class FileSlice:
    """A queued ``sendfile``: ``count`` bytes of a file from ``offset``.

    It holds its own duplicate of the descriptor, so the application may close its
    file object (PEP 3333 ``close()``) before the bytes have left.
    """

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = os.dup(fd)
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Conn:
    """One connection, owned by one worker. Implements ``mioreactor.workers.core.handler.Connection``.

    A TLS listener makes ``mioreactor.workers.tls.conn.TlsConn`` instead (chosen at accept time,
    so a plain connection never pays a TLS check); ``tls`` is None here.
    """

    tls: Any = None  # TlsConn: the TlsSession (mioreactor.workers.tls.context) once the handshake is done

    __slots__ = (
        "_busy",
        "_deadline",
        "_deferred",
        "_eof",
        "_hup",
        "_linger",
        "_pending",
        "_read_paused",
        "_recv",
        "_send",
        "_sendmsg",
        "_short",
        "_state",
        "_timers",
        "_wbuf",
        "_write_paused",
        "_wsize",
        "context",
        "guard",
        "handler",
        "listener",
        "local",
        "peer",
        "stream",
        "token",
        "worker",
    )

    # _state: 0 open, 1 closing (flush then close), 2 closed, 3 lingering (write side
    # shut, reading and discarding; see ``close_lingering``)
    def __init__(
        self,
        token: int,
        stream: Stream,
        peer: Any,
        worker: Owner,
        handler: Handler,
        local: Any = None,
    ) -> None:
        self.token = token
        self.stream = stream
        self.peer = peer
        if local is None:  # not known from the listener: ask the kernel
            try:
                local = stream.local_addr()
            except OSError:
                local = None
        self.local = local
        self.worker = worker
        self.handler = handler
        self.context: Any = None
        self.guard: Any = None  # a lock whose holder owns the connection (ASGI: the loop's)
        self._recv, self._send, self._sendmsg = stream.io_methods()
        self._short = stream.short_io_drains
        # A list, not a deque: an empty deque costs 600 bytes per idle connection, an
        # empty list 56 (docs/performance.md, "Memory per idle connection"), and the
        # queue is short (at most a response's pieces; ``_flush`` sends 64 at a time).
        self._wbuf: list[Any] = []
        self._wsize = 0
        self._state = 0
        self._read_paused = False
        self._write_paused = False
        self._eof = False
        self._hup = False  # an event said read-closed: read to EOF from now on
        self._timers: set[Timer] | None = None
        self._deadline: Deadline | None = None
        self._busy: Any = None
        self._pending = 0
        self._deferred: list[Callable[[], None]] | None = None
        self._linger: tuple[float, int] | None = None  # close_lingering's bounds
        self.listener: Any = None

    def __repr__(self) -> str:
        return f"<Conn token={self.token} peer={self.peer!r} state={self._state}>"

    def _check_owner(self) -> None:
        guard = self.guard
        if guard is not None:
            assert guard._is_owned(), (
                f"connection {self.token} touched from thread {threading.current_thread().name} "
                f"without holding its guard (docs/design.md, Ownership)"
            )
            return
        assert threading.current_thread().name == self.worker.name, (
            f"connection {self.token} touched from thread {threading.current_thread().name}, "
            f"not from {self.worker.name} which serves it"
        )

    # -- the Connection protocol ---------------------------------------------------
    @property
    def write_buffer_size(self) -> int:
        return self._wsize

    @property
    def closing(self) -> bool:
        return self._state != 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if DEBUG:
            self._check_owner()
        if self._state or not data:
            return
        if self._wbuf:
            self._queue(data)
            return
        try:
            n = self._send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._teardown(exc)
            return
        if n < len(data):
            rest = memoryview(data)[n:]
            self._wbuf.append(rest)
            self._wsize += len(rest)
            self._send_on(n)

    def writelines(self, chunks: list[bytes]) -> None:
        if DEBUG:
            self._check_owner()
        if self._state:
            return
        if len(chunks) == 1 or self._wbuf:
            for chunk in chunks:
                self.write(chunk)
            return
        total = sum(map(len, chunks))
        try:
            n = self._sendmsg(chunks)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._teardown(exc)
            return
        if n < total:
            for chunk in chunks:
                size = len(chunk)
                if n >= size:
                    n -= size
                    continue
                rest = memoryview(chunk)[n:] if n else chunk
                self._wbuf.append(rest)
                self._wsize += len(rest)
                n = 0
            self._send_on(1)

    def sendfile(self, file: Any, offset: int, count: int | None) -> None:
        if self._state:
            return
        if count is None:
            count = os.fstat(file.fileno()).st_size - offset
        if count <= 0:
            return
        self._wbuf.append(FileSlice(file.fileno(), offset, count))
        self._wsize += count
        self._send_on(0)

    def _send_on(self, sent: int) -> None:
        """After a short send (``sent`` bytes taken, maybe 0): go on, or wait for the edge.

        On epoll and kqueue a short send (``sent`` > 0) counts as drained
        (``Stream.short_io_drains``): the send buffer is full, and space freed
        after it raises a writable edge, so the rest waits for that event. Otherwise
        a short send is not "would block": the fallback backend re-arms WRITABLE
        only on ``BlockingIOError``, so stopping there could wait forever (seen as a
        stalled 8 MB echo over a Unix socket, tests/workers/test_echo.py), and the
        queue is sent on until that error. Usually the retry raises at once.

        The handler is told ``pause_writing`` only after that, and never
        ``resume_writing`` from inside its own ``write()``: resuming is for writable
        events, so a handler is not re-entered while it is still writing.
        """
        if not (sent and self._short):
            self._flush(notify=False)
        if self._state == 0:
            self._check_high_water()

    def _queue(self, data: Any) -> None:
        self._wbuf.append(data)
        self._wsize += len(data)
        self._check_high_water()

    def _check_high_water(self) -> None:
        if not self._write_paused and self._wsize > HIGH_WATER and not self._state:
            self._write_paused = True
            self.handler.pause_writing(self)

    def close(self) -> None:
        if self._state:
            if self._state == 3:  # stop lingering now (graceful stop, a handler's close)
                self._teardown(None)
            return
        if self._wbuf:
            self._state = 1  # finish when the buffer drains (on_writable)
            self.pause_reading()
        else:
            self._teardown(None)

    def close_lingering(self, timeout: float, max_bytes: int) -> None:
        """Close after an error response so that the client can read it.

        Closing a socket with unread input makes the kernel send RST, and a client
        still sending (an upload over the limit, requests pipelined after a bad one)
        may then lose the response before it reads it. So, as nginx's
        ``lingering_close`` and Apache's ``lingering_close()`` do: flush what is
        queued, ``shutdown(SHUT_WR)`` (the client sees the response, then EOF), then
        read and discard until the client's EOF, ``max_bytes`` discarded, or
        ``timeout`` seconds, whichever comes first; then close.

        Args:
            timeout: seconds to linger after the write side is shut.
            max_bytes: bytes to discard at most.
        """
        if self._state:
            return
        self._linger = (timeout, max_bytes)
        if self._wbuf:
            self._state = 1  # _flush starts lingering when the buffer drains
            self.pause_reading()
        else:
            self._start_linger()

    def _start_linger(self) -> None:
        assert self._linger is not None
        timeout = self._linger[0]
        self._state = 3
        try:
            self.stream.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the peer is gone already
            self._teardown(exc)
            return
        self.rearm(timeout, _linger_expired)
        self._read_paused = False
        self._linger_read()

    def _linger_read(self) -> None:
        """Read and drop the client's bytes (edge-triggered: until would-block)."""
        assert self._linger is not None
        timeout, budget = self._linger
        recv = self._recv
        chunks = READ_BUDGET
        while budget > 0:
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                self._linger = (timeout, budget)
                return
            except OSError as exc:
                self._teardown(exc)
                return
            if not data:
                break  # the client's EOF: it has read the response
            budget -= len(data)
            chunks -= 1
            if not chunks and budget > 0:
                self._linger = (timeout, budget)
                self.worker.reschedule(self)  # fairness, as on_readable
                return
        self._teardown(None)

    def abort(self) -> None:
        if self._state != 2:
            # Drop what the kernel still holds too: SO_LINGER 0 makes close() send RST
            # and free the send buffer. A plain close() would leave an orphaned socket
            # retrying megabytes towards a client that does not read (the slow-reader
            # case that ``abort`` exists for), for minutes, out of any descriptor count.
            try:
                self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            except OSError:
                pass
            self._teardown(None)

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        if self._read_paused and self._state == 0:
            self._read_paused = False
            # The readiness edge may have come and gone while paused: read now.
            self.on_readable()

    def rearm(
        self, delay: float, callback: Callable[[Any], None], now: float | None = None
    ) -> Deadline:
        """The connection's own timer: set (or move) it to ``delay`` seconds from now.

        ``callback(conn)`` runs when it falls due. Always the same handle; re-arming
        costs a float store, not an allocation (see ``mioreactor.workers.core.timers.Deadline``).
        Closing the connection cancels it. ``now``: ``time.monotonic()`` as the caller
        just read it, if it did (one clock read less).
        """
        dl = self._deadline
        if dl is None:
            dl = self._deadline = Deadline(self.worker.timers, self)
        return dl.set(delay, callback, now)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timers = self._timers
        if timers is None:
            timers = self._timers = set()
        return self.worker.timers.call_later(delay, callback, timers, self)

    def close_when_idle(self) -> None:
        """Graceful stop: the handler's ``drain`` if it has one, else ``close()``."""
        drain = getattr(self.handler, "drain", None)
        if drain is not None:
            drain(self)
        else:
            self.close()

    # -- driven by the worker ------------------------------------------------------
    def start(self) -> None:
        """Adopted by a worker: tell the handler (``TlsConn`` waits for its handshake)."""
        self.handler.connection_made(self)

    def on_readable(self, bits: int = 0, strict: bool = False) -> None:
        """Drain the socket, delivering each chunk.

        Drained means ``BlockingIOError``, or on epoll and kqueue a short read
        (``Stream.short_io_drains``): a ``recv`` that returned less than
        ``RECV_SIZE`` emptied the receive queue, and data that arrives after it
        raises a new edge. Once an event carried the read-closed bit (``bits``) the
        socket is read to end of stream: the FIN that came with the data raises no
        further edge. ``strict`` drains to ``BlockingIOError`` whatever the backend:
        for a read with no event behind it that may stand for one that was dropped
        (the first read of a new connection: ``Worker._adopt``).

        Fairness: after ``READ_BUDGET`` chunks in one go the drain is not given up
        but *rescheduled*: the worker serves this connection's readiness again in its
        next batch, after the other connections' events (``Worker.reschedule``). Without that, a
        client that answers each response at once keeps the loop reading its next
        request before the socket ever runs dry, and holds the worker while other
        connections wait (measured: one connection served ~10 requests in a row and
        others waited 70 ms, mixed load). No readiness is lost: the connection
        is served again without waiting for an edge, and that serving drains on.
        """
        if bits & _HUP_BITS:
            self._hup = True
        if self._read_paused or self._state or self._eof:
            if self._state == 3:
                self._linger_read()
            return
        recv = self._recv
        handler = self.handler
        budget = READ_BUDGET
        short = self._short and not self._hup and not strict
        while True:
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                return
            except _LOST_ERRORS as exc:
                self._teardown(exc)
                return
            except OSError as exc:
                self._teardown(exc)
                return
            if not data:
                self._on_eof()
                return
            handler.data_received(self, data)
            if self._read_paused or self._state:
                return
            if short and len(data) < RECV_SIZE:
                return  # a short read drained the socket (epoll, kqueue)
            budget -= 1
            if not budget:
                self.worker.reschedule(self)
                return

    def _on_eof(self) -> None:
        self._eof = True
        keep = self.handler.eof_received(self)
        if not keep and not self._state:
            self.close()

    def on_writable(self) -> None:
        if self._wbuf or self._write_paused:
            self._flush()

    def _flush(self, notify: bool = True) -> None:
        """Send queued data until done, ``BlockingIOError``, or (epoll, kqueue) a short send.

        Args:
            notify: call ``resume_writing`` when the buffer drains below the low-water
                mark (from writable events only; see ``_send_on``).
        """
        wbuf = self._wbuf
        try:
            while wbuf:
                head = wbuf[0]
                if type(head) is FileSlice:
                    n = self.stream.sendfile(head.fd, head.offset, head.count)
                    if n == 0:  # the file is shorter than announced
                        self._wsize -= head.count
                        wbuf.pop(0).release()
                        continue
                    head.offset += n
                    head.count -= n
                    self._wsize -= n
                    if head.count <= 0:
                        wbuf.pop(0).release()
                    continue
                if len(wbuf) > 1:
                    chunks: list[Any] = []
                    for item in wbuf:
                        if type(item) is FileSlice or len(chunks) >= _IOV_MAX:
                            break
                        chunks.append(item)
                    n = self._sendmsg(chunks)
                    offered = sum(map(len, chunks))
                else:
                    n = self._send(head)
                    offered = len(head)
                self._wsize -= n
                short = 0 < n < offered
                while n:
                    head = wbuf[0]
                    size = len(head)
                    if n >= size:
                        del wbuf[0]
                        n -= size
                    else:
                        wbuf[0] = memoryview(head)[n:]
                        n = 0
                if short and self._short:
                    break  # a short send filled the buffer: the writable edge follows
        except BlockingIOError:
            pass
        except OSError as exc:
            self._teardown(exc)
            return
        if notify and self._write_paused and self._wsize <= LOW_WATER and self._state == 0:
            self._write_paused = False
            self.handler.resume_writing(self)
        if self._state == 1 and not wbuf:
            if self._linger is not None:
                self._start_linger()
            else:
                self._teardown(None)

    def on_closed(self, bits: int) -> None:
        """The kernel says the peer is gone for writing (hang-up or error)."""
        if self._state != 2:
            self._teardown(self.stream.take_error() or ConnectionResetError("peer closed"))

    def _teardown(self, exc: BaseException | None) -> None:
        """Deregister, close, forget: no descriptor, registration or timer is left."""
        if self._state == 2:
            return
        self._state = 2
        deadline = self._deadline
        if deadline is not None:
            self._deadline = None
            deadline.retire()
        timers = self._timers
        if timers:
            self._timers = None
            for timer in list(timers):
                timer.owner = None
                timer.cancel()
        for item in self._wbuf:
            if type(item) is FileSlice:
                item.release()
        self._wbuf.clear()
        self._wsize = 0
        self.worker.forget(self)
        try:
            self.handler.connection_lost(self, exc)
        except Exception:
            log.exception("handler.connection_lost failed for %r", self)


def _linger_expired(conn: Conn) -> None:
    """The lingering close ran out of time: close now (the deadline's callback)."""
    if conn._state == 3:
        conn._teardown(None)
