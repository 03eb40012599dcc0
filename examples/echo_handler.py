"""An echo server on the handler API: the whole raw-protocol life cycle in one class.

From the repository root::

    reactor serve --interface handler examples.echo_handler:Echo -b 127.0.0.1:9000
    python examples/echo_handler.py --bind 127.0.0.1:9000

then ``nc 127.0.0.1 9000`` and type. Unix sockets work too: ``--bind unix:/tmp/echo.sock``.

The worker does all socket I/O: it reads until the kernel says "would block" and hands
the bytes to ``data_received``; ``conn.write`` sends at once and buffers the rest. The
handler never touches a socket. One ``Echo`` instance exists per worker thread
(``factory(worker)``), and a connection's events may be served by any worker over its
life, so everything about one connection lives on ``conn.context``, never on ``self``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from mioreactor.workers import BaseHandler, Server
from mioreactor.workers.core.handler import Connection

log = logging.getLogger("examples.echo")


@dataclass(slots=True)
class EchoStats:
    """What one connection has done so far (kept on ``conn.context``)."""

    received: int = 0
    paused: int = 0


class Echo(BaseHandler):
    """Send back every byte; stop reading while the peer does not read its echo."""

    def connection_made(self, conn: Connection) -> None:
        conn.context = EchoStats()
        log.info("connection %d from %s", conn.token, conn.peer)

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.context.received += len(data)
        conn.write(data)

    def eof_received(self, conn: Connection) -> bool:
        # The peer shut down its sending side. Returning False closes the connection
        # once what we wrote has been flushed.
        return False

    def pause_writing(self, conn: Connection) -> None:
        # Our write buffer passed the high-water mark: the peer sends faster than it
        # reads. Stop reading from it until the buffer drains (backpressure).
        conn.context.paused += 1
        conn.pause_reading()

    def resume_writing(self, conn: Connection) -> None:
        conn.resume_reading()

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        stats: EchoStats = conn.context
        log.info(
            "connection %d closed after %d bytes (%d pauses)%s",
            conn.token,
            stats.received,
            stats.paused,
            f": {exc}" if exc else "",
        )


def main(argv: list[str] | None = None) -> None:
    """Serve the echo protocol until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description="An echo server on the handler API.")
    parser.add_argument("--bind", default="127.0.0.1:9000", help="HOST:PORT or unix:PATH")
    parser.add_argument("--workers", type=int, default=2, help="worker threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = Server(handler=Echo, bind=args.bind, workers=args.workers).start()
    # Announce once the signal handlers are in place: whoever reads the line may signal at once.
    server.serve_forever(ready=lambda s: print(f"serving on {s.listeners[0].describe()}", flush=True))


if __name__ == "__main__":
    main()
