"""The server side of one WebSocket connection, sans-IO: bytes in, events and bytes out.

``receive_data(data)`` takes whatever the socket gave (any split, down to one byte at a
time) and returns the events it completed; ``data_to_send()`` returns the frames the
codec queued itself (a ping's pong, the close that fails the connection). The reply to
a peer's close is the application's ``close()``: messages it still sends in answer to
what came before the close go out first, as RFC 6455 §5.5.1 allows. ``send``, ``ping``, ``pong`` and ``close`` return the bytes of the frames
the application asked for. Nothing here touches a socket (h11's shape, style.md 6).

Cost is linear in the bytes received (../design.md, "Untrusted bytes"): a read is
parsed in place from an offset; only an unfinished frame's bytes are kept, in one
``bytearray`` that later reads are appended to, and a consumed prefix is dropped with
``del buf[:pos]``, which CPython does by moving the start pointer, not by copying. A
frame is unmasked once, whole; a fragmented message is joined once, at its end. A
frame header announcing more than ``max_size`` fails before its payload is buffered,
and a compressed message is inflated at most ``max_size + 1`` bytes at a time.
"""

from __future__ import annotations

import codecs
import struct
import zlib
from enum import Enum

from .deflate import PerMessageDeflate
from .events import BytesMessage, CloseReceived, Event, Failed, Ping, Pong, TextMessage
from .frames import _INT_XOR_MAX as _SHORT_MASK
from .frames import (
    MAX_CONTROL_PAYLOAD,
    CloseCode,
    Opcode,
    apply_mask,
    close_payload,
    frame_bytes,
    is_valid_received_code,
)

__all__ = ["DEFAULT_MAX_SIZE", "TRANSITIONS", "LocalProtocolError", "State", "WebSocketConnection"]

DEFAULT_MAX_SIZE = 16 * 1024 * 1024  # uvicorn's --ws-max-size

_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)
_TEXT, _BINARY, _CONT = int(Opcode.TEXT), int(Opcode.BINARY), int(Opcode.CONTINUATION)
_CLOSE, _PING, _PONG = int(Opcode.CLOSE), int(Opcode.PING), int(Opcode.PONG)
# The two header bytes of a final, unmasked text or binary frame of n < 126 bytes.
_SHORT_HEADS = {op: [bytes((0x80 | op, n)) for n in range(126)] for op in (_TEXT, _BINARY)}


class State(Enum):
    """Where the close handshake stands."""

    OPEN = "open"
    CLOSING = "closing"  # we sent a close frame; the peer's has not come yet
    REMOTE_CLOSING = "remote-closing"  # the peer's close came; ours is owed (``close()``)
    CLOSED = "closed"  # both close frames sent (or the connection failed): close TCP


# (state, what happened) -> next state. Anything not here is a local error.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.OPEN, "send_close"): State.CLOSING,
    (State.OPEN, "receive_close"): State.REMOTE_CLOSING,
    (State.REMOTE_CLOSING, "send_close"): State.CLOSED,
    (State.CLOSING, "receive_close"): State.CLOSED,
    (State.OPEN, "fail"): State.CLOSED,
    (State.CLOSING, "fail"): State.CLOSED,
}


class LocalProtocolError(RuntimeError):
    """The application asked for something the protocol forbids now (send after close)."""


