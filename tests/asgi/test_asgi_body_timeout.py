"""``body_timeout`` (``--body-timeout``) holds for ASGI as for WSGI: a request body
that stalls gets 408 and a close, and the app's ``receive`` says ``http.disconnect``;
a client that is slow but sends, or waits for ``100 Continue``, or an app that has
not read what came, is not cut. Before, a stalled body held the connection and the
app's task for ever (a slow-body attack filled ``--max-connections``)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from mioreactor import Server
from mioreactor.workers.http import HttpConfig

from tests.workers.util import recv_all

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 0.2
SEEN: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/late-reader":  # does not ask for the body for a while
        await asyncio.sleep(TIMEOUT * 2)
    if path == "/started":  # answers before reading the body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"head", "more_body": True})
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            SEEN.append(f"{path} disconnect")
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/started":
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Any:
    config = HttpConfig(body_timeout=TIMEOUT)
    with Server(app, bind="127.0.0.1:0", workers=2, http=config) as server:
        yield server.address[1]


def _wait_for(what: str) -> None:
    end = time.monotonic() + 5
    while what not in SEEN and time.monotonic() < end:
        time.sleep(0.01)
    assert what in SEEN, SEEN


def test_a_stalled_body_gets_408_and_the_app_a_disconnect(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        started = time.monotonic()
        s.sendall(b"POST /stall HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        data = recv_all(s)
        took = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"\r\nConnection: close\r\n" in data
    assert TIMEOUT * 0.9 < took < TIMEOUT + 2.0, took
    _wait_for("/stall disconnect")


def test_a_slow_body_that_keeps_coming_is_served(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n"
                  b"Connection: close\r\n\r\n")
        for byte in b"abcdef":  # 6 x half the timeout: more than one timeout in all
            time.sleep(TIMEOUT / 2)
            s.sendall(bytes([byte]))
        data = recv_all(s)
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert data.endswith(b"abcdef")


def test_an_app_that_reads_late_is_not_the_clients_stall(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /late-reader HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        interim = s.recv(4096)  # sent when the app asks for the body, after 2 timeouts
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        s.sendall(b"xyz")
        data = recv_all(s)
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert data.endswith(b"xyz")


def test_a_stall_after_the_response_began_aborts(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /started HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        data = recv_all(s)
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert not data.endswith(b"0\r\n\r\n"), "the chunked body must not look complete"
    _wait_for("/started disconnect")


def test_other_clients_are_served_meanwhile(port: int) -> None:
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        for s in stalled:
            s.sendall(b"POST /stall2 HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\na")
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                      b"Connection: close\r\n\r\nok")
            assert recv_all(s).endswith(b"ok")
        for s in stalled:
            assert recv_all(s).startswith(b"HTTP/1.1 408 ")
    finally:
        for s in stalled:
            s.close()


def test_a_body_the_app_has_not_read_yet_is_not_the_clients_stall(port: int) -> None:
    """More than the read-ahead (256 KiB): reading pauses until the app reads; the
    client, blocked meanwhile, is not cut for it."""
    body = b"b" * (1024 * 1024)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /late-reader HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n" % len(body))
        s.sendall(body)
        data = recv_all(s)
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert data.endswith(body)
