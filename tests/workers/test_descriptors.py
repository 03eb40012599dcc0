"""A closed connection leaves nothing behind: 5,000 connect/close cycles.

Deregister before close, cancel the connection's timers, drop it from the worker's
table: after thousands of short connections the process holds exactly the
descriptors it held before, and the counters add up.
"""

from __future__ import annotations

import socket

import pytest
from mioreactor.workers import BaseHandler, Connection, EchoHandler, Server

from tests.workers.util import open_fds, reactor_threads, wait_for

CYCLES = 5000


class TimerOnEveryConnection(BaseHandler):
    """Sets a long timer per connection: closing must cancel it."""

    def connection_made(self, conn: Connection) -> None:
        conn.call_later(3600, conn.close)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("handler", [EchoHandler, TimerOnEveryConnection], ids=["echo", "timers"])
def test_connect_close_cycles_leave_the_descriptor_count_where_it_started(handler: type) -> None:
    before_server = open_fds()
    server = Server(handler=handler, bind="127.0.0.1:0", workers=2)
    server.start()
    try:
        address = server.address
        before = open_fds()
        for i in range(CYCLES):
            s = socket.create_connection(address, timeout=5)
            if i % 2:
                s.sendall(b"x")  # half of them send something first
            s.close()
        assert wait_for(lambda: server.stats()["active"] == 0, 10.0), server.stats()
        stats = server.stats()
        assert stats["accepted"] == CYCLES
        assert stats["accepted"] == stats["closed"] + stats["active"]
        assert sum(w["handler_errors"] for w in stats["workers"]) == 0
        assert open_fds() == before
        # No timer outlives its connection (the workers share one timer heap).
        assert all(wait_for(lambda w=w: len(w.timers) == 0, 2.0) for w in server._workers)
    finally:
        server.stop(timeout=5)
    assert reactor_threads() == []
    assert open_fds() == before_server
