"""TCP readiness contract, on every backend (mio ``tests/tcp_stream.rs``, ``tcp_listener.rs``)."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from mioreactor.reactor import Events, Interest, Poll
from mioreactor.reactor.event import READ_CLOSED, READABLE, WRITABLE
from mioreactor.reactor.net import TcpListener, TcpStream

from tests.reactor.util import (
    accept_all,
    connected_pair,
    drain,
    expect_events,
    expect_no_events,
    reports_closed_states,
    wait_for,
)

LISTENER = 0
SERVER = 1
CLIENT = 2


def test_a_stream_is_readable_after_data_arrives(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE)
    expect_no_events(poll, events)

    client.sendall(b"hello")

    expect_events(poll, events, [(SERVER, READABLE)])
    assert drain(server) == b"hello"


def test_no_event_after_draining_until_would_block_and_an_event_again_after_new_data(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE)
    client.sendall(b"one")
    expect_events(poll, events, [(SERVER, READABLE)])
    assert drain(server) == b"one"
    with pytest.raises(BlockingIOError):
        server.recv(1)

    expect_no_events(poll, events)

    client.sendall(b"two")
    expect_events(poll, events, [(SERVER, READABLE)])
    assert drain(server) == b"two"


def test_an_undrained_stream_is_not_reported_again_for_the_data_it_left(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    # The edge-triggered rule, shown from the other side: stop short of would-block
    # and the data still buffered earns no further event. (epoll also reports *new*
    # data on an undrained socket as a new edge; the fallback does not, since its
    # edges re-arm only on would-block, as in mio's poll(2) backend. The contract
    # promises neither: drain.)
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE)
    client.sendall(b"abcdef")
    expect_events(poll, events, [(SERVER, READABLE)])
    assert server.recv(2) == b"ab"

    expect_no_events(poll, events)

    assert drain(server) == b"cdef"
    client.sendall(b"g")
    expect_events(poll, events, [(SERVER, READABLE)])
    assert drain(server) == b"g"


def test_the_listener_is_reported_again_after_accept_is_drained(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    poll.registry.register(listener, LISTENER, Interest.READABLE)
    first = socket.create_connection(listener.local_addr(), timeout=5)
    closing.append(first)
    expect_events(poll, events, [(LISTENER, READABLE)])
    accepted = accept_all(listener)
    closing += accepted
    assert len(accepted) == 1
    expect_no_events(poll, events)

    second = socket.create_connection(listener.local_addr(), timeout=5)
    closing.append(second)
    expect_events(poll, events, [(LISTENER, READABLE)])
    accepted = accept_all(listener)
    closing += accepted
    assert len(accepted) == 1


def test_two_connections_in_one_edge_are_both_accepted_by_one_drain(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    poll.registry.register(listener, LISTENER, Interest.READABLE)
    # create_connection returns after the handshake: both sit in the accept queue
    # before the first poll, so one edge announces two connections.
    closing += [socket.create_connection(listener.local_addr(), timeout=5) for _ in range(2)]
    seen = expect_events(poll, events, [(LISTENER, READABLE)])
    assert [e.token for e in seen] == [LISTENER]

    accepted = accept_all(listener)
    closing += accepted

    assert len(accepted) == 2
    expect_no_events(poll, events)


def test_a_connecting_stream_becomes_writable_when_connected(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    poll.registry.register(listener, LISTENER, Interest.READABLE)
    stream = TcpStream.connect(listener.local_addr())
    closing.append(stream)
    poll.registry.register(stream, CLIENT, Interest.WRITABLE)

    expect_events(poll, events, [(CLIENT, WRITABLE), (LISTENER, READABLE)])

    assert stream.take_error() is None
    assert stream.peer_addr() == listener.local_addr()
    closing += accept_all(listener)


def test_a_stream_registered_for_both_reports_each_direction(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE | Interest.WRITABLE)
    expect_events(poll, events, [(SERVER, WRITABLE)])

    client.sendall(b"x")

    expect_events(poll, events, [(SERVER, READABLE)])
    assert drain(server) == b"x"


@pytest.mark.parametrize("how", ["shutdown", "close"])
def test_a_peer_that_stops_sending_shows_read_closed_or_end_of_file(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object], how: str
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE)

    if how == "shutdown":
        client.shutdown(socket.SHUT_WR)
    else:
        client.close()

    if reports_closed_states(poll):
        expect_events(poll, events, [(SERVER, READABLE | READ_CLOSED)])
    else:
        # poll(2) through selectors cannot say "closed": readable, then EOF.
        expect_events(poll, events, [(SERVER, READABLE)])
    assert server.recv(10) == b""


def test_a_reset_peer_shows_readable_and_closed_and_the_read_fails(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing.append(server)
    poll.registry.register(server, SERVER, Interest.READABLE)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    client.close()  # linger 0: the peer gets RST, not FIN

    expected = READABLE | READ_CLOSED if reports_closed_states(poll) else READABLE
    expect_events(poll, events, [(SERVER, expected)])
    with pytest.raises(ConnectionResetError):
        server.recv(10)


def test_no_events_are_reported_after_deregister(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE | Interest.WRITABLE)

    poll.registry.deregister(server)
    client.sendall(b"ignored")

    expect_no_events(poll, events)


def test_pending_readiness_is_dropped_by_deregister(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE)
    client.sendall(b"ready before the poll")
    wait_for(lambda: server.socket.recv(1, socket.MSG_PEEK) or None)

    poll.registry.deregister(server)

    expect_no_events(poll, events)


def test_reregister_replaces_the_token_and_the_interest(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, 10, Interest.READABLE)

    poll.registry.reregister(server, 11, Interest.WRITABLE)

    seen = expect_events(poll, events, [(11, WRITABLE)])
    assert {e.token for e in seen} == {11}
    client.sendall(b"data")  # readable, but nobody asked
    expect_no_events(poll, events)

    poll.registry.reregister(server, 12, Interest.READABLE)

    seen = expect_events(poll, events, [(12, READABLE)])
    assert {e.token for e in seen} == {12}
    assert drain(server) == b"data"


def test_reregister_rearms_readiness_that_still_holds(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE)
    client.sendall(b"not drained")
    expect_events(poll, events, [(SERVER, READABLE)])
    expect_no_events(poll, events)

    poll.registry.reregister(server, SERVER, Interest.READABLE)

    expect_events(poll, events, [(SERVER, READABLE)])


def test_take_error_reports_a_refused_connect_once(
    poll: Poll, events: Events, closing: list[object]
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
    try:
        stream = TcpStream.connect(address)
    except ConnectionRefusedError:
        pytest.skip("the kernel refused the connect synchronously")
    closing.append(stream)
    poll.registry.register(stream, CLIENT, Interest.WRITABLE)

    expect_events(poll, events, [(CLIENT, WRITABLE)])

    error = stream.take_error()
    assert isinstance(error, ConnectionRefusedError)
    assert error.errno == errno.ECONNREFUSED
    assert stream.take_error() is None
    with pytest.raises(OSError):
        stream.peer_addr()


def test_writev_sends_every_buffer_in_order(listener: TcpListener, closing: list[object]) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]

    sent = server.writev([b"ab", bytearray(b"cd"), memoryview(b"ef")])

    assert sent == 6
    client.settimeout(2)
    received = b""
    while len(received) < 6:
        received += client.recv(16)
    assert received == b"abcdef"


def test_a_full_send_buffer_raises_would_block_and_writable_returns_after_the_peer_reads(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.WRITABLE)
    expect_events(poll, events, [(SERVER, WRITABLE)])
    chunk = b"x" * 65536
    with pytest.raises(BlockingIOError):
        for _ in range(10_000):
            server.send(chunk)
    expect_no_events(poll, events)

    client.setblocking(False)
    try:
        while client.recv(1 << 20):
            pass
    except BlockingIOError:
        pass

    expect_events(poll, events, [(SERVER, WRITABLE)])


def test_listener_bind_accepts_host_port_text(closing: list[object]) -> None:
    listener = TcpListener.bind("127.0.0.1:0")
    closing.append(listener)
    host, port = listener.local_addr()
    assert host == "127.0.0.1"
    assert port > 0


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_ipv6_loopback_streams_are_readable_after_data(
    poll: Poll, events: Events, closing: list[object]
) -> None:
    listener = TcpListener.bind("[::1]:0")
    closing.append(listener)
    poll.registry.register(listener, LISTENER, Interest.READABLE)
    stream = TcpStream.connect(listener.local_addr()[:2])
    closing.append(stream)
    poll.registry.register(stream, CLIENT, Interest.READABLE | Interest.WRITABLE)

    expect_events(poll, events, [(LISTENER, READABLE), (CLIENT, WRITABLE)])
    (server,) = accept_all(listener)
    closing.append(server)
    poll.registry.register(server, SERVER, Interest.READABLE)
    stream.send(b"v6")

    expect_events(poll, events, [(SERVER, READABLE)])
    assert drain(server) == b"v6"
    assert server.local_addr()[0] == "::1"


def test_io_methods_drained_to_would_block_re_arm_the_edge_on_every_backend(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    """``io_methods()`` is the hot-loop surface: on a real-edge backend the socket's
    own methods, on the fallback the wrappers that re-arm. Either way, draining with
    them to ``BlockingIOError`` brings the next event."""
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE)
    recv, send, sendmsg = server.io_methods()
    for round_ in (b"one", b"two", b"three"):
        client.sendall(round_)
        expect_events(poll, events, [(SERVER, READABLE)])
        assert recv(65536) == round_
        with pytest.raises(BlockingIOError):
            recv(65536)
    assert send(b"ab") == 2
    assert sendmsg([b"c", b"d"]) == 2
    client.settimeout(2)
    got = b""
    for _ in range(4):
        got += client.recv(16)
        if len(got) >= 4:
            break
    assert got == b"abcd"
    if poll.backend_name == "fallback":
        assert recv == server.recv  # the wrapper: it must hear "would block"
    else:
        assert recv == server.socket.recv


def test_data_after_a_short_read_raises_a_new_event_on_every_backend(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    """The stream-socket exception to the drain rule (mioreactor.reactor.poll, "Draining
    readiness"): where ``short_io_drains`` says so (epoll, kqueue), a read that
    returned fewer bytes than asked counts as drained, and data arriving after it
    still raises an event. On the fallback the reader drains to ``BlockingIOError``,
    as its emulated edge needs. No readiness is lost either way."""
    client, server = connected_pair(listener)
    closing += [client, server]
    poll.registry.register(server, SERVER, Interest.READABLE)
    recv = server.io_methods()[0]
    assert server.short_io_drains is (poll.backend_name != "fallback")
    for round_ in (b"first", b"second", b"third" * 100):
        client.sendall(round_)
        expect_events(poll, events, [(SERVER, READABLE)])
        data = recv(65536)
        assert data == round_  # fewer bytes than asked: a short read
        if not server.short_io_drains:
            with pytest.raises(BlockingIOError):
                recv(65536)
        # Nothing more is read: the next event must come from the next data alone.
    client.sendall(b"late")
    expect_events(poll, events, [(SERVER, READABLE)])
    assert recv(65536) == b"late"


def test_buffer_space_after_a_short_send_raises_a_writable_event_on_every_backend(
    poll: Poll, events: Events, listener: TcpListener, closing: list[object]
) -> None:
    """The write side of the same exception: a send that took less than offered
    counts as drained on epoll and kqueue; once the peer reads, a writable event comes."""
    client, server = connected_pair(listener)
    closing += [client, server]
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    poll.registry.register(server, SERVER, Interest.WRITABLE)
    expect_events(poll, events, [(SERVER, WRITABLE)])
    send = server.io_methods()[1]
    block = b"x" * 262144
    sent = 0
    for _ in range(1000):
        n = send(block)
        sent += n
        if n < len(block):
            break  # a short send: the buffer is full
    else:
        pytest.fail("no short send in 1,000 sends of 256 KiB")
    if not server.short_io_drains:
        with pytest.raises(BlockingIOError):
            for _ in range(1000):
                sent += send(block)
    client.settimeout(5)
    got = 0
    while got < sent:  # the peer reads everything: the buffer empties
        got += len(client.recv(1 << 20))
    expect_events(poll, events, [(SERVER, WRITABLE)])
    assert send(b"more") == 4
