"""Ownership: one thread at a time touches a connection; tokens are never reused.

A connection is served by whichever worker holds the run slot when its events come
(docs/design.md, "Ownership"); when a worker is detached in a long blocking section
it keeps the connection it serves, and the others stash that connection's events and
timers. These tests instrument a handler to catch two threads inside one
connection's callbacks at once, and run with the ``REACTOR_DEBUG`` assertion on.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from mioreactor.reactor.event import READABLE, WRITABLE
from mioreactor.workers import BaseHandler, Connection, EchoHandler, Server
from mioreactor.workers.core import connection

from tests.workers.util import echo_once, recv_exactly, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """The REACTOR_DEBUG=1 ownership assertion, switched on for this test."""
    monkeypatch.setattr(connection, "DEBUG", True)


class Guarded(BaseHandler):
    """Echoes, sometimes after blocking, and records any overlap of two threads in
    one connection's callbacks, or a callback on a thread that is not conn.worker."""

    def _enter(self, conn: Connection) -> None:
        me = threading.current_thread().name
        state = conn.context
        if state["in"] is not None:
            VIOLATIONS.append(f"{conn.token}: {me} entered while {state['in']} was inside")
        if me != conn.worker.name:
            VIOLATIONS.append(f"{conn.token}: called on {me}, conn.worker is {conn.worker.name}")
        state["in"] = me
        state["threads"].add(me)

    def _leave(self, conn: Connection) -> None:
        conn.context["in"] = None

    def connection_made(self, conn: Connection) -> None:
        conn.context = {"in": None, "threads": set()}
        self._enter(conn)
        TOKENS.append(conn.token)
        conn.write(b"%d\n" % conn.token)
        self._leave(conn)

    def data_received(self, conn: Connection, data: bytes) -> None:
        self._enter(conn)
        try:
            if data.startswith(b"slow"):
                with conn.worker.blocking():  # long enough to hand the slot over
                    time.sleep(0.02)
            conn.write(data)
            conn.call_later(0.001, lambda: self._tick(conn))
        finally:
            self._leave(conn)

    def _tick(self, conn: Connection) -> None:
        self._enter(conn)
        self._leave(conn)

    def connection_lost(self, conn: Connection, exc: BaseException | None) -> None:
        self._enter(conn)
        self._leave(conn)


VIOLATIONS: list[str] = []
TOKENS: list[int] = []


@pytest.fixture
def guarded(debug: None) -> Iterator[Server]:
    VIOLATIONS.clear()
    TOKENS.clear()
    server = Server(handler=Guarded, bind="127.0.0.1:0", workers=4, handoff_after=0.002)
    server.start()
    yield server
    server.stop(timeout=5)


def read_token(sock: socket.socket) -> int:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk
        line += chunk
    return int(line)


def test_tokens_strictly_increase_and_are_never_reused(guarded: Server) -> None:
    seen = []
    for _ in range(200):
        with socket.create_connection(guarded.address, timeout=5) as s:
            seen.append(read_token(s))
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert all(b > a for a, b in itertools.pairwise(seen))


def test_one_thread_at_a_time_touches_a_connection_even_across_handoffs(guarded: Server) -> None:
    clients = 12
    rounds = 15
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with socket.create_connection(guarded.address, timeout=10) as s:
                read_token(s)
                for r in range(rounds):
                    msg = (b"slow" if (i + r) % 3 == 0 else b"fast") + b"%03d.%03d;" % (i, r)
                    s.sendall(msg)
                    assert recv_exactly(s, len(msg)) == msg
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [
        threading.Thread(target=client, args=(i,), name=f"test-client-{i}") for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert wait_for(lambda: guarded.stats()["active"] == 0, 5.0)
    assert VIOLATIONS == []
    stats = guarded.stats()
    assert sum(w["handler_errors"] for w in stats["workers"]) == 0
    # The blocking sections did hand the slot over, so the check above ran with
    # several worker threads serving the same connections.
    assert stats["handoffs"] > 0


def test_the_debug_assertion_catches_a_foreign_thread(guarded: Server) -> None:
    with socket.create_connection(guarded.address, timeout=5) as s:
        read_token(s)
        dispatch = guarded._dispatch
        assert dispatch is not None
        assert wait_for(lambda: len(dispatch.conns) == 1, 2.0)
        conn = next(iter(dispatch.conns.values()))
        with pytest.raises(AssertionError, match="touched from thread"):
            conn.write(b"from the wrong thread")


def test_events_for_unknown_tokens_are_ignored() -> None:
    with Server(handler=EchoHandler, bind="127.0.0.1:0", workers=2) as server:
        assert echo_once(server.address, b"before") == b"before"
        # Events for tokens nobody knows: closed meanwhile, or never issued.
        assert server._dispatch is not None
        server._dispatch.queue.put(deque([(10**12, READABLE | WRITABLE), (1 << 16, READABLE)]))
        with socket.create_connection(server.address, timeout=5) as s:
            s.sendall(b"after")
            assert recv_exactly(s, 5) == b"after"
            stats = server.stats()
        assert sum(w["handler_errors"] for w in stats["workers"]) == 0


def test_reactor_debug_environment_variable_turns_the_assertion_on() -> None:
    code = "import mioreactor.workers.core.connection as c; print(c.DEBUG)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for value, expected in (("1", "True"), ("0", "False"), ("", "False")):
        env["REACTOR_DEBUG"] = value
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == expected
