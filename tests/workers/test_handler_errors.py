"""A handler exception closes only that connection, is logged with a traceback, and
the worker goes on serving the others."""

from __future__ import annotations

import logging
import socket

import pytest
from mioreactor.workers import Connection, EchoHandler, Server

from tests.workers.util import closed_by_peer, recv_exactly, wait_for


class Fragile(EchoHandler):
    """Echoes, but fails on ``boom`` (in data_received) and ``tick`` (in a timer)."""

    def data_received(self, conn: Connection, data: bytes) -> None:
        if data.startswith(b"boom"):
            raise RuntimeError("the handler broke on purpose")
        if data.startswith(b"tick"):
            conn.call_later(0.01, self._fail_in_timer)
            return
        conn.write(data)

    def _fail_in_timer(self) -> None:
        raise ValueError("the timer broke on purpose")


@pytest.mark.parametrize("trigger", [b"boom", b"tick"])
def test_a_handler_exception_closes_only_that_connection(
    trigger: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="mioreactor")
    with Server(handler=Fragile, bind="127.0.0.1:0", workers=1) as server:
        bystander = socket.create_connection(server.address, timeout=5)
        victim = socket.create_connection(server.address, timeout=5)
        try:
            bystander.sendall(b"hello")
            assert recv_exactly(bystander, 5) == b"hello"

            victim.sendall(trigger)
            assert closed_by_peer(victim), "the failing connection was not closed"

            # The same worker (there is only one) serves the others as before.
            bystander.sendall(b"still here")
            assert recv_exactly(bystander, 10) == b"still here"
            with socket.create_connection(server.address, timeout=5) as fresh:
                fresh.sendall(b"new")
                assert recv_exactly(fresh, 3) == b"new"
            assert wait_for(lambda: server.stats()["active"] == 1, 2.0)
            stats = server.stats()
            assert sum(w["handler_errors"] for w in stats["workers"]) == 1
        finally:
            bystander.close()
            victim.close()

    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    record = failures[0]
    assert record.name == "mioreactor"
    expected = RuntimeError if trigger == b"boom" else ValueError
    assert record.exc_info is not None and record.exc_info[0] is expected
    assert "broke on purpose" in caplog.text
    assert "Traceback" in caplog.text
