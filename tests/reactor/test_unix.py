"""Unix domain streams and listeners, on every backend (mio ``tests/unix_*.rs``)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
from mioreactor.reactor import Events, Interest, Poll
from mioreactor.reactor.event import READABLE, WRITABLE
from mioreactor.reactor.net import UnixListener, UnixStream

from tests.reactor.util import drain, expect_events, expect_no_events

LISTENER = 0
SERVER = 1
CLIENT = 2


def _accept_all(listener: UnixListener) -> list[UnixStream]:
    accepted = []
    while True:
        try:
            accepted.append(listener.accept()[0])
        except BlockingIOError:
            return accepted


def test_a_unix_listener_accepts_and_its_streams_carry_data_both_ways(
    poll: Poll, events: Events, tmp_path: Path, closing: list[object]
) -> None:
    path = str(tmp_path / "s.sock")
    listener = UnixListener.bind(path)
    closing.append(listener)
    poll.registry.register(listener, LISTENER, Interest.READABLE)
    client = UnixStream.connect(path)
    closing.append(client)
    poll.registry.register(client, CLIENT, Interest.READABLE | Interest.WRITABLE)

    expect_events(poll, events, [(LISTENER, READABLE), (CLIENT, WRITABLE)])
    accepted = _accept_all(listener)
    closing += accepted
    assert len(accepted) == 1
    (server,) = accepted
    poll.registry.register(server, SERVER, Interest.READABLE)

    client.send(b"ping")
    expect_events(poll, events, [(SERVER, READABLE)])
    assert drain(server) == b"ping"
    server.send(b"pong")
    expect_events(poll, events, [(CLIENT, READABLE)])
    assert drain(client) == b"pong"


def test_the_unix_listener_is_reported_again_after_accept_is_drained(
    poll: Poll, events: Events, tmp_path: Path, closing: list[object]
) -> None:
    path = str(tmp_path / "s.sock")
    listener = UnixListener.bind(path)
    closing.append(listener)
    poll.registry.register(listener, LISTENER, Interest.READABLE)
    closing += [UnixStream.connect(path) for _ in range(3)]

    expect_events(poll, events, [(LISTENER, READABLE)])
    accepted = _accept_all(listener)
    closing += accepted
    assert len(accepted) == 3
    expect_no_events(poll, events)

    closing.append(UnixStream.connect(path))
    expect_events(poll, events, [(LISTENER, READABLE)])
    closing += _accept_all(listener)


def test_a_unix_stream_pair_sees_the_peer_close_as_end_of_file(
    poll: Poll, events: Events, closing: list[object]
) -> None:
    a, b = UnixStream.pair()
    closing.append(a)
    poll.registry.register(a, 1, Interest.READABLE)

    b.close()

    expect_events(poll, events, [(1, READABLE)])
    assert a.recv(10) == b""


def test_a_stale_socket_file_is_replaced_but_another_file_is_not(
    tmp_path: Path, closing: list[object]
) -> None:
    path = tmp_path / "s.sock"
    UnixListener.bind(str(path)).close()  # leaves the file, as a dead server would
    assert path.exists()
    listener = UnixListener.bind(str(path))
    closing.append(listener)

    other = tmp_path / "plain"
    other.write_text("not a socket")
    with pytest.raises(FileExistsError):
        UnixListener.bind(str(other))
    assert other.read_text() == "not a socket"


def test_a_socket_file_a_server_listens_on_is_not_replaced(
    tmp_path: Path, closing: list[object]
) -> None:
    path = tmp_path / "s.sock"
    first = UnixListener.bind(str(path))
    closing.append(first)
    with pytest.raises(OSError) as caught:
        UnixListener.bind(str(path))
    assert caught.value.errno == errno.EADDRINUSE
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))  # still the first listener's file
