"""ASGI WebSocket (spec 2.4) over the reactor: the websockets client, raw frames, TLS."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mioreactor import Server
from mioreactor.workers.websocket import frame_bytes

pytestmark = pytest.mark.timeout(30)

websockets = pytest.importorskip("websockets")

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

SEEN: list[Any] = []  # what the app saw, in order (scopes, disconnects)
ENDED = threading.Event()  # the app's echo loop ended
LEFT: dict[int, bytes] = {}  # bytes that came with the 101, by socket descriptor


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        if scope["path"] == "/slow":
            await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain http"})
        return
    if scope["type"] != "websocket":
        return
    path = scope["path"]
    SEEN.append(scope)
    assert (await receive())["type"] == "websocket.connect"
    if path == "/deny":
        await send({"type": "websocket.close"})
        SEEN.append(await receive())
        return
    if path == "/teapot":
        await send({"type": "websocket.http.response.start", "status": 418,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"tea"})
        return
    if path == "/boom-early":
        raise RuntimeError("boom before accept")
    if path == "/nothing":
        return
    offered = scope["subprotocols"]
    await send({"type": "websocket.accept",
                "subprotocol": "chat.v2" if "chat.v2" in offered else None,
                "headers": [(b"x-hello", b"1")]})
    if path == "/bye":  # the server closes first, with a code and a reason
        await send({"type": "websocket.send", "text": "goodbye"})
        await send({"type": "websocket.close", "code": 4000, "reason": "see you"})
        SEEN.append(await receive())
        return
    if path == "/boom":
        raise RuntimeError("boom after accept")
    if path == "/flood":  # 64 MiB while the client does not read: send must wait
        for i in range(1024):
            await send({"type": "websocket.send", "bytes": b"x" * 65536})
            SEEN.append(i)
        await send({"type": "websocket.close"})
        return
    if path == "/return":
        await send({"type": "websocket.send", "text": "only this"})
        return
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                SEEN.append(message)
                return
            if message.get("text") is not None:
                text = message["text"]
                if path == "/json":
                    text = json.dumps({"echo": json.loads(text)})
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    finally:
        ENDED.set()


def url(server: Server, path: str = "/", scheme: str = "ws") -> str:
    host, port = server.address
    return f"{scheme}://{host}:{port}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    SEEN.clear()
    ENDED.clear()
    with Server(app, bind="127.0.0.1:0", workers=2, ws_max_size=4096, lifespan="off") as s:
        yield s


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def raw_upgrade(server: Server, path: str = "/", extra: bytes = b"") -> socket.socket:
    """A plain socket after a successful handshake (no extensions offered)."""
    sock = socket.create_connection(server.address, timeout=10)
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n" + extra)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    LEFT[sock.fileno()] = head[head.index(b"\r\n\r\n") + 4:]
    return sock


def read_close(sock: socket.socket) -> int:
    """Read frames until the server's close; its code."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF without a close frame: {data!r}")
        data += chunk
        while len(data) >= 2:
            n = data[1] & 0x7F
            start = 2 + {126: 2, 127: 8}.get(n, 0)
            if n == 126:
                n = int.from_bytes(data[2:4], "big")
            elif n == 127:
                n = int.from_bytes(data[2:10], "big")
            if len(data) < start + n:
                break
            if data[0] & 0x0F == 8:
                return int.from_bytes(data[start:start + 2], "big")
            data = data[start + n:]


def client_frame(opcode: int, payload: bytes) -> bytes:
    return frame_bytes(opcode, payload, mask=os.urandom(4))


def test_text_and_bytes_are_echoed_and_the_scope_is_the_websocket_scope(server: Server) -> None:
    with connect(url(server, "/chat?room=1")) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"
        assert ws.response.headers["x-hello"] == "1"
    scope = SEEN[0]
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["scheme"] == "ws" and scope["http_version"] == "1.1"
    assert scope["path"] == "/chat" and scope["raw_path"] == b"/chat"
    assert scope["query_string"] == b"room=1" and scope["root_path"] == ""
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == server.address
    assert scope["subprotocols"] == []
    assert "websocket.http.response" in scope["extensions"]
    assert (b"upgrade", b"websocket") in scope["headers"]
    assert "method" not in scope


