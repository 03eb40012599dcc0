"""The opening handshake (RFC 6455 §4.2): check an upgrade request, answer 101 or deny.

Sans-IO like the rest: the caller's HTTP parser gives the method, the HTTP version and
the header list (``(name, value)`` bytes pairs, as httptools and ASGI scopes carry
them); this module returns response bytes and a ready ``WebSocketConnection``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .connection import DEFAULT_MAX_SIZE, WebSocketConnection
from .deflate import DeflateConfig, DeflateParams, PerMessageDeflate, negotiate, parse_extensions

__all__ = [
    "GUID",
    "HandshakeError",
    "UpgradeRequest",
    "accept",
    "accept_key",
    "deny",
    "is_upgrade_request",
    "parse_upgrade_request",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Headers = Sequence[tuple[bytes, bytes]]

# Reason phrases of the statuses a refusal usually carries, written out: ``from http
# import HTTPStatus`` finds ``mioreactor/workers/http`` (or an app's own ``http``
# package) first when that directory leads sys.path. Others go without a phrase,
# which RFC 9112 (section 4) allows.
_PHRASES = {
    200: b"OK", 301: b"Moved Permanently", 302: b"Found", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict",
    410: b"Gone", 418: b"I'm a Teapot", 426: b"Upgrade Required", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class HandshakeError(Exception):
    """The request is not a valid WebSocket upgrade; ``response()`` is what to send.

    Attributes:
        status: 400, or 426 for an unsupported ``Sec-WebSocket-Version``.
        reason: what was wrong (also the response body).
        headers: headers the response must carry (426: ``Sec-WebSocket-Version: 13``).
    """

    def __init__(self, status: int, reason: str, headers: Headers = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)

    def response(self) -> bytes:
        """The whole HTTP response (``Connection: close``)."""
        return deny(self.status, self.headers, self.reason.encode() + b"\n")


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A checked upgrade request: what the application chooses from.

    Attributes:
        key: the client's ``Sec-WebSocket-Key`` (base64 of 16 bytes).
        subprotocols: ``Sec-WebSocket-Protocol`` offers, in the client's order.
        extensions: ``Sec-WebSocket-Extensions`` offers as (name, params) pairs.
    """

    key: bytes
    subprotocols: tuple[str, ...]
    extensions: tuple[tuple[str, list[tuple[str, str | None]]], ...]


def _tokens(values: Iterable[bytes]) -> list[str]:
    return [t.strip().lower() for v in values for t in v.decode("latin-1").split(",") if t.strip()]


def _values(headers: Headers, name: bytes) -> list[bytes]:
    return [v for k, v in headers if k.lower() == name]


def is_upgrade_request(headers: Headers) -> bool:
    """True when the headers ask for WebSocket (``Upgrade: websocket``, ``Connection: upgrade``).

    Such a request is checked with ``parse_upgrade_request``; any other request is
    plain HTTP.
    """
    return ("websocket" in _tokens(_values(headers, b"upgrade"))
            and "upgrade" in _tokens(_values(headers, b"connection")))


def parse_upgrade_request(method: str | bytes, http_version: str, headers: Headers) -> UpgradeRequest:
    """Check an opening handshake (RFC 6455 §4.2.1).

    Raises:
        HandshakeError: with status 400, or 426 and ``Sec-WebSocket-Version: 13``
            when the client speaks another version.
    """
    if isinstance(method, bytes):
        method = method.decode("latin-1")
    if method != "GET":
        raise HandshakeError(400, "a WebSocket handshake is a GET")
    if http_version not in ("1.1", "2", "2.0", "3"):  # the version must be at least 1.1
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    if not is_upgrade_request(headers):
        raise HandshakeError(400, "missing Upgrade: websocket or Connection: upgrade")
    versions = _values(headers, b"sec-websocket-version")
    if len(versions) != 1 or versions[0].strip() != b"13":
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version",
                             [(b"Sec-WebSocket-Version", b"13")])
    keys = _values(headers, b"sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError(400, "exactly one Sec-WebSocket-Key is needed")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64")
    subprotocols = tuple(t.strip() for v in _values(headers, b"sec-websocket-protocol")
                         for t in v.decode("latin-1").split(",") if t.strip())
    try:
        extensions = tuple(parse_extensions(
            [v.decode("latin-1") for v in _values(headers, b"sec-websocket-extensions")]))
    except ValueError as exc:
        raise HandshakeError(400, f"bad Sec-WebSocket-Extensions: {exc}") from None
    return UpgradeRequest(key, subprotocols, extensions)


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def _check_header(name: bytes, value: bytes) -> None:
    for bad in (b"\r", b"\n", b"\0"):
        if bad in name or bad in value:
            raise ValueError(f"header {name!r} holds CR, LF or NUL")
    if not name or b":" in name or b" " in name:
        raise ValueError(f"bad header name {name!r}")


_OURS = frozenset({b"upgrade", b"connection", b"sec-websocket-accept",
                   b"sec-websocket-protocol", b"sec-websocket-extensions"})


def accept(
    request: UpgradeRequest,
    *,
    subprotocol: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    deflate: DeflateConfig | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    auto_pong: bool = True,
) -> tuple[bytes, WebSocketConnection]:
    """Accept: the 101 response bytes and the connection that reads what follows them.

    Args:
        request: from ``parse_upgrade_request``.
        subprotocol: one of ``request.subprotocols``, or None.
        headers: extra response headers (``Set-Cookie``, ``Server`` ...); the
            handshake's own headers may not be among them.
        deflate: offer permessage-deflate with these settings (None: never).
        max_size: the largest message accepted (after decompression).
        auto_pong: answer pings in the codec.

    Raises:
        ValueError: a subprotocol the client did not offer, or a bad extra header.
    """
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
    lines = [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Accept: " + accept_key(request.key) + b"\r\n"]
    if subprotocol is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1") + b"\r\n")
    params: DeflateParams | None = None
    if deflate is not None and request.extensions:
        params = negotiate(list(request.extensions), deflate)
        if params is not None:
            lines.append(b"Sec-WebSocket-Extensions: " + params.header_value().encode() + b"\r\n")
    for name, value in headers:
        _check_header(name, value)
        if name.lower() in _OURS:
            raise ValueError(f"header {name!r} is the handshake's own")
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    codec = None if params is None or deflate is None else PerMessageDeflate(params, deflate)
    return b"".join(lines), WebSocketConnection(max_size=max_size, deflate=codec,
                                                auto_pong=auto_pong)


def deny(status: int, headers: Iterable[tuple[bytes, bytes]] = (), body: bytes = b"") -> bytes:
    """A whole HTTP response refusing the upgrade (the ASGI ``websocket.http.response``).

    ``Content-Length`` and ``Connection: close`` are set here; the connection closes
    after it.

    Raises:
        ValueError: a status outside 200-599, or a bad header.
    """
    if not 200 <= status <= 599:
        raise ValueError("a denial is a final status, 200-599")
    phrase = _PHRASES.get(status, b"")
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    for name, value in headers:
        _check_header(name, value)
        if name.lower() in (b"content-length", b"connection", b"transfer-encoding"):
            continue
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)
