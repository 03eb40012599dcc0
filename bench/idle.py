"""Hold N idle connections open against a server (the 10k-idle scenarios).

Run as ``python -m bench.idle --port P -n 10000``: opens the connections in waves
(so the listen backlog never overflows), sends one ``GET /`` on each and reads the
response, so that each is a real keep-alive connection with its per-connection
server state, then prints ``ready OPEN FAILED`` and holds them until stdin closes
(or ``--hold`` seconds pass). Then it closes them all and exits.

With ``--ws PATH`` each connection completes a WebSocket opening handshake on
``PATH`` instead (``--header`` adds request headers: a browser's
``Sec-WebSocket-Extensions`` offer, for one) and then sends nothing: an idle
WebSocket. The first line is ``ready OPEN FAILED DEFLATED`` (DEFLATED: how many 101
responses agreed to permessage-deflate). While holding, the client reads every
socket and answers the server's keep-alive pings with pongs, so that a ping round
(both servers ping every 20 s by default) costs no connection; when stdin closes it
prints ``held PINGS LOST`` (pings answered, connections the server closed or reset
meanwhile) before it closes them. A line ``echo`` on stdin makes every WebSocket send
one ``--size``-byte text message (compressed, as a browser's is, where
permessage-deflate was agreed) and wait for its echo; ``echoed N`` follows once every
open connection has its echo (or after 60 s), and the connections go back to idle:
what a WebSocket that has talked holds (its zlib contexts among it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from bench.servers import raise_nofile

__all__ = ["Ws", "hold_idle", "hold_ws", "main", "open_idle", "open_ws", "ws_request"]

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
_WAVE = 500
_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key: the server only hashes it
_TEXT, _CLOSE, _PING, _PONG = 1, 8, 9, 10


@dataclass(slots=True)
class Ws:
    """One open client WebSocket: its socket, whether the 101 agreed to
    permessage-deflate, and the bytes of an unfinished server frame."""

    sock: socket.socket
    deflate: bool
    buf: bytearray


#: ``(bytes read so far)`` -> None (not complete yet), True (done) or False (refused).
Check = Callable[[bytes], "bool | None"]


def _http_done(buf: bytes) -> bool | None:
    _head, sep, body = buf.partition(b"\r\n\r\n")
    return True if sep and len(body) >= 13 else None  # the hello app's 13 bytes


def _ws_done(buf: bytes) -> bool | None:
    if b"\r\n\r\n" not in buf:
        return None
    return buf.startswith(b"HTTP/1.1 101 ")


def ws_request(path: str, headers: list[str]) -> bytes:
    """The opening handshake sent on every connection, with ``headers`` added."""
    extra = b"".join(h.encode("latin-1") + b"\r\n" for h in headers)
    return (b"GET " + path.encode("latin-1") + b" HTTP/1.1\r\nHost: bench\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + _KEY
            + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


def _open(port: int, count: int, request: bytes, check: Check,
          timeout: float) -> tuple[list[tuple[socket.socket, bytes]], int]:
    """Open ``count`` connections, send ``request`` on each, read until ``check`` says.

    Returns the connections that completed, each with the bytes read on it, and the
    number that failed (refused, reset, or not complete within ``timeout``).
    """
    sel = selectors.DefaultSelector()
    done: list[tuple[socket.socket, bytes]] = []
    failed = 0
    deadline = time.monotonic() + timeout
    todo = count
    while todo and time.monotonic() < deadline:
        wave = min(_WAVE, todo)
        todo -= wave
        pending: dict[socket.socket, bytearray] = {}
        for _ in range(wave):
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, 115):  # 115: EINPROGRESS
                s.close()
                failed += 1
                continue
            pending[s] = bytearray()
            sel.register(s, selectors.EVENT_WRITE)
        while pending and time.monotonic() < deadline:
            for key, mask in sel.select(1.0):
                s = key.fileobj  # type: ignore[assignment]
                assert isinstance(s, socket.socket)
                try:
                    if mask & selectors.EVENT_WRITE:
                        s.send(request)
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(4096)
                except OSError:
                    data = b""
                buf = pending[s]
                buf += data
                ok = check(bytes(buf)) if data else False
                if ok is None:
                    continue
                sel.unregister(s)
                del pending[s]
                if ok:
                    done.append((s, bytes(buf)))
                else:
                    s.close()
                    failed += 1
        for s in pending:
            sel.unregister(s)
            s.close()
            failed += 1
    sel.close()
    return done, failed + todo


def open_idle(port: int, count: int, timeout: float = 60.0) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections, one request each; the open sockets and the failures."""
    done, failed = _open(port, count, REQUEST, _http_done, timeout)
    return [s for s, _ in done], failed


def open_ws(port: int, count: int, path: str = "/", headers: list[str] | None = None,
            timeout: float = 120.0) -> tuple[list[Ws], int]:
    """Open ``count`` WebSockets (the handshake only); the open ones and the failures."""
    done, failed = _open(port, count, ws_request(path, headers or []), _ws_done, timeout)
    opened = []
    for s, buf in done:
        head, _, rest = buf.partition(b"\r\n\r\n")
        opened.append(Ws(s, b"permessage-deflate" in head.lower(), bytearray(rest)))
    return opened, failed


def _frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """The whole server frames at the start of ``buf`` (removed): (opcode, payload)."""
    out = []
    while len(buf) >= 2:
        n, start = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, start = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, start = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < start + n:
            break
        out.append((buf[0] & 0x0F, bytes(buf[start:start + n])))
        del buf[:start + n]
    return out


