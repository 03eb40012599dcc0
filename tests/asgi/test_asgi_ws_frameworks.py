"""WebSocket endpoints of real frameworks (Starlette, FastAPI) under the reactor."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from mioreactor import Server

pytestmark = pytest.mark.timeout(30)

pytest.importorskip("starlette")
pytest.importorskip("fastapi")
pytest.importorskip("websockets")

from fastapi import FastAPI, WebSocket, WebSocketDisconnect  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.endpoints import WebSocketEndpoint  # noqa: E402
from starlette.routing import WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket as StarletteWebSocket  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402


def fastapi_app(left: list[int], gone: threading.Event) -> FastAPI:
    api = FastAPI()

    @api.websocket("/ws/{room}")
    async def chat(websocket: WebSocket, room: str, token: str = "") -> None:
        if token != "secret":
            await websocket.close(code=1008)
            return
        await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"]
                               else None)
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"room": room, "echo": data})
        except WebSocketDisconnect as exc:
            left.append(exc.code)
            gone.set()

    @api.websocket("/bytes")
    async def raw(websocket: WebSocket) -> None:
        await websocket.accept()
        data = await websocket.receive_bytes()
        await websocket.send_bytes(data[::-1])
        await websocket.close(code=4321, reason="done")

    return api


def test_fastapi_websocket_json_subprotocol_and_disconnect() -> None:
    left: list[int] = []
    gone = threading.Event()
    with Server(fastapi_app(left, gone), bind="127.0.0.1:0", workers=2) as server:
        host, port = server.address
        base = f"ws://{host}:{port}"
        with connect(f"{base}/ws/lobby?token=secret", subprotocols=["chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat"
            ws.send('{"n": 1}')
            assert ws.recv(timeout=5) == '{"room":"lobby","echo":{"n":1}}'
            ws.close(4002)
        assert gone.wait(5)
        assert left == [4002]
        with pytest.raises(InvalidStatus) as info:  # closed before accept: 403
            connect(f"{base}/ws/lobby")
        assert info.value.response.status_code == 403
        with connect(f"{base}/bytes") as ws:
            ws.send(b"abc")
            assert ws.recv(timeout=5) == b"cba"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4321, "done")


class Counter(WebSocketEndpoint):
    encoding = "text"

    async def on_connect(self, websocket: StarletteWebSocket) -> None:
        await websocket.accept()
        websocket.state.n = 0

    async def on_receive(self, websocket: StarletteWebSocket, data: Any) -> None:
        websocket.state.n += 1
        await websocket.send_text(f"{websocket.state.n}: {data}")


def test_starlette_websocket_endpoint_and_an_unknown_route() -> None:
    app = Starlette(routes=[WebSocketRoute("/count", Counter)])
    with Server(app, bind="127.0.0.1:0", workers=1) as server:
        host, port = server.address
        with connect(f"ws://{host}:{port}/count") as ws:
            for word in ("a", "b", "c"):
                ws.send(word)
            assert [ws.recv(timeout=5) for _ in range(3)] == ["1: a", "2: b", "3: c"]
        with pytest.raises(InvalidStatus) as info:  # Starlette closes unknown routes: 403
            connect(f"ws://{host}:{port}/nowhere")
        assert info.value.response.status_code == 403
