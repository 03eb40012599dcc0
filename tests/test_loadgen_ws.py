"""``reactor bench ws://`` (``mioreactor.workers.tools.loadgen.websocket``): echoes counted as
the server saw them, and every way a WebSocket connection fails named: refused, an
upgrade rejected with its status, a bad accept key, a broken frame, a wrong echo, a
close that never comes.

Loopback only, ports the kernel picks, each run bounded by a message count or a short
duration. The misbehaving servers are raw sockets (``RawServer`` of test_loadgen) built
with the server codec's own ``frame_bytes`` and ``accept_key``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from mioreactor import cli
from mioreactor.workers import Server
from mioreactor.workers.core.handler import Connection
from mioreactor.workers.tools.loadgen import BenchConfig, WsBenchResult, run_bench
from mioreactor.workers.tools.loadgen.websocket import masked_frame
from mioreactor.workers.websocket import (
    BytesMessage,
    TextMessage,
    WebSocketHandler,
    accept,
    accept_key,
    apply_mask,
    frame_bytes,
    parse_upgrade_request,
)

from tests.cli.test_cli_options import error_line
from tests.test_loadgen import RawServer, read_request, unused_port
from tests.workers.util import wait_for

pytestmark = pytest.mark.timeout(30)


def ws_bench(url: str, **kwargs: Any) -> WsBenchResult:
    kwargs.setdefault("connections", 2)
    kwargs.setdefault("timeout", 5.0)
    if "requests" in kwargs:
        kwargs.setdefault("duration", 20.0)
    result = run_bench(BenchConfig(url=url, **kwargs))
    assert isinstance(result, WsBenchResult)
    return result


def echo_app(received: list[int]) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        if scope["path"] == "/forbidden":
            await send({"type": "websocket.close"})  # before accept: a 403
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(1)
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message["text"]})

    return app


@pytest.fixture
def asgi_echo() -> Iterator[tuple[Server, list[int]]]:
    received: list[int] = []
    with Server(echo_app(received), bind="127.0.0.1:0", workers=2) as server:
        yield server, received


@pytest.fixture
def raw() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Callable[[socket.socket], None]) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# -- against our own server ---------------------------------------------------------------


def test_a_timed_run_counts_the_echoes_the_server_sent_and_closes_with_1000(
    asgi_echo: tuple[Server, list[int]],
) -> None:
    server, received = asgi_echo
    port = server.address[1]
    result = ws_bench(f"ws://127.0.0.1:{port}/echo", duration=1.0, connections=8)
    assert result.responses > 0 and result.ok and result.diagnosis == []
    # Every echo counted was a message the app answered; every message the app got was
    # sent; at most one per connection was in flight when the run ended.
    assert result.responses <= len(received) <= result.requests
    assert result.requests - result.responses <= 8
    assert result.handshakes_ok == result.connections.established == 8
    assert result.handshakes_failed == 0 and result.connections.failed == 0
    assert result.close_codes == {"1000": 8} and result.status == {101: 8}
    assert result.latency.count == result.responses
    assert server.stats()["websocket"]["opened"] == 8
    text = result.to_text()
    for line in ("handshakes   ok 8  failed 0", "close codes  1000: 8", "messages/s", "result: ok"):
        assert line in text


def test_text_messages_over_64_kib_are_echoed_whole_by_a_raw_handler() -> None:
    seen: list[tuple[type, int]] = []

    class Echo(WebSocketHandler):
        def on_message(self, conn: Connection, data: str | bytes) -> None:
            seen.append((type(data), len(data)))
            self.send(conn, data)

    with Server(handler=Echo, bind="127.0.0.1:0", workers=1) as server:
        result = ws_bench(f"ws://127.0.0.1:{server.address[1]}/", requests=20, text=True,
                          message_size=70_000)
    assert result.responses == 20 and result.ok
    assert seen == [(str, 70_000)] * 20  # 8-byte lengths, text as text
    assert result.bytes_received > 20 * 70_000
    data = result.to_json()
    assert data["messages"] == {"sent": 20, "echoed": 20}
    assert data["config"]["text"] is True and data["config"]["message_size"] == 70_000


def test_an_upgrade_the_app_refuses_is_named_with_its_status(
    asgi_echo: tuple[Server, list[int]],
) -> None:
    server, _ = asgi_echo
    result = ws_bench(f"ws://127.0.0.1:{server.address[1]}/forbidden", requests=6)
    assert result.handshake_errors == {"HTTP 403": 6} and result.status == {403: 6}
    assert result.connections.errors == {"handshake": 6}
    assert result.responses == 0 and not result.ok
    assert any("rejected (HTTP 403: 6)" in s for s in result.diagnosis), result.diagnosis
    assert "failed 6 (HTTP 403: 6)" in result.to_text()


def test_a_port_with_no_listener_is_named_refused() -> None:
    result = ws_bench(f"ws://127.0.0.1:{unused_port()}/", requests=5)
    c = result.connections
    assert c.attempted == c.refused == 5 and c.established == 0
    assert result.handshakes_ok == 0 and not result.ok
    assert "nothing is listening" in " ".join(result.diagnosis).lower()


# -- servers that misbehave ---------------------------------------------------------------


def read_frame(conn: socket.socket, buf: bytearray) -> tuple[int, bytes, bool] | None:
    """One client frame: ``(opcode, unmasked payload, was masked)``; None at EOF."""

    def need(n: int) -> bool:
        while len(buf) < n:
            data = conn.recv(65536)
            if not data:
                return False
            buf.extend(data)
        return True

    if not need(2):
        return None
    n, start = buf[1] & 0x7F, 2
    if n >= 126:
        start = 4 if n == 126 else 10
        if not need(start):
            return None
        n = int.from_bytes(buf[2:start], "big")
    masked = bool(buf[1] & 0x80)
    end = start + (4 if masked else 0) + n
    if not need(end):
        return None
    payload = bytes(buf[end - n : end])
    if masked:
        payload = apply_mask(payload, bytes(buf[start : start + 4]))
    opcode = buf[0] & 0x0F
    del buf[:end]
    return opcode, payload, masked


def upgrade(conn: socket.socket, buf: bytearray, *, good_key: bool = True,
            send: Callable[[bytes], None] | None = None) -> bool:
    head = read_request(conn, buf)
    if head is None:
        return False
    key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    answer = accept_key(key if good_key else b"x" + key)
    (send or conn.sendall)(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + answer
                           + b"\r\n\r\n")
    return True


def echo_server(reply: Callable[[int, bytes], bytes], *, good_key: bool = True,
                on_close: bytes | None = frame_bytes(8, b"\x03\xe8"),
                after: Callable[[socket.socket, bytearray], None] | None = None,
                dribble: bool = False) -> Callable[[socket.socket], None]:
    """A raw server: upgrade, then answer each message with ``reply(opcode, payload)``
    (and ``after`` it), each close with ``on_close`` (None: stay silent; b"": hang up);
    ``dribble`` sends everything one byte per ``send``."""

    def handle(conn: socket.socket) -> None:
        def send(data: bytes) -> None:
            if not dribble:
                conn.sendall(data)
                return
            for i in range(len(data)):
                conn.sendall(data[i : i + 1])

        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        if not upgrade(conn, buf, good_key=good_key, send=send):
            return
        while (frame := read_frame(conn, buf)) is not None:
            opcode, payload, _ = frame
            if opcode == 8:
                if on_close is None:
                    conn.recv(1)  # until the client gives up
                elif on_close:
                    send(on_close)
                return
            send(reply(opcode, payload))
            if after is not None:
                after(conn, buf)

    return handle


FAULTS = {
    "masked frame from the server": lambda op, p: frame_bytes(op, p, mask=os.urandom(4)),
    "echo mismatch: not the bytes sent": lambda op, p: frame_bytes(op, p[::-1]),
    "echo mismatch: text for binary or the reverse": lambda op, p: frame_bytes(1, p),
    "echo mismatch: shorter than the message": lambda op, p: frame_bytes(op, p[:-1]),
    "reserved bits set (nothing negotiated)": lambda op, p: frame_bytes(op, p, rsv1=True),
    "unknown opcode 0x3": lambda op, p: frame_bytes(3, p),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_broken_frame_or_a_wrong_echo_is_named_as_a_protocol_error(
    raw: Callable[..., RawServer], fault: str,
) -> None:
    server = raw(echo_server(FAULTS[fault]))
    result = ws_bench(f"ws://127.0.0.1:{server.port}/", requests=6)
    assert result.protocol_errors == {fault: 6}
    assert result.connections.errors == {"protocol": 6}
    assert result.handshakes_ok == 6 and result.responses == 0 and not result.ok
    assert any(f"did not echo ({fault}: 6)" in s for s in result.diagnosis), result.diagnosis
    assert f"protocol errors: {fault}: 6" in result.to_text()


def test_a_wrong_accept_key_fails_the_handshake(raw: Callable[..., RawServer]) -> None:
    server = raw(echo_server(frame_bytes, good_key=False))
    result = ws_bench(f"ws://127.0.0.1:{server.port}/", requests=4)
    assert result.handshake_errors == {"bad Sec-WebSocket-Accept": 4}
    assert result.status == {101: 4} and result.handshakes_ok == 0 and result.requests == 0
    assert any("breaks RFC 6455" in s for s in result.diagnosis), result.diagnosis


def test_fragmented_echoes_dribbled_byte_by_byte_with_a_ping_between_count(
    raw: Callable[..., RawServer],
) -> None:
    pongs: list[tuple[int, bytes, bool]] = []
    lock = threading.Lock()

    def fragments(opcode: int, payload: bytes) -> bytes:
        return (frame_bytes(opcode, payload[:10], fin=False) + frame_bytes(9, b"hi")
                + frame_bytes(0, payload[10:]))

    def read_the_pong(conn: socket.socket, buf: bytearray) -> None:
        frame = read_frame(conn, buf)
        if frame is not None:
            with lock:
                pongs.append(frame)

    server = raw(echo_server(fragments, after=read_the_pong, dribble=True))
    result = ws_bench(f"ws://127.0.0.1:{server.port}/", requests=10, message_size=300)
    assert result.responses == 10 and result.ok, result.to_text()
    assert pongs == [(10, b"hi", True)] * 10  # each ping answered with a masked pong
    assert result.close_codes == {"1000": 2}


@pytest.mark.parametrize(
    "on_close, code",
    [(frame_bytes(8, b"\x03\xe9"), "1001"), (b"", "1006"), (None, "timeout")],
    ids=["1001", "hang-up", "silent"],
)
def test_the_servers_answer_to_our_close_is_counted(
    raw: Callable[..., RawServer], on_close: bytes | None, code: str,
) -> None:
    server = raw(echo_server(frame_bytes, on_close=on_close))
    result = ws_bench(f"ws://127.0.0.1:{server.port}/", requests=8, timeout=0.5)
    assert result.responses == 8 and result.connections.failed == 0
    assert result.close_codes == {code: 2}
    assert not result.ok  # only 1000 is a clean close
    assert any("Close codes other than 1000" in s for s in result.diagnosis)


def test_a_server_closing_mid_run_is_counted_with_its_code(
    raw: Callable[..., RawServer],
) -> None:
    answers: list[tuple[int, bytes, bool] | None] = []

    def going_away(conn: socket.socket) -> None:
        buf = bytearray()
        if upgrade(conn, buf):
            conn.sendall(frame_bytes(8, b"\x03\xe9"))
            while (frame := read_frame(conn, buf)) is not None and frame[0] != 8:
                pass  # the message sent before our close arrived
            answers.append(frame)

    server = raw(going_away)
    result = ws_bench(f"ws://127.0.0.1:{server.port}/", requests=4)
    assert result.close_codes == {"1001": 4}
    assert wait_for(lambda: len(answers) == 4)
    assert answers == [(8, b"\x03\xe9", True)] * 4  # the client echoed the close code
    assert result.connections.errors == {"closed_by_server": 4}
    assert any("closed by the server during the run" in s for s in result.diagnosis)


def test_an_echo_that_never_comes_is_timed_out(raw: Callable[..., RawServer]) -> None:
    def silent(conn: socket.socket) -> None:
        buf = bytearray()
        if upgrade(conn, buf):
            read_frame(conn, buf)
            conn.recv(1)

    server = raw(silent)
    result = ws_bench(f"ws://127.0.0.1:{server.port}/", requests=2, timeout=0.3)
    assert result.connections.timed_out == result.timeouts_response == 2
    assert result.handshakes_ok == 2 and result.handshake_errors == {}
    assert any("2 messages got no echo within 0.3 s" in s for s in result.diagnosis)


# -- frames, configuration and the command line -------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_client_frames_are_masked_and_read_back_by_the_server_codec(size: int) -> None:
    headers = [(b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
               (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
               (b"sec-websocket-version", b"13")]
    _, ws = accept(parse_upgrade_request("GET", "1.1", headers))
    payload = os.urandom(size)
    frame = masked_frame(2, payload, b"\x01\x02\x03\x04")
    assert frame[1] & 0x80  # the mask bit
    assert ws.receive_data(frame) == [BytesMessage(payload)]
    assert ws.receive_data(masked_frame(1, b"ok", os.urandom(4))) == [TextMessage("ok")]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"url": "ws://127.0.0.1/", "rate": 10.0}, "--rate is for http"),
        ({"url": "ws://127.0.0.1/", "keepalive": False}, "--close is for http"),
        ({"url": "ws://127.0.0.1/", "method": "POST"}, "--method is for http"),
        ({"url": "http://127.0.0.1/", "text": True}, "--size and --text are for ws"),
        ({"url": "ws://127.0.0.1/", "message_size": 1 << 30}, "message size"),
        ({"url": "ws://127.0.0.1/", "insecure": True}, "are for https:// and wss:// URLs"),
    ],
)
def test_settings_that_do_not_fit_the_scheme_are_refused(
    kwargs: dict[str, Any], message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)


@pytest.mark.parametrize(
    "url, problem",
    [("ws://", "no host"), ("ws:///echo", "no host"), ("wsx://127.0.0.1/", "ws(s)://")],
)
def test_a_bad_url_is_one_error_line(url: str, problem: str) -> None:
    result = CliRunner().invoke(cli.reactor, ["bench", url, "-n", "1"], prog_name="reactor")
    assert result.exit_code == 2
    assert problem in error_line(result)


def test_the_command_prints_json_and_text(asgi_echo: tuple[Server, list[int]]) -> None:
    url = f"ws://127.0.0.1:{asgi_echo[0].address[1]}/"
    runner = CliRunner()
    out = runner.invoke(cli.reactor, ["bench", url, "-n", "100", "-c", "2", "--size", "1k",
                                      "--json", "-q"], prog_name="reactor")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["ok"] and data["messages"] == {"sent": 100, "echoed": 100}
    assert data["close_codes"] == {"1000": 2} and data["handshakes"]["ok"] == 2
    assert data["config"]["message_size"] == 1024 and "responses" not in data
    out = runner.invoke(cli.reactor, ["bench", url, "-d", "0.6", "-c", "2", "--text"],
                        prog_name="reactor")
    assert out.exit_code == 0, out.output
    assert "text messages of 32 bytes" in out.stdout and "close codes  1000: 2" in out.stdout
    assert " messages, " in out.stderr  # the progress line counts messages
