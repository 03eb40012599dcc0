"""Shared pieces of the reliability suite: the test app, raw-socket clients, the health check.

Every fault test ends with ``assert_healthy(server, baseline)``: the same five checks
after every fault, so a test only has to describe its fault.

1. No worker died: every ``reactor-worker-*`` thread (and the acceptor) is alive.
2. No connection stuck: ``stats()["active"]`` returns to 0 within a bound.
3. Stats consistent: accepted == closed + active, the connection table is empty, and
   no handler raised (``handler_errors`` stays 0).
4. No descriptor leaked: ``/proc/self/fd`` is back at the count taken after start.
5. A normal request is served (a fresh connection, 200, the right body).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from mioreactor.workers.http import HttpConfig
from mioreactor.workers.server.server import Server

from tests.workers.util import open_fds, wait_for

HOST = "127.0.0.1"
CHUNK = 64 * 1024


class AppProbe:
    """What the test app saw: requests started and streaming bodies closed (PEP 3333)."""

    def __init__(self, record: bool = True) -> None:
        self.record = record  # keep every path and environ seen (off for the soak)
        self.lock = threading.Lock()
        self.requests = 0
        self.streams_opened = 0
        self.streams_closed = 0
        self.seen: list[dict[str, Any]] = []
        self.paths: list[str] = []

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class _Stream:
    """A lazily pulled body of ``n`` bytes in 64 KiB chunks; counts its ``close()``."""

    def __init__(self, probe: AppProbe, n: int) -> None:
        self.probe = probe
        self.left = n
        probe.count("streams_opened")

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> bytes:
        if self.left <= 0:
            raise StopIteration
        n = min(CHUNK, self.left)
        self.left -= n
        return b"x" * n

    def close(self) -> None:
        self.probe.count("streams_closed")


def make_app(probe: AppProbe | None = None) -> Callable[..., Any]:
    """The WSGI app every reliability test serves.

    Routes: ``/`` -> ``ok``; ``/big?N`` -> N bytes streamed lazily (no Content-Length,
    so chunked on HTTP/1.1); ``/blob?N`` -> N bytes as one list item; ``/echo`` -> the
    request body's length and sha256; ``/env`` -> method, path, query, host, remote
    address, scheme and body length as JSON; ``/sleep?S`` -> sleeps S seconds.
    """
    probe = probe if probe is not None else AppProbe()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        probe.count("requests")
        path = environ["PATH_INFO"]
        if probe.record:
            with probe.lock:
                probe.paths.append(path)
        query = environ["QUERY_STRING"]
        if path == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return _Stream(probe, int(query or 8 << 20))
        if path == "/blob":
            body = b"y" * int(query or 8 << 20)
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [body]
        body_bytes = environ["wsgi.input"].read()
        if path == "/echo":
            out = b"%d %s" % (len(body_bytes), hashlib.sha256(body_bytes).hexdigest().encode())
        elif path == "/env":
            seen = {
                "method": environ["REQUEST_METHOD"],
                "path": path,
                "query": query,
                "host": environ.get("HTTP_HOST"),
                "server_name": environ["SERVER_NAME"],
                "server_port": environ["SERVER_PORT"],
                "remote_addr": environ["REMOTE_ADDR"],
                "scheme": environ["wsgi.url_scheme"],
                "body": body_bytes.decode("latin-1"),
                "uri": environ.get("RAW_URI"),
            }
            if probe.record:
                with probe.lock:
                    probe.seen.append(seen)
            out = json.dumps(seen).encode()
        elif path == "/sleep":
            time.sleep(float(query or 0.1))
            out = b"slept"
        else:
            out = b"ok"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]

    app.probe = probe  # type: ignore[attr-defined]
    return app


# -- descriptors, threads -------------------------------------------------------------


@contextlib.contextmanager
def running(
    app: Callable[..., Any] | None = None, *, workers: int = 2, **http: Any
) -> Iterator[tuple[Server, int]]:
    """A started server (the test app unless ``app``) and its descriptor baseline.

    Keyword arguments other than ``workers``, ``max_connections`` and
    ``graceful_timeout`` go to ``HttpConfig``.
    """
    server_kw = {k: http.pop(k) for k in ("max_connections", "graceful_timeout", "backlog") if k in http}
    server_kw.setdefault("graceful_timeout", 2.0)
    server = Server(app or make_app(), bind=f"{HOST}:0", workers=workers, http=HttpConfig(**http), **server_kw)
    server.start()
    try:
        # One request first: lazy imports and caches settle before the baseline.
        assert get(server.address)[0] == 200
        wait_for(lambda: server.stats()["active"] == 0)
        yield server, open_fds()
    finally:
        server.stop(timeout=2.0)


def assert_healthy(server: Server, baseline: int, *, settle: float = 5.0) -> None:
    """The health check after every fault; see the module docstring."""
    # 2. no connection stuck
    assert wait_for(lambda: server.stats()["active"] == 0, settle), f"connections stuck: {server.stats()}"
    stats = server.stats()
    # 1. no worker died
    names = [t.name for t in threading.enumerate() if t.is_alive()]
    expected = [f"reactor-worker-{i}" for i in range(server.workers_count)]
    assert all(n in names for n in expected), f"a worker thread died: {names}"
    assert "reactor-acceptor" in names, "the acceptor thread died"
    # 3. stats consistent
    assert stats["accepted"] == stats["closed"] + stats["active"]
    assert stats["connections"] == 0, stats
    assert sum(w["handler_errors"] for w in stats["workers"]) == 0, stats["workers"]
    # 4. no descriptor leaked
    assert wait_for(lambda: open_fds() <= baseline, settle), f"descriptors: {open_fds()} > {baseline}"
    # 5. a normal request is served
    status, body = get(server.address)
    assert status == 200 and body in (b"ok", b"GET 0")


# -- raw clients -----------------------------------------------------------------------


def connect(address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_all(sock: socket.socket, timeout: float = 5.0, limit: int = 1 << 26) -> tuple[bytes, str]:
    """Read until the server closes; returns the bytes and how it ended.

    The end is ``"eof"`` (orderly close), ``"reset"`` or ``"timeout"`` (the server
    kept the connection open).
    """
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    size = 0
    try:
        while size < limit:
            data = sock.recv(CHUNK)
            if not data:
                return b"".join(chunks), "eof"
            chunks.append(data)
            size += len(data)
    except TimeoutError:
        return b"".join(chunks), "timeout"
    except ConnectionResetError:
        return b"".join(chunks), "reset"
    return b"".join(chunks), "limit"


def exchange(address: tuple[str, int], data: bytes, *, half_close: bool = False, timeout: float = 3.0) -> tuple[bytes, str]:
    """Send raw bytes on a fresh connection and read until the server closes."""
    with connect(address) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed before taking every byte
            pass
        return read_all(sock, timeout)


def get(address: tuple[str, int], path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    """One ``Connection: close`` GET; (status, body). Body framing: close-delimited read,
    then de-chunked when the response says chunked."""
    raw, _ = exchange(
        address, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(), timeout=timeout
    )
    responses = parse_responses(raw)
    assert len(responses) == 1, raw[:300]
    status, _, body = responses[0]
    return status, body


def status_lines(raw: bytes) -> int:
    """How many responses a stream holds, counted by their status lines."""
    return raw.count(b"HTTP/1.1 ") + raw.count(b"HTTP/1.0 ")


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a response stream into (status, headers, body), strictly; 1xx included."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete head: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        version, code, _ = (lines[0] + " ").split(" ", 2)
        assert version in ("HTTP/1.1", "HTTP/1.0"), lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            headers[name.lower()] = value
        status = int(code)
        if 100 <= status < 200 or status in (204, 304):
            body, data = b"", rest
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
            if len(body) != n:
                raise AssertionError(f"short body: {len(body)} of {n}")
        elif headers.get("transfer-encoding") == "chunked":
            parts = []
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                parts.append(rest[:size])
                rest = rest[size + 2 :]
            body, data = b"".join(parts), rest
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out
