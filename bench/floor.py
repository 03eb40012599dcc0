#!/usr/bin/env python3
"""The floor: this architecture's bare shape, nothing else, as a yardstick for the hot path.

One acceptor thread waits on an edge-triggered epoll holding the listener and every
connection. A listener event drains ``accept()``; a connection event adds its
descriptor to this poll cycle's batch, and each cycle puts one batch on the worker's
``SimpleQueue``. The worker reads each ready socket until ``BlockingIOError``, feeds
httptools, calls the WSGI app with a minimal environ, and sends one buffer per read.

With an ASGI app (``--interface asgi``, or an app whose name ends in ``_asgi``) the
worker makes the ASGI ``http`` scope instead and runs the app's coroutine as a real
``asyncio.Task`` per request, its first step run at once inside the task's creation
(the eager start the product uses on 3.11; ``call_soon`` runs the step it is given).
An app that awaits anything but ``send`` is outside the floor. ``--asgi-direct``
drives the coroutine with ``send(None)`` and no task at all: what a task costs, and
the bound for a server that could do without one (``asyncio.current_task()`` is then
None inside the app, which anyio, sniffio and ``asyncio.timeout`` refuse).

A request that does not keep the connection (``Connection: close``, HTTP/1.0 without
keep-alive) gets its answer, then the connection is closed.

With ``--certfile``/``--keyfile`` it serves HTTPS as the product does, with nothing
around it: an ``SSLObject`` over two memory BIOs per connection (``BioSocket``), the
handshake driven by readiness on the worker. (A non-blocking ``ssl.SSLSocket`` was
slower here: 32-35k against 48k req/s for the product, its ``recv`` being Python
methods around the engine and one exception per drained read.)

On both, a read shorter than asked ends the connection's turn (the socket is drained
under edge triggering), as in the product, instead of one more ``recv`` that raises.

What it leaves out is the point: no timeouts, limits, keep-alive rules, ``Date``
header, validation, stats or error handling. ``--rules`` puts back the least a
production server must do per keep-alive request and no more: a ``Date`` line (RFC
9110 section 6.6.1; made once a second), a ``Server`` line (as every peer here sends)
and an idle deadline per connection (once a second the worker closes the connections
idle for ``--idle`` seconds, 5 by default). One clock read a request serves both, as
in the product. That is what the bare shape costs with the rules no server may drop.

It is not a server; ``make bench``'s "floor loop" column runs it to show what the
product's extra work costs. Linux only.

usage: python bench/floor.py --port PORT [--app MODULE:APP] [--workers N]
                             [--rules [--idle SECONDS]]
                             [--interface auto|wsgi|asgi] [--asgi-direct]
                             [--certfile PEM --keyfile PEM]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import importlib
import os
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from queue import Empty, SimpleQueue
from typing import Any

import httptools

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
HELLO = b"Hello, World!"


class Rules:
    """``--rules``: the Date and Server lines, made once a second.

    One clock read a request, as the product's lanes: the worker reads
    ``time.monotonic()`` (``now``) before answering; the Date line holds until
    ``mono_until``, the monotonic time at which its wall-clock second ends, and the
    idle deadline counts from the same reading.
    """

    on = False
    idle = 5.0  # seconds a keep-alive connection may stay idle
    now = 0.0  # the worker's reading for the response being made
    mono_until = 0.0
    lines = ""

    @classmethod
    def head_lines(cls) -> str:
        if cls.now >= cls.mono_until:
            wall = time.time()
            cls.mono_until = cls.now + (int(wall) + 1.0 - wall)
            cls.lines = (time.strftime("Date: %a, %d %b %Y %H:%M:%S GMT\r\n", time.gmtime(wall))
                         + "Server: floor\r\n")
        return cls.lines


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


class BioSocket:
    """A TLS connection as the product runs it: the engine never sees the socket.

    ``recv`` returns plaintext (``b""`` at the end) and raises ``BlockingIOError`` when
    nothing whole came; ``short`` says the last socket read drained the socket.
    """

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.short = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def do_handshake(self) -> None:
        """One step; raises ``SSLWantReadError`` until done, ``OSError`` on failure."""
        try:
            raw = self.sock.recv(65536)
        except BlockingIOError:
            raise ssl.SSLWantReadError from None
        if not raw:
            raise OSError("closed during the handshake")
        self.inc.write(raw)
        try:
            self.obj.do_handshake()
        finally:
            if self.out.pending:
                self.sock.sendall(self.out.read())

    def recv(self, size: int) -> bytes:
        inc = self.inc
        if inc.pending:  # came with the handshake's last read, or a record left over
            self.short = False
        else:
            raw = self.sock.recv(size)
            if not raw:
                return b""
            inc.write(raw)
            self.short = len(raw) < size
        pieces = []
        while True:
            try:
                piece = self.obj.read(size)
            except ssl.SSLWantReadError:
                break  # a partial record: its rest raises an edge of its own
            if not piece:
                return b""  # close_notify
            pieces.append(piece)
            if not inc.pending:
                break
        if not pieces:
            raise BlockingIOError
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def sendall(self, data: bytes) -> None:
        self.obj.write(data)
        self.sock.sendall(self.out.read())


class Peer:
    """One connection's socket and parser state, on its worker."""

    __slots__ = ("done", "fields", "handshake", "idle_until", "keep", "parser", "sock", "target")

    def __init__(self, sock: Any, handshake: bool = False) -> None:
        self.sock = sock
        self.handshake = handshake  # a TLS handshake is still to do
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.done: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []
        self.keep = True  # the last complete request keeps the connection
        self.idle_until = 0.0  # --rules: closed once idle past this (time.monotonic)
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_message_complete(self) -> None:
        self.done.append((self.target, self.fields))
        self.target, self.fields = b"", []
        self.keep = self.parser.should_keep_alive()  # read here: the parser resets after


