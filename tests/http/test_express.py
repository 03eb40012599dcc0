"""The express lane against the general path: it takes a subset, and reads it the same.

``mioreactor.workers.http.express.match`` may decline anything; what it accepts, the general
path (llhttp, ``HttpProtocol``, ``validate``, ``request_environ``) must accept as one
bodiless request with the same environ and the same keep-alive decision. Checked on a
corpus of hand-picked heads (valid ones the lane must take, and the strict rules'
refusals, which it must decline), on generated heads, and end to end through the
handler: the same bytes answered with the lane on and off.

A case much slower on one path than on the other is a difference too (``check_agrees``
times both): the first lane answered like the general path on every head and still
stalled the process for seconds on a head that failed late (issue 19). Its bounded
worst case has tests of its own beside these, in ``test_linear.py``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from time import thread_time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mioreactor.workers.http import (
    END_OF_MESSAGE,
    HttpConfig,
    HTTPError,
    HttpProtocol,
    Request,
    make_http_handler_factory,
)
from mioreactor.workers.http import express as express_module
from mioreactor.workers.http import handler as handler_module
from mioreactor.workers.http.body import EMPTY_BODY
from mioreactor.workers.http.express import CLOSE, KEEP_ALIVE_10, match, match_next
from mioreactor.workers.http.wsgi import base_environ, request_environ

from tests.http.fakes import FakeConnection, FakeWorker, connect, parse_responses

CFG = HttpConfig()
MAX = min(CFG.max_request_line, CFG.max_header_size)
BASE = base_environ(("10.0.0.7", 50000), ("127.0.0.1", 8000), CFG)


def general(data: bytes) -> tuple[dict[str, Any], bool] | None:
    """The general path's environ and keep-alive for ``data``; None unless it is exactly
    one bodiless request."""
    events = HttpProtocol(CFG).feed(data)
    if len(events) != 2 or type(events[0]) is not Request or events[1] is not END_OF_MESSAGE:
        return None
    request = events[0]
    environ = request_environ(BASE, request, EMPTY_BODY, frozenset())
    return environ, request.keep_alive


#: One path taking more than ``SLOWER`` times the other's time plus ``SLACK`` (this
#: thread's CPU time, the best of five runs each once a single run looked so) is a
#: difference.
SLOWER = 20
SLACK = 0.005


def _best(runs: int, call: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = thread_time()
        call()
        best = min(best, thread_time() - start)
    return best


def check_time_alike(data: bytes, lane: Callable[[], object], other: Callable[[], object]) -> None:
    """Assert neither path is much slower than the other on ``data``."""
    times = (_best(1, lane), _best(1, other))
    if max(times) <= SLOWER * min(times) + SLACK:
        return
    times = (_best(5, lane), _best(5, other))  # one slow run may be the machine's
    assert max(times) <= SLOWER * min(times) + SLACK, (
        f"lane {times[0] * 1e3:.2f} ms, general path {times[1] * 1e3:.2f} ms on {data[:120]!r}")


def check_agrees(data: bytes) -> bool:
    """Assert the lane agrees with the general path on ``data``, in its answer and in
    its time; True if it took it."""
    check_time_alike(data, lambda: match(data, BASE, MAX, CFG.max_headers), lambda: general(data))
    found = match(data, BASE, MAX, CFG.max_headers)
    if found is None:
        return False
    environ, connection = found
    expected = general(data)
    assert expected is not None, f"the lane took {data!r}, which the general path refuses"
    assert environ == expected[0]
    assert (connection is not CLOSE) == expected[1]
    assert (connection is KEEP_ALIVE_10) == (expected[1] and environ["SERVER_PROTOCOL"] == "HTTP/1.0")
    return True


TAKEN = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"GET /a/b/c.html?x=1&y=%s HTTP/1.1\r\nHost: example.com\r\n\r\n".replace(b"%s", b"two"),
    b"GET /?q=a/b?c HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /x? HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: h\r\n\r\n",
    b"DELETE /item/7 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"OPTIONS /any HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nhost: [::1]:8080\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: \t h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Blank:   \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Inner: a  b\tc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9 \xff\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\n\r\n",
    b"GET /!$&'()*+,;=:@-._~[]^`{|}\" HTTP/1.1\r\nHost: h\r\n\r\n",
    (b"GET /static/app.js HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)"
     b"\r\nAccept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5"
     b"\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://www.example.com/\r\n"
     b"Connection: keep-alive\r\nSec-Fetch-Dest: script\r\nIf-None-Match: \"abc\"\r\n\r\n"),
]

DECLINED = [
    # what the general path refuses (its status comes from there)
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /\tHTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
    b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\n\r\n",
    b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nhost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h:99999999\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h,i\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\rx\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX\x80: a\r\n\r\n",
    b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a%00 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a\x80 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
    b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    # what the general path serves, the lane leaves to it
    b"GET / HTTP/1.1\r\nHost: h \t \r\n\r\n",  # trailing OWS (the general path strips it)
    b"GET /a%20b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PROPFIND / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded_For: 1.2.3.4\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r",
    b"GET / HTTP/1.1\r\nHost: h\r\n",
]


@pytest.mark.parametrize("data", TAKEN)
def test_the_lane_takes_the_common_heads_and_reads_them_as_the_general_path(data: bytes) -> None:
    assert check_agrees(data), f"declined {data!r}"


@pytest.mark.parametrize("data", DECLINED)
def test_the_lane_declines_what_it_cannot_vouch_for(data: bytes) -> None:
    assert match(data, BASE, MAX, CFG.max_headers) is None


def test_limits_are_not_the_lanes_to_stretch() -> None:
    many = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n"
    assert match(many, BASE, MAX, CFG.max_headers) is None  # 101 fields > max_headers
    assert general(many) is None
    long_target = b"GET /" + b"a" * CFG.max_request_line + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert match(long_target, BASE, MAX, CFG.max_headers) is None
    assert general(long_target) is None
    small = HttpConfig(max_header_size=40)
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * 40 + b"\r\n\r\n"
    assert match(data, BASE, min(small.max_request_line, small.max_header_size), 100) is None
    assert HttpProtocol(small).feed(data)[-1].status == 431  # type: ignore[union-attr]


_PIECES = st.sampled_from(
    [b"GET", b"HEAD", b"POST", b"get", b"PROPFIND", b" ", b"  ", b"\t", b"/", b"/a", b"?", b"?x=1",
     b"%", b"%41", b"#", b"\\", b"*", b"http://h/", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"\r\n",
     b"\n", b"\r", b"Host", b"host", b"HOST", b":", b": ", b"h", b"a@b", b"[::1]", b":80", b"\x00",
     b"\x7f", b"\x80", b"\xe9", b"Connection", b"close", b"keep-alive", b"Upgrade", b"Content-Length",
     b"0", b"Transfer-Encoding", b"chunked", b"Expect", b"X-A", b"X_A", b"Cookie", b",", b"=", b"\"",
     b"a", b"\r\n\r\n", b"Proxy-Connection", b" \r\n",
     # runs of fields that a backtracking matcher tries 2**n ways when the head fails late
     b"".join(b"X-%d: v\r\n" % i for i in range(25)), b"".join(b"Y-%d:\t v w\r\n" % i for i in range(25))]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=24))
def test_on_generated_bytes_the_lane_never_takes_what_the_general_path_reads_otherwise(
    pieces: list[bytes],
) -> None:
    check_agrees(b"".join(pieces))


_NAME = st.text("abcXYZ-", min_size=1, max_size=6)
_VALUE = st.binary(max_size=8).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS"]),
    st.binary(max_size=10).map(lambda b: b"/" + b.replace(b" ", b"")),
    st.sampled_from([b"1.1", b"1.0"]),
    st.lists(st.tuples(st.sampled_from([b"Host", b"Connection", b"X-Y"]) | _NAME.map(str.encode), _VALUE),
             max_size=5),
)
def test_on_generated_heads_the_lane_agrees(
    method: bytes, target: bytes, version: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    data = method + b" " + target + b" HTTP/" + version + b"\r\n"
    data += b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"
    check_agrees(data)


_SEPARATORS = st.sampled_from([b":", b": ", b":\t", b": \t ", b":  "])
_VALUES = st.sampled_from([b"v", b"a b", b"", b" ", b"v ", b"v\t", b"a:b", b"\xe9", b"\x7f", b'"q"', b"a  b\tc"])
_TAILS = st.sampled_from([
    b"\r\n",  # a whole head
    b"",  # no final CRLF
    b"\r",
    b"\r\nname=a&b=c",  # a body in the read
    b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",  # a second head
    b"X-Last: v \r\n\r\n",  # trailing OWS
    b"X-Last: v\x00\r\n\r\n",  # a bad byte at the end
])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"GET / HTTP/1.1", b"GET /a?b=c HTTP/1.1", b"GET /?? HTTP/1.0",
                     b"POST /" + b"p/" * 200 + b"?q=" + b"?" * 200 + b" HTTP/1.1"]),
    st.tuples(_SEPARATORS, _VALUES),
    st.integers(1, 60),
    st.lists(st.tuples(_SEPARATORS, _VALUES), max_size=3),
    _TAILS,
    st.booleans(),
)
def test_on_generated_adversarial_heads_the_lane_agrees_in_answer_and_time(
    line: bytes, field: tuple[bytes, bytes], repeat: int, extra: list[tuple[bytes, bytes]], tail: bytes,
    split: bool,
) -> None:
    # Many fields of one shape, a few others, then an end that fails late; or the
    # head cut in two (the lane sees the first read).
    lines = [field] * repeat + extra
    data = line + b"\r\nHost: h\r\n" + b"".join(b"X-%d" % i + sep + value + b"\r\n"
                                                  for i, (sep, value) in enumerate(lines)) + tail
    if split:
        data = data[: len(data) // 2]
    check_agrees(data)
    took = _best(3, lambda: match(data, BASE, MAX, CFG.max_headers))
    assert took < 0.010 + 2e-6 * len(data), f"{took * 1e3:.1f} ms on {len(data)} bytes"


# -- end to end through the handler: the lane on and off answer the same bytes ----------


def _plain(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = (f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} ?{environ['QUERY_STRING']} "
            f"{environ.get('HTTP_X_A')}").encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def _streaming(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one "
    yield b"two"


def _statuses(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/204":
        start_response("204 No Content", [])
        return [b""]
    if path == "/304":
        start_response("304 Not Modified", [("ETag", '"x"')])
        return []
    if path == "/close":
        start_response("200 OK", [("Connection", "close"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/short":
        start_response("200 OK", [("Content-Length", "10")])
        return [b"abc"]
    if path == "/long":
        start_response("200 OK", [("Content-Length", "2")])
        return [b"abcdef"]
    if path == "/write":
        write = start_response("200 OK", [])
        write(b"written ")
        return [b"returned"]
    if path == "/str":
        start_response("200 OK", [])
        return ["not bytes"]  # type: ignore[list-item]
    if path == "/raise":
        raise RuntimeError("boom")
    if path == "/nostart":
        return [b"x"]
    start_response("200 OK", [("Content-Length", "4")])
    return [b"four"]


REQUESTS = [
    b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n",
    b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /204 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /304 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /long HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /write HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /str HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /raise HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /nostart HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /close HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
]


def _exchange(app: Any, data: bytes, express: bool) -> tuple[bytes, bool, bool, int]:
    """The bytes answered (less the Date line), closed, aborted, responses counted."""
    worker = FakeWorker()
    handler = make_http_handler_factory(app, HttpConfig(express=express))(worker)
    conn = connect(handler, worker)
    conn.feed(data)
    out = re.sub(rb"Date: [^\r]*\r\n", b"", conn.take())
    assert out.startswith(b"HTTP/1.1 ")
    return out, conn.closed, conn.aborted, sum(handler.response_counts) + sum(handler.response_untimed)


@pytest.mark.parametrize("app", [_plain, _streaming, _statuses])
@pytest.mark.parametrize("data", REQUESTS)
def test_the_lane_answers_every_request_as_the_general_path(
    app: Any, data: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    taken: list[bytes] = []
    real = handler_module.express_next

    def spy(text: str, pos: int, *args: Any) -> Any:
        found = real(text, pos, *args)
        if found is not None and pos == 0:
            taken.append(text)
        return found

    monkeypatch.setattr(handler_module, "express_next", spy)
    expected = _exchange(app, data, express=False)
    assert not taken
    got = _exchange(app, data, express=True)
    assert got == expected
    # The lane took the read if its first head is one it takes (a pipelined read
    # included: its heads are answered one after the other, in one write).
    first = match_next(data.decode("latin-1"), 0, BASE, MAX, CFG.max_headers)
    assert bool(taken) == (first is not None)


# -- pipelined reads: the lane answers head after head, in one write ----------------------

_POST = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"


@pytest.mark.parametrize("app", [_plain, _streaming, _statuses])
@pytest.mark.parametrize("second", [*REQUESTS, _POST])
@pytest.mark.parametrize("first", [*REQUESTS[:4], REQUESTS[12], _POST])
def test_a_pipelined_pair_is_answered_as_the_general_path_answers_it(
    app: Any, first: bytes, second: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    data = first + second
    assert _exchange(app, data, express=True) == _exchange(app, data, express=False)


@pytest.mark.parametrize("cut", [1, 5, 17, 30])
@pytest.mark.parametrize("count", [2, 16])
def test_pipelined_heads_with_a_head_cut_by_the_reads_end_are_all_answered_in_order(
    count: int, cut: int
) -> None:
    head = REQUESTS[0]
    data = head * count + head[:cut]
    for express in (True, False):
        worker = FakeWorker()
        handler = make_http_handler_factory(_plain, HttpConfig(express=express))(worker)
        conn = connect(handler, worker)
        conn.feed(data)
        conn.feed(head[cut:])
        responses = parse_responses(conn.take())
        assert [body for _, _, body in responses] == [b"GET /a ?b=c 1"] * (count + 1)
        assert not conn.closed


def test_sixteen_pipelined_heads_go_out_in_one_write_through_the_lane() -> None:
    worker = FakeWorker()
    handler = make_http_handler_factory(_plain, HttpConfig())(worker)
    conn = connect(handler, worker)
    writes: list[bytes] = []
    real = conn.write

    def counting(data: bytes) -> None:
        writes.append(data)
        real(data)

    conn.write = counting  # type: ignore[method-assign]
    conn.feed(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n" * 16)
    assert len(writes) == 1
    assert len(parse_responses(conn.take())) == 16
    assert sum(handler.response_counts) == 16
    st_ = conn.context
    assert st_.proto is None and st_.timer_kind == handler_module.T_KEEPALIVE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*REQUESTS, _POST, b"GET /a HTTP/1.1\r\nHo"]), min_size=2, max_size=18),
       st.sampled_from([_plain, _statuses]))
def test_on_generated_pipelined_reads_the_lane_answers_as_the_general_path(
    reads: list[bytes], app: Any
) -> None:
    data = b"".join(reads)
    assert _exchange(app, data, express=True) == _exchange(app, data, express=False)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("heads", [100, 1000])
def test_a_read_of_many_pipelined_heads_costs_time_linear_in_its_bytes(heads: int) -> None:
    # Each head ends in a field the lane declines only after matching it: a matcher
    # that rescanned the read from its start for every head would be quadratic.
    head = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-A: v\r\n" * 20 + b"\r\n"
    text = (head * heads).decode("latin-1")
    took = _best(3, lambda: [match_next(text, i * len(head), BASE, MAX, CFG.max_headers)
                             for i in range(heads)])
    assert took < 0.010 + 2e-6 * len(text), f"{took * 1e3:.1f} ms on {len(text)} bytes"


def test_keep_alive_goes_on_through_the_lane_and_the_general_path_in_turn() -> None:
    worker = FakeWorker()
    handler = make_http_handler_factory(_plain, HttpConfig())(worker)
    conn = connect(handler, worker)
    sequence = [
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n",  # express
        b"GET /2%21 HTTP/1.1\r\nHost: h\r\n\r\n",  # general (a percent-escape)
        b"GET /3 HTTP/1.1\r\nHost: h\r\nX-A: x\r\n\r\n",  # express again: the parser went back
        b"GET /4 HTTP/1.1\r\nHo",  # a head in two reads: general
        b"st: h\r\n\r\n",
        b"GET /5 HTTP/1.1\r\nHost: h\r\n\r\n",
    ]
    for data in sequence:
        conn.feed(data)
    bodies = [body for _, _, body in parse_responses(conn.take())]
    assert bodies == [b"GET /1 ? None", b"GET /2! ? None", b"GET /3 ? x", b"GET /4 ? None",
                      b"GET /5 ? None"]
    assert not conn.closed
    st_ = conn.context
    assert st_.proto is None and st_.timer_kind == handler_module.T_KEEPALIVE
    live = worker.live_timers()
    assert len(live) == 1 and live[0].delay == CFG.keepalive_timeout


def test_the_lane_counts_in_the_metrics_like_any_request() -> None:
    worker = FakeWorker()
    handler = make_http_handler_factory(_statuses, HttpConfig())(worker)
    conn = connect(handler, worker)
    for _ in range(3):
        conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(parse_responses(conn.take())) == 3
    assert sum(handler.response_counts) == 3 and handler.response_seconds > 0


def test_the_watchdog_names_an_express_request_while_the_app_runs() -> None:
    seen: list[str] = []
    worker = FakeWorker()
    handler: Any = None

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(handler.describe(conn))
        start_response("200 OK", [])
        return [b""]

    handler = make_http_handler_factory(app, HttpConfig())(worker)
    conn = connect(handler, worker)
    conn.feed(b"GET /slow?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert seen == ["GET /slow?x=1"]
    assert handler.describe(conn) == "a request"  # none in progress after it


def test_the_lane_is_off_with_an_access_log_proxy_protocol_or_trusted_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(handler_module, "express_next", lambda text, *a: calls.append(text))
    for config in (HttpConfig(access_log=True), HttpConfig(forwarded_allow_ips=("*",)),
                   HttpConfig(express=False)):
        worker = FakeWorker()
        conn = connect(make_http_handler_factory(_plain, config)(worker), worker)
        conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert parse_responses(conn.take())[0][0] == 200
    assert calls == []
    assert express_module.match is match
    assert isinstance(HTTPError, type)


def test_each_connection_gets_its_own_peer_in_the_environ_made_from_a_template() -> None:
    seen: list[tuple[str, str, bool]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append((environ["REMOTE_ADDR"], environ["REMOTE_PORT"], environ["mioreactor.trusted_proxy"]))
        start_response("200 OK", [])
        return [b""]

    worker = FakeWorker()
    handler = make_http_handler_factory(app, HttpConfig(forwarded_allow_ips=("10.0.0.9",)))(worker)
    for host, port in (("10.0.0.7", 50000), ("10.0.0.9", 50001), ("10.0.0.8", 50002)):
        conn = FakeConnection(handler, worker)
        conn.peer = (host, port)
        handler.connection_made(conn)  # type: ignore[arg-type]
        conn.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert seen == [("10.0.0.7", "50000", False), ("10.0.0.9", "50001", True),
                    ("10.0.0.8", "50002", False)]


def test_the_connections_start_response_starts_afresh_for_every_request() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/write":
            start_response("200 OK", [])(b"written ")
            return [b"returned"]
        if path == "/stream":
            start_response("200 OK", [])
            return iter([b"a", b"b"])  # general path: the head is sent (headers_sent)
        if path == "/replace":
            start_response("200 OK", [("X-First", "1")])
            try:
                raise ValueError("changed my mind")
            except ValueError:
                start_response("503 Service Unavailable", [], sys.exc_info())
            return [b"replaced"]
        start_response("200 OK", [])
        return [b"plain"]

    worker = FakeWorker()
    conn = connect(make_http_handler_factory(app, HttpConfig())(worker), worker)
    for path in ("/write", "/plain", "/stream", "/replace", "/plain"):
        conn.feed(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    responses = parse_responses(conn.take())
    assert [(status, body) for status, _, body in responses] == [
        (200, b"written returned"), (200, b"plain"), (200, b"ab"), (503, b"replaced"), (200, b"plain")]
    assert "x-first" not in responses[3][1]
    assert not conn.closed


def test_a_large_express_response_pauses_writing_then_keep_alive_resumes() -> None:
    big = b"x" * (1024 * 1024)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [big if environ["PATH_INFO"] == "/big" else b"small"]

    worker = FakeWorker()
    conn = connect(make_http_handler_factory(app, HttpConfig())(worker), worker, stall=True)
    conn.feed(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    assert conn.paused_writing  # the send timer governs, not the keep-alive one
    st_ = conn.context
    assert st_.send_timer is not None and st_.timer_kind == -1
    conn.drain()  # the client reads: resume_writing starts the keep-alive wait
    assert st_.timer_kind == handler_module.T_KEEPALIVE and st_.send_timer is None
    conn.feed(b"GET /small HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [body for _, _, body in parse_responses(conn.take())] == [big, b"small"]
    assert not conn.closed
