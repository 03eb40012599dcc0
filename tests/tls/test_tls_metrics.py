"""/metrics on a TLS server: the TLS counters of ``Server.stats()`` appear, and HTTPS
requests count like plain ones."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from mioreactor.workers import Server
from mioreactor.workers.tls.context import TlsConfig
from prometheus_client.parser import text_string_to_metric_families

from tests.tls.conftest import Pki


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def test_tls_counters_and_https_requests_in_the_metrics(pki: Pki) -> None:
    with Server(app, bind="127.0.0.1:0", workers=2, metrics_bind="127.0.0.1:0",
                ssl=TlsConfig(certfile=pki.cert_pem, keyfile=pki.key_pem)) as server:
        assert server.metrics is not None
        ctx = pki.client_context()
        for _ in range(4):
            url = f"https://localhost:{server.address[1]}/"
            with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                assert resp.read() == b"ok"
        # Plain HTTP on the TLS port: a 400, counted as such.
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        # A client that gives up in the handshake.
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello")
        deadline = time.monotonic() + 5
        while server.stats()["tls_handshake_failed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = server.stats()
        with urllib.request.urlopen(server.metrics.url, timeout=5) as resp:
            text = resp.read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("reactor_tls_handshakes_total", ())] == stats["tls_handshakes"] == 4
    assert samples[("reactor_tls_plain_http_total", ())] == stats["tls_plain_http"] == 1
    assert samples[("reactor_tls_handshake_failures_total", ())] == stats["tls_handshake_failed"]
    assert stats["tls_handshake_failed"] >= 1
    assert samples[("reactor_requests_total", (("class", "2xx"),))] == 4
    # The 400 to plain HTTP comes from the TLS layer, before any HTTP handler.
    assert samples[("reactor_requests_total", (("class", "4xx"),))] == 0
