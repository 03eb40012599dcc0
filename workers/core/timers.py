"""Per-worker timers: a heap, no thread per connection.

Each worker thread owns one ``Timers``; handlers reach it through
``worker.call_later`` and ``conn.call_later``. The worker waits on its queue with the
time until the next deadline as its timeout, then runs what is due. A timer set
through a connection is also kept in that connection's set, so closing the
connection cancels it (a closed connection leaves no timer behind).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Deadline", "Timer", "Timers"]


def _nothing() -> None:
    """A cancelled timer's callback."""


class Timer:
    """A pending callback. ``cancel()`` is idempotent and O(1)."""

    __slots__ = ("_timers", "callback", "cancelled", "conn", "deadline", "owner")

    def __init__(self, deadline: float, callback: Callable[[], None], timers: Timers) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False
        self.owner: set[Timer] | None = None
        self.conn: Any = None
        self._timers = timers

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            owner = self.owner
            if owner is not None:
                owner.discard(self)
                self.owner = None
            # Its heap entry stays until due or purged: it holds nothing else alive
            # (a closure over the connection would keep the connection till then).
            self.callback = _nothing
            self.conn = None
            self._timers._note_cancel()


class Deadline:
    """A connection's own re-armable timer: one object for the connection's life.

    Its callback takes the connection, so one module-level function can serve every
    connection (no closure or ``partial`` made per arm).

    ``set`` is a float store in the common case (the deadline moves later); the heap
    gets a new entry only when the deadline moves earlier, or when the old entry falls
    due and finds the deadline moved (it is then pushed again, once). A keep-alive
    connection that re-arms its timer on every request therefore allocates nothing
    per request, and nothing lives long enough to burden the garbage collector (the
    cause of a 23% throughput loss beside 10,000 idle connections, docs/performance.md).
    """

    __slots__ = ("_timers", "at", "callback", "conn", "queued_at")

    def __init__(self, timers: Timers, conn: Any) -> None:
        self._timers = timers
        self.conn = conn
        self.at = 0.0  # 0: not armed
        self.queued_at = 0.0  # the time of its live heap entry, 0: none
        self.callback: Callable[[Any], None] | None = None

    def set(
        self, delay: float, callback: Callable[[Any], None], now: float | None = None
    ) -> Deadline:
        """Arm for ``delay`` seconds from ``now`` (``time.monotonic()``, read here if
        None); ``callback(conn)`` runs then. A caller that has just read the clock
        passes what it read: a clock read costs more than it seems (docs/design.md,
        "Clock reads")."""
        at = (time.monotonic() if now is None else now) + (delay if delay > 0.0 else 0.0)
        self.at = at
        self.callback = callback
        queued = self.queued_at
        if not queued or queued > at:
            self.queued_at = at
            self._timers._push(at, self)
        return self

    def cancel(self) -> None:
        self.at = 0.0

    def retire(self) -> None:
        """The connection is gone: cancel for good and let go of it.

        The connection refers to its deadline and the deadline to the connection: a
        cycle that only the cyclic garbage collector can free, and its heap entry
        would keep both (and all the connection holds) alive until the timeout falls
        due. Retired, the entry holds this small object alone, and is counted for
        the heap's purge like a cancelled ``Timer``.
        """
        self.at = 0.0
        self.conn = None
        self.callback = None
        if self.queued_at:
            self._timers._note_cancel()

    @property
    def cancelled(self) -> bool:
        return not self.at


class Timers:
    """A heap of timers shared by the workers, purged of cancelled entries when they
    pile up. Heap operations hold a lock; callbacks run outside it."""

    __slots__ = ("_cancelled", "_heap", "_lock", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer | Deadline]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._lock = threading.Lock()

    def call_later(
        self,
        delay: float,
        callback: Callable[[], None],
        owner: set[Timer] | None = None,
        conn: Any = None,
    ) -> Timer:
        """Run ``callback`` after ``delay`` seconds.

        Args:
            owner: a set that holds the timer until it fires or is cancelled (the
                connection's, so closing it cancels its timers).
            conn: the connection the timer belongs to (run by whoever serves it).
        """
        timer = Timer(time.monotonic() + max(delay, 0.0), callback, self)
        timer.conn = conn
        if owner is not None:
            timer.owner = owner
            owner.add(timer)
        self._push(timer.deadline, timer)
        return timer

    def _push(self, at: float, entry: Timer | Deadline) -> None:
        with self._lock:
            heapq.heappush(self._heap, (at, next(self._seq), entry))

    def _note_cancel(self) -> None:
        with self._lock:
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled > len(self._heap) // 2:
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def __len__(self) -> int:
        """Live timers (cancelled ones excluded)."""
        live = 0
        for at, _, entry in self._heap:
            if type(entry) is Deadline:
                live += entry.queued_at == at and bool(entry.at)
            else:
                live += not entry.cancelled
        return live

    def timeout(self) -> float | None:
        """Seconds until the next deadline (0 if overdue), or None with no timers."""
        with self._lock:
            heap = self._heap
            while heap:
                at, _, entry = heap[0]
                if type(entry) is Deadline:
                    if entry.queued_at != at:  # superseded
                        heapq.heappop(heap)
                        continue
                    if not entry.at:  # cancelled: its live entry is gone
                        heapq.heappop(heap)
                        entry.queued_at = 0.0
                        if entry.conn is None:  # retired: counted for the purge
                            self._cancelled = max(0, self._cancelled - 1)
                        continue
                elif entry.cancelled:
                    heapq.heappop(heap)
                    self._cancelled = max(0, self._cancelled - 1)
                    continue
                return max(0.0, at - time.monotonic())
            return None

    def _pop_due(self, now: float) -> Timer | Deadline | None:
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                at, _, entry = heapq.heappop(heap)
                if type(entry) is Deadline:
                    if entry.queued_at != at:
                        continue  # superseded by an earlier entry
                    entry.queued_at = 0.0
                    if not entry.at:  # cancelled
                        if entry.conn is None:  # retired: counted for the purge
                            self._cancelled = max(0, self._cancelled - 1)
                        continue
                    if entry.at > now:  # moved later since: queue it again, once
                        entry.queued_at = entry.at
                        heapq.heappush(heap, (entry.at, next(self._seq), entry))
                        continue
                    entry.at = 0.0
                    return entry
                if entry.cancelled:
                    self._cancelled = max(0, self._cancelled - 1)
                    continue
                return entry
            return None

    def run_due(
        self, defer: Callable[[Timer | Deadline], bool] | None = None
    ) -> list[tuple[Timer | Deadline, BaseException]]:
        """Run every timer whose deadline has passed.

        Args:
            defer: asked before each callback; True means "not here" (the caller has
                stashed the callback for whoever serves the timer's connection).

        Returns:
            ``(timer, exception)`` for each callback that raised.
        """
        if not self._heap or self._heap[0][0] > time.monotonic():
            return []
        now = time.monotonic()
        errors: list[tuple[Timer | Deadline, BaseException]] = []
        while (timer := self._pop_due(now)) is not None:
            if type(timer) is Timer:
                timer.cancelled = True
                owner = timer.owner
                if owner is not None:
                    owner.discard(timer)
                    timer.owner = None
            if defer is not None and defer(timer):
                continue
            try:
                if isinstance(timer, Deadline):
                    deadline_callback = timer.callback
                    if deadline_callback is not None:
                        deadline_callback(timer.conn)
                else:
                    timer.callback()
            except Exception as exc:  # reported by the worker, which goes on
                errors.append((timer, exc))
        return errors
