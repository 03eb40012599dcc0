"""The event loop of an ASGI server, stepped by the worker that serves the socket.

Where coroutines run (docs/design.md, "ASGI: where coroutines run"): one asyncio
loop per server, never ``run_forever`` on a thread of its own. The worker thread that
feeds a request's bytes (or sends its response) steps the loop itself: it runs the
loop's ready callbacks, one ``_run_once`` at a time, until none is left. A request
whose coroutine awaits nothing but ``receive`` and ``send`` completes inside that one
call, on the worker that read it: no thread hand-off, no queue hop.

What the app awaits besides (``asyncio.sleep``, a database socket, a thread pool)
must wake the loop although no request byte arrives:

* timers: after each step the loop's earliest timer becomes a worker timer
  (``WorkerContext.call_later``) that steps the loop when due;
* I/O and ``call_soon_threadsafe``: the loop's selector is an ``epoll`` (or kqueue)
  object whose own descriptor turns readable when any of its sources is ready. A
  watcher thread blocks in ``poll`` on that one descriptor (holding no GIL) and,
  when it turns readable, posts a step to the workers (``Worker.post``); it waits
  for that step before it looks again, so it never spins.

Every use of the loop (a step, a future resolved by the handler, a task created)
holds ``LoopDriver.lock``. With one run slot (the GIL default) only one worker runs
Python at a time, so the lock is never contended; with several (free-threaded
builds) it serialises the coroutines, as a single event loop does.

With ``--loop uvloop`` the same holds, with uvloop's loop: it cannot be stepped
handle by handle, so each step is one libuv iteration (``LoopDriver.full_step``),
which polls with a zero timeout: a system call per step that gives up the GIL. That
makes it the slower loop in this design (docs/asgi.md has the figures); it is there
for apps that want uvloop's own behaviour.

A coroutine that blocks (``time.sleep``, a blocking driver) stalls every ASGI
connection of the process, as it would under any event loop: the app's bug. The
watchdog (``--timeout``, ``mioreactor.workers.ops.watchdog``) names it: every step
(and a task's eager first step) marks the stepping worker's ``app_since`` as a WSGI
app call's blocking section does, so a step that runs past the timeout is reported
with the worker thread's stack, down to the line the coroutine blocks on. Only the
mark: a step is not a blocking section, which would hand the worker's run slot to
another worker after ``handoff_after``; that worker could do nothing but wait for the
loop's lock (every ASGI connection's owner) while the step runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import logging
import select
import selectors
import threading
import time
from asyncio import Handle, Task, _set_running_loop
from collections.abc import Callable, Coroutine
from contextvars import copy_context
from typing import Any, Protocol

__all__ = ["LOOPS", "AppTime", "LoopDriver", "Poster"]

log = logging.getLogger("mioreactor.asgi")

LOOPS = ("auto", "asyncio", "uvloop")
_MAX_ROUNDS = 64  # loop iterations per step; beyond, the rest is posted (fairness)


class Poster(Protocol):
    """The part of a worker the driver uses (``mioreactor.workers.core.worker.Worker``)."""

    def post(self, callback: Callable[[], None]) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any: ...


class AppTime(Protocol):
    """Where a worker's time inside the app is marked for the watchdog
    (``mioreactor.workers.core.scheduler.SlotHolder``): ``monotonic()`` on entry, 0.0 outside."""

    app_since: float


_monotonic = time.monotonic
_new_handle = Handle.__new__
_RAN: Handle = _new_handle(Handle)  # what call_soon returns for a callback it ran at once


class _SteppedLoop(asyncio.SelectorEventLoop):
    """CPython's selector loop with a leaner ``call_soon`` (the request path's).

    Every request schedules its task's first step, and every resolved future its
    waiter, through ``call_soon``: in CPython that is three Python frames
    (``call_soon``, ``_call_soon``, ``Handle.__init__``) plus the closed and debug
    checks. Here it is one, filling the ``Handle``'s slots inline, the same values as
    ``Handle.__init__`` without debug. A closed loop, or debug mode, takes CPython's
    own path (its errors, its source tracebacks).
    """

    _eager = False  # set by ``LoopDriver.start``: the next call_soon runs at once

    def set_debug(self, enabled: bool) -> None:
        """As CPython's; ``get_debug`` becomes a C callable that returns the setting.

        Every task and future asks its loop ``get_debug()`` when it is made (twice a
        WebSocket message, once a request): a Python frame each, for a constant.
        ``BaseEventLoop.__init__`` calls this too, so it holds from the start.
        """
        super().set_debug(enabled)
        self.get_debug = (True).__bool__ if enabled else (False).__bool__  # type: ignore[method-assign]

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any,
        context: contextvars.Context | None = None,
    ) -> Handle:
        if self._eager:
            # A new task's first step, run inside ``Task.__init__`` (an eager start,
            # ``LoopDriver.start``). The loop counts as running meanwhile
            # (``_thread_id``), so a step asked for from inside (a resumed read feeding
            # another request) waits for the caller's.
            self._eager = False
            self._thread_id = threading.get_ident()
            try:
                (context if context is not None else copy_context()).run(callback, *args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.call_exception_handler({"message": f"Exception in callback {callback!r}",
                                             "exception": exc})
            finally:
                self._thread_id = None  # type: ignore[assignment]
            return _RAN
        if self._closed or self._debug:  # type: ignore[attr-defined]
            return super().call_soon(callback, *args, context=context)
        handle: Any = _new_handle(Handle)
        handle._context = context if context is not None else copy_context()
        handle._loop = self
        handle._callback = callback
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle  # type: ignore[no-any-return]


class _Whens:
    """The due times of the timers a uvloop loop was asked for (a heap of floats).

    uvloop keeps its timers inside libuv, and a due timer makes no descriptor
    readable, so the driver arms a worker timer for the earliest one it was told of
    (``_arm_timer``); a cancelled timer's time stays until it passes and costs one
    step that finds nothing to do.
    """

    def __init__(self) -> None:
        self.heap: list[float] = []

    def add(self, when: float) -> None:
        heapq.heappush(self.heap, when)

    def next(self, now: float) -> float | None:
        heap = self.heap
        while heap and heap[0] <= now:
            heapq.heappop(heap)
        return heap[0] if heap else None


def _uvloop_type() -> type[asyncio.AbstractEventLoop]:
    """uvloop's ``Loop``, its timers told to ``whens`` (see ``_Whens``), or ValueError."""
    try:
        import uvloop
    except ImportError:
        raise ValueError(
            "--loop uvloop: uvloop is not installed (pip install uvloop, or "
            "pip install 'mioreactor[uvloop]')"
        ) from None
    if not hasattr(uvloop.Loop, "_get_backend_id"):
        raise ValueError(
            f"--loop uvloop: uvloop {getattr(uvloop, '__version__', '?')} does not give its "
            "backend descriptor (Loop._get_backend_id); upgrade uvloop"
        )

    class _UvLoop(uvloop.Loop):
        whens = _Whens()  # replaced per loop in _new_loop
        # Something was scheduled: uvloop runs a callback scheduled during an iteration
        # in the next one, and shows no ready queue, so the driver iterates until a
        # round schedules nothing (``LoopDriver._uv_rounds``). asyncio's tasks and
        # futures schedule through this method (a Python call for uvloop: the price).
        dirty = False

        def call_soon(  # type: ignore[override]
            self, callback: Callable[..., object], *args: Any,
            context: contextvars.Context | None = None,
        ) -> asyncio.Handle:
            self.dirty = True
            return super().call_soon(callback, *args, context=context)

        # Set by ``LoopDriver.attach``: posts a step to the workers. A callback
        # scheduled from another thread can land after a round's idle phase while
        # the same round drains libuv's wake-up descriptor, so the watcher would not
        # see it: every such callback asks for a step itself.
        wake: Callable[[], None] | None = None

        def call_soon_threadsafe(  # type: ignore[override]
            self, callback: Callable[..., object], *args: Any,
            context: contextvars.Context | None = None,
        ) -> asyncio.Handle:
            handle = super().call_soon_threadsafe(callback, *args, context=context)
            wake = self.wake
            if wake is not None:
                wake()
            return handle

        def call_at(  # type: ignore[override]
            self, when: float, callback: Callable[..., object], *args: Any,
            context: contextvars.Context | None = None,
        ) -> asyncio.TimerHandle:
            self.whens.add(when)
            return super().call_at(when, callback, *args, context=context)

        def call_later(  # type: ignore[override]
            self, delay: float, callback: Callable[..., object], *args: Any,
            context: contextvars.Context | None = None,
        ) -> asyncio.TimerHandle:
            self.whens.add(self.time() + delay)
            return super().call_later(delay, callback, *args, context=context)

    return _UvLoop


