"""Helpers for the workers tests: a tiny HTTP responder handler, fd counting, waits."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from mioreactor.workers.core.handler import BaseHandler, Connection

RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class TinyHttp(BaseHandler):
    """Answers any request head with 200 and closes: enough to load-test the acceptor
    without the HTTP layer."""

    def connection_made(self, conn: Connection) -> None:
        conn.context = b""

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.context += data
        if b"\r\n\r\n" in conn.context:
            conn.write(RESPONSE)
            conn.close()


class Gate:
    """Holds a worker inside ``data_received`` on the bytes ``b"hold"`` (outside any
    blocking section, so no hand-off) until the test sets ``release``; other data goes
    to ``on_data(conn, data)``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def factory(self, on_data: Callable[[Connection, bytes], None]) -> Callable[[Any], Any]:
        gate = self

        class Held(BaseHandler):
            def data_received(self, conn: Connection, data: bytes) -> None:
                if data == b"hold":
                    gate.entered.set()
                    gate.release.wait(5)
                    on_data(conn, data)
                    return
                on_data(conn, data)

        return Held


def open_fds() -> int:
    """Descriptors open in this process, once unreachable objects are freed: a socket
    left in a garbage cycle (by an earlier test's client code, say) is open until the
    cyclic collector runs, and that may be in the middle of the next test's count."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def http_get(address: tuple[str, int], timeout: float = 1.0) -> bytes:
    """One HTTP/1.0 request on a fresh connection; the raw response ('' on timeout,
    including a connect that times out because the accept queue is stuck)."""
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except OSError:
        return b""
    with sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        return recv_all(sock, timeout)


def recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until the server closes (or ``timeout`` passes, or a reset)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes (or fewer if the peer closes first)."""
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def echo_once(address: Any, payload: bytes = b"ping", timeout: float = 2.0) -> bytes:
    """Connect (TCP ``(host, port)`` or a Unix path), send ``payload``, return the echo."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(payload)
        try:
            return recv_exactly(sock, len(payload))
        except (TimeoutError, ConnectionResetError):
            return b""


def reactor_threads() -> list[str]:
    """Names of live threads that belong to a server (``reactor-*``)."""
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("reactor-")]


def closed_by_peer(sock: socket.socket) -> bool:
    """Read until the peer closes: True on end-of-file or a reset (``abort()`` sends
    RST), False if data arrives instead."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
