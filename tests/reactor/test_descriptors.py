"""Descriptors: adoption of inherited listeners, and no leaks over many cycles."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mioreactor.reactor import Events, Interest, Poll, Waker
from mioreactor.reactor.net import TcpListener, TcpStream, UnixListener

from tests.reactor.util import count_fds

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    from mioreactor.reactor import Events, Interest, Poll
    from mioreactor.reactor.net import TcpListener

    fd, backend = int(sys.argv[1]), sys.argv[2]
    listener = TcpListener.from_fd(fd)
    with Poll(backend=backend) as poll:
        events = Events(8)
        poll.registry.register(listener, 0, Interest.READABLE)
        streams = {}
        while True:
            poll.poll(events, 10)
            if not events.raw:
                sys.exit("no event within 10 s")
            for token, _ in events.raw:
                if token == 0:
                    while True:
                        try:
                            stream, _ = listener.accept()
                        except BlockingIOError:
                            break
                        streams[1] = stream
                        poll.registry.register(stream, 1, Interest.READABLE)
                else:
                    stream = streams[token]
                    while True:
                        try:
                            data = stream.recv(100)
                        except BlockingIOError:
                            break
                        if not data:
                            sys.exit(0)
                        stream.send(data.upper())
    """
)


def test_an_inherited_listening_descriptor_is_adopted_by_from_fd(backend: str) -> None:
    parent = socket.create_server(("127.0.0.1", 0))
    with parent:
        address = parent.getsockname()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(parent.fileno()), backend],
            cwd=REPO,
            pass_fds=[parent.fileno()],
        )
        try:
            with socket.create_connection(address, timeout=10) as client:
                client.sendall(b"inherited")
                reply = b""
                while len(reply) < 9:
                    chunk = client.recv(100)
                    assert chunk, "the child closed early"
                    reply += chunk
                client.shutdown(socket.SHUT_WR)
            assert reply == b"INHERITED"
            assert child.wait(timeout=20) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_from_fd_refuses_a_socket_that_is_not_listening_and_leaves_it_open() -> None:
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match="not a listening"):
            TcpListener.from_fd(a.fileno())
        with pytest.raises(ValueError, match="not a listening"):
            UnixListener.from_fd(b.fileno())
        os.fstat(a.fileno())  # still the caller's, still open
        os.fstat(b.fileno())
        a.sendall(b"ok")
        assert b.recv(2) == b"ok"


def test_from_fd_adopts_a_listener_in_process() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    listener = TcpListener.from_fd(sock.detach())
    with listener:
        assert listener.local_addr()[0] == "127.0.0.1"
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_two_thousand_poll_listener_stream_cycles_leak_no_descriptor(backend: str) -> None:
    def cycle() -> None:
        poll = Poll(backend=backend)
        waker = Waker(poll.registry, 9)
        listener = TcpListener.bind(("127.0.0.1", 0))
        client = TcpStream.connect(listener.local_addr())
        registry = poll.registry
        registry.register(listener, 0, Interest.READABLE)
        registry.register(client, 1, Interest.READABLE | Interest.WRITABLE)
        poll.poll(events, 0)
        accepted = []
        for _ in range(100):  # bounded: the connection is usually there at once
            try:
                accepted.append(listener.accept()[0])
                break
            except BlockingIOError:
                poll.poll(events, 0.01)
        for stream in accepted:
            registry.register(stream, 2, Interest.READABLE)
            registry.deregister(stream)
            stream.close()
        registry.deregister(client)
        registry.deregister(listener)
        client.close()
        listener.close()
        waker.close()
        poll.close()

    events = Events(8)
    cycle()  # warm up: imports, lazily opened descriptors
    before = count_fds()
    for _ in range(2000):
        cycle()
    assert count_fds() == before