def _masked(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """A client frame (masked, final) of at most 65,535 bytes of payload."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0xC0 | opcode if rsv1 else 0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def _deflated(message: bytes) -> bytes:
    """``message`` as one permessage-deflate payload (RFC 7692 7.2.1: raw deflate, sync
    flush, the 00 00 ff ff tail removed). A 9-bit window fits whatever window the
    server asked of the client, and a fresh compressor makes the same bytes for every
    connection."""
    c = zlib.compressobj(6, zlib.DEFLATED, -9)
    return (c.compress(message) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _wait_stdin(sel: selectors.BaseSelector, hold: float,
                on_ready: Callable[[selectors.SelectorKey], None] | None = None,
                on_line: Callable[[str], None] | None = None,
                on_tick: Callable[[], None] | None = None) -> None:
    """Until stdin closes (or ``hold`` seconds pass): other keys go to ``on_ready``,
    stdin's lines to ``on_line`` (without one, any line stops too); ``on_tick`` runs
    at least once a second."""
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        if on_tick is not None:
            on_tick()
        for key, _ in sel.select(min(1.0, max(0.0, deadline - time.monotonic()))):
            if key.data == "stdin":
                line = sys.stdin.readline()
                if not line or on_line is None:
                    return
                on_line(line.strip())
            elif on_ready is not None:
                on_ready(key)


def hold_idle(socks: list[socket.socket], hold: float) -> None:
    """Wait for stdin to close (or ``hold`` seconds), then close every socket."""
    sel = selectors.DefaultSelector()
    try:
        _wait_stdin(sel, hold)
    finally:
        sel.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def hold_ws(opened: list[Ws], hold: float, size: int = 64) -> tuple[int, int]:
    """Hold the WebSockets until stdin closes (or ``hold`` seconds), answering pings.

    A line ``echo`` on stdin sends one ``size``-byte text message on each (``echo FROM
    TO``: on ``opened[FROM:TO]``) and prints ``echoed N`` once all of them still open
    have had a message back (or after 60 s).

    Returns:
        (pings answered, connections the server closed or reset while held).
    """
    sel = selectors.DefaultSelector()
    live = {w.sock: w for w in opened}
    pings = lost = 0
    awaiting: set[socket.socket] = set()  # echoes not back yet
    asked = 0  # WebSockets the last ``echo`` sent on
    echo_deadline = 0.0
    message = (b'{"type":"chat","text":"' + b"x" * size)[:size - 2] + b'"}'
    plain, packed = _masked(_TEXT, message), b""

    def report_echoes() -> None:
        nonlocal echo_deadline
        if echo_deadline and (not awaiting or time.monotonic() > echo_deadline):
            echo_deadline = 0.0
            print(f"echoed {asked - len(awaiting)}", flush=True)

    def drop(w: Ws) -> None:
        nonlocal lost, asked
        lost += 1
        sel.unregister(w.sock)
        del live[w.sock]
        if w.sock in awaiting:  # its echo will never come: not counted as echoed
            awaiting.discard(w.sock)
            asked -= 1
        w.sock.close()

    def frames(w: Ws) -> None:
        nonlocal pings
        for opcode, payload in _frames(w.buf):
            if opcode == _PING:
                with contextlib.suppress(OSError):
                    w.sock.send(_masked(_PONG, payload))
                pings += 1
            elif opcode == _CLOSE:
                drop(w)
                return
            elif opcode == _TEXT:
                awaiting.discard(w.sock)

    def readable(key: selectors.SelectorKey) -> None:
        w = live[key.fileobj]  # type: ignore[index]
        try:
            data = w.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            drop(w)
        else:
            w.buf += data
            frames(w)
        report_echoes()

    def command(line: str) -> None:
        nonlocal packed, echo_deadline, asked
        words = line.split()
        if not words or words[0] != "echo":
            return
        first, last = (int(words[1]), int(words[2])) if len(words) == 3 else (0, len(opened))
        if not packed:
            packed = _masked(_TEXT, _deflated(message), rsv1=True)
        asked = 0
        for w in opened[first:last]:
            if w.sock not in live:
                continue
            asked += 1
            try:
                w.sock.send(packed if w.deflate else plain)
            except OSError:
                drop(w)
                continue
            awaiting.add(w.sock)
        echo_deadline = time.monotonic() + 60.0
        report_echoes()

    try:
        for w in opened:
            sel.register(w.sock, selectors.EVENT_READ)
            frames(w)
        _wait_stdin(sel, hold, readable, command, report_echoes)
    finally:
        sel.close()
        for w in opened:
            with contextlib.suppress(OSError):
                w.sock.close()
    return pings, lost


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", "--count", type=int, default=10000)
    p.add_argument("--hold", type=float, default=300.0, help="seconds to hold at most")
    p.add_argument("--ws", metavar="PATH", help="open WebSockets on PATH, not HTTP connections")
    p.add_argument("--header", action="append", default=[],
                   help="an extra handshake header (--ws), e.g. 'Sec-WebSocket-Extensions: "
                        "permessage-deflate; client_max_window_bits'")
    p.add_argument("--size", type=int, default=64,
                   help="bytes of the one message each WebSocket sends on 'echo' (>= 32)")
    args = p.parse_args(argv)
    raise_nofile()
    if args.ws is None:
        socks, failed = open_idle(args.port, args.count)
        print(f"ready {len(socks)} {failed}", flush=True)
        hold_idle(socks, args.hold)
        return 0
    opened, failed = open_ws(args.port, args.count, args.ws, args.header)
    print(f"ready {len(opened)} {failed} {sum(w.deflate for w in opened)}", flush=True)
    pings, lost = hold_ws(opened, args.hold, args.size)
    print(f"held {pings} {lost}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
