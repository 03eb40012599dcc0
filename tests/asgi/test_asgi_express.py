"""The ASGI express lane against the general path: a subset, read the same, in linear time.

``mioreactor.workers.asgi.express.match`` may decline anything; what it takes, the
general path (llhttp, ``HttpProtocol``, ``validate``) must read as one bodiless
request with the same ``Request`` and the same scope. Checked on hand-picked heads,
on generated ones, end to end through ``AsgiHandler`` (the same bytes answered with
the lane on and off, one request or several, pipelined or not), and against the
clock: reads that almost match, in every failing shape, are declined in time linear
in their bytes (docs/design.md, "Untrusted bytes").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mioreactor.workers.asgi import handler as handler_module
from mioreactor.workers.asgi.express import match
from mioreactor.workers.asgi.handler import AsgiHandler
from mioreactor.workers.asgi.loop import LoopDriver
from mioreactor.workers.asgi.scope import ConnInfo, express_scope, http_scope
from mioreactor.workers.http import END_OF_MESSAGE, HttpConfig, HttpProtocol, Request

from tests.http.fakes import FakeWorker, connect

pytestmark = pytest.mark.timeout(60)

CFG = HttpConfig()
MAX = min(CFG.max_request_line, CFG.max_header_size)
INFO = ConnInfo(("10.0.0.7", 50000), ("127.0.0.1", 8000), "http", {"k": "v"})
EXT: dict[str, Any] = {"http.response.pathsend": {}}


def general(data: bytes, cfg: HttpConfig = CFG) -> Request | None:
    """The general path's ``Request`` for ``data``; None unless exactly one bodiless request."""
    events = HttpProtocol(cfg).feed(data)
    if len(events) != 2 or type(events[0]) is not Request or events[1] is not END_OF_MESSAGE:
        return None
    return events[0]


def check_agrees(data: bytes) -> bool:
    """Assert the lane reads ``data`` as the general path does; True if it took it."""
    found = match(data, MAX, CFG.max_headers)
    if found is None:
        return False
    method, target, raw_path, query, version, headers, lowered, keep_alive = found
    expected = general(data)
    assert expected is not None, f"the lane took {data!r}, which the general path refuses"
    lane = Request(method, target, version, headers, None, False, keep_alive, False)
    assert lane == expected
    expected_scope = http_scope(INFO, expected, EXT)
    assert express_scope(INFO, method, raw_path, query, version, lowered, EXT) == expected_scope
    return True


TAKEN = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"GET /a/b/c.html?x=1&y=two HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /?q=a/b?c HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /x? HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PATCH /x HTTP/1.1\r\nHost: h\r\n\r\n",
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
    b"GET / HTTP/1.1\r\nHost:h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: \t h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Blank:   \r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Inner: a  b\tc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9 \xff\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\n\r\n",
    b"GET /!$&'()*+,;=:@-._~[]^`{|}\" HTTP/1.1\r\nHost: h\r\n\r\n",
    # the ASGI scope keeps what the WSGI environ drops or joins
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded_For: 1.2.3.4\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
    (b"GET /static/app.js HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11)"
     b"\r\nAccept: text/html,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\n"
     b"Connection: keep-alive\r\nIf-None-Match: \"abc\"\r\n\r\n"),
]

DECLINED = [
    # what the general path refuses (its status comes from there)
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
    b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nhost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h:99999999\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n",
    b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    # what the general path serves, the lane leaves to it
    b"GET / HTTP/1.1\r\nHost: h \t \r\n\r\n",
    b"GET /a%20b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PROPFIND / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\r",
    b"GET / HTTP/1.1\r\nHost: h\r\n",
]


@pytest.mark.parametrize("data", TAKEN)
def test_the_lane_takes_the_common_heads_and_reads_them_as_the_general_path(data: bytes) -> None:
    assert check_agrees(data), f"declined {data!r}"


@pytest.mark.parametrize("data", DECLINED)
def test_the_lane_declines_what_it_cannot_vouch_for(data: bytes) -> None:
    assert match(data, MAX, CFG.max_headers) is None


