"""``timeout``: a request stuck in the app is logged once, with its thread's stack, and
still completes (workers/ops/watchdog.py). For an ASGI app, a coroutine that blocks
the loop is reported the same way."""

from __future__ import annotations

import asyncio
import http.client
import logging
import threading
import time
from typing import Any

import pytest
from mioreactor.workers.server.server import Server

SLEEP = 1.2


def blocked_in_this_function_for_the_watchdog(seconds: float) -> None:
    time.sleep(seconds)


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/slow":
        blocked_in_this_function_for_the_watchdog(SLEEP)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done " + environ["PATH_INFO"].encode()]


def get(server: Server, path: str, results: list[tuple[int, bytes]]) -> None:
    host, port = server.address[0], server.address[1]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        results.append((resp.status, resp.read()))
    finally:
        conn.close()


def watchdog_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mioreactor.watchdog"]


def test_a_stuck_request_is_logged_once_with_the_function_it_is_blocked_in_and_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mioreactor.watchdog")
    with Server(app, bind="127.0.0.1:0", workers=2, timeout=0.3) as server:
        results: list[tuple[int, bytes]] = []
        slow = threading.Thread(target=get, args=(server, "/slow?x=1", results))
        slow.start()
        deadline = time.monotonic() + 5
        while server.stats()["stuck_now"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = server.stats()
        assert stats["stuck_now"] == 1
        assert [w["stuck_for"] >= 0.3 for w in stats["workers"]].count(True) == 1  # rounded to ms
        # Other requests are served meanwhile by the other worker.
        fast: list[tuple[int, bytes]] = []
        get(server, "/fast", fast)
        assert fast == [(200, b"done /fast")]
        slow.join(10)
        assert results == [(200, b"done /slow")], "the stuck request still completes"
        stats = server.stats()
        assert stats["stuck_requests"] == 1 and stats["stuck_now"] == 0
    records = watchdog_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert "stuck request: GET /slow?x=1 has been inside the app for" in message
    assert "blocked_in_this_function_for_the_watchdog" in message
    assert "time.sleep(seconds)" in message  # the line it is blocked on
    assert "reactor-worker-" in message
    # The stack starts at the server's call into the app, not at the thread's start.
    assert "threading.py" not in message and "workers/core/worker.py" not in message
    seconds = float(message.split("inside the app for ")[1].split(" s")[0])
    assert 0.3 <= seconds < SLEEP


def test_requests_shorter_than_the_timeout_are_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mioreactor.watchdog")
    with Server(app, bind="127.0.0.1:0", workers=2, timeout=5) as server:
        results: list[tuple[int, bytes]] = []
        for _ in range(20):
            get(server, "/fast", results)
        server._watchdog.scan()  # type: ignore[union-attr]
        assert server.stats()["stuck_requests"] == 0
    assert results == [(200, b"done /fast")] * 20
    assert not watchdog_records(caplog)


def test_timeout_zero_runs_no_watchdog() -> None:
    with Server(app, bind="127.0.0.1:0", workers=1, timeout=0) as server:
        assert server._watchdog is None
        assert not any(t.name == "reactor-watchdog" for t in threading.enumerate())
        stats = server.stats()
        assert stats["stuck_requests"] == 0 and stats["stuck_now"] == 0
    with pytest.raises(ValueError, match="timeout must not be negative"):
        Server(app, timeout=-1)


def blocked_in_this_coroutine_for_the_watchdog(seconds: float) -> None:
    time.sleep(seconds)  # the app's bug: a blocking call on the event loop


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":  # blocks in the task's first step (an eager start)
        blocked_in_this_coroutine_for_the_watchdog(SLEEP)
    elif scope["path"] == "/later":  # blocks in a step the loop's timer asked for
        await asyncio.sleep(0.01)
        blocked_in_this_coroutine_for_the_watchdog(SLEEP)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done " + scope["path"].encode()})


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("path", "described"), [("/slow", "GET /slow"), ("/later", "")])
def test_a_coroutine_that_blocks_the_loop_is_reported_with_its_stack_and_completes(
    caplog: pytest.LogCaptureFixture, path: str, described: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="mioreactor.watchdog")
    with Server(asgi_app, bind="127.0.0.1:0", workers=2, timeout=0.3, lifespan="off") as server:
        assert server.interface == "asgi"
        results: list[tuple[int, bytes]] = []
        slow = threading.Thread(target=get, args=(server, path, results))
        slow.start()
        deadline = time.monotonic() + 5
        while server.stats()["stuck_now"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.stats()["stuck_now"] == 1
        slow.join(10)
        assert results == [(200, b"done " + path.encode())], "the stuck request still completes"
        # Steps that do not block leave no mark behind.
        fast: list[tuple[int, bytes]] = []
        for _ in range(5):
            get(server, "/fast", fast)
        assert fast == [(200, b"done /fast")] * 5
        assert server._watchdog is not None and server._watchdog.scan() == 0
        stats = server.stats()
        assert stats["stuck_requests"] == 1 and stats["stuck_now"] == 0
    records = watchdog_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert f"stuck request: {described}" in message
    assert "blocked_in_this_coroutine_for_the_watchdog" in message
    assert "time.sleep(seconds)  # the app's bug" in message  # the line it is blocked on
    assert "in asgi_app" in message  # the app's own frame
    assert "threading.py" not in message  # from the server's call into the app down
