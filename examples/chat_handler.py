"""A line-based chat room on the handler API: broadcast between connections.

From the repository root::

    reactor serve --interface handler -w 1 examples.chat_handler:factory -b 127.0.0.1:9001
    python examples/chat_handler.py --bind 127.0.0.1:9001

then, in two terminals, ``nc 127.0.0.1 9001`` and chat. Commands: ``/nick NAME``,
``/who``, ``/quit``; any other line goes to everyone else.

Why one worker thread
---------------------
A chat writes to *other* connections. The handler API's ownership rule is that only
the thread serving a connection may use it (``conn.write`` touches that connection's
buffer and socket without a lock). With several workers, the connection you broadcast
to may be in use by another worker at that very moment: one still finishing a
blocking call, or on a free-threaded build, one running in parallel. With
``workers=1`` every callback of every connection runs on the same thread, so writing
to any member from any callback is done by the thread that owns it. A chat never
blocks, and on a GIL build only one worker runs Python code at a time anyway, so the
single worker costs nothing. ``factory`` refuses a second worker rather than race.

The room itself (who is connected) is shared state, so it is a ``ChatRoom`` object
with a lock, handed to the handler, not a dict on the handler instance; each member's
own state (name, unfinished line) is on ``conn.context``.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mioreactor.workers import BaseHandler, Server
from mioreactor.workers.core.handler import Connection, Handler, WorkerContext

MAX_LINE = 4096  # bytes; a longer line closes the connection


@dataclass(slots=True)
class Member:
    """One chatter, kept on ``conn.context``."""

    name: str
    pending: bytearray = field(default_factory=bytearray)


class ChatRoom:
    """Who is connected. Guarded by a lock, so it is safe even where threads run in parallel."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[int, Connection] = {}

    def join(self, conn: Connection) -> None:
        with self._lock:
            self._members[conn.token] = conn

    def leave(self, conn: Connection) -> None:
        with self._lock:
            self._members.pop(conn.token, None)

    def members(self) -> list[Connection]:
        """A snapshot: safe to iterate while members join and leave."""
        with self._lock:
            return list(self._members.values())

    def names(self) -> list[str]:
        return sorted(conn.context.name for conn in self.members())

    def broadcast(self, line: str, *, sender: Connection | None = None) -> None:
        """Send ``line`` to every member except ``sender``. Call it on the worker thread."""
        data = (line + "\n").encode()
        for conn in self.members():
            if conn is not sender:
                conn.write(data)


class ChatHandler(BaseHandler):
    """The chat protocol: lines in, lines out."""

    def __init__(self, worker: WorkerContext, room: ChatRoom) -> None:
        super().__init__(worker)
        self.room = room

    def connection_made(self, conn: Connection) -> None:
        conn.context = Member(name=f"guest{conn.token}")
        self.room.join(conn)
        conn.write(f"* welcome, {conn.context.name}. /nick NAME, /who, /quit\n".encode())
        self.room.broadcast(f"* {conn.context.name} joined", sender=conn)

    def data_received(self, conn: Connection, data: bytes) -> None:
        member: Member = conn.context
        member.pending += data
        while (end := member.pending.find(b"\n")) >= 0:
            line = member.pending[:end].rstrip(b"\r").decode("utf-8", "replace")
            del member.pending[: end + 1]
            self.on_line(conn, member, line)
            if conn.closing:
                return
        if len(member.pending) > MAX_LINE:
            conn.write(b"* line too long, bye\n")
            conn.close()

    def on_line(self, conn: Connection, member: Member, line: str) -> None:
        if line.startswith("/nick "):
            old, member.name = member.name, line[6:].strip()[:32] or member.name
            self.room.broadcast(f"* {old} is now {member.name}")
        elif line == "/who":
            conn.write(("* here: " + ", ".join(self.room.names()) + "\n").encode())
        elif line == "/quit":
            conn.write(b"* bye\n")
            conn.close()
        elif line:
            self.room.broadcast(f"<{member.name}> {line}", sender=conn)

    def pause_writing(self, conn: Connection) -> None:
        # This member does not read what the room sends: drop it rather than buffer
        # everyone's messages for it without limit.
        conn.abort()

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        self.room.leave(conn)
        self.room.broadcast(f"* {conn.context.name} left")


def make_factory(room: ChatRoom) -> Callable[[WorkerContext], Handler]:
    """A handler factory for ``Server(handler=...)`` serving ``room``; one worker only."""

    def factory(worker: WorkerContext) -> Handler:
        if worker.index > 0:
            raise RuntimeError(
                "the chat example broadcasts across connections and needs workers=1 "
                "(reactor serve -w 1); see the module docstring"
            )
        return ChatHandler(worker, room)

    return factory


factory = make_factory(ChatRoom())  # for: reactor serve --interface handler -w 1 ...


def main(argv: list[str] | None = None) -> None:
    """Serve one chat room until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description="A line-based chat on the handler API.")
    parser.add_argument("--bind", default="127.0.0.1:9001", help="HOST:PORT or unix:PATH")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = Server(handler=make_factory(ChatRoom()), bind=args.bind, workers=1).start()
    # Announce once the signal handlers are in place: whoever reads the line may signal at once.
    server.serve_forever(ready=lambda s: print(f"serving on {s.listeners[0].describe()}", flush=True))


if __name__ == "__main__":
    main()
