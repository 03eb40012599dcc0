"""Helpers for the workers tests: a tiny HTTP responder handler, fd counting, waits."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from workers.handler import BaseHandler, Connection

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


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def http_get(address: tuple[str, int], timeout: float = 1.0) -> bytes:
    """One HTTP/1.0 request on a fresh connection; the raw response ('' on timeout)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)
