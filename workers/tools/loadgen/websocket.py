"""``reactor bench ws://``: the load generator's WebSocket echo client (RFC 6455).

``WsEngine`` is the HTTP ``Engine`` with another conversation on each connection: the
same ``Poll`` loop, slots, connects, TLS (``wss://``), timeouts, backoff and counts;
in place of a request and its response, an upgrade (checked: ``101``, ``Upgrade``,
``Connection``, ``Sec-WebSocket-Accept`` for a fresh random key), then one message
at a time (closed loop), each sent the moment the previous echo is whole. A message
counts as echoed when a frame (or fragments) of the same type carries back exactly the
bytes sent; latency is send to echo. When the run ends every open connection sends a
close (1000) and waits, at most ``timeout`` s, for the server's close, whose code is
counted.

Frames are read from a per-connection ``bytearray`` with an offset: each byte is looked
at once, a partial frame waits for more without a copy, and the buffer is emptied (or
compacted, once past 64 KiB) after a drain, so parsing is linear in the bytes read.
A frame is judged from its header before its payload is waited for: a masked frame, a
reserved bit, a control frame over 125 bytes or a data frame longer than the message
fails the connection at once (``protocol_errors``), so no buffer outgrows a message.

Client frames are masked with random keys; the message frames are built once per run,
16 of them with different keys taken in turn (fewer for messages over 256 KiB, so the
pool stays within 4 MiB): a load generator's payload is its own, and masking exists to
keep attacker-chosen bytes off the wire, so re-using a key costs nothing here.

The codec in ``mioreactor.workers.websocket`` plays the server's part (it expects
masked frames and sends bare ones); ``tools`` may not import it anyway (docs/design.md),
so the few client-side lines live here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import string
import struct
from time import perf_counter

from .config import BenchConfig, Target
from .engine import Engine, ProgressCallback
from .result import BenchResult, WsBenchResult, failure_kind
from .slot import BUSY, Slot

__all__ = ["WsEngine", "WsSlot", "check_upgrade", "masked_frame"]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
NONE, UPGRADING, OPEN, CLOSING = 0, 1, 2, 3
"""A slot's WebSocket phase: no connection (or not yet connected), upgrade sent,
messages flowing, our close sent."""

MAX_HEAD = 65536
"""Bytes an upgrade response's head may take."""

COMPACT = 65536
POOL_BYTES = 4 * 1024 * 1024


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def masked_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One final client frame: header, the 4-byte ``mask``, the masked ``payload``."""
    n = len(payload)
    b0 = 0x80 | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    else:
        head = struct.pack("!BBH", b0, 0xFE, n) if n < 65536 else struct.pack("!BBQ", b0, 0xFF, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


def message_payload(size: int, *, text: bool) -> bytes:
    """``size`` bytes to send: letters and digits (valid UTF-8) or every byte value."""
    unit = (string.ascii_letters + string.digits).encode() if text else bytes(range(256))
    return (unit * (size // len(unit) + 1))[:size]


def check_upgrade(head: bytes, accept: bytes) -> tuple[int, str | None]:
    """Judge the head of the answer to an upgrade request (without its empty line).

    Returns:
        ``(status, None)`` for a valid ``101``; else ``(status, reason)``, status 0 when
        the head is not HTTP/1.x.
    """
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        return 0, "not an HTTP response"
    status = int(code)
    if status != 101:
        return status, f"HTTP {status}"
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return status, "not an HTTP response"
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"upgrade", b"").lower() != b"websocket":
        return status, "101 without Upgrade: websocket"
    if b"upgrade" not in [t.strip() for t in fields.get(b"connection", b"").lower().split(b",")]:
        return status, "101 without Connection: Upgrade"
    if fields.get(b"sec-websocket-accept") != accept:
        return status, "bad Sec-WebSocket-Accept"
    if b"sec-websocket-extensions" in fields:
        return status, "an extension that was not offered"
    return status, None


class WsSlot(Slot):
    """A slot with its WebSocket state (see ``Slot``; ``has_req``: a message is in flight).

    Attributes:
        phase: NONE, UPGRADING, OPEN or CLOSING.
        buf, pos: bytes read and not yet parsed start at ``buf[pos]``.
        scan: where to look for the end of the upgrade response's head next.
        accept: the ``Sec-WebSocket-Accept`` this connection's key calls for.
        got: bytes of the current echo received so far (-1: none of it yet).
    """

    __slots__ = ("accept", "buf", "got", "phase", "pos", "scan")

    def __init__(self, index: int) -> None:
        super().__init__(index, False)
        self.phase = NONE
        self.buf = bytearray()
        self.pos = 0
        self.scan = 0
        self.accept = b""
        self.got = -1

    def _new_parser(self) -> None:
        """No HTTP response parser per connection: the upgrade's head is read here."""

    def detach(self) -> None:
        super().detach()
        self.phase = NONE
        self.buf = bytearray()
        self.pos = self.scan = 0
        self.got = -1


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


