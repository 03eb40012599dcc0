"""The benchmark runner's pieces work: wrk parsing, medians, ratios, targets, profiles.

No server is started and nothing is timed: these check the arithmetic and parsing that
the published table depends on.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.profile import summarise
from bench.report import Row, Sample, check_targets, format_table, median, rows_from_samples
from bench.run import SCENARIOS, append_results
from bench.servers import PEERS
from bench.wrk import parse_duration_ms, parse_wrk

WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:18001/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.70ms    2.01ms  40.12ms   95.12%
    Req/Sec    29.51k     1.20k   31.00k    80.00%
  Latency Distribution
     50%    1.50ms
     75%    1.80ms
     90%  830.00us
     99%    1.02s
  88123 requests in 3.00s, 10.10MB read
  Socket errors: connect 0, read 7, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  29371.09
Transfer/sec:      3.37MB
"""


def test_wrk_report_is_parsed_with_units_and_errors() -> None:
    r = parse_wrk(WRK_OUTPUT)
    assert r.rps == pytest.approx(29371.09)
    assert r.requests == 88123
    assert r.p50 == pytest.approx(1.5) and r.latency_ms[90] == pytest.approx(0.83)
    assert r.p99 == pytest.approx(1020.0)
    assert r.errors == {"read": 7, "timeout": 2, "non2xx": 5} and r.error_count == 14


def test_a_wrk_report_without_requests_per_second_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
    with pytest.raises(ValueError):
        parse_duration_ms("12 parsecs")


def test_medians_ignore_missing_values() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0]) == 2.5
    assert median([None]) is None


def _samples() -> list[Sample]:
    out = []
    for rnd, (ours, peer) in enumerate([(300.0, 100.0), (200.0, 100.0), (250.0, 200.0)]):
        out.append(Sample("keepalive", "ours", rnd, ours, 1.0, 5.0 + rnd))
        out.append(Sample("keepalive", "uvicorn", rnd, peer, 2.0, 10.0))
    return out


def test_rows_take_medians_and_ratios_of_medians_with_per_round_ratios() -> None:
    rows = {r.server: r for r in rows_from_samples(_samples())}
    assert rows["ours"].rps == 250.0 and rows["ours"].p99 == 6.0 and rows["ours"].rounds == 3
    assert rows["uvicorn"].rps == 100.0
    assert rows["uvicorn"].ratio == pytest.approx(2.5)
    assert sorted(rows["uvicorn"].round_ratios) == pytest.approx([1.25, 2.0, 3.0])
    table = format_table(list(rows.values()), {"keepalive": "keep-alive hello"})
    assert "keep-alive hello" in table and "2.50 (1.25-3.00)" in table
    assert format_table(list(rows.values()), {}, markdown=True).startswith("| scenario |")


def test_targets_are_judged_from_the_rows() -> None:
    rows = rows_from_samples(_samples())
    rows.append(Row("idle", "ours", 90.0, None, None, 3, 0,
                    extra={"rss_per_conn_kib": 3.0, "active_share": 0.95}))
    rows.append(Row("idle", "uvicorn", 50.0, None, None, 3, 0, extra={"rss_per_conn_kib": 9.0}))
    checks = {c.name: c for c in check_targets(rows)}
    assert checks["keep-alive / uvicorn >= 1.35"].met is True
    assert checks["p99 at 50 conns <= uvicorn"].met is True
    assert checks["close / uvicorn >= 1.5"].met is None  # not measured
    assert checks["idle 10k: RSS/conn <= uvicorn"].met is True
    assert checks["idle 10k: active req/s >= 90% of without"].met is True


def test_every_scenario_names_known_servers_and_ours_first() -> None:
    for scn in SCENARIOS:
        assert scn.servers[0] == "ours"
        assert all(name in PEERS for name in scn.servers)
    argv = PEERS["ours"].argv(Path("/v/bin"), 8000, "hello", 8, 2, True)
    assert argv[:3] == ["/v/bin/reactor", "serve", "bench.apps:hello"]
    assert "-p" in argv and "--max-connections" in argv
    assert PEERS["uvicorn-asgi"].argv(Path("b"), 1, "hello", 4, 1, False)[1] == "bench.apps:hello_asgi"


