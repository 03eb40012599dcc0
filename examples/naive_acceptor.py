"""The load-test bug, reproduced: an edge-triggered server that accepts once per event.

A tiny HTTP responder written directly on ``reactor/`` (no ``workers``), with the one
mistake this project exists to avoid: when the listener is readable it calls
``accept()`` once and goes back to ``poll()``. Edge-triggered readiness is reported
when the state *changes*, not while it lasts, so every connection still waiting in the
kernel's accept queue stays there until some *new* arrival raises another edge, and
that edge then accepts the oldest waiting connection, not the new one.

Run it, load it, then try a fresh client (docs/the-load-test-bug.md has the numbers)::

    python examples/naive_acceptor.py --port 8090 &
    siege -b -c10 -t5S http://127.0.0.1:8090/
    curl -m 3 http://127.0.0.1:8090/                  # hangs, then times out
    reactor bench http://127.0.0.1:8090/ --close -c 5 -d 3
    ss -ltn 'sport = :8090'                           # Recv-Q: the stranded queue

Start it with ``--drain`` for the fix (``accept()`` until ``BlockingIOError``) and the
same commands pass. ``--stats`` prints the accept count and the listen-queue depth
once a second.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from mioreactor.reactor import Events, Interest, Poll
from mioreactor.reactor.net import TcpListener, TcpStream
from mioreactor.workers.tools.doctor import listen_queue_depth

LISTENER = 0
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


class NaiveServer:
    """One thread, one Poll, one listener; accepts once per event unless ``drain``.

    Args:
        port: the TCP port on 127.0.0.1 (0 picks a free one).
        backlog: the accept-queue length asked of the kernel.
        drain: accept until ``BlockingIOError`` on every listener event (the fix).
    """

    def __init__(self, port: int = 8090, backlog: int = 128, drain: bool = False) -> None:
        self.listener = TcpListener.bind(("127.0.0.1", port), backlog=backlog)
        self.port: int = self.listener.local_addr()[1]
        self.drain = drain
        self.poll = Poll()
        self.poll.registry.register(self.listener, LISTENER, Interest.READABLE)
        self.conns: dict[int, tuple[TcpStream, bytearray]] = {}
        self.next_token = 1
        self.accepted = 0
        self.running = True
        self.final_stats = ""

    def on_listener_ready(self) -> None:
        """Accept once (the bug), or until the queue is empty (``drain``)."""
        while True:
            try:
                stream, _peer = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:  # ECONNABORTED, EMFILE...: not the point here
                return
            token = self.next_token
            self.next_token += 1
            self.accepted += 1
            self.conns[token] = (stream, bytearray())
            self.poll.registry.register(stream, token, Interest.READABLE)
            if not self.drain:
                return  # THE BUG: the rest of the accept queue gets no event

    def on_stream_ready(self, token: int) -> None:
        """Read until ``BlockingIOError``; answer a complete request head, then close."""
        entry = self.conns.get(token)
        if entry is None:
            return
        stream, buf = entry
        try:
            while True:
                data = stream.recv(65536)
                if not data:  # the client is gone (siege closed it long ago)
                    self.close(token)
                    return
                buf += data
        except BlockingIOError:
            pass
        except OSError:
            self.close(token)
            return
        if b"\r\n\r\n" in buf:
            try:
                stream.send(RESPONSE)
            except OSError:
                pass
            self.close(token)

    def close(self, token: int) -> None:
        stream, _ = self.conns.pop(token)
        self.poll.registry.deregister(stream)  # deregister before close
        stream.close()

    def run(self, stats: bool = False) -> None:
        """Serve until ``stop()`` (or SIGINT/SIGTERM when run as a script)."""
        events = Events(256)
        next_report = time.monotonic() + 1.0
        while self.running:
            self.poll.poll(events, 0.2)
            for event in events:
                if event.token == LISTENER:
                    self.on_listener_ready()
                else:
                    self.on_stream_ready(event.token)
            if stats and time.monotonic() >= next_report:
                next_report += 1.0
                print(self.stats_line(), flush=True)
        self.final_stats = self.stats_line()
        for stream, _ in self.conns.values():
            stream.close()
        self.poll.close()
        self.listener.close()

    def stats_line(self) -> str:
        depth = listen_queue_depth(self.port)
        return f"accepted={self.accepted} open={len(self.conns)} listen_queue={depth}"

    def stop(self) -> None:
        self.running = False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--backlog", type=int, default=128, help="listen backlog")
    parser.add_argument("--drain", action="store_true", help="accept until BlockingIOError")
    parser.add_argument("--stats", action="store_true", help="print counters every second")
    args = parser.parse_args(argv)
    server = NaiveServer(args.port, args.backlog, args.drain)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    mode = "drains accept()" if args.drain else "accepts once per event"
    print(f"naive acceptor ({mode}) on http://127.0.0.1:{server.port}/", flush=True)
    server.run(stats=args.stats)
    print(server.final_stats, file=sys.stderr)


if __name__ == "__main__":
    main()
