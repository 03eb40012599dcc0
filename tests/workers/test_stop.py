"""Graceful stop: in-flight work completes, idle connections get EOF, no thread survives.

``Server.stop()`` stops accepting, sends every worker DRAIN (the handler's ``drain``
hook, or ``close()`` without one, for each connection), waits up to the timeout for
the connections to finish, then aborts what is left and joins every thread.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
from mioreactor.workers import BaseHandler, Connection, EchoHandler, Server

from tests.workers.util import closed_by_peer, reactor_threads, recv_exactly, wait_for

ANSWER_AFTER = 0.5


class SlowAnswer(BaseHandler):
    """Answers each request ``ANSWER_AFTER`` seconds later, from a timer, then closes.

    ``drain`` (the graceful-stop hook) closes idle connections and lets a connection
    with a request in flight finish: the timer closes it after answering.
    """

    delay = ANSWER_AFTER

    def connection_made(self, conn: Connection) -> None:
        conn.context = False  # in flight?

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.context = True

        def answer() -> None:
            conn.write(b"done:" + data)
            conn.close()

        conn.call_later(self.delay, answer)

    def drain(self, conn: Connection) -> None:
        if not conn.context:
            conn.close()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def stop_in_thread(
    server: Server, timeout: float | None = None
) -> tuple[threading.Thread, list[float]]:
    finished: list[float] = []

    def run() -> None:
        server.stop(timeout)
        finished.append(time.monotonic())

    t = threading.Thread(target=run, name="test-stopper")
    t.start()
    return t, finished


def test_graceful_stop_finishes_in_flight_work_and_closes_idle_connections() -> None:
    server = Server(handler=SlowAnswer, bind="127.0.0.1:0", workers=2, graceful_timeout=5)
    server.start()
    busy = socket.create_connection(server.address, timeout=5)
    idle = socket.create_connection(server.address, timeout=5)
    try:
        assert wait_for(lambda: server.stats()["active"] == 2, 2.0)
        sent = time.monotonic()
        busy.sendall(b"req")
        time.sleep(0.05)  # the request is in flight (its answer is 0.45 s away)
        stopper, finished = stop_in_thread(server)

        assert idle.recv(1) == b"", "the idle connection was not closed"
        idle_eof = time.monotonic()
        assert idle_eof - sent < ANSWER_AFTER, "idle connection closed only after the in-flight one"
        # New connections are refused once the listener is closed.
        assert wait_for(lambda: _refused(server.address), 2.0)

        assert read_all(busy) == b"done:req"
        answered = time.monotonic()
        stopper.join(10)
        assert not stopper.is_alive()
        assert answered - sent >= ANSWER_AFTER - 0.05
        assert finished, "stop() did not return"
        assert finished[0] >= answered - 0.05, "stop() returned before the in-flight answer"
        assert reactor_threads() == []
    finally:
        busy.close()
        idle.close()
        server.stop()


def _refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


class VerySlowAnswer(SlowAnswer):
    delay = 5.0


def test_stop_cuts_work_that_outlives_the_timeout() -> None:
    server = Server(handler=VerySlowAnswer, bind="127.0.0.1:0", workers=2, graceful_timeout=30)
    server.start()
    with socket.create_connection(server.address, timeout=10) as busy:
        busy.sendall(b"x" * 10)
        assert wait_for(lambda: server.stats()["active"] == 1, 2.0)
        time.sleep(0.05)  # let the request be read: it is in flight, its answer 5 s away
        started = time.monotonic()
        server.stop(timeout=0.1)
        took = time.monotonic() - started
        assert took < 2.0, f"stop(timeout=0.1) took {took:.2f} s"
        assert closed_by_peer(busy)  # cut (reset or EOF), not answered
    assert reactor_threads() == []


def test_without_a_drain_hook_stop_closes_every_connection() -> None:
    server = Server(handler=EchoHandler, bind="127.0.0.1:0", workers=3)
    server.start()
    socks = [socket.create_connection(server.address, timeout=5) for _ in range(6)]
    try:
        for s in socks:
            s.sendall(b"hi")
            assert recv_exactly(s, 2) == b"hi"
        server.stop(timeout=5)
        for s in socks:
            assert s.recv(1) == b""
        assert reactor_threads() == []
        stats = server.stats()
        assert stats["active"] == 0
        assert stats["closed"] == stats["accepted"] == 6
    finally:
        for s in socks:
            s.close()


def test_stop_is_idempotent_and_works_as_a_context_manager() -> None:
    with Server(handler=EchoHandler, bind="127.0.0.1:0", workers=2) as server:
        assert len(reactor_threads()) == 3  # the acceptor and two workers
    assert reactor_threads() == []
    server.stop()
    server.stop(timeout=0)
    assert server.wait(0)


@pytest.mark.timeout(20)
def test_stop_while_clients_keep_connecting_returns_and_leaves_no_thread() -> None:
    """stop() called while requests keep arriving still returns and leaves no thread."""
    server = Server(handler=EchoHandler, bind="127.0.0.1:0", workers=2, graceful_timeout=2)
    server.start()
    stop_flag = threading.Event()

    def hammer() -> None:
        while not stop_flag.is_set():
            try:
                with socket.create_connection(server.address, timeout=1) as s:
                    s.sendall(b"x")
                    s.recv(1)
            except OSError:
                pass

    clients = [threading.Thread(target=hammer, name=f"test-client-{i}") for i in range(4)]
    for t in clients:
        t.start()
    try:
        time.sleep(0.2)
        server.stop()
        assert reactor_threads() == []
    finally:
        stop_flag.set()
        for t in clients:
            t.join(5)


def test_serve_forever_calls_ready_once_sigterm_stops_gracefully() -> None:
    # A process manager signals as soon as it reads the announcement that ``ready`` makes:
    # a SIGTERM raised inside ``ready`` must meet the graceful handler. The handler in
    # place before the call stands for Python's default (death by SIGTERM); it records
    # being reached, and stops the server so that a regression fails instead of hanging.
    server = Server(handler=EchoHandler, bind="127.0.0.1:0", workers=1)
    seen: list[bool] = []
    reached_outer: list[int] = []

    def outer(signum: int, frame: object) -> None:
        reached_outer.append(signum)
        threading.Thread(target=server.stop).start()

    def ready(s: Server) -> None:
        seen.append(s is server)
        signal.raise_signal(signal.SIGTERM)

    before = signal.signal(signal.SIGTERM, outer)
    try:
        server.serve_forever(ready=ready)
        assert signal.getsignal(signal.SIGTERM) is outer
    finally:
        signal.signal(signal.SIGTERM, before)
    assert seen == [True]
    assert reached_outer == []
    assert server.wait(0)
    assert wait_for(lambda: not reactor_threads(), timeout=5)