def test_results_are_appended_under_the_results_heading(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Echo\n\ntext\n")
    append_results("### 2025-01-01\n\nblock\n", doc)
    append_results("### 2025-01-02\n\nblock\n", doc)
    text = doc.read_text()
    assert text.count("## Results") == 1 and "## Echo" in text
    assert text.index("## Results") < text.index("### 2025-01-01") < text.index("### 2025-01-02")


def test_py_spy_raw_stacks_are_summarised_per_thread() -> None:
    raw = (
        "thread (0x1): reactor-worker-0;run (workers/core/worker.py:10);send (reactor/net/stream.py:5) 3\n"
        "thread (0x1): reactor-worker-0;run (workers/core/worker.py:10) 1\n"
        "thread (0x2): reactor-acceptor;select (reactor/sys/epoll.py:9) 4\n"
    )
    prof = summarise(raw)
    worker = next(t for t in prof.total if "worker" in t)
    assert prof.total[worker] == 4
    assert prof.self_[worker]["send (reactor/net/stream.py)"] == 3
    assert prof.inclusive[worker]["run (workers/core/worker.py)"] == 4


def test_results_go_into_the_results_section_even_when_sections_follow(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# P\n\n## Results\n\nintro\n\n## Echo\n\necho text\n")
    append_results("### day one\n", doc)
    text = doc.read_text()
    assert text.index("intro") < text.index("### day one") < text.index("## Echo")


def test_the_breakdown_times_every_layer() -> None:
    """bench/breakdown.py runs (tiny counts) and reports a positive time per layer."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "bench" / "breakdown.py"), "--iterations", "200",
         "--repeats", "1", "--rate", "10000"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    layers = ["parse", "environ", "app+start_response", "handler", "conn+handler", "syscalls"]
    for name in layers:
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        assert float(line.split()[-2]) > 0, line
    assert "100.00 us" in out  # 1e6 / --rate


def test_the_echo_benchmark_serves_every_row_including_the_bare_loops() -> None:
    """bench/echo.py --bare: every server answers the ping-pong (rates, not timings)."""
    import json

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "bench" / "echo.py"), "--rounds", "1", "--seconds",
         "0.2", "--connections", "4", "--workers", "2", "--bare", "--json"],
        capture_output=True, text=True, timeout=90, check=True,
    ).stdout
    medians = json.loads(out)["medians"]
    assert {"ours", "asyncio", "bare-drain", "bare-short"} <= set(medians)
    assert all(rate > 0 for rate in medians.values()), medians


def test_bounds_say_when_a_target_is_above_what_the_floor_reaches() -> None:
    from bench.report import bounds

    rows = [Row("asgi", "floor", 40.0, None, None, 3, 0), Row("asgi", "uvicorn-asgi", 50.0,
                                                            None, None, 3, 0),
            Row("json", "floor", 96.0, None, None, 3, 0), Row("json", "granian", 100.0,
                                                            None, None, 3, 0)]
    lines = bounds(rows)
    assert any("asgi: the floor reaches 0.80x uvicorn-asgi" in b and "ABOVE" in b for b in lines)
    assert any("json: the floor reaches 0.96x granian" in b and "within" in b for b in lines)
    assert not any("granian-asgi" in b for b in lines)  # not measured: no line


@contextlib.contextmanager
def _floor(*args: str) -> Iterator[socket.socket]:
    """``bench/floor.py`` started with ``args`` on a free port, and a connection to it."""
    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen([sys.executable, str(root / "bench" / "floor.py"), "--port",
                              str(port), *args], cwd=root)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the floor did not start"
                time.sleep(0.05)
        with conn:
            yield conn
    finally:
        child.kill()
        child.wait(10)


@pytest.mark.parametrize("extra", [[], ["--asgi-direct"]])
def test_the_floor_serves_an_asgi_app_with_a_task_or_without(extra: list[str]) -> None:
    """bench/floor.py with an ``_asgi`` app answers through the ASGI app (its bytes)."""
    with _floor("--app", "bench.apps:hello_asgi", *extra) as conn:
        deadline = time.monotonic() + 20
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        got = b""
        while got.count(b"Hello, world!") < 2 and time.monotonic() < deadline:
            got += conn.recv(4096)
    assert got.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n")
    assert got.count(b"Hello, world!") == 2


@pytest.mark.parametrize("kind", ["wsgi", "asgi", "ws"])
def test_the_handler_cost_harness_serves_and_checks_every_answer(kind: str) -> None:
    """bench/handler_cost.py's fakes still drive the handlers (what callgrind counts)."""
    from bench.handler_cost import setup

    one, check, close = setup(kind)
    try:
        for _ in range(20):
            one()
        check(20)
        with pytest.raises(AssertionError):
            check(21)  # the count is real: one answer per request
    finally:
        close()


def test_the_idle_websocket_table_and_target_come_from_the_rows() -> None:
    from bench.report import format_memory

    def row(server: str, kib: float, lost: float = 0.0) -> Row:
        return Row("ws-idle", server, 0.0, None, None, 3, 0, extra={
            "rss_before_kib": 32768.0, "rss_idle_kib": 32768.0 + kib * 10000,
            "rss_per_conn_open_kib": kib, "rss_per_conn_kib": kib, "rss_per_conn_echo_kib": kib,
            "ws_open": 10000.0, "ws_failed": 0.0, "ws_deflate": 0.0, "pings": 10000.0,
            "lost": lost})

    rows = [row("ours", 7.0), row("uvicorn-asgi", 20.0)]
    checks = {c.name: c for c in check_targets(rows)}
    check = checks["10k idle WebSocket: RSS/conn <= uvicorn-asgi (issue 21)"]
    assert check.met is True and "7.00 KiB vs 20.00 KiB" in check.detail
    assert checks["10k idle WebSocket, deflate offered: RSS/conn <= uvicorn-asgi (issue 21)"].met is None
    table = format_memory(rows, {"ws-idle": "10k idle WebSockets"}, markdown=True)
    assert "| 10k idle WebSockets | uvicorn-asgi | 32.0 | 227.3 | 20.00 | 20.00 | 20.00 | 0.35 |" in table
    lost = {c.name: c for c in check_targets([row("ours", 7.0, lost=3.0), row("uvicorn-asgi", 20.0)])}
    assert lost["10k idle WebSocket: RSS/conn <= uvicorn-asgi (issue 21)"].met is False


def test_the_idle_websocket_client_speaks_what_the_codec_reads() -> None:
    """bench/idle.py's handshake, its compressed message and its pong, read by our codec."""
    from mioreactor.workers.websocket import (
        DeflateConfig,
        Pong,
        TextMessage,
        accept,
        frame_bytes,
        parse_upgrade_request,
    )

    from bench.idle import _deflated, _frames, _masked, ws_request

    head = ws_request("/", ["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"])
    lines = head.decode().split("\r\n")[1:-2]
    headers = [(n.lower().encode(), v.strip().encode()) for n, v in (h.split(":", 1) for h in lines)]
    response, ws = accept(parse_upgrade_request("GET", "1.1", headers), deflate=DeflateConfig())
    assert b"permessage-deflate" in response and ws.deflate is not None
    message = b'{"type":"chat","text":"' + b"x" * 40 + b'"}'
    events = ws.receive_data(_masked(1, _deflated(message), rsv1=True) + _masked(10, b"p"))
    assert events == [TextMessage(message.decode()), Pong(b"p")]
    buf = bytearray(frame_bytes(9, b"ping") + frame_bytes(8, b"\x03\xe8")[:3])
    assert _frames(buf) == [(9, b"ping")] and len(buf) == 3


def test_the_floor_closes_when_the_request_asks_and_says_so() -> None:
    """bench/floor.py is a row of the close scenario: it answers, says close, closes."""
    with _floor() as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := conn.recv(4096):  # ends: the floor closed the connection
            got += chunk
    assert b"\r\nConnection: close\r\n" in got and got.endswith(b"Hello, World!")


def test_the_floor_with_rules_dates_its_answers_and_closes_idle_connections() -> None:
    """bench/floor.py --rules: a current Date and a Server line; idle connections closed."""
    from email.utils import parsedate_to_datetime

    with _floor("--rules", "--idle", "0.5") as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while not got.endswith(b"Hello, World!"):
            chunk = conn.recv(4096)
            assert chunk, "closed before the answer"
            got += chunk
        head = got.decode("latin-1")
        date = head.split("\r\nDate: ", 1)[1].split("\r\n", 1)[0]
        assert abs(parsedate_to_datetime(date).timestamp() - time.time()) <= 2
        assert "\r\nServer: floor\r\n" in head
        began = time.monotonic()
        assert conn.recv(4096) == b""  # closed once idle past 0.5 s (swept each second)
        assert 0.4 <= time.monotonic() - began <= 4.0
