"""The strict request-head rules (RFC 9112, RFC 9110), bytes in and status out.

Every rule of ``mioreactor.workers.http.validate`` and of ``HttpProtocol`` that llhttp does not
decide alone has a test here, named as the rule. ``answer(data)`` is the status the
server would send: the error's status, or 200 when the bytes make complete requests.
Each case is also fed split at every byte, and followed by a second request that must
never be parsed after an error.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mioreactor.workers.http import END_OF_MESSAGE, HttpConfig, HTTPError, HttpProtocol, Request

CFG = HttpConfig()
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def answer(data: bytes, config: HttpConfig = CFG) -> int:
    """The status for ``data`` fed whole; the same status fed byte by byte."""
    statuses = set()
    for step in (len(data), 1):
        proto = HttpProtocol(config)
        events: list[object] = []
        for i in range(0, len(data + NEXT), step):
            events.extend(proto.feed((data + NEXT)[i : i + step]))
        errors = [e for e in events if isinstance(e, HTTPError)]
        if errors:
            assert len(errors) == 1 and events[-1] is errors[0], events
            assert not any(isinstance(e, Request) and e.target == b"/next" for e in events)
            assert proto.broken
            statuses.add(errors[0].status)
        else:
            assert events[-1] is END_OF_MESSAGE
            assert [e.target for e in events if isinstance(e, Request)][-1] == b"/next"
            statuses.add(200)
    assert len(statuses) == 1, statuses
    return statuses.pop()


def head(target: bytes = b"/", *, method: bytes = b"GET", host: bytes | None = b"h", extra: bytes = b"") -> bytes:
    lines = method + b" " + target + b" HTTP/1.1\r\n"
    if host is not None:
        lines += b"Host: " + host + b"\r\n"
    return lines + extra + b"\r\n"


def request_of(data: bytes) -> Request:
    events = HttpProtocol(CFG).feed(data)
    assert isinstance(events[0], Request), events
    return events[0]


# -- the request line (RFC 9112 section 3) -------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET   /   HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /\tHTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",
    ],
)
def test_a_request_line_with_anything_but_single_spaces_is_400(data: bytes) -> None:
    assert answer(data) == 400


def test_a_request_line_split_across_reads_is_checked_the_same() -> None:
    data = b"GET  /long" + b"x" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    proto = HttpProtocol(CFG)
    events = proto.feed(data[:5]) + proto.feed(data[5:2000]) + proto.feed(data[2000:])
    assert [type(e).__name__ for e in events] == ["BadRequest"]
    assert answer(b"GET /long" + b"x" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 200


def test_one_or_a_few_empty_crlf_lines_before_the_request_line_are_ignored() -> None:
    assert answer(b"\r\n" + head()) == 200
    assert answer(b"\r\n\r\n\r\n" + head()) == 200
    proto = HttpProtocol(CFG)
    events = proto.feed(b"\r\n") + proto.feed(b"\r") + proto.feed(b"\n" + head())
    assert isinstance(events[0], Request)


def test_empty_lines_that_are_bare_lf_or_too_many_are_400() -> None:
    assert answer(b"\n" + head()) == 400
    assert answer(b"\r\n" * 40 + head()) == 400


def test_a_well_formed_unknown_method_is_501_and_a_malformed_one_400() -> None:
    assert answer(head(method=b"FOO")) == 501
    assert answer(head(method=b"G@T")) == 400
    assert answer(head(method=b"get")) == 501


def test_an_http_version_other_than_1_0_and_1_1_is_505() -> None:
    assert answer(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n") == 505
    assert answer(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n") == 505


# -- the request target (RFC 9112 section 3.2) ---------------------------------------


def test_origin_form_is_accepted_for_every_method() -> None:
    for method in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"):
        assert answer(head(b"/a/b?c=d&e", method=method)) == 200, method
    assert answer(head(b"//double//slash")) == 200
    assert answer(head(b"/a%20b%2Fc?q=%7e")) == 200


def test_absolute_form_http_and_https_with_a_valid_authority_is_accepted() -> None:
    for target in (b"http://example.com/a?b", b"https://example.com:8443/", b"HTTP://Example.com",
                   b"http://[::1]:8080/x", b"http://10.0.0.1?q"):
        assert answer(head(target)) == 200, target
    assert request_of(head(b"http://example.com:81/a?b")).authority == b"example.com:81"


@pytest.mark.parametrize(
    "target",
    [
        b"s://]ufd/:",
        b"ftp://example.com/",
        b"http:///path",
        b"http://user@example.com/",
        b"http://user:pw@example.com/",
        b"http://example.com:8x/",
        b"http://example.com:/",
        b"http://example.com:99999/",
        b"http://a,b/",
        b"http://[::1/",
        b"http://[zz::1]/",
    ],
)
def test_absolute_form_with_another_scheme_or_a_bad_authority_is_400(target: bytes) -> None:
    assert answer(head(target)) == 400


def test_authority_form_is_only_for_connect_which_is_501() -> None:
    assert answer(head(b"example.com:443", method=b"CONNECT")) == 501
    assert answer(head(b"example.com", method=b"CONNECT")) == 400
    assert answer(head(b"/", method=b"CONNECT")) == 400
    assert answer(head(b"example.com:443")) == 400


def test_asterisk_form_is_only_for_options() -> None:
    assert answer(head(b"*", method=b"OPTIONS")) == 200
    assert answer(head(b"*")) == 400
    assert answer(head(b"*x", method=b"OPTIONS")) == 400
    assert answer(head(b"**", method=b"OPTIONS")) == 400


@pytest.mark.parametrize(
    "target",
    [b"/a#frag", b"/a?b#c", b"/a\\b", b"/%00", b"/a%0d%0aX:%20y", b"/%0A", b"/%zz", b"/%4", b"/?q=%"],
)
def test_a_fragment_backslash_nul_cr_lf_or_bad_percent_escape_in_the_target_is_400(target: bytes) -> None:
    assert answer(head(target)) == 400


@pytest.mark.parametrize("target", [b"/\xc3\xa9", b"/?\xc0\xaf", b"/\x7f", b"/a\x01", b"/\xff"])
def test_bytes_outside_visible_ascii_in_the_target_are_400(target: bytes) -> None:
    assert answer(head(target)) == 400


# -- Host (RFC 9112 section 3.2, RFC 9110 section 7.2) -------------------------------


def test_an_http_1_1_request_without_host_is_400_and_http_1_0_may_omit_it() -> None:
    assert answer(head(host=None)) == 400
    assert answer(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") == 200


def test_two_host_lines_are_400_even_when_equal() -> None:
    assert answer(head(extra=b"Host: h\r\n")) == 400
    assert answer(head(extra=b"Host: other\r\n")) == 400
    assert answer(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n") == 400


@pytest.mark.parametrize(
    "value",
    [b"", b"user@h", b"h/x", b"h:8x", b"h:", b"a,b", b"a, b", b"h:99999", b"[::1", b"[v1.x]", b"h h",
     b"[fe80::1%25eth0]"],
)
def test_a_host_that_is_not_uri_host_and_port_is_400(value: bytes) -> None:
    assert answer(head(host=value)) == 400


@pytest.mark.parametrize(
    "value",
    [b"h", b"example.com:8080", b"127.0.0.1", b"[::1]:80", b"xn--bcher-kva.example", b"under_score.h",
     b"h.:1", b"%41", b" h \t"],
)
def test_a_valid_host_is_accepted(value: bytes) -> None:
    assert answer(head(host=value)) == 200


def test_absolute_form_still_needs_one_valid_host_line() -> None:
    assert answer(head(b"http://example.com/", host=None)) == 400
    assert answer(head(b"http://example.com/", host=b"a@b")) == 400
    assert answer(head(b"http://example.com/", host=b"other.example")) == 200


# -- fields (RFC 9112 section 5, RFC 9110 section 5.5) -------------------------------


@pytest.mark.parametrize(
    "line",
    [b"X: a\rb", b"X: a\x00b", b"X: a\x01b", b"X: a\x7fb", b"X : a", b"X(: a", b": a", b"X: a\nY: b",
     b"X\x00: a"],
)
def test_bad_characters_in_a_field_name_or_value_are_400(line: bytes) -> None:
    assert answer(head(extra=line + b"\r\n")) == 400


def test_an_obs_fold_line_is_400() -> None:
    assert answer(head(extra=b"X: a\r\n b\r\n")) == 400
    assert answer(head(extra=b"X: a\r\n\tb\r\n")) == 400


def test_ows_around_a_field_value_is_stripped() -> None:
    request = request_of(head(extra=b"X: \t a b \t \r\nY:v\r\n"))
    assert request.headers[1:] == [(b"X", b"a b"), (b"Y", b"v")]
    assert answer(head(extra=b"Content-Length: 3 \r\n") + b"abc") == 200


def test_obs_text_in_a_field_value_is_kept() -> None:
    assert request_of(head(extra=b"X: caf\xe9\r\n")).headers[1] == (b"X", b"caf\xe9")


# -- Content-Length (RFC 9112 section 6.3) -------------------------------------------


def test_content_length_with_leading_zeros_is_400() -> None:
    assert answer(head(method=b"POST", extra=b"Content-Length: 05\r\n") + b"hello") == 400
    assert answer(head(method=b"POST", extra=b"Content-Length: 00\r\n")) == 400
    assert answer(head(method=b"POST", extra=b"Content-Length: 0\r\n")) == 200
    assert answer(head(method=b"POST", extra=b"Content-Length: 10\r\n") + b"0123456789") == 200


# -- chunked bodies and trailers (RFC 9112 section 7.1) ------------------------------

CHUNKED = head(method=b"POST", extra=b"Transfer-Encoding: chunked\r\n")


def test_a_chunk_extension_with_bws_before_the_semicolon_is_accepted() -> None:
    assert answer(CHUNKED + b"5 ;name=value\r\nhello\r\n0\r\n\r\n") == 200
    assert answer(CHUNKED + b"5\t;name=value\r\nhello\r\n0\r\n\r\n") == 200
    assert answer(CHUNKED + b"5;name=value;n2=\"quoted\"\r\nhello\r\n0\r\n\r\n") == 200


def test_a_chunk_extension_with_bws_after_the_semicolon_and_around_equals_is_accepted() -> None:
    # Valid per RFC 9112 section 7.1.1; llhttp alone refuses it (ChunkFramer).
    assert answer(CHUNKED + b"5 ; name = value\r\nhello\r\n0 ; last = \"x\\\"y\"\r\n\r\n") == 200
    assert answer(CHUNKED + b"5;name =value\r\nhello\r\n0\r\n\r\n") == 200
    events = HttpProtocol(CFG).feed(CHUNKED + b"5\t;\tn\t=\tv ; m\r\nhello\r\n3 ;x\r\nabc\r\n0\r\n\r\n" + NEXT)
    assert b"".join(e for e in events if isinstance(e, bytes)) == b"helloabc"
    assert [e.target for e in events if isinstance(e, Request)] == [b"/", b"/next"]


@pytest.mark.parametrize(
    "line",
    [b"5;", b"5; ", b"5;=v", b"5;a=", b"5;a b", b"5;a=\"open", b"5;a=b c", b"5;a\x00", b"5;a=b ", b"5;;a",
     b"5 ;", b"5;a=\"x\x01\""],
)
def test_a_chunk_extension_that_breaks_the_grammar_is_400(line: bytes) -> None:
    assert answer(CHUNKED + line + b"\r\nhello\r\n0\r\n\r\n") == 400


def test_a_chunk_size_with_space_inside_before_or_after_it_is_400() -> None:
    assert answer(CHUNKED + b"5 5\r\nhello\r\n0\r\n\r\n") == 400
    assert answer(CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n") == 400
    assert answer(CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n") == 400


def test_a_chunk_size_line_longer_than_the_header_allowance_is_400() -> None:
    cfg = HttpConfig(max_header_size=1000)
    proto = HttpProtocol(cfg)
    events = proto.feed(CHUNKED + b"5;" + b"e" * 600)
    events += proto.feed(b"e" * 600)
    assert isinstance(events[-1], HTTPError) and events[-1].status == 400


def test_harmless_trailer_fields_are_dropped() -> None:
    events = HttpProtocol(CFG).feed(CHUNKED + b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
    assert isinstance(events[0], Request) and events[-1] is END_OF_MESSAGE
    assert (b"X-Checksum", b"abc") not in events[0].headers


@pytest.mark.parametrize(
    "name", [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Authorization", b"Expect",
             b"X-Forwarded-For", b"Content-Type", b"Trailer"],
)
def test_a_trailer_field_that_would_change_framing_or_routing_is_400(name: bytes) -> None:
    assert answer(CHUNKED + b"5\r\nhello\r\n0\r\n" + name + b": x\r\n\r\n") == 400


def test_a_chunked_body_ending_in_crlf_bytes_keeps_the_next_request_apart() -> None:
    data = CHUNKED + b"4\r\n\r\n\r\n\r\n0\r\n\r\n"
    events = HttpProtocol(CFG).feed(data + NEXT)
    assert b"".join(e for e in events if isinstance(e, bytes)) == b"\r\n\r\n"
    assert [e.target for e in events if isinstance(e, Request)] == [b"/", b"/next"]


# -- Expect (RFC 9110 section 10.1.1) ------------------------------------------------


def test_an_expectation_other_than_100_continue_is_417() -> None:
    assert answer(head(method=b"PUT", extra=b"Expect: 100-continue\r\nContent-Length: 1\r\n") + b"x") == 200
    assert answer(head(method=b"PUT", extra=b"Expect: 100-Continue\r\nContent-Length: 1\r\n") + b"x") == 200
    assert answer(head(extra=b"Expect: fly\r\n")) == 417
    assert answer(head(extra=b"Expect: 100-continue, fly\r\n")) == 417
    assert answer(b"GET / HTTP/1.0\r\nExpect: fly\r\n\r\n") == 417


# -- pipelining keeps messages apart -------------------------------------------------


def test_a_malformed_request_line_after_good_pipelined_requests_is_found() -> None:
    good = head(b"/1") + head(b"/2", method=b"POST", extra=b"Content-Length: 2\r\n") + b"hi"
    events = HttpProtocol(CFG).feed(good + b"GET  /3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [e.target for e in events if isinstance(e, Request)] == [b"/1", b"/2"]
    assert isinstance(events[-1], HTTPError) and events[-1].status == 400


def test_a_body_that_looks_like_a_request_line_does_not_hide_a_bad_one() -> None:
    body = b"GET /3 HTTP/1.1\r\n"
    data = head(b"/1", method=b"POST", extra=b"Content-Length: %d\r\n" % len(body)) + body
    events = HttpProtocol(CFG).feed(data + b"GET  /3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(events[-1], HTTPError) and events[-1].status == 400


# -- the environ (RFC 9112 section 3.2.2) --------------------------------------------


def test_an_absolute_form_authority_replaces_host_in_the_environ() -> None:
    from mioreactor.workers.http.body import EMPTY_BODY
    from mioreactor.workers.http.wsgi import base_environ, request_environ

    base = base_environ(("10.0.0.7", 5000), ("127.0.0.1", 8000), CFG)
    env = request_environ(base, request_of(head(b"http://example.com:81/a%20b?x=1", host=b"evil")), EMPTY_BODY,
                          frozenset())
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com:81", "example.com", "81")
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/a b", "x=1")
    env = request_environ(base, request_of(head(b"https://Example.com?q", host=b"evil")), EMPTY_BODY, frozenset())
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("Example.com", "Example.com", "443")
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["RAW_URI"]) == ("/", "q", "https://Example.com?q")
    env = request_environ(base, request_of(head(b"/p", host=b"h:9")), EMPTY_BODY, frozenset())
    assert (env["HTTP_HOST"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("h:9", "127.0.0.1", "8000")


# -- message boundaries under any split (the request-line check depends on them) -----

_BODY = st.binary(max_size=40).map(lambda b: b.replace(b"x", b"\r\n\r\n"))


@st.composite
def _pipeline(draw: st.DrawFn) -> bytes:
    out = b""
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["get", "sized", "chunked", "bad-line", "lead"]))
        if kind == "get":
            out += head(b"/%d" % i)
        elif kind == "sized":
            body = draw(_BODY)
            out += head(b"/%d" % i, method=b"POST", extra=b"Content-Length: %d\r\n" % len(body)) + body
        elif kind == "chunked":
            chunks = draw(st.lists(_BODY.filter(bool), max_size=3))
            out += head(b"/%d" % i, method=b"POST", extra=b"Transfer-Encoding: chunked\r\n")
            ext = draw(st.sampled_from([b"", b";a=b", b' ; a = "q;\\" =x"', b"\t;x", b";y ;z=1"]))
            out += b"".join(b"%x%b\r\n%b\r\n" % (len(c), ext, c) for c in chunks) + b"0" + ext + b"\r\n"
            out += draw(st.sampled_from([b"", b"X-T: 1\r\n"])) + b"\r\n"
        elif kind == "bad-line":
            out += b"GET  /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i
        else:
            out += b"\r\n" + head(b"/%d" % i)
    return out


@settings(max_examples=300, deadline=None)
@given(data=_pipeline(), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_any_split_of_a_pipeline_gives_the_events_of_the_whole(data: bytes, cuts: list[int]) -> None:
    def summary(events: list[object]) -> list[object]:
        out: list[object] = []
        for e in events:
            if isinstance(e, bytes) and out and isinstance(out[-1], bytes):
                out[-1] += e
            else:
                out.append(e.target if isinstance(e, Request) else e.status if isinstance(e, HTTPError) else e)
        return out

    whole = summary(HttpProtocol(CFG).feed(data))
    proto = HttpProtocol(CFG)
    events: list[object] = []
    last = 0
    for cut in [*sorted(c for c in cuts if c < len(data)), len(data)]:
        events += proto.feed(data[last:cut])
        last = cut
    assert summary(events) == whole
    # a malformed request line is always found, wherever it sits in the pipeline
    assert (b"GET  /" in data) == (400 in whole)