class WebSocketConnection:
    """One server-side WebSocket connection after a successful handshake.

    Args:
        max_size: the largest message accepted, in bytes after decompression
            (a larger one fails with 1009).
        deflate: the permessage-deflate state when it was negotiated, else None.
        auto_pong: answer pings at once (queued in ``data_to_send()``); the ``Ping``
            event is reported either way.

    Attributes (read them; the codec alone changes them):
        state: ``OPEN``, ``CLOSING`` (ours sent), ``REMOTE_CLOSING`` (theirs came) or
            ``CLOSED``.
        outgoing: the frames the codec queued itself (pongs, close replies), which
            ``data_to_send()`` takes; empty when there is nothing to send.
    """

    __slots__ = (
        "_buf",
        "_decoder",
        "_deflate",
        "_max_size",
        "_msg_compressed",
        "_msg_opcode",
        "_msg_parts",
        "_msg_size",
        "_peer_code",
        "auto_pong",
        "outgoing",
        "state",
    )

    def __init__(
        self,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        deflate: PerMessageDeflate | None = None,
        auto_pong: bool = True,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self._max_size = max_size
        self._deflate = deflate
        self.auto_pong = auto_pong
        self.state = State.OPEN
        self._peer_code = int(CloseCode.NO_STATUS)
        self._buf = bytearray()
        self.outgoing = bytearray()
        self._msg_opcode = 0  # 0: no fragmented message in progress
        self._msg_parts: list[bytes] | list[str] = []
        self._msg_size = 0
        self._msg_compressed = False
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def deflate(self) -> PerMessageDeflate | None:
        """The negotiated permessage-deflate state, if any."""
        return self._deflate

    def _move(self, action: str) -> None:
        self.state = TRANSITIONS[(self.state, action)]

    # ---- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        """Feed bytes from the peer; return the events they complete, in order.

        After a ``CloseReceived`` or ``Failed`` event, input is ignored.
        """
        if self.state is State.CLOSED or self.state is State.REMOTE_CLOSING:
            return []
        buf: bytes | bytearray
        if self._buf:
            buf = self._buf
            buf += data
        else:  # nothing pending: parse the read itself, keep only an unfinished tail
            buf = data
        events: list[Event] = []
        pos = 0
        n = len(buf)
        max_size = self._max_size
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                head = pos + 6
            elif length == 126:
                if n - pos < 4:
                    break
                length = _U16(buf, pos + 2)[0]
                head = pos + 8
            else:
                if n - pos < 10:
                    break
                length = _U64(buf, pos + 2)[0]
                head = pos + 14
                if length >> 63:
                    return self._fail(events, CloseCode.PROTOCOL_ERROR, "64-bit length with its top bit set")
            opcode = b0 & 0x0F
            # Header checks come before the payload is waited for: a bad or oversized
            # frame fails at once, and never makes us buffer its payload.
            if b0 & 0x30 or opcode not in _KNOWN_OPCODES:
                return self._fail(events, CloseCode.PROTOCOL_ERROR, "reserved bits or opcode")
            if not b1 & 0x80:
                return self._fail(events, CloseCode.PROTOCOL_ERROR, "client frames must be masked")
            if opcode >= 8:
                if length > MAX_CONTROL_PAYLOAD or not b0 & 0x80 or b0 & 0x40:
                    return self._fail(events, CloseCode.PROTOCOL_ERROR, "bad control frame")
            elif opcode == _CONT:
                if not self._msg_opcode or b0 & 0x40:
                    return self._fail(events, CloseCode.PROTOCOL_ERROR, "unexpected continuation")
                if (length > max_size if self._msg_compressed
                        else self._msg_size + length > max_size):
                    return self._fail(events, CloseCode.MESSAGE_TOO_BIG, "message too big")
            else:
                if self._msg_opcode:
                    return self._fail(events, CloseCode.PROTOCOL_ERROR,
                                      "new message inside a fragmented one")
                if b0 & 0x40 and self._deflate is None:
                    return self._fail(events, CloseCode.PROTOCOL_ERROR, "RSV1 without an extension")
                if length > max_size:
                    return self._fail(events, CloseCode.MESSAGE_TOO_BIG, "message too big")
            end = head + length
            if n < end:
                break
            if 0 < length <= _SHORT_MASK:  # apply_mask's short path, inline (a frame less)
                key = buf[head - 4:head] * ((length + 3) >> 2)
                payload = (int.from_bytes(buf[head:end], "little")
                           ^ int.from_bytes(key[:length], "little")).to_bytes(length, "little")
            else:
                payload = apply_mask(buf[head:end], buf[head - 4:head])
            pos = end
            fin = b0 & 0x80
            if opcode == _TEXT and fin and not b0 & 0x40:  # the common case first
                try:
                    events.append(TextMessage(payload.decode()))
                except UnicodeDecodeError:
                    return self._fail(events, CloseCode.INVALID_DATA, "invalid UTF-8")
            elif opcode == _BINARY and fin and not b0 & 0x40:
                events.append(BytesMessage(payload))
            elif opcode < 8:
                failure = self._data_frame(events, opcode, payload, fin, b0 & 0x40)
                if failure is not None:
                    return failure
            elif opcode == _PING:
                if self.auto_pong and self.state is State.OPEN:
                    self.outgoing += frame_bytes(_PONG, payload)
                events.append(Ping(payload))
            elif opcode == _PONG:
                events.append(Pong(payload))
            else:
                return self._close_frame(events, payload)
        if buf is not self._buf:
            if pos < n:
                self._buf = bytearray(buf[pos:])
        elif pos == n:
            self._buf.clear()
        elif pos:
            del self._buf[:pos]  # O(1) in CPython: the start pointer moves
        return events

    def _data_frame(
        self, events: list[Event], opcode: int, payload: bytes, fin: int, rsv1: int
    ) -> list[Event] | None:
        """A fragment, or a compressed message: returns the events if the frame failed."""
        if opcode != _CONT:
            self._msg_opcode = opcode
            self._msg_compressed = bool(rsv1)
            self._msg_size = 0
            self._msg_parts = []
            self._decoder = _Utf8Decoder() if opcode == _TEXT else None
        if self._msg_compressed:
            assert self._deflate is not None
            try:
                data = self._deflate.decompress(payload, self._max_size - self._msg_size,
                                                bool(fin))
            except zlib.error:
                return self._fail(events, CloseCode.INVALID_DATA, "bad compressed data")
            if data is None:
                return self._fail(events, CloseCode.MESSAGE_TOO_BIG, "message too big")
        else:
            data = payload
        self._msg_size += len(data)
        decoder = self._decoder
        if decoder is not None:
            try:
                self._msg_parts.append(decoder.decode(data, bool(fin)))  # type: ignore[arg-type]
            except UnicodeDecodeError:
                return self._fail(events, CloseCode.INVALID_DATA, "invalid UTF-8")
        else:
            self._msg_parts.append(data)  # type: ignore[arg-type]
        if fin:
            parts = self._msg_parts
            if decoder is not None:
                events.append(TextMessage("".join(parts)))  # type: ignore[arg-type]
            else:
                events.append(BytesMessage(b"".join(parts)))  # type: ignore[arg-type]
            self._msg_opcode = 0
            self._msg_parts = []
            self._decoder = None
        return None

    def _close_frame(self, events: list[Event], payload: bytes) -> list[Event]:
        if not payload:
            code, reason = int(CloseCode.NO_STATUS), ""
        elif len(payload) == 1:
            return self._fail(events, CloseCode.PROTOCOL_ERROR, "close frame of one byte")
        else:
            code = int.from_bytes(payload[:2], "big")
            if not is_valid_received_code(code):
                return self._fail(events, CloseCode.PROTOCOL_ERROR, "invalid close code")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                return self._fail(events, CloseCode.INVALID_DATA, "invalid UTF-8 in close reason")
        self._peer_code = code
        self._move("receive_close")
        self._drop_input()
        events.append(CloseReceived(code, reason))
        return events

    def _fail(self, events: list[Event], code: CloseCode, reason: str) -> list[Event]:
        if self.state is State.OPEN:
            self.outgoing += frame_bytes(_CLOSE, close_payload(code, reason))
        self._move("fail")
        self._drop_input()
        events.append(Failed(int(code), reason))
        return events

    def _drop_input(self) -> None:
        self._buf = bytearray()
        self._msg_parts = []
        self._decoder = None

    # ---- sending -----------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Frames the codec queued itself (pongs, close replies); empties the queue."""
        if not self.outgoing:
            return b""
        out = bytes(self.outgoing)
        self.outgoing.clear()
        return out

    def _check_can_send(self, what: str) -> None:
        if self.state is not State.OPEN and self.state is not State.REMOTE_CLOSING:
            raise LocalProtocolError(f"cannot send {what}: the connection is {self.state.value}")

    def send(self, data: str | bytes | bytearray | memoryview) -> bytes:
        """The frame of one whole message: text for ``str``, binary for bytes.

        Compressed (RSV1) when permessage-deflate was agreed and the message is at
        least ``DeflateConfig.min_size`` bytes.

        Raises:
            LocalProtocolError: the close frame was sent already.
        """
        state = self.state
        if state is not State.OPEN and state is not State.REMOTE_CLOSING:
            self._check_can_send("a message")
        if isinstance(data, str):
            opcode, payload = _TEXT, data.encode()
        else:
            opcode, payload = _BINARY, data if type(data) is bytes else bytes(data)
        deflate = self._deflate
        if deflate is not None and len(payload) >= deflate.min_size:
            return frame_bytes(opcode, deflate.compress(payload), rsv1=True)
        n = len(payload)
        if n < 126:  # frame_bytes, inline for the common frame: short, final, unmasked
            return _SHORT_HEADS[opcode][n] + payload
        return frame_bytes(opcode, payload)

    def ping(self, payload: bytes = b"") -> bytes:
        """A ping frame (at most 125 bytes of payload)."""
        return self._control(_PING, payload)

    def pong(self, payload: bytes = b"") -> bytes:
        """An unsolicited pong (a heartbeat RFC 6455 §5.5.3 allows)."""
        return self._control(_PONG, payload)

    def _control(self, opcode: int, payload: bytes) -> bytes:
        self._check_can_send("a control frame")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError("a control frame carries at most 125 bytes")
        return frame_bytes(opcode, payload)

    def close(self, code: int | None = None, reason: str = "") -> bytes:
        """Our close frame, or b"" if one was sent already.

        In ``OPEN`` this starts the close handshake (``code`` None means 1000): wait,
        bounded in time, for the peer's ``CloseReceived``, then close the socket. In
        ``REMOTE_CLOSING`` it is the reply (``code`` None echoes the peer's), after
        which the server closes the socket at once.

        Raises:
            ValueError: the code may not be sent, or the reason is over 123 bytes.
        """
        if self.state is State.OPEN:
            payload = close_payload(1000 if code is None else code, reason)
        elif self.state is State.REMOTE_CLOSING:
            payload = close_payload(self._peer_code if code is None else code, reason)
        else:
            return b""
        frame = frame_bytes(_CLOSE, payload)
        self._move("send_close")
        return frame
