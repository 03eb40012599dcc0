"""TLS under a raw handler (echo) and the edge-triggered trap.

The trap: plaintext held inside the TLS engine raises no readiness edge. These tests
send many records in one burst, and read responses far larger than the socket
buffers, and never send anything else: if the server left records in the engine, or
encrypted output unflushed, they would wait for an event that never comes (and fail
at their timeout). Both backends run them: epoll and the portable fallback, whose
emulated edges are the strictest.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from mioreactor.workers import EchoHandler, Server
from mioreactor.workers.core.handler import BaseHandler, Connection
from mioreactor.workers.tls.context import TlsConfig

from tests.tls.conftest import Pki
from tests.tls.util import BioClient, real_client_hello, recv_all, tls10_client_hello
from tests.workers.util import open_fds, wait_for

BIG = 8 * 1024 * 1024


@pytest.fixture(params=[None, "fallback"], ids=["default-backend", "fallback"])
def echo(request: pytest.FixtureRequest, pki: Pki) -> Iterator[Server]:
    srv = Server(handler=EchoHandler, bind="127.0.0.1:0", workers=2, backend=request.param,
                 ssl=TlsConfig(certfile=pki.cert_pem, keyfile=pki.key_pem),
                 tls_handshake_timeout=1.0)
    srv.start()
    yield srv
    srv.stop(timeout=5)


def test_echo_handler_answers_over_tls(echo: Server, pki: Pki) -> None:
    ctx = pki.client_context()
    for i in range(5):
        with socket.create_connection(echo.address, timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"hello %d" % i)
            assert tls.recv(100) == b"hello %d" % i
    assert wait_for(lambda: echo.stats()["closed"] == 5, 3.0)
    assert echo.stats()["tls_handshakes"] == 5
    assert echo.stats()["tls_handshake_failed"] == 0


def test_many_records_in_one_burst_are_all_handed_over(echo: Server, pki: Pki) -> None:
    client = BioClient(echo.address, pki.client_context())
    try:
        pieces = [b"record %05d;" % i for i in range(2000)]
        sent = client.burst(pieces)
        assert sent > 2000 * 20  # each piece is a record of its own, with its overhead
        expected = b"".join(pieces)
        assert client.read(len(expected)) == expected
    finally:
        client.close()


def test_a_burst_bigger_than_the_read_budget_completes(echo: Server, pki: Pki) -> None:
    # 4 MB of 16 KB records in one sendall: many socket reads, several budget turns.
    client = BioClient(echo.address, pki.client_context())
    try:
        data = os.urandom(4 * 1024 * 1024)
        # Encrypted here, sent by a thread (an SSLObject is not for two threads).
        writer = threading.Thread(target=client.sock.sendall, args=(client.encrypt([data]),))
        writer.start()
        got = client.read(len(data), timeout=30)
        writer.join(10)
        assert got == data
    finally:
        client.close()


def test_eight_megabytes_echoed_over_tls_come_back_whole(echo: Server, pki: Pki) -> None:
    # One thread drives both directions (an SSLObject is not for two threads): it
    # writes while the server's window allows and reads what comes back, as a
    # pipelining client does; the server pauses reading at its high-water mark.
    data = os.urandom(BIG)
    client = BioClient(echo.address, pki.client_context())
    sock, obj = client.sock, client.obj
    sock.setblocking(False)
    pending = bytearray()
    sent = 0
    received = bytearray()
    deadline = time.monotonic() + 30
    try:
        while len(received) < BIG and time.monotonic() < deadline:
            if sent < BIG and len(pending) < (1 << 20):
                obj.write(data[sent : sent + 65536])
                sent = min(sent + 65536, BIG)
                pending += client.out.read()
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 5)
            if writable:
                try:
                    del pending[: sock.send(pending)]
                except BlockingIOError:
                    pass
            if readable:
                try:
                    chunk = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                client.inc.write(chunk)
                while True:
                    try:
                        received += obj.read(1 << 20)
                    except ssl.SSLWantReadError:
                        break
        assert len(received) == BIG
        assert bytes(received) == data
    finally:
        client.close()


class _Pausing(BaseHandler):
    """Pauses reading after the first chunk, resumes from a timer: the records that came
    in the same burst wait in the TLS engine, and no edge will announce them."""

    def connection_made(self, conn: Connection) -> None:
        conn.context = 0

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.write(data)
        conn.context += 1
        if conn.context == 1:
            conn.pause_reading()
            conn.call_later(0.05, conn.resume_reading)


def test_records_held_while_reading_is_paused_are_delivered_on_resume(pki: Pki) -> None:
    with Server(handler=_Pausing, bind="127.0.0.1:0", workers=1,
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        client = BioClient(srv.address, pki.client_context())
        try:
            pieces = [b"<%04d>" % i for i in range(300)]
            client.burst(pieces)
            expected = b"".join(pieces)
            assert client.read(len(expected)) == expected
        finally:
            client.close()


def _count_fds_settle(baseline: int) -> bool:
    return open_fds() <= baseline


@pytest.mark.parametrize("payload", [
    b"\x00" * 64,
    b"\x16\x03\x01\x00\x05garbage-in-a-record" + os.urandom(200),
    os.urandom(1024).replace(b"\x16", b"\x17") or b"\x17",
], ids=["zeros", "record-of-garbage", "random"])
def test_garbage_instead_of_a_client_hello_is_closed_and_counted(echo: Server, pki: Pki,
                                                                  payload: bytes) -> None:
    baseline = open_fds()
    with socket.create_connection(echo.address, timeout=5) as sock:
        sock.sendall(payload)
        answer = recv_all(sock, timeout=5)
        assert answer == b"" or answer[0] == 0x15  # nothing, or a TLS alert
    assert wait_for(lambda: echo.stats()["tls_handshake_failed"] == 1, 3.0)
    assert wait_for(lambda: echo.stats()["active"] == 0, 3.0)
    assert wait_for(lambda: _count_fds_settle(baseline), 3.0)
    assert_echo_works(echo, pki)


def assert_echo_works(server: Server, pki: Pki) -> None:
    with socket.create_connection(server.address, timeout=5) as raw, \
            pki.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"still here")
        assert tls.recv(100) == b"still here"


def test_a_truncated_handshake_then_close_is_counted_and_leaks_nothing(echo: Server, pki: Pki) -> None:
    baseline = open_fds()
    hello = real_client_hello(pki.client_context())
    with socket.create_connection(echo.address, timeout=5) as sock:
        sock.sendall(hello[: len(hello) // 2])
    assert wait_for(lambda: echo.stats()["tls_handshake_failed"] == 1, 3.0)
    assert wait_for(lambda: echo.stats()["active"] == 0, 3.0)
    assert wait_for(lambda: _count_fds_settle(baseline), 3.0)


def test_a_truncated_handshake_that_stalls_is_closed_at_the_handshake_timeout(echo: Server,
                                                                              pki: Pki) -> None:
    hello = real_client_hello(pki.client_context())
    with socket.create_connection(echo.address, timeout=5) as sock:
        sock.sendall(hello[:10])
        assert recv_all(sock, timeout=5) == b""  # closed by the server (1 s timeout)
    assert echo.stats()["tls_handshake_failed"] == 1
    assert wait_for(lambda: echo.stats()["active"] == 0, 3.0)


def test_a_tls_1_0_client_is_refused_with_an_alert(echo: Server) -> None:
    with socket.create_connection(echo.address, timeout=5) as sock:
        sock.sendall(tls10_client_hello())
        answer = recv_all(sock, timeout=5)
    assert answer[:1] == b"\x15"  # an alert record (protocol_version), then the close
    assert wait_for(lambda: echo.stats()["tls_handshake_failed"] == 1, 3.0)


def test_a_client_limited_to_tls_1_2_is_refused_by_a_1_3_minimum(pki: Pki) -> None:
    cfg = TlsConfig(certfile=pki.cert_pem, keyfile=pki.key_pem, min_version="1.3")
    with Server(handler=EchoHandler, bind="127.0.0.1:0", workers=1, ssl=cfg) as srv:
        ctx = pki.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(srv.address, timeout=5) as raw, pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="localhost")
        ok = pki.client_context()
        with socket.create_connection(srv.address, timeout=5) as raw, \
                ok.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"
        assert wait_for(lambda: srv.stats()["tls_handshake_failed"] == 1, 3.0)


def test_two_hundred_stalled_handshakes_do_not_hold_up_others_or_leak(pki: Pki) -> None:
    baseline = open_fds()
    with Server(handler=EchoHandler, bind="127.0.0.1:0", workers=2,
                ssl=TlsConfig(certfile=pki.both_pem), tls_handshake_timeout=1.5) as srv:
        hello = real_client_hello(pki.client_context())
        stalled = []
        try:
            for i in range(200):
                s = socket.create_connection(srv.address, timeout=5)
                if i % 2:
                    s.sendall(hello[: 5 + i % 30])  # a partial ClientHello, then silence
                stalled.append(s)
            ctx = pki.client_context()
            for i in range(10):
                # each normal client gets 1 s for connect, handshake and answer
                with socket.create_connection(srv.address, timeout=1.0) as raw, \
                        ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"normal %d" % i)
                    assert tls.recv(100) == b"normal %d" % i
            assert srv.stats()["tls_handshakes"] == 10
            # The handshake timeout closes every stalled one.
            assert wait_for(lambda: srv.stats()["tls_handshake_failed"] == 200, 10.0)
            assert wait_for(lambda: srv.stats()["active"] == 0, 5.0)
        finally:
            for s in stalled:
                s.close()
    assert wait_for(lambda: _count_fds_settle(baseline), 5.0)


def test_a_handshaking_connection_does_not_hold_up_a_graceful_stop(pki: Pki) -> None:
    srv = Server(handler=EchoHandler, bind="127.0.0.1:0", workers=1,
                 ssl=TlsConfig(certfile=pki.both_pem), graceful_timeout=30.0,
                 tls_handshake_timeout=1.0)
    srv.start()
    with socket.create_connection(srv.address, timeout=5) as sock:
        assert wait_for(lambda: srv.stats()["active"] == 1, 3.0)
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        # Like a fresh plain connection, it may still finish its handshake; a silent
        # one is closed at the handshake timeout, long before the graceful timeout.
        stopper.join(10)
        assert not stopper.is_alive()
        assert recv_all(sock, timeout=1) == b""


def test_close_notify_after_records_held_by_a_pause_still_ends_the_connection(pki: Pki) -> None:
    with Server(handler=_Pausing, bind="127.0.0.1:0", workers=1,
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        client = BioClient(srv.address, pki.client_context())
        try:
            data = client.encrypt([b"<%04d>" % i for i in range(50)])
            try:
                client.obj.unwrap()  # close_notify, in the same burst
            except ssl.SSLWantReadError:
                pass
            client.sock.sendall(data + client.out.read())
            expected = b"".join(b"<%04d>" % i for i in range(50))
            assert client.read(len(expected)) == expected
            # The server hears the end of stream after the pause, and closes.
            assert client.read(1, timeout=5) == b""
            assert wait_for(lambda: srv.stats()["active"] == 0, 5.0)
        finally:
            client.close()


@pytest.fixture(params=__import__("reactor").available_backends())
def echo_each_backend(request: pytest.FixtureRequest, pki: Pki) -> Iterator[Server]:
    with Server(handler=EchoHandler, bind="127.0.0.1:0", workers=1, backend=request.param,
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        yield srv


def test_records_after_a_short_read_raise_an_edge_and_are_served(echo_each_backend: Server,
                                                                  pki: Pki) -> None:
    # A short read counts as drained on epoll and kqueue: what comes later (here a
    # record cut in two, its rest 50 ms later) must raise an edge of its own.
    client = BioClient(echo_each_backend.address, pki.client_context())
    try:
        for i in range(5):
            data = client.encrypt([b"piece %d " % i * 100])
            client.sock.sendall(data[: len(data) // 2])
            time.sleep(0.05)
            client.sock.sendall(data[len(data) // 2 :])
            assert client.read(len(b"piece %d " % i * 100)) == b"piece %d " % i * 100
    finally:
        client.close()


def test_data_then_a_tcp_fin_is_served_and_the_end_of_stream_seen(echo_each_backend: Server,
                                                                  pki: Pki) -> None:
    client = BioClient(echo_each_backend.address, pki.client_context())
    try:
        client.sock.sendall(client.encrypt([b"last words"]))
        client.sock.shutdown(socket.SHUT_WR)  # a FIN without close_notify, with the data
        assert client.read(10) == b"last words"
        assert client.read(1, timeout=5) == b""  # the server closed: it saw the FIN
        assert wait_for(lambda: echo_each_backend.stats()["active"] == 0, 5.0)
    finally:
        client.close()


class _PausedAtFirst(BaseHandler):
    """Echo, with reading paused from ``connection_made`` for 50 ms."""

    def connection_made(self, conn: Connection) -> None:
        conn.pause_reading()
        conn.call_later(0.05, conn.resume_reading)

    def data_received(self, conn: Connection, data: bytes) -> None:
        conn.write(data)


@pytest.mark.parametrize("handler", [EchoHandler, _PausedAtFirst], ids=["echo", "paused-at-first"])
@pytest.mark.parametrize("backend", __import__("reactor").available_backends())
def test_records_sent_with_the_clients_finished_are_served(pki: Pki, backend: str,
                                                            handler: type[BaseHandler]) -> None:
    # The handshake's last read brings records too: they are in the engine before
    # ``connection_made``, and no further edge announces them (nor after a pause).
    with Server(handler=handler, bind="127.0.0.1:0", workers=1, backend=backend,
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        client = BioClient(srv.address, pki.client_context(), hold_finished=True)
        try:
            pieces = [b"<%04d>" % i for i in range(100)]
            client.burst(pieces)  # the client's Finished, then 100 records, in one send
            expected = b"".join(pieces)
            assert client.read(len(expected)) == expected
        finally:
            client.close()


def test_a_close_notify_alone_ends_the_connection(echo_each_backend: Server, pki: Pki) -> None:
    client = BioClient(echo_each_backend.address, pki.client_context())
    try:
        client.burst([b"ping"])
        assert client.read(4) == b"ping"
        try:
            client.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        client.sock.sendall(client.out.read())  # close_notify, in a read of its own
        assert client.read(1, timeout=5) == b""  # the server answered it and closed
        assert wait_for(lambda: echo_each_backend.stats()["active"] == 0, 5.0)
    finally:
        client.close()
