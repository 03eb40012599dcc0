"""Behind a real reverse proxy: nginx with keep-alive upstream connections.

nginx (``/usr/sbin/nginx``; ``.ci/run`` installs it from the OS packages) runs as a
non-daemon child with its config, pid file and temp paths in ``tmp_path``, and
proxies to our server over HTTP/1.1 with ``upstream { keepalive 16; }``. Checked:
pipelined and concurrent requests through it; ``X-Forwarded-For``/``-Proto`` honoured
from the trusted proxy (``forwarded_allow_ips``); and a graceful restart behind it
(stop the server while nginx holds idle keep-alive connections to it, start a new
one on the same port; then, under load, a new one joins the port with SO_REUSEPORT
and the old one stops gracefully) with no 502.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mioreactor.workers.http import HttpConfig
from mioreactor.workers.server.server import Server

from tests.reliability.support import make_app, parse_responses, read_all, wait_for

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (CI installs it with apt)")

CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_temp;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, reuse_port: bool = False) -> Server:
    http = HttpConfig(forwarded_allow_ips=("127.0.0.1",), keepalive_timeout=30.0)
    return Server(
        make_app(), bind=f"127.0.0.1:{port}", workers=2, graceful_timeout=5.0, http=http, reuse_port=reuse_port
    ).start()


def request(port: int, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: proxied.test\r\nConnection: close\r\n\r\n".encode())
        raw, _ = read_all(sock, timeout=10)
    [(status, _, body)] = parse_responses(raw)
    return status, body


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(nginx port, upstream port); the upstream is not started here."""
    port, upstream = free_port(), free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.format(tmp=tmp_path, port=port, upstream=upstream))
    proc = subprocess.Popen(
        [str(NGINX), "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off; error_log stderr warn;"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "error.log", "w"),
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        if not wait_for(listening, 10):
            pytest.fail("nginx did not start: " + (tmp_path / "error.log").read_text())
        yield port, upstream
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_pipelined_and_concurrent_requests_through_nginx(nginx: tuple[int, int]) -> None:
    port, upstream = nginx
    server = serve(upstream)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"".join(b"GET /env?%d HTTP/1.1\r\nHost: p\r\n\r\n" % i for i in range(20)))
            sock.sendall(b"GET /env?last HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
            raw, _ = read_all(sock, timeout=10)
        responses = parse_responses(raw)
        assert [r[0] for r in responses] == [200] * 21
        assert [json.loads(r[2])["query"] for r in responses] == [str(i) for i in range(20)] + ["last"]

        def worker(i: int) -> list[int]:
            return [request(port, f"/echo?{i}-{j}")[0] for j in range(10)]

        with ThreadPoolExecutor(16) as pool:
            statuses = [s for batch in pool.map(worker, range(32)) for s in batch]
        assert statuses == [200] * 320
        # nginx reused its upstream connections: far fewer than the 341 requests.
        assert server.stats()["accepted"] <= 64, server.stats()["accepted"]
    finally:
        server.stop()


def test_forwarded_headers_from_nginx_are_honoured(nginx: tuple[int, int]) -> None:
    port, upstream = nginx
    server = serve(upstream)
    try:
        # The client comes from 127.0.0.2; our server sees nginx (127.0.0.1), trusts
        # it, and takes the client from X-Forwarded-For and the scheme from -Proto.
        status, body = request(port, "/env", source="127.0.0.2")
        seen = json.loads(body)
        assert status == 200
        assert (seen["remote_addr"], seen["scheme"], seen["host"]) == ("127.0.0.2", "https", "proxied.test")
        # Without forwarded_allow_ips, the same headers are ignored.
        untrusted = Server(make_app(), bind="127.0.0.1:0", workers=1, http=HttpConfig()).start()
        try:
            with socket.create_connection(untrusted.address, timeout=5) as sock:
                sock.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\n"
                             b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
                raw, _ = read_all(sock)
            seen = json.loads(parse_responses(raw)[0][2])
            assert (seen["remote_addr"], seen["scheme"]) == ("127.0.0.1", "http")
        finally:
            untrusted.stop()
    finally:
        server.stop()


class ProxyLoad:
    """Threads sending keep-alive requests through nginx; counts statuses."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        sock: socket.socket | None = None
        while not self.stop.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: p\r\n\r\n")
                buf = b""
                while b"\r\n\r\n" not in buf or len(buf.partition(b"\r\n\r\n")[2]) < int(
                    buf.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0] or 0
                ):
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionError("nginx closed")
                    buf += data
                status = int(buf.split(b" ", 2)[1])
                with self.lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
            except OSError as exc:
                with self.lock:
                    self.errors.append(repr(exc))
                if sock is not None:
                    sock.close()
                sock = None
            time.sleep(0.002)
        if sock is not None:
            sock.close()

    def total(self) -> int:
        with self.lock:
            return sum(self.statuses.values())

    def finish(self) -> dict[int, int]:
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return self.statuses


def test_graceful_restarts_behind_nginx_give_no_502(nginx: tuple[int, int]) -> None:
    port, upstream = nginx
    # 1. Stop, then start on the same port, while nginx holds idle upstream connections.
    first = serve(upstream)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda i: request(port, "/")[0], range(32))) == [200] * 32
    assert first.stats()["active"] > 0  # nginx keeps idle keep-alive connections to us
    first.stop()
    second = serve(upstream, reuse_port=True)
    try:
        # nginx's cached connections are closed now; it must notice and retry on a new
        # connection (idempotent GET), never answer 502.
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: request(port, "/")[0], range(64)))
        assert statuses == [200] * 64, statuses
        # 2. Under load: the next server joins on the same port first (SO_REUSEPORT,
        # as a rolling restart does), then the old one stops gracefully. A stop-then-
        # start swap under load would leave a gap in which nginx can only answer 502.
        load = ProxyLoad(port)
        assert wait_for(lambda: load.total() >= 200, 10)
        third = serve(upstream, reuse_port=True)
        second.stop()
        try:
            seen = load.total()
            assert wait_for(lambda: load.total() >= seen + 200, 10)
        finally:
            statuses_by_code = load.finish()
            third.stop()
    finally:
        second.stop()
    bad = {k: v for k, v in statuses_by_code.items() if k != 200}
    assert not load.errors, load.errors[:5]
    assert bad == {}, statuses_by_code
