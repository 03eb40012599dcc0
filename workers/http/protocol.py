"""The sans-IO HTTP/1.1 request parser: bytes in, events out, every limit enforced.

``HttpProtocol.feed(data)`` drives ``httptools.HttpRequestParser`` (llhttp) and returns
the events the bytes completed, in order:

* a ``Request`` (the head: method, target, version, headers, framing, keep-alive),
* ``bytes`` (a piece of the body; never empty),
* ``END_OF_MESSAGE`` (the body, possibly empty, is complete),
* an ``HTTPError`` (the stream is broken; it is always the last event ever returned).

It never touches a socket, so it is tested with bytes alone, split anywhere.

Why the limits are counted here (a note on llhttp): llhttp has no size limits, and
httptools buffers a header field inside the parser until the field is complete, so a
client could grow one header without bound before any callback runs. The parser is
therefore never handed more bytes of a head than the head may still hold: while a head
is incomplete, ``feed`` slices its input at the remaining allowance
(``max_request_line + max_header_size``). A head that begins in the middle of a feed
(pipelining) may overrun by at most that one feed, which the worker bounds by its read
size. The target (414), header bytes and field count (431) are also counted exactly
in the callbacks.

Framing (RFC 9112 section 6) and the connection's fate are read from the fields by
``fields.read_fields``, the one place for those rules. After an error nothing more is
parsed, so no second request can be smuggled out of the bytes of one.

Chunk extensions (RFC 9112 7.1.1: "a server ought to limit the total length of chunk
extensions"): llhttp skips them without a callback, so the parser counts the bytes of
a chunked body on the wire against the data bytes it delivers. The framing overhead
(size lines, extensions, CRLFs, trailers) may reach ``max_header_size`` plus 64 bytes
per chunk; beyond that the request is 400. A real client's overhead is a few bytes per
chunk; a client trickling an endless extension is cut off (``ChunkFramer`` also
holds an incomplete size or trailer line only up to ``max_header_size``).

Only a well-formed version other than 1.0/1.1 is 505; a request line that breaks the
grammar (a bare LF or CR after the version, for example) is 400. The asterisk-form
target is only valid for OPTIONS (RFC 9112 3.2.4); with any other method it is 400.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from .chunks import ChunkFramer
from .errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    NotImplemented501,
    PayloadTooLarge,
    URITooLong,
    VersionNotSupported,
)
from .fields import read_fields
from .limits import HttpConfig
from .validate import (
    FORBIDDEN_TRAILERS,
    check_target,
)

__all__ = ["END_OF_MESSAGE", "Event", "HttpProtocol", "Marker", "Request"]


class Marker(enum.Enum):
    """Events that carry no data."""

    END_OF_MESSAGE = "end-of-message"


END_OF_MESSAGE = Marker.END_OF_MESSAGE

_CHUNK_OVERHEAD = 64  # framing bytes allowed per chunk, beyond max_header_size
_MAX_LEAD = 64  # bytes of empty lines tolerated before a request line
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(slots=True)
class Request:
    """A complete request head.

    Attributes:
        method: the method, as sent (``"GET"``).
        target: the raw request target bytes (``b"/a%20b?x=1"``).
        version: ``"1.0"`` or ``"1.1"``.
        headers: the fields in arrival order, raw ``(name, value)`` bytes.
        content_length: the declared length, or None (chunked or no body).
        chunked: the body uses the chunked transfer coding.
        keep_alive: the client allows another request on this connection.
        expect_continue: the client waits for ``100 Continue`` before the body.
        authority: the ``host[:port]`` of an absolute-form target, which replaces
            ``Host`` (RFC 9112 section 3.2.2); None for the other forms.
    """

    method: str
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    authority: bytes | None = None

    @property
    def has_body(self) -> bool:
        """True when a body follows the head (chunked or a non-zero length)."""
        return self.chunked or bool(self.content_length)


Event = Request | bytes | Marker | HTTPError

# What a discarded protocol holds instead of its llhttp parser: one for the process,
# never fed (``feed`` stops at ``_dead``), with no callbacks (httptools looks them up
# by name on the object it is given).
_SPENT = HttpRequestParser(object())


class HttpProtocol:
    """Turn the bytes of one connection into request events; see the module docstring.

    Args:
        config: the limits to enforce.

    Attributes:
        upgrade_rest: after a bodiless upgrade request (WebSocket), the bytes that
            followed its head in the same read: the new protocol's first bytes.
    """

    __slots__ = (
        "_body_bytes",
        "_body_left",
        "_chunk_wire",
        "_chunked",
        "_chunks",
        "_config",
        "_dead",
        "_defer_end",
        "_events",
        "_framer",
        "_head_done",
        "_head_limit",
        "_head_raw",
        "_header_bytes",
        "_headers",
        "_line_open",
        "_line_pos",
        "_line_src",
        "_parser",
        "_pending",
        "_raw_remaining",
        "_reusable",
        "_tail",
        "_upgrade",
        "_url",
        "_url_len",
        "upgrade_rest",
    )

    def __init__(self, config: HttpConfig) -> None:
        self._config = config
        self._parser = HttpRequestParser(self)
        self._events: list[Event] = []
        self._head_limit = config.max_request_line + config.max_header_size
        self._head_raw = 0  # bytes handed to llhttp while the current head is incomplete
        self._head_done = False
        self._url: list[bytes] = []
        self._url_len = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body_bytes = 0
        self._chunked = False  # the current message has a chunked body
        self._chunk_wire = 0  # bytes of that body read so far
        self._framer = ChunkFramer(config.max_header_size)  # its size lines and end
        self._chunks = 0
        self._pending: HTTPError | None = None
        self._dead = False
        self._upgrade = False
        self.upgrade_rest = b""  # bytes after a bodiless upgrade head, from its read
        self._defer_end = False
        self._raw_remaining = 0
        # False once a message has ended the connection for llhttp or for us (its
        # ``keep_alive``): llhttp then refuses any later byte ("Data after
        # Connection: close"), so the parser must never serve another message.
        self._reusable = True
        self._body_left = 0  # Content-Length body bytes still to come
        self._tail = b""  # the last bytes fed in this head (``_cut``)
        # The raw bytes the current head began in, and where: the request line is
        # checked there (``_take_line`` copies it when a head spans reads).
        self._line_src: bytes | bytearray = b""
        self._line_pos = 0
        self._line_open = True

    @property
    def broken(self) -> bool:
        """True after an error (or an upgrade request): later bytes are ignored."""
        return self._dead

    @property
    def in_head(self) -> bool:
        """True while a request head has begun arriving and is not complete."""
        return not self._head_done and self._head_raw > 0

    @property
    def at_rest(self) -> bool:
        """Between two messages with nothing carried over (no partial head, body,
        upgrade or error), and the last message kept the connection open for llhttp
        and for us: the parser may go on with another connection's bytes."""
        return self._reusable and not (
            self._dead or self._head_raw or self._head_done or self._raw_remaining or self._tail
        )

    def discard(self) -> None:
        """Parse nothing more: the connection now speaks another protocol (WebSocket).

        Frees llhttp's state and the last head's bytes at once: the parser and this
        object refer to each other (llhttp holds our callbacks), so without this they
        would wait for the cycle collector. ``feed`` returns ``[]`` from now on.
        """
        self._dead = True
        self._raw_remaining = 0
        self._parser = _SPENT
        self._events = []
        self._url = []
        self._headers = []
        self._tail = self._line_src = self.upgrade_rest = b""

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse ``data`` and return the events it completes.

        Args:
            data: the next bytes from the client, of any length and split anywhere.

        Returns:
            The events in order. After an ``HTTPError`` event, and after the body of an
            upgrade request, every later call returns an empty list.
        """
        if not data or (self._dead and not self._raw_remaining):
            return []
        events: list[Event] = []
        self._events = events
        try:
            self._feed(data if type(data) is bytes else bytes(data))
        except HTTPError as exc:
            self._dead = True
            self._pending = None
            # A verdict on the client's bytes, not a bug: its traceback holds the
            # frames of this parse (and so this object), and the llhttp error it
            # replaced holds them too; kept, they would make a reference cycle that
            # only the cyclic collector frees (docs/design.md, "No garbage cycles").
            exc.__traceback__ = None
            exc.__context__ = None
            events.append(exc)
        return events

    # -- parsing ---------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Hand ``data`` to llhttp one message section at a time.

        Every message ends at the end of a ``feed_data`` call, so the next head
        always begins at a known offset and its raw request line can be checked
        (llhttp accepts ``GET  /  HTTP/1.1``; RFC 9112 section 3 does not). A head
        ends after its first CRLF CRLF (see ``_cut``); a ``Content-Length`` body
        after its length; a chunked body where ``ChunkFramer`` finds its end.
        """
        feed_data = self._parser.feed_data
        head_limit = self._head_limit
        pos, size = 0, len(data)
        view: memoryview | None = None
        while pos < size:
            if self._raw_remaining or self._dead:
                self._feed_raw(memoryview(data)[pos:])
                return
            pieces: list[bytes | memoryview] | None = None
            if self._head_done:
                if self._chunked:
                    pieces = []
                    end = self._framer.frame(data, pos, size, pieces)[0]
                    self._chunk_wire += end - pos
                else:
                    end = min(size, pos + self._body_left)
            else:
                room = head_limit - self._head_raw
                if room <= 0:
                    raise HeaderFieldsTooLarge("request head exceeds the header allowance")
                limit = size if size - pos <= room else pos + room
                end = data.find(b"\r\n\r\n", pos, limit)
                end = self._cut(data, pos, limit) if end < 0 or self._tail else end + 4
                if not self._head_raw:  # a head begins here: remember where
                    self._line_src = data
                    self._line_pos = pos
                    self._line_open = True
                elif self._line_open:
                    self._take_line(data, pos, end)
                self._head_raw += end - pos
            if pieces is not None:
                chunk: bytes | memoryview = b""
            elif pos == 0 and end == size:
                chunk = data
            else:
                if view is None:
                    view = memoryview(data)
                chunk = view[pos:end]
            try:
                if pieces is None:
                    feed_data(chunk)
                else:
                    for piece in pieces:
                        feed_data(piece)
            except HttpParserUpgrade as upgrade:
                # The parser stops after the head of an upgrade request; what follows
                # is its body (by Content-Length) and then a foreign protocol.
                pos += int(upgrade.args[0])
                self._dead = True
                if not self._raw_remaining:  # no body: the new protocol starts here
                    self.upgrade_rest = data[pos:]  # one read at most (the rest is dropped)
                    return
                continue
            except HttpParserCallbackError as exc:
                raise self._pending or BadRequest(str(exc)) from None
            except HttpParserInvalidMethodError:
                raise self._method_error(bytes(self._line_src[self._line_pos : self._line_pos + 32])) from None
            except HttpParserError as exc:
                if self._pending is not None:
                    raise self._pending from None
                message = str(exc)
                if "invalid http version" in message.lower():
                    raise VersionNotSupported(message) from None
                raise BadRequest(message) from None
            pos = end
            if (
                self._chunked
                and self._head_done
                and self._chunk_wire - self._body_bytes
                > self._config.max_header_size + _CHUNK_OVERHEAD * self._chunks
            ):
                raise BadRequest("chunk extensions or framing too large")
            if not self._head_done and self._head_raw >= head_limit:
                if self._url_len >= self._config.max_request_line:
                    raise URITooLong("request target too long")
                raise HeaderFieldsTooLarge("request head exceeds the header allowance")

    def _cut(self, data: bytes, pos: int, limit: int) -> int:
        """The offset just after the next CRLF CRLF in ``data[pos:limit]``, else ``limit``.

        The last three bytes fed before ``pos`` in this head are carried in ``_tail``,
        so a CRLF CRLF split between two reads is found. Greedy search finds the end
        of every head: it follows a byte that is neither CR nor LF (the version
        digit, a field value, the ":" of an empty field), so no earlier CRLF CRLF
        overlaps it; empty lines before a request line are cut off on their own.
        """
        tail = self._tail
        if tail:
            j = (tail + data[pos : pos + 3]).find(b"\r\n\r\n")
            if j >= 0 and pos + j + 4 - len(tail) <= limit:
                self._tail = b""
                return pos + j + 4 - len(tail)
        i = data.find(b"\r\n\r\n", pos, limit)
        if i >= 0:
            self._tail = b""
            return i + 4
        self._tail = (tail + data[max(pos, limit - 3) : limit])[-3:]
        return limit

    def _take_line(self, data: bytes, pos: int, end: int) -> None:
        """A head spans reads: append to the raw bytes of its request line until it ends."""
        src = self._line_src
        if type(src) is bytes:  # what the head's first read held of it: copy that
            start = self._line_pos
            src = self._line_src = bytearray(src[start : start + self._head_raw])
            self._line_pos = 0
        src += data[pos:end]
        if 10 in data[pos:end]:
            line = src.lstrip(b"\r\n")
            if len(src) - len(line) > _MAX_LEAD:
                raise BadRequest("too many empty lines before the request line")
            self._line_open = 10 not in line

    def _feed_raw(self, data: memoryview) -> memoryview:
        """Deliver the Content-Length body of an upgrade request; drop what follows."""
        take = min(self._raw_remaining, len(data))
        if take:
            self._events.append(bytes(data[:take]))
            self._raw_remaining -= take
            if not self._raw_remaining and self._defer_end:
                self._defer_end = False
                self._events.append(END_OF_MESSAGE)
        return data[len(data) :]

    @staticmethod
    def _method_error(start: bytes) -> HTTPError:
        """501 for a well-formed but unknown method, 400 for garbage."""
        method = start.lstrip(b"\r\n").partition(b" ")[0]
        if method and all(c in _TOKEN_CHARS for c in method):
            return NotImplemented501(f"unknown method {method!r}")
        return BadRequest("invalid request line")

    def _fail(self, error: HTTPError) -> HTTPError:
        """Remember ``error`` so it survives httptools' callback-error wrapping."""
        self._pending = error
        return error

    # -- httptools callbacks -----------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url_len += len(url)
        if self._url_len > self._config.max_request_line:
            raise self._fail(URITooLong(f"request target longer than {self._config.max_request_line}"))
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        config = self._config
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > config.max_header_size:
            raise self._fail(HeaderFieldsTooLarge("header section too large"))
        if self._head_done:
            # A trailer field: counted against the limit, then dropped (WSGI has no
            # API for trailers), unless it is one RFC 9110 section 6.5.1 forbids.
            if name.lower() in FORBIDDEN_TRAILERS:
                raise self._fail(BadRequest(f"{name!r} is not allowed as a trailer field"))
            return
        # RFC 9110 section 5.5: OWS around a field value is not part of it. llhttp
        # strips it before the value only.
        value = value.rstrip(b" \t")  # the same object when there is nothing to strip
        headers = self._headers
        if len(headers) >= config.max_headers:
            raise self._fail(HeaderFieldsTooLarge(f"more than {config.max_headers} header fields"))
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Check the head (here and in ``validate``: the one place) and emit a ``Request``."""
        try:
            parser = self._parser
            raw_method = parser.get_method()
            method = raw_method.decode("ascii")
            url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
            # RFC 9112 section 3: request-line = method SP request-target SP HTTP-version.
            # llhttp skips runs of SP between the parts; with single SPs the line's CRLF
            # is at len(method) + len(url) + 10, any other layout it accepts is longer.
            src = self._line_src
            at = self._line_pos
            if src[at] == 13 or src[at] == 10:
                at = self._line_start()
            at += len(raw_method) + len(url) + 10
            if src[at : at + 2] != b"\r\n":
                raise BadRequest("request line is not 'method SP target SP version CRLF'")
            # The version is the line's last 8 bytes, "HTTP/x.y" (llhttp checked the
            # shape); read there, it costs a slice, where get_http_version() formats.
            digits = src[at - 3 : at]
            if digits == b"1.1":
                version = "1.1"
            elif digits == b"1.0":
                version = "1.0"
            else:
                raise VersionNotSupported(f"HTTP/{bytes(digits).decode('latin-1')}")
            self._line_src = b""  # it may be a whole read: keep no body bytes alive
            # (``int in bytes`` is a memchr; ``bytes in bytes`` costs ten times more.)
            # Bytes outside the target grammar are ``check_target``'s to refuse, not
            # llhttp's alone: a loose llhttp build (httptools 0.6) lets non-ASCII,
            # HTAB (9) and FF (12) into the target.
            if (
                url[0] == 47
                and url.isascii()
                and 37 not in url
                and 35 not in url
                and 92 not in url
                and 9 not in url
                and 12 not in url
                and method != "CONNECT"
            ):
                authority = None  # origin-form with nothing to look at: the common case
            else:
                authority = check_target(method, url)
            content_length, chunked, keep_alive, expect_continue = read_fields(
                self._headers, version, self._config.max_body_size
            )
            # Keep-alive only when llhttp agrees: a parser that llhttp has closed
            # refuses every later byte, so whichever reading says close wins, and
            # ``at_rest`` never lets a closed parser go back to the pool.
            keep_alive = keep_alive and parser.should_keep_alive()
            self._reusable = keep_alive
            self._upgrade = parser.should_upgrade()
            if self._upgrade:
                # WSGI cannot switch protocols: answer as a plain request, then close.
                if chunked:
                    raise NotImplemented501("chunked body on an upgrade request")
                keep_alive = False
            self._head_done = True
            self._chunked = chunked
            if chunked:
                self._framer.reset()
            self._body_left = content_length or 0
            self._chunk_wire = 0
            self._chunks = 0
            self._events.append(
                Request(
                    method,
                    url,
                    version,
                    self._headers,
                    content_length,
                    chunked,
                    keep_alive,
                    expect_continue,
                    authority,
                )
            )
        except HTTPError as exc:
            raise self._fail(exc) from None

    def _line_start(self) -> int:
        """Where the request line starts in ``_line_src``, past CRLF empty lines.

        RFC 9112 section 2.2: a server SHOULD ignore at least one empty line before
        the request line. Only CRLF ones are ignored, ``_MAX_LEAD`` bytes at most.
        """
        src, pos = self._line_src, self._line_pos
        window = src[pos : pos + _MAX_LEAD + 1]
        lead = window[: len(window) - len(window.lstrip(b"\r\n"))]
        if len(lead) > _MAX_LEAD or lead != b"\r\n" * (len(lead) // 2):
            raise BadRequest("an empty line before the request line is not CRLF")
        return pos + len(lead)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._body_left -= len(body)
        if self._body_bytes > self._config.max_body_size:
            raise self._fail(PayloadTooLarge("request body too large"))
        self._events.append(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_message_complete(self) -> None:
        if self._upgrade and self._headers_declare_body():
            self._raw_remaining = self._declared_length()
            self._defer_end = True
        else:
            self._events.append(END_OF_MESSAGE)
        self._head_done = False
        self._chunked = False
        self._head_raw = 0
        # Ready for the next message here rather than in an ``on_message_begin``
        # callback: one Python call less per request (httptools calls only the
        # callbacks that exist). ``__init__`` sets the same for the first message.
        self._url = []
        self._url_len = 0
        self._headers = []
        self._header_bytes = 0
        self._body_bytes = 0

    def _declared_length(self) -> int:
        for name, value in self._headers:
            if name.lower() == b"content-length":
                return int(value)
        return 0

    def _headers_declare_body(self) -> bool:
        return self._declared_length() > 0
