"""What the reactor layer costs over bare ``select.epoll``: an echo loop written twice.

Usage::

    .venv/bin/python bench/reactor_overhead.py [--pairs 1000] [--rounds 50] [--repeats 9]
        [--transport socketpair|tcp] [--fallback] [--profile]

``--pairs`` connected socket pairs. A *round* writes one small message into every
client, runs the server loop until every message has been echoed (each ready server
socket is drained until would-block, echoing what it read), then reads every echo on
the client side. The server loop is written the same way on:

``bare``     ``select.epoll`` with ``EPOLLIN | EPOLLET``, plain ``socket`` objects;
``reactor``  ``Poll`` / ``Events.raw`` / ``mioreactor.reactor.net`` streams (the hot-path idiom);
``events``   the same, iterating ``Event`` objects instead of ``Events.raw``;
``fallback`` (with ``--fallback``) the ``reactor`` loop on the portable backend.

Variants run interleaved, in a rotating order, ``--repeats`` times; each sample is
``--rounds`` rounds. Reported: medians of round trips per second (by wall time and by
this thread's CPU time) and the ratio variant time / bare time, for the whole round
and for the server loop alone. The client side is identical in every variant, so the
server-loop ratio is the stricter figure; CPU time is the steadier one on a shared
machine (time given to other processes is not counted). ``--profile`` runs the reactor variant under cProfile and prints the top.
"""

from __future__ import annotations

import argparse
import resource
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mioreactor.reactor import Events, Interest, Poll
from mioreactor.reactor.net import Stream, TcpStream, UnixStream

MSG = b"0123456789abcdef"  # 16 bytes
Round = Callable[[], float]  # runs one round, returns the server loop's CPU seconds


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        sys.exit(f"need {needed} descriptors, the hard limit is {hard}: raise it (ulimit -Hn)")


def make_pairs(n: int, transport: str) -> list[tuple[socket.socket, socket.socket]]:
    """``n`` (client, server) pairs; clients blocking, servers non-blocking."""
    pairs = []
    if transport == "socketpair":
        for _ in range(n):
            c, s = socket.socketpair()
            pairs.append((c, s))
    else:
        with socket.create_server(("127.0.0.1", 0), backlog=n) as lsock:
            addr = lsock.getsockname()
            for _ in range(n):
                c = socket.create_connection(addr)
                s, _ = lsock.accept()
                for sock in (c, s):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pairs.append((c, s))
    for c, s in pairs:
        c.setblocking(True)
        s.setblocking(False)
    return pairs


def client_side(clients: list[socket.socket], serve: Callable[[int], None]) -> float:
    """One round: write into every client, run the server loop, read every echo."""
    for c in clients:
        c.send(MSG)
    t0 = time.thread_time()
    serve(len(clients) * len(MSG))
    served = time.thread_time() - t0
    want = len(MSG)
    for c in clients:
        got = len(c.recv(64))
        while got < want:  # a TCP echo may arrive in pieces
            got += len(c.recv(64))
    return served


# -- the server loop on bare epoll ----------------------------------------------------


