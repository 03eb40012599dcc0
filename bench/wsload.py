"""A WebSocket echo load generator: N clients, each sends a message and waits for its echo.

    python -m bench.wsload ws://127.0.0.1:8000/ -c 50 -d 5 --size 32 [--json]

Each client keeps one message in flight (closed loop, as wrk keeps one request in
flight per connection): it sends a masked binary frame of ``--size`` bytes, reads the
echo, and sends the next. One thread, one ``selectors`` loop over non-blocking
sockets; frames are parsed from a per-connection buffer, linearly. At the end every
client sends a close (1000) and the server's close codes are counted.

Reports messages per second, latency percentiles (send to echo) and the close codes,
as JSON with ``--json`` (``bench/run.py`` reads it). Loopback only, no compression
offered (both servers frame the same bytes).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import selectors
import socket
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

__all__ = ["main", "run"]


def _handshake(host: str, port: int, path: str, timeout: float) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode()
                 + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
                 + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
        if len(head) > 65536:
            raise ConnectionError("handshake response too long")
    end = head.index(b"\r\n\r\n") + 4
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head[:40]!r}")
    return sock, head[end:]


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + masked


def _next_frame(buf: bytearray) -> tuple[int, bytes] | None:
    """(opcode, payload) of the first whole frame in ``buf`` (removed), or None."""
    if len(buf) < 2:
        return None
    n = buf[1] & 0x7F
    start = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, start = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, start = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < start + n:
        return None
    opcode = buf[0] & 0x0F
    payload = bytes(buf[start:start + n])
    del buf[:start + n]
    return opcode, payload


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def run(url: str, connections: int = 50, duration: float = 5.0, size: int = 32,
        timeout: float = 10.0) -> dict[str, Any]:
    """Drive ``url`` for ``duration`` seconds; the figures as a dict (see the module doc)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"expected ws://HOST:PORT/PATH, got {url!r}")
    host, port = parts.hostname, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    errors: Counter[str] = Counter()
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    bufs: dict[int, bytearray] = {}
    sent_at: dict[int, float] = {}
    payload = b"m" * size
    frame = _frame(2, payload)
    for _ in range(connections):
        try:
            sock, rest = _handshake(host, port, path, timeout)
        except OSError as exc:
            errors[type(exc).__name__] += 1
            continue
        sock.setblocking(False)
        socks.append(sock)
        bufs[sock.fileno()] = bytearray(rest)
        sel.register(sock, selectors.EVENT_READ, sock)
    latencies: list[float] = []
    messages = 0
    now = time.perf_counter
    started = now()
    for sock in socks:
        sent_at[sock.fileno()] = now()
        sock.send(frame)
    deadline = started + duration
    while socks and now() < deadline:
        for key, _ in sel.select(0.1):
            sock = key.data
            fd = sock.fileno()
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                errors[type(exc).__name__] += 1
                sel.unregister(sock)
                continue
            if not data:
                errors["closed"] += 1
                sel.unregister(sock)
                continue
            buf = bufs[fd]
            buf += data
            while (got := _next_frame(buf)) is not None:
                opcode, body = got
                if opcode == 2:
                    t = now()
                    latencies.append(t - sent_at[fd])
                    messages += 1
                    sent_at[fd] = t
                    sock.send(frame)
                elif opcode == 9:  # a ping: answer it
                    sock.send(_frame(10, body))
                elif opcode == 8:
                    errors["closed by server"] += 1
    elapsed = now() - started
    codes: Counter[str] = Counter()
    for sock in socks:  # the close handshake: our 1000, the server's code back
        fd = sock.fileno()
        code = "none"
        try:
            sock.setblocking(True)
            sock.settimeout(2.0)
            sock.sendall(_frame(8, (1000).to_bytes(2, "big")))
            buf = bufs[fd]
            while True:
                got = _next_frame(buf)
                if got is not None:
                    if got[0] == 8:
                        code = str(int.from_bytes(got[1][:2], "big")) if got[1] else "1005"
                        break
                    continue
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
        except OSError as exc:
            code = type(exc).__name__
        codes[code] += 1
        sock.close()
    sel.close()
    latencies.sort()
    ms = [v * 1000 for v in latencies]
    return {
        "url": url,
        "connections": len(socks),
        "duration_s": elapsed,
        "messages": messages,
        "messages_per_s": messages / elapsed if elapsed > 0 else 0.0,
        "latency_ms": {f"p{p}": _percentile(ms, p) for p in (50, 90, 99)},
        "close_codes": dict(codes),
        "errors": dict(errors),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("url")
    p.add_argument("-c", "--connections", type=int, default=50)
    p.add_argument("-d", "--duration", type=float, default=5.0)
    p.add_argument("--size", type=int, default=32, help="message size in bytes")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.url, args.connections, args.duration, args.size)
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        print(f"{result['messages_per_s']:,.0f} messages/s over {result['connections']} "
              f"connections; p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, "
              f"p99 {lat['p99']:.2f} ms; close codes {result['close_codes']}; "
              f"errors {result['errors']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
