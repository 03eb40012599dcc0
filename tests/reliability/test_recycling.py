"""Recycling (``--max-requests``) and stuck processes (``--timeout``) under the supervisor.

* ``ab -n 3000 -c 10`` against ``--processes 2 --max-requests 300
  --max-requests-jitter 50``: 0 failed requests, and the process ids answering change.
* Keep-alive clients across recycles (``ab -k``, and a Python client that checks every
  response): every request gets a complete response; a retiring process answers
  each keep-alive connection's next request with ``Connection: close`` rather than
  closing it between requests, so none even needs the RFC 9112 9.3.1 retry.
* One process with ``--max-requests`` runs under the supervisor and is replaced too.
* A process whose every worker is stuck past ``--timeout`` is replaced, after a log
  line saying why, and its stuck requests still complete.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.cli.proc import ServeProcess, http_request, tcp_address
from tests.reliability.loadclient import LoadClient, summary
from tests.reliability.support import wait_for

pytestmark = pytest.mark.slow


def pid_of(port: int) -> int | None:
    """The pid a fresh connection is served by (``tests.cli.apps:pid``), or None."""
    try:
        status, _, body = http_request(("127.0.0.1", port), "/", timeout=5)
    except OSError:
        return None
    return int(body) if status == 200 else None


def pids(port: int, tries: int = 16) -> set[int]:
    return {p for p in (pid_of(port) for _ in range(tries)) if p is not None}


@pytest.fixture
def recycling() -> Iterator[tuple[ServeProcess, int]]:
    server = ServeProcess(["tests.cli.apps:pid", "-b", "127.0.0.1:0", "--processes", "2",
                           "-w", "2", "--max-requests", "300", "--max-requests-jitter", "50",
                           "--graceful-timeout", "10"])
    try:
        port = tcp_address(server.wait_serving()[0])[1]
        assert wait_for(lambda: len(pids(port, 8)) == 2, 15, 0.1), server.output
        yield server, port
    finally:
        server.close()


def replacements(server: ServeProcess) -> int:
    return len(re.findall(r"server process \d+ replaces \d+", server.output))


@pytest.mark.skipif(shutil.which("ab") is None, reason="ab (apache2-utils) is not installed")
def test_ab_against_recycling_processes_fails_nothing_and_the_pids_change(
    recycling: tuple[ServeProcess, int],
) -> None:
    server, port = recycling
    old = pids(port)
    out = subprocess.run(
        ["ab", "-n", "3000", "-c", "10", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=120,
    ).stdout
    assert re.search(r"Complete requests:\s+3000\b", out), out
    assert re.search(r"Failed requests:\s+0\b", out), out
    assert "Non-2xx" not in out, out
    # Each process served about 1500 requests, past its 300-350: both are replaced.
    assert wait_for(lambda: not (pids(port, 12) & old), 30, 0.2), (old, server.output)
    assert len(pids(port)) == 2
    assert re.search(r"has served \d+ requests \(--max-requests 300, its limit 3[0-5]\d\): "
                     r"replacing it", server.output), server.output
    assert replacements(server) >= 2


@pytest.mark.skipif(shutil.which("ab") is None, reason="ab (apache2-utils) is not installed")
@pytest.mark.parametrize("share", ["reuseport", "inherit"])
def test_new_connections_across_many_replacements_are_never_reset(share: str) -> None:
    """Every replacement stops a process while clients connect. With ``reuseport`` the
    replacement inherits its slot's listen socket, so the connections queued there
    after the old process's last accept are not reset (before the slot sockets: 3 in
    40,000 over 12 replacements)."""
    with ServeProcess(["tests.cli.apps:pid", "-b", "127.0.0.1:0", "--processes", "2", "-w", "2",
                       "--max-requests", "1000", "--max-requests-jitter", "100",
                       "--share", share]) as server:
        port = tcp_address(server.wait_serving()[0])[1]
        out = subprocess.run(
            ["ab", "-r", "-n", "30000", "-c", "20", f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=120,
        ).stdout
        assert re.search(r"Complete requests:\s+30000\b", out), out
        assert re.search(r"Failed requests:\s+0\b", out), out
        assert replacements(server) >= 3, server.output


@pytest.mark.skipif(shutil.which("ab") is None, reason="ab (apache2-utils) is not installed")
def test_ab_keepalive_across_recycles_fails_nothing(recycling: tuple[ServeProcess, int]) -> None:
    """``ab -k`` counts a keep-alive connection closed between requests as a failure
    (a reset, or a "length" error when it reads EOF); a replaced process keeps its idle
    keep-alive connections for their next request and answers it with
    ``Connection: close`` (``Server.stop(idle_grace=...)``), so there is none."""
    server, port = recycling
    out = subprocess.run(
        ["ab", "-k", "-n", "30000", "-c", "10", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=120,
    ).stdout
    recycled = replacements(server)
    assert re.search(r"Complete requests:\s+30000\b", out), out
    assert re.search(r"Failed requests:\s+0\b", out), out
    assert "Non-2xx" not in out, out
    assert recycled >= 1, "no process was replaced while ab ran"
    keepalive = int(re.search(r"Keep-Alive requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert keepalive < 30000, "the retiring processes' last responses say Connection: close"


def test_keepalive_connections_across_recycles_finish_or_close_between_requests(
    recycling: tuple[ServeProcess, int],
) -> None:
    server, port = recycling
    old = pids(port)
    load = LoadClient(("127.0.0.1", port), clients=10, keepalive_share=1.0).start()
    try:
        assert wait_for(lambda: replacements(server) >= 4, 60, 0.2), (load.totals(), server.output)
    finally:
        totals = load.stop()
    assert totals["lost"] == 0 and totals["non_2xx"] == 0, (summary(totals), load.lost_details)
    assert totals["refused"] == 0, summary(totals)
    # A retiring process keeps idle keep-alive connections for their next request: no
    # request even meets a connection closed between requests.
    assert totals["retried"] == 0, summary(totals)
    assert totals["ok"] >= 4 * 300, summary(totals)
    assert not (pids(port) & old)


def test_one_process_with_max_requests_runs_under_the_supervisor() -> None:
    with ServeProcess(["tests.cli.apps:pid", "-b", "127.0.0.1:0", "-w", "2",
                       "--max-requests", "40"]) as server:
        port = tcp_address(server.wait_serving()[0])[1]
        server.wait_for(r"supervisor pid \d+")
        first = pid_of(port)
        assert first is not None
        seen = {first}
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            p = pid_of(port)
            assert p is not None, "a request failed during a recycle"
            seen.add(p)
        assert len(seen) >= 3, (seen, server.output)
        assert wait_for(lambda: replacements(server) >= 2, 10, 0.1), server.output


def test_a_process_whose_every_worker_is_stuck_is_replaced_and_its_requests_finish() -> None:
    with ServeProcess(["tests.cli.apps:slow", "-b", "127.0.0.1:0", "--processes", "2",
                       "-w", "1", "--timeout", "0.5", "--graceful-timeout", "10",
                       "--share", "inherit"]) as server:
        port = tcp_address(server.wait_serving()[0])[1]
        results: list[tuple[int, bytes]] = []

        def slow() -> None:
            status, _, body = http_request(("127.0.0.1", port), "/?seconds=2.5", timeout=20)
            results.append((status, body))

        clients = [threading.Thread(target=slow) for _ in range(2)]
        for c in clients:
            c.start()
            time.sleep(0.05)
        m = server.wait_for(r"server process (\d+): all 1 worker threads have been inside the "
                            r"app for more than --timeout 0.5 s \(the longest: GET "
                            r"/\?seconds=2.5 for [\d.]+ s\): replacing it", 15)
        stuck_pid = m.group(1)
        server.wait_for(r"stuck request: GET /\?seconds=2.5 has been inside the app", 5)
        assert "in slow" in server.output, "the stack names the app function"
        server.wait_for(rf"server process \d+ replaces {stuck_pid}", 15)
        for c in clients:
            c.join(20)
        assert results == [(200, b"slept 2.5\n")] * 2, "stuck requests still complete"
        server.wait_for(rf"server process {stuck_pid} has exited", 15)
        assert http_request(("127.0.0.1", port), "/?seconds=0")[0] == 200


def test_a_retired_process_that_does_not_end_is_killed_after_its_graceful_timeout() -> None:
    with ServeProcess(["tests.cli.apps:slow", "-b", "127.0.0.1:0", "--processes", "2",
                       "-w", "1", "--timeout", "0.3", "--graceful-timeout", "0.5",
                       "--keepalive-timeout", "0.5", "--share", "inherit"]) as server:
        port = tcp_address(server.wait_serving()[0])[1]
        results: list[str] = []

        def slow() -> None:
            # Cut at the graceful timeout, then killed: no answer (an empty reply).
            try:
                results.append(str(http_request(("127.0.0.1", port), "/?seconds=12", timeout=20)[0]))
            except (OSError, IndexError) as exc:
                results.append(type(exc).__name__)

        clients = [threading.Thread(target=slow) for _ in range(2)]
        for c in clients:
            c.start()
            time.sleep(0.05)
        m = server.wait_for(r"server process (\d+): all 1 worker threads have been inside", 10)
        server.wait_for(rf"server process \d+ replaces {m.group(1)}", 15)
        # 0.5 s graceful + 0.5 s keep-alive grace + 5 s: then it is killed.
        server.wait_for(rf"server process {m.group(1)} still runs \d+ s after it was told to "
                        r"stop: killing it", 12)
        server.wait_for(rf"server process {m.group(1)} has exited \(killed by SIGKILL\)", 5)
        for c in clients:
            c.join(20)
        assert len(results) == 2 and "200" not in results, results
        assert http_request(("127.0.0.1", port), "/?seconds=0")[0] == 200


def test_a_process_that_runs_no_python_is_replaced_when_its_heartbeat_stops() -> None:
    with ServeProcess(["tests.cli.apps:gil_hog", "-b", "127.0.0.1:0", "--processes", "2",
                       "-w", "2", "--timeout", "1", "--graceful-timeout", "0.5",
                       "--keepalive-timeout", "0.5", "--share", "inherit"]) as server:
        port = tcp_address(server.wait_serving()[0])[1]

        def hog() -> None:
            with contextlib.suppress(OSError, IndexError):  # killed: no answer
                http_request(("127.0.0.1", port), "/hog", timeout=40)

        threading.Thread(target=hog, daemon=True).start()
        # The hog holds the GIL in C: that process's watchdog cannot run, its heartbeat
        # stops, and the supervisor says so (after the 5 s floor), then replaces it.
        m = server.wait_for(r"server process (\d+) has sent no heartbeat for \d+ s "
                            r"\(--timeout 1\): it runs no Python at all", 20)
        wedged = m.group(1)
        server.wait_for(rf"server process \d+ replaces {wedged}", 15)
        server.wait_for(rf"server process {wedged} still runs \d+ s after it was told to "
                        r"stop: killing it", 15)
        server.wait_for(rf"server process {wedged} has exited \(killed by SIGKILL\)", 5)
        assert pid_of(port) != int(wedged)
        assert len(pids(port)) == 2, "two processes serve again"
