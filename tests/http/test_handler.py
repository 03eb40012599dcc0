"""The HTTP handler over a fake connection: no sockets, every path asserted."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mioreactor.workers.http import HttpConfig, make_http_handler_factory

from tests.http.fakes import FakeConnection, FakeWorker, connect, parse_responses

Environ = dict[str, Any]


def echo_app(environ: Environ, start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Path", environ["PATH_INFO"])])
    return [environ["REQUEST_METHOD"].encode(), b" ", body]


def serve(app: Any, config: HttpConfig | None = None, **kw: Any) -> tuple[FakeConnection, FakeWorker]:
    worker = FakeWorker()
    handler = make_http_handler_factory(validator(app), config)(worker)
    return connect(handler, worker, **kw), worker


@pytest.fixture(autouse=True)
def _no_wsgi_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    conn, worker = serve(echo_app)
    for i in range(3):
        conn.feed(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        [(status, headers, body)] = parse_responses(conn.take())
        assert (status, body, headers["x-path"]) == (200, b"GET ", f"/r{i}")
        assert "connection" not in headers and "date" in headers and headers["server"] == "mioreactor"
    assert not conn.closed
    assert [t.delay for t in worker.live_timers()] == [5.0]  # keep-alive timer


def test_pipelined_requests_are_answered_in_order() -> None:
    conn, _ = serve(echo_app)
    conn.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
    responses = parse_responses(conn.take())
    assert [(h["x-path"], b) for _, h, b in responses] == [("/1", b"GET "), ("/2", b"POST hi"), ("/3", b"GET ")]


def test_chunked_request_body_reaches_the_app_with_content_length() -> None:
    seen: dict[str, Any] = {}

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        seen["cl"] = environ["CONTENT_LENGTH"]
        seen["body"] = environ["wsgi.input"].read(100)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    conn, _ = serve(app)
    for piece in (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b"lo\r\n3\r\n, w\r\n0\r\n\r\n"):
        conn.feed(piece)
    assert seen == {"cl": "8", "body": b"hello, w"}
    assert parse_responses(conn.take())[0][0] == 200


def test_100_continue_is_sent_before_the_body_and_never_when_it_already_came() -> None:
    conn, _ = serve(echo_app)
    conn.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert conn.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.feed(b"abc")
    assert parse_responses(conn.take())[0][2] == b"PUT abc"
    conn.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
    assert [s for s, _, _ in parse_responses(conn.take())] == [200]


def test_100_continue_over_the_body_limit_gets_413_at_once() -> None:
    conn, _ = serve(echo_app, HttpConfig(max_body_size=10))
    conn.feed(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    [(status, headers, _)] = parse_responses(conn.take())
    assert status == 413 and headers["connection"] == "close" and conn.closed


def test_head_and_204_and_304_have_no_body() -> None:
    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        status = {"/204": "204 No Content", "/304": "304 Not Modified"}.get(environ["PATH_INFO"], "200 OK")
        start_response(status, [("Content-Type", "text/plain")] if status == "200 OK" else [])
        return [b""] if status != "200 OK" else [b"12345"]

    conn, _ = serve(app)
    conn.feed(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    raw = conn.take()
    assert raw.endswith(b"\r\n\r\n") and b"12345" not in raw
    conn.feed(b"GET /204 HTTP/1.1\r\nHost: h\r\n\r\nGET /304 HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    responses = parse_responses(conn.take())
    assert [(s, b) for s, _, b in responses] == [(204, b""), (304, b""), (200, b"12345")]
    assert "content-length" not in responses[0][1] and "transfer-encoding" not in responses[1][1]


def test_http_1_0_closes_unless_keep_alive_and_streams_close_delimited() -> None:
    def stream(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        yield b"b"

    conn, _ = serve(stream)
    conn.feed(b"GET / HTTP/1.0\r\n\r\n")
    raw = conn.take()
    assert b"Connection: close\r\n" in raw and raw.endswith(b"\r\n\r\nab") and conn.closed
    worker = FakeWorker()  # a plain list (the validator would wrap it in an iterator)
    conn = connect(make_http_handler_factory(lambda e, sr: (sr("200 OK", []), [b"ok"])[1])(worker), worker)
    conn.feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    raw = conn.take()
    assert b"Connection: keep-alive\r\n" in raw and b"Content-Length: 2\r\n" in raw and not conn.closed


def test_streaming_body_is_chunked_on_1_1() -> None:
    def stream(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b"hello"
        yield b" world"

    conn, _ = serve(stream)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    [(_status, headers, body)] = parse_responses(conn.take())
    assert headers["transfer-encoding"] == "chunked" and body == b"hello world"


@pytest.mark.parametrize(
    ("request_bytes", "config", "status"),
    [
        (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", HttpConfig(max_request_line=100), 414),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 300 + b"\r\n\r\n", HttpConfig(max_header_size=200), 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"A: b\r\n" * 5 + b"\r\n", HttpConfig(max_headers=4), 431),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n", HttpConfig(max_body_size=100), 413),
        (b"GET / HTTP/1.1\r\nHost: h\r\nA: \x01\r\n\r\n", None, 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", None, 501),
        (b"GET / HTTP/2.0\r\n\r\n", None, 505),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", None, 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", None, 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n\r\n", None, 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n", None, 400),
    ],
)
def test_every_limit_and_framing_error_gets_its_status_and_closes(
    request_bytes: bytes, config: HttpConfig | None, status: int
) -> None:
    conn, _ = serve(echo_app, config)
    conn.feed(request_bytes + b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
    responses = parse_responses(conn.take())
    assert [r[0] for r in responses] == [status]
    assert responses[0][1]["connection"] == "close" and conn.closed and not conn.aborted


def test_error_after_a_good_pipelined_request_comes_after_its_response() -> None:
    conn, _ = serve(echo_app)
    conn.feed(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/9.9\r\n\r\n")
    assert [r[0] for r in parse_responses(conn.take())] == [200, 505]


def test_large_streaming_body_is_pulled_lazily_with_pause_and_resume() -> None:
    pulled = []

    class Body:
        closed = False

        def __iter__(self) -> Iterator[bytes]:
            for i in range(40):
                pulled.append(i)
                yield bytes([65 + i % 26]) * 16384

        def close(self) -> None:
            Body.closed = True

    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "a/b"), ("Content-Length", str(40 * 16384))])
        return Body()

    conn, worker = serve(app, stall=True)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert conn.paused_writing and len(pulled) < 10
    assert [t.delay for t in worker.live_timers()] == [30.0]  # send timeout armed
    before = len(pulled)
    conn.feed(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")  # pipelined: waits
    assert len(pulled) == before
    while conn.paused_writing:
        conn.drain()
    responses = parse_responses(conn.take())
    assert len(pulled) == 80 and Body.closed  # both requests, in order, fully pulled
    assert [len(b) for _, _, b in responses] == [40 * 16384, 40 * 16384]


def test_a_client_that_stops_reading_is_aborted_by_the_send_timeout() -> None:
    closed = []

    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            while True:
                yield b"x" * 65536
        finally:
            closed.append(True)

    conn, worker = serve(app, stall=True)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    [timer] = worker.live_timers()
    timer.callback()
    assert conn.aborted and closed == [True]


def test_iterable_close_is_called_on_every_path() -> None:
    closes = []

    class Result(list[bytes]):
        def close(self) -> None:
            closes.append(1)

    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Result([b"x"])

    conn, _ = serve(app)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert closes == [1, 1]


@pytest.mark.parametrize(
    "misuse",
    [
        lambda sr: sr("200", []),
        lambda sr: sr("099 Low", []),
        lambda sr: sr("200 OK", [("Bad Name", "v")]),
        lambda sr: sr("200 OK", [("X", "a\r\nSet-Cookie: evil")]),
        lambda sr: sr("200 OK", [("X", "nul\x00")]),
        lambda sr: sr("200 OK", [("X", "snow \u2603")]),
        lambda sr: (sr("200 OK", []), sr("200 OK", [])),
        lambda sr: sr("200 OK", [("Content-Length", "abc")]),
        lambda sr: None,
    ],
)
def test_start_response_misuse_gives_a_clean_500(misuse: Any, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        misuse(start_response)
        return [b"body"]

    worker = FakeWorker()
    handler = make_http_handler_factory(app)(worker)  # no validator: misuse is the point
    conn = connect(handler, worker)
    with caplog.at_level(logging.ERROR, logger="mioreactor.http"):
        conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    raw = conn.take()
    [(status, _headers, _body)] = parse_responses(raw)
    assert status == 500 and b"evil" not in raw and b"body" not in raw and conn.closed
    assert any(r.name == "mioreactor.http" and r.exc_info for r in caplog.records)


def test_app_exception_after_headers_aborts_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("boom")

    conn, _ = serve(app)
    with caplog.at_level(logging.ERROR, logger="mioreactor.http"):
        conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert conn.aborted and b"partial" in conn.take()
    assert any("boom" in str(r.exc_info) for r in caplog.records)


def test_header_timeout_gives_408_for_a_partial_head_and_silence_otherwise() -> None:
    conn, worker = serve(echo_app)
    [timer] = worker.live_timers()
    timer.callback()
    assert conn.closed and conn.take() == b""
    conn, worker = serve(echo_app)
    conn.feed(b"GET / HT")
    [timer] = worker.live_timers()
    assert timer.delay == 10.0
    timer.callback()
    assert parse_responses(conn.take())[0][0] == 408 and conn.closed


def test_keepalive_timeout_closes_silently_and_body_stall_gives_408() -> None:
    conn, worker = serve(echo_app)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.take()
    [timer] = worker.live_timers()
    assert timer.delay == 5.0
    timer.callback()
    assert conn.closed and conn.take() == b""
    conn, worker = serve(echo_app, HttpConfig(body_timeout=0.001))
    conn.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    [timer] = worker.live_timers()
    import time

    time.sleep(0.002)
    timer.callback()
    assert parse_responses(conn.take())[0][0] == 408 and conn.closed


def test_pipelined_flood_while_responding_pauses_reading_then_resumes() -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"y" * 200_000

    conn, _ = serve(app, HttpConfig(max_pipeline_buffer=1000), stall=True)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert conn.paused_writing
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 100)
    assert conn.reading_paused
    for _ in range(1000):
        if not conn.paused_writing:
            break
        conn.drain()
    assert not conn.reading_paused and conn.take().count(b"HTTP/1.1 200") == 101


def test_file_wrapper_uses_sendfile(tmp_path: Any) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789" * 1000)

    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        f = open(path, "rb")
        f.seek(10)
        return environ["wsgi.file_wrapper"](f)

    worker = FakeWorker()
    conn = connect(make_http_handler_factory(app)(worker), worker)
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    [(_status, headers, body)] = parse_responses(conn.take())
    assert body == (b"0123456789" * 1000)[10:] and headers["content-length"] == "9990"
    assert [(off, n) for _, off, n in conn.files] == [(10, 9990)]


def test_environ_follows_pep_3333() -> None:
    seen: dict[str, Any] = {}

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    conn, _ = serve(app)
    conn.feed(b"GET /caf%C3%A9/x%2Fy?a=1&b=%20 HTTP/1.1\r\nHost: ex.com\r\nX-A: 1\r\nx-a: 2\r\n"
              b"Content-Type: text/x\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n")
    assert seen["PATH_INFO"] == "/caf\xc3\xa9/x/y" and seen["QUERY_STRING"] == "a=1&b=%20"
    assert seen["HTTP_X_A"] == "1, 2" and seen["CONTENT_TYPE"] == "text/x" and "CONTENT_LENGTH" not in seen
    assert seen["REMOTE_ADDR"] == "10.0.0.7" and seen["SERVER_PORT"] == "8000"
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1" and seen["wsgi.input_terminated"] is True
    assert "HTTP_X_FORWARDED_FOR" not in seen and seen["wsgi.url_scheme"] == "http"


def test_forwarded_headers_are_believed_only_from_trusted_peers() -> None:
    seen: dict[str, Any] = {}

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    req = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nX-Forwarded-Proto: https\r\n\r\n"
    conn, _ = serve(app, HttpConfig(forwarded_allow_ips=("10.0.0.7",)))
    conn.feed(req)
    assert seen["REMOTE_ADDR"] == "2.2.2.2" and seen["wsgi.url_scheme"] == "https"
    conn, _ = serve(app, HttpConfig(forwarded_allow_ips=("10.9.9.9",)))
    conn.feed(req)
    assert seen["REMOTE_ADDR"] == "10.0.0.7" and seen["wsgi.url_scheme"] == "http"


def test_proxy_protocol_header_sets_the_client_address() -> None:
    seen: dict[str, Any] = {}

    def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    conn, _ = serve(app, HttpConfig(proxy_protocol=True))
    conn.feed(b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 ")
    conn.feed(b"443\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert seen["REMOTE_ADDR"] == "192.0.2.1" and seen["SERVER_PORT"] == "443"
    conn, _ = serve(app, HttpConfig(proxy_protocol=True))
    conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert parse_responses(conn.take())[0][0] == 400 and conn.closed


def test_access_log_line(caplog: pytest.LogCaptureFixture) -> None:
    conn, _ = serve(echo_app, HttpConfig(access_log=True))
    with caplog.at_level(logging.INFO, logger="mioreactor.http.access"):
        conn.feed(b"GET /x?y HTTP/1.1\r\nHost: h\r\n\r\n")
    [record] = [r for r in caplog.records if r.name == "mioreactor.http.access"]
    assert record.getMessage().startswith('10.0.0.7 "GET /x?y HTTP/1.1" 200 4 ')


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64) | st.sampled_from(
    [b"GET / HTTP/1.1\r\nHost: h\r\n", b"\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n",
     b"POST /p HTTP/1.1\r\nHost: h\r\n", b"3\r\nabc\r\n", b"0\r\n\r\n", b"HTTP/1.0\r\n", b"Expect: 100-continue\r\n"]),
    max_size=12))
def test_random_bytes_never_escape_and_give_valid_responses_or_4xx_close(pieces: list[bytes]) -> None:
    worker = FakeWorker()
    conn = connect(make_http_handler_factory(echo_app)(worker), worker)
    for piece in pieces:
        conn.feed(piece)
    responses = parse_responses(conn.take())
    for i, (status, headers, _) in enumerate(responses):
        assert status in (100, 200) or (400 <= status < 600 and headers["connection"] == "close")
        if status >= 400:
            assert i == len(responses) - 1 and conn.closed


def test_a_header_list_seen_before_is_not_rechecked_but_gives_the_same_head() -> None:
    from mioreactor.workers.http.wsgi import AppError, StartResponse

    good = [("Content-Type", "text/plain"), ("Content-Length", "5"), ("Connection", "close")]
    first, second = StartResponse(), StartResponse()
    first("200 OK", list(good))
    second("201 Created", list(good))  # the cached lines, with this call's status
    assert (first.headers, first.content_length, first.close) == (
        b"Content-Type: text/plain\r\n", 5, True)
    assert (second.status, second.headers, second.content_length, second.close) == (
        "201 Created", first.headers, 5, True)
    # A near-identical list with a bad value, and items that cannot be hashed, are
    # checked, not looked up.
    with pytest.raises(AppError):
        StartResponse()("200 OK", [("Content-Type", "text/plain\r\nX-Evil: 1")])
    with pytest.raises(AppError):
        StartResponse()("200 OK", [["Content-Type", "text/plain"]])  # type: ignore[list-item]
