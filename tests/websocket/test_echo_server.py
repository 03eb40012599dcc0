"""End to end: ``WebSocketHandler`` under ``Server``, driven by the ``websockets`` client.

An echo subclass over loopback (127.0.0.1, port 0): text, binary, fragmented messages,
ping, close codes both ways, permessage-deflate, 1009 for a message over ``max_size``,
1007 for bad UTF-8 and the refusals of the handshake (raw sockets where the client
library will not misbehave on purpose).
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from mioreactor.workers import Server
from mioreactor.workers.core.handler import Connection
from mioreactor.workers.websocket import (
    HandshakeError,
    UpgradeRequest,
    WebSocketHandler,
    frame_bytes,
)
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(30)

CLOSES: list[tuple[int, str]] = []


class Echo(WebSocketHandler):
    def on_connect(self, conn: Connection, target: str, request: UpgradeRequest) -> str | None:
        if target == "/forbidden":
            raise HandshakeError(403, "not here")
        return "echo" if "echo" in request.subprotocols else None

    def on_message(self, conn: Connection, data: str | bytes) -> None:
        if data == "close me":
            self.close(conn, 4002, "as asked")
        else:
            self.send(conn, data)

    def on_close(self, conn: Connection, code: int, reason: str) -> None:
        CLOSES.append((code, reason))


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server(handler=functools.partial(Echo, max_size=4096), bind="127.0.0.1:0", workers=2)
    srv.start()
    yield srv
    srv.stop(timeout=5)


def url(server: Server, path: str = "/") -> str:
    host, port = server.address
    return f"ws://{host}:{port}{path}"


@pytest.mark.parametrize("compression", ["deflate", None])
def test_text_binary_and_fragmented_messages_echo(server: Server, compression: str | None) -> None:
    with connect(url(server), compression=compression, subprotocols=["echo"]) as ws:
        assert ws.subprotocol == "echo"
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        blob = os.urandom(3000)
        ws.send(blob)
        assert ws.recv(timeout=5) == blob
        ws.send(["frag", "men", "ted ✓"])
        assert ws.recv(timeout=5) == "fragmented ✓"
        ws.send("a" * 4000)  # compressible: deflate carries it small
        assert ws.recv(timeout=5) == "a" * 4000
        assert ws.ping(b"hi").wait(5)


def test_deflate_is_negotiated_by_default(server: Server) -> None:
    with connect(url(server)) as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")


def test_a_client_close_code_reaches_the_app_and_is_echoed(server: Server) -> None:
    CLOSES.clear()
    with connect(url(server)) as ws:
        ws.send("x")
        ws.recv(timeout=5)
        ws.close(4001, "bye")
        assert ws.close_code == 4001
    _wait(lambda: (4001, "bye") in CLOSES)


def test_a_server_close_carries_its_code(server: Server) -> None:
    with connect(url(server)) as ws:
        ws.send("close me")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
        assert ws.close_code == 4002 and ws.close_reason == "as asked"


@pytest.mark.parametrize("compression", ["deflate", None])
def test_a_message_over_max_size_closes_with_1009(server: Server, compression: str | None) -> None:
    with connect(url(server), compression=compression) as ws:
        ws.send(b"\x00" * 5000)  # 4096 allowed; compressed it is tiny, inflated it is not
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_a_refused_handshake_gives_the_apps_status(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(url(server, "/forbidden"), open_timeout=5)
    assert info.value.response.status_code == 403


def _raw_upgrade(server: Server, version: str = "13") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(server.address, timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: " + version.encode() + b"\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return sock, data


def _read_close(sock: socket.socket, rest: bytes) -> int:
    data = rest
    while len(data) < 4:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data[0] == 0x88, data
    return int.from_bytes(data[2:4], "big")


def test_bad_utf8_closes_with_1007(server: Server) -> None:
    sock, head = _raw_upgrade(server)
    with sock:
        assert head.startswith(b"HTTP/1.1 101 ")
        rest = head.split(b"\r\n\r\n", 1)[1]
        sock.sendall(frame_bytes(1, b"ok \xff\xfe", mask=b"abcd"))
        assert _read_close(sock, rest) == 1007


def test_an_unmasked_frame_closes_with_1002(server: Server) -> None:
    sock, head = _raw_upgrade(server)
    with sock:
        sock.sendall(frame_bytes(1, b"plain"))
        assert _read_close(sock, head.split(b"\r\n\r\n", 1)[1]) == 1002


def test_another_protocol_version_gets_426(server: Server) -> None:
    sock, head = _raw_upgrade(server, version="8")
    with sock:
        assert head.startswith(b"HTTP/1.1 426 ")
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in head


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")
