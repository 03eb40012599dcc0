"""The sans-IO parser, with bytes alone."""

from __future__ import annotations

import pytest
from mioreactor.workers.http import (
    END_OF_MESSAGE,
    BadRequest,
    HeaderFieldsTooLarge,
    HttpConfig,
    HTTPError,
    HttpProtocol,
    NotImplemented501,
    PayloadTooLarge,
    Request,
    URITooLong,
    VersionNotSupported,
)

CFG = HttpConfig()


def feed_all(data: bytes, config: HttpConfig = CFG, step: int | None = None) -> list[object]:
    proto = HttpProtocol(config)
    if step is None:
        return list(proto.feed(data))
    events: list[object] = []
    for i in range(0, len(data), step):
        events.extend(proto.feed(data[i : i + step]))
    return events


def normalise(events: list[object]) -> list[object]:
    """Merge adjacent body chunks so differently split feeds compare equal."""
    out: list[object] = []
    for e in events:
        if isinstance(e, bytes) and out and isinstance(out[-1], bytes):
            out[-1] = out[-1] + e
        elif isinstance(e, HTTPError):
            out.append((type(e), e.status))
        else:
            out.append(e)
    return out


PIPELINE = (
    b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n"
    b"GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
)


def test_pipelined_requests_parse_in_order_with_bodies() -> None:
    events = normalise(feed_all(PIPELINE))
    kinds = [e.target if isinstance(e, Request) else e for e in events]
    assert kinds == [b"/a?x=1", END_OF_MESSAGE, b"/b", b"hello", END_OF_MESSAGE,
                     b"/c", b"abcde", END_OF_MESSAGE, b"/d", END_OF_MESSAGE]
    reqs = [e for e in events if isinstance(e, Request)]
    assert [r.keep_alive for r in reqs] == [True, True, True, True]
    assert reqs[2].chunked and reqs[2].content_length is None
    assert reqs[1].content_length == 5 and reqs[3].version == "1.0"
    assert reqs[2].headers == [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")]  # trailer dropped


def test_splitting_at_every_byte_boundary_gives_the_same_events() -> None:
    whole = normalise(feed_all(PIPELINE))
    for cut in range(1, len(PIPELINE)):
        proto = HttpProtocol(CFG)
        events = proto.feed(PIPELINE[:cut]) + proto.feed(PIPELINE[cut:])
        assert normalise(events) == whole, cut
    assert normalise(feed_all(PIPELINE, step=1)) == whole


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
    ],
)
def test_keep_alive_follows_version_and_connection_header(head: bytes, keep: bool) -> None:
    (req, end) = feed_all(head)
    assert isinstance(req, Request) and req.keep_alive is keep and end is END_OF_MESSAGE


def test_expect_100_continue_is_flagged_on_1_1_only() -> None:
    (req, *_) = feed_all(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert isinstance(req, Request) and req.expect_continue
    (req10, *_) = feed_all(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert isinstance(req10, Request) and not req10.expect_continue


ERRORS = [
    # smuggling and framing (RFC 9112 section 6)
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BadRequest),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", NotImplemented501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\n", BadRequest),
    # syntax
    (b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n folded\r\n\r\n", BadRequest),
    (b"GET / HTTP/1.1\r\nHost: h\r\nA: b\x00c\r\n\r\n", BadRequest),
    (b"GET /a b HTTP/1.1\r\n\r\n", BadRequest),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", BadRequest),
    (b"FOO / HTTP/1.1\r\n\r\n", NotImplemented501),
    (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", NotImplemented501),
    # versions
    (b"GET / HTTP/2.0\r\n\r\n", VersionNotSupported),
    (b"GET / HTTP/0.9\r\n\r\n", VersionNotSupported),
    (b"GET / HTTP/1.2\r\n\r\n", VersionNotSupported),
]


@pytest.mark.parametrize(("data", "error"), ERRORS)
def test_malformed_requests_give_one_error_and_nothing_after(data: bytes, error: type[HTTPError]) -> None:
    smuggled = data + b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
    for step in (None, 1, 7):
        proto = HttpProtocol(CFG)
        events: list[object] = []
        for i in range(0, len(smuggled), step or len(smuggled)):
            events.extend(proto.feed(smuggled[i : i + (step or len(smuggled))]))
        errors = [e for e in events if isinstance(e, HTTPError)]
        assert len(errors) == 1 and type(errors[0]) is error, (step, events)
        assert events[-1] is errors[0]
        assert not any(isinstance(e, Request) and e.target == b"/smuggled" for e in events)
        assert proto.broken and proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []


def test_request_target_over_the_limit_is_414() -> None:
    cfg = HttpConfig(max_request_line=100)
    ok = feed_all(b"GET /" + b"a" * 99 + b" HTTP/1.1\r\nHost: h\r\n\r\n", cfg)
    assert isinstance(ok[0], Request)
    for step in (None, 1, 10):
        events = feed_all(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", cfg, step)
        assert isinstance(events[-1], URITooLong)


def test_header_bytes_and_count_over_the_limit_are_431() -> None:
    cfg = HttpConfig(max_header_size=1000, max_headers=5)
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 1000 + b"\r\n\r\n"
    many = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(6)) + b"\r\n"
    five = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(4)) + b"\r\n"
    for step in (None, 1, 64):
        assert isinstance(feed_all(big, cfg, step)[-1], HeaderFieldsTooLarge)
        assert isinstance(feed_all(many, cfg, step)[-1], HeaderFieldsTooLarge)
        assert feed_all(five, cfg, step)[-1] is END_OF_MESSAGE


def test_a_never_ending_header_line_is_cut_off_at_the_allowance() -> None:
    cfg = HttpConfig(max_request_line=100, max_header_size=1000)
    proto = HttpProtocol(cfg)
    assert proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX: ") == []
    events: list[object] = []
    for _ in range(100):
        events += proto.feed(b"v" * 100)
    assert len(events) == 1 and isinstance(events[0], HeaderFieldsTooLarge)


def test_body_over_the_limit_is_413_declared_or_chunked() -> None:
    cfg = HttpConfig(max_body_size=10)
    declared = feed_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", cfg)
    assert len(declared) == 1 and isinstance(declared[0], PayloadTooLarge)
    chunked = feed_all(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n", cfg)
    assert isinstance(chunked[0], Request) and isinstance(chunked[-1], PayloadTooLarge)
    exact = feed_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", cfg)
    assert exact[-1] is END_OF_MESSAGE


def test_upgrade_request_is_served_plainly_and_nothing_after_is_parsed() -> None:
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\n"
            b"abcGET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    for step in (None, 1):
        events = normalise(feed_all(data, step=step))
        assert len(events) == 3 and isinstance(events[0], Request)
        assert not events[0].keep_alive and events[1:] == [b"abc", END_OF_MESSAGE]


def test_leading_blank_lines_between_requests_are_tolerated() -> None:
    events = feed_all(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(events[0], Request) and events[-1] is END_OF_MESSAGE