def _new_loop(kind: str) -> tuple[asyncio.AbstractEventLoop, int | None]:
    """A loop of ``kind`` and the descriptor that turns readable when it has work."""
    if kind not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {kind!r}")
    if kind == "uvloop":
        loop = _uvloop_type()()
        loop.whens = _Whens()  # type: ignore[attr-defined]
        return loop, loop._get_backend_id()  # type: ignore[attr-defined]
    selector = selectors.DefaultSelector()
    fileno = selector.fileno() if hasattr(selector, "fileno") else None
    return _SteppedLoop(selector), fileno


class _NoMark:
    """The app time of a thread nobody watches: written, never read (no test for None)."""

    __slots__ = ("app_since",)

    def __init__(self) -> None:
        self.app_since = 0.0


_NO_MARK = _NoMark()


class _Running(threading.local):
    running = False
    mark: AppTime = _NO_MARK  # this worker's app time (``LoopDriver.watch``)


class LoopDriver:
    """One asyncio loop, stepped by worker threads (see the module docstring).

    Args:
        kind: ``auto`` or ``asyncio`` (CPython's selector loop, with the shortcuts
            above), or ``uvloop`` (uvloop's loop; ``ValueError`` when it is not
            installed). uvloop's loop has no ready queue to run by hand, so every
            step of it is a loop iteration (``full_step``: ``stop`` then
            ``run_forever``, one libuv round with a zero poll timeout); the watcher
            polls libuv's backend descriptor (``Loop._get_backend_id``), and the
            loop's timers are armed from ``_Whens``.
    """

    def __init__(self, kind: str = "auto") -> None:
        self.loop, self._fileno = _new_loop(kind)
        self.lock = threading.RLock()
        self._workers: Poster | None = None
        self._go = threading.Event()  # set: the watcher may look at the selector
        self._go.set()
        self._closed = False
        self._watcher: threading.Thread | None = None
        self._timer: Any = None
        self._timer_at = float("inf")
        self._ready: Any = getattr(self.loop, "_ready", None)  # CPython's deque of handles
        self._scheduled: Any = getattr(self.loop, "_scheduled", None)  # its timer heap
        # Whether ``step`` has anything to do, for a caller that asks inline
        # (``ready or scheduled``): the ready handles and the timer heap, or, for a
        # loop that shows neither (uvloop), a ``ready`` that is never empty.
        self.ready: Any = self._ready if self._ready is not None else (True,)
        self.scheduled: Any = self._scheduled if self._scheduled is not None else ()
        self._local = _Running()  # per thread: has step left the running loop set here
        # The loop when start() may run a first step at once (our own loop type).
        self._stepped = self.loop if isinstance(self.loop, _SteppedLoop) else None

    def attach(self, workers: Poster) -> None:
        """Let ``workers`` step the loop from now on; starts the watcher once."""
        with self.lock:
            if self._workers is not None:
                return
            self._workers = workers
            if hasattr(self.loop, "wake"):  # uvloop's (``_uvloop_type``)
                self.loop.wake = lambda: workers.post(self.full_step)
            if self._fileno is not None:
                self._watcher = threading.Thread(
                    target=self._watch, name="reactor-asgi-watcher", daemon=True
                )
                self._watcher.start()

    def watch(self, mark: AppTime | None) -> None:
        """Count this thread's steps as time inside the app (the watchdog's view).

        Called on each worker thread, with the worker's ``SlotHolder`` (None: not
        watched, as on the threads that run lifespan and shutdown).
        """
        self._local.mark = mark if mark is not None else _NO_MARK

    def step(self) -> None:
        """Run the loop's ready callbacks until none is left (bounded; see below).

        Called on a worker thread after it fed a request's bytes or made a task. The
        fast path runs the ready handles directly, without polling the loop's
        selector: a ``select(0)`` per request is a system call that lets go of the
        GIL, and taking it back costs ~20 us when other threads wait for it (the
        convoy of docs/design.md, "The GIL"). The selector (I/O, threads) is polled
        only when the watcher saw it ready (``full_step``), timers when they fall due.
        A coroutine that keeps rescheduling itself gets ``_MAX_ROUNDS`` rounds, then
        the rest goes to the back of the workers' queue.
        """
        ready = self._ready
        if ready is None:
            self.full_step()
            return
        loop = self.loop
        with self.lock:
            if self._closed or loop._thread_id is not None:  # type: ignore[attr-defined]
                return  # re-entered from a callback of this very step: it goes on
            if not ready:
                if self._scheduled:
                    self._arm_timer()  # what an eager start (``start``) left
                return
            loop._thread_id = threading.get_ident()  # type: ignore[attr-defined]
            local = self._local
            if not local.running:
                self._enter()
            mark = local.mark  # the watchdog's: inside the app from now (unless already)
            since = mark.app_since
            if not since:
                mark.app_since = _monotonic() or 1e-9
            try:
                popleft = ready.popleft
                for _ in range(_MAX_ROUNDS):
                    for _ in range(len(ready)):
                        handle = popleft()
                        if not handle._cancelled:  # Handle._run, inline: one frame less
                            try:
                                handle._context.run(handle._callback, *handle._args)
                            except (SystemExit, KeyboardInterrupt):
                                raise
                            except BaseException as exc:
                                loop.call_exception_handler({
                                    "message": f"Exception in callback {handle!r}",
                                    "exception": exc, "handle": handle,
                                })
                    if not ready:
                        break
            finally:
                loop._thread_id = None  # type: ignore[attr-defined]
                if not since:
                    mark.app_since = 0.0
            if ready and self._workers is not None:
                self._workers.post(self.step)
            if self._scheduled:
                self._arm_timer()

    def full_step(self) -> None:
        """One loop iteration with a selector poll (no waiting), then ``step``."""
        loop = self.loop
        with self.lock:
            if self._closed or loop.is_running():
                return
            self._not_running()
            mark = self._local.mark  # as in ``step``, around both
            since = mark.app_since
            if not since:
                mark.app_since = _monotonic() or 1e-9
            try:
                if self._ready is not None:
                    loop.stop()
                    loop.run_forever()  # stop() first: exactly one iteration, no waiting
                    self.step()
                else:
                    self._uv_rounds(loop)
            finally:
                if not since:
                    mark.app_since = 0.0
            self._arm_timer()

    def _uv_rounds(self, loop: Any) -> None:
        """uvloop: iterate until a round schedules nothing (``_MAX_ROUNDS`` at most)."""
        for _ in range(_MAX_ROUNDS):
            loop.dirty = False
            loop.stop()
            loop.run_forever()  # stop() first: one libuv iteration, no waiting
            if not loop.dirty:
                return
        if self._workers is not None:
            self._workers.post(self.full_step)  # the rest, behind what else waits

    def start(self, coro: Coroutine[Any, Any, Any], now: float | None = None) -> Task[Any]:
        """A task for ``coro`` (a request's), its first step run at once when it may.

        CPython 3.12's eager tasks, by hand for 3.11: the worker feeding a request
        is outside any step, so the task's first step (usually the whole request) runs
        inside ``Task.__init__`` instead of going through the ready queue and a
        ``step``: no ``Handle``, no loop round (measured: 1.8 -> 1.45 us for a task
        that completes at once). The task is a real ``asyncio.Task``, current while it
        runs (anyio, sniffio); what differs from a scheduled task is only that
        ``asyncio.all_tasks()`` lists it from the end of that first step. Inside a step,
        with a task factory, or on another loop type, the task is scheduled as usual.
        Returns the task (done already when the app awaited nothing else). Call with
        the loop's lock held. ``now``: ``time.monotonic()`` if the caller has just read
        it, for the watchdog's mark (one clock read less).
        """
        loop = self._stepped
        if (loop is None or loop._thread_id is not None or loop._task_factory is not None
                or self._closed):
            return self.loop.create_task(coro)
        local = self._local
        if not local.running:
            self._enter()
        # As in ``step``: the first step runs the app. Never inside another step here
        # (``_thread_id`` is None), so never inside another mark.
        mark = local.mark
        mark.app_since = (_monotonic() if now is None else now) or 1e-9
        loop._eager = True
        try:
            return Task(coro, loop=loop)
        finally:
            loop._eager = False
            mark.app_since = 0.0

    def resolve(self, future: asyncio.Future[None]) -> None:
        """``future.set_result(None)``, its first callback run at once when it may.

        The eager start (``start``) for a task that waits: a WebSocket message that
        arrives for an app parked in ``receive`` resumes the app inside this call,
        without a ``Handle``, a trip through the ready queue and a ``step``. Only
        outside any step, on our own loop type (as ``start``); otherwise, and for any
        callback after the first, the usual ``call_soon``. Call with the loop's lock
        held, when what the callback may read is consistent.
        """
        loop = self._stepped
        if loop is None or loop._thread_id is not None or self._closed:
            future.set_result(None)
            return
        local = self._local
        if not local.running:
            self._enter()
        mark = local.mark  # as in ``start``
        mark.app_since = _monotonic() or 1e-9
        loop._eager = True
        try:
            future.set_result(None)
        finally:
            loop._eager = False
            mark.app_since = 0.0

    def _enter(self) -> None:
        """Set this thread's running loop, once (left set: see ``step``).

        CPython 3.11 calls getpid() (a system call) each time it sets the running
        loop, so setting and clearing it per step cost two system calls per request.
        Cleared before anything else runs a loop on the thread (``_not_running``).
        """
        _set_running_loop(self.loop)
        self._local.running = True

    def _not_running(self) -> None:
        """Clear the running loop that ``step`` left set on this thread, if it did."""
        if self._local.running:
            _set_running_loop(None)
            self._local.running = False

    def _arm_timer(self) -> None:
        """Make the loop's earliest timer a worker timer (when it is earlier)."""
        workers = self._workers
        if workers is None:
            return
        scheduled = self._scheduled
        if scheduled is not None:
            if not scheduled:
                return
            when = scheduled[0].when()
        else:
            whens: _Whens | None = getattr(self.loop, "whens", None)
            found = whens.next(self.loop.time()) if whens is not None else None
            if found is None:
                return
            when = found
        if when >= self._timer_at - 0.0005:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = workers.call_later(max(when - self.loop.time(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self.full_step()

    def _watch(self) -> None:
        """The watcher thread: post a step whenever the loop's selector is ready."""
        assert self._fileno is not None and self._workers is not None
        poller = select.poll()
        poller.register(self._fileno, select.POLLIN)
        post = self._workers.post
        while True:
            self._go.wait()
            if self._closed:
                return
            try:
                poller.poll()
            except OSError:  # the selector was closed under us: we are stopping
                return
            if self._closed:
                return
            self._go.clear()
            post(self._woken)

    def _woken(self) -> None:
        try:
            self.full_step()
        finally:
            self._go.set()

    def run(self, awaitable: Any, timeout: float | None = None) -> Any:
        """Run ``awaitable`` to completion on the calling thread (lifespan, shutdown).

        Only while no worker steps the loop: before the server starts, after it stopped.
        """
        with self.lock:
            self._not_running()
            if timeout is not None:
                awaitable = asyncio.wait_for(awaitable, timeout)
            return self.loop.run_until_complete(awaitable)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the watcher, cancel what is left on the loop, close it. Idempotent."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self._go.set()
            if self._timer is not None:
                self._timer.cancel()
            loop = self.loop
            try:
                loop.call_soon_threadsafe(lambda: None)  # wakes the watcher's poll
            except RuntimeError:
                pass
        if self._watcher is not None:
            self._watcher.join(timeout)
        with self.lock:
            self._not_running()
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                deadline = time.monotonic() + timeout
                try:
                    loop.run_until_complete(
                        asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 0.0))
                    )
                except Exception:
                    log.exception("error while cancelling ASGI tasks at shutdown")
            loop.close()
