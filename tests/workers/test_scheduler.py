"""Run slots (``mioreactor.workers.core.scheduler``): one worker runs at a time on a GIL build, and a
worker stuck in a blocking section hands its slot to a standby worker.

Unit tests drive ``RunSlots`` directly with threads; the end-to-end tests use a real
``Server(workers=4, run_slots=1)`` and a WSGI app that sleeps (the HTTP handler wraps
every app call in ``with worker.blocking():``).
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from mioreactor.workers import Server
from mioreactor.workers.core.scheduler import RunSlots, default_slots

from tests.workers.util import wait_for


def in_thread(fn: Callable[[], None], name: str) -> threading.Thread:
    t = threading.Thread(target=fn, name=name, daemon=True)
    t.start()
    return t


# -- unit tests ------------------------------------------------------------------------


def test_default_is_one_slot_with_a_gil() -> None:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    assert default_slots() == (1 if gil else max(1, os.cpu_count() or 1))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RunSlots(0)
    with pytest.raises(ValueError, match="positive"):
        RunSlots(1, handoff_after=0)


def test_with_one_slot_two_workers_never_run_at_once() -> None:
    slots = RunSlots(1)
    running = 0
    most = 0
    turns = {"a": 0, "b": 0}
    guard = threading.Lock()

    def worker(name: str) -> None:
        nonlocal running, most
        h = slots.holder(name)
        for _ in range(50):
            slots.enter(h)
            with guard:
                running += 1
                most = max(most, running)
            time.sleep(0.0005)  # releases the GIL: the other thread could run now
            turns[name] += 1
            with guard:
                running -= 1
            slots.leave(h)

    threads = [in_thread(lambda n=n: worker(n), f"test-{n}") for n in ("a", "b")]
    for t in threads:
        t.join(10)
    assert most == 1
    assert turns == {"a": 50, "b": 50}


def test_two_slots_let_two_workers_run_but_not_three() -> None:
    slots = RunSlots(2)
    hs = [slots.holder(f"w{i}") for i in range(3)]
    slots.enter(hs[0])
    slots.enter(hs[1])
    third = in_thread(lambda: slots.enter(hs[2]), "test-third")
    assert wait_for(lambda: slots.standby_count == 1, 1.0)
    assert third.is_alive() and not hs[2].holding
    slots.leave(hs[0])
    third.join(1)
    assert not third.is_alive() and hs[2].holding


def test_a_long_blocking_section_hands_the_slot_to_a_standby_worker() -> None:
    slots = RunSlots(1, handoff_after=0.01)
    a = slots.holder("a")
    b = slots.holder("b")
    section = slots.section(a)
    slots.enter(a)
    b_runs = threading.Event()
    in_thread(lambda: (slots.enter(b), b_runs.set()), "test-b")
    assert wait_for(lambda: slots.standby_count == 1, 1.0)

    with section:  # a blocks, e.g. in a database call
        time.sleep(0.03)  # longer than handoff_after
        # The acceptor checks after each poll cycle; work is waiting (1 queued batch).
        slots.check(1)
        # b was promoted while a is still inside its blocking section.
        assert b_runs.wait(1.0)
        assert b.holding
        assert a.detached and not a.holding
        assert slots.handoffs == 1

    # a, detached, is done with its connection: it goes back on standby and waits
    # until b gives the slot up.
    a_back = threading.Event()
    in_thread(lambda: (slots.enter(a), a_back.set()), "test-a-again")
    assert not a_back.wait(0.1), "the detached worker ran while b held the only slot"
    slots.leave(b)
    assert a_back.wait(1.0)
    assert a.holding and not a.detached


def test_a_short_blocking_section_keeps_its_slot() -> None:
    slots = RunSlots(1, handoff_after=0.5)
    a = slots.holder("a")
    b = slots.holder("b")
    slots.enter(a)
    t = in_thread(lambda: slots.enter(b), "test-b")
    assert wait_for(lambda: slots.standby_count == 1, 1.0)
    with slots.section(a):
        time.sleep(0.01)
        again = slots.check(1)
    assert again is not None and 0 < again <= 0.5  # check again when it could be due
    assert slots.handoffs == 0
    assert a.holding and not a.detached and not b.holding
    slots.leave(a)
    t.join(1)
    assert b.holding


def test_no_hand_off_when_no_work_waits_or_nobody_stands_by() -> None:
    slots = RunSlots(1, handoff_after=0.005)
    a = slots.holder("a")
    slots.enter(a)
    with slots.section(a):
        time.sleep(0.02)
        assert slots.check(5) is not None  # work waits, but nobody stands by
        b = slots.holder("b")
        t = in_thread(lambda: slots.enter(b), "test-b")
        assert wait_for(lambda: slots.standby_count == 1, 1.0)
        assert slots.check(0) is None  # somebody stands by, but no work waits
    assert slots.handoffs == 0 and a.holding
    slots.leave(a)
    t.join(1)


def test_nested_sections_count_as_one() -> None:
    slots = RunSlots(1)
    a = slots.holder("a")
    slots.enter(a)
    section = slots.section(a)
    with section:
        first = a.blocked_since
        with section:
            assert a.blocked_since == first
        assert a.blocked_since == first  # still inside the outer one
    assert a.blocked_since == 0.0


# -- a real server -----------------------------------------------------------------------

SLOW = 0.05


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/slow`` waits as a database call would; ``/fast`` answers at once."""
    path = environ["PATH_INFO"]
    if path.startswith("/slow"):
        time.sleep(float(path.rsplit("/", 1)[1]) if path.count("/") > 1 else SLOW)
    body = path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(app, bind="127.0.0.1:0", workers=4, run_slots=1)
    srv.start()
    yield srv
    srv.stop(timeout=5)


