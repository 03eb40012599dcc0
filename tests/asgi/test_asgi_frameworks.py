"""Real frameworks on the ASGI handler: Starlette and FastAPI, through httpx."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mioreactor import Server

pytestmark = pytest.mark.timeout(30)

starlette = pytest.importorskip("starlette")
fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi import BackgroundTasks, Depends, FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import FileResponse, JSONResponse, StreamingResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402
from starlette.staticfiles import StaticFiles  # noqa: E402


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_bytes(b"static hello\n")
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return tmp_path


def starlette_app(static: Path, events: list[str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"db": "connected"}
        events.append("shutdown")

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({"db": request.state.db})

    async def stream(request: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(5):
                await asyncio.sleep(0.01)
                yield f"line {i}\n".encode()

        return StreamingResponse(gen(), media_type="text/plain")

    async def file(request: Request) -> FileResponse:
        return FileResponse(static / "big.bin")

    return Starlette(
        routes=[Route("/state", state), Route("/stream", stream), Route("/file", file),
                Mount("/static", StaticFiles(directory=static))],
        lifespan=lifespan,
    )


def test_starlette_lifespan_state_streaming_and_files(static_dir: Path) -> None:
    events: list[str] = []
    with Server(starlette_app(static_dir, events), bind="127.0.0.1:0") as server:
        assert server.interface == "asgi"
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/state").json() == {"db": "connected"}
            with client.stream("GET", "/stream") as r:
                assert r.headers["transfer-encoding"] == "chunked"
                assert list(r.iter_lines()) == [f"line {i}" for i in range(5)]
            r = client.get("/file")  # FileResponse uses http.response.pathsend
            assert r.content == (static_dir / "big.bin").read_bytes()
            assert r.headers["content-length"] == str(1024 * 1024)
            assert client.get("/static/hello.txt").content == b"static hello\n"
            assert client.get("/static/missing.txt").status_code == 404
            head = client.head("/static/hello.txt")
            assert head.status_code == 200 and head.content == b""
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


class Item(BaseModel):
    name: str
    price: float


def fastapi_app(done: list[str]) -> FastAPI:
    api = FastAPI()

    def common(q: str | None = None) -> dict[str, Any]:
        return {"q": q}

    def record(name: str) -> None:
        done.append(name)

    @api.get("/items/{item_id}")
    async def read_item(item_id: int, params: dict[str, Any] = Depends(common)) -> dict[str, Any]:  # noqa: B008
        return {"item_id": item_id, **params}

    @api.post("/items")
    async def create(item: Item, tasks: BackgroundTasks) -> dict[str, Any]:
        tasks.add_task(record, item.name)
        return {"name": item.name, "double": item.price * 2}

    @api.get("/sync")
    def sync_endpoint() -> dict[str, str]:  # runs in the thread pool: the watcher wakes us
        return {"sync": "ok"}

    return api


def test_fastapi_json_validation_dependencies_and_background_tasks() -> None:
    done: list[str] = []
    with Server(fastapi_app(done), bind="127.0.0.1:0", workers=2) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/items/3", params={"q": "x"}).json() == {"item_id": 3, "q": "x"}
        assert client.get("/items/notanint").status_code == 422
        r = client.post("/items", json={"name": "pen", "price": 1.5})
        assert r.json() == {"name": "pen", "double": 3.0}
        assert client.post("/items", json={"name": "pen"}).status_code == 422
        assert client.get("/sync").json() == {"sync": "ok"}
        assert done == ["pen"]


async def _concurrent(url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        responses = await asyncio.gather(*(client.get(f"/items/{i}") for i in range(n)))
    return [r.json()["item_id"] for r in responses]


def test_fastapi_serves_many_concurrent_clients() -> None:
    with Server(fastapi_app([]), bind="127.0.0.1:0", workers=4) as server:
        assert asyncio.run(_concurrent(server.url, 50)) == list(range(50))

