"""A bounded, steady HTTP/1.1 load of keep-alive and close clients that counts losses.

Used by the graceful-stop and restart tests and by the soak runner (soak/soak.py).
Each client thread sends one request at a time and reads the whole response; every
request ends in exactly one bucket:

* ``ok`` / ``non_2xx``: a complete response;
* ``refused``: the connect was refused (no listener: after a stop, during a restart
  gap); the request was never sent, so nothing accepted was lost;
* ``retried``: a reused keep-alive connection was closed by the server before any
  byte of the response (the idle-close race of RFC 9112 9.3.1); the client resends
  once on a new connection, as real clients do for idempotent requests, and that
  second try lands in another bucket;
* ``lost``: a request sent on a connection the server had accepted got no complete
  response (EOF or RST before or during the response, or a timeout). This must be 0.
  One exception, counted as ``refused``: after ``stopping()``, a connection whose
  connect completed after that moment and that is reset before any response byte.
  The kernel completed its handshake into the accept queue of a listener that was
  closing; closing a listener resets what is queued, in every server, and the client
  cannot tell that from a refusal (the server drains its queue right before the close,
  which narrows the window, docs/reliability.md "Known limits").
* ``injected``: the client itself reset the connection (the soak's fault injection).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Any

BUCKETS = ("ok", "non_2xx", "refused", "retried", "lost", "injected")


class _Lost(Exception):
    def __init__(self, why: str, got_bytes: bool) -> None:
        super().__init__(why)
        self.got_bytes = got_bytes


def _read_response(sock: socket.socket, head_only: bool = False) -> tuple[int, bool]:
    """Read one Content-Length or chunked response; (status, server wants close)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError) as exc:
            raise _Lost(type(exc).__name__, bool(buf)) from None
        if not data:
            raise _Lost("eof", bool(buf))
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    close = headers.get(b"connection") == b"close"
    if b"content-length" in headers:
        need = int(headers[b"content-length"]) - len(rest)
        while need > 0:
            try:
                data = sock.recv(min(need, 1 << 20))
            except (ConnectionResetError, TimeoutError) as exc:
                raise _Lost(type(exc).__name__, True) from None
            if not data:
                raise _Lost("eof mid-body", True)
            need -= len(data)
    elif headers.get(b"transfer-encoding") == b"chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            try:
                data = sock.recv(1 << 20)
            except (ConnectionResetError, TimeoutError) as exc:
                raise _Lost(type(exc).__name__, True) from None
            if not data:
                raise _Lost("eof mid-body", True)
            rest = rest[-8:] + data
    return status, close


class LoadClient:
    """``clients`` threads of steady load against ``address`` until ``stop()``.

    Args:
        address: ``(host, port)``.
        clients: concurrent client threads.
        keepalive_share: fraction of clients that reuse their connection.
        requests: ``(weight, raw request bytes)`` choices; each must be idempotent.
        reset_share: fraction of requests the client resets itself mid-way (soak).
        pause: seconds each client sleeps between requests (keeps the CPU for the server).
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        clients: int = 4,
        keepalive_share: float = 0.5,
        requests: list[tuple[int, bytes]] | None = None,
        reset_share: float = 0.0,
        pause: float = 0.0,
        timeout: float = 10.0,
        seed: int = 7,
    ) -> None:
        self.address = address
        self.requests = requests or [(1, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")]
        self.reset_share = reset_share
        self.pause = pause
        self.timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(BUCKETS, 0)
        self.lost_details: list[str] = []
        self._stopping_at = float("inf")
        n_keep = round(clients * keepalive_share)
        self._threads = [
            threading.Thread(
                target=self._run, args=(i < n_keep, random.Random(seed + i)), name=f"load-{i}", daemon=True
            )
            for i in range(clients)
        ]

    def start(self) -> LoadClient:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> dict[str, int]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        return self.totals()

    def stopping(self) -> None:
        """The server is about to stop: from now on a new connection reset before any
        response byte was queued at a closing listener (module docstring)."""
        self._stopping_at = time.monotonic()

    def totals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _count(self, bucket: str, detail: str = "") -> None:
        with self._lock:
            self._counts[bucket] += 1
            if detail and len(self.lost_details) < 50:
                self.lost_details.append(detail)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except ConnectionRefusedError:
            self._count("refused")
            time.sleep(0.01)
            return None
        except OSError as exc:  # EADDRNOTAVAIL and the like: the client's own limits
            self._count("refused", repr(exc))
            time.sleep(0.01)
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _run(self, keepalive: bool, rng: random.Random) -> None:
        weights = [w for w, _ in self.requests]
        choices = [r for _, r in self.requests]
        sock: socket.socket | None = None
        reused = False
        connected_at = 0.0
        while not self._stop.is_set():
            request = rng.choices(choices, weights)[0]
            if not keepalive:
                request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            if sock is None:
                sock = self._connect()
                reused = False
                connected_at = time.monotonic()
                if sock is None:
                    continue
            if self.reset_share and rng.random() < self.reset_share:
                self._inject(sock, request, rng)
                sock = None
                continue
            try:
                sock.sendall(request)
                status, close = _read_response(sock)
            except (_Lost, OSError) as exc:
                sock.close()
                sock = None
                got = isinstance(exc, _Lost) and exc.got_bytes
                if reused and not got:
                    self._count("retried")  # resend on a new connection, next turn
                    continue
                if not got and connected_at >= self._stopping_at:
                    self._count("refused", f"{exc!r}: queued at a closing listener")
                    continue
                self._count("lost", f"{exc!r} reused={reused}")
                continue
            self._count("ok" if 200 <= status < 300 else "non_2xx")
            if close or not keepalive:
                sock.close()
                sock = None
            else:
                reused = True
            if self.pause:
                time.sleep(self.pause)
        if sock is not None:
            sock.close()

    def _inject(self, sock: socket.socket, request: bytes, rng: random.Random) -> None:
        """A fault: reset mid-head, mid-request or right after sending."""
        try:
            cut = rng.choice((len(request) // 2, len(request)))
            sock.sendall(request[:cut])
            if rng.random() < 0.5:
                sock.recv(1024)
        except OSError:
            pass
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self._count("injected")


def summary(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {counts[k]}" for k in BUCKETS)
