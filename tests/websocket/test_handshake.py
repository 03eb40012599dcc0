"""The opening handshake alone: what is accepted, what is refused and with which status,
the 101 response and permessage-deflate negotiation (RFC 6455 §4.2, RFC 7692 §7.1)."""

from __future__ import annotations

import pytest
from mioreactor.workers.websocket import (
    DeflateConfig,
    HandshakeError,
    accept,
    accept_key,
    deny,
    is_upgrade_request,
    parse_upgrade_request,
)
from mioreactor.workers.websocket.deflate import negotiate, parse_extensions

pytestmark = pytest.mark.timeout(30)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def headers(**extra: str) -> list[tuple[bytes, bytes]]:
    base = {"host": "x", "upgrade": "websocket", "connection": "keep-alive, Upgrade",
            "sec-websocket-key": KEY.decode(), "sec-websocket-version": "13"}
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return [(k.encode(), v.encode()) for k, v in base.items() if v]


def test_the_accept_key_is_the_rfcs_example() -> None:
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_request_gets_101_with_the_accept_header() -> None:
    request = parse_upgrade_request("GET", "1.1", headers(sec_websocket_protocol="chat, superchat"))
    assert request.subprotocols == ("chat", "superchat")
    response, conn = accept(request, subprotocol="superchat", headers=[(b"Set-Cookie", b"a=1")])
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert b"\r\nSec-WebSocket-Protocol: superchat\r\n" in response
    assert b"\r\nSet-Cookie: a=1\r\n" in response
    assert response.endswith(b"\r\n\r\n")
    assert conn.deflate is None


def test_header_names_and_tokens_are_case_insensitive() -> None:
    hs = [(k.upper(), v.upper() if k in (b"upgrade", b"connection") else v)
          for k, v in headers()]
    assert is_upgrade_request(hs)
    parse_upgrade_request(b"GET", "1.1", hs)


@pytest.mark.parametrize(
    ("method", "version", "hs", "status"),
    [
        ("POST", "1.1", headers(), 400),
        ("GET", "1.0", headers(), 400),
        ("GET", "1.1", headers(upgrade="h2c"), 400),
        ("GET", "1.1", headers(connection="keep-alive"), 400),
        ("GET", "1.1", headers(sec_websocket_key=""), 400),
        ("GET", "1.1", headers(sec_websocket_key="c2hvcnQ="), 400),  # 5 bytes
        ("GET", "1.1", headers(sec_websocket_key="not base64!!!!!!!!!!!!=="), 400),
        ("GET", "1.1", headers(sec_websocket_version="8"), 426),
        ("GET", "1.1", headers(sec_websocket_version=""), 426),
        ("GET", "1.1", headers(sec_websocket_extensions='x; a="unterminated'), 400),
    ],
)
def test_bad_requests_are_refused_with_their_status(
    method: str, version: str, hs: list[tuple[bytes, bytes]], status: int
) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_upgrade_request(method, version, hs)
    assert info.value.status == status
    response = info.value.response()
    assert response.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nConnection: close\r\n" in response
    if status == 426:
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


def test_two_keys_are_refused() -> None:
    with pytest.raises(HandshakeError):
        parse_upgrade_request("GET", "1.1", [*headers(), (b"sec-websocket-key", KEY)])


def test_a_subprotocol_not_offered_cannot_be_chosen() -> None:
    request = parse_upgrade_request("GET", "1.1", headers())
    with pytest.raises(ValueError):
        accept(request, subprotocol="chat")


@pytest.mark.parametrize("bad", [(b"X-A", b"v\r\nInjected: 1"), (b"Bad Name", b"v"),
                                 (b"Sec-WebSocket-Accept", b"forged")])
def test_extra_headers_are_checked(bad: tuple[bytes, bytes]) -> None:
    request = parse_upgrade_request("GET", "1.1", headers())
    with pytest.raises(ValueError):
        accept(request, headers=[bad])


def test_a_denial_is_a_whole_response_that_closes() -> None:
    response = deny(403, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"99")], b"no")
    assert response == (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: 2\r\nConnection: close\r\n\r\nno")
    with pytest.raises(ValueError):
        deny(101)


def offer(value: str, config: DeflateConfig | None = None) -> str | None:
    params = negotiate(parse_extensions([value]), config or DeflateConfig())
    return None if params is None else params.header_value()


@pytest.mark.parametrize(
    ("offered", "agreed"),
    [
        ("permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
        ("permessage-deflate; client_max_window_bits",
         "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
        ("permessage-deflate; client_max_window_bits=10",
         "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10"),
        ("permessage-deflate; server_max_window_bits=10",
         "permessage-deflate; server_max_window_bits=10"),
        ('permessage-deflate; server_max_window_bits="11"',
         "permessage-deflate; server_max_window_bits=11"),
        ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
         "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
         " server_max_window_bits=12"),
        # the first offer is unacceptable (8 bits), the second is taken
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate",
         "permessage-deflate; server_max_window_bits=12"),
        ("x-webkit-deflate-frame, permessage-deflate",
         "permessage-deflate; server_max_window_bits=12"),
        ("permessage-deflate; unknown=1", None),
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; server_no_context_takeover=1", None),
        ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
        ("foo", None),
    ],
)
def test_permessage_deflate_offers_are_negotiated(offered: str, agreed: str | None) -> None:
    assert offer(offered) == agreed


def test_full_windows_are_not_written_out() -> None:
    config = DeflateConfig(server_max_window_bits=15, client_max_window_bits=15)
    assert offer("permessage-deflate; client_max_window_bits", config) == "permessage-deflate"


def test_accept_with_deflate_answers_the_offer_and_configures_the_connection() -> None:
    request = parse_upgrade_request("GET", "1.1", headers(
        sec_websocket_extensions="permessage-deflate; client_max_window_bits"))
    response, conn = accept(request, deflate=DeflateConfig())
    assert b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12;" \
           b" client_max_window_bits=12\r\n" in response
    assert conn.deflate is not None
    response, conn = accept(request, deflate=None)
    assert b"Sec-WebSocket-Extensions" not in response and conn.deflate is None


def test_extension_parsing_is_linear_on_a_long_header() -> None:
    import time
    value = "permessage-deflate; " + "a=" + '"' + "b" * 200_000 + '"' + ", x" * 20_000
    start = time.perf_counter()
    with pytest.raises(ValueError):
        parse_extensions([value + '"'])
    assert len(parse_extensions([value])) == 20_001
    assert time.perf_counter() - start < 2
