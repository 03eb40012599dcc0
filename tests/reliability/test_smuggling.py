"""Request smuggling and parser abuse over real sockets (RFC 9112).

Each payload is sent on a fresh connection, the client half-closes, and the test
reads the whole response stream until the server closes. Two kinds of case:

* ``REJECT``: the server answers exactly one 400 (or 501 for a coding it does not
  implement) and closes; the application never runs for a smuggled request.
* ``ACCEPT``: the framing is valid (sometimes unusual): exactly the responses RFC 9112
  calls for, with the body the RFC says the request has.

In every case the number of ``HTTP/1.x`` status lines in the stream is asserted: the
bytes of one request never produce a second response. Many payloads carry a complete
second request (``GET /smuggled``) where a parser with the wrong framing rule would
find one; the app records every path it serves, and ``/smuggled`` must never be among
them.
"""

from __future__ import annotations

import json

import pytest
from mioreactor.workers.server.server import Server

from tests.reliability.support import (
    AppProbe,
    assert_healthy,
    exchange,
    parse_responses,
    status_lines,
)

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
N = b"%d" % len(SMUGGLED)
H = b"POST /env HTTP/1.1\r\nHost: t\r\n"

REJECT: dict[str, tuple[bytes, int]] = {
    # CL.TE / TE.CL: both framings at once (RFC 9112 6.1: MAY reject; we must).
    "cl-te": (H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-cl": (H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n" + SMUGGLED + b"0\r\n\r\n", 400),
    "te-cl-in-two-fields": (H + b"Transfer-Encoding: chunked\r\nContent-length: 0\r\n\r\n" + SMUGGLED, 400),
    # TE.TE: an obfuscated "chunked" that one parser honours and another ignores.
    "te-xchunked": (H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-chunked-identity": (H + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-duplicate-chunked": (H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-quoted": (H + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n' + SMUGGLED, 400),
    "te-space-before-colon": (H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-empty": (H + b"Transfer-Encoding: \r\n\r\n" + SMUGGLED, 400),
    "te-obs-fold": (H + b"Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    "te-gzip-then-chunked": (H + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    "te-on-http10": (b"POST /env HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED, 400),
    # Content-Length abuse.
    "cl-duplicate-equal": (H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc" + SMUGGLED, 400),
    "cl-duplicate-different": (H + b"Content-Length: 0\r\nContent-Length: " + N + b"\r\n\r\n" + SMUGGLED, 400),
    "cl-list": (H + b"Content-Length: 3, 3\r\n\r\nabc" + SMUGGLED, 400),
    "cl-negative": (H + b"Content-Length: -1\r\n\r\n" + SMUGGLED, 400),
    "cl-plus": (H + b"Content-Length: +3\r\n\r\nabc" + SMUGGLED, 400),
    "cl-hex": (H + b"Content-Length: 0x3\r\n\r\nabc" + SMUGGLED, 400),
    "cl-overflow": (H + b"Content-Length: 18446744073709551617\r\n\r\n" + SMUGGLED, 400),
    "cl-huge-overflow": (H + b"Content-Length: " + b"9" * 40 + b"\r\n\r\n" + SMUGGLED, 400),
    # Chunk framing abuse.
    "chunk-size-overflow": (H + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\nx\r\n0\r\n\r\n", 400),
    "chunk-size-negative": (H + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n" + SMUGGLED, 400),
    "chunk-size-0x": (H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, 400),
    "chunk-data-overrun": (H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n" + SMUGGLED, 400),
    "chunk-bare-lf": (H + b"Transfer-Encoding: chunked\r\n\r\n1\nx\n0\n\n" + SMUGGLED, 400),
    "chunk-extension-oversize": (
        H + b"Transfer-Encoding: chunked\r\n\r\n1;" + b"e" * 200_000 + b"\r\nx\r\n0\r\n\r\n",
        400,
    ),
    "trailer-content-length": (
        H + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nContent-Length: " + N + b"\r\n\r\n" + SMUGGLED,
        400,
    ),
    # Line endings.
    "bare-lf-request-line": (b"GET /env HTTP/1.1\nHost: t\n\n" + SMUGGLED, 400),
    "bare-lf-after-header": (b"GET /env HTTP/1.1\r\nHost: t\nX: y\r\n\r\n" + SMUGGLED, 400),
    "bare-lf-end-of-head": (b"GET /env HTTP/1.1\r\nHost: t\r\n\n" + SMUGGLED, 400),
    "bare-cr-request-line": (b"GET /env HTTP/1.1\rHost: t\r\n\r\n" + SMUGGLED, 400),
    "bare-cr-in-header": (b"GET /env HTTP/1.1\r\nHost: t\rX: y\r\n\r\n" + SMUGGLED, 400),
    "obs-fold": (b"GET /env HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n" + SMUGGLED, 400),
    "space-before-first-header": (b"GET /env HTTP/1.1\r\n Host: t\r\n\r\n" + SMUGGLED, 400),
    # NUL and control bytes.
    "nul-in-name": (b"GET /env HTTP/1.1\r\nHost: t\r\nX\x00Y: b\r\n\r\n" + SMUGGLED, 400),
    "nul-in-value": (b"GET /env HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n" + SMUGGLED, 400),
    "ctl-in-name": (b"GET /env HTTP/1.1\r\nHost: t\r\nX\x01: b\r\n\r\n" + SMUGGLED, 400),
    "ctl-in-value": (b"GET /env HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n" + SMUGGLED, 400),
    "del-in-value": (b"GET /env HTTP/1.1\r\nHost: t\r\nX: a\x7fb\r\n\r\n" + SMUGGLED, 400),
    "nul-in-target": (b"GET /e\x00nv HTTP/1.1\r\nHost: t\r\n\r\n" + SMUGGLED, 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n" + SMUGGLED, 400),
    # Request targets.
    "asterisk-form-with-get": (b"GET * HTTP/1.1\r\nHost: t\r\n\r\n" + SMUGGLED, 400),
    # Upgrade: WSGI cannot switch protocols; the bytes after the head are not HTTP.
    "connect-method": (b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n" + SMUGGLED, 501),
}

ACCEPT: dict[str, tuple[bytes, list[dict[str, str]]]] = {
    # OWS around a field value is not part of it (RFC 9110 5.5).
    "te-leading-space": (H + b"Transfer-Encoding:  chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", [{"body": "abc"}]),
    "te-leading-tab": (H + b"Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", [{"body": "abc"}]),
    "te-upper-case": (H + b"Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n", [{"body": "abc"}]),
    "te-empty-list-element": (H + b"Transfer-Encoding: ,chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", [{"body": "abc"}]),
    # Chunk extensions are ignored (RFC 9112 7.1.1); trailers are not part of the body.
    "chunk-extensions": (
        H + b"Transfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d\"\r\nabc\r\n2;x\r\nde\r\n0;y=z\r\n\r\n",
        [{"body": "abcde"}],
    ),
    "trailers": (
        H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n",
        [{"body": "abc"}],
    ),
    # A GET with a body: the body is the body, not a second request.
    "get-with-content-length-body": (
        b"GET /env HTTP/1.1\r\nHost: t\r\nContent-Length: " + N + b"\r\n\r\n" + SMUGGLED,
        [{"method": "GET", "body": SMUGGLED.decode()}],
    ),
    # Absolute-form: the target's authority replaces Host (RFC 9112 3.2.2).
    "absolute-form": (
        b"GET http://example.com/env?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        [{"path": "/env", "query": "q=1", "host": "example.com"}],
    ),
    # At least one empty line before a request line is ignored (RFC 9112 2.2).
    "leading-empty-line": (b"\r\nGET /env HTTP/1.1\r\nHost: t\r\n\r\n", [{"method": "GET"}]),
    # A valid pipeline after a chunked body: two requests, two responses, in order.
    "pipeline-after-trailers": (
        H + b"Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\n\r\n"
        b"GET /env?second HTTP/1.1\r\nHost: t\r\n\r\n",
        [{"body": "x"}, {"query": "second"}],
    ),
}


@pytest.mark.parametrize("name", sorted(REJECT))
def test_malformed_framing_is_rejected_with_one_response_and_a_close(
    served: tuple[Server, int, AppProbe], name: str
) -> None:
    server, _, probe = served
    payload, status = REJECT[name]
    before = len(probe.paths)
    raw, end = exchange(server.address, payload, half_close=True)
    assert status_lines(raw) == 1, raw[:400]
    [(got, headers, _)] = parse_responses(raw)
    assert got == status, (name, raw[:200])
    assert headers.get("connection") == "close"
    # Lingering close: the server shuts its write side after the response and reads
    # what the client still sends, so the client sees EOF, never a reset.
    assert end == "eof"
    assert "/smuggled" not in probe.paths[before:]


@pytest.mark.parametrize("name", sorted(ACCEPT))
def test_unusual_but_valid_framing_is_served_as_rfc_9112_says(
    served: tuple[Server, int, AppProbe], name: str
) -> None:
    server, _, probe = served
    payload, expected = ACCEPT[name]
    before = len(probe.paths)
    raw, end = exchange(server.address, payload, half_close=True)
    assert status_lines(raw) == len(expected), raw[:400]
    responses = parse_responses(raw)
    assert [r[0] for r in responses] == [200] * len(expected)
    for (_, _, body), want in zip(responses, expected, strict=True):
        seen = json.loads(body)
        assert {k: seen[k] for k in want} == want, seen
    assert end == "eof"
    assert "/smuggled" not in probe.paths[before:]


def test_an_upgrade_request_is_answered_once_and_what_follows_is_not_parsed(
    served: tuple[Server, int, AppProbe],
) -> None:
    server, _, probe = served
    before = len(probe.paths)
    payload = b"GET /env HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + SMUGGLED
    raw, end = exchange(server.address, payload, half_close=True)
    assert status_lines(raw) == 1 and end == "eof"
    assert parse_responses(raw)[0][0] == 200
    assert "/smuggled" not in probe.paths[before:]


def test_the_server_is_healthy_after_the_abuse(served: tuple[Server, int, AppProbe]) -> None:
    server, baseline, probe = served
    assert_healthy(server, baseline)
    assert "/smuggled" not in probe.paths
