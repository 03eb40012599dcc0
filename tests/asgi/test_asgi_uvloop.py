"""``--loop uvloop``: the same ASGI behaviour on uvloop's loop, stepped by the workers.

uvloop is optional (``pip install 'mioreactor[uvloop]'``); the test extra installs it.
What differs from the asyncio loop is how the loop learns of work the request bytes do
not bring: its I/O through libuv's backend descriptor (the watcher thread), its timers
through the driver's own record of them (``_Whens``), so each path gets a test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from mioreactor import Server

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (the test extra has it)")

pytestmark = pytest.mark.timeout(60)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text") or ""})
    path = scope["path"]
    loop = asyncio.get_running_loop()
    if path == "/sleep":
        await asyncio.sleep(0.05)  # a timer: nothing else wakes the loop
        body = b"slept"
    elif path == "/thread":
        # call_soon_threadsafe from a thread: libuv's async handle wakes the backend
        body = await loop.run_in_executor(None, lambda: b"from a thread")
    else:
        body = json.dumps({"loop": "uvloop" if isinstance(loop, uvloop.Loop) else "other",
                           "task": asyncio.current_task() is not None}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def get(server: Server, path: str, count: int = 1) -> list[bytes]:
    host, port = server.address[:2]
    bodies = []
    with socket.create_connection((host, port), timeout=10) as sock:
        for _ in range(count):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += sock.recv(65536)
            bodies.append(body)
    return bodies


@pytest.fixture(scope="module")
def server() -> Any:
    with Server(app, bind="127.0.0.1:0", loop="uvloop", workers=2) as s:
        yield s


def test_requests_run_on_uvloop_in_a_task(server: Server) -> None:
    replies = [json.loads(b) for b in get(server, "/", count=20)]
    assert replies == [{"loop": "uvloop", "task": True}] * 20


def test_a_timer_wakes_the_loop_without_another_request(server: Server) -> None:
    assert get(server, "/sleep") == [b"slept"]  # a missed timer: no answer, a socket timeout


def test_a_thread_wakes_the_loop_through_its_backend_descriptor(server: Server) -> None:
    assert get(server, "/thread", count=5) == [b"from a thread"] * 5


def test_many_clients_at_once(server: Server) -> None:
    results: list[list[bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(get(server, "/sleep", 3)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [[b"slept"] * 3] * 8


def test_a_websocket_echoes_on_uvloop(server: Server) -> None:
    from websockets.sync.client import connect

    host, port = server.address[:2]
    with connect(f"ws://{host}:{port}/ws") as ws:
        for i in range(10):
            ws.send(f"m{i}")
            assert ws.recv(timeout=5) == f"m{i}"


def test_the_cli_serves_on_uvloop_and_names_it(tmp_path: Any) -> None:
    (tmp_path / "uvapp.py").write_text(
        "import asyncio, uvloop\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    uv = isinstance(asyncio.get_running_loop(), uvloop.Loop)\n"
        "    body = b'uvloop' if uv else b'other'\n"
        "    await send({'type': 'http.response.start', 'status': 200,\n"
        "                'headers': [(b'content-length', b'%d' % len(body))]})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-m", "mioreactor", "serve", "uvapp:app", "--loop", "uvloop",
         "-b", f"127.0.0.1:{port}", "--app-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert child.poll() is None, child.stdout.read() if child.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"uvloop")
    finally:
        child.terminate()
        child.wait(20)