def test_limits_are_not_the_lanes_to_stretch() -> None:
    many = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n"
    assert match(many, MAX, CFG.max_headers) is None  # 101 fields > max_headers
    assert general(many) is None
    long_target = b"GET /" + b"a" * CFG.max_request_line + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert match(long_target, MAX, CFG.max_headers) is None
    assert general(long_target) is None
    small = HttpConfig(max_header_size=40)
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * 40 + b"\r\n\r\n"
    assert match(data, min(small.max_request_line, small.max_header_size), 100) is None
    assert general(data, small) is None


_PIECES = st.sampled_from(
    [b"GET", b"HEAD", b"POST", b"get", b"PROPFIND", b" ", b"  ", b"\t", b"/", b"/a", b"?", b"?x=1",
     b"%", b"%41", b"#", b"\\", b"*", b"http://h/", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"\r\n",
     b"\n", b"\r", b"Host", b"host", b"HOST", b":", b": ", b"h", b"a@b", b"[::1]", b":80", b"\x00",
     b"\x7f", b"\x80", b"\xe9", b"Connection", b"close", b"keep-alive", b"Upgrade", b"Content-Length",
     b"0", b"Transfer-Encoding", b"chunked", b"Expect", b"X-A", b"X_A", b"Cookie", b",", b"=", b"\"",
     b"a", b"Proxy-Connection", b"\r\n\r\n"]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=24))
def test_on_generated_bytes_the_lane_never_takes_what_the_general_path_reads_otherwise(
    pieces: list[bytes],
) -> None:
    check_agrees(b"".join(pieces))


_NAME = st.text("abcXYZ-_", min_size=1, max_size=6)
_VALUE = st.binary(max_size=8).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS"]),
    st.binary(max_size=10).map(lambda b: b"/" + b.replace(b" ", b"")),
    st.sampled_from([b"1.1", b"1.0"]),
    st.lists(st.tuples(st.sampled_from([b"Host", b"Connection", b"X-Y"]) | _NAME.map(str.encode),
                       _VALUE), max_size=5),
)
def test_on_generated_heads_the_lane_agrees(
    method: bytes, target: bytes, version: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    data = method + b" " + target + b" HTTP/" + version + b"\r\n"
    data += b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"
    check_agrees(data)


# -- linear time: reads that almost match, declined -------------------------------------

BIG = HttpConfig(max_header_size=1 << 22, max_request_line=1 << 22, max_headers=100_000)
BIG_MAX = min(BIG.max_request_line, BIG.max_header_size)


def _fields(n: int, value: bytes = b"v") -> bytes:
    return b"".join(b"X-F%d: a " % i + value + b"\r\n" for i in range(n))


SHAPES: dict[str, Callable[[int], bytes]] = {
    "no final CRLF": lambda n: b"GET / HTTP/1.1\r\nHost: h\r\n" + _fields(n),
    "trailing OWS on the last": lambda n: b"GET / HTTP/1.1\r\nHost: h\r\n" + _fields(n)
    + b"X-Last: v \t \r\n\r\n",
    "trailing OWS on each": lambda n: b"GET / HTTP/1.1\r\nHost: h\r\n" + _fields(n, b"v  ")
    + b"\r\n",
    "a body in the same read": lambda n: b"POST / HTTP/1.1\r\nHost: h\r\n" + _fields(n)
    + b"\r\nbody",
    "pipelined": lambda n: (b"GET / HTTP/1.1\r\nHost: h\r\n" + _fields(n) + b"\r\n") * 2,
    "spaces inside values": lambda n: b"GET / HTTP/1.1\r\nHost: h\r\n"
    + b"".join(b"X-%d:" % i + b" a" * 8 + b"\r\n" for i in range(n)) + b"\r",
    "a long path then a bad version": lambda n: b"GET /" + b"a/?" * (n * 4) + b" HTTP/1.2\r\n\r\n",
    "a long query of question marks": lambda n: b"GET /?" + b"?" * (n * 8) + b" HTTP/1.1\r\n\r",
}


def _cpu(fn: Callable[[], object]) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_almost_matching_read_is_declined_in_time_linear_in_its_bytes(shape: str) -> None:
    make = SHAPES[shape]
    small, large = make(250), make(1000)
    assert match(small, BIG_MAX, BIG.max_headers) is None
    assert match(large, BIG_MAX, BIG.max_headers) is None
    # Best of a few runs each, on this thread's CPU clock (the machine is shared).
    t_small = min(_cpu(lambda: match(small, BIG_MAX, BIG.max_headers)) for _ in range(5))
    t_large = min(_cpu(lambda: match(large, BIG_MAX, BIG.max_headers)) for _ in range(5))
    assert t_large < 0.05, f"{shape}: {t_large * 1000:.1f} ms for {len(large)} bytes"
    # Four times the bytes, about four times the time (a quadratic matcher: sixteen).
    assert t_large < 8 * t_small + 0.002, (shape, t_small, t_large)


# -- end to end: the handler answers the same bytes with the lane on and off -------------


async def scope_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/raise":
        raise RuntimeError("boom")
    if path == "/nostart":
        return
    message = await receive()
    shown = {k: v for k, v in scope.items() if k not in ("extensions",)}
    body = repr(sorted(shown.items())).encode() + b" " + repr(message).encode()
    if path == "/204":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
        return
    if path == "/close":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"connection", b"close"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if path == "/short":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"100000")]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one ", "more_body": True})
        await send({"type": "http.response.body", "body": body})
        return
    headers = [(b"content-type", b"text/plain")]
    if path == "/length":
        headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class PostingWorker(FakeWorker):
    def post(self, callback: Callable[[], None]) -> None:
        callback()


