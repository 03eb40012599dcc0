"""Restarts without loss: ``reactor serve --processes 2`` under steady load.

A SIGHUP rolling restart replaces both server processes (the pids answering
``/stats`` change) and a SIGTERM then stops the supervisor gracefully. Under a steady
load of keep-alive and close clients (``LoadClient``): 0 non-2xx responses and 0
lost requests (a request sent on a connection the server accepted that got no
complete response). Connects refused once the listeners are closed are counted
apart, and so are keep-alive connections closed idle by a draining process, which
the client retries as RFC 9112 9.3.1 allows for idempotent requests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.loadclient import LoadClient, summary
from tests.reliability.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("reactor")
REACTOR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mioreactor"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats_pid(port: int) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    except OSError:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    return int(json.loads(body)["pid"])


def pids_now(port: int, tries: int = 24) -> set[int]:
    return {p for p in (stats_pid(port) for _ in range(tries)) if p is not None}


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [*REACTOR, "serve", "-b", f"127.0.0.1:{port}", "--processes", "2", "--workers", "2",
         "--graceful-timeout", "10", "--log-level", "info"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")},
    )
    try:
        assert wait_for(lambda: len(pids_now(port, 8)) == 2, 20, 0.2), (tmp_path / "serve.log").read_text()
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_sighup_rolling_restart_then_sigterm_lose_no_accepted_request(
    supervisor: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = supervisor
    old = pids_now(port)
    assert len(old) == 2
    load = LoadClient(("127.0.0.1", port), clients=4, keepalive_share=0.5, pause=0.002).start()
    try:
        assert wait_for(lambda: load.totals()["ok"] >= 200, 10), load.totals()
        proc.send_signal(signal.SIGHUP)
        # Both processes are replaced, one at a time, while the load goes on.
        assert wait_for(lambda: not (pids_now(port, 12) & old), 30, 0.2), "the old processes still serve"
        new = pids_now(port)
        assert len(new) == 2 and not (new & old)
        after_restart = load.totals()["ok"]
        assert wait_for(lambda: load.totals()["ok"] >= after_restart + 200, 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        # Let the clients meet the closed port for a moment: refused, not lost.
        time.sleep(0.3)
    finally:
        totals = load.stop()
    assert totals["non_2xx"] == 0 and totals["lost"] == 0, (summary(totals), load.lost_details)
    assert totals["ok"] >= 400 and totals["refused"] > 0, summary(totals)
