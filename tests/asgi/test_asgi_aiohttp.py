"""aiohttp's client against our ASGI server: GET, POST with a body, a WebSocket echo.

Another HTTP/1.1 and WebSocket client than httpx and websockets (its own parser, its
own framing and masking, its own permessage-deflate), on an asyncio loop of its own
in the test's thread while the server's loop is stepped by the server's workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mioreactor import Server

pytestmark = pytest.mark.timeout(30)

aiohttp = pytest.importorskip("aiohttp", reason="aiohttp is in the test extra: pip install -e '.[test]'")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        answer = b"%s %s %d %s|" % (scope["method"].encode(), scope["path"].encode(), len(body),
                                    headers.get(b"transfer-encoding", b"-")) + body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.body", "body": answer})
        return
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4002, "reason": "asked"})
            continue
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo " + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


async def _http(url: str) -> list[tuple[int, bytes]]:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield b"piece%d," % i

    big = bytes(range(256)) * 2048  # 512 KiB: reading pauses and resumes on the way
    async with aiohttp.ClientSession(url) as session:
        out: list[tuple[int, bytes]] = []
        async with session.get("/hello?x=1") as r:
            out.append((r.status, await r.read()))
        async with session.post("/form", data=b"a=1&b=2") as r:
            out.append((r.status, await r.read()))
        async with session.post("/stream", data=pieces()) as r:  # chunked
            out.append((r.status, await r.read()))
        async with session.put("/big", data=big) as r:
            out.append((r.status, await r.read()))
        return out


def test_aiohttp_client_get_and_post_with_a_body() -> None:
    with Server(app, bind="127.0.0.1:0", workers=2, lifespan="off") as server:
        results = asyncio.run(_http(server.url))
        big = bytes(range(256)) * 2048
        assert results == [
            (200, b"GET /hello 0 -|"),
            (200, b"POST /form 7 -|a=1&b=2"),
            (200, b"POST /stream 21 chunked|piece0,piece1,piece2,"),
            (200, b"PUT /big %d -|" % len(big) + big),
        ]
        assert server.stats()["requests"]["2xx"] == 4


async def _websocket(url: str, compress: int) -> list[Any]:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, compress=compress) as ws:
            seen: list[Any] = [ws.compress]
            await ws.send_str("hello")
            seen.append(await ws.receive_str(timeout=5))
            await ws.send_bytes(b"\x00\x01\x02")
            seen.append(await ws.receive_bytes(timeout=5))
            await ws.send_str("z" * 10000)
            seen.append(len(await ws.receive_str(timeout=5)))
            await ws.send_str("close")
            closing = await ws.receive(timeout=5)
            seen.append((closing.type, closing.data, closing.extra))
        seen.append(ws.close_code)
        return seen


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "deflate"])
def test_aiohttp_websocket_echo_and_the_servers_close(compress: int) -> None:
    with Server(app, bind="127.0.0.1:0", workers=2, lifespan="off") as server:
        host, port = server.address
        seen = asyncio.run(_websocket(f"ws://{host}:{port}/ws", compress))
        # aiohttp's ``compress``: the window bits agreed (ours: 12), 0 for none.
        assert bool(seen[0]) == bool(compress)
        assert seen[1:] == ["echo hello", b"\x02\x01\x00", 10005,
                            (aiohttp.WSMsgType.CLOSE, 4002, "asked"), 4002]
        assert server.stats()["websocket"]["messages_in"] == 4
