"""One client's bytes never change what another client gets: the parser pool (issue 19).

A connection at rest between requests gives its parser back to the handler's pool
(``HttpHandler._protos``), and the next connection that needs one takes it. llhttp
reads ``Proxy-Connection`` as ``Connection``: after ``Proxy-Connection: close`` it
ends in its closed state and refuses every later byte ("Data after Connection:
close"), while our keep-alive rule read only ``Connection`` and kept the connection.
The parser went back to the pool, and whoever took it next (the follow-up on the same
connection, or another client's POST) got a 400.

The rule now: a message keeps the connection only when llhttp and our rule both say
keep-alive, and a parser goes back to the pool only then (``HttpProtocol.at_rest``).
These tests send every connection-ish field with odd values, on HTTP/1.0 and 1.1, by
the lane and by the general path, and check that the follow-up on the same
connection and 20 other clients are served as if nothing had happened.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

import pytest
from mioreactor.workers.http import (
    END_OF_MESSAGE,
    HttpConfig,
    HttpProtocol,
    Request,
    make_http_handler_factory,
)
from mioreactor.workers.http.express import match
from mioreactor.workers.http.handler import HttpHandler
from mioreactor.workers.http.wsgi import base_environ

from tests.http.fakes import FakeWorker, connect, parse_responses

pytestmark = pytest.mark.timeout(120)

NAMES = [b"Connection", b"connection", b"Proxy-Connection", b"PROXY-CONNECTION", b"Keep-Alive", b"Upgrade", b"TE"]
VALUES = [
    b"close", b"CLOSE", b"keep-alive", b"Keep-Alive", b"close, keep-alive", b"keep-alive, close",
    b"upgrade", b"Upgrade, close", b"", b" ", b",", b",close,", b"closed", b"clos", b'"close"',
    b"close;q=1", b"timeout=5, max=1000", b"trailers", b"h2c", b"websocket", b"chunked", b"te, close",
]
# Several connection-ish fields at once.
COMBINATIONS = [
    [(b"Connection", b"keep-alive"), (b"Proxy-Connection", b"close")],
    [(b"Connection", b"close"), (b"Proxy-Connection", b"keep-alive")],
    [(b"Proxy-Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5")],
    [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
    [(b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"), (b"HTTP2-Settings", b"AAMAAABkAARAAAAAAAIAAAAA")],
    [(b"Connection", b"TE"), (b"TE", b"trailers")],
    [(b"Connection", b"keep-alive"), (b"Connection", b"close")],
    [(b"Proxy-Connection", b"close"), (b"Proxy-Connection", b"close")],
    [(b"Connection", b"upgrade"), (b"Proxy-Connection", b"close"), (b"Keep-Alive", b"max=1"), (b"TE", b"x")],
]


def attacks(version: bytes) -> list[bytes]:
    """Heads carrying connection-ish fields: each as a bodiless GET (the lane may take
    it) and as a POST with a body (the general path, with a parser from the pool)."""
    field_sets = [[(n, v)] for n, v in itertools.product(NAMES, VALUES)] + COMBINATIONS
    out = []
    for field_set in field_sets:
        lines = b"".join(n + b": " + v + b"\r\n" for n, v in field_set)
        out.append(b"GET /attack HTTP/" + version + b"\r\nHost: h\r\n" + lines + b"\r\n")
        out.append(b"POST /attack HTTP/" + version + b"\r\nHost: h\r\n" + lines + b"Content-Length: 4\r\n\r\nbody")
    return out


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    out = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(body)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [out]


VICTIM_READS = [
    [b"POST /v HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"],  # a parser from the pool
    [b"GET /v HTTP/1.1\r\nHo", b"st: h\r\n\r\n"],  # a head in two reads: the general path
    [b"GET /v HTTP/1.1\r\nHost: h\r\n\r\nGET /v HTTP/1.1\r\nHost: h\r\n\r\n"],  # pipelined
    [b"GET /v HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"],
]
VICTIM_BODIES = [[b"POST /v 5"], [b"GET /v 0"], [b"GET /v 0", b"GET /v 0"], [b"GET /v 0"]]


def _strip_date(data: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"", data)


def _serve_victims(handler: HttpHandler, worker: FakeWorker, attack: bytes) -> None:
    for i in range(20):
        conn = connect(handler, worker)
        reads, bodies = VICTIM_READS[i % 4], VICTIM_BODIES[i % 4]
        for data in reads:
            conn.feed(data)
        got = parse_responses(conn.take())
        assert [(status, body) for status, _, body in got] == [(200, b) for b in bodies], (
            f"victim {i} after {attack!r}: {got}")


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
@pytest.mark.parametrize("express", [True, False], ids=["lane", "no-lane"])
def test_connection_fields_of_one_client_never_spoil_a_parser_for_the_next(version: bytes, express: bool) -> None:
    worker = FakeWorker()
    handler = make_http_handler_factory(app, HttpConfig(express=express))(worker)
    assert isinstance(handler, HttpHandler)
    for attack in attacks(version):
        conn = connect(handler, worker)
        conn.feed(attack)
        first = parse_responses(conn.take())
        assert first and first[0][0] == 200, (attack, first)
        if not conn.closed:
            # The response kept the connection: the follow-up on it is served.
            assert first[0][1].get("connection") != "close"
            conn.feed(b"GET /follow-up HTTP/1.1\r\nHost: h\r\n\r\n")
            follow = parse_responses(conn.take())
            assert [(s, b) for s, _, b in follow] == [(200, b"GET /follow-up 0")], (attack, follow)
        else:
            assert first[0][1].get("connection") == "close"
        _serve_victims(handler, worker, attack)
    # Whatever is left in the pool takes a fresh request.
    assert handler._protos
    for proto in handler._protos:
        events = proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert [type(e) for e in events] == [Request, type(END_OF_MESSAGE)]


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_the_lane_and_the_general_path_answer_connection_fields_alike(version: bytes) -> None:
    for attack in attacks(version):
        outs = []
        for express in (True, False):
            worker = FakeWorker()
            conn = connect(make_http_handler_factory(app, HttpConfig(express=express))(worker), worker)
            conn.feed(attack)
            outs.append((_strip_date(conn.take()), conn.closed))
        assert outs[0] == outs[1], attack


def test_a_parser_is_at_rest_only_when_llhttp_takes_another_message() -> None:
    # The class, not the instance: after any of these messages, a parser that says it
    # is at rest parses the next request, and one that keeps the connection is at rest.
    for version in (b"1.1", b"1.0"):
        for attack in attacks(version):
            proto = HttpProtocol(HttpConfig())
            events = proto.feed(attack)
            assert isinstance(events[0], Request) and events[-1] is END_OF_MESSAGE, attack
            assert proto.at_rest == events[0].keep_alive, attack
            after = proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            if proto.at_rest or events[0].keep_alive:
                assert isinstance(after[0], Request), (attack, after)


def test_proxy_connection_close_closes_on_both_paths() -> None:
    # llhttp reads it as Connection; so do we, on both paths: the lane declines it
    # and the general path closes.
    head = b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n"
    base = base_environ(("10.0.0.7", 50000), ("127.0.0.1", 8000), HttpConfig())
    assert match(head, base, 8190, 100) is None
    events = HttpProtocol(HttpConfig()).feed(head)
    assert isinstance(events[0], Request) and not events[0].keep_alive
    for express in (True, False):
        worker = FakeWorker()
        conn = connect(make_http_handler_factory(app, HttpConfig(express=express))(worker), worker)
        conn.feed(head)
        [(status, headers, _)] = parse_responses(conn.take())
        assert status == 200 and headers["connection"] == "close" and conn.closed


def test_proxy_connection_keep_alive_does_not_keep_an_http_1_0_connection() -> None:
    # Only Connection opens keep-alive on HTTP/1.0 (RFC 9112 9.3); llhttp would.
    events = HttpProtocol(HttpConfig()).feed(b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n")
    assert isinstance(events[0], Request) and not events[0].keep_alive
