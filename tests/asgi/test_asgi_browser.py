"""A chat page with a WebSocket, served by a Starlette app, driven by headless Chromium.

The page joins the chat, says hello, and acknowledges every message someone else
sends; a Python client in the same room sees the browser's hello and its ack, so
both directions went through a real browser's WebSocket stack. Skips (with the
reason) where Chromium is not installed: ``.ci/run`` installs Debian's ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mioreactor import Server

pytestmark = pytest.mark.timeout(60)

pytest.importorskip("starlette")
pytest.importorskip("websockets")

from starlette.applications import Starlette  # noqa: E402
from starlette.responses import HTMLResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket, WebSocketDisconnect  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>chat</title></head>
<body><ul id="log"></ul>
<script>
const ws = new WebSocket(`ws://${location.host}/chat?name=browser`);
const log = (text) => {
  const li = document.createElement("li"); li.textContent = text;
  document.getElementById("log").appendChild(li);
};
ws.onopen = () => ws.send("hello from the browser");
ws.onmessage = (event) => {
  const m = JSON.parse(event.data);
  log(`${m.from}: ${m.text}`);
  if (m.from !== "browser") ws.send(`ack: ${m.text}`);
};
</script></body></html>
"""


def chat_app() -> Starlette:
    members: dict[str, WebSocket] = {}

    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def chat(websocket: WebSocket) -> None:
        name = websocket.query_params["name"]
        await websocket.accept()
        members[name] = websocket
        try:
            while True:
                text = await websocket.receive_text()
                for other in list(members.values()):
                    await other.send_json({"from": name, "text": text})
        except WebSocketDisconnect:
            members.pop(name, None)

    return Starlette(routes=[Route("/", page), WebSocketRoute("/chat", chat)])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_chat_page_in_headless_chromium_talks_to_a_python_client(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with Server(chat_app(), bind="127.0.0.1:0", workers=2) as server:
        host, port = server.address
        with connect(f"ws://{host}:{port}/chat?name=py") as ws:
            browser = subprocess.Popen(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", f"http://{host}:{port}/"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            try:
                assert ws.recv(timeout=30) == '{"from":"browser","text":"hello from the browser"}'
                ws.send("hi browser")
                assert ws.recv(timeout=10) == '{"from":"py","text":"hi browser"}'  # our own
                assert ws.recv(timeout=10) == '{"from":"browser","text":"ack: hi browser"}'
            finally:
                os.killpg(browser.pid, signal.SIGTERM)  # its own session: it and its children
                try:
                    browser.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(browser.pid, signal.SIGKILL)
                    browser.wait(10)
