"""Graceful stop in process: ``Server.stop()`` loses no request it accepted.

Requests in every phase when stop begins: a streaming response still being pulled,
a request body still arriving, a head still arriving, a fresh connection whose
request is on its way, a keep-alive connection idle between requests, and a steady
load of keep-alive and close clients. Each begun request must complete with its full
response and ``Connection: close``; idle keep-alive connections are closed (the
client's retry of an idempotent request is the RFC 9112 9.3.1 rule); connects after
the listener closed are refused, and counted apart.
"""

from __future__ import annotations

import socket
import threading
import time

from mioreactor.workers.http import HttpConfig
from mioreactor.workers.server.server import Server

from tests.reliability.loadclient import LoadClient
from tests.reliability.support import connect, make_app, parse_responses, read_all, wait_for


def test_stop_lets_every_begun_request_finish_with_its_full_response() -> None:
    app = make_app()
    server = Server(app, bind="127.0.0.1:0", workers=2, graceful_timeout=10.0, http=HttpConfig())
    server.start()
    address = server.address
    try:
        # A streaming response the client reads slowly, so it is mid-body at stop.
        streaming = connect(address)
        streaming.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        streaming.sendall(b"GET /big?%d HTTP/1.1\r\nHost: t\r\n\r\n" % (32 << 20))
        first = streaming.recv(1000)
        # A body half sent, a head half sent.
        upload = connect(address)
        upload.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        head = connect(address)
        head.sendall(b"GET /env HTTP/1.1\r\nHo")
        # A keep-alive connection idle after one request.
        idle = connect(address)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        assert wait_for(lambda: server.stats()["active"] == 4)

        stopper = threading.Thread(target=server.stop)
        stopper.start()
        time.sleep(0.3)  # stop has begun: the listener is closed, the workers drain
        assert server.stats()["active"] == 3  # the idle one is closed at once...
        assert read_all(idle, timeout=2) == (b"", "eof")
        upload.sendall(b"world")  # ...the begun requests go on
        head.sendall(b"st: t\r\n\r\n")
        raw, end = read_all(streaming, timeout=20, limit=1 << 30)
        raw = first + raw
        [(status, headers, body)] = parse_responses(raw)
        assert (status, len(body), end) == (200, 32 << 20, "eof")
        for sock, expect in ((upload, b"10 "), (head, b'{"method": "GET"')):
            raw, end = read_all(sock, timeout=5)
            [(status, headers, body)] = parse_responses(raw)
            assert status == 200 and body.startswith(expect) and end == "eof"
            assert headers.get("connection") == "close"
        stopper.join(15)
        assert not stopper.is_alive()
        for sock in (streaming, upload, head, idle):
            sock.close()
        assert app.probe.streams_closed == app.probe.streams_opened == 1  # type: ignore[attr-defined]
    finally:
        server.stop(timeout=1)


def test_stop_under_steady_load_loses_no_accepted_request() -> None:
    server = Server(make_app(), bind="127.0.0.1:0", workers=2, graceful_timeout=5.0)
    server.start()
    load = LoadClient(server.address, clients=6, keepalive_share=0.5)
    load.start()
    try:
        assert wait_for(lambda: load.totals()["ok"] > 300, 10)
        load.stopping()
        server.stop()
    finally:
        server.stop(timeout=1)
        time.sleep(0.2)
        load.stop()
    totals = load.totals()
    assert totals["ok"] > 300
    assert totals["non_2xx"] == 0 and totals["lost"] == 0, (totals, load.lost_details)
    # After the listener closed: refused connects, not losses.
    assert totals["refused"] > 0, totals
