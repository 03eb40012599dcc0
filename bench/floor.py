#!/usr/bin/env python3
"""The floor: this architecture's bare shape, nothing else, as a yardstick for the hot path.

One acceptor thread waits on an edge-triggered epoll holding the listener and every
connection. A listener event drains ``accept()``; a connection event adds its
descriptor to this poll cycle's batch, and each cycle puts one batch on the worker's
``SimpleQueue``. The worker reads each ready socket until ``BlockingIOError``, feeds
httptools, calls the WSGI app with a minimal environ, and sends one buffer per read.

What it leaves out is the point: no timeouts, limits, keep-alive rules, ``Date``
header, validation, stats or error handling. It is not a server; ``make bench``'s
"floor loop" column runs it to show what the product's extra work costs. Linux only.

usage: python bench/floor.py --port PORT [--app MODULE:APP] [--workers N]
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from queue import SimpleQueue
from typing import Any

import httptools

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
HELLO = b"Hello, World!"


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


class Peer:
    """One connection's socket and parser state, on its worker."""

    __slots__ = ("done", "fields", "parser", "sock", "target")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.done: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_message_complete(self) -> None:
        self.done.append((self.target, self.fields))
        self.target, self.fields = b"", []


def respond(app: App, peer: Peer, port: int) -> bytes:
    """The bytes of every response the last read completed, in order."""
    out = []
    method = peer.parser.get_method().decode()
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
            head.append(f"HTTP/1.1 {status}\r\n{lines}\r\n".encode("latin-1"))

        body = b"".join(app(environ, start_response))
        out.append(head[0] + body)
    peer.done.clear()
    return b"".join(out)


def worker(queue: SimpleQueue[list[int]], peers: dict[int, Peer], ep: select.epoll,
           app: App, port: int) -> None:
    while True:
        for fd in queue.get():
            peer = peers.get(fd)
            if peer is None:
                continue
            while True:
                try:
                    data = peer.sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    ep.unregister(fd)
                    del peers[fd]
                    peer.sock.close()
                    break
                try:
                    peer.parser.feed_data(data)
                except httptools.HttpParserError:
                    ep.unregister(fd)
                    del peers[fd]
                    peer.sock.close()
                    break
                if peer.done:
                    peer.sock.sendall(respond(app, peer, port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default=None, help="MODULE:APP (default: a 13-byte hello)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    app: App = hello
    if args.app:
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
    for q in queues:
        threading.Thread(target=worker, args=(q, peers, ep, app, args.port), daemon=True).start()
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
                    peers[sock.fileno()] = Peer(sock)
                    ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
            else:
                batches.setdefault(fd % len(queues), []).append(fd)
        for index, batch in batches.items():
            queues[index].put(batch)


if __name__ == "__main__":
    main()
