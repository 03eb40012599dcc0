"""The frame codec alone, with bytes: every split, the RFC 6455 rules, linear cost.

A client frame is built with ``frame_bytes(..., mask=...)`` as a client would send it,
fed to a server-side ``WebSocketConnection`` and the events compared. Adversarial
inputs (one byte at a time, thousands of tiny fragments) must finish well inside the
test timeout: a quadratic buffer would not.
"""

from __future__ import annotations

import os
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import TypeVar

import pytest
from mioreactor.workers.websocket import (
    BytesMessage,
    CloseReceived,
    DeflateConfig,
    DeflateParams,
    Event,
    Failed,
    LocalProtocolError,
    PerMessageDeflate,
    Ping,
    Pong,
    State,
    TextMessage,
    WebSocketConnection,
    accept,
    apply_mask,
    close_payload,
    frame_bytes,
    parse_upgrade_request,
)

pytestmark = pytest.mark.timeout(30)

MASK = b"\x37\xfa\x21\x3d"
T = TypeVar("T")


def client(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    return frame_bytes(opcode, payload, fin=fin, rsv1=rsv1, mask=MASK)


def feed(conn: WebSocketConnection, data: bytes, step: int = 0) -> list[Event]:
    if not step:
        return conn.receive_data(data)
    events: list[Event] = []
    for i in range(0, len(data), step):
        events += conn.receive_data(data[i:i + step])
    return events


def unframe(data: bytes) -> list[tuple[int, bytes]]:
    """Server frames (unmasked) back to (first byte, payload) pairs."""
    out, pos = [], 0
    while pos < len(data):
        b0, n = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
        elif n == 127:
            n = int.from_bytes(data[pos:pos + 8], "big")
            pos += 8
        out.append((b0, data[pos:pos + n]))
        pos += n
    return out


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 511, 512, 513, 65535, 65536, 70001])
def test_masking_is_its_own_inverse_at_every_size(size: int) -> None:
    data = os.urandom(size)
    masked = apply_mask(data, MASK)
    assert apply_mask(masked, MASK) == data
    assert masked == bytes(b ^ MASK[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("step", [0, 1, 2, 3, 7, 1000])
def test_messages_arrive_whole_whatever_the_split(step: int) -> None:
    stream = (client(1, "héllo".encode()) + client(2, b"\x00\xff" * 100)
              + client(2, os.urandom(70000)) + client(9, b"ping") + client(10, b"pong")
              + client(1, b"frag", fin=False) + client(9, b"mid") + client(0, "ment €".encode()))
    conn = WebSocketConnection()
    events = feed(conn, stream, step)
    kinds = [type(e) for e in events]
    assert kinds == [TextMessage, BytesMessage, BytesMessage, Ping, Pong, Ping, TextMessage]
    assert events[0] == TextMessage("héllo")
    assert events[6] == TextMessage("fragment €")
    assert [f for f in unframe(conn.data_to_send())] == [(0x8A, b"ping"), (0x8A, b"mid")]


def test_a_ping_is_only_reported_without_auto_pong() -> None:
    conn = WebSocketConnection(auto_pong=False)
    assert conn.receive_data(client(9, b"x")) == [Ping(b"x")]
    assert conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (frame_bytes(1, b"unmasked"), 1002),
        (bytes([0x80 | 0x20 | 1]) + client(1, b"x")[1:], 1002),  # RSV2
        (bytes([0x80 | 0x40 | 1]) + client(1, b"x")[1:], 1002),  # RSV1, no extension
        (client(3, b"x"), 1002),  # reserved data opcode
        (client(0xB, b"x"), 1002),  # reserved control opcode
        (client(0, b"x"), 1002),  # continuation with nothing to continue
        (client(9, b"x" * 126), 1002),  # control frame too long
        (client(9, b"x", fin=False), 1002),  # fragmented control frame
        (client(1, b"\xff\xfe"), 1007),
        (client(1, b"ab\xc3"), 1007),  # truncated sequence at the end
        (client(8, b"\x03"), 1002),  # close payload of one byte
        (client(8, (1005).to_bytes(2, "big")), 1002),
        (client(8, (1006).to_bytes(2, "big")), 1002),
        (client(8, (1015).to_bytes(2, "big")), 1002),
        (client(8, (999).to_bytes(2, "big")), 1002),
        (client(8, (2000).to_bytes(2, "big")), 1002),
        (client(8, (5000).to_bytes(2, "big")), 1002),
        (client(8, (1000).to_bytes(2, "big") + b"\xff"), 1007),
        (client(1, b"a", fin=False) + client(1, b"b"), 1002),  # new message mid-message
    ],
)
def test_protocol_violations_fail_with_the_right_code(frame: bytes, code: int) -> None:
    conn = WebSocketConnection()
    events = conn.receive_data(frame)
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert events[0].code == code
    (b0, payload), = unframe(conn.data_to_send())
    assert b0 == 0x88 and int.from_bytes(payload[:2], "big") == code
    assert conn.state is State.CLOSED
    assert conn.receive_data(client(1, b"ignored")) == []


