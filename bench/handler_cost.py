"""Machine instructions per request (or WebSocket message) in the handler alone.

The handler is fed in this process, with fakes for the worker and the connection (no
socket, no worker loop): ``wsgi`` and ``asgi`` feed wrk's keep-alive head to
``HttpHandler`` (``bench.apps:hello``) or ``AsgiHandler`` (``bench.apps:hello_asgi``);
``ws`` feeds a masked 32-byte binary message to a WebSocket upgraded by
``bench.apps:ws_echo_asgi``. Each answer is checked.

Counted by callgrind: the script runs itself under valgrind with 2,000 and with
12,000 requests and prints the difference divided by 10,000, so start-up and imports
cancel out. Instructions, not seconds: repeatable whatever else the machine does.

    .venv/bin/python bench/handler_cost.py [wsgi] [asgi] [ws]      # needs valgrind
    .venv/bin/python bench/handler_cost.py --time asgi             # ns per request, hot

Where the time of a whole request goes beyond the handler (the worker loop, system
calls): ``bench/calls.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
UPGRADE = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
PAYLOAD = b"x" * 32
MASK = b"\x01\x02\x03\x04"
FRAME = bytes([0x82, 0x80 | 32]) + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(PAYLOAD))


class _Timer:
    def cancel(self) -> None:
        pass


class _Worker:
    index = 0
    name = "reactor-worker-0"

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        return _Timer()

    def post(self, callback: Callable[[], None]) -> None:
        callback()

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        yield


class _Conn:
    """What the handlers use of a connection; writes are kept, the last one checked."""

    write_buffer_size = 0
    closing = False
    guard = None

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.peer = ("127.0.0.1", 50000)
        self.local = ("127.0.0.1", 8080)
        self.context: Any = None
        self.writes = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = bytes(data)

    def rearm(
        self, delay: float, callback: Callable[[Any], None], now: float | None = None
    ) -> None:
        return None

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        return _Timer()

    def resume_reading(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def close(self) -> None:
        raise RuntimeError("the connection was closed: the request was not served")

    abort = close


def setup(kind: str) -> tuple[Callable[[], None], Callable[[int], None], Callable[[], None]]:
    """(feed one request or message, check that ``n`` were answered, close)."""
    from mioreactor.workers.asgi.handler import AsgiHandler
    from mioreactor.workers.asgi.loop import LoopDriver
    from mioreactor.workers.http.handler import make_http_handler_factory
    from mioreactor.workers.http.limits import HttpConfig

    from bench.apps import hello, hello_asgi, ws_echo_asgi

    worker = _Worker()
    handler: Any
    driver: LoopDriver | None = None
    if kind == "wsgi":
        handler = make_http_handler_factory(hello, HttpConfig())(worker)  # type: ignore[arg-type]
    else:
        driver = LoopDriver()
        driver.attach(worker)
        app = hello_asgi if kind == "asgi" else ws_echo_asgi
        handler = AsgiHandler(worker, app, driver, HttpConfig(), None)  # type: ignore[arg-type]
    conn = _Conn(handler)
    handler.connection_made(conn)
    data = HEAD
    if kind == "ws":
        handler.data_received(conn, UPGRADE)
        handler.driver.step()
        assert conn.last.startswith(b"HTTP/1.1 101"), conn.last
        data = FRAME
    conn.writes = 0
    feed = handler.data_received

    def one() -> None:
        feed(conn, data)

    def check(n: int) -> None:
        assert conn.writes == n, (conn.writes, n)
        if kind == "ws":
            assert conn.last == bytes([0x82, 32]) + PAYLOAD, conn.last
        else:
            assert conn.last.startswith(b"HTTP/1.1 200 OK\r\n"), conn.last
            assert conn.last.endswith(b"Hello, world!"), conn.last

    def close() -> None:
        """Cancel what the app left waiting (a WebSocket's task) and close the loop."""
        if driver is not None:
            asgi_log = logging.getLogger("mioreactor.asgi")
            level = asgi_log.level
            asgi_log.setLevel(logging.CRITICAL)  # the app's cancelled receive: expected here
            try:
                driver.close()
            finally:
                asgi_log.setLevel(level)

    return one, check, close


def run(kind: str, n: int) -> None:
    one, check, close = setup(kind)
    for _ in range(n):
        one()
    check(n)
    close()


def count(kind: str) -> float:
    """Instructions per request: callgrind at 2,000 and 12,000 requests."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind); try --time")
    totals = []
    for n in (2000, 12000):
        proc = subprocess.run(
            [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--run", kind, "-n", str(n)],
            capture_output=True, text=True, check=True,
        )
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if found is None:
            raise SystemExit(f"callgrind printed no total: {proc.stderr[-300:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / 10000


def timed(kind: str, n: int = 100_000) -> float:
    """Nanoseconds per request, hot (best of 5): caches warm, so far below a server's."""
    one, _, close = setup(kind)
    for _ in range(2000):
        one()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            one()
        best = min(best, time.perf_counter() - start)
    close()
    return best / n * 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kinds", nargs="*", metavar="wsgi|asgi|ws",
                    help="what to count (default: all three)")
    ap.add_argument("--time", action="store_true", help="ns per request instead (hot loop)")
    ap.add_argument("--run", choices=("wsgi", "asgi", "ws"), help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, default=1000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        run(args.run, args.n)
        return 0
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in both runs
    bad = [k for k in args.kinds if k not in ("wsgi", "asgi", "ws")]
    if bad:
        ap.error(f"unknown kind {bad[0]!r}: choose wsgi, asgi or ws")
    for kind in args.kinds or ["wsgi", "asgi", "ws"]:
        what = "message" if kind == "ws" else "request"
        if args.time:
            print(f"{kind:5s} {timed(kind):8.0f} ns per {what} (hot loop)")
        else:
            print(f"{kind:5s} {count(kind):8.0f} instructions per {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