def respond(app: App, peer: Peer, port: int) -> bytes:
    """The bytes of every response the last read completed, in order."""
    out = []
    method = peer.parser.get_method().decode()
    close = "" if peer.keep else "Connection: close\r\n"
    if Rules.on:
        close = Rules.head_lines() + close
    for target, fields in peer.done:
        path, _, query = target.partition(b"?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method, "PATH_INFO": path.decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"), "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(port), "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": None, "wsgi.url_scheme": "http",
        }
        for name, value in fields:
            environ["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = \
                value.decode("latin-1")
        head: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None,
                           head: list[bytes] = head) -> None:
            lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
            head.append(f"HTTP/1.1 {status}\r\n{lines}{close}\r\n".encode("latin-1"))

        body = b"".join(app(environ, start_response))
        out.append(head[0] + body)
    peer.done.clear()
    return b"".join(out)


def drop(ep: select.epoll, peers: dict[int, Peer], fd: int, peer: Peer) -> None:
    """Forget and close a connection. Its descriptor may not be registered yet: the
    acceptor publishes a peer before registering it, and the worker may serve (and
    close) it in between, on an event left from the connection that had the number
    before."""
    try:
        ep.unregister(fd)
    except OSError:
        pass
    peers.pop(fd, None)
    peer.sock.close()


class EagerLoop(asyncio.SelectorEventLoop):
    """A loop whose ``call_soon`` runs the callback at once: a new task's first step."""

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any,
        context: contextvars.Context | None = None,
    ) -> None:
        (context or contextvars.copy_context()).run(callback, *args)


class AsgiResponder:
    """Run an ASGI app per request (a task, or a bare coroutine) and frame its answer."""

    def __init__(self, app: Any, port: int, direct: bool) -> None:
        self.app = app
        self.direct = direct
        self.server = ("127.0.0.1", port)
        self.loop = EagerLoop()
        asyncio.events._set_running_loop(self.loop)
        self.out: list[bytes] = []
        self.close = False  # the request asked to close: say so in the head

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            lines = b"".join(b"%s: %s\r\n" % pair for pair in message.get("headers", ()))
            if self.close:
                lines += b"Connection: close\r\n"
            self.out.append(b"HTTP/1.1 %d OK\r\n%s\r\n" % (message["status"], lines))
        else:
            self.out.append(message.get("body", b""))

    def __call__(self, app: Any, peer: Peer, port: int) -> bytes:
        method = peer.parser.get_method().decode()
        self.close = not peer.keep
        for target, fields in peer.done:
            path, _, query = target.partition(b"?")
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": method, "scheme": "http", "path": path.decode("latin-1"),
                "raw_path": path, "query_string": query, "root_path": "",
                "headers": [(name.lower(), value) for name, value in fields],
                "client": None, "server": self.server,
            }
            coro = self.app(scope, self.receive, self.send)
            if self.direct:
                try:
                    coro.send(None)
                except StopIteration:
                    pass
            else:
                asyncio.Task(coro, loop=self.loop)
        peer.done.clear()
        out = b"".join(self.out)
        self.out.clear()
        return out