def test_permessage_deflate_is_negotiated_by_default_and_can_be_turned_off() -> None:
    with Server(app, bind="127.0.0.1:0", workers=1, lifespan="off") as s:
        with connect(url(s)) as ws:
            assert "permessage-deflate" in ws.response.headers.get("sec-websocket-extensions", "")
            ws.send("z" * 3000)  # compressed both ways
            assert ws.recv(timeout=5) == "z" * 3000
    with Server(app, bind="127.0.0.1:0", workers=1, lifespan="off",
                ws_per_message_deflate=False) as s:
        with connect(url(s)) as ws:
            assert "sec-websocket-extensions" not in ws.response.headers


def test_json_messages_round_trip(server: Server) -> None:
    with connect(url(server, "/json")) as ws:
        ws.send(json.dumps({"n": [1, 2, 3]}))
        assert json.loads(ws.recv(timeout=5)) == {"echo": {"n": [1, 2, 3]}}


def test_the_app_chooses_a_subprotocol_from_the_client_offers(server: Server) -> None:
    with connect(url(server), subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v2"
    assert SEEN[0]["subprotocols"] == ["chat.v1", "chat.v2"]


def test_close_before_accept_is_a_403_and_the_app_sees_a_disconnect(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(url(server, "/deny"))
    assert info.value.response.status_code == 403
    wait_for(lambda: len(SEEN) == 2)
    assert SEEN[1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


def test_the_http_response_extension_denies_with_the_apps_response(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(url(server, "/teapot"))
    assert info.value.response.status_code == 418
    assert info.value.response.body == b"no tea"
    assert info.value.response.headers["content-type"] == "text/plain"


def test_an_app_that_fails_or_returns_before_accepting_gives_a_500(server: Server) -> None:
    for path in ("/boom-early", "/nothing"):
        with pytest.raises(InvalidStatus) as info:
            connect(url(server, path))
        assert info.value.response.status_code == 500


def test_a_bad_handshake_is_refused_before_the_app_runs(server: Server) -> None:
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 8\r\n\r\n")
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 426 ") and b"Sec-WebSocket-Version: 13" in reply
    assert SEEN == []


def test_the_server_closes_first_with_the_apps_code_and_reason(server: Server) -> None:
    with connect(url(server, "/bye")) as ws:
        assert ws.recv(timeout=5) == "goodbye"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "see you")
    wait_for(lambda: len(SEEN) == 2)
    assert SEEN[1]["type"] == "websocket.disconnect" and SEEN[1]["code"] == 4000


def test_the_app_sees_the_clients_close_code(server: Server) -> None:
    with connect(url(server)) as ws:
        ws.send("x")
        ws.recv(timeout=5)
        ws.close(4001, "leaving")
    wait_for(ENDED.is_set)
    assert SEEN[-1] == {"type": "websocket.disconnect", "code": 4001, "reason": "leaving"}


def test_a_client_that_vanishes_is_a_1006_disconnect(server: Server) -> None:
    sock = raw_upgrade(server)
    sock.close()
    wait_for(ENDED.is_set)
    assert SEEN[-1]["code"] == 1006


def test_a_message_over_max_size_is_closed_with_1009(server: Server) -> None:
    with connect(url(server), max_size=None) as ws:
        ws.send("y" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    wait_for(ENDED.is_set)
    assert SEEN[-1]["code"] == 1009


def test_invalid_utf8_is_closed_with_1007(server: Server) -> None:
    sock = raw_upgrade(server)
    sock.sendall(client_frame(1, b"\xff\xfe bad"))
    assert read_close(sock) == 1007
    sock.close()
    wait_for(ENDED.is_set)
    assert SEEN[-1]["code"] == 1007


def test_frames_sent_with_the_handshake_are_kept_for_after_the_accept(server: Server) -> None:
    sock = raw_upgrade(server, extra=client_frame(1, b"early"))
    data = LEFT[sock.fileno()]
    while len(data) < 7:
        data += sock.recv(4096)
    assert data[:7] == b"\x81\x05early"
    sock.close()


HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


def read_until(sock: socket.socket, data: bytes, want: bytes) -> bytes:
    """Read until ``want`` is in what came; all of it."""
    while want not in data:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before {want!r}: {data!r}"
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_the_handshake_and_frames_in_one_write_are_all_read_in_order(server: Server) -> None:
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(HANDSHAKE + b"\r\n" + client_frame(1, b"one") + client_frame(2, b"two")
                     + client_frame(1, b"three"))
        data = read_until(sock, b"", b"three")
        assert data.startswith(b"HTTP/1.1 101 ")
        assert data.endswith(b"\r\n\r\n\x81\x03one\x82\x03two\x81\x05three")
        sock.sendall(client_frame(8, (4001).to_bytes(2, "big")))
        assert read_close(sock) == 4001
    wait_for(ENDED.is_set)
    assert SEEN[-1]["code"] == 4001
    assert server.stats()["websocket"]["messages_in"] == 3


@pytest.mark.parametrize("path", ["/", "/slow"])
def test_an_upgrade_pipelined_behind_a_request_reads_the_frames_sent_after_it(
    server: Server, path: str
) -> None:
    # Reading pauses while a pipelined request waits for the one before it; the
    # upgrade, once its turn came, left it paused (/slow) or the request before it,
    # complete in its task's first step, closed the connection under it (/).
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
                     + HANDSHAKE + b"\r\n")
        data = b""
        if path == "/":
            data = read_until(sock, data, b"101 Switching Protocols")
        else:
            time.sleep(0.1)  # a read of its own, while the slow response is under way
        sock.sendall(client_frame(1, b"after"))
        data = read_until(sock, data, b"after")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"plain http" in data
    assert data.endswith(b"\x81\x05after")


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "body-later"])
def test_an_upgrade_with_a_body_is_refused_and_no_byte_after_it_is_read(
    server: Server, split: bool
) -> None:
    # RFC 9110 9.3.1: content in a GET has no meaning and may be refused; the new
    # protocol would begin only after it (RFC 9110 7.8). Refused with 400 and closed,
    # so the frame and the request after it are read as neither.
    head = HANDSHAKE + b"Content-Length: 5\r\n\r\n"
    after = b"hello" + client_frame(1, b"frame") + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(server.address, timeout=10) as sock:
        if split:
            sock.sendall(head)
            time.sleep(0.05)
            try:
                sock.sendall(after)
            except OSError:
                pass  # refused already
        else:
            sock.sendall(head + after)
        data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 400 ") and data.count(b"HTTP/1.1") == 1, data
    assert SEEN == []  # the app never saw it


def test_a_chunked_upgrade_is_refused_by_the_parser() -> None:
    with Server(app, bind="127.0.0.1:0", workers=1, lifespan="off") as s:
        SEEN.clear()
        with socket.create_connection(s.address, timeout=10) as sock:
            sock.sendall(HANDSHAKE + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                         + client_frame(1, b"frame"))
            data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 501 ") and data.count(b"HTTP/1.1") == 1, data
    assert SEEN == []


def test_with_ws_none_an_upgrade_with_a_body_is_one_plain_request_and_the_last() -> None:
    with Server(app, bind="127.0.0.1:0", workers=1, lifespan="off", ws="none") as s:
        with socket.create_connection(s.address, timeout=10) as sock:
            sock.sendall(HANDSHAKE + b"Content-Length: 5\r\n\r\nhello" + client_frame(1, b"x")
                         + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.count(b"HTTP/1.1") == 1, data
    assert b"Connection: close\r\n" in data and data.endswith(b"plain http")


def test_an_app_error_after_accept_closes_with_1011(server: Server) -> None:
    with connect(url(server, "/boom")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011


def test_an_app_that_returns_after_accept_closes_with_1000(server: Server) -> None:
    with connect(url(server, "/return")) as ws:
        assert ws.recv(timeout=5) == "only this"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1000


def test_a_client_that_does_not_read_pauses_the_apps_send(server: Server) -> None:
    sock = raw_upgrade(server, "/flood")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    time.sleep(0.5)
    sent = len(SEEN) - 1
    assert sent < 256, f"{sent} MiB-sized sends went through while the client read nothing"
    total = 0
    while True:  # now read it all: the app goes on to the end
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
        if SEEN[-1] == 1023 and total >= 1024 * 65536:
            break
    assert total >= 1024 * 65536
    sock.close()


def test_an_app_that_does_not_receive_pauses_reading() -> None:
    hold = threading.Event()
    got: list[int] = []

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while not hold.is_set():
            import asyncio

            await asyncio.sleep(0.01)
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            got.append(len(m["bytes"]))

    with Server(slow, bind="127.0.0.1:0", workers=1, lifespan="off") as s:
        sock = raw_upgrade(s)
        sock.setblocking(False)
        frame = client_frame(2, b"m" * 1024)
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # until the kernel buffers are full
            try:
                sent += sock.send(frame)
            except BlockingIOError:
                time.sleep(0.05)
                try:
                    sent += sock.send(frame)
                except BlockingIOError:
                    break
        assert time.monotonic() < deadline, "the server kept reading for a slow app"
        assert sent < 64 << 20
        hold.set()
        sock.setblocking(True)
        sock.close()


def test_keepalive_pings_close_a_silent_client_with_1011() -> None:
    with Server(app, bind="127.0.0.1:0", workers=1, lifespan="off", ws_ping_interval=0.2,
                ws_ping_timeout=0.2) as s:
        with connect(url(s)) as ws:  # answers pings by itself
            time.sleep(0.8)
            ws.send("alive")
            assert ws.recv(timeout=5) == "alive"
        sock = raw_upgrade(s)  # never answers
        ping = sock.recv(2)
        assert ping[0] == 0x89  # a ping
        sock.recv(ping[1] & 0x7F, socket.MSG_WAITALL)  # its payload
        assert read_close(sock) == 1011
        sock.close()


def test_stop_closes_open_websockets_with_1001(server: Server) -> None:
    stopper = threading.Thread(target=server.stop)
    with connect(url(server)) as ws:
        ws.send("x")
        ws.recv(timeout=5)
        stopper.start()
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    stopper.join(10)
    assert not stopper.is_alive()
    assert SEEN[-1]["code"] == 1001


def test_ws_none_gives_upgrade_requests_to_the_app_as_http() -> None:
    with Server(app, bind="127.0.0.1:0", workers=1, lifespan="off", ws="none") as s:
        with pytest.raises(InvalidStatus) as info:
            connect(url(s))
        assert info.value.response.status_code == 200
        assert info.value.response.body == b"plain http"


def test_websocket_counters_in_stats(server: Server) -> None:
    with connect(url(server)) as ws:
        for _ in range(3):
            ws.send("n")
            ws.recv(timeout=5)
    wait_for(ENDED.is_set)
    wait_for(lambda: server.stats()["websocket"]["closed"] == 1)
    counts = server.stats()["websocket"]
    assert counts == {"opened": 1, "closed": 1, "messages_in": 3, "messages_out": 3}
    assert server.stats()["requests"]["1xx"] == 1


def test_wss_over_tls(tmp_path: Any) -> None:
    trustme = pytest.importorskip("trustme")
    import ssl

    from mioreactor.workers.tls.context import TlsConfig

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    tls = TlsConfig(certfile=str(tmp_path / "both.pem"))
    with Server(app, bind="127.0.0.1:0", workers=1, lifespan="off", ssl=tls) as s:
        SEEN.clear()
        with connect(url(s, "/secure", "wss"), ssl=client) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=5) == "over tls"
        assert SEEN[0]["scheme"] == "wss"
