"""Echo over TCP and a Unix socket, on every backend; large pipelined writes arrive whole.

8 MB is far beyond the socket buffers on both sides, so the server's ``write()``
must buffer, pause reading at the high-water mark (``EchoHandler.pause_writing``),
flush on writable events and resume reading (which reads at once: the edge was
consumed while paused). The client writes and reads concurrently, as a pipelining
client does, and the bytes must come back whole and in order.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mioreactor.workers import EchoHandler, Server

from tests.workers.util import echo_once, recv_exactly, wait_for

BIG = 8 * 1024 * 1024


@pytest.fixture(params=["tcp", "unix"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "unix":
        return "unix:" + str(tmp_path / "echo.sock")
    return "127.0.0.1:0"


@pytest.fixture(params=[None, "fallback"], ids=["default-backend", "fallback"])
def server(request: pytest.FixtureRequest, transport: str) -> Iterator[Server]:
    srv = Server(handler=EchoHandler, bind=transport, workers=2, backend=request.param)
    srv.start()
    yield srv
    srv.stop(timeout=5)


def connect(address: Any) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address)
    return sock


def test_echo_answers_many_clients(server: Server) -> None:
    for i in range(20):
        payload = b"hello %d" % i
        assert echo_once(server.address, payload) == payload
    assert wait_for(lambda: server.stats()["closed"] == 20, 2.0)


def test_eight_megabytes_of_pipelined_writes_come_back_whole_and_in_order(server: Server) -> None:
    data = os.urandom(BIG)
    chunk = 64 * 1024
    with connect(server.address) as sock:
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                view = memoryview(data)
                for off in range(0, BIG, chunk):  # many writes, no waiting for answers
                    sock.sendall(view[off : off + chunk])
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        t = threading.Thread(target=writer, name="test-writer")
        t.start()
        got = recv_exactly(sock, BIG)
        t.join(10)
        assert not errors
        assert len(got) == BIG
        assert got == data
        # The connection is still usable afterwards (reading was resumed).
        sock.sendall(b"after")
        assert recv_exactly(sock, 5) == b"after"


def test_a_peer_that_half_closes_gets_its_echo_then_eof(server: Server) -> None:
    with connect(server.address) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        assert b"".join(chunks) == b"last words"
    assert wait_for(lambda: server.stats()["active"] == 0, 2.0)


def test_unix_socket_file_is_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    with Server(handler=EchoHandler, bind=f"unix:{path}", workers=1) as srv:
        assert path.exists()
        assert echo_once(str(path), b"x") == b"x"
        assert srv.address == str(path)
    assert not path.exists()
