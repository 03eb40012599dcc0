"""Run slots: how many worker threads run Python code at once, and who takes over.

Why (measured, docs/design.md "The GIL"): on a GIL build, two or more *runnable*
worker threads fight for the interpreter. A thread that releases the GIL around a
non-blocking system call takes it back before a waiting thread is scheduled, so the
waiter gets it only at the forced switch (5 ms): tails grow from 4 ms to 150 ms.
Splitting each poll cycle's events across N pinned workers is worse still: every
cycle becomes N hand-offs. Yet WSGI apps block (databases, files, other services),
and blocking is what worker threads are for.

The rule here, close to Go's scheduler (a ``P`` handed off during a long syscall):

* ``slots`` workers *hold* a run slot (1 on a GIL build) and take batches from the
  shared queue. The others are on *standby*: parked on their own lock, they cost
  nothing, wake nobody and take no GIL.
* A worker marks code that may block (the WSGI app call, a body iterator) with
  ``with worker.blocking():``. Short sections keep the slot.
* When a section has run longer than ``handoff_after`` *and work is waiting*, the
  acceptor (which wakes for every poll cycle anyway) *detaches* that worker: its slot
  and the rest of its batch go to a standby worker, which is promoted. The detached
  worker finishes the one connection it was serving (nobody else touches it
  meanwhile: it is marked busy, its events are stashed) and then goes on standby.

CPU-light apps therefore run on one hot worker with no GIL convoy; blocking apps get
up to N concurrent calls. On a free-threaded build there is no GIL to protect and the
default is one slot per CPU.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

__all__ = ["BlockingSection", "RunSlots", "SlotHolder", "default_slots"]

_monotonic = time.monotonic  # bound once: read on every app call


def default_slots() -> int:
    """1 on a GIL build, the CPU count on a free-threaded build."""
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    if gil_enabled:
        return 1
    return max(1, os.cpu_count() or 1)


class SlotHolder:
    """A worker as the scheduler sees it.

    ``batch`` is the deque the worker is consuming (handed over on detach);
    ``current`` the connection it is serving (marked busy on detach).
    ``app_since`` is when the worker entered its current blocking section (the app),
    holding a slot or not, 0.0 outside: the watchdog's view (``mioreactor.workers.ops.watchdog``).
    """

    __slots__ = (
        "app_since", "batch", "blocked_since", "current", "detached", "gate", "holding", "name",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = threading.Lock()
        self.gate.acquire()  # held: acquiring it again parks until promoted
        self.holding = False
        self.detached = False
        self.blocked_since = 0.0
        self.app_since = 0.0
        self.batch: deque[Any] | None = None
        self.current: Any = None


class RunSlots:
    """At most ``slots`` holders run; a holder blocked too long is replaced.

    Args:
        slots: how many workers run at once (>= 1).
        handoff_after: seconds a ``blocking()`` section may run while work waits
            before another worker takes over.
    """

    def __init__(self, slots: int, handoff_after: float = 0.002) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if handoff_after <= 0:
            raise ValueError(f"handoff_after must be positive, got {handoff_after}")
        self.slots = slots
        self.handoff_after = handoff_after
        self._free = slots
        self._lock = threading.Lock()
        self._standby: deque[SlotHolder] = deque()
        self._holders: list[SlotHolder] = []
        self.orphans: deque[deque[Any]] = deque()
        self.handoffs = 0
        # The shared queue's depth, for a standby worker deciding to take over
        # (set by ``Dispatch``; alone, the scheduler sees only orphans and batches).
        self.queue_depth: Callable[[], int] | None = None

    @property
    def lock(self) -> threading.Lock:
        """Guards busy marks on connections as well as the scheduler's own state."""
        return self._lock

    def holder(self, name: str) -> SlotHolder:
        h = SlotHolder(name)
        with self._lock:
            self._holders.append(h)
        return h

    @property
    def standby_count(self) -> int:
        return len(self._standby)

    def enter(self, h: SlotHolder) -> None:
        """Take a free slot, or park on standby until promoted.

        A worker that comes to stand by while a holder is stuck past the threshold
        takes over at once, rather than waiting for the acceptor's next check: under
        a saturating blocking load that wait (up to ``handoff_after``) came after
        every freed thread (traced: hand-offs 2.3-2.4 ms apart, one standby each).
        """
        with self._lock:
            h.detached = False
            if self._free > 0:
                self._free -= 1
                h.holding = True
                return
            self._standby.append(h)
            self._take_over_stuck()
        h.gate.acquire()  # released by _grant, with h.holding already set

    def _take_over_stuck(self) -> None:
        # Under the lock, with a standby worker: if work waits, detach one holder
        # stuck past the threshold, which promotes the first standby worker.
        depth = self.queue_depth
        if not self._work_waits(depth() if depth is not None else 0):
            return
        now = time.monotonic()
        for x in self._holders:
            since = x.blocked_since
            if since and x.holding and now - since >= self.handoff_after:
                self._detach(x)
                return

    def leave(self, h: SlotHolder) -> None:
        """Give up a slot for good (the worker is ending)."""
        with self._lock:
            if h in self._standby:
                self._standby.remove(h)
                return
            if h.holding:
                h.holding = False
                self._grant()

    def _grant(self) -> None:
        # Under the lock: a slot became free.
        if self._standby:
            nxt = self._standby.popleft()
            nxt.holding = True
            nxt.gate.release()
        else:
            self._free += 1

    def check(self, queued: int) -> float | None:
        """Detach a holder stuck in a blocking section while work waits.

        Called by the acceptor after each poll cycle with the shared queue's depth.
        Work waits when the queue, an orphaned batch, or the rest of a holder's
        current batch is not empty. Returns the seconds after which to check again
        (the acceptor's poll timeout), or None when no work waits.
        """
        holders = self._holders
        if not self._work_waits(queued):
            return None
        now = time.monotonic()
        soonest = self.handoff_after
        for h in holders:
            since = h.blocked_since
            if not since or not h.holding:
                continue
            due = since + self.handoff_after - now
            if due > 0:
                soonest = min(soonest, due)
                continue
            with self._lock:
                if h.blocked_since == since and h.holding and self._standby:
                    self._detach(h)
        return soonest

    def blocked(self) -> bool:
        """Whether a holder is inside a blocking section now."""
        return any(h.holding and h.blocked_since for h in self._holders)

    def _work_waits(self, queued: int) -> bool:
        if queued > 0 or self.orphans:
            return True
        return any(h.holding and h.batch for h in self._holders)

    def _detach(self, h: SlotHolder) -> None:
        # Under the lock.
        h.holding = False
        h.detached = True
        conn = h.current
        if conn is not None:
            conn._busy = h  # nobody else may touch it until h is done with it
        if h.batch:
            self.orphans.appendleft(h.batch)  # the oldest work: served first
        h.batch = None
        self.handoffs += 1
        self._grant()

    def section(self, h: SlotHolder) -> BlockingSection:
        """A reusable context manager for ``h``'s blocking sections."""
        return BlockingSection(h, self._lock)


