"""Where the time of one keep-alive request goes, layer by layer, in microseconds.

Each layer of the HTTP path is timed alone, in this process, over many iterations
(medians of interleaved repeats), with the exact request wrk sends and the
``bench.apps.hello`` app:

* ``parse``: ``HttpProtocol.feed`` of the request bytes (httptools and our callbacks);
* ``environ``: ``request_environ`` (a copy of the per-connection base plus the request);
* ``app+start_response``: the app call with our ``StartResponse`` (header validation);
* ``handler``: the whole ``HttpHandler.data_received`` for one request on a stand-in
  connection whose ``write`` keeps nothing (parse, environ, app, head, timers);
* ``conn+handler``: the same through ``Conn.on_readable`` over a real socket pair:
  ``recv`` with data, the handler, ``send`` of the response, the draining ``recv``
  that raises ``BlockingIOError``, with the peer reading and answering in this thread;
* ``syscalls``: the same three socket calls with no Python layer in between.

    .venv/bin/python bench/breakdown.py [--iterations 20000] [--repeats 7]

The sum is compared with what one request costs at the measured server rate
(``--rate``, req/s, e.g. from ``make bench``): the rest is the dispatch (polling,
the batch loop) and the kernel's work for the client, which this does not see.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mioreactor.reactor import Interest, Poll
from mioreactor.reactor.net import TcpListener
from mioreactor.workers.core.connection import Conn
from mioreactor.workers.core.timers import Timers
from mioreactor.workers.core.worker import FIRST_CONN_TOKEN
from mioreactor.workers.http import HttpConfig
from mioreactor.workers.http.body import EMPTY_BODY
from mioreactor.workers.http.handler import HttpHandler
from mioreactor.workers.http.protocol import HttpProtocol, Request
from mioreactor.workers.http.wsgi import StartResponse, base_environ, request_environ

from bench.apps import hello

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


class _Section:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Worker:
    """Just enough of ``WorkerContext`` for the handler."""

    def __init__(self) -> None:
        self._section = _Section()

    def blocking(self) -> _Section:
        return self._section

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        raise AssertionError("no timer in the keep-alive path")


class _Deadline:
    def cancel(self) -> None:
        pass


class _Conn:
    """A connection whose writes go nowhere (the ``handler`` layer)."""

    peer = ("127.0.0.1", 40000)
    local = ("127.0.0.1", 8080)
    listener = None
    write_buffer_size = 0

    def __init__(self) -> None:
        self.context: Any = None
        self.sent = 0
        self._deadline = _Deadline()

    def write(self, data: bytes) -> None:
        self.sent += len(data)

    def rearm(
        self, delay: float, callback: Callable[[Any], None], now: float | None = None
    ) -> _Deadline:
        return self._deadline


def _per_call(fn: Callable[[], None], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def layers(n: int) -> dict[str, Callable[[], float]]:
    config = HttpConfig()
    proto = HttpProtocol(config)
    base = base_environ(_Conn.peer, _Conn.local, config)
    request = next(e for e in proto.feed(REQUEST) if isinstance(e, Request))
    trusted: frozenset[str] = frozenset()
    handler = HttpHandler(_Worker(), hello, config)  # type: ignore[arg-type]
    conn = _Conn()
    handler.connection_made(conn)  # type: ignore[arg-type]

    def parse() -> None:
        proto.feed(REQUEST)

    def environ() -> None:
        request_environ(base, request, EMPTY_BODY, trusted)

    env = request_environ(base, request, EMPTY_BODY, trusted)

    def app() -> None:
        hello(env, StartResponse())

    def whole() -> None:
        handler.data_received(conn, REQUEST)  # type: ignore[arg-type]

    return {
        "parse": lambda: _per_call(parse, n),
        "environ": lambda: _per_call(environ, n),
        "app+start_response": lambda: _per_call(app, n),
        "handler": lambda: _per_call(whole, n),
    }


def socket_layers(n: int) -> dict[str, Callable[[], float]]:
    """Over a loopback TCP pair: our Conn + handler vs the bare syscalls."""
    lst = TcpListener.bind(("127.0.0.1", 0))
    client = socket.create_connection(lst.local_addr())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        try:
            stream, peer = lst.accept()
            break
        except BlockingIOError:
            time.sleep(0.001)
    stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    poll = Poll()
    poll.registry.register(stream, FIRST_CONN_TOKEN, Interest.READABLE)
    config = HttpConfig()
    handler = HttpHandler(_Worker(), hello, config)  # type: ignore[arg-type]

    class _W:
        name = "bench"
        timers = Timers()

        def reschedule(self, conn: Any) -> None:
            pass

    conn = Conn(FIRST_CONN_TOKEN, stream, peer, _W(), handler)  # type: ignore[arg-type]
    handler.connection_made(conn)
    csend, crecv = client.send, client.recv
    raw = stream.socket
    response = b"x" * 140

    def ours() -> None:
        csend(REQUEST)
        conn.on_readable()
        crecv(65536)

    def bare() -> None:
        csend(REQUEST)
        raw.recv(65536)
        raw.send(response)
        try:
            raw.recv(65536)
        except BlockingIOError:
            pass
        crecv(65536)

    return {
        "conn+handler (+client)": lambda: _per_call(ours, n),
        "syscalls (+client)": lambda: _per_call(bare, n),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rate", type=float, default=0.0, help="measured req/s to compare with")
    args = ap.parse_args()
    tests = {**layers(args.iterations), **socket_layers(max(1000, args.iterations // 4))}
    samples: dict[str, list[float]] = {k: [] for k in tests}
    for r in range(args.repeats):
        names = list(tests)
        names = names[r % len(names):] + names[: r % len(names)]
        for name in names:
            samples[name].append(tests[name]())
    print(f"per request, medians of {args.repeats} (Python {sys.version.split()[0]}):")
    for name, vals in samples.items():
        print(f"  {name:24s} {statistics.median(vals):7.2f} us")
    if args.rate:
        print(f"  {'at the measured rate':24s} {1e6 / args.rate:7.2f} us ({args.rate:,.0f} req/s)")


if __name__ == "__main__":
    main()
