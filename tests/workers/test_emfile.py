"""Out of descriptors (EMFILE): no busy loop, no stranded clients.

A server runs in a child process with ``RLIMIT_NOFILE`` at 64 and is flooded with
300 clients that connect, send and stay. Its ``accept()`` soon fails with EMFILE
while the listener stays readable: an acceptor that retried at once would burn a
whole core (and, under edge triggering, one that waited for a new edge would
strand the queued clients forever). Ours sheds one client with its reserve
descriptor and retries on a 5 ms -> 500 ms backoff.

Spin detection threshold: the child may use at most 0.6 s of CPU (user + system)
over 2 s of saturation, i.e. 30% of one core. A spinning acceptor uses ~100% (2 s);
the measured figure for ours is a few hundredths of a second. The threshold is loose
so that a slow or busy CI machine does not fail the test, and still catches a spin.

The child reads commands on stdin (``stats`` prints ``Server.stats()`` as JSON,
``quit`` stops it): stdin and stdout are already open, so the control channel needs
no descriptor when the child has none to spare.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.workers.util import echo_once, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 300
SATURATION_SECONDS = 2.0
MAX_CPU_SECONDS = 0.6

CHILD = r"""
import json, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
from mioreactor.workers import EchoHandler, Server

server = Server(handler=EchoHandler, bind="127.0.0.1:0", workers=2, backend=sys.argv[1] or None)
server.start()
print(json.dumps({"port": server.address[1]}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "stats":
        print(json.dumps(server.stats()), flush=True)
    elif cmd == "quit":
        break
server.stop(timeout=2)
print(json.dumps({"stopped": True}), flush=True)
"""


class Child:
    def __init__(self, backend: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )
        self.port = self._read()["port"]

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the child server exited early"
        return json.loads(line)

    def command(self, cmd: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.command("stats")
        return result

    def cpu_seconds(self) -> float:
        """utime + stime of the child, from /proc/PID/stat (fields 14 and 15)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): utime is field 14, stime field 15.
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.command("quit") == {"stopped": True}
            finally:
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


@pytest.fixture(params=["", "fallback"], ids=["default-backend", "fallback"])
def child(request: pytest.FixtureRequest) -> Iterator[Child]:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to read the child's CPU time")
    c = Child(request.param)
    try:
        yield c
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_out_of_descriptors_neither_spins_nor_strands_clients(child: Child) -> None:
    clients: list[socket.socket] = []
    try:
        for _ in range(CLIENTS):
            s = socket.create_connection(("127.0.0.1", child.port), timeout=5)
            s.sendall(b"hello")
            clients.append(s)
        # The server is out of descriptors once EMFILE has been counted.
        assert wait_for(lambda: child.stats()["accept_errors"].get("EMFILE", 0) > 0, 5.0), (
            child.stats()
        )
        before = child.cpu_seconds()
        time.sleep(SATURATION_SECONDS)
        used = child.cpu_seconds() - before
        stats = child.stats()
        assert used < MAX_CPU_SECONDS, f"{used:.2f} s of CPU in {SATURATION_SECONDS} s: a spin"
        assert stats["accept_errors"]["EMFILE"] >= 1
        assert stats["active"] < 64, "more connections than descriptors: the limit did not hold"
        # The backoff is bounded (500 ms at most), so the server keeps retrying and
        # shedding: during the saturation window it told at least one client.
        assert stats["shed"] >= 1
    finally:
        for s in clients:
            s.close()

    # Every client left: the server notices each close, drains the backlog (the
    # queued clients are gone too) and serves new clients: 20 of 20.
    assert wait_for(lambda: child.stats()["active"] == 0, 10.0), child.stats()
    address = ("127.0.0.1", child.port)
    served = sum(1 for i in range(20) if echo_once(address, b"ping%d" % i) == b"ping%d" % i)
    assert served == 20
    print(f"cpu {used:.3f} s over {SATURATION_SECONDS} s; stats {stats}")
