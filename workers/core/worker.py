"""Worker threads: one hot worker serves the shared queue; the rest stand by.

The acceptor registers each accepted stream and puts one batch per poll cycle on the
shared queue: ``NewConnection`` items and ``(token, bits)`` readiness tuples. A worker
holding a run slot (``mioreactor.workers.core.scheduler``) takes the batch and serves it: it reads and
writes each ready connection until ``BlockingIOError`` and runs the handler.

Ownership: one thread at a time touches a connection. With one slot that is simply
the holder. When the holder is detached because an app call blocked too long, the
connection it was serving is marked busy (``conn._busy``): the next holder stashes
that connection's events and timers instead of touching it, and the detached worker
hands them back (re-queued) when it is done with the connection. With several slots
(free-threaded builds) every event claims its connection the same way.

Events for a token nobody knows (closed meanwhile) are ignored: tokens are never
reused, so such an event cannot belong to another connection.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ...reactor import Events, Poll, Registry
from ...reactor.event import ERROR, READ_CLOSED, READABLE, WRITABLE
from ...reactor.net import Stream
from .connection import Conn
from .scheduler import BlockingSection, RunSlots
from .timers import Deadline, Timer, Timers

if TYPE_CHECKING:
    from .handler import Handler, HandlerFactory

__all__ = ["DRAIN", "FIRST_CONN_TOKEN", "STOP", "Dispatch", "NewConnection", "Worker"]

log = logging.getLogger("mioreactor")

_READ_BITS = READABLE | READ_CLOSED | ERROR
_SPIN = 0.001  # seconds the hot worker waits in its own poll before handing over


class NewConnection:
    """The hand-off of an accepted, registered stream to the workers."""

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


FIRST_CONN_TOKEN = 1 << 16  # below: the waker and listeners; above: connections

DRAIN = _Control("DRAIN")  # graceful stop: close idle connections, finish the rest
STOP = _Control("STOP")  # final: one per worker; abort what is left and end


class Dispatch:
    """What the workers share: the queue, the connection table, timers, run slots.

    ``poll`` is set when the hot worker may poll for itself (one run slot): it then
    takes the ``poll_lock`` (whoever polls holds it: one poller at a time, as mio's
    ``Poll::poll(&mut self)``) and hands listener and waker events it meets to the
    acceptor through ``handback``.
    """

    def __init__(
        self,
        registry: Registry,
        slots: RunSlots,
        on_close: Callable[[], None],
        poll: Poll | None = None,
    ) -> None:
        self.poll = poll if slots.slots == 1 else None
        self.poll_lock = threading.Lock()
        self.handback: deque[tuple[int, int]] = deque()
        self.handed_back = 0
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        slots.queue_depth = self.queue.qsize
        self.conns: dict[int, Conn] = {}
        self.timers = Timers()
        self.slots = slots
        self.registry = registry
        self.on_close = on_close
        self.draining = False
        self.stopping = False
        # Set by a worker about to wait for work; the acceptor paces itself on it.
        self.idle = threading.Event()

    def stop_workers(self, count: int) -> None:
        """One STOP per worker. The holder takes one, ends, and its slot passes to the
        next standby worker, which takes the next: workers end one at a time, so no
        two ever run without a run slot. A detached worker ends when it is done."""
        self.stopping = True
        for _ in range(count):
            self.queue.put(STOP)


class Worker:
    """One worker thread (``reactor-worker-K``).

    Args:
        index: K, 0-based.
        factory: makes this worker's handler (called on the worker thread).
        dispatch: the state shared by all workers.
    """

    def __init__(self, index: int, factory: HandlerFactory, dispatch: Dispatch) -> None:
        self.index = index
        self.name = f"reactor-worker-{index}"
        self.dispatch = dispatch
        self.timers = dispatch.timers
        self.closed = 0
        self.adopted = 0
        self.batches = 0
        self.handler_errors = 0
        self.handler: Handler | None = None
        self.started = threading.Event()
        self.start_error: BaseException | None = None
        self._factory = factory
        self._slots = dispatch.slots
        self._holder = dispatch.slots.holder(self.name)
        self._section: BlockingSection = dispatch.slots.section(self._holder)
        self._claim = dispatch.slots.slots > 1
        self._events = Events(1024)
        self._later: list[tuple[int, int]] = []  # connections that yielded (reschedule)
        self.polled = 0  # batches this worker polled for itself
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    # -- WorkerContext -------------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.timers.call_later(delay, callback)

    def blocking(self) -> BlockingSection:
        return self._section

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` soon on whichever worker runs next; safe from any thread.

        It goes on the shared queue as a callable (``_Posted``): a worker waiting for
        work wakes at once, a busy one takes it after its batch. For event sources
        outside the reactor (an ASGI app's own event loop, ``workers/asgi``).
        """
        self.dispatch.queue.put(_Posted(callback))

    @property
    def state(self) -> str:
        h = self._holder
        if h.detached:
            return "detached"
        return "running" if h.holding else "standby"

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
        slots = self._slots
        h = self._holder
        get = self.dispatch.queue.get
        orphans = slots.orphans
        timers = self.timers
        idle_is_set = self.dispatch.idle.is_set
        idle_set = self.dispatch.idle.set
        queue_size = self.dispatch.queue.qsize
        self_poll = self.dispatch.poll is not None
        later = self._later
        slots.enter(h)
        try:
            while True:
                if h.detached:
                    if later:  # connections that yielded: another worker goes on
                        self.dispatch.queue.put(deque(later))
                        later.clear()
                    if self.dispatch.stopping:
                        return
                    slots.enter(h)  # stand by until promoted
                    continue
                batch: Any = None
                if orphans:
                    try:
                        batch = orphans.popleft()
                    except IndexError:
                        batch = None
                if batch is None and self_poll and not queue_size():
                    batch = self._poll_self()
                    if batch is None and not later and not queue_size():
                        batch = self._poll_self(_SPIN)
                if batch is None:
                    if later:  # work of our own is left: look, do not wait
                        try:
                            batch = get(False)
                        except queue.Empty:
                            batch = None
                    else:
                        if not idle_is_set() and not queue_size():
                            idle_set()  # ready for more: the acceptor may poll again
                        try:
                            batch = get(True, timers.timeout())
                        except queue.Empty:
                            batch = None
                if later and (batch is None or type(batch) is deque):
                    # The connections that yielded last turn go after what is new.
                    if batch is None:
                        batch = deque()
                    batch.extend(later)
                    later.clear()
                try:
                    if type(batch) is deque:
                        self._run_batch(batch)
                    elif batch is STOP:
                        self._abort_all()
                        return
                    elif batch is DRAIN:
                        self._drain_all()
                    elif batch is not None:
                        batch(self)  # a callable: run on a worker thread
                    if not h.detached:
                        self._run_timers()
                except Exception:
                    log.exception("unexpected error in %s; it goes on", self.name)
        finally:
            slots.leave(h)

    # -- the hot path ------------------------------------------------------------------
    def _poll_self(self, wait: float = 0.0) -> deque[Any] | None:
        """Poll the shared ``Poll`` without blocking, instead of waiting for the acceptor.

        Under load the next events are usually ready by the time a batch is done;
        taking them here saves the acceptor's wake-up, the queue hop and two GIL
        hand-overs per cycle (docs/design.md, "The hot worker polls"). Only when
        nothing is ready does the worker wait on the queue and the acceptor poll.
        Listener and waker events belong to the acceptor: they go to ``handback``
        and the acceptor is woken (``idle``) to take them. Returns a batch or None.
        """
        dispatch = self.dispatch
        if dispatch.draining or dispatch.stopping:
            return None
        lock = dispatch.poll_lock
        if not lock.acquire(False):
            return None  # the acceptor is polling: its batch will come on the queue
        batch: deque[Any] = deque()
        handed = 0
        try:
            assert dispatch.poll is not None
            if wait:
                due = self.timers.timeout()
                if due is not None and due < wait:
                    wait = due
            dispatch.poll.poll(self._events, wait)
            raw = self._events.raw
            if not raw:
                return None
            first = FIRST_CONN_TOKEN
            append = batch.append
            for item in raw:
                if item[0] >= first:
                    append(item)
                else:
                    # Under the lock: the acceptor looks at handback under it too,
                    # so it cannot start a blocking poll with one of these parked.
                    dispatch.handback.append(item)
                    handed += 1
        finally:
            lock.release()
        if handed:
            dispatch.handed_back += handed
            dispatch.idle.set()  # wakes the acceptor (see _wait_for_worker)
        self.polled += 1
        return batch or None

    def _run_batch(self, batch: deque[Any]) -> None:
        self.batches += 1
        h = self._holder
        h.batch = batch
        pop = batch.popleft
        conns = self.dispatch.conns
        handler = self.handler
        assert handler is not None
        claim = self._claim
        lock = self._slots.lock
        while not h.detached:
            try:
                item = pop()
            except IndexError:
                break
            if type(item) is not tuple:
                self._adopt(item)
                if h.detached:
                    self._release(h.current)
                    break
                continue
            token, bits = item
            conn = conns.get(token)
            if conn is None:
                continue  # closed meanwhile; tokens are never reused
            if claim:
                with lock:
                    if conn._busy is not None:
                        conn._pending |= bits
                        continue
                    conn._busy = h
            elif conn._busy is not None and self._stash_if_busy(conn, bits=bits):
                continue
            h.current = conn
            conn.worker = self
            conn.handler = handler
            guard = conn.guard  # its holder owns the connection (an ASGI loop's lock)
            if guard is not None:
                guard.acquire()
            try:
                if bits & _READ_BITS:
                    conn.on_readable(bits)
                if bits & WRITABLE and (conn._wbuf or conn._write_paused):
                    conn.on_writable()
                if bits & ERROR and conn._state != 2:
                    conn.on_closed(bits)
            except Exception as exc:
                self._handler_failed(conn, exc)
            finally:
                if guard is not None:
                    guard.release()
            if claim or h.detached:
                self._release(conn)
        h.current = None
        h.batch = None

    def reschedule(self, conn: Conn) -> None:
        """Serve ``conn``'s readability again next turn.

        Called by ``Conn.on_readable`` when it yields before the socket ran dry: the
        readiness is still there and no new edge will announce it. It is served
        again in this worker's next batch, after the events polled or queued
        meanwhile, and after timers have run: a client that never lets its socket run
        dry gets a turn per batch, not the worker. A detached worker (or one that is
        detached meanwhile) passes it on through the shared queue.
        """
        item = (conn.token, READABLE)
        if self._holder.detached or threading.get_ident() != self._thread.ident:
            # Detached, or called from another thread that holds the connection's
            # guard (an ASGI coroutine resuming reading): this worker's own list is
            # not that thread's to touch.
            self.dispatch.queue.put(deque([item]))
        else:
            self._later.append(item)

    def _release(self, conn: Conn | None) -> None:
        """Done with a busy connection: hand back what was stashed for it."""
        if conn is None:
            return
        with self._slots.lock:
            conn._busy = None
            bits = conn._pending
            conn._pending = 0
            calls = conn._deferred
            conn._deferred = None
        if bits:
            self.dispatch.queue.put(deque([(conn.token, bits)]))
        if calls:
            for call in calls:
                self.dispatch.queue.put(_Deferred(conn, call))

    def _adopt(self, nc: NewConnection) -> None:
        handler = self.handler
        assert handler is not None
        listener = nc.listener
        tls = getattr(listener, "tls", None)
        local = getattr(listener, "local", None)  # known for a listener on one address
        if tls is None:
            conn = Conn(nc.token, nc.stream, nc.peer, self, handler, local)
        else:
            conn = tls.connection(nc.token, nc.stream, nc.peer, self, handler, local)
        conn.listener = nc.listener
        guard = conn.guard = getattr(handler, "guard", None)  # an ASGI loop's lock
        self.adopted += 1
        self._holder.current = conn
        if self._claim:
            # Several slots: claimed before the table has it, or a worker in another
            # slot could serve an event for it before connection_made.
            conn._busy = self._holder
            if guard is not None:
                with guard:
                    self.dispatch.conns[nc.token] = conn
                    self._start(conn)
            else:
                self.dispatch.conns[nc.token] = conn
                self._start(conn)
            self._release(conn)
            return
        self.dispatch.conns[nc.token] = conn
        if guard is not None:
            with guard:
                self._start(conn)
            return
        self._start(conn)

    def _start(self, conn: Conn) -> None:
        try:
            conn.start()
            if self.dispatch.draining:
                self._drain_one(conn)
            # Clients often send at once: read now rather than wait for the event the
            # registration will raise (which then finds nothing: a spurious event).
            # Strictly, to BlockingIOError: an event for this token may have been
            # polled (by the hot worker) before this adoption and dropped as unknown,
            # and a short read would not see the end of stream it may have carried.
            conn.on_readable(strict=True)
        except Exception as exc:
            self._handler_failed(conn, exc)

    def _run_timers(self) -> None:
        for timer, error in self.timers.run_due(self._defer_timer):
            self.handler_errors += 1
            log.error("timer callback failed in %s", self.name, exc_info=error)
            conn = timer.conn
            if conn is not None:
                conn.abort()

    def _defer_timer(self, timer: Timer | Deadline) -> bool:
        """Run a connection's timer here, or stash it if another worker is busy with it."""
        conn = timer.conn
        if conn is None:
            return False
        if conn._busy is not None:
            call: Callable[[], None] | None
            if isinstance(timer, Deadline):
                cb = timer.callback
                call = partial(cb, conn) if cb is not None else None
            else:
                call = timer.callback
            if self._stash_if_busy(conn, call):
                return True
        self._serve(conn)
        guard = conn.guard
        if guard is None:
            return False
        # Run it here under the connection's guard (run_due would run it bare).
        try:
            with guard:
                if isinstance(timer, Deadline):
                    on_due = timer.callback
                    if on_due is not None:
                        on_due(conn)
                else:
                    timer.callback()
        except Exception as exc:
            self.handler_errors += 1
            log.error("timer callback failed in %s", self.name, exc_info=exc)
            conn.abort()
        return True

    def _stash_if_busy(
        self, conn: Conn, call: Callable[[], None] | None = None, bits: int = 0
    ) -> bool:
        """If a detached worker is still busy with ``conn``, keep its readiness ``bits``
        and ``call`` for it to hand back when done (``_release``) and return True;
        else False: serve it here."""
        with self._slots.lock:
            if conn._busy is None:
                return False
            conn._pending |= bits
            if call is not None:
                if conn._deferred is None:
                    conn._deferred = []
                conn._deferred.append(call)
            return True

    def _serve(self, conn: Conn) -> None:
        """Hand ``conn`` to this worker (and its handler) for the next callbacks."""
        handler = self.handler
        assert handler is not None
        conn.worker = self
        conn.handler = handler

    def _handler_failed(self, conn: Conn, exc: Exception) -> None:
        self.handler_errors += 1
        log.error("handler failed on %r; closing it", conn, exc_info=exc)
        conn.abort()

    def forget(self, conn: Conn) -> None:
        """Called by ``Conn`` teardown: deregister before close, then drop it."""
        if self.dispatch.conns.pop(conn.token, None) is None:
            return
        stream = conn.stream
        try:
            self.dispatch.registry.deregister(stream)
        except (OSError, ValueError):
            pass
        stream.close()
        self.closed += 1
        self.dispatch.on_close()

    # -- graceful stop -----------------------------------------------------------------
    def _drain_all(self) -> None:
        self.dispatch.draining = True
        for conn in list(self.dispatch.conns.values()):
            if self._stash_if_busy(conn, conn.close_when_idle):
                continue
            self._serve(conn)
            self._drain_one(conn)

    def _drain_one(self, conn: Conn) -> None:
        guard = conn.guard
        try:
            if guard is None:
                conn.close_when_idle()  # the handler's drain, or close (TLS: once made)
            else:
                with guard:
                    conn.close_when_idle()
        except Exception as exc:
            self._handler_failed(conn, exc)

    def _abort_all(self) -> None:
        for conn in list(self.dispatch.conns.values()):
            if conn._busy is None or conn._busy is self._holder:
                conn.worker = self
                guard = conn.guard
                if guard is None:
                    conn.abort()
                else:
                    with guard:
                        conn.abort()

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "batches": self.batches,
            "polled": self.polled,
            "adopted": self.adopted,
            "closed": self.closed,
            "handler_errors": self.handler_errors,
        }


class _Deferred:
    """A stashed timer callback, re-queued for whichever worker runs next."""

    __slots__ = ("call", "conn")

    def __init__(self, conn: Conn, call: Callable[[], None]) -> None:
        self.conn = conn
        self.call = call

    def __call__(self, worker: Worker) -> None:
        conn = self.conn
        if conn._state == 2:
            return
        if conn._busy is not None and worker._stash_if_busy(conn, self.call):
            return
        worker._serve(conn)
        guard = conn.guard
        try:
            if guard is None:
                self.call()
            else:
                with guard:
                    self.call()
        except Exception as exc:
            worker._handler_failed(conn, exc)


class _Posted:
    """A callable posted with ``Worker.post``, run by whichever worker takes it."""

    __slots__ = ("call",)

    def __init__(self, call: Callable[[], None]) -> None:
        self.call = call

    def __call__(self, worker: Worker) -> None:
        self.call()
