"""The short-read rule in the worker: fewer bytes than asked counts as drained on epoll
and kqueue, never on the fallback, never after a read-closed event, and no readiness
is lost (docs/design.md, "The edge-triggered rule in the worker"; ``Conn.on_readable``).

The ``Conn`` tests count the ``recv`` calls one readable event costs; the server tests
show that data arriving after a short read (a pause, then more) produces a new event
and is served, on every backend, over TCP and Unix sockets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mioreactor import reactor
from mioreactor.reactor import Interest, Poll
from mioreactor.reactor.event import READ_CLOSED, READABLE
from mioreactor.reactor.net import TcpListener, TcpStream
from mioreactor.workers import EchoHandler, Server
from mioreactor.workers.core.connection import Conn
from mioreactor.workers.core.timers import Timers
from mioreactor.workers.core.worker import FIRST_CONN_TOKEN

from tests.workers.util import recv_exactly, wait_for

BACKENDS = reactor.available_backends()


class _Recorder:
    """A handler that keeps what arrives and whether the end of stream was seen."""

    def __init__(self) -> None:
        self.data = b""
        self.eof = False

    def connection_made(self, conn: Any) -> None:
        pass

    def data_received(self, conn: Any, data: bytes) -> None:
        self.data += data

    def eof_received(self, conn: Any) -> bool:
        self.eof = True
        return True

    def connection_lost(self, conn: Any, exc: BaseException | None) -> None:
        pass

    def pause_writing(self, conn: Any) -> None:
        pass

    def resume_writing(self, conn: Any) -> None:
        pass


class _Worker:
    name = "reactor-worker-0"

    def __init__(self) -> None:
        self.timers = Timers()
        self.rescheduled = 0

    def reschedule(self, conn: Any) -> None:
        self.rescheduled += 1

    def forget(self, conn: Any) -> None:
        pass


@pytest.fixture(params=BACKENDS)
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, Conn, _Recorder, list[int]]]:
    """A client socket and a ``Conn`` on a stream registered with the given backend;
    the list counts the ``recv`` calls the ``Conn`` makes."""
    poll = Poll(backend=request.param)
    lst = TcpListener.bind(("127.0.0.1", 0))
    client = socket.create_connection(lst.local_addr())
    stream: TcpStream | None = None
    deadline = time.monotonic() + 5
    while stream is None:
        try:
            stream, _ = lst.accept()
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    poll.registry.register(stream, FIRST_CONN_TOKEN, Interest.READABLE)
    recorder = _Recorder()
    conn = Conn(FIRST_CONN_TOKEN, stream, None, _Worker(), recorder)  # type: ignore[arg-type]
    calls: list[int] = []
    inner = conn._recv

    def counting_recv(n: int) -> bytes:
        calls.append(n)
        return inner(n)

    conn._recv = counting_recv
    try:
        yield client, conn, recorder, calls
    finally:
        client.close()
        poll.registry.deregister(stream)
        stream.close()
        lst.close()
        poll.close()


def _arrived(conn: Conn, size: int) -> None:
    """Wait until ``size`` bytes are readable on the server side (no event consumed)."""
    sock = conn.stream.socket
    assert wait_for(lambda: len(sock.recv(65536, socket.MSG_PEEK)) >= size if _readable(sock) else False, 5)


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True


def test_a_short_read_ends_the_drain_on_epoll_and_kqueue_only(pair: Any) -> None:
    client, conn, recorder, calls = pair
    client.sendall(b"hello")
    _arrived(conn, 5)
    conn.on_readable(READABLE)
    assert recorder.data == b"hello"
    if conn.stream.short_io_drains:
        assert calls == [65536]  # one recv: the short read counted as drained
    else:
        assert len(calls) == 2  # the fallback drains to BlockingIOError


def test_a_strict_read_drains_to_would_block_on_every_backend(pair: Any) -> None:
    client, conn, recorder, calls = pair
    client.sendall(b"hello")
    _arrived(conn, 5)
    conn.on_readable(strict=True)
    assert recorder.data == b"hello"
    assert len(calls) == 2


def test_a_read_closed_event_reads_to_the_end_of_stream_on_every_backend(pair: Any) -> None:
    """Data and FIN together raise one edge: a short read must not end that drain."""
    client, conn, recorder, _calls = pair
    client.sendall(b"bye")
    client.shutdown(socket.SHUT_WR)
    _arrived(conn, 3)
    time.sleep(0.05)  # the FIN follows the data on loopback
    conn.on_readable(READABLE | READ_CLOSED)
    assert recorder.data == b"bye"
    assert recorder.eof


@pytest.fixture(params=["tcp", "unix"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "unix":
        return "unix:" + str(tmp_path / "echo.sock")
    return "127.0.0.1:0"


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, transport: str) -> Iterator[Server]:
    srv = Server(handler=EchoHandler, bind=transport, workers=2, backend=request.param)
    srv.start()
    yield srv
    srv.stop(timeout=5)


def _connect(address: Any) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(address)
    return sock


def test_data_that_arrives_after_a_short_read_is_served(server: Server) -> None:
    """Each piece is read short and the server stops reading; the next piece, sent
    after a pause, must raise a new event and be echoed (no readiness lost)."""
    with _connect(server.address) as sock:
        for i in range(30):
            first, second = b"part-one-%d|" % i, b"part-two-%d|" % i
            sock.sendall(first)
            assert recv_exactly(sock, len(first)) == first
            time.sleep(0.002 if i % 3 else 0.02)  # the server has read short and stopped
            sock.sendall(second)
            assert recv_exactly(sock, len(second)) == second


def test_a_message_and_the_end_of_stream_together_are_both_served(server: Server) -> None:
    """Data followed at once by a FIN (one edge): the echo comes back, then the close."""
    for i in range(20):
        with _connect(server.address) as sock:
            payload = b"last words %d" % i
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            assert recv_exactly(sock, len(payload)) == payload
    assert wait_for(lambda: server.stats()["active"] == 0, 5)