def test_invalid_utf8_across_fragments_fails_on_the_fragment_that_breaks_it() -> None:
    conn = WebSocketConnection()
    euro = "€".encode()
    assert conn.receive_data(client(1, euro[:2], fin=False)) == []  # incomplete, not invalid
    assert conn.receive_data(client(0, euro[2:] + b"ok", fin=False)) == []
    events = conn.receive_data(client(0, b"\xc0\xaf", fin=False))  # overlong: invalid at once
    assert events == [Failed(1007, "invalid UTF-8")]


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1012, 1014, 3000, 4999])
def test_a_valid_close_is_reported_and_our_reply_echoes_its_code(code: int) -> None:
    conn = WebSocketConnection()
    events = conn.receive_data(client(8, close_payload(code, "bye ☺")) + client(1, b"after"))
    assert events == [CloseReceived(code, "bye ☺")]
    assert conn.state is State.REMOTE_CLOSING
    assert conn.data_to_send() == b""
    # what the app owes for earlier messages may still go out before the reply
    assert unframe(conn.send("owed")) == [(0x81, b"owed")]
    assert unframe(conn.close()) == [(0x88, code.to_bytes(2, "big"))]
    assert conn.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.send("late")


def test_an_empty_close_reads_as_1005_and_gets_an_empty_reply() -> None:
    conn = WebSocketConnection()
    assert conn.receive_data(client(8, b"")) == [CloseReceived(1005, "")]
    assert unframe(conn.close()) == [(0x88, b"")]


def test_the_reply_to_a_close_may_carry_its_own_code() -> None:
    conn = WebSocketConnection()
    conn.receive_data(client(8, close_payload(1001)))
    assert unframe(conn.close(1000, "ok")) == [(0x88, b"\x03\xe8ok")]


def test_our_close_then_the_peers_completes_the_handshake() -> None:
    conn = WebSocketConnection()
    assert unframe(conn.close(4000, "done")) == [(0x88, (4000).to_bytes(2, "big") + b"done")]
    assert conn.state is State.CLOSING
    assert conn.close() == b""
    with pytest.raises(LocalProtocolError):
        conn.send("late")
    events = conn.receive_data(client(1, b"in flight") + client(8, close_payload(4000)))
    assert events == [TextMessage("in flight"), CloseReceived(4000, "")]
    assert conn.data_to_send() == b""  # no second close frame
    assert conn.state is State.CLOSED


@pytest.mark.parametrize("code", [1005, 1006, 1015, 1010, 999, 2999, 5000])
def test_codes_that_may_not_be_sent_are_refused(code: int) -> None:
    with pytest.raises(ValueError):
        close_payload(code, "x")


def test_a_close_reason_over_123_bytes_is_refused() -> None:
    close_payload(1000, "x" * 123)
    with pytest.raises(ValueError):
        close_payload(1000, "x" * 124)


def test_server_frames_are_unmasked_and_sized_by_length() -> None:
    conn = WebSocketConnection()
    for size in (0, 125, 126, 65535, 65536):
        frame = conn.send(b"z" * size)
        assert frame[1] & 0x80 == 0
        assert unframe(frame) == [(0x82, b"z" * size)]
    assert unframe(conn.send("ä")) == [(0x81, "ä".encode())]
    assert unframe(conn.ping(b"p")) == [(0x89, b"p")]
    with pytest.raises(ValueError):
        conn.ping(b"x" * 126)


def test_a_message_over_max_size_fails_with_1009_before_its_payload_arrives() -> None:
    conn = WebSocketConnection(max_size=1000)
    assert conn.receive_data(client(2, b"x" * 1000)) == [BytesMessage(b"x" * 1000)]
    header = client(2, b"x" * 1001)[:8]  # the header alone: no payload buffered
    assert conn.receive_data(header) == [Failed(1009, "message too big")]


def test_fragments_adding_up_over_max_size_fail_with_1009() -> None:
    conn = WebSocketConnection(max_size=1000)
    events = conn.receive_data(client(1, b"x" * 600, fin=False) + client(0, b"x" * 600))
    assert events == [Failed(1009, "message too big")]


def test_one_byte_at_a_time_over_a_megabyte_is_linear() -> None:
    payload = os.urandom(1 << 20)
    stream = client(2, payload)
    conn = WebSocketConnection()
    start = time.perf_counter()
    events = feed(conn, stream, 1)
    elapsed = time.perf_counter() - start
    assert events == [BytesMessage(payload)]
    assert elapsed < 5, f"{elapsed:.1f}s for 1 MiB fed a byte at a time"


def test_thousands_of_tiny_fragments_are_linear() -> None:
    parts = [client(1, b"a", fin=False)] + [client(0, b"b", fin=False)] * 20000 + [client(0, b"c")]
    stream = b"".join(parts)
    conn = WebSocketConnection()
    start = time.perf_counter()
    events = conn.receive_data(stream)
    assert events == [TextMessage("a" + "b" * 20000 + "c")]
    # and the same, delivered in 3-byte reads
    conn = WebSocketConnection()
    assert feed(conn, stream, 3) == [TextMessage("a" + "b" * 20000 + "c")]
    assert time.perf_counter() - start < 5


