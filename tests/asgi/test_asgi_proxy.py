"""Behind a proxy: ``client``, ``server`` and ``scheme`` of ASGI scopes as WSGI gets them.

From a peer in ``forwarded_allow_ips`` (``--forwarded-allow-ips``, ``--proxy-headers``),
``X-Forwarded-For`` sets ``client`` and ``X-Forwarded-Proto`` sets ``scheme``
(``https``, or ``wss`` for a WebSocket), read exactly as ``REMOTE_ADDR`` and
``wsgi.url_scheme`` are (tests/http/test_handler.py); an untrusted peer's fields
change nothing. A PROXY protocol header (v1, v2) sets ``client`` and ``server`` of
the connection. The express lane and the general path give the same scope.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable
from time import thread_time
from typing import Any

import pytest
from mioreactor import Server
from mioreactor.workers.asgi.express import match
from mioreactor.workers.asgi.handler import AsgiHandler
from mioreactor.workers.asgi.loop import LoopDriver
from mioreactor.workers.asgi.scope import ConnInfo, express_scope, http_scope
from mioreactor.workers.http import END_OF_MESSAGE, HttpConfig, HttpProtocol, Request
from mioreactor.workers.http import proxy as proxy_module
from mioreactor.workers.http.proxy import V2_SIGNATURE

from tests.http.fakes import FakeConnection, FakeWorker, connect, parse_responses

pytestmark = pytest.mark.timeout(30)

websockets = pytest.importorskip("websockets")

from websockets.sync.client import connect as ws_connect  # noqa: E402


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what the scope says of the addresses (JSON)."""
    seen = json.dumps({"type": scope["type"], "client": scope["client"],
                       "server": scope["server"], "scheme": scope["scheme"]})
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": seen})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": seen.encode()})