def worker(queue: SimpleQueue[list[int]], peers: dict[int, Peer], ep: select.epoll,
           app: Any, port: int, asgi: AsgiResponder | None = None) -> None:
    answer: Callable[[Any, Peer, int], bytes] = respond if asgi is None else asgi
    rules, idle = Rules.on, Rules.idle
    monotonic = time.monotonic
    sweep_at = 0.0
    while True:
        try:
            batch = queue.get(timeout=1.0 if rules else None)
        except Empty:
            batch = []
        if rules:
            now = monotonic()
            if now >= sweep_at:  # close the connections idle past their deadline
                sweep_at = now + 1.0
                for fd, peer in list(peers.items()):
                    if peer.idle_until and peer.idle_until < now:
                        drop(ep, peers, fd, peer)
        for fd in batch:
            peer = peers.get(fd)
            if peer is None:
                continue
            tls = peer.handshake or type(peer.sock) is BioSocket
            if peer.handshake:
                try:
                    peer.sock.do_handshake()
                    peer.handshake = False
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except OSError:
                    drop(ep, peers, fd, peer)
                    continue
            while True:
                try:
                    data = peer.sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    drop(ep, peers, fd, peer)
                    break
                try:
                    peer.parser.feed_data(data)
                except httptools.HttpParserError:
                    drop(ep, peers, fd, peer)
                    break
                if peer.done:
                    if rules:
                        Rules.now = now = monotonic()
                        peer.idle_until = now + idle
                    peer.sock.sendall(answer(app, peer, port))
                    if not peer.keep:  # Connection: close (or 1.0)
                        drop(ep, peers, fd, peer)
                        break
                if peer.sock.short if tls else len(data) < 65536:
                    break  # a short read drained the socket (edge-triggered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default=None, help="MODULE:APP (default: a 13-byte hello)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rules", action="store_true",
                        help="add what no server may drop: Date, Server, an idle deadline")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="with --rules: close a connection idle this long (seconds)")
    parser.add_argument("--interface", choices=("auto", "wsgi", "asgi"), default="auto")
    parser.add_argument("--asgi-direct", action="store_true",
                        help="ASGI: drive the coroutine without a task")
    parser.add_argument("--certfile", default=None, help="serve HTTPS with this certificate")
    parser.add_argument("--keyfile", default=None)
    args = parser.parse_args()
    Rules.on, Rules.idle = args.rules, args.idle
    tls: ssl.SSLContext | None = None
    if args.certfile:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.certfile, args.keyfile)
    app: Any = hello
    if args.app:
        here = os.path.dirname(os.path.abspath(__file__))
        # bench/ itself is first on the path (a script's folder): its http.py would
        # shadow the standard library's for the app (starlette imports http.client).
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        sys.path.insert(0, os.getcwd())
        module, _, name = args.app.partition(":")
        app = getattr(importlib.import_module(module), name)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN | select.EPOLLET)
    peers: dict[int, Peer] = {}
    queues: list[SimpleQueue[list[int]]] = [SimpleQueue() for _ in range(args.workers)]
    asgi = args.interface == "asgi" or (args.interface == "auto" and bool(args.app)
                                        and args.app.endswith("_asgi"))
    for q in queues:
        threading.Thread(
            target=lambda q=q: worker(
                q, peers, ep, app, args.port,
                AsgiResponder(app, args.port, args.asgi_direct) if asgi else None),
            daemon=True,
        ).start()
    lfd = listener.fileno()
    while True:
        batches: dict[int, list[int]] = {}
        for fd, _ in ep.poll():
            if fd == lfd:
                while True:  # drain the backlog: the edge will not come again
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    fd = sock.fileno()
                    peers[fd] = Peer(sock) if tls is None else Peer(BioSocket(sock, tls), True)
                    try:
                        ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
                    except OSError:  # served and closed already (see drop)
                        peers.pop(fd, None)
            else:
                batches.setdefault(fd % len(queues), []).append(fd)
        for index, batch in batches.items():
            queues[index].put(batch)


if __name__ == "__main__":
    main()