def exchange(reads: list[bytes], express: bool) -> tuple[bytes, bool, int]:
    """The bytes answered (less the Date line), closed, responses counted."""
    worker = PostingWorker()
    driver = LoopDriver()
    try:
        handler = AsgiHandler(worker, scope_app, driver, HttpConfig(express=express), {"k": "v"})
        conn = connect(handler, worker)
        for data in reads:
            conn.feed(data)
            driver.step()
        out = re.sub(rb"Date: [^\r]*\r\n", b"", conn.take())
        return out, conn.closed, sum(handler.response_counts) + sum(handler.response_untimed)
    finally:
        driver.close()


ONE = [
    b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n",
    b"GET /length HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD /length HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /204 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /raise HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /nostart HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /close HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\naccept: b\r\nX_Y: 1\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    b"POST /length HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
]

SEQUENCES = [
    [ONE[0], ONE[1], b"GET /2%21 HTTP/1.1\r\nHost: h\r\n\r\n", ONE[3], ONE[0]],
    [ONE[0] + ONE[1]],  # pipelined in one read: the general path
    [ONE[0], ONE[1] + ONE[0], ONE[1]],
    [ONE[0], b"GET /length HTTP/1.1\r\nHo", b"st: h\r\n\r\n", ONE[1]],  # a head in two reads
    [ONE[1], b"POST /length HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", ONE[1]],
    [ONE[1], ONE[13], ONE[1]],  # nothing after Connection: close
    [ONE[1], b"GET / HTTP/1.1\r\n\r\n", ONE[1]],  # 400 ends it
]


@pytest.mark.parametrize("data", ONE)
def test_the_lane_answers_every_request_as_the_general_path(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[bytes] = []
    real = handler_module.match

    def spy(data: bytes, *args: Any) -> Any:
        found = real(data, *args)
        if found is not None:
            taken.append(data)
        return found

    monkeypatch.setattr(handler_module, "match", spy)
    expected = exchange([data], express=False)
    assert not taken
    got = exchange([data], express=True)
    assert got == expected
    assert bool(taken) == (match(data, MAX, CFG.max_headers) is not None)


@pytest.mark.parametrize("reads", SEQUENCES, ids=range(len(SEQUENCES)))
def test_keep_alive_goes_on_through_the_lane_and_the_general_path_in_turn(
    reads: list[bytes],
) -> None:
    assert exchange(reads, express=True) == exchange(reads, express=False)


def test_the_lane_takes_the_common_request_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[bytes] = []
    real = handler_module.match

    def spy(data: bytes, *args: Any) -> Any:
        found = real(data, *args)
        if found is not None:
            taken.append(data)
        return found

    monkeypatch.setattr(handler_module, "match", spy)
    out, closed, count = exchange([ONE[1]] * 3, express=True)
    assert len(taken) == 3 and count == 3 and not closed
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 3
