"""Fairness: one busy connection cannot hold the worker while others wait.

``Conn.on_readable`` reads at most ``READ_BUDGET`` chunks in one go, then hands the
connection's readiness back to the worker (``Worker.reschedule``), which serves it
again after the rest of the batch: no readiness is dropped, nothing waits for an
edge that will not come.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from mioreactor.workers import Server
from mioreactor.workers.core.connection import READ_BUDGET, RECV_SIZE

from tests.workers.util import Gate, wait_for

BIG = 16 * RECV_SIZE  # several budgets' worth of chunks for one connection


def test_a_connection_with_much_to_read_yields_to_the_others_in_its_batch() -> None:
    gate = Gate()
    log: list[str] = []
    received: dict[str, int] = {}

    def record(conn: Any, data: bytes) -> None:
        if data == b"hold":
            return
        name = "a" if data[:1] == b"a" else "b"
        received[name] = received.get(name, 0) + len(data)
        log.append(name)

    with Server(handler=gate.factory(record), bind="127.0.0.1:0", workers=2) as s:
        holder = socket.create_connection(s.address, timeout=5)
        a = socket.create_connection(s.address, timeout=5)
        b = socket.create_connection(s.address, timeout=5)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * BIG)
        with holder, a, b:
            assert wait_for(lambda: s.stats()["active"] == 3)
            holder.sendall(b"hold")  # the worker is busy while a and b fill up
            assert gate.entered.wait(5)
            sender = threading.Thread(target=a.sendall, args=(b"a" * BIG,))
            sender.start()
            time.sleep(0.1)
            b.sendall(b"b" * 10)
            time.sleep(0.05)
            gate.release.set()
            sender.join(5)
            assert wait_for(lambda: received.get("a") == BIG and received.get("b") == 10)
    names = log
    # a became ready first, so it leads the batch; b is served before a is done.
    assert names.index("b") < len(names) - 1 - names[::-1].index("a"), names
    assert names.count("a") > READ_BUDGET, names  # a was read over several turns
