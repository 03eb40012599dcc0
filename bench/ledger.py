"""The cost ledger: microseconds per keep-alive request for each thing the product does
that the floor loop (``bench/floor.py``) does not.

Each item is timed alone in this thread, over many iterations, with the request wrk
sends and ``bench.apps.hello``: the product's piece and, where the floor has one, the
floor's equivalent (the same code as in the floor's (bench/floor.py) worker). Figures are this
thread's CPU time (``time.thread_time``: other processes on a shared machine do not
count), medians of interleaved repeats. The difference column is what the product
pays for the feature.

    .venv/bin/python bench/ledger.py [--iterations 20000] [--repeats 7]

What this cannot see: the kernel's share (the same system calls for both), and what
threads cost each other (the acceptor's wake-ups, GIL hand-overs): compare the sum with
``bench/calls.py`` (deterministic counts) and a wrk run (``bench/ab.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httptools
from mioreactor.workers.core.scheduler import RunSlots
from mioreactor.workers.core.timers import Deadline, Timers
from mioreactor.workers.http import HttpConfig
from mioreactor.workers.http.body import EMPTY_BODY
from mioreactor.workers.http.express import match as express_match
from mioreactor.workers.http.handler import HttpHandler
from mioreactor.workers.http.protocol import HttpProtocol, Request
from mioreactor.workers.http.response import DateCache, ResponseEncoder
from mioreactor.workers.http.wsgi import StartResponse, base_environ, request_environ
from mioreactor.workers.ops.metrics import BUCKETS, DURATION_BOUNDS

from bench.apps import hello
from bench.breakdown import REQUEST, _Conn, _Worker


class _FloorConn:
    """the floor's (bench/floor.py) per-connection parser callbacks, verbatim."""

    __slots__ = ("done", "headers", "parser", "url")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done: list[Any] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.done.append((self.url, self.headers))
        self.url = b""
        self.headers = []


class _FloorResponse:
    status = "500 Internal Server Error"
    headers: Any = ()

    def __call__(self, status: str, headers: Any, exc_info: Any = None) -> None:
        self.status, self.headers = status, headers


