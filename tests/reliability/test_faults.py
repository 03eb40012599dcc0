"""Client faults over real sockets, each followed by the same health check.

A fault test describes the fault; ``assert_healthy`` (support.py) then checks that no
worker died, no descriptor leaked, no connection is stuck, the stats add up, and a
normal request is still served. Where the app streams a response, the test also
checks that the body iterable was closed (PEP 3333), since a streaming body that is
never closed leaks whatever the app holds open for it.
"""

from __future__ import annotations

import socket
import time

from tests.reliability.support import (
    assert_healthy,
    connect,
    make_app,
    parse_responses,
    read_all,
    reset,
    running,
    wait_for,
)

GET_BIG = b"GET /big?%d HTTP/1.1\r\nHost: t\r\n\r\n"


def test_resets_in_the_middle_of_the_request_head_leave_no_trace() -> None:
    with running() as (server, baseline):
        for _ in range(50):
            sock = connect(server.address)
            sock.sendall(b"GET /partial HTTP/1.1\r\nHost: t\r\nX-Half: abc")
            reset(sock)
        assert_healthy(server, baseline)
        assert server.stats()["accepted"] >= 51


def test_resets_in_the_middle_of_the_request_body_leave_no_trace() -> None:
    app = make_app()
    with running(app) as (server, baseline):
        for _ in range(30):
            sock = connect(server.address)
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
            sock.sendall(b"z" * 200_000)
            reset(sock)
        for _ in range(10):  # chunked body, reset between chunks
            sock = connect(server.address)
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            sock.sendall(b"1000\r\n" + b"z" * 0x1000 + b"\r\n8000\r\nzz")
            reset(sock)
        assert_healthy(server, baseline)
        assert app.probe.requests == 2  # baseline + health probe: no partial body ran the app


def test_resets_in_the_middle_of_a_streaming_response_close_the_app_iterable() -> None:
    app = make_app()
    with running(app) as (server, baseline):
        for _ in range(20):
            sock = connect(server.address)
            sock.sendall(GET_BIG % (64 << 20))
            got = 0
            while got < 256 * 1024:
                got += len(sock.recv(65536))
            reset(sock)
        assert_healthy(server, baseline)
        assert wait_for(lambda: app.probe.streams_closed == app.probe.streams_opened == 20)


def test_a_half_closed_client_still_gets_every_response() -> None:
    """shutdown(SHUT_WR) after the request: EOF on read is not the end of the exchange."""
    with running() as (server, baseline):
        for pipelined in (1, 3):
            sock = connect(server.address)
            request = b"GET /big?%d HTTP/1.1\r\nHost: t\r\n\r\n" % (4 << 20)
            sock.sendall(request * pipelined)
            sock.shutdown(socket.SHUT_WR)
            raw, end = read_all(sock, timeout=10)
            sock.close()
            responses = parse_responses(raw)
            assert end == "eof"
            assert [r[0] for r in responses] == [200] * pipelined
            assert all(len(r[2]) == 4 << 20 for r in responses)
        # A small response and a body, half-closed at once after the last byte.
        sock = connect(server.address)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        sock.shutdown(socket.SHUT_WR)
        raw, end = read_all(sock)
        sock.close()
        assert end == "eof" and parse_responses(raw)[0][2].startswith(b"5 2cf24dba")
        assert_healthy(server, baseline)


def test_a_peer_that_vanishes_during_a_large_write_is_dropped() -> None:
    """The client closes without reading: for a streamed body and for one 16 MiB
    buffer (the ``blob`` route), whose write is queued whole in the connection."""
    app = make_app()
    with running(app) as (server, baseline):
        for route in (b"/big?%d" % (64 << 20), b"/blob?%d" % (16 << 20)):
            for _ in range(10):
                sock = connect(server.address)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(b"GET " + route + b" HTTP/1.1\r\nHost: t\r\n\r\n")
                time.sleep(0.01)
                sock.close()  # unread data: the kernel answers further segments with RST
        assert_healthy(server, baseline)
        assert wait_for(lambda: app.probe.streams_closed == app.probe.streams_opened == 10)


def test_a_reader_that_never_drains_is_aborted_after_send_timeout() -> None:
    app = make_app()
    with running(app, send_timeout=0.3) as (server, baseline):
        clients = []
        for route in (b"/big?%d" % (256 << 20), b"/blob?%d" % (32 << 20)):
            sock = connect(server.address)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET " + route + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            clients.append(sock)
        # The clients stay connected and never read; the server must let go by itself.
        assert wait_for(lambda: server.stats()["active"] == 0, 5.0), server.stats()
        for sock in clients:
            raw, end = read_all(sock, timeout=5)
            assert end in ("reset", "eof")
            assert len(raw) < 32 << 20  # cut short, not delivered
            sock.close()
        assert_healthy(server, baseline)
        assert app.probe.streams_closed == app.probe.streams_opened == 1


def test_ten_thousand_connect_and_close_cycles_leave_the_server_clean() -> None:
    """10,000 connections opened and closed at once (half with RST, half with FIN),
    200 at a time in parallel."""
    with running() as (server, baseline):
        total, batch = 10_000, 200
        for start in range(0, total, batch):
            socks = [connect(server.address) for _ in range(batch)]
            for i, sock in enumerate(socks):
                if (start + i) % 2:
                    reset(sock)
                else:
                    sock.close()
        assert_healthy(server, baseline, settle=15.0)
        stats = server.stats()
        # Each cycle is a completed handshake: all of them were accepted and closed.
        assert stats["accepted"] >= total + 1
        assert stats["accept_errors"] == {} or set(stats["accept_errors"]) <= {"ECONNABORTED"}


def test_clients_that_connect_and_send_nothing_are_closed_after_header_timeout() -> None:
    with running(header_timeout=0.3) as (server, baseline):
        accepted = server.stats()["accepted"]
        started = time.monotonic()
        idle = [connect(server.address) for _ in range(100)]
        assert wait_for(lambda: server.stats()["accepted"] >= accepted + 100, 3)
        assert wait_for(lambda: server.stats()["active"] == 0, 5.0), server.stats()
        assert time.monotonic() - started < 3.0  # 0.3 s each, not the 10 s default
        for sock in idle:
            raw, end = read_all(sock, timeout=2)
            assert (raw, end) == (b"", "eof")  # a silent close: nothing began, nothing to answer
            sock.close()
        # A partial head instead gets a 408 after the same timeout.
        sock = connect(server.address)
        sock.sendall(b"GET / HTTP/1.1\r\nHost:")
        raw, end = read_all(sock, timeout=3)
        sock.close()
        assert raw.startswith(b"HTTP/1.1 408 ") and end == "eof"
        assert_healthy(server, baseline)
