"""ASGI 3 over raw sockets: the scope, each message type, streaming, flow control, errors."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mioreactor import Server
from mioreactor.workers.http import HttpConfig

pytestmark = pytest.mark.timeout(30)

SEEN: list[dict[str, Any]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "hi"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    SEEN.append(scope)
    if path == "/echo":  # streams the body back as it arrives
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            m = await receive()
            await send({"type": "http.response.body", "body": m.get("body", b""), "more_body": True})
            if not m.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/late-boom":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("late boom")
    if path == "/sleep":
        await asyncio.sleep(0.05)
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
        return
    if path == "/big":  # 8 MiB in 64 KiB pieces: each send waits while the client lags
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(128):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/wait-disconnect":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await receive()  # the (empty) request body
        SEEN.append(await receive())  # blocks until the client goes
        return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    text = f"{scope['method']} {path} {len(body)} {scope.get('state', {}).get('greeting')}"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-test", b"1")]})
    await send({"type": "http.response.body", "body": text.encode()})


@pytest.fixture
def server() -> Iterator[Server]:
    SEEN.clear()
    with Server(app, bind="127.0.0.1:0", workers=2, http=HttpConfig(send_timeout=5)) as s:
        yield s


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=10)
    return sock


def read_response(sock: socket.socket, buf: bytearray | None = None) -> tuple[bytes, bytes]:
    """One response (Content-Length, chunked, or to EOF) -> (head, body)."""
    data = buf if buf is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(bytes(data))
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    data[:] = rest
    lower = head.lower()
    if b"content-length:" in lower:
        n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(data) < n:
            data += sock.recv(65536)
        body = bytes(data[:n])
        data[:] = data[n:]
        return head, body
    if b"transfer-encoding: chunked" in lower:
        body = bytearray()
        while True:
            while b"\r\n" not in data:
                data += sock.recv(65536)
            line, _, _ = bytes(data).partition(b"\r\n")
            size = int(line, 16)
            need = len(line) + 2 + size + 2
            while len(data) < need:
                data += sock.recv(65536)
            body += data[len(line) + 2 : len(line) + 2 + size]
            data[:] = data[need:]
            if size == 0:
                return head, bytes(body)
    return head, b""


def test_the_scope_has_every_key_of_the_http_spec(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /a%20b/%C3%A9?x=1&y=%20 HTTP/1.1\r\nHost: example\r\nX-Mixed-Case: V\r\n\r\n")
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == "GET /a b/é 0 hi".encode()
    scope = SEEN[0]
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "http"
    assert scope["raw_path"] == b"/a%20b/%C3%A9"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == ""
    assert (b"x-mixed-case", b"V") in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == server.address
    assert scope["state"] == {"greeting": "hi"}
    assert "http.response.pathsend" in scope["extensions"]


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        bodies = [read_response(sock, buf)[1] for _ in range(3)]
    assert bodies == [b"GET /sleep 0 hi", b"POST /p 3 hi", b"GET /three 0 hi"]


def test_a_chunked_request_body_streams_back_chunked(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.05)
        sock.sendall(b"6\r\n world\r\n0\r\n\r\n")
        head, body = read_response(sock)
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"hello world"


def test_expect_100_continue_is_sent_on_the_first_receive(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        _, body = read_response(sock)
    assert body == b"POST /p 4 hi"


def test_head_and_204_carry_no_body(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        data = sock.recv(65536)
    first, _, second = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"Content-Length: 12" in first
    assert second.startswith(b"HTTP/1.1 204") and second.endswith(b"\r\n\r\n")
    assert b"Content-Length" not in second


def test_an_app_error_before_the_response_is_a_500_and_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "mioreactor.asgi"), connect(server) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 500")
    assert "error in ASGI application for GET /boom" in caplog.text


def test_an_app_error_after_the_head_closes_the_connection(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /late-boom HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # aborted, as the WSGI side does: what was in flight may be lost
    assert not data.endswith(b"0\r\n\r\n")  # never a complete response


def test_a_slow_client_pauses_send_and_gets_everything(server: Server) -> None:
    with connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # the app must be waiting in send now, not buffering 8 MiB
        _, body = read_response(sock)
    assert len(body) == 128 * 65536


def test_the_app_sees_http_disconnect_when_the_client_leaves(server: Server) -> None:
    sock = connect(server)
    sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(s.get("type") == "http.disconnect" for s in SEEN):
        time.sleep(0.02)
    assert {"type": "http.disconnect"} in SEEN


def test_a_malformed_request_is_400_from_the_shared_parser(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        head, _ = read_response(sock)
    assert head.startswith(b"HTTP/1.1 400")


def test_lifespan_startup_failure_stops_the_server_with_its_message() -> None:
    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    from mioreactor.workers.asgi import LifespanError

    with pytest.raises(LifespanError, match="no database"):
        Server(failing, bind="127.0.0.1:0").start()


def test_lifespan_off_never_calls_the_app_with_a_lifespan_scope() -> None:
    seen: list[str] = []

    async def tiny(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with Server(tiny, bind="127.0.0.1:0", lifespan="off") as s, connect(s) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.recv(1000).endswith(b"ok")
    assert seen == ["http"]


def test_interface_detection_tells_wsgi_asgi_and_handlers_apart() -> None:
    from mioreactor.workers import EchoHandler
    from mioreactor.workers.server.interface import detect_interface

    class Asgi3:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    class Asgi2:
        def __init__(self, scope: Any) -> None: ...

        async def __call__(self, receive: Any, send: Any) -> None: ...

    def wsgi(environ: Any, start_response: Any) -> Any: ...

    assert detect_interface(app) == "asgi"
    assert detect_interface(Asgi3()) == "asgi"
    assert detect_interface(Asgi2) == "asgi"
    assert detect_interface(wsgi) == "wsgi"
    assert detect_interface(EchoHandler) == "handler"
    assert detect_interface(lambda worker: EchoHandler(worker)) == "handler"


def test_an_asgi2_class_is_served() -> None:
    class Asgi2:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            if self.scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"two"})

    with Server(Asgi2, bind="127.0.0.1:0") as s, connect(s) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.recv(1000).endswith(b"two")


async def _mutating_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    seen = sorted(scope["extensions"])  # what this request was given, before changing it
    scope["extensions"]["client.said"] = {"path": scope["path"]}  # an app may mutate its scope
    scope["asgi"]["spoiled"] = True
    body = ",".join(seen).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("express", [True, False])
def test_what_an_app_does_to_one_scope_no_other_request_sees(express: bool) -> None:
    # The scope's dicts are each request's own: a shared one would carry one client's
    # request into every later scope (issue 19's rule, for ASGI).
    with Server(_mutating_app, bind="127.0.0.1:0", http=HttpConfig(express=express)) as server:
        host, port = server.address
        answers = []
        for _ in range(3):  # a new connection each time, and on one connection
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n" * 2)
                data = b""
                while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"pathsend"):
                    chunk = s.recv(65536)
                    assert chunk
                    data += chunk
                answers.append(data)
    for data in answers:
        assert data.count(b"\r\n\r\nhttp.response.pathsend") == 2, data


async def _where_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = f"{scope['root_path']}|{scope['path']}|{scope['raw_path'].decode()}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("express", [True, False])
def test_root_path_is_in_the_scope_and_in_front_of_the_path_as_uvicorn_gives_it(
    express: bool,
) -> None:
    # uvicorn --root-path /api behind a proxy: ASGI's path includes root_path. A proxy
    # that strips the prefix sends /items, one that keeps it /api/items: the app sees
    # /api/items either way.
    config = HttpConfig(root_path="/api", express=express)
    with Server(_where_app, bind="127.0.0.1:0", http=config) as server:
        host, port = server.address
        for target in ("/items", "/api/items", "/api"):
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(f"GET {target}?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            body = data.partition(b"\r\n\r\n")[2].decode()
            want = "/api/items" if target != "/api" else "/api"
            assert body == f"/api|{want}|{want}", (target, body)
