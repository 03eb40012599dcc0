"""The load generator (``mioreactor.workers.tools.loadgen``): counts that match the server, every failure
kind counted and explained, response framings parsed, numbers that agree with wrk.

Everything runs on loopback, on ports the kernel picks, and every run is bounded by a
request count or a short duration.
"""

from __future__ import annotations

import itertools
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mioreactor.reactor.net import TcpStream
from mioreactor.workers import Server
from mioreactor.workers.tools.loadgen import (
    MAX_DURATION,
    BenchConfig,
    BenchResult,
    LatencyHistogram,
    run_bench,
)

from tests.workers.util import wait_for

ROOT = Path(__file__).resolve().parent.parent

HELLO = b"Hello, world!"


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def bench(url: str, **kwargs: Any) -> BenchResult:
    kwargs.setdefault("connections", 4)
    kwargs.setdefault("timeout", 5.0)
    if "requests" in kwargs:
        kwargs.setdefault("duration", 20.0)
    return run_bench(BenchConfig(url=url, **kwargs))


# -- tiny raw servers -------------------------------------------------------------------

Handler = Callable[[socket.socket], None]


class RawServer:
    """A blocking thread-per-connection TCP server running ``handler(conn)``."""

    def __init__(self, handler: Handler, *, accept: bool = True, backlog: int = 64) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.handler = handler
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if accept:
            self.sock.settimeout(0.05)
            self._thread = threading.Thread(target=self._accept, name="raw-server", daemon=True)
            self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler, **kwargs: Any) -> RawServer:
        server = RawServer(handler, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def read_request(conn: socket.socket, buf: bytearray) -> bytes | None:
    """One request head from ``conn`` (requests here have no body), or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


def keepalive_responder(response: bytes) -> Handler:
    def handle(conn: socket.socket) -> None:
        buf = bytearray()
        while read_request(conn, buf) is not None:
            conn.sendall(response)

    return handle


# -- against our own server --------------------------------------------------------------


def test_keepalive_run_of_500_requests_gets_500_responses_of_200() -> None:
    with Server(hello_app, bind="127.0.0.1:0", workers=2) as server:
        result = bench(f"http://127.0.0.1:{server.address[1]}/", requests=500)
    assert result.responses == 500
    assert result.requests == 500
    assert result.status == {200: 500}
    assert result.connections.attempted == result.connections.established == 4
    assert result.ok and result.diagnosis == []
    assert result.latency.count == 500
    assert result.bytes_received > 500 * len(HELLO)


def test_close_mode_established_connections_match_the_servers_accepted_count() -> None:
    with Server(hello_app, bind="127.0.0.1:0", workers=2) as server:
        result = bench(f"http://127.0.0.1:{server.address[1]}/", requests=300, keepalive=False)
        established = result.connections.established
        assert wait_for(lambda: server.stats()["closed"] >= established)
        stats = server.stats()
    assert result.responses == 300 and result.status == {200: 300}
    assert established == result.connections.attempted == 300
    assert stats["accepted"] == established


# -- failures, counted and explained -----------------------------------------------------


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_port_with_no_listener_counts_every_attempt_as_refused() -> None:
    result = bench(f"http://127.0.0.1:{unused_port()}/", requests=20)
    c = result.connections
    assert c.attempted == c.refused == c.failed == 20
    assert c.established == 0 and result.responses == 0
    assert not result.ok
    assert "nothing is listening" in " ".join(result.diagnosis).lower()
    assert "nothing is listening" in result.to_text().lower()


def test_connections_reset_with_linger_zero_are_counted_as_resets(
    raw_server: Callable[..., RawServer],
) -> None:
    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = raw_server(reset)
    result = bench(server.url, requests=10, connections=2)
    assert result.connections.reset == 10
    assert result.responses == 0 and not result.ok
    assert any("reset" in sentence for sentence in result.diagnosis)


def test_a_server_that_never_answers_is_timed_out_within_the_timeout(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(lambda conn: None, accept=False)  # the kernel completes handshakes
    started = time.monotonic()
    result = bench(server.url, requests=4, connections=2, timeout=0.3)
    elapsed = time.monotonic() - started
    assert result.connections.timed_out == result.timeouts_response == 4
    assert result.connections.established == 4
    assert 0.6 <= elapsed < 2.0
    assert any("no response within 0.3 s" in s for s in result.diagnosis)


def test_a_remote_url_is_refused_before_any_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_connect(*args: object) -> None:
        raise AssertionError("no connection may be attempted")

    monkeypatch.setattr(TcpStream, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connect)
    with pytest.raises(ValueError, match="not a loopback address"):
        BenchConfig(url="http://192.0.2.1/", requests=1)
    with pytest.raises(ValueError, match="not a loopback address"):
        run_bench(BenchConfig(url="http://example.invalid:8080/", requests=1, duration=None))
    assert BenchConfig(url="http://192.0.2.1/", requests=1, allow_remote=True).allow_remote


def test_localhost_is_loopback_and_resolves_to_the_ipv4_listener(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(keepalive_responder(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    result = bench(f"http://localhost:{server.port}/", requests=5, connections=1)
    assert result.status == {200: 5} and result.ok


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"url": "ftp://127.0.0.1/"}, "only http"),
        ({"url": "http://127.0.0.1/", "duration": MAX_DURATION + 1}, "duration"),
        ({"url": "http://127.0.0.1/", "duration": None}, "duration or a number"),
        ({"url": "http://127.0.0.1/", "connections": 0}, "connections"),
        ({"url": "http://127.0.0.1/", "rate": 0.0}, "rate"),
        ({"url": "http://127.0.0.1/", "headers": (("X-A", "1\r\nX-B: 2"),)}, "CR"),
        ({"url": "http://127.0.0.1/", "method": "GE T"}, "method"),
    ],
)
def test_bad_configurations_are_refused_with_a_clear_message(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)


# -- response framings ------------------------------------------------------------------


def test_chunked_bodies_are_parsed_on_a_kept_alive_connection(
    raw_server: Callable[..., RawServer],
) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nHello\r\n8\r\n, world!\r\n0\r\n\r\n"
    )
    server = raw_server(keepalive_responder(response))
    result = bench(server.url, requests=50, connections=2)
    assert result.responses == 50 and result.status == {200: 50} and result.ok
    assert result.bytes_received == 50 * len(response)
    assert result.connections.established == server.accepted == 2


def test_close_delimited_bodies_end_at_end_of_stream(
    raw_server: Callable[..., RawServer],
) -> None:
    response = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 5000

    def once(conn: socket.socket) -> None:
        if read_request(conn, bytearray()) is not None:
            conn.sendall(response)

    server = raw_server(once)
    result = bench(server.url, requests=20, connections=2)
    assert result.responses == 20 and result.status == {200: 20} and result.ok
    assert result.bytes_received == 20 * len(response)
    assert result.connections.established == 20  # the server closes: one per request


def test_a_body_cut_short_by_the_server_counts_as_a_reset(
    raw_server: Callable[..., RawServer],
) -> None:
    def short(conn: socket.socket) -> None:
        if read_request(conn, bytearray()) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")

    server = raw_server(short)
    result = bench(server.url, requests=6, connections=2)
    assert result.responses == 0 and result.connections.reset == 6


def test_head_responses_have_no_body_whatever_content_length_says(
    raw_server: Callable[..., RawServer],
) -> None:
    server = raw_server(keepalive_responder(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"))
    result = bench(server.url, requests=40, connections=2, method="HEAD", timeout=1.0)
    assert result.responses == 40 and result.connections.timed_out == 0
    assert result.connections.established == 2


def test_interim_100_continue_is_not_counted_as_the_response(
    raw_server: Callable[..., RawServer],
) -> None:
    response = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    server = raw_server(keepalive_responder(response))
    result = bench(server.url, requests=10, connections=1, method="POST", body=b"data")
    assert result.status == {201: 10}


def test_the_request_carries_method_headers_body_and_connection_close(
    raw_server: Callable[..., RawServer],
) -> None:
    seen: list[bytes] = []

    def record(conn: socket.socket) -> None:
        data = b""
        while b"body!" not in data:
            data += conn.recv(65536)
        seen.append(data)
        conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    server = raw_server(record)
    result = bench(
        server.url + "path?q=1",
        requests=1,
        connections=1,
        keepalive=False,
        method="PUT",
        headers=(("X-A", "1"),),
        body=b"body!",
    )
    assert result.status == {204: 1}
    head = seen[0]
    assert head.startswith(b"PUT /path?q=1 HTTP/1.1\r\n")
    for line in (b"X-A: 1", b"Content-Length: 5", b"Connection: close", b"Host: 127.0.0.1:"):
        assert line in head


def test_a_body_larger_than_the_socket_buffers_is_sent_whole(
    raw_server: Callable[..., RawServer],
) -> None:
    body = bytes(range(256)) * 16384  # 4 MiB: many short writes and writable events

    def consume(conn: socket.socket) -> None:
        buf = bytearray()
        while True:
            head = read_request(conn, buf)
            if head is None:
                return
            while len(buf) < len(body):
                data = conn.recv(1 << 20)
                if not data:
                    return
                buf += data
            ok = bytes(buf[: len(body)]) == body
            del buf[: len(body)]
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % (200 if ok else 400))

    server = raw_server(consume)
    result = bench(server.url, requests=4, connections=2, method="POST", body=body)
    assert result.status == {200: 4} and result.ok


# -- bounds, rate, progress, report ------------------------------------------------------


def test_the_duration_bounds_a_run_that_asks_for_more_requests() -> None:
    with Server(hello_app, bind="127.0.0.1:0", workers=1) as server:
        started = time.monotonic()
        result = bench(f"http://127.0.0.1:{server.address[1]}/", requests=10_000_000, duration=0.5)
    assert time.monotonic() - started < 1.5
    assert 0 < result.responses < 10_000_000
    assert 0.5 <= result.duration_s < 1.0


def test_open_loop_rate_sends_about_rate_times_duration_and_reports_progress() -> None:
    snapshots: list[tuple[float, BenchResult]] = []
    with Server(hello_app, bind="127.0.0.1:0", workers=1) as server:
        result = run_bench(
            BenchConfig(
                url=f"http://127.0.0.1:{server.address[1]}/",
                connections=20,
                duration=1.2,
                rate=200.0,
            ),
            progress=lambda elapsed, snap: snapshots.append((elapsed, snap)),
        )
    # 240 requests come due before 1.2 s: each was sent, or counted as not sent
    assert result.requests + result.not_sent == 240
    assert result.not_sent <= 5  # only a stall of 100 ms in this shared process leaves any
    assert result.connections.attempted == 20  # open loop keeps its connections
    assert snapshots and not snapshots[0][1].finished and result.finished
    assert snapshots[0][1].responses <= result.responses
    assert all(0.4 <= elapsed <= 1.3 for elapsed, _ in snapshots)


def test_json_keys_are_stable_and_text_names_every_count() -> None:
    result = bench(f"http://127.0.0.1:{unused_port()}/", requests=2, connections=1)
    data = result.to_json()
    for key in (
        "connections",
        "requests",
        "responses",
        "status",
        "latency_ms",
        "throughput_rps",
        "duration_s",
        "bytes_received",
        "diagnosis",
        "config",
    ):
        assert key in data
    assert set(data["connections"]) == {
        "attempted",
        "established",
        "refused",
        "reset",
        "timed_out",
        "errors",
    }
    assert set(data["latency_ms"]) == {"p50", "p90", "p99", "max", "mean"}
    text = result.to_text()
    for word in ("attempted", "refused", "reset", "timed out", "p99", "throughput"):
        assert word in text


def test_histogram_percentiles_are_within_one_percent_in_bounded_memory() -> None:
    rng = random.Random(5)
    samples = [rng.lognormvariate(-6.5, 1.0) for _ in range(20_000)]  # ~1.5 ms median
    hist = LatencyHistogram()
    hist.add_many(samples)
    ordered = sorted(samples)
    for q in (50, 90, 99):
        exact = ordered[max(0, -(-q * len(ordered) // 100) - 1)] * 1000
        assert hist.percentile_ms(q) == pytest.approx(exact, rel=0.01)
    assert hist.max_s == max(samples) and hist.count == len(samples)
    assert len(hist._counts) < 10_000


# -- counts against the server's own count ----------------------------------------------
# A load tool is correct when what it reports is what the server did: the server is the
# referee. (How fast it drives a server against wrk is a benchmark, not a test:
# bench/loadgen_vs_wrk.py.)


def _one_response(port: int, keepalive: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        close = b"" if keepalive else b"Connection: close\r\n"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n%b\r\n" % close)
        data = b""
        while not data.endswith(HELLO):
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    return data


@pytest.mark.parametrize("keepalive", [True, False], ids=["keep-alive", "close"])
def test_a_timed_run_reports_what_the_server_answered(keepalive: bool) -> None:
    answered = itertools.count()

    def counting_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        next(answered)
        return hello_app(environ, start_response)

    connections = 20
    with Server(counting_app, bind="127.0.0.1:0", workers=1) as server:
        port = server.address[1]
        size = len(_one_response(port, keepalive))
        base = next(answered)  # the calls so far (one), and this one
        result = bench(f"http://127.0.0.1:{port}/", duration=1.0, connections=connections,
                       keepalive=keepalive)
        assert wait_for(lambda: server.stats()["active"] == 0, 10.0), server.stats()
        served = next(answered) - base - 1
    assert result.responses > 0
    # Every response the tool counted was answered by the server; every request the
    # server answered was sent by the tool; at most one per connection was in flight.
    assert result.responses <= served <= result.requests
    assert result.requests - result.responses <= connections
    assert result.status == {200: result.responses}
    assert result.latency.count == result.responses
    assert result.bytes_received == result.responses * size
    assert result.throughput_rps == pytest.approx(result.responses / result.duration_s)
