"""A closed connection is freed by reference counting: it leaves no garbage cycle.

Why it matters (docs/design.md, "No garbage cycles"): a connection whose objects
refer to each other (the connection and its deadline, a parser and the protocol whose
callbacks it holds, a handler's state and its responder) is freed only by CPython's
cyclic collector. Under ``Connection: close`` load that is tens of thousands of
cycles a second: the collector runs its young generations all the time, objects a
timer kept alive reach the old one, and each full pass stops the process for ~10 ms,
which was the whole p99 of the close benchmark (9.5 ms, against 3.0 ms with the
collector off).

Each test serves every shape of traffic we know of (whole, pipelined, bodies,
chunked, streamed, refused, cut off mid-head and mid-body, TLS, WebSocket), lets the
connections close, and asks the collector what it would free: nothing of ours may be
in the list. The server runs in this process, so ``gc.DEBUG_SAVEALL`` sees it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import gc
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mioreactor import Server

from tests.workers.util import recv_all

pytestmark = pytest.mark.timeout(60)

Shape = Callable[[Callable[[], socket.socket]], None]
ROUNDS = 5


# -- apps --------------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the app fails (a test of the 500 path)")
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d\n" % i for i in range(3))
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body) + 2))])
    return [b"ok", body]


async def asgi_app(scope: dict[str, Any], receive: Callable[..., Any],
                   send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text"),
                        "bytes": message.get("bytes")})
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"part %d\n" % i,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(0.05)
    if scope["path"] == "/boom":
        raise RuntimeError("the app fails (a test of the 500 path)")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % (len(body) + 2))]})
    await send({"type": "http.response.body", "body": b"ok" + body})


# -- client shapes ------------------------------------------------------------------------


def _read_responses(sock: socket.socket, count: int) -> bytes:
    """Read until ``count`` responses ending in ``ok`` (the bodies here) arrived."""
    sock.settimeout(5)
    data = b""
    while data.count(b"HTTP/1.1 200") < count or not data.endswith(b"ok"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def close_get(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 200")


def keepalive_then_client_closes(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        for _ in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert _read_responses(s, 1).startswith(b"HTTP/1.1 200")


def pipelined(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 4)
        assert _read_responses(s, 4).count(b"HTTP/1.1 200") == 4


def post_body(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        body = b"x" * 20000
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert recv_all(s).startswith(b"HTTP/1.1 200")


def chunked_body(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                  b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert recv_all(s).endswith(b"okhello")


def streamed(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert b"part 2" in recv_all(s)


def http10(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 200")


def refused(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 400")


def cut_mid_head(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: ")
        time.sleep(0.01)


def cut_mid_body(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        time.sleep(0.01)


def connect_only(connect: Callable[[], socket.socket]) -> None:
    with connect():
        pass


def body_too_large(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\nabc")
        assert recv_all(s).startswith(b"HTTP/1.1 413")


def target_too_long(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 414")


def error_after_pipelined(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nBad Header\r\n\r\n")
        answer = recv_all(s)
        assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in answer


def reset_mid_head(connect: Callable[[], socket.socket]) -> None:
    """The client resets (SO_LINGER 0): the server's read fails with an error."""
    s = connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
    time.sleep(0.005)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.005)


