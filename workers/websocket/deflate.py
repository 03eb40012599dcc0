"""permessage-deflate (RFC 7692): negotiation and the per-connection compressor.

Untrusted bytes (../design.md "Untrusted bytes"): a compressed message is inflated with
``decompressobj.decompress(data, max_length)``, never unbounded, so a zip bomb stops at
the message size limit plus one byte and fails with 1009. Memory per connection is
chosen by the window bits: the defaults (12 bits both ways, memLevel 5, as the
``websockets`` library chooses) keep a compressing connection near 50 KiB of zlib state
(38 KiB the compressor, 11 KiB the decompressor with its 4 KiB window) instead of the
~300 KiB of zlib's own defaults. Neither context exists before the first message that
needs it (an idle WebSocket holds none), and ``release_idle`` lets a quiet
connection's compressor go (the ASGI WebSocket calls it at every keep-alive ping).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["DeflateConfig", "DeflateParams", "PerMessageDeflate", "negotiate", "parse_extensions"]

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True, slots=True)
class DeflateConfig:
    """What the server accepts and asks for in permessage-deflate.

    Attributes:
        server_max_window_bits: the window we compress with, 9-15 (lower if the
            client asks). Offers asking for 8 are declined: zlib cannot make raw
            deflate streams with a 256-byte window.
        client_max_window_bits: the window we ask the client to compress with, 9-15,
            when its offer allows us to ask (``client_max_window_bits`` in the offer).
        server_no_context_takeover: reset our compressor after every message (less
            memory between messages, worse ratio).
        client_no_context_takeover: ask the client to reset its compressor after
            every message; we then reset our decompressor too.
        compress_level: zlib level for what we send.
        mem_level: zlib memLevel for what we send (1-9).
        min_size: messages shorter than this are sent uncompressed (RFC 7692 lets
            each message choose).
    """

    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    compress_level: int = 6
    mem_level: int = 5
    min_size: int = 32

    def __post_init__(self) -> None:
        for bits in (self.server_max_window_bits, self.client_max_window_bits):
            if not 9 <= bits <= 15:
                raise ValueError("window bits must be 9-15")
        if self.min_size < 1:
            raise ValueError("min_size must be at least 1 (an empty message is never compressed)")


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What was agreed for one connection (the server's response to the client's offer)."""

    server_max_window_bits: int
    client_max_window_bits: int
    server_no_context_takeover: bool
    client_no_context_takeover: bool

    def header_value(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value of the 101 response."""
        parts = [EXTENSION]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits != 15:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits != 15:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


def parse_extensions(values: list[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse ``Sec-WebSocket-Extensions`` header values into (name, params) offers.

    One pass over the characters, quotes honoured (RFC 6455 §9.1; a quoted value is a
    token once unquoted). Linear in the header's length, no regular expression.

    Raises:
        ValueError: the header is not well formed.
    """
    offers: list[tuple[str, list[tuple[str, str | None]]]] = []
    for value in values:
        for item in _split(value, ","):
            item = item.strip(" \t")
            if not item:
                continue
            fields = [f.strip(" \t") for f in _split(item, ";")]
            name = fields[0]
            if not _is_token(name):
                raise ValueError("bad extension name")
            params: list[tuple[str, str | None]] = []
            for field in fields[1:]:
                key, eq, val = field.partition("=")
                key = key.strip(" \t")
                if not _is_token(key):
                    raise ValueError("bad extension parameter")
                if not eq:
                    params.append((key, None))
                    continue
                val = val.strip(" \t")
                if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
                    val = val[1:-1]
                if not _is_token(val):
                    raise ValueError("bad extension parameter value")
                params.append((key, val))
            offers.append((name, params))
    return offers


_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(s: str) -> bool:
    return bool(s) and all(c in _TCHAR for c in s)


def _split(s: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes, in one pass."""
    if '"' not in s:
        return s.split(sep)
    parts, start, quoted = [], 0, False
    for i, c in enumerate(s):
        if c == '"':
            quoted = not quoted
        elif c == sep and not quoted:
            parts.append(s[start:i])
            start = i + 1
    if quoted:
        raise ValueError("unterminated quoted string")
    parts.append(s[start:])
    return parts


def negotiate(
    offers: list[tuple[str, list[tuple[str, str | None]]]], config: DeflateConfig
) -> DeflateParams | None:
    """Accept the first acceptable permessage-deflate offer (RFC 7692 §7.1), or None.

    An offer with an unknown, repeated or malformed parameter is declined, as the RFC
    says, and the next offer is tried.
    """
    for name, params in offers:
        if name.lower() != EXTENSION:
            continue
        agreed = _accept_offer(params, config)
        if agreed is not None:
            return agreed
    return None


def _window(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept_offer(params: list[tuple[str, str | None]], config: DeflateConfig) -> DeflateParams | None:
    seen: set[str] = set()
    server_nct = config.server_no_context_takeover
    client_nct = config.client_no_context_takeover
    server_bits = config.server_max_window_bits
    client_bits = 15  # not asked of the client: it may use the full window
    for key, value in params:
        key = key.lower()
        if key in seen:
            return None
        seen.add(key)
        if key == "server_no_context_takeover":
            if value is not None:
                return None
            server_nct = True
        elif key == "client_no_context_takeover":
            if value is not None:
                return None
            client_nct = True
        elif key == "server_max_window_bits":
            bits = _window(value)
            if bits is None or bits == 8:
                return None
            server_bits = min(bits, server_bits)
        elif key == "client_max_window_bits":
            if value is None:
                client_bits = config.client_max_window_bits
            else:
                bits = _window(value)
                if bits is None:
                    return None
                client_bits = min(bits, config.client_max_window_bits)
        else:
            return None
    return DeflateParams(server_bits, client_bits, server_nct, client_nct)


class PerMessageDeflate:
    """One connection's compressor and decompressor, as agreed in ``params``."""

    __slots__ = ("_compressor", "_config", "_decompressor", "_sent", "params")

    def __init__(self, params: DeflateParams, config: DeflateConfig) -> None:
        self.params = params
        self._config = config
        self._compressor: zlib._Compress | None = None  # made by the first compress()
        self._decompressor: zlib._Decompress | None = None  # by the first decompress()
        self._sent = False  # compress() ran since the last release_idle()

    @property
    def min_size(self) -> int:
        """Messages shorter than this are sent uncompressed."""
        return self._config.min_size

    def compress(self, data: bytes) -> bytes:
        """One whole message's payload, compressed, without the 00 00 ff ff tail."""
        c = self._compressor
        if c is None:
            c = zlib.compressobj(self._config.compress_level, zlib.DEFLATED,
                                 -self.params.server_max_window_bits, self._config.mem_level)
            if not self.params.server_no_context_takeover:
                self._compressor = c
        self._sent = True
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4]  # Z_SYNC_FLUSH ends with the tail; an empty block leaves b"\x00"

    def release_idle(self) -> bool:
        """Let the compressor go if it compressed nothing since the last call.

        Called on a timer, a quiet connection gives back the compressor's ~38 KiB;
        its next message starts a new one with an empty window, which RFC 7692
        allows whatever was agreed (section 7.2.1: the server "MAY" compress a message
        with the window of the last one). The decompressor stays: the client's next
        message may refer back into its window (with ``client_no_context_takeover``
        it goes after every message already).

        Returns:
            True when a compressor was let go.
        """
        if self._sent:
            self._sent = False
            return False
        if self._compressor is None:
            return False
        self._compressor = None
        return True

    def decompress(self, data: bytes, limit: int, final: bool) -> bytes | None:
        """Inflate one fragment of a compressed message, at most ``limit`` bytes out.

        Args:
            data: the fragment's payload.
            limit: how many more bytes the message may grow by.
            final: the message's last fragment (the deflate tail is added).

        Returns:
            The inflated bytes, or None when they would exceed ``limit`` (a 1009): the
            inflation stops at ``limit + 1`` bytes, whatever the input holds.

        Raises:
            zlib.error: the payload is not a valid deflate stream.
        """
        d = self._decompressor
        if d is None:
            # A window at least the client's decodes its stream; zlib's raw inflate
            # is safest from 9 bits up.
            bits = max(9, self.params.client_max_window_bits)
            d = self._decompressor = zlib.decompressobj(-bits)
        if final:
            data = data + _TAIL
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            return None
        if final and self.params.client_no_context_takeover:
            self._decompressor = None
        return out
