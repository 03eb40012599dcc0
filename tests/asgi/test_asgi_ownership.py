"""Ownership of ASGI connections: a coroutine writes to sockets other workers serve.

One asyncio loop per server is stepped by whichever worker feeds it, so an app's
coroutine may write to any connection: a WebSocket broadcast does. The rule
(docs/design.md, "Ownership"): an ASGI connection is touched only by the thread that
holds the loop's lock (``LoopDriver.lock``, the connection's ``guard``); workers take it
around every callback they serve on such a connection. ``REACTOR_DEBUG=1`` checks it
on every write. These tests run a broadcast across many WebSocket connections in a
child process with the check on and several run slots (so several workers serve
connections at once and writes land on connections another worker last served).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

pytest.importorskip("websockets")

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    r"""
    import asyncio, json, logging, sys, threading
    from websockets.sync.client import connect
    from mioreactor import Server
    from mioreactor.workers.core import connection
    from mioreactor.workers.core.connection import Conn

    assert connection.DEBUG, "REACTOR_DEBUG=1 did not switch the check on"
    clients_n, messages_n, run_slots = (int(a) for a in sys.argv[1:4])

    problems = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR or "touched from thread" in record.getMessage():
                problems.append(record.getMessage()[:300])

    logging.getLogger("mioreactor").addHandler(Catch())
    logging.getLogger("mioreactor").setLevel(logging.INFO)

    writes = {"foreign": 0, "all": 0}
    plain_write = Conn.write

    def counting_write(self, data):
        writes["all"] += 1
        if threading.current_thread().name != self.worker.name:
            writes["foreign"] += 1  # a write to a connection another worker last served
        plain_write(self, data)

    Conn.write = counting_write

    peers = set()

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        peers.add(send)
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                await asyncio.sleep(0)  # a loop round: other connections' steps interleave
                for peer in list(peers):
                    try:
                        await peer({"type": "websocket.send", "text": message["text"]})
                    except OSError:
                        pass
        finally:
            peers.discard(send)

    failures = []

    def client(i, ready, go, done):
        try:
            with connect(url, open_timeout=20, close_timeout=5) as ws:
                ready.release()
                go.wait(30)
                for m in range(messages_n):
                    ws.send(f"{i}.{m}")
                got = 0
                while got < clients_n * messages_n:
                    ws.recv(30)
                    got += 1
                done.release()
                go2.wait(30)
        except BaseException as exc:
            failures.append(f"client {i}: {exc!r}")
            ready.release()
            done.release()

    with Server(app, bind="127.0.0.1:0", workers=4, run_slots=run_slots,
                lifespan="off") as server:
        host, port = server.address[:2]
        url = f"ws://{host}:{port}/"
        ready, done = threading.Semaphore(0), threading.Semaphore(0)
        go, go2 = threading.Event(), threading.Event()
        threads = [threading.Thread(target=client, args=(i, ready, go, done))
                   for i in range(clients_n)]
        for t in threads:
            t.start()
        for _ in threads:
            ready.acquire(timeout=30)
        go.set()
        for _ in threads:
            done.acquire(timeout=60)
        go2.set()
        for t in threads:
            t.join(30)
        stats = server.stats()
    served_by = {w["name"]: w["batches"] for w in stats["workers"]}
    print(json.dumps({
        "failures": failures[:5], "problems": problems[:5], "writes": writes,
        "handler_errors": sum(w["handler_errors"] for w in stats["workers"]),
        "served_by": served_by, "run_slots": stats["run_slots"],
        "messages": stats.get("websocket", {}),
    }))
    """
)


def run_child(clients: int, messages: int, run_slots: int) -> dict[str, object]:
    env = dict(os.environ, REACTOR_DEBUG="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(clients), str(messages), str(run_slots)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("run_slots", [1, 2])
def test_a_broadcast_across_many_websockets_never_writes_from_a_foreign_thread(
    run_slots: int,
) -> None:
    r = run_child(clients=24, messages=8, run_slots=run_slots)
    assert r["failures"] == [], r
    assert r["problems"] == [], r
    assert r["handler_errors"] == 0, r
    writes = r["writes"]
    assert isinstance(writes, dict)
    assert writes["all"] >= 24 * 24 * 8
    if run_slots > 1:
        # Several workers served connections at once, and writes went to connections
        # another worker had served last: the case the rule is about, with the check on.
        served = r["served_by"]
        assert isinstance(served, dict)
        assert sum(1 for n in served.values() if n) >= 2, r
        assert writes["foreign"] > 0, r


def test_the_debug_check_wants_the_guard_on_an_asgi_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket
    import time

    from mioreactor import Server
    from mioreactor.workers.core import connection

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        return

    monkeypatch.setattr(connection, "DEBUG", True)
    with Server(app, bind="127.0.0.1:0", workers=2, lifespan="off") as server:
        with socket.create_connection(server.address[:2], timeout=5):
            dispatch = server._dispatch
            assert dispatch is not None
            deadline = time.monotonic() + 5
            while not dispatch.conns and time.monotonic() < deadline:
                time.sleep(0.01)
            conn = next(iter(dispatch.conns.values()))
            assert conn.guard is not None  # the loop's lock, copied at adoption
            with pytest.raises(AssertionError, match="without holding its guard"):
                conn.write(b"from a thread that does not hold the loop's lock")
            with conn.guard:
                conn.write(b"")  # holding it, any thread may
