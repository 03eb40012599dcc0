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

__all__ = ["Timer", "Timers"]


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
            self._timers._note_cancel()


class Timers:
    """A heap of timers shared by the workers, purged of cancelled entries when they
    pile up. Heap operations hold a lock; callbacks run outside it."""

    __slots__ = ("_cancelled", "_heap", "_lock", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
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
        with self._lock:
            heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
        return timer

    def _note_cancel(self) -> None:
        with self._lock:
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled > len(self._heap) // 2:
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def __len__(self) -> int:
        """Live timers (cancelled ones excluded)."""
        return sum(1 for entry in self._heap if not entry[2].cancelled)

    def timeout(self) -> float | None:
        """Seconds until the next deadline (0 if overdue), or None with no timers."""
        with self._lock:
            heap = self._heap
            while heap and heap[0][2].cancelled:
                heapq.heappop(heap)
                self._cancelled = max(0, self._cancelled - 1)
            if not heap:
                return None
            return max(0.0, heap[0][0] - time.monotonic())

    def _pop_due(self, now: float) -> Timer | None:
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, timer = heapq.heappop(heap)
                if timer.cancelled:
                    self._cancelled = max(0, self._cancelled - 1)
                    continue
                return timer
            return None

    def run_due(
        self, defer: Callable[[Timer], bool] | None = None
    ) -> list[tuple[Timer, BaseException]]:
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
        errors: list[tuple[Timer, BaseException]] = []
        while (timer := self._pop_due(now)) is not None:
            timer.cancelled = True
            owner = timer.owner
            if owner is not None:
                owner.discard(timer)
                timer.owner = None
            if defer is not None and defer(timer):
                continue
            try:
                timer.callback()
            except Exception as exc:  # reported by the worker, which goes on
                errors.append((timer, exc))
        return errors