def bare_epoll(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> tuple[Round, Callable[[], None]]:
    ep = select.epoll()
    servers = [s for _, s in pairs]
    by_fd: list[socket.socket | None] = [None] * (max(s.fileno() for s in servers) + 1)
    for s in servers:
        by_fd[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
    buf = bytearray(65536)
    view = memoryview(buf)
    epoll_poll = ep.poll

    def serve(expected: int) -> None:
        done = 0
        while done < expected:
            for fd, _mask in epoll_poll(-1, 1024):
                s = by_fd[fd]
                assert s is not None
                recv_into = s.recv_into
                send = s.send
                while True:
                    try:
                        n = recv_into(buf)
                    except BlockingIOError:
                        break
                    if not n:
                        break
                    send(view[:n])
                    done += n

    clients = [c for c, _ in pairs]
    return (lambda: client_side(clients, serve)), ep.close


# -- the same loop on reactor ---------------------------------------------------------


def _streams(pairs: list[tuple[socket.socket, socket.socket]], transport: str) -> list[Stream]:
    cls = UnixStream if transport == "socketpair" else TcpStream
    return [cls.from_socket(s) for _, s in pairs]


def reactor_raw(
    pairs: list[tuple[socket.socket, socket.socket]], transport: str, backend: str | None = None
) -> tuple[Round, Callable[[], None]]:
    poll = Poll(backend=backend)
    streams = _streams(pairs, transport)
    register = poll.registry.register
    for token, stream in enumerate(streams):
        register(stream, token, Interest.READABLE)
    events = Events(1024)
    raw = events.raw
    buf = bytearray(65536)
    view = memoryview(buf)
    poll_poll = poll.poll

    def serve(expected: int) -> None:
        done = 0
        while done < expected:
            poll_poll(events, None)
            for token, _bits in raw:
                s = streams[token]
                recv_into = s.recv_into
                send = s.send
                while True:
                    try:
                        n = recv_into(buf)
                    except BlockingIOError:
                        break
                    if not n:
                        break
                    send(view[:n])
                    done += n

    clients = [c for c, _ in pairs]
    return (lambda: client_side(clients, serve)), poll.close


def reactor_events(
    pairs: list[tuple[socket.socket, socket.socket]], transport: str
) -> tuple[Round, Callable[[], None]]:
    poll = Poll()
    streams = _streams(pairs, transport)
    for token, stream in enumerate(streams):
        poll.registry.register(stream, token, Interest.READABLE)
    events = Events(1024)
    buf = bytearray(65536)
    view = memoryview(buf)

    def serve(expected: int) -> None:
        done = 0
        while done < expected:
            poll.poll(events, None)
            for event in events:
                if not event.is_readable:
                    continue
                s = streams[event.token]
                while True:
                    try:
                        n = s.recv_into(buf)
                    except BlockingIOError:
                        break
                    if not n:
                        break
                    s.send(view[:n])
                    done += n

    clients = [c for c, _ in pairs]
    return (lambda: client_side(clients, serve)), poll.close


# -- driver ---------------------------------------------------------------------------


def measure(rounds: int, run: Round) -> tuple[float, float, float]:
    """Wall and CPU seconds for ``rounds`` whole rounds, and CPU seconds in the server loop.

    CPU time (``thread_time``) is what this thread spent running: it does not count
    time the machine gave to other processes, so it is the steadier figure on a
    shared box.
    """
    served = 0.0
    w0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(rounds):
        served += run()
    return time.perf_counter() - w0, time.thread_time() - c0, served


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--transport", choices=["socketpair", "tcp"], default="socketpair")
    ap.add_argument("--fallback", action="store_true", help="also measure the fallback backend")
    ap.add_argument("--profile", action="store_true", help="cProfile the reactor variant")
    args = ap.parse_args()

    variants = ["bare", "reactor", "events"] + (["fallback"] if args.fallback else [])
    raise_fd_limit(2 * args.pairs * len(variants) + 100)
    print(f"$ {sys.executable} {' '.join(sys.argv)}")
    print(
        f"python {sys.version.split()[0]}, {args.pairs} {args.transport} pairs, "
        f"{args.rounds} rounds x {args.repeats} repeats, interleaved"
    )

    setups: dict[str, tuple[Round, Callable[[], None]]] = {}
    all_pairs = []
    for name in variants:
        pairs = make_pairs(args.pairs, args.transport)
        all_pairs.append(pairs)
        if name == "bare":
            setups[name] = bare_epoll(pairs)
        elif name == "reactor":
            setups[name] = reactor_raw(pairs, args.transport)
        elif name == "events":
            setups[name] = reactor_events(pairs, args.transport)
        else:
            setups[name] = reactor_raw(pairs, args.transport, backend="fallback")

    if args.profile:
        import cProfile
        import pstats

        run = setups["reactor"][0]
        prof = cProfile.Profile()
        prof.enable()
        measure(args.rounds, run)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)

    for name in variants:  # warm up
        measure(2, setups[name][0])
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    server: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.repeats):
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for name in order:
            w, c, s = measure(args.rounds, setups[name][0])
            wall[name].append(w)
            cpu[name].append(c)
            server[name].append(s)

    trips = args.pairs * args.rounds
    med = statistics.median
    base = {"wall": med(wall["bare"]), "cpu": med(cpu["bare"]), "server": med(server["bare"])}
    print("medians; ratio = variant time / bare time")
    print(
        f"{'variant':<9} {'trips/s wall':>13} {'trips/s cpu':>12} "
        f"{'ratio wall':>11} {'ratio cpu':>10} {'ratio server cpu':>17}"
    )
    for name in variants:
        w, c, s = med(wall[name]), med(cpu[name]), med(server[name])
        print(
            f"{name:<9} {trips / w:>13,.0f} {trips / c:>12,.0f} {w / base['wall']:>11.3f} "
            f"{c / base['cpu']:>10.3f} {s / base['server']:>17.3f}"
        )

    for _run, close in setups.values():
        close()
    for pairs in all_pairs:
        for c, s in pairs:
            c.close()
            s.close()


if __name__ == "__main__":
    main()