def request(sock: socket.socket, path: str) -> None:
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % path.encode())


def await_responses(socks: list[socket.socket], timeout: float = 5.0) -> dict[int, float]:
    """Read one response per socket; when each completed (monotonic time)."""
    done: dict[int, float] = {}
    bufs = {i: b"" for i in range(len(socks))}
    deadline = time.monotonic() + timeout
    while len(done) < len(socks) and time.monotonic() < deadline:
        pending = [s for i, s in enumerate(socks) if i not in done]
        readable, _, _ = select.select(pending, [], [], deadline - time.monotonic())
        for s in readable:
            i = socks.index(s)
            chunk = s.recv(65536)
            assert chunk, f"connection {i} closed"
            bufs[i] += chunk
            head, sep, body = bufs[i].partition(b"\r\n\r\n")
            if sep:
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    assert head.startswith(b"HTTP/1.1 200")
                    done[i] = time.monotonic()
    assert len(done) == len(socks), f"{len(done)} of {len(socks)} answered"
    return done


def test_blocking_requests_run_concurrently_on_several_workers(server: Server) -> None:
    socks = [socket.create_connection(server.address, timeout=5) for _ in range(8)]
    try:
        for s in socks:  # warm up: every connection is accepted and served once
            request(s, "/fast")
        await_responses(socks)
        best = float("inf")
        for _ in range(3):  # best of three: a busy CI machine may stall one round
            started = time.monotonic()
            for s in socks:
                request(s, "/slow")
            done = await_responses(socks)
            best = min(best, max(done.values()) - started)
        # Serially: 8 x 50 ms = 400 ms. Four workers: about 2 x 50 ms.
        print(f"8 concurrent slow requests: {best * 1000:.0f} ms")
        assert best < 4 * SLOW, f"8 slow requests took {best * 1000:.0f} ms"
        assert server.stats()["handoffs"] > 0
    finally:
        for s in socks:
            s.close()


def test_fast_requests_are_not_stuck_behind_slow_ones(server: Server) -> None:
    slow = [socket.create_connection(server.address, timeout=5) for _ in range(3)]
    fast = socket.create_connection(server.address, timeout=5)
    try:
        for s in [*slow, fast]:
            request(s, "/fast")
        await_responses([*slow, fast])
        started = time.monotonic()
        for s in slow:
            request(s, "/slow/0.3")
        time.sleep(0.01)  # the slow ones are inside the app now
        request(fast, "/fast")
        fast_done = await_responses([fast])[0] - started
        slow_done = await_responses(slow)
        assert fast_done < 0.15, f"a fast request took {fast_done * 1000:.0f} ms"
        assert max(slow_done.values()) - started >= 0.3
        # The three slow calls overlapped instead of running one after another.
        assert max(slow_done.values()) - started < 0.6
    finally:
        for s in [*slow, fast]:
            s.close()


def test_a_section_call_marks_the_time_its_caller_read_and_clears_it() -> None:
    # The request path reads the clock once before the app and passes it: the
    # watchdog's mark and the hand-off's start are that reading.
    slots = RunSlots(1)
    h = slots.holder("w")
    slots.enter(h)
    section = slots.section(h)
    seen: list[tuple[float, float]] = []

    def app(a: Any, b: Any) -> str:
        seen.append((h.app_since, h.blocked_since))
        return f"{a}{b}"

    assert section.call(app, "a", "b", 123.5) == "ab"
    assert seen == [(123.5, 123.5)]
    before = time.monotonic()
    assert section.call(app, "c", "d") == "cd"  # no reading given: read here
    assert before <= seen[1][0] == seen[1][1] <= time.monotonic()
    assert (h.app_since, h.blocked_since) == (0.0, 0.0)
