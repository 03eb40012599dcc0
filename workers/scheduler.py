"""Run slots: how many worker threads execute Python code at once.

Why this exists (measured, see docs/design.md "The GIL"): on a GIL build, two or more
*runnable* worker threads fight for the interpreter. A thread that releases the GIL
around a non-blocking system call takes it back before the waiting thread is
scheduled, so the waiter gets it only at the forced switch (5 ms), and tails grow
from 4 ms to 150 ms. Yet WSGI apps block (databases, files, other services), and
blocking is what worker threads are for.

So workers take a *run slot* before they process a batch and give it back after. A
waiting worker sleeps on its own lock, not on the GIL, so it does not disturb the
running one; slots are handed over directly, in arrival order. A worker that enters a
section that may block (``with worker.blocking():`` around the app call) keeps its
slot while the section is short; once it has run longer than ``handoff_after``, a
waiting worker takes the slot over (the blocked one is *detached*, like a Go
``P`` handed off during a long system call) and the detached worker queues for a slot
again when its section ends. CPU-light apps thus run with one runnable worker and
no GIL convoy; blocking apps get as many concurrent calls as there are workers.

On a free-threaded build there is no GIL to protect: the default is one slot per CPU.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque

__all__ = ["BlockingSection", "RunSlots", "SlotHolder", "default_slots"]


def default_slots() -> int:
    """1 on a GIL build, the CPU count on a free-threaded build."""
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    if gil_enabled:
        return 1
    return max(1, os.cpu_count() or 1)


class SlotHolder:
    """A worker's state as the scheduler sees it."""

    __slots__ = ("blocked_since", "detached", "gate", "holding", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = threading.Lock()
        self.gate.acquire()  # held: waiting on it blocks until a slot is handed over
        self.holding = False
        self.detached = False
        self.blocked_since = 0.0


class RunSlots:
    """At most ``slots`` holders run at once; long blocking sections hand theirs over.

    Args:
        slots: how many workers may run at once (>= 1).
        handoff_after: seconds a ``blocking()`` section may hold a slot while another
            worker waits.
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
        self._waiters: deque[SlotHolder] = deque()
        self._holders: list[SlotHolder] = []
        self.handoffs = 0
        self.waits = 0

    def holder(self, name: str) -> SlotHolder:
        h = SlotHolder(name)
        with self._lock:
            self._holders.append(h)
        return h

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def acquire(self, h: SlotHolder) -> None:
        """Take a slot, waiting in line if none is free."""
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                h.holding = True
                return
            self._waiters.append(h)
            self.waits += 1
        handoff_after = self.handoff_after
        while not h.gate.acquire(timeout=handoff_after):
            self._take_from_blocked()

    def release(self, h: SlotHolder) -> None:
        """Give the slot to the first waiter, or back to the pool."""
        with self._lock:
            h.holding = False
            self._give()

    def _give(self) -> None:
        # Under the lock.
        if self._waiters:
            nxt = self._waiters.popleft()
            nxt.holding = True
            nxt.gate.release()
        else:
            self._free += 1

    def _take_from_blocked(self) -> None:
        """Detach a holder whose blocking section has run past the threshold."""
        now = time.monotonic()
        with self._lock:
            for h in self._holders:
                since = h.blocked_since
                if h.holding and since and now - since >= self.handoff_after:
                    h.holding = False
                    h.detached = True
                    self.handoffs += 1
                    self._give()
                    return

    def section(self, h: SlotHolder) -> BlockingSection:
        """A reusable context manager for ``h``'s blocking sections."""
        return BlockingSection(self, h)

    def _leave(self, h: SlotHolder) -> bool:
        with self._lock:
            h.blocked_since = 0.0
            detached = h.detached
            h.detached = False
        return detached


class BlockingSection:
    """``with section:`` marks code that may block; its slot may be handed over.

    One object per worker, reused for every section (no allocation per request).
    Nested sections count as one.
    """

    __slots__ = ("_depth", "_h", "_slots")

    def __init__(self, slots: RunSlots, h: SlotHolder) -> None:
        self._slots = slots
        self._h = h
        self._depth = 0

    def __enter__(self) -> None:
        self._depth += 1
        if self._depth == 1 and self._h.holding:
            self._h.blocked_since = time.monotonic() or 1e-9

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._h.blocked_since:
            if self._slots._leave(self._h):
                self._slots.acquire(self._h)
