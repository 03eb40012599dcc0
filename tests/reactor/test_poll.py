"""Poll and Registry contract, on every backend (mio ``tests/poll.rs``, ``registering.rs``)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mioreactor import reactor
from mioreactor.reactor import Events, Interest, Poll, Waker
from mioreactor.reactor.event import READ_CLOSED, READABLE
from mioreactor.reactor.net import TcpListener, UnixStream
from mioreactor.reactor.poll import timeout_to_ms

from tests.reactor.util import connected_pair, drain, expect_events, expect_no_events

REPO = Path(__file__).resolve().parents[2]


# -- timeouts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "ms"),
    [(0.0001, 1), (0.001, 1), (0.0015, 2), (None, None), (0, 0), (0.0, 0), (-1, 0), (2.5, 2500)],
)
def test_timeout_to_ms_rounds_positive_times_up_to_whole_milliseconds(
    seconds: float | None, ms: int | None
) -> None:
    assert timeout_to_ms(seconds) == ms


@given(st.floats(min_value=1e-9, max_value=1e6, allow_nan=False))
def test_timeout_to_ms_never_cuts_a_positive_wait_short(seconds: float) -> None:
    ms = timeout_to_ms(seconds)
    assert ms is not None
    assert ms >= 1
    assert ms / 1000 >= seconds
    assert ms - 1 < seconds * 1000 + 1e-6


def test_a_zero_timeout_poll_returns_at_once(poll: Poll, events: Events) -> None:
    start = time.monotonic()
    for _ in range(10):
        poll.poll(events, 0)
    assert events.is_empty()
    assert time.monotonic() - start < 0.25  # ten polls; generous for a loaded machine


def test_a_positive_timeout_poll_waits_at_least_that_long(poll: Poll, events: Events) -> None:
    start = time.monotonic()
    poll.poll(events, 0.03)
    assert events.is_empty()
    assert time.monotonic() - start >= 0.03 - 0.001


def test_a_tiny_timeout_still_waits_about_a_millisecond(poll: Poll, events: Events) -> None:
    start = time.monotonic()
    poll.poll(events, 0.0001)  # rounds up to 1 ms, not down to a busy 0
    assert time.monotonic() - start >= 0.0009


# -- capacity -------------------------------------------------------------------------


def test_events_capacity_is_respected_and_the_rest_come_with_the_next_poll(
    poll: Poll, closing: list[object]
) -> None:
    pairs = [UnixStream.pair() for _ in range(5)]
    for a, b in pairs:
        closing += [a, b]
    for token, (a, _) in enumerate(pairs):
        poll.registry.register(a, token, Interest.READABLE)
        pairs[token][1].send(b"x")
    events = Events(2)
    seen: list[int] = []
    deadline = time.monotonic() + 2
    while len(seen) < 5 and time.monotonic() < deadline:
        poll.poll(events, 0.1)
        assert len(events) <= 2
        seen += [e.token for e in events]

    assert sorted(seen) == [0, 1, 2, 3, 4]
    expect_no_events(poll, events)


def test_events_refuses_a_capacity_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Events(0)


def test_poll_clears_the_events_it_is_given(
    poll: Poll, events: Events, closing: list[object]
) -> None:
    a, b = UnixStream.pair()
    closing += [a, b]
    poll.registry.register(a, 1, Interest.READABLE)
    b.send(b"x")
    expect_events(poll, events, [(1, READABLE)])
    poll.poll(events, 0)
    assert len(events) == 0


def test_events_iterate_as_event_objects_and_raw_as_tuples(
    poll: Poll, events: Events, closing: list[object]
) -> None:
    a, b = UnixStream.pair()
    closing += [a, b]
    poll.registry.register(a, 7, Interest.READABLE)
    b.send(b"x")
    poll.poll(events, 1)
    assert events.raw == [(7, READABLE)]
    (event,) = list(events)
    assert (event.token, event.is_readable, event.is_writable) == (7, True, False)
    assert not event.is_error
    assert "readable" in repr(event)


# -- refused calls ----------------------------------------------------------------------


def test_registering_a_source_twice_raises_file_exists(poll: Poll, closing: list[object]) -> None:
    a, b = UnixStream.pair()
    closing += [a, b]
    poll.registry.register(a, 1, Interest.READABLE)
    with pytest.raises(FileExistsError):
        poll.registry.register(a, 2, Interest.WRITABLE)


def test_deregistering_an_unknown_source_raises_file_not_found(
    poll: Poll, closing: list[object]
) -> None:
    a, b = UnixStream.pair()
    closing += [a, b]
    with pytest.raises(FileNotFoundError):
        poll.registry.deregister(a)
    with pytest.raises(FileNotFoundError):
        poll.registry.reregister(a, 1, Interest.READABLE)


def test_an_empty_interest_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Interest(0)
    assert Interest.READABLE.remove(Interest.READABLE) is None
    assert (Interest.READABLE | Interest.WRITABLE).remove(Interest.READABLE) == Interest.WRITABLE


def test_an_interest_that_is_not_an_interest_is_refused(poll: Poll, closing: list[object]) -> None:
    a, b = UnixStream.pair()
    closing += [a, b]
    with pytest.raises(TypeError):
        poll.registry.register(a, 1, 1)  # type: ignore[arg-type]


def test_registering_a_closed_socket_raises_value_error(poll: Poll) -> None:
    a, b = UnixStream.pair()
    a.close()
    b.close()
    with pytest.raises(ValueError, match="closed"):
        poll.registry.register(a, 1, Interest.READABLE)
    raw = socket.socket()
    raw.close()
    with pytest.raises(ValueError, match="closed"):
        poll.registry.register(raw, 1, Interest.READABLE)


def test_a_refused_registration_of_a_bad_descriptor_leaves_no_trace(
    poll: Poll, events: Events, closing: list[object]
) -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)  # ``r`` is now a number the kernel does not know

    with pytest.raises(OSError) as info:
        poll.registry.register(r, 99, Interest.READABLE)

    assert info.value.errno == errno.EBADF
    with pytest.raises(FileNotFoundError):  # nothing was recorded
        poll.registry.deregister(r)
    a, b = UnixStream.pair()  # reuses the lowest free numbers, likely ``r``
    closing += [a, b]
    poll.registry.register(a, 1, Interest.READABLE)
    b.send(b"x")
    seen = expect_events(poll, events, [(1, READABLE)])
    assert 99 not in {e.token for e in seen}


def test_epoll_refuses_a_regular_file_and_leaves_no_trace(
    poll: Poll, events: Events, tmp_path: Path, closing: list[object]
) -> None:
    if poll.backend_name != "epoll":
        pytest.skip("only epoll refuses regular files (poll(2) reports them always ready)")
    with open(tmp_path / "f", "w+b") as f:
        with pytest.raises(PermissionError):
            poll.registry.register(f.fileno(), 99, Interest.READABLE)
        with pytest.raises(FileNotFoundError):
            poll.registry.deregister(f.fileno())
        fd = f.fileno()
    # The number is free again; a socket that gets it registers and reports normally.
    a, b = UnixStream.pair()
    closing += [a, b]
    assert fd in (a.fileno(), b.fileno())
    poll.registry.register(a, 1, Interest.READABLE)
    poll.registry.register(b, 2, Interest.READABLE)
    a.send(b"x")
    b.send(b"y")
    seen = expect_events(poll, events, [(1, READABLE), (2, READABLE)])
    assert 99 not in {e.token for e in seen}


# -- threads --------------------------------------------------------------------------


def test_a_registration_from_another_thread_is_seen_by_a_blocking_poll(
    poll: Poll, events: Events, closing: list[object]
) -> None:
    a, b = UnixStream.pair()
    closing += [a, b]
    b.send(b"ready before it is registered")
    registry = poll.registry.try_clone()
    timer = threading.Timer(0.1, registry.register, (a, 5, Interest.READABLE))

    start = time.monotonic()
    timer.start()
    try:
        poll.poll(events, 5)
    finally:
        timer.join()

    assert time.monotonic() - start < 2
    assert [(e.token, e.is_readable) for e in events] == [(5, True)]


def test_a_reregistration_from_another_thread_is_seen_by_a_blocking_poll(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, 1, Interest.READABLE)
    timer = threading.Timer(0.1, poll.registry.reregister, (server, 2, Interest.WRITABLE))

    start = time.monotonic()
    timer.start()
    try:
        seen = expect_events(poll, events, [(2, 2)], timeout=5)
    finally:
        timer.join()

    assert time.monotonic() - start < 2
    assert {e.token for e in seen} == {2}


def test_a_blocking_poll_does_not_return_empty_when_another_thread_deregisters(
    poll: Poll, events: Events, closing: list[object]
) -> None:
    a, b = UnixStream.pair()
    closing += [a, b]
    poll.registry.register(a, 1, Interest.READABLE)
    timer = threading.Timer(0.05, poll.registry.deregister, (a,))

    start = time.monotonic()
    timer.start()
    try:
        poll.poll(events, 0.3)
    finally:
        timer.join()

    assert events.is_empty()
    assert time.monotonic() - start >= 0.3 - 0.001


# -- signals (docs/decisions.md, "EINTR") -------------------------------------------------


def _signal_during_poll(poll: Poll, events: Events, timeout: float) -> float:
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1))
    start = time.monotonic()
    timer.start()
    try:
        poll.poll(events, timeout)
    finally:
        timer.join()
    return time.monotonic() - start


@pytest.fixture
def sigusr1() -> object:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    old = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, old)


def test_a_signal_whose_handler_returns_does_not_end_the_poll(
    poll: Poll, events: Events, sigusr1: object
) -> None:
    ran = []
    signal.signal(signal.SIGUSR1, lambda *_: ran.append(1))

    elapsed = _signal_during_poll(poll, events, 0.3)

    assert ran == [1]
    assert events.is_empty()
    assert elapsed >= 0.3 - 0.001  # PEP 475: the wait resumed after the handler


def test_a_signal_handler_that_raises_ends_the_poll_with_its_exception(
    poll: Poll, events: Events, sigusr1: object
) -> None:
    def handler(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGUSR1, handler)

    with pytest.raises(KeyboardInterrupt):
        _signal_during_poll(poll, events, 5)


def test_a_signal_handler_that_wakes_the_waker_ends_the_poll_with_the_wake(
    poll: Poll, events: Events, sigusr1: object
) -> None:
    waker = Waker(poll.registry, 42)
    try:
        signal.signal(signal.SIGUSR1, lambda *_: waker.wake())
        elapsed = _signal_during_poll(poll, events, 5)
    finally:
        waker.close()

    assert [e.token for e in events] == [42]
    assert elapsed < 2


# -- choosing a backend -------------------------------------------------------------------


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_reactor_backend_fallback_in_the_environment_selects_the_fallback() -> None:
    result = _run_python(
        "from mioreactor import reactor; print(reactor.BACKEND_NAME, reactor.Poll().backend_name)",
        REACTOR_BACKEND="fallback",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fallback", "fallback"]


def test_an_invalid_reactor_backend_fails_the_import_with_a_clear_message() -> None:
    result = _run_python("import mioreactor.reactor", REACTOR_BACKEND="iocp")
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "REACTOR_BACKEND='iocp' is not available here; choose one of" in result.stderr


def test_an_unknown_backend_name_is_refused_by_poll() -> None:
    with pytest.raises(ValueError, match="unknown reactor backend"):
        Poll(backend="iocp")


def test_the_default_backend_is_the_best_one_available() -> None:

    if os.environ.get("REACTOR_BACKEND"):
        pytest.skip("REACTOR_BACKEND is set for this run")
    assert reactor.backend_name() == reactor.available_backends()[0]
    assert reactor.available_backends()[-1] == "fallback"


def test_drained_data_is_not_reported_by_a_later_registration_on_another_poll(
    backend: str, closing: list[object]
) -> None:
    # Two Polls are independent: registering on one does not consume the other's edge.
    a, b = UnixStream.pair()
    closing += [a, b]
    with Poll(backend=backend) as one, Poll(backend=backend) as two:
        events = Events(8)
        one.registry.register(a, 1, Interest.READABLE)
        two.registry.register(b, 2, Interest.READABLE)
        b.send(b"to a")
        a.send(b"to b")
        expect_events(one, events, [(1, READABLE)])
        expect_events(two, events, [(2, READABLE)])
        assert drain(a) == b"to a"
        assert drain(b) == b"to b"


def test_epoll_drops_an_event_for_a_descriptor_deregistered_while_it_waited(
    closing: list[object],
) -> None:
    # White box: the race (kernel reports, another thread deregisters, then we
    # translate) cannot be timed from outside, so the kernel's answer is replayed.
    import select

    if "epoll" not in reactor.available_backends():
        pytest.skip("no epoll here")
    from mioreactor.reactor.sys.epoll import Selector

    a, b = UnixStream.pair()
    closing += [a, b]
    sel = Selector()
    closing.append(sel)
    sel.register(a.fileno(), 1, 1)
    real = sel._epoll

    class Replay:
        def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
            return [(b.fileno(), select.EPOLLIN), (a.fileno(), select.EPOLLIN | select.EPOLLRDHUP)]

    sel._epoll = Replay()  # type: ignore[assignment]
    out: list[tuple[int, int]] = []
    sel.select(out, 8, 0)
    sel._epoll = real
    assert out == [(1, READABLE | READ_CLOSED)]