def _floor_environ(c: _FloorConn, url: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    path, _, qs = url.partition(b"?")
    env = {"REQUEST_METHOD": c.parser.get_method().decode(),
           "PATH_INFO": path.decode("latin-1"),
           "QUERY_STRING": qs.decode("latin-1"),
           "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.input": None}
    for k, v in headers:
        env["HTTP_" + k.decode("latin-1").upper().replace("-", "_")] = v.decode("latin-1")
    return env


def _floor_head(sr: _FloorResponse) -> bytes:
    head = "HTTP/1.1 " + sr.status + "\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in sr.headers) + "\r\n"
    return head.encode("latin-1")


def items() -> list[tuple[str, Callable[[], object], Callable[[], object] | None]]:
    """(name, the product's piece, the floor's piece or None)."""
    config = HttpConfig()
    proto = HttpProtocol(config)
    fc = _FloorConn()
    base = base_environ(_Conn.peer, _Conn.local, config)
    request = next(e for e in proto.feed(REQUEST) if isinstance(e, Request))
    trusted: frozenset[str] = frozenset()
    fc.parser.feed_data(REQUEST)
    furl, fheaders = fc.done.pop()
    env = request_environ(base, request, EMPTY_BODY, trusted)
    fenv = _floor_environ(fc, furl, fheaders)
    encoder = ResponseEncoder(config.server_header)
    start = StartResponse()
    hello(env, start)
    fsr = _FloorResponse()
    hello(fenv, fsr)
    date = DateCache()
    timers = Timers()
    deadline = Deadline(timers, None)
    slots = RunSlots(1)
    holder = slots.holder("ledger")
    slots.enter(holder)
    section = slots.section(holder)
    handler = HttpHandler(_Worker(), hello, config)  # type: ignore[arg-type]
    conn = _Conn()
    handler.connection_made(conn)  # type: ignore[arg-type]
    general = HttpHandler(_Worker(), hello, HttpConfig(express=False))  # type: ignore[arg-type]
    gconn = _Conn()
    general.connection_made(gconn)  # type: ignore[arg-type]
    counts = [0] * (6 * BUCKETS)

    def ours_parse() -> None:
        proto.feed(REQUEST)

    def floor_parse() -> None:
        fc.parser.feed_data(REQUEST)
        fc.done.clear()

    def ours_environ() -> None:
        request_environ(base, request, EMPTY_BODY, trusted)

    def floor_environ() -> None:
        _floor_environ(fc, furl, fheaders)

    def ours_app() -> None:
        hello(env, StartResponse())

    def floor_app() -> None:
        b"".join(hello(fenv, fsr))

    def ours_head() -> None:
        encoder.head(start.status, start.headers, b"Content-Length: 13\r\n") + b"Hello, world!"

    def floor_head() -> None:
        _floor_head(fsr) + b"Hello, world!"

    def ours_date() -> None:
        date.line()

    def ours_timer() -> None:
        deadline.set(5.0, _noop)  # the keep-alive arm after the response
        deadline.cancel()  # and its cancel when the next request begins

    def ours_slot() -> None:
        with section:
            pass

    def ours_stats() -> None:
        started = time.perf_counter()
        elapsed = time.perf_counter() - started
        counts[2 * BUCKETS + bisect_left(DURATION_BOUNDS, elapsed)] += 1

    def ours_express() -> None:
        express_match(REQUEST, base, 8190, 100)

    def floor_parse_environ() -> None:
        fc.parser.feed_data(REQUEST)
        for url, headers in fc.done:
            _floor_environ(fc, url, headers)
        fc.done.clear()

    def ours_general() -> None:
        general.data_received(gconn, REQUEST)  # type: ignore[arg-type]

    def ours_handler() -> None:
        handler.data_received(conn, REQUEST)  # type: ignore[arg-type]

    def floor_worker() -> None:
        # the floor's (bench/floor.py) worker body for one read with one request, minus the syscalls
        fc.parser.feed_data(REQUEST)
        out = []
        for url, headers in fc.done:
            e = _floor_environ(fc, url, headers)
            body = b"".join(hello(e, fsr))
            out.append(_floor_head(fsr) + body)
        fc.done.clear()
        b"".join(out)

    return [
        ("parse (HttpProtocol.feed; strict head checks)", ours_parse, floor_parse),
        ("environ (request_environ)", ours_environ, floor_environ),
        ("app + start_response (header validation, cached)", ours_app, floor_app),
        ("response head (status line, Date, framing)", ours_head, floor_head),
        ("  of which the Date cache", ours_date, None),
        ("timers: keep-alive deadline armed + cancelled", ours_timer, None),
        ("run slot: the blocking section around the app", ours_slot, None),
        ("stats: duration histogram (2 clock reads)", ours_stats, None),
        ("express lane: head matched, environ built (express.match)", ours_express,
         floor_parse_environ),
        ("whole handler, general path (--no-express)", ours_general, floor_worker),
        ("whole handler (HttpHandler.data_received, express lane)", ours_handler, floor_worker),
    ]


def _noop(conn: Any) -> None:
    pass


def _cpu_per_call(fn: Callable[[], object], n: int) -> float:
    t0 = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)
    rows = items()
    tests: list[tuple[str, Callable[[], object]]] = []
    for name, ours, floor in rows:
        tests.append((name + "|ours", ours))
        if floor is not None:
            tests.append((name + "|floor", floor))
    samples: dict[str, list[float]] = {k: [] for k, _ in tests}
    for r in range(a.repeats):
        order = tests[r % len(tests):] + tests[: r % len(tests)]
        for key, fn in order:
            samples[key].append(_cpu_per_call(fn, a.iterations))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"us per request (thread CPU), medians of {a.repeats} x {a.iterations}, "
          f"Python {sys.version.split()[0]}")
    print(f"| {'item':52s} | product | floor | difference |")
    print(f"|{'-' * 54}|---|---|---|")
    for name, _, floor in rows:
        ours = med[name + "|ours"]
        if floor is None:
            print(f"| {name:52s} | {ours:.2f} | - | {ours:.2f} |")
        else:
            f = med[name + "|floor"]
            print(f"| {name:52s} | {ours:.2f} | {f:.2f} | {ours - f:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
