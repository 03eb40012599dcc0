"""Real clients over real sockets: curl, slow (slowloris) clients, PROXY per listener."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from mioreactor.workers import Server
from mioreactor.workers.core.acceptor import BoundListener
from mioreactor.workers.http import HttpConfig
from mioreactor.workers.server.binds import open_listeners


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] == "POST":
        digest = hashlib.sha256()
        while chunk := environ["wsgi.input"].read(65536):
            digest.update(chunk)
        body = digest.hexdigest().encode()
    else:
        body = f"{environ['PATH_INFO']} from {environ['REMOTE_ADDR']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = validator(_app)


@pytest.fixture
def server() -> Iterator[Server]:
    with Server(app, bind="127.0.0.1:0", workers=4, http=HttpConfig(header_timeout=1.0)) as s:
        yield s


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@needs_curl
def test_curl_reuses_one_connection_for_two_urls(server: Server) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-v", f"{server.url}/a", f"{server.url}/b"],
        capture_output=True, text=True, timeout=20, check=True,
    )
    assert out.stdout == "/a from 127.0.0.1/b from 127.0.0.1"
    assert "Re-using existing connection" in out.stderr or "reusing" in out.stderr.lower()
    assert server.stats()["accepted"] == 1


@needs_curl
def test_curl_uploads_a_chunked_body_that_arrives_whole(server: Server, tmp_path: Path) -> None:
    payload = (bytes(range(256)) * 4096)[: 3 * 1024 * 1024 + 17]
    src = tmp_path / "upload.bin"
    src.write_bytes(payload)
    out = subprocess.run(
        ["curl", "-sS", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{src}",
         f"{server.url}/upload"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert out.stdout == hashlib.sha256(payload).hexdigest()


def test_two_hundred_slow_clients_do_not_delay_normal_requests_and_are_cut(
    server: Server,
) -> None:
    """Slowloris: 200 clients trickle a header byte every 0.2 s and never finish. Normal
    requests meanwhile are served at once, and every slow client is cut near the 1 s
    header_timeout (a 408, or a close)."""
    slow = []
    for _ in range(200):
        s = socket.create_connection(server.address, timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            for s in slow:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            time.sleep(0.2)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        for i in range(10):
            t0 = time.monotonic()
            with socket.create_connection(server.address, timeout=5) as c:
                c.sendall(f"GET /n{i} HTTP/1.0\r\n\r\n".encode())
                data = b""
                while chunk := c.recv(65536):
                    data += chunk
            assert data.endswith(f"/n{i} from 127.0.0.1".encode())
            assert time.monotonic() - t0 < 1.0, "a normal request waited behind slow ones"
        deadline = time.monotonic() + 5.0
        cut = 0
        for s in slow:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                cut += 1
                assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:80]
            except ConnectionResetError:
                cut += 1
            except TimeoutError:
                pass
        assert cut == 200, f"only {cut} of 200 slow clients were cut by header_timeout"
    finally:
        stop.set()
        t.join(2)
        for s in slow:
            s.close()


def test_the_proxy_protocol_is_expected_only_on_the_listener_that_asks_for_it() -> None:
    proxied = open_listeners(["127.0.0.1:0"], proxy_protocol=True)
    plain: list[BoundListener] = []
    with Server(app, bind="127.0.0.1:0", listeners=proxied) as s:
        plain = [bl for bl in s.listeners if not bl.proxy_protocol]
        proxy_addr = proxied[0].address
        with socket.create_connection(proxy_addr, timeout=5) as c:
            c.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET /p HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        assert data.endswith(b"/p from 203.0.113.7")
        with socket.create_connection(plain[0].address, timeout=5) as c:
            c.sendall(b"GET /q HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        assert data.endswith(b"/q from 127.0.0.1")
