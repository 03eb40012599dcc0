"""``max_connections``: the limit holds, and resuming never waits for a new edge.

At the limit the acceptor stops accepting and clients wait in the kernel backlog.
Under edge triggering no new listener event will announce those queued clients, so
the acceptor must drain as soon as a connection closes. The test makes no new
connection after the first ten: the waiting clients are served only if the close
itself resumes accepting.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest
from mioreactor.workers import EchoHandler, Server

from tests.workers.util import recv_exactly, wait_for

LIMIT = 5
CLIENTS = 10


@pytest.fixture(params=[None, "fallback"], ids=["default-backend", "fallback"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = Server(
        handler=EchoHandler,
        bind="127.0.0.1:0",
        workers=2,
        max_connections=LIMIT,
        backend=request.param,
    )
    srv.start()
    yield srv
    srv.stop(timeout=5)


def answered(socks: dict[int, socket.socket], wait: float, want: int = CLIENTS) -> set[int]:
    """Which clients (by index) got their echo within ``wait`` seconds (returns early
    once ``want`` have)."""
    got: set[int] = set()
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        pending = {s: i for i, s in socks.items() if i not in got}
        if left <= 0 or not pending or len(got) >= want:
            return got
        readable, _, _ = select.select(list(pending), [], [], left)
        for s in readable:
            i = pending[s]
            assert recv_exactly(s, 2) == b"%02d" % i
            got.add(i)


def test_max_connections_is_honoured_and_a_close_resumes_accepting(server: Server) -> None:
    socks = {i: socket.create_connection(server.address, timeout=5) for i in range(CLIENTS)}
    try:
        for i, s in socks.items():
            s.sendall(b"%02d" % i)
        served = answered(socks, 0.5)
        assert len(served) == LIMIT, f"served {sorted(served)} with max_connections={LIMIT}"
        waiting = {i: s for i, s in socks.items() if i not in served}
        # Nothing more is served while the first five stay open.
        assert answered(waiting, 0.3) == set()
        stats = server.stats()
        assert stats["active"] == LIMIT
        assert stats["paused_at_max"] >= 1

        # Close two served clients. No new connection is made: the waiting ones can
        # only be served if the close itself resumes accepting.
        for i in sorted(served)[:2]:
            socks[i].close()
        started = time.monotonic()
        resumed = answered(waiting, 1.0, want=2)
        elapsed = time.monotonic() - started
        assert len(resumed) == 2, f"{len(resumed)} waiting client(s) served after 2 closes"
        assert elapsed < 0.5, f"resuming took {elapsed:.3f} s"
        assert answered({i: s for i, s in waiting.items() if i not in resumed}, 0.2) == set()
        assert wait_for(lambda: server.stats()["active"] == LIMIT, 2.0)

        # Everybody served leaves: the last three are served too.
        for i in served:
            socks[i].close()
        rest = {i: s for i, s in waiting.items() if i not in resumed}
        assert len(rest) == 3
        assert answered(rest, 2.0) == set(rest)
    finally:
        for s in socks.values():
            s.close()
    assert wait_for(lambda: server.stats()["active"] == 0, 5.0)
    stats = server.stats()
    assert stats["accepted"] == CLIENTS
    assert stats["accepted"] == stats["closed"] + stats["active"]
