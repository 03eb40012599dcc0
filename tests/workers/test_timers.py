"""Timers: one-shot timers and the connection's re-armable deadline."""

from __future__ import annotations

import time
from typing import Any

from mioreactor.workers.core.timers import Deadline, Timers


class Owner:
    pass


def run_until(timers: Timers, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        timers.run_due()
        time.sleep(0.002)


def test_a_deadline_moved_later_keeps_one_heap_entry_and_fires_once_at_the_end() -> None:
    timers = Timers()
    owner = Owner()
    fired: list[Any] = []
    dl = Deadline(timers, owner)
    for _ in range(100):  # a keep-alive connection re-arming on every request
        dl.set(0.05, fired.append)
    assert len(timers._heap) == 1
    run_until(timers, 0.03)
    assert fired == []
    run_until(timers, 0.06)
    assert fired == [owner]
    assert len(timers) == 0


def test_a_deadline_moved_earlier_fires_at_the_earlier_time_once() -> None:
    timers = Timers()
    fired: list[Any] = []
    dl = Deadline(timers, Owner())
    dl.set(10.0, fired.append)
    dl.set(0.01, fired.append)
    run_until(timers, 0.05)
    assert len(fired) == 1
    assert timers.timeout() is None, "the superseded 10 s entry is gone"


def test_a_cancelled_deadline_does_not_fire_and_can_be_set_again() -> None:
    timers = Timers()
    fired: list[Any] = []
    dl = Deadline(timers, Owner())
    dl.set(0.01, fired.append)
    dl.cancel()
    assert dl.cancelled
    assert timers.timeout() is None  # drops the cancelled entry
    dl.set(0.01, fired.append)  # must queue a fresh entry
    run_until(timers, 0.05)
    assert len(fired) == 1


def test_a_deadline_reports_its_callback_error_with_itself() -> None:
    timers = Timers()
    dl = Deadline(timers, Owner())

    def boom(conn: Any) -> None:
        raise RuntimeError("boom")

    dl.set(0.0, boom)
    errors = timers.run_due()
    assert [(t, type(e)) for t, e in errors] == [(dl, RuntimeError)]


def test_one_shot_timers_and_deadlines_share_the_heap_in_order() -> None:
    timers = Timers()
    order: list[str] = []
    timers.call_later(0.02, lambda: order.append("timer"))
    Deadline(timers, Owner()).set(0.01, lambda conn: order.append("deadline"))
    run_until(timers, 0.05)
    assert order == ["deadline", "timer"]


def test_a_retired_deadline_lets_go_of_its_connection_and_is_purged() -> None:
    """A closed connection's deadline: no reference back to the connection (no
    cycle to wait for the collector), and a heap of them is purged, not kept until
    each one's timeout (a minute of ``Connection: close`` load would hold millions)."""
    import weakref

    timers = Timers()
    live = Deadline(timers, Owner())
    live.set(60.0, lambda conn: None)
    refs = []
    for _ in range(1000):
        owner = Owner()
        refs.append(weakref.ref(owner))
        dl = Deadline(timers, owner)
        dl.set(60.0, lambda conn: None)
        dl.retire()
        del owner, dl
    assert all(ref() is None for ref in refs)  # freed by reference counting alone
    assert len(timers._heap) < 200, len(timers._heap)
    assert len(timers) == 1
    assert timers.timeout() is not None  # the live one is still there


def _touch(conn: Owner) -> None:
    pass


def test_a_cancelled_timer_lets_go_of_its_callback() -> None:
    import weakref
    from functools import partial

    timers = Timers()
    owner = Owner()
    gone = weakref.ref(owner)
    timer = timers.call_later(60.0, partial(_touch, owner), conn=owner)
    del owner
    assert gone() is not None
    timer.cancel()
    assert gone() is None


def test_a_deadline_counts_from_the_time_its_caller_read() -> None:
    # The request path passes the monotonic time it read after the app (one clock
    # read for duration, Date and deadline): the deadline counts from that reading.
    timers = Timers()
    fired: list[Any] = []
    owner = Owner()
    dl = Deadline(timers, owner)
    dl.set(0.5, fired.append, time.monotonic() - 1.0)  # read 1 s ago: due already
    timers.run_due()
    assert fired == [owner]
    dl.set(0.0, fired.append, time.monotonic() + 5.0)  # from a reading 5 s ahead
    timer_wait = timers.timeout()
    assert timer_wait is not None and 4.0 < timer_wait <= 5.0
    run_until(timers, 0.02)
    assert fired == [owner]