def app_fails(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 500")


HTTP_SHAPES: list[Shape] = [
    close_get, keepalive_then_client_closes, pipelined, post_body, chunked_body, streamed,
    http10, refused, cut_mid_head, cut_mid_body, connect_only, body_too_large,
    target_too_long, error_after_pipelined, reset_mid_head, app_fails,
]


def _ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _ws_open(s: socket.socket) -> None:
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    s.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 101"), data


def websocket_echo_and_close(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        _ws_open(s)
        s.sendall(_ws_frame(b"hi"))
        assert s.recv(4096)[2:4] == b"hi"
        s.sendall(_ws_frame(b"\x03\xe8", opcode=0x8))
        recv_all(s)


def websocket_dropped(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        _ws_open(s)
        s.sendall(_ws_frame(b"hi"))
        assert s.recv(4096)[2:4] == b"hi"


def asgi_slow_dropped(connect: Callable[[], socket.socket]) -> None:
    """The client goes while the app is still awaiting: the cycle ends after the close."""
    with connect() as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.08)


def websocket_protocol_error(connect: Callable[[], socket.socket]) -> None:
    """An unmasked client frame: the server closes with 1002."""
    with connect() as s:
        _ws_open(s)
        s.sendall(bytes([0x81, 0x02]) + b"hi")
        closing = recv_all(s)
        assert closing[:1] == b"\x88" and closing[2:4] == b"\x03\xea", closing


ASGI_SHAPES = [*HTTP_SHAPES, websocket_echo_and_close, websocket_dropped, asgi_slow_dropped,
               websocket_protocol_error]


# -- the check ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _logs_not_kept() -> Iterator[None]:
    """pytest keeps a test's log records, each with its ``exc_info``: a logged error
    would keep its connection's objects reachable and hide their cycles from the check."""
    logger = logging.getLogger("mioreactor")
    was = logger.propagate
    quiet = logging.NullHandler()
    logger.addHandler(quiet)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(quiet)
        logger.propagate = was


def _ours(obj: object) -> bool:
    module = getattr(type(obj), "__module__", "") or ""
    return module.startswith(("mioreactor", "httptools", "ssl", "socket", "_ssl", "_socket"))


@contextmanager
def _saved_garbage() -> Iterator[list[object]]:
    """What the cyclic collector found unreachable meanwhile (and would have freed)."""
    found: list[object] = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(o for o in gc.garbage if _ours(o))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def _describe(garbage: list[object]) -> str:
    counts = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage)
    return ", ".join(f"{n} {name}" for name, n in counts.most_common(12))


def _wait_closed(server: Server) -> None:
    deadline = time.monotonic() + 10
    while server.stats(listen_queue=False)["connections"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats(listen_queue=False)["connections"] == 0


def _check(server: Server, connect: Callable[[], socket.socket], shapes: list[Shape]) -> None:
    for shape in shapes:  # warm: pools filled, modules imported, caches made
        shape(connect)
    _wait_closed(server)
    with _saved_garbage() as garbage:
        for _ in range(ROUNDS):
            for shape in shapes:
                shape(connect)
        _wait_closed(server)
        time.sleep(0.05)  # the workers' last touches of the closed connections
    assert not garbage, f"closed connections left cycles: {_describe(garbage)}"


def _tcp(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=5)


def _tls(port: int, ctx: ssl.SSLContext) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    return connect


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, ssl.SSLContext]:
    trustme = pytest.importorskip("trustme", reason="trustme (a test dependency) makes the certificate")
    d: Path = tmp_path_factory.mktemp("cycles-pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return str(d / "cert.pem"), str(d / "key.pem"), ctx


@pytest.mark.parametrize("express", [True, False], ids=["lane", "no-lane"])
def test_wsgi_connections_leave_no_cycles(express: bool) -> None:
    from mioreactor.workers.http import HttpConfig

    with Server(wsgi_app, bind="127.0.0.1:0", workers=2,
                http=HttpConfig(express=express)) as server:
        _check(server, _tcp(server.address[1]), HTTP_SHAPES)


def test_asgi_connections_leave_no_cycles() -> None:
    with Server(asgi_app, bind="127.0.0.1:0", workers=2) as server:
        _check(server, _tcp(server.address[1]), ASGI_SHAPES)


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_tls_connections_leave_no_cycles(
    kind: str, certificate: tuple[str, str, ssl.SSLContext],
) -> None:
    from mioreactor.workers.tls.context import TlsConfig

    cert, key, ctx = certificate
    app: Any = wsgi_app if kind == "wsgi" else asgi_app
    shapes = [close_get, keepalive_then_client_closes, pipelined, post_body, refused,
              connect_only, body_too_large, target_too_long, reset_mid_head]
    with Server(app, bind="127.0.0.1:0", workers=2,
                ssl=TlsConfig(certfile=cert, keyfile=key)) as server:
        port = server.address[1]
        _check(server, _tls(port, ctx), shapes)
        # a handshake that never comes, and one cut in the middle
        _check(server, _tcp(port), [connect_only, refused_tls_garbage, reset_mid_head])


def refused_tls_garbage(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # plain HTTP to a TLS port
        recv_all(s)


def idle_until_server_closes(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 200")  # keep-alive timeout


def slow_head(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        assert b" 408 " in recv_all(s)  # header timeout


def slow_body(connect: Callable[[], socket.socket]) -> None:
    with connect() as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nabc")
        recv_all(s)  # body timeout


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_connections_closed_by_their_timers_leave_no_cycles(kind: str) -> None:
    from mioreactor.workers.http import HttpConfig

    app: Any = wsgi_app if kind == "wsgi" else asgi_app
    config = HttpConfig(keepalive_timeout=0.05, header_timeout=0.05, body_timeout=0.05)
    with Server(app, bind="127.0.0.1:0", workers=2, http=config) as server:
        _check(server, _tcp(server.address[1]), [idle_until_server_closes, slow_head, slow_body])


def test_the_check_sees_a_cycle() -> None:
    """The check itself: a cycle of ours made on a worker thread is reported."""
    from mioreactor.workers.core.timers import Deadline, Timers

    with _saved_garbage() as garbage:
        def make() -> None:
            deadline = Deadline(Timers(), None)
            deadline.conn = deadline  # a cycle, dropped at once
        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
    assert any(type(o) is Deadline for o in garbage), _describe(garbage)
