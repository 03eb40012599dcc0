"""Hold N idle keep-alive connections open against a server (the 10k-idle scenario).

Run as ``python -m bench.idle --port P -n 10000``: opens the connections in waves
(so the listen backlog never overflows), sends one ``GET /`` on each and reads the
response, so that each is a real keep-alive connection with its per-connection
server state, then prints ``ready OPEN FAILED`` and holds them until stdin closes
(or ``--hold`` seconds pass). Then it closes them all and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys
import time

from bench.servers import raise_nofile

__all__ = ["hold_idle", "main", "open_idle"]

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
_WAVE = 500


def open_idle(port: int, count: int, timeout: float = 60.0) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections, one request each; the open sockets and the failures."""
    sel = selectors.DefaultSelector()
    done: list[socket.socket] = []
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
                        s.send(REQUEST)
                        sel.modify(s, selectors.EVENT_READ)
                        continue
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    del pending[s]
                    failed += 1
                    continue
                buf = pending[s]
                buf += data
                _head, sep, body = bytes(buf).partition(b"\r\n\r\n")
                if sep and len(body) >= 13:
                    sel.unregister(s)
                    del pending[s]
                    done.append(s)
        for s in pending:
            sel.unregister(s)
            s.close()
            failed += 1
    sel.close()
    return done, failed + todo


def hold_idle(socks: list[socket.socket], hold: float) -> None:
    """Wait for stdin to close (or ``hold`` seconds), then close every socket."""
    sel = selectors.DefaultSelector()
    try:
        sel.register(sys.stdin, selectors.EVENT_READ)
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            if sel.select(min(1.0, max(0.0, deadline - time.monotonic()))):
                if not sys.stdin.readline():
                    break
                break
    finally:
        sel.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", "--count", type=int, default=10000)
    p.add_argument("--hold", type=float, default=300.0, help="seconds to hold at most")
    args = p.parse_args(argv)
    raise_nofile()
    socks, failed = open_idle(args.port, args.count)
    print(f"ready {len(socks)} {failed}", flush=True)
    hold_idle(socks, args.hold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