class WsEngine(Engine):
    """Runs one ``ws://`` bench: ``WsEngine(config, target).run()`` -> ``WsBenchResult``."""

    def __init__(
        self, config: BenchConfig, target: Target, progress: ProgressCallback | None = None
    ) -> None:
        super().__init__(config, target, progress)
        self.ws_slots = [s for s in self.slots if isinstance(s, WsSlot)]
        self.ws = WsBenchResult(config.to_json())
        self.result = self.ws
        self.status = self.ws.status
        self.size = config.size
        self.opcode = TEXT if config.text else BINARY
        self.payload = message_payload(self.size, text=config.text)
        self.expected = memoryview(self.payload)
        pool = max(1, min(16, POOL_BYTES // max(1, self.size)))
        self.frames = [masked_frame(self.opcode, self.payload, os.urandom(4)) for _ in range(pool)]
        self.closing = 0  # connections whose close was sent and not yet answered
        self.t_stop = 0.0  # when the measured part ended (0.0: not yet)

    def _new_slot(self, index: int) -> Slot:
        return WsSlot(index)

    def snapshot(self, now: float, *, finished: bool) -> BenchResult:
        """As ``Engine.snapshot``; the duration stops where the closes began."""
        return super().snapshot(min(now, self.t_stop) if self.t_stop else now, finished=finished)

    # -- the upgrade ------------------------------------------------------------------
    def _connected(self, slot: Slot) -> None:
        """Connected (and TLS done): send the upgrade with a fresh key."""
        assert isinstance(slot, WsSlot)
        key = base64.b64encode(os.urandom(16))
        slot.accept = accept_key(key)
        slot.phase = UPGRADING
        slot.state = BUSY
        slot.deadline = perf_counter() + self.timeout
        self._write(slot, self.request + b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")

    def _upgrade(self, slot: WsSlot) -> None:
        """Read the upgrade response's head once it is whole; open or fail the slot."""
        buf = slot.buf
        end = buf.find(b"\r\n\r\n", slot.scan)
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._handshake_failed(slot, "response head over 64 KiB")
            else:
                slot.scan = max(0, len(buf) - 3)
            return
        status, reason = check_upgrade(bytes(buf[:end]), slot.accept)
        if status:
            self.status[status] = self.status.get(status, 0) + 1
        if reason is not None:
            self._handshake_failed(slot, reason)
            return
        slot.pos = end + 4
        slot.phase = OPEN
        self.ws.handshakes_ok += 1
        self._send_message(slot, perf_counter())  # the message claimed with the connection

    def _handshake_failed(self, slot: WsSlot, reason: str) -> None:
        _count(self.ws.handshake_errors, reason)
        self._fail(slot, None, kind="handshake")

    # -- messages ---------------------------------------------------------------------
    def _send_message(self, slot: WsSlot, now: float) -> None:
        slot.t_req = now
        slot.deadline = now + self.timeout
        slot.got = -1
        self.requests_sent += 1
        frames = self.frames
        self._write(slot, frames[self.requests_sent % len(frames)])

    def _on_read(self, slot: Slot) -> None:
        """Readable: drain ``recv`` into the slot's buffer, then parse what is whole."""
        assert isinstance(slot, WsSlot)
        eof = self._drain(slot, slot.buf.extend)
        if eof is None:
            return
        if slot.phase == UPGRADING:
            self._upgrade(slot)
        if slot.phase >= OPEN and self._frames(slot) and eof:
            self._fail(slot, None, kind="eof")  # CLOSING: counted as close code 1006
        elif eof and slot.phase == UPGRADING:
            self._fail(slot, None, kind="eof")

    def _frames(self, slot: WsSlot) -> bool:
        """Handle every whole frame in the buffer; False if the connection ended."""
        buf = slot.buf
        pos = slot.pos
        end = len(buf)
        size = self.size
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n >= 126:
                start += 2 if n == 126 else 8
                if end < start:
                    break
                n = int.from_bytes(buf[pos + 2 : start], "big")
            if b1 & 0x80:
                return self._protocol_error(slot, "masked frame from the server")
            if b0 & 0x70:
                return self._protocol_error(slot, "reserved bits set (nothing negotiated)")
            opcode = b0 & 0x0F
            if opcode & 0x8:
                if n > 125 or not b0 & 0x80:
                    return self._protocol_error(slot, "control frame fragmented or over 125 bytes")
            elif n > size:
                return self._protocol_error(slot, "echo mismatch: longer than the message")
            if end - start < n:
                break
            pos = slot.pos = start + n
            if opcode & 0x8:
                self._control(slot, opcode, start, n)
            elif slot.phase == OPEN:
                self._data(slot, b0, opcode, start, n)
            if slot.phase < OPEN:
                return False
        if pos == end:
            buf.clear()
            slot.pos = 0
        elif pos > COMPACT:
            del buf[:pos]
            slot.pos = 0
        return True

    def _data(self, slot: WsSlot, b0: int, opcode: int, start: int, n: int) -> None:
        """A data frame while open: (part of) the echo of the message in flight."""
        if not slot.has_req:
            self._protocol_error(slot, "a message that echoes nothing sent")
            return
        got = slot.got
        if got < 0:
            if opcode != self.opcode:
                self._protocol_error(
                    slot, "continuation with no message" if opcode == 0 else
                    "echo mismatch: text for binary or the reverse" if opcode in (TEXT, BINARY)
                    else f"unknown opcode {opcode:#x}")
                return
            got = 0
        elif opcode != 0:
            self._protocol_error(slot, "a new message inside a fragmented one")
            return
        if got + n > self.size or not slot.buf.startswith(self.expected[got : got + n], start):
            self._protocol_error(slot, "echo mismatch: not the bytes sent")
            return
        got += n
        if not b0 & 0x80:
            slot.got = got  # a fragment: the rest follows
            return
        if got != self.size:
            self._protocol_error(slot, "echo mismatch: shorter than the message")
            return
        now = perf_counter()
        self.samples.append(now - slot.t_req)
        self.responses += 1
        self.inflight -= 1
        slot.has_req = False
        if self._take():
            slot.has_req = True
            self._send_message(slot, now)
        else:
            slot.deadline = 0.0  # the budget is spent: wait, open, for the end

    def _control(self, slot: WsSlot, opcode: int, start: int, n: int) -> None:
        """A close, ping or pong frame (or an unknown control opcode)."""
        buf = slot.buf
        if opcode == PING:
            self._write(slot, masked_frame(PONG, bytes(buf[start : start + n]), os.urandom(4)))
        elif opcode == CLOSE:
            if n == 1:
                self._protocol_error(slot, "close frame with a 1-byte payload")
                return
            code = str(int.from_bytes(buf[start : start + 2], "big") if n else 1005)
            _count(self.ws.close_codes, code)
            if slot.phase == CLOSING:
                self.closing -= 1
                self._close(slot)
                return
            try:  # the server closed first: echo its code (best effort), then count it
                slot.send(masked_frame(CLOSE, bytes(buf[start : start + 2]), os.urandom(4)))
            except OSError:
                pass
            self._fail(slot, None, kind="closed_by_server")
        elif opcode != PONG:
            self._protocol_error(slot, f"unknown opcode {opcode:#x}")

    def _protocol_error(self, slot: WsSlot, what: str) -> bool:
        _count(self.ws.protocol_errors, what)
        self._fail(slot, None, kind="protocol")
        return False

    # -- failures and the end ---------------------------------------------------------
    def _fail(self, slot: Slot, exc: OSError | None, *, kind: str | None = None,
              connecting: bool = False) -> None:
        """As ``Engine._fail``; a failed upgrade also counts in ``handshake_errors``, and
        a connection that was closing ends with close code ``1006`` or ``timeout``."""
        assert isinstance(slot, WsSlot)
        if slot.phase == CLOSING:
            _count(self.ws.close_codes, "timeout" if kind == "timeout" else "1006")
            self.closing -= 1
            self._close(slot)
            return
        if slot.phase == UPGRADING and kind != "handshake":
            _count(self.ws.handshake_errors, failure_kind(exc, kind))
        super()._fail(slot, exc, kind=kind, connecting=connecting)

    def _finished(self) -> bool:
        return not self.closing if self.t_stop else super()._finished()

    def _wind_down(self) -> None:
        """The run is over: send a close (1000) on every open connection and wait, at
        most ``timeout`` s, for the server's; drop connections still upgrading."""
        now = self.t_stop = perf_counter()
        self.budget = self.taken  # no new message, no new connection
        close = masked_frame(CLOSE, (1000).to_bytes(2, "big"), os.urandom(4))
        for slot in self.ws_slots:
            if slot.phase == OPEN:
                slot.phase = CLOSING
                slot.deadline = now + self.timeout
                self.closing += 1
                self._write(slot, close)
            elif slot.stream is not None:
                self._close(slot)
        if self.closing:
            self._loop(now + self.timeout)
        for slot in self.ws_slots:
            if slot.phase == CLOSING:
                self._fail(slot, None, kind="timeout")