def _deflate_conn(max_size: int = 1 << 20, **kw: bool) -> WebSocketConnection:
    params = DeflateParams(15, 15, kw.get("snct", False), kw.get("cnct", False))
    return WebSocketConnection(max_size=max_size,
                               deflate=PerMessageDeflate(params, DeflateConfig(min_size=1)))


def _client_compress(c: zlib._Compress, data: bytes) -> bytes:
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


@pytest.mark.parametrize("step", [0, 1, 5])
def test_compressed_messages_inflate_with_context_takeover(step: int) -> None:
    conn = _deflate_conn()
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = _client_compress(c, b"hello hello hello")
    second = _client_compress(c, b"hello hello hello")  # refers back into the first
    body = _client_compress(c, "fragmented ✓".encode())
    stream = (client(1, first, rsv1=True) + client(2, second, rsv1=True)
              + client(1, body[:3], fin=False, rsv1=True) + client(9, b"")
              + client(0, body[3:]))
    events = feed(conn, stream, step)
    assert events == [TextMessage("hello hello hello"), BytesMessage(b"hello hello hello"),
                      Ping(b""), TextMessage("fragmented ✓")]


def test_what_we_compress_a_client_can_inflate() -> None:
    conn = _deflate_conn()
    d = zlib.decompressobj(-15)
    for text in ("a" * 100, "b" * 100, "x"):
        (b0, payload), = unframe(conn.send(text))
        assert b0 == 0xC1  # FIN, RSV1, text
        assert d.decompress(payload + b"\x00\x00\xff\xff").decode() == text


def test_a_zip_bomb_stops_at_max_size_and_fails_with_1009() -> None:
    conn = _deflate_conn(max_size=1 << 20)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = _client_compress(bomb, b"\x00" * (64 << 20))  # 64 MiB in about 64 KiB
    assert len(payload) < 100_000
    start = time.perf_counter()
    assert conn.receive_data(client(2, payload, rsv1=True)) == [Failed(1009, "message too big")]
    assert time.perf_counter() - start < 1


def test_rsv1_on_a_continuation_or_control_frame_is_a_protocol_error() -> None:
    conn = _deflate_conn()
    events = conn.receive_data(client(1, b"", fin=False) + client(0, b"x", rsv1=True))
    assert events == [Failed(1002, "unexpected continuation")]
    conn = _deflate_conn()
    assert conn.receive_data(client(9, b"", rsv1=True)) == [Failed(1002, "bad control frame")]


def test_garbage_compressed_data_fails_with_1007() -> None:
    conn = _deflate_conn()
    assert conn.receive_data(client(2, b"\xff\xff\xff\xff", rsv1=True)) == [
        Failed(1007, "bad compressed data")]


def _traced(make: Callable[[], T]) -> tuple[T, int]:
    """What ``make()`` returns and the bytes it left allocated (tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = make()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_deflate_agreed_makes_no_zlib_context_until_a_message_needs_one() -> None:
    # A browser's offer; a zlib context is 7 KiB (inflate) to 38 KiB (our deflate).
    request = parse_upgrade_request("GET", "1.1", [
        (b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")])
    (_, conn), size = _traced(lambda: accept(request, deflate=DeflateConfig()))
    assert conn.deflate is not None and size < 4096
    c = zlib.compressobj(6, zlib.DEFLATED, -12)
    message = client(1, _client_compress(c, b"hello " * 20), rsv1=True)
    _, size = _traced(lambda: [*conn.receive_data(message), conn.send("hello " * 20)])
    assert size > 40_000  # the decompressor and the compressor, made now


def test_a_quiet_connection_lets_its_compressor_go_and_its_messages_still_inflate() -> None:
    d = zlib.decompressobj(-15)  # the client's: keeps its window across messages
    tracemalloc.start()  # before the compressor is made, so that its freeing counts
    try:
        conn = _deflate_conn()
        deflate = conn.deflate
        assert deflate is not None

        def roundtrip(text: str) -> None:
            (b0, payload), = unframe(conn.send(text))
            assert b0 == 0xC1 and d.decompress(payload + b"\x00\x00\xff\xff").decode() == text

        roundtrip("a quiet connection " * 10)
        assert deflate.release_idle() is False  # it compressed since the last call: kept
        before = tracemalloc.get_traced_memory()[0]
        assert deflate.release_idle() is True  # quiet from one call to the next
        assert tracemalloc.get_traced_memory()[0] - before < -30_000  # its 38 KiB are back
    finally:
        tracemalloc.stop()
    assert deflate.release_idle() is False  # nothing left to let go
    roundtrip("a quiet connection " * 10)  # a new compressor, an empty window
    roundtrip("talks again " * 10)
    assert deflate.release_idle() is False
