"""Helpers shared by the reactor contract suite (after mio ``tests/util/mod.rs``).

``expect_events`` polls until every expected ``(token, bits)`` has been seen, where an
event matches when its token is equal and its bits include the expected ones (readiness
is a hint: extra bits are allowed). ``expect_no_events`` polls for a short while and
fails on anything. Both keep waits small: every test here is bounded.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from mioreactor.reactor import Events, Poll
from mioreactor.reactor.event import Event
from mioreactor.reactor.net import Stream, TcpListener, TcpStream

T = TypeVar("T")

__all__ = [
    "accept_all",
    "connected_pair",
    "count_fds",
    "drain",
    "expect_events",
    "expect_no_events",
    "reports_closed_states",
    "wait_for",
]


def expect_events(
    poll: Poll,
    events: Events,
    expected: Iterable[tuple[int, int]],
    timeout: float = 2.0,
) -> list[Event]:
    """Poll until each expected ``(token, bits)`` has been matched by an event.

    Returns every event seen, so a test can look at extra bits. Fails with what was
    seen if the deadline passes first.
    """
    missing = list(expected)
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while missing:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"expected events {_show(missing)}, saw only {seen!r}")
        poll.poll(events, min(left, 0.25))
        for event in events:
            seen.append(event)
            for item in missing:
                token, bits = item
                if event.token == token and event.bits & bits == bits:
                    missing.remove(item)
                    break
    return seen


def expect_no_events(poll: Poll, events: Events, wait: float = 0.05) -> None:
    """Poll once for ``wait`` seconds and fail on any event."""
    poll.poll(events, wait)
    assert events.is_empty(), f"expected no events, got {list(events)!r}"


def _show(items: list[tuple[int, int]]) -> str:
    return ", ".join(repr(Event(token, bits)) for token, bits in items)


def reports_closed_states(poll: Poll) -> bool:
    """Whether this backend reports ``read_closed``/``write_closed``.

    The portable fallback sees only readable/writable (poll(2) through ``selectors``);
    there the peer's close is learned by reading end-of-file.
    """
    return poll.backend_name != "fallback"


def drain(stream: Stream, size: int = 65536) -> bytes:
    """Read until ``BlockingIOError`` or end of stream; return what was read."""
    chunks = []
    while True:
        try:
            data = stream.recv(size)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def accept_all(listener: TcpListener) -> list[TcpStream]:
    """Accept until ``BlockingIOError`` (the accept-drain rule)."""
    accepted: list[TcpStream] = []
    while True:
        try:
            stream, _ = listener.accept()
        except BlockingIOError:
            return accepted
        accepted.append(stream)


def connected_pair(listener: TcpListener) -> tuple[socket.socket, TcpStream]:
    """A blocking client socket and the server's non-blocking ``TcpStream`` for it."""
    client = socket.create_connection(listener.local_addr()[:2], timeout=5)
    server = wait_for(lambda: _accept_one(listener))
    return client, server


def _accept_one(listener: TcpListener) -> TcpStream | None:
    try:
        return listener.accept()[0]
    except BlockingIOError:
        return None


def wait_for(probe: Callable[[], T | None], timeout: float = 2.0, step: float = 0.002) -> T:
    """Call ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {probe!r}")
        time.sleep(step)


def count_fds() -> int:
    """Open descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))
