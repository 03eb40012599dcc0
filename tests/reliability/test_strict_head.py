"""The strict head rules over real sockets, and the lingering close after an error.

Each Host and target case is sent on a fresh connection; the test reads until the
server closes and asserts exactly one response with the rule's status, a
``Connection: close`` header, and an orderly end (EOF, not a reset). The lingering
close cases are the two of issue 12: an upload far over the body limit, and 200
requests pipelined after a malformed one.
"""

from __future__ import annotations

import json
import select
import time

import pytest
from mioreactor.workers.server.server import Server

from tests.reliability.support import (
    AppProbe,
    assert_healthy,
    connect,
    exchange,
    make_app,
    parse_responses,
    read_all,
    running,
    status_lines,
)
from tests.workers.util import wait_for

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"


def req(target: bytes = b"/env", host: bytes | None = b"t", *, method: bytes = b"GET", line: bytes | None = None) -> bytes:
    head = line if line is not None else method + b" " + target + b" HTTP/1.1"
    return head + b"\r\n" + (b"Host: " + host + b"\r\n" if host is not None else b"") + b"\r\n"


REJECT: dict[str, tuple[bytes, int]] = {
    "no-host": (req(host=None), 400),
    "two-hosts": (req(host=b"t\r\nHost: t"), 400),
    "two-different-hosts": (req(host=b"t\r\nHost: u"), 400),
    "empty-host": (req(host=b""), 400),
    "host-with-userinfo": (req(host=b"user@t"), 400),
    "host-with-path": (req(host=b"t/x"), 400),
    "host-non-numeric-port": (req(host=b"t:8x"), 400),
    "host-comma-list": (req(host=b"a, b"), 400),
    "absolute-form-bad-authority": (req(b"s://]ufd/:"), 400),
    "absolute-form-userinfo": (req(b"http://u@example.com/env"), 400),
    "absolute-form-ftp": (req(b"ftp://example.com/env"), 400),
    "fragment": (req(b"/env#frag"), 400),
    "non-ascii-target": (req(b"/env/\xc3\xa9"), 400),
    "overlong-utf8-target": (req(b"/env/\xc0\xaf"), 400),
    "backslash-target": (req(b"/env\\..\\x"), 400),
    "pct-nul-target": (req(b"/env%00"), 400),
    "pct-crlf-target": (req(b"/env?a=%0d%0aX:%20y"), 400),
    "two-spaces-before-target": (req(line=b"GET  /env HTTP/1.1"), 400),
    "two-spaces-after-target": (req(line=b"GET /env  HTTP/1.1"), 400),
    "asterisk-with-get": (req(b"*"), 400),
    "authority-form-with-get": (req(b"t:80"), 400),
    "connect": (req(b"t:443", method=b"CONNECT"), 501),
    "expect-other": (b"GET /env HTTP/1.1\r\nHost: t\r\nExpect: fly\r\n\r\n", 417),
    "content-length-leading-zero": (b"POST /env HTTP/1.1\r\nHost: t\r\nContent-Length: 03\r\n\r\nabc", 400),
}


@pytest.mark.parametrize("name", sorted(REJECT))
def test_a_bad_host_or_target_gets_one_error_then_an_orderly_close(
    served: tuple[Server, int, AppProbe], name: str
) -> None:
    server, _, probe = served
    payload, status = REJECT[name]
    before = len(probe.paths)
    raw, end = exchange(server.address, payload + SMUGGLED)
    assert status_lines(raw) == 1, raw[:400]
    [(got, headers, _)] = parse_responses(raw)
    assert (got, headers.get("connection"), end) == (status, "close", "eof"), (name, raw[:200])
    assert probe.paths[before:] == []


def test_an_absolute_form_target_sets_host_and_server_name_from_its_authority(
    served: tuple[Server, int, AppProbe],
) -> None:
    server, _, _ = served
    raw, end = exchange(server.address, b"GET http://example.com:8081/env?q HTTP/1.1\r\nHost: evil\r\n"
                        b"Connection: close\r\n\r\n")
    [(status, _, body)] = parse_responses(raw)
    seen = json.loads(body)
    assert status == 200 and end == "eof"
    assert (seen["host"], seen["server_name"], seen["server_port"]) == ("example.com:8081", "example.com", "8081")
    assert (seen["path"], seen["query"]) == ("/env", "q")


