"""A hypothesis fuzzer against a real server: random and mutated requests over sockets.

Each example is sent on a fresh connection, the client half-closes, and the whole
response stream is read. Properties:

* the server always ends the exchange (EOF or RST), never hangs on a half-closed client;
* no status is a 5xx other than 501/505 (the two that answer a client's choice of
  method, coding or version): a client error never looks like a server failure;
* every response parses (status lines are never interleaved with garbage);
* after all examples: no worker died, no handler error, no descriptor leaked, no
  connection stuck, and a normal request is served (``assert_healthy``).

The app never fails on its own, so a 500 can only come from the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mioreactor.workers.server.server import Server

from tests.reliability.support import assert_healthy, exchange, running

STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
ALLOWED_5XX = {501, 505}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read()
    out = b"%s %d" % (environ["REQUEST_METHOD"].encode("latin-1"), len(body))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


SEEDS = [
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /a?b=c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"PUT /p HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET http://h/p HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
]
INTERESTING = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b",", b";", b"0", b"-", b"f" * 17,
               b"chunked", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"\r\n\r\n",
               b"HTTP/1.1", b"\xff", b"\x7f", b"%00", b"1" * 30]

mutation = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(INTERESTING) | st.binary(max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 16)),
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.sampled_from(INTERESTING)),
    st.tuples(st.just("dup"), st.integers(0, 10_000), st.integers(1, 40)),
)


def mutate(data: bytes, ops: list[tuple[str, int, Any]]) -> bytes:
    for op, pos, arg in ops:
        pos = pos % (len(data) + 1)
        if op == "insert":
            data = data[:pos] + arg + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + arg :]
        elif op == "replace":
            data = data[:pos] + arg + data[pos + len(arg) :]
        else:
            data = data[:pos] + data[pos : pos + arg] + data[pos:]
    return data


header_name = st.sampled_from(
    [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Upgrade",
     b"X-Forwarded-For", b"content-length", b"TRANSFER-ENCODING", b"X"]
) | st.binary(min_size=1, max_size=12)
header_value = st.sampled_from(
    [b"0", b"5", b"-1", b"99999999999999999999", b"chunked", b" chunked", b"chunked, gzip", b"gzip, chunked",
     b"close", b"keep-alive", b"100-continue", b"upgrade", b"", b"1.2.3.4"]
) | st.binary(max_size=16)
built = st.builds(
    lambda method, target, version, headers, body: b"%s %s %s\r\n%s\r\n%s"
    % (method, target, version, b"".join(b"%s: %s\r\n" % h for h in headers), body),
    st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"BREW", b"get"]) | st.binary(max_size=6),
    st.sampled_from([b"/", b"/x?y", b"*", b"http://h/p", b"//", b"/%00"]) | st.binary(max_size=12),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1 ", b"http/1.1"]),
    st.lists(st.tuples(header_name, header_value), max_size=6),
    st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]),
)
requests = st.one_of(
    st.builds(mutate, st.sampled_from(SEEDS), st.lists(mutation, min_size=1, max_size=4)),
    built,
    st.binary(max_size=300),
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Server, int]]:
    with running(app, body_timeout=2.0, header_timeout=2.0) as pair:
        yield pair


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=requests)
def test_random_and_mutated_requests_never_get_a_5xx_or_a_hang(served: tuple[Server, int], data: bytes) -> None:
    server, _ = served
    raw, end = exchange(server.address, data, half_close=True, timeout=5.0)
    assert end in ("eof", "reset"), f"server kept a half-closed connection open: {data!r}"
    statuses = [int(m) for m in STATUS.findall(raw)]
    bad = [s for s in statuses if s >= 500 and s not in ALLOWED_5XX]
    assert not bad, (data, raw[:300])
    if raw:
        assert raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), raw[:100]


def test_the_server_is_healthy_after_fuzzing(served: tuple[Server, int]) -> None:
    server, baseline = served
    assert_healthy(server, baseline)
