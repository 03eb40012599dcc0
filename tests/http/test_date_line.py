"""The ``Date`` line: current on every response, from the clock read the request already made.

The express lanes (WSGI and ASGI) read ``time.monotonic()`` once after the app and
ask the ``DateCache`` with it (``mono_until``: when the current wall-clock second
ends, on the monotonic clock) instead of reading the wall clock per response. These
tests hold the line to the wall clock: it names the current second, it is made anew
once ``mono_until`` has passed, and the general path and both lanes agree.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from mioreactor.workers.asgi.handler import AsgiHandler
from mioreactor.workers.asgi.loop import LoopDriver
from mioreactor.workers.http import HttpConfig, make_http_handler_factory
from mioreactor.workers.http.response import DateCache

from tests.http.fakes import FakeWorker, connect

pytestmark = pytest.mark.timeout(30)

REQUEST = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"hi"]


async def hello_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hi"})


class PostingWorker(FakeWorker):
    def post(self, callback: Callable[[], None]) -> None:
        callback()


def _dates(out: bytes) -> list[float]:
    return [parsedate_to_datetime(m.decode()).timestamp()
            for m in re.findall(rb"Date: ([^\r]*)\r\n", out)]


def _wsgi(express: bool) -> tuple[Any, Callable[[bytes], bytes], Callable[[], None]]:
    worker = FakeWorker()
    handler = make_http_handler_factory(hello, HttpConfig(express=express))(worker)
    conn = connect(handler, worker)

    def ask(data: bytes) -> bytes:
        conn.feed(data)
        return conn.take()

    return handler, ask, lambda: None


def _asgi(express: bool) -> tuple[Any, Callable[[bytes], bytes], Callable[[], None]]:
    worker = PostingWorker()
    driver = LoopDriver()
    handler = AsgiHandler(worker, hello_asgi, driver, HttpConfig(express=express), {})
    conn = connect(handler, worker)

    def ask(data: bytes) -> bytes:
        conn.feed(data)
        driver.step()
        return conn.take()

    # Closing the driver also lets go of the thread's running loop (LoopDriver._enter),
    # which would otherwise stop the next test that runs a loop on this thread.
    return handler, ask, driver.close


SERVERS = {"wsgi-lane": (_wsgi, True), "wsgi-general": (_wsgi, False),
           "asgi-lane": (_asgi, True), "asgi-general": (_asgi, False)}


def test_the_cache_knows_when_its_second_ends_on_the_monotonic_clock() -> None:
    cache = DateCache()
    before = time.time()
    line = cache.line()
    mono = time.monotonic()
    (stamp,) = _dates(line)
    assert int(before) <= stamp <= time.time()
    # The line holds until the wall clock's next second, which is at most 1 s away.
    assert mono < cache.mono_until <= mono + 1.0 + 1e-3
    assert cache.mono_until - mono == pytest.approx(int(before) + 1.0 - before, abs=0.05) or (
        int(time.time()) != int(before)  # the second turned between the two reads
    )


@pytest.mark.parametrize("kind", list(SERVERS))
def test_every_response_names_the_current_second(kind: str) -> None:
    make, express = SERVERS[kind]
    _, ask, close = make(express)
    try:
        first = time.time()
        # Across a turn of the wall clock's second (at most 1.1 s of requests).
        seen: set[float] = set()
        while time.time() - first < 1.1 and len(seen) < 2:
            lo = int(time.time())
            (stamp,) = _dates(ask(REQUEST))
            hi = time.time()
            assert lo <= stamp <= hi, (lo, stamp, hi)
            seen.add(stamp)
            time.sleep(0.02)
    finally:
        close()
    assert len(seen) == 2  # the line moved on with the clock


@pytest.mark.parametrize("kind", list(SERVERS))
def test_a_line_past_its_monotonic_end_is_made_anew(kind: str) -> None:
    make, express = SERVERS[kind]
    handler, ask, close = make(express)
    try:
        ask(REQUEST)
        date = handler.encoder._date
        # As if the second had ended: the line the cache holds is stale, and both
        # clocks say so (the general path asks the wall clock, the lanes the monotonic).
        date._line = b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
        date._second, date._until, date.mono_until = 0.0, 1.0, 0.0
        (stamp,) = _dates(ask(REQUEST))
    finally:
        close()
    assert abs(stamp - time.time()) <= 1.0


def _durations_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/slow":
        time.sleep(0.03)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"hi"]


async def _durations_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        time.sleep(0.03)  # blocking on purpose: the response stays on the lane's path
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hi"})


@pytest.mark.parametrize("app", [_durations_app, _durations_asgi], ids=["wsgi", "asgi"])
def test_the_lanes_count_each_duration_in_its_bucket(app: Any) -> None:
    # The duration comes from the same two clock reads; the first bucket (<= 0.5 ms)
    # is taken without bisect, every other one with it.
    import socket

    from mioreactor.workers import Server
    from mioreactor.workers.ops.metrics import DURATION_BOUNDS

    with Server(app, bind="127.0.0.1:0", workers=2, lifespan="off") as server:
        with socket.create_connection(server.address, timeout=5) as sock:
            for path in ("/", "/slow", "/"):
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % path.encode())
                got = b""
                while not got.endswith(b"hi"):
                    chunk = sock.recv(4096)
                    assert chunk
                    got += chunk
        deadline = time.monotonic() + 5  # the answer is written before it is counted
        while (duration := server.stats()["request_duration"])["count"] < 3:
            assert time.monotonic() < deadline, duration
            time.sleep(0.01)
    buckets = duration["buckets"]
    assert duration["count"] == 3 == sum(buckets)
    slow = DURATION_BOUNDS.index(0.05)  # 30 ms: above 25 ms, within 50 ms
    assert buckets[slow] == 1, buckets
    assert sum(buckets[:slow]) == 2  # the two fast ones, below it
    assert duration["sum"] >= 0.03
