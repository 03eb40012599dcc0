"""Every byte of a request target, on both paths (issue 19; docs/http.md, "The strict request head").

A raw byte outside visible ASCII (a control byte, SP, DEL, 0x80-0xff, so any raw
UTF-8, over-long or not) is not in the request-target grammar of RFC 9112 3.2 /
RFC 3986 and gets 400, from ``validate.check_target`` whatever the llhttp build lets
through (httptools 0.6's loose build passes non-ASCII, HTAB and FF). The visible
bytes RFC 3986 leaves out of paths and queries, ``" < > [ ] ^ ` { | }``, pass to the
application as they came (docs/http.md says why); ``\\`` is 400. The lane and the
general path give each of the 256 bytes, in the path and in the query, the same
answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pytest
from mioreactor.workers.http import BadRequest, HttpConfig, make_http_handler_factory
from mioreactor.workers.http.validate import check_target

from tests.http.fakes import FakeWorker, connect, parse_responses

pytestmark = pytest.mark.timeout(60)

VISIBLE_OUTSIDE_3986 = b'"<>[]^`{|}'
REFUSED_VISIBLE = b"#\\"  # a fragment, a backslash (docs/http.md)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['PATH_INFO']}|{environ['QUERY_STRING']}".encode("latin-1")]


def answer(data: bytes, express: bool) -> tuple[bytes, bool]:
    worker = FakeWorker()
    conn = connect(make_http_handler_factory(app, HttpConfig(express=express))(worker), worker)
    conn.feed(data)
    return re.sub(rb"Date: [^\r]*\r\n", b"", conn.take()), conn.closed


@pytest.mark.parametrize("byte", range(256))
def test_check_target_refuses_every_byte_outside_visible_ascii(byte: int) -> None:
    for target in (b"/a" + bytes([byte]) + b"b", b"/?q=a" + bytes([byte]) + b"b",
                   b"http://h/a" + bytes([byte]) + b"b"):
        if 0x21 <= byte <= 0x7E and byte not in REFUSED_VISIBLE and byte != 0x25:  # "%" needs two hex digits
            check_target("GET", target)  # no error
        else:
            with pytest.raises(BadRequest):
                check_target("GET", target)


@pytest.mark.parametrize(
    "target",
    [b"/\xc3\xa9", b"/\xc0\xaf", b"/a/\xe0\x80\xaf", b"/\xed\xa0\x80", b"/\xff\xfe", b"/?q=\xc3\xa9",
     b"/?q=\xc0\xaf", b"/a\tb", b"/a\x0cb", b"/a\x7f"],
)
def test_non_ascii_and_over_long_utf8_targets_get_400_on_both_paths(target: bytes) -> None:
    data = b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    for express in (True, False):
        out, closed = answer(data, express)
        assert out.startswith(b"HTTP/1.1 400 ") and closed, (express, out[:60])


@pytest.mark.parametrize("byte", list(VISIBLE_OUTSIDE_3986))
def test_the_visible_bytes_rfc_3986_leaves_out_pass_as_sent_on_both_paths(byte: int) -> None:
    char = chr(byte)
    for target, expected in ((f"/a{char}b", f"/a{char}b|"), (f"/?q=a{char}b", f"/|q=a{char}b"),
                             (f"/{char}?{char}", f"/{char}|{char}")):
        data = b"GET " + target.encode() + b" HTTP/1.1\r\nHost: h\r\n\r\n"
        for express in (True, False):
            out, closed = answer(data, express)
            [(status, _, body)] = parse_responses(out)
            assert (status, body, closed) == (200, expected.encode(), False), (express, target)


@pytest.mark.parametrize("where", [b"/a%sb", b"/?q=a%sb"])
def test_the_lane_and_the_general_path_answer_every_byte_of_a_target_alike(where: bytes) -> None:
    for byte in range(256):
        data = b"GET " + where.replace(b"%s", bytes([byte])) + b" HTTP/1.1\r\nHost: h\r\n\r\n"
        lane, general = answer(data, True), answer(data, False)
        assert lane == general, (byte, lane, general)
