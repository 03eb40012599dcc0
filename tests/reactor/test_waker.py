"""Waker contract, on every backend (mio ``tests/waker.rs``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from mioreactor.reactor import Events, Poll, Waker
from mioreactor.reactor.event import READABLE

from tests.reactor.util import expect_events, expect_no_events

WAKE = 10


@pytest.fixture
def waker(poll: Poll) -> Iterator[Waker]:
    w = Waker(poll.registry, WAKE)
    yield w
    w.close()


def test_a_waker_in_another_thread_wakes_a_blocking_poll(
    poll: Poll, events: Events, waker: Waker
) -> None:
    timer = threading.Timer(0.1, waker.wake)
    start = time.monotonic()
    timer.start()
    try:
        poll.poll(events, None)
    finally:
        timer.join()

    assert time.monotonic() - start < 2
    assert events.raw == [(WAKE, READABLE)]


def test_several_wakes_before_a_poll_coalesce_into_one_event(
    poll: Poll, events: Events, waker: Waker
) -> None:
    for _ in range(100):
        waker.wake()

    seen = expect_events(poll, events, [(WAKE, READABLE)])

    assert [e.token for e in seen] == [WAKE]
    expect_no_events(poll, events)


def test_a_wake_after_a_poll_gives_a_new_event(poll: Poll, events: Events, waker: Waker) -> None:
    for _ in range(3):
        waker.wake()
        expect_events(poll, events, [(WAKE, READABLE)])
        expect_no_events(poll, events, wait=0.01)


def test_wakes_from_many_threads_are_never_lost(poll: Poll, events: Events, waker: Waker) -> None:
    threads = [threading.Thread(target=waker.wake) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    expect_events(poll, events, [(WAKE, READABLE)])


def test_a_second_waker_on_one_poll_is_refused(poll: Poll, waker: Waker) -> None:
    with pytest.raises(ValueError, match="already has a Waker"):
        Waker(poll.registry, WAKE + 1)
    with pytest.raises(ValueError, match="already has a Waker"):
        Waker(poll.registry.try_clone(), WAKE + 1)


def test_a_new_waker_may_be_made_after_the_old_one_is_closed(poll: Poll, events: Events) -> None:
    first = Waker(poll.registry, 1)
    first.close()
    second = Waker(poll.registry, 2)
    try:
        second.wake()
        seen = expect_events(poll, events, [(2, READABLE)])
    finally:
        second.close()
    assert 1 not in {e.token for e in seen}


def test_a_wake_is_reported_alongside_other_events_within_the_capacity(
    poll: Poll, waker: Waker
) -> None:
    events = Events(1)
    waker.wake()
    poll.poll(events, 1)
    assert events.raw == [(WAKE, READABLE)]
    expect_no_events(poll, events)