def test_a_chunk_extension_with_bws_before_the_semicolon_is_served(served: tuple[Server, int, AppProbe]) -> None:
    server, _, _ = served
    raw, _ = exchange(server.address, b"POST /env HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                      b"Connection: close\r\n\r\n5 ;name=value\r\nhello\r\n0\r\n\r\n")
    [(status, _, body)] = parse_responses(raw)
    assert status == 200 and json.loads(body)["body"] == "hello"


def test_a_client_uploading_200_mb_to_a_1_mb_limit_reads_the_413_then_eof() -> None:
    """It sends in a bounded loop and reads whenever the socket is readable, as curl
    does. The server answers 413 from the declared length at once; it then lingers,
    so the client reads the whole response and an orderly EOF, never a reset."""
    total = 200 * 1024 * 1024
    with running(max_body_size=1024 * 1024) as (server, baseline):
        sock = connect(server.address, timeout=10)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        sock.setblocking(False)
        chunk = b"x" * 65536
        sent, received, end = 0, b"", ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not end:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 1.0)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    end = "reset"
                    break
                received += data
                if not data:
                    end = "eof"
                elif b"\r\n\r\n" in received and received.endswith(b"413 Content Too Large\n"):
                    sent = total  # the whole response is here: stop sending, read to EOF
            if writable and sent < total:
                try:
                    sent += sock.send(chunk)
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    end = "reset"
        sock.close()
        [(status, headers, _)] = parse_responses(received)
        assert (status, headers.get("connection"), end) == (413, "close", "eof")
        assert_healthy(server, baseline)


def test_a_client_pipelining_200_requests_after_a_malformed_one_reads_exactly_one_400() -> None:
    pipeline = b"GET  /bad HTTP/1.1\r\nHost: t\r\n\r\n" + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 200
    with running() as (server, baseline):
        probe_before = server.stats()["accepted"]
        sock = connect(server.address)
        sock.sendall(pipeline[:40])
        time.sleep(0.05)  # the error is answered while the rest is still on its way
        try:
            for i in range(40, len(pipeline), 1000):
                sock.sendall(pipeline[i : i + 1000])
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw, end = read_all(sock, timeout=5)
        sock.close()
        assert status_lines(raw) == 1, raw[:300]
        [(status, headers, _)] = parse_responses(raw)
        assert (status, headers.get("connection"), end) == (400, "close", "eof")
        assert server.stats()["accepted"] == probe_before + 1
        assert_healthy(server, baseline)


def test_lingering_stops_after_its_byte_budget_and_frees_the_connection() -> None:
    with running(linger_max_bytes=256 * 1024, linger_timeout=5.0) as (server, baseline):
        sock = connect(server.address, timeout=5)
        sock.sendall(b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n")
        started = time.monotonic()
        try:
            for _ in range(400):  # at most 25 MB, far over the budget
                sock.sendall(b"x" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.close()
        assert time.monotonic() - started < 4.0  # cut by bytes, well before the timeout
        assert_healthy(server, baseline)


def test_lingering_stops_after_its_timeout_when_the_client_keeps_the_connection_open() -> None:
    with running(linger_timeout=0.3) as (server, baseline):
        sock = connect(server.address, timeout=5)
        sock.sendall(b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.settimeout(3)
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 400 ")
        assert sock.recv(65536) == b""  # the write side is shut at once
        assert server.stats()["active"] == 1  # still reading what the client sends
        sock.sendall(b"more bytes")
        started = time.monotonic()
        assert wait_for(lambda: server.stats()["active"] == 0, 3.0)  # closed by the timeout
        assert time.monotonic() - started < 2.0
        sock.close()
        assert_healthy(server, baseline)


def test_a_graceful_stop_does_not_wait_for_a_lingering_connection() -> None:
    server = Server(make_app(), bind="127.0.0.1:0", workers=1, graceful_timeout=5.0)
    server.start()
    sock = connect(server.address, timeout=5)
    try:
        sock.sendall(b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")
        started = time.monotonic()
        server.stop(timeout=5.0)
        assert time.monotonic() - started < 1.5
    finally:
        sock.close()


def test_the_server_is_healthy_after_the_strict_cases(served: tuple[Server, int, AppProbe]) -> None:
    server, baseline, probe = served
    assert_healthy(server, baseline)
    assert "/smuggled" not in probe.paths