def get(address: tuple[str, int], head: bytes, prefix: bytes = b"") -> dict[str, Any]:
    """One request on a new connection (``prefix``: a PROXY header); the app's JSON."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(prefix + head)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    [(status, _, body)] = parse_responses(data)
    assert status == 200, data
    result: dict[str, Any] = json.loads(body)
    return result


FORWARDED = (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
             b"X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n")


@pytest.mark.parametrize("express", [True, False], ids=["lane", "general"])
def test_a_trusted_proxys_forwarded_fields_set_client_and_scheme(express: bool) -> None:
    cfg = HttpConfig(forwarded_allow_ips=("127.0.0.1",), express=express)
    with Server(app, bind="127.0.0.1:0", workers=1, http=cfg, lifespan="off") as server:
        seen = get(server.address, FORWARDED)
    # Read from the right: 127.0.0.1 is itself a trusted proxy, so the client is before it.
    assert seen["client"] == ["203.0.113.9", 0] and seen["scheme"] == "https"
    assert seen["server"] == list(server.address)


@pytest.mark.parametrize("allow", [(), ("10.9.9.9",)], ids=["none", "another-peer"])
def test_an_untrusted_peers_forwarded_fields_change_nothing(allow: tuple[str, ...]) -> None:
    cfg = HttpConfig(forwarded_allow_ips=allow)
    with Server(app, bind="127.0.0.1:0", workers=1, http=cfg, lifespan="off") as server:
        seen = get(server.address, FORWARDED)
    assert seen["client"][0] == "127.0.0.1" and seen["client"][1] != 0
    assert seen["scheme"] == "http"


def test_websocket_scopes_get_wss_and_the_client_from_a_trusted_proxy() -> None:
    headers = {"X-Forwarded-For": "198.51.100.4", "X-Forwarded-Proto": "https"}
    for allow, client, scheme in [(("*",), ["198.51.100.4", 0], "wss"),
                                  ((), None, "ws")]:
        cfg = HttpConfig(forwarded_allow_ips=allow)
        with Server(app, bind="127.0.0.1:0", workers=1, http=cfg, lifespan="off") as server:
            host, port = server.address
            with ws_connect(f"ws://{host}:{port}/", additional_headers=headers) as ws:
                seen = json.loads(ws.recv(timeout=5))
        assert seen["type"] == "websocket" and seen["scheme"] == scheme
        assert seen["client"] == client if client else seen["client"][0] == "127.0.0.1"


# -- the same reading as WSGI's, field by field (through the handler, no sockets) ----------


class PostingWorker(FakeWorker):
    def post(self, callback: Callable[[], None]) -> None:
        callback()


def serve(reads: list[bytes], cfg: HttpConfig) -> tuple[FakeConnection, list[dict[str, Any]]]:
    """Feed ``reads`` to one connection (peer 10.0.0.7:50000); the JSON answers."""
    worker = PostingWorker()
    driver = LoopDriver()
    try:
        conn = connect(AsgiHandler(worker, app, driver, cfg, None), worker)
        for data in reads:
            conn.feed(data)
            driver.step()
        out = conn.take()
    finally:
        driver.close()
    answers = [json.loads(body) if status == 200 else status
               for status, _, body in parse_responses(out)]
    return conn, answers


TRUSTED = HttpConfig(forwarded_allow_ips=("10.0.0.7", "10.0.0.8"))


@pytest.mark.parametrize("express", [True, False], ids=["lane", "general"])
@pytest.mark.parametrize(("fields", "client", "scheme"), [
    (b"X-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n", ["2.2.2.2", 0], "http"),
    (b"X-Forwarded-For: 1.1.1.1, 10.0.0.8\r\n", ["1.1.1.1", 0], "http"),  # trusted: skipped
    (b"X-Forwarded-For: 10.0.0.8\r\n", ["10.0.0.8", 0], "http"),  # all trusted: the leftmost
    (b"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n", ["2.2.2.2", 0], "http"),
    (b"X-Forwarded-For: ,\r\n", ["10.0.0.7", 50000], "http"),  # no address: the peer
    (b"X-Forwarded-Proto: HTTPS\r\n", ["10.0.0.7", 50000], "https"),
    (b"X-Forwarded-Proto: https, http\r\n", ["10.0.0.7", 50000], "http"),  # the last
    (b"X-Forwarded-Proto: http\r\nX-Forwarded-Proto: https\r\n", ["10.0.0.7", 50000], "https"),
    (b"X-Forwarded-Proto: ftp\r\n", ["10.0.0.7", 50000], "http"),  # neither: ignored
    (b"X_Forwarded_For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n", ["10.0.0.7", 50000], "http"),
])
def test_forwarded_fields_are_read_as_the_wsgi_environ_reads_them(
    fields: bytes, client: list[Any], scheme: str, express: bool
) -> None:
    cfg = HttpConfig(forwarded_allow_ips=TRUSTED.forwarded_allow_ips, express=express)
    _, answers = serve([b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n"], cfg)
    assert answers[0]["client"] == client and answers[0]["scheme"] == scheme


def test_the_lane_takes_forwarded_heads_and_scopes_them_as_the_general_path() -> None:
    info = ConnInfo(("10.0.0.7", 1), ("127.0.0.1", 8000), "http", None, "",
                    frozenset({"10.0.0.7"}))
    assert info.trusted
    data = (b"GET /a?b HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 9.9.9.9\r\n"
            b"X-Forwarded-Proto: https\r\n\r\n")
    found = match(data, 8192, 100)
    assert found is not None, "the lane takes it: its scope must apply the fields itself"
    method, _, raw_path, query, version, _, lowered, _ = found
    lane = express_scope(info, method, raw_path, query, version, lowered, {})
    request, end = HttpProtocol(HttpConfig()).feed(data)
    assert type(request) is Request and end is END_OF_MESSAGE
    general = http_scope(info, request)
    assert lane == general
    assert lane["client"] == ("9.9.9.9", 0) and lane["scheme"] == "https"


def test_proxy_protocol_v1_sets_client_and_server_even_when_split_across_reads() -> None:
    cfg = HttpConfig(proxy_protocol=True)
    head = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    conn, answers = serve([b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 ", b"443\r\n" + head,
                           head], cfg)
    # The second request on the connection (the express lane's) keeps the addresses.
    for answer in answers:
        assert answer["client"] == ["192.0.2.1", 5555]
        assert answer["server"] == ["198.51.100.2", 443]
    assert len(answers) == 2 and not conn.closed


def test_proxy_protocol_v2_sets_client_and_server() -> None:
    addresses = struct.pack("!4s4sHH", bytes([192, 0, 2, 9]), bytes([198, 51, 100, 3]), 4242, 8443)
    header = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses
    _, answers = serve([header + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"],
                       HttpConfig(proxy_protocol=True))
    assert answers[0]["client"] == ["192.0.2.9", 4242]
    assert answers[0]["server"] == ["198.51.100.3", 8443]


@pytest.mark.parametrize("express", [True, False], ids=["lane", "general"])
def test_a_connection_without_its_proxy_header_is_refused_even_for_a_head_the_lane_takes(
    express: bool,
) -> None:
    conn, answers = serve([b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"],
                          HttpConfig(proxy_protocol=True, express=express))
    assert answers == [400] and conn.closed


def test_proxy_protocol_end_to_end_for_http_and_websocket() -> None:
    prefix = b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n"
    with Server(app, bind="127.0.0.1:0", workers=1, proxy_protocol=True,
                lifespan="off") as server:
        seen = get(server.address, b"GET / HTTP/1.0\r\n\r\n", prefix)
        assert seen["client"] == ["203.0.113.7", 5555] and seen["server"] == ["198.51.100.1", 80]
        with socket.create_connection(server.address, timeout=10) as sock:
            sock.sendall(prefix + b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            data = b""
            while b"}" not in data:
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
        assert data.startswith(b"HTTP/1.1 101 ")
        text = data[data.index(b"{"):data.index(b"}") + 1]
        seen = json.loads(text)
        assert seen["type"] == "websocket" and seen["client"] == ["203.0.113.7", 5555]


# -- linear in the bytes (docs/design.md, "Untrusted bytes") ---------------------------------


def test_forwarded_fields_repeated_100000_times_are_read_in_linear_time() -> None:
    k = 100_000
    cfg = HttpConfig(max_header_size=1 << 24, max_headers=2 * k + 10)
    data = (b"GET / HTTP/1.1\r\nHost: h\r\n"
            + b"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n" * k + b"\r\n")
    request = HttpProtocol(cfg).feed(data)[0]
    assert type(request) is Request
    info = ConnInfo(("10.0.0.7", 1), ("127.0.0.1", 8000), "http", None, "",
                    frozenset({"10.0.0.7"}))
    best = float("inf")
    for _ in range(3):
        start = thread_time()
        scope = http_scope(info, request)
        best = min(best, thread_time() - start)
    assert scope["client"] == ("1.1.1.1", 0) and scope["scheme"] == "https"
    # About 60 ms here (25 of them the scope without a trusted peer); joining the
    # list per field would copy what came before each time (minutes).
    assert best < 0.010 + 2e-6 * k, f"{best * 1e3:.0f} ms"


def test_a_proxy_header_in_many_reads_is_parsed_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real = proxy_module.parse_proxy_header

    def spy(data: Any) -> Any:
        seen.append(data)
        return real(data)

    monkeypatch.setattr(proxy_module, "parse_proxy_header", spy)
    addresses = bytes([1, 2, 3, 4, 5, 6, 7, 8]) + struct.pack("!HH", 1000, 80)
    header = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 4000) + addresses
    header += b"\x00" * (4000 - 12)
    reads = [header[i:i + 1] for i in range(len(header))]
    _, answers = serve([*reads, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"],
                       HttpConfig(proxy_protocol=True))
    assert len(seen) == len(header)
    assert all(data is seen[0] for data in seen), "a copy per read"
    assert answers[0]["client"] == ["1.2.3.4", 1000]
