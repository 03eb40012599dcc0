"""The apps every server in the benchmarks serves: the same module for all peers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from json import dumps as _dumps
from typing import Any

BODY = b"Hello, world!"


def json(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """TechEmpower's json test: an object serialised per request (``json.dumps``)."""
    body = _dumps({"message": "Hello, World!"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def json_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``json`` as a native ASGI app (the uvicorn-asgi reference row)."""
    if scope["type"] != "http":
        return
    body = _dumps({"message": "Hello, World!"}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """13 bytes, Content-Length known: the classic keep-alive benchmark app."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [BODY]


def mixed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """10% of requests (path /slow) wait 20 ms as an I/O-bound app would on a database."""
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(0.020)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [BODY]


async def hello_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same 13-byte response as ``hello`` as a native ASGI app (reference row only)."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


async def ws_echo_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A WebSocket echo (the ``websocket`` scenario); plain HTTP gets the hello (warm-up)."""
    if scope["type"] == "http":
        await hello_asgi(scope, receive, send)
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message["text"]})


def _fastapi_json() -> Any:
    """A FastAPI app whose one endpoint returns ``{"message": "Hello, World!"}``.

    Made on first use (``__getattr__`` below): the other scenarios' servers need not
    import FastAPI, and a machine without it fails only the fastapi scenario.
    """
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/")
    async def root() -> dict[str, str]:
        return {"message": "Hello, World!"}

    return api


def __getattr__(name: str) -> Any:
    """``fastapi_json_asgi``: the FastAPI JSON endpoint (the fastapi scenario), made once."""
    if name == "fastapi_json_asgi":
        app = _fastapi_json()
        globals()[name] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
