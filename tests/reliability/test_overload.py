"""Overload: more clients than ``max_connections``, and more than ``ulimit -n``.

Both floods use keep-alive clients that send one request and then hold their
connection, so the server stays full until its keep-alive timeout frees a slot. What
must hold: the limit is never exceeded, the pressure is visible in ``stats()`` while
it lasts (queue in the kernel backlog, accept errors), every client is answered
(200, or 503 from the descriptor reserve), and the server is fully healthy after.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.reliability.support import assert_healthy, connect, parse_responses, running, wait_for

ROOT = Path(__file__).resolve().parents[2]
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def flood(address: tuple[str, int], clients: int) -> list[socket.socket]:
    """Connect ``clients`` sockets and send one keep-alive request on each."""
    socks = []
    for _ in range(clients):
        sock = connect(address)
        sock.sendall(REQUEST)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def collect(socks: list[socket.socket], timeout: float, on_tick: Any = None) -> dict[str, int]:
    """Read one response from each socket; count outcomes by status (or reset/none)."""
    sel = selectors.DefaultSelector()
    bufs: dict[socket.socket, bytes] = {}
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
        bufs[sock] = b""
    outcome: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    pending = set(socks)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            bufs[sock] += data
            done = None
            if b"\r\n\r\n" in bufs[sock]:
                try:
                    done = str(parse_responses(bufs[sock])[0][0])
                except AssertionError:
                    done = None  # body incomplete: keep reading
            if done is None and not data:
                done = "reset" if not bufs[sock] else "truncated"
            if done is not None:
                outcome[done] = outcome.get(done, 0) + 1
                sel.unregister(sock)
                pending.discard(sock)
        if on_tick is not None:
            on_tick()
    if pending:
        outcome["no answer"] = len(pending)
    sel.close()
    return outcome


def test_more_clients_than_max_connections_wait_in_the_backlog_and_are_all_served() -> None:
    # Three rounds of 40, each held for the 1.2 s keep-alive timeout: long enough for
    # stats' listen_queue (refreshed at most once a second) to show the backlog.
    limit, clients = 40, 120
    with running(max_connections=limit, keepalive_timeout=1.2, workers=2) as (server, baseline):
        socks = flood(server.address, clients)
        peak = {"active": 0, "backlog": 0}

        def sample() -> None:
            stats = server.stats()
            peak["active"] = max(peak["active"], stats["active"])
            backlog = sum(v or 0 for v in stats["listen_queue"].values())
            peak["backlog"] = max(peak["backlog"], backlog)

        sample()
        outcome = collect(socks, timeout=30.0, on_tick=sample)
        for sock in socks:
            sock.close()
        assert outcome == {"200": clients}, outcome
        stats = server.stats()
        assert peak["active"] <= limit, peak  # never over the limit...
        assert peak["active"] == limit and stats["paused_at_max"] >= 1  # ...and reached it
        assert peak["backlog"] > 0, peak  # the rest waited in the kernel backlog, visibly
        assert_healthy(server, baseline)


CHILD = r"""
import json, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
from mioreactor.workers.http import HttpConfig
from mioreactor.workers.server.server import Server

def app(environ, start_response):
    if environ["PATH_INFO"] == "/stats":
        body = json.dumps(server.stats()).encode()
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

server = Server(app, bind="127.0.0.1:0", workers=2, max_connections=10000, graceful_timeout=2,
                http=HttpConfig(keepalive_timeout=0.5, header_timeout=10))
server.start()
print(json.dumps({"port": server.address[1]}), flush=True)
sys.stdin.read()  # until the test closes our stdin
server.stop(timeout=2)
"""


class StatsClient:
    """Reads the child's ``/stats`` on one keep-alive connection opened before the flood
    (a new connection could not be accepted while the child is out of descriptors)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = connect(address)

    def get(self) -> dict[str, Any]:
        self.sock.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n")
        buf = b""
        while True:
            buf += self.sock.recv(65536)
            if b"\r\n\r\n" in buf:
                try:
                    [(status, _, body)] = parse_responses(buf)
                except AssertionError:
                    continue
                assert status == 200
                return json.loads(body)  # type: ignore[no-any-return]


def test_more_clients_than_ulimit_are_answered_and_the_server_recovers() -> None:
    nofile, clients = 64, 250
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(nofile)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        port = json.loads(child.stdout.readline())["port"]
        address = ("127.0.0.1", port)
        fd_dir = f"/proc/{child.pid}/fd"
        stats_client = StatsClient(address)
        base = stats_client.get()
        baseline_fds = len(os.listdir(fd_dir))
        seen = {"active": 0, "emfile": 0}

        def sample() -> None:
            stats = stats_client.get()
            seen["active"] = max(seen["active"], stats["active"])
            seen["emfile"] = stats["accept_errors"].get("EMFILE", 0)

        socks = flood(address, clients)
        outcome = collect(socks, timeout=60.0, on_tick=sample)
        for sock in socks:
            sock.close()
        # Every client got an answer: served, or told 503 with the reserve descriptor.
        assert set(outcome) <= {"200", "503"} and sum(outcome.values()) == clients, outcome
        # How many are shed depends on timing (one per accept retry); many are served.
        assert outcome.get("200", 0) >= nofile // 2, outcome
        # The pressure was visible while it lasted.
        assert seen["emfile"] > 0 and seen["active"] >= nofile // 2, seen
        # Full recovery: every connection but ours is closed, descriptors are back,
        # and new clients are served at once.
        assert wait_for(lambda: stats_client.get()["active"] == 1, 10.0), stats_client.get()
        after = stats_client.get()
        assert after["accepted"] == after["closed"] + after["active"]
        assert all(w["handler_errors"] == 0 for w in after["workers"])
        assert wait_for(lambda: len(os.listdir(fd_dir)) <= baseline_fds, 5.0)
        assert collect(flood(address, 20), timeout=10.0) == {"200": 20}
        assert base["accepted"] == 1
        stats_client.sock.close()
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    assert child.returncode == 0
