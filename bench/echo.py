"""Echo round-trips per second: mioreactor vs asyncio (and uvloop if importable).

Every server speaks the same protocol (send back what arrives) and runs in its own
subprocess, so the client never shares a GIL with a server. The client is one
single-threaded process: 50 non-blocking connections on ``select.epoll`` (``selectors``
elsewhere), each doing ping-pong with a 64-byte message: send, wait for the whole
echo, send again. Rounds are interleaved (ours, asyncio, uvloop, then rotated) so that
drift on the machine hits every server alike; the figure is the median of the rounds.

    .venv/bin/python bench/echo.py                   # 5 rounds of 3 s, 50 connections
    .venv/bin/python bench/echo.py --rounds 3 --seconds 2 --workers 1 --json

``--baseline PATH`` adds our server from another checkout (A/B of a change);
``--bare`` adds two reference rows, a bare edge-triggered ``select.epoll`` loop with
and without the drain rule (see ``serve_bare``).

The target (issue 3): ours >= 1.0x asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# -- servers (each runs in a child process: ``echo.py --serve NAME``) -------------------


def serve_ours(workers: int, root: Path = ROOT) -> None:
    sys.path.insert(0, str(root))
    from mioreactor.workers import EchoHandler, Server

    server = Server(handler=EchoHandler, bind="127.0.0.1:0", workers=workers)
    server.start()
    print(server.address[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(timeout=2)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def serve_asyncio(use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        uvloop.install()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


def serve_bare(drain: bool) -> None:
    """Reference rows: the whole server as one bare ``select.epoll`` loop, edge
    triggered, no threads and no layers: the floor of this design's shape.

    ``bare-drain`` reads each ready socket until ``BlockingIOError`` (the project's
    drain rule); ``bare-short`` stops at a short read, as epoll(7) allows for stream
    sockets and libuv does, which the rule forbids. The gap between the two is what
    the rule costs on this load, with nothing else in the way.
    """
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1024)
    ls.setblocking(False)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN | select.EPOLLET)
    conns: dict[int, socket.socket] = {}
    print(ls.getsockname()[1], flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    lfd = ls.fileno()
    while not stop.is_set():
        for fd, _ in ep.poll(0.2, 1024):
            if fd == lfd:
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN | select.EPOLLET)
                continue
            c = conns[fd]
            while True:
                try:
                    data = c.recv(65536)
                    if data:
                        c.send(data)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    ep.unregister(fd)
                    del conns[fd]
                    c.close()
                    break
                if not drain and len(data) < 65536:
                    break
    ls.close()


class Child:
    """A server subprocess; stopped by closing its stdin."""

    def __init__(self, name: str, workers: int, baseline: str = "") -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", name, "--workers", str(workers),
             "--baseline", baseline],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server {name} did not start")
        self.port = int(line)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the client -------------------------------------------------------------------------


def ping_pong(port: int, connections: int, size: int, seconds: float) -> float:
    """Round-trips per second over ``connections`` ping-pong connections."""
    message = b"x" * size
    socks = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    use_epoll = hasattr(select, "epoll")
    if use_epoll:
        ep = select.epoll()
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN)
        wait = ep.poll
    else:  # pragma: no cover - non-Linux
        sel = selectors.DefaultSelector()
        for s in socks:
            sel.register(s, selectors.EVENT_READ, s.fileno())

        def wait(timeout: float) -> list[tuple[int, int]]:
            return [(key.data, 1) for key, _ in sel.select(timeout)]

    by_fd = {s.fileno(): s for s in socks}
    recv = {fd: s.recv for fd, s in by_fd.items()}
    send = {fd: s.send for fd, s in by_fd.items()}
    got = dict.fromkeys(by_fd, 0)
    trips = 0
    for fd in by_fd:
        send[fd](message)
    clock = time.perf_counter
    started = clock()
    deadline = started + seconds
    while True:
        for fd, _ in wait(0.5):
            try:
                data = recv[fd](65536)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError("the server closed a connection")
            n = got[fd] + len(data)
            if n >= size:
                trips += 1
                got[fd] = n - size
                send[fd](message)
            else:
                got[fd] = n
        now = clock()
        if now >= deadline:
            break
    elapsed = now - started
    for s in socks:
        s.close()
    if use_epoll:
        ep.close()
    return trips / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per round (3)")
    parser.add_argument("--connections", type=int, default=50, help="connections (50)")
    parser.add_argument("--size", type=int, default=64, help="message bytes (64)")
    parser.add_argument("--workers", type=int, default=4, help="our worker threads (4)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="add reference rows: a bare epoll loop with and without the drain rule",
    )
    parser.add_argument(
        "--baseline",
        default="",
        help="add a row 'baseline': our server from another checkout (a path), for A/B",
    )
    args = parser.parse_args()

    if args.serve:
        if args.serve == "ours":
            serve_ours(args.workers)
        elif args.serve == "baseline":
            serve_ours(args.workers, Path(args.baseline).resolve())
        elif args.serve.startswith("bare-"):
            serve_bare(args.serve == "bare-drain")
        else:
            serve_asyncio(args.serve == "uvloop")
        return

    names = ["ours", "asyncio"]
    try:
        import uvloop  # noqa: F401

        names.append("uvloop")
    except ImportError:
        pass
    if args.bare:
        names += ["bare-drain", "bare-short"]
    if args.baseline:
        names.append("baseline")
    children = {name: Child(name, args.workers, args.baseline) for name in names}
    results: dict[str, list[float]] = {name: [] for name in names}
    try:
        for child in children.values():  # warm up every server once
            ping_pong(child.port, args.connections, args.size, 0.5)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                rate = ping_pong(children[name].port, args.connections, args.size, args.seconds)
                results[name].append(rate)
                if not args.json:
                    print(f"round {r + 1}: {name:10s} {rate:10.0f} round-trips/s", flush=True)
    finally:
        for child in children.values():
            child.stop()

    medians = {name: statistics.median(rates) for name, rates in results.items()}
    ratio = medians["ours"] / medians["asyncio"]
    if args.json:
        print(json.dumps({"medians": medians, "rounds": results, "ours_vs_asyncio": ratio}))
        return
    cpus = os.cpu_count()
    print(
        f"\necho, {args.connections} connections, {args.size}-byte ping-pong, "
        f"{args.rounds} x {args.seconds:g} s, {cpus} CPUs, Python {sys.version.split()[0]}"
    )
    for name in names:
        print(f"  {name:10s} median {medians[name]:10.0f} round-trips/s")
    print(f"  ours / asyncio = {ratio:.2f}x")
    if "uvloop" in medians:
        print(f"  ours / uvloop  = {medians['ours'] / medians['uvloop']:.2f}x")
    if "baseline" in medians:
        print(f"  ours / baseline = {medians['ours'] / medians['baseline']:.2f}x"
              f" (baseline / asyncio = {medians['baseline'] / medians['asyncio']:.2f}x)")
    if args.bare:
        for name in ("bare-drain", "bare-short"):
            print(f"  {name} / asyncio = {medians[name] / medians['asyncio']:.2f}x")
        print(f"  ours / bare-drain = {medians['ours'] / medians['bare-drain']:.2f}x")


if __name__ == "__main__":
    main()