class BlockingSection:
    """``with section:`` marks code that may block; the worker may be detached meanwhile.

    One object per worker, reused for every section (no allocation per request).
    Nested sections count as one.
    """

    __slots__ = ("_depth", "_h", "_lock")

    def __init__(self, h: SlotHolder, lock: threading.Lock) -> None:
        self._h = h
        self._lock = lock
        self._depth = 0

    @property
    def holder(self) -> SlotHolder:
        """The worker's ``SlotHolder``, whose ``app_since`` the watchdog reads.

        For code that runs an app's code without the section's hand-off (the ASGI
        loop's steps, ``mioreactor.workers.asgi.loop``): it marks ``app_since`` itself.
        """
        return self._h

    def __enter__(self) -> None:
        depth = self._depth = self._depth + 1
        if depth == 1:
            h = self._h
            # One store for the watchdog (--timeout), holding or not: no timer object.
            now = h.app_since = _monotonic() or 1e-9
            if h.holding:
                h.blocked_since = now

    def __exit__(self, *exc: object) -> None:
        depth = self._depth = self._depth - 1
        if depth == 0:
            h = self._h
            h.app_since = 0.0
            if h.blocked_since:
                # Under the lock: a detach decided by the acceptor is either complete
                # before this (and ``h.detached`` is seen by the worker) or not at all.
                with self._lock:
                    h.blocked_since = 0.0

    def call(
        self, fn: Callable[[Any, Any], _T], a: Any, b: Any, now: float | None = None
    ) -> _T:
        """``fn(a, b)`` inside the section: ``with`` in one frame instead of three.

        The same bookkeeping as ``__enter__`` and ``__exit__``, for the request path
        (the application call), where the two extra Python calls showed. ``now`` is
        ``time.monotonic()`` if the caller has just read it (one clock read less).
        """
        if self._depth:
            return fn(a, b)
        h = self._h
        if now is None:
            now = _monotonic()
        now = h.app_since = now or 1e-9
        if h.holding:
            h.blocked_since = now
        self._depth = 1
        try:
            return fn(a, b)
        finally:
            self._depth = 0
            h.app_since = 0.0
            if h.blocked_since:
                lock = self._lock  # see __exit__; acquire/release: 1k instructions under ``with``
                lock.acquire()
                h.blocked_since = 0.0
                lock.release()
