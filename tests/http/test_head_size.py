"""The lane and the general path count a head's size alike, at any limits (issue 19).

The general path counts the target against ``max_request_line`` (414) and each field
as its name, its value without OWS and 4 bytes against ``max_header_size`` (431); the
lane looked only at the read's length, so a head of many ``name:value`` fields (one
byte more each as counted than as sent) under tight limits got 200 from the lane and
431 from the general path. The lane now declines any head whose bytes plus its field
count exceed ``min(max_request_line, max_header_size)``, and the general path answers
it. Checked over a grid of limits: the same status, body and close on both paths.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterable
from typing import Any

import pytest
from mioreactor.workers.http import HttpConfig, HttpProtocol, Request, make_http_handler_factory
from mioreactor.workers.http.express import match
from mioreactor.workers.http.wsgi import base_environ

from tests.http.fakes import FakeWorker, connect

pytestmark = pytest.mark.timeout(120)

NAMES = (string.ascii_lowercase + string.digits).encode()


def head(target: bytes, k: int, sep: bytes, value: bytes = b"v") -> bytes:
    lines = b"".join(bytes([NAMES[i]]) + sep + value + b"\r\n" for i in range(k))
    return b"GET " + target + b" HTTP/1.1\r\nHost:h\r\n" + lines + b"\r\n"


HEADS = [
    head(target, k, sep, value)
    for target in (b"/", b"/" + b"a" * 40, b"/" + b"a" * 120 + b"?q=1")
    for k in (0, 1, 8, 19, 20, 30, 36)
    for sep, value in ((b":", b"v"), (b": ", b"v"), (b":\t \t", b"value"))
]
LIMITS = (16, 24, 32, 48, 64, 100, 128, 176, 180, 189, 200, 256, 8190)
MAX_HEADERS = (2, 30, 100)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode() + b" " + str(len(environ)).encode()]


def answer(data: bytes, config: HttpConfig) -> tuple[bytes, bool]:
    worker = FakeWorker()
    conn = connect(make_http_handler_factory(app, config)(worker), worker)
    conn.feed(data)
    return re.sub(rb"Date: [^\r]*\r\n", b"", conn.take()), conn.closed


@pytest.mark.parametrize("max_headers", MAX_HEADERS)
def test_both_paths_give_the_same_answer_to_every_head_at_every_limit(max_headers: int) -> None:
    for line, size in itertools.product(LIMITS, LIMITS):
        on = HttpConfig(max_request_line=line, max_header_size=size, max_headers=max_headers)
        off = HttpConfig(max_request_line=line, max_header_size=size, max_headers=max_headers, express=False)
        for data in HEADS:
            lane, general = answer(data, on), answer(data, off)
            assert lane == general, (line, size, max_headers, data, lane[0][:40], general[0][:40])


def test_what_the_lane_takes_the_general_path_takes_at_every_limit() -> None:
    # The bytes-level form of the same rule: a head the lane takes under some limits
    # is one request for the general path under the same limits (never a 414 or 431).
    for line, size, max_headers in itertools.product(LIMITS, LIMITS, MAX_HEADERS):
        config = HttpConfig(max_request_line=line, max_header_size=size, max_headers=max_headers)
        base = base_environ(("10.0.0.7", 50000), ("127.0.0.1", 8000), config)
        for data in HEADS:
            if match(data, base, min(line, size), max_headers) is not None:
                events = HttpProtocol(config).feed(data)
                assert isinstance(events[0], Request), (line, size, max_headers, data, events)


def test_the_issues_case_many_short_fields_near_the_limit() -> None:
    # 30 fields "a:v": 176 bytes sent, 189 counted by the general path.
    data = head(b"/", 30, b":")
    assert len(data) == 176
    for limit in (176, 180, 188):
        config = HttpConfig(max_request_line=limit, max_header_size=limit)
        assert answer(data, config)[0].startswith(b"HTTP/1.1 431 ")
        assert answer(data, HttpConfig(max_request_line=limit, max_header_size=limit, express=False))[0].startswith(
            b"HTTP/1.1 431 ")
    config = HttpConfig(max_request_line=189, max_header_size=189)
    assert answer(data, config)[0].startswith(b"HTTP/1.1 200 ")
