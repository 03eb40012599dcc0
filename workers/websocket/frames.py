"""RFC 6455 framing: opcodes, close codes, masking and the bytes of one frame.

The hot path is here, written for speed (style.md, "hot paths"): a frame header is
packed with ``struct`` in one call, and (un)masking runs in C over the whole payload,
two ways by size. Up to 512 bytes: one XOR of two big integers,
``int.from_bytes(payload) ^ int.from_bytes(mask * k)`` (0.4 us for 32 bytes). Above:
four ``bytes.translate`` calls with 256-byte XOR tables over the strided slices
``[i::4]``, as wsproto does (68 us for 64 KiB, where the integers take 163 us: the
int <-> bytes conversions cost ~2.5 us per KiB each). docs/decisions.md (record 9) has
the measurements against ``wsproto``.
"""

from __future__ import annotations

import struct
from enum import IntEnum

__all__ = [
    "CLOSE_CODES_RECEIVABLE",
    "MAX_CONTROL_PAYLOAD",
    "CloseCode",
    "Opcode",
    "apply_mask",
    "close_payload",
    "frame_bytes",
    "is_sendable_code",
    "is_valid_received_code",
]

MAX_CONTROL_PAYLOAD = 125


class Opcode(IntEnum):
    """The frame types of RFC 6455 §5.2; every other value is a protocol error."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """Close status codes (RFC 6455 §7.4.1 and the IANA registry)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL = 1006  # never on the wire: "the connection closed without a close frame"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


# Codes a peer may put in a close frame: the defined ones that are not reserved for
# local use (1005, 1006, 1015), and 3000-4999 (registered and private use).
CLOSE_CODES_RECEIVABLE = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_received_code(code: int) -> bool:
    """True when ``code`` may appear in a close frame; anything else is a 1002."""
    return code in CLOSE_CODES_RECEIVABLE or 3000 <= code <= 4999


def is_sendable_code(code: int) -> bool:
    """True when a server may send ``code`` (1010 is the client's to send)."""
    return code != 1010 and is_valid_received_code(code)


_HEAD_SHORT = struct.Struct("!BB")
_HEAD_MEDIUM = struct.Struct("!BBH")
_HEAD_LONG = struct.Struct("!BBQ")


def frame_bytes(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """The bytes of one frame: header, then the payload (masked when ``mask`` is given).

    Args:
        opcode: an ``Opcode`` (any 4-bit value, so tests can build bad frames).
        payload: the frame's application data.
        fin: the final fragment of its message.
        rsv1: the permessage-deflate "compressed" bit (first frame of a message only).
        mask: a 4-byte masking key: clients mask, servers never do.

    Returns:
        The frame, ready for ``write()``.
    """
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    maskbit = 0x80 if mask is not None else 0
    if n < 126:
        head = _HEAD_SHORT.pack(b0, maskbit | n)
    elif n < 65536:
        head = _HEAD_MEDIUM.pack(b0, maskbit | 126, n)
    else:
        head = _HEAD_LONG.pack(b0, maskbit | 127, n)
    if mask is not None:
        return head + mask + apply_mask(payload, mask)
    return head + payload


_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]
_INT_XOR_MAX = 512  # measured crossover: bench/ws_codec.py, docs/decisions.md record 9


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (masking and unmasking alike).

    Linear in ``len(data)`` and in C either way: a big-integer XOR for short payloads,
    four strided ``translate`` calls for long ones (see the module docstring).
    """
    n = len(data)
    if n <= _INT_XOR_MAX:
        if not n:
            return b""
        key = bytes(mask) * ((n + 3) >> 2)
        if len(key) != n:
            key = key[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
            n, "little")
    out = bytearray(data)
    t = _XOR_TABLES
    out[0::4] = out[0::4].translate(t[mask[0]])
    out[1::4] = out[1::4].translate(t[mask[1]])
    out[2::4] = out[2::4].translate(t[mask[2]])
    out[3::4] = out[3::4].translate(t[mask[3]])
    return bytes(out)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the code in network order, then the UTF-8 reason.

    Raises:
        ValueError: ``code`` may not be sent, or the reason is longer than 123 bytes
            (a control frame carries at most 125).
    """
    if code == CloseCode.NO_STATUS:
        if reason:
            raise ValueError("a close frame without a code cannot carry a reason")
        return b""
    if not is_sendable_code(code):
        raise ValueError(f"close code {code} may not be sent")
    data = reason.encode()
    if len(data) > MAX_CONTROL_PAYLOAD - 2:
        raise ValueError("close reason longer than 123 bytes")
    return code.to_bytes(2, "big") + data
