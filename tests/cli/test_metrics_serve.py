"""``reactor serve --metrics-bind``: one process and ``--processes 2`` for real, values read
back with prometheus_client's parser; option errors with click's CliRunner."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from mioreactor import cli
from mioreactor.workers.process.config import Config
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.proc import ServeProcess, get_json, http_request, tcp_address

pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def pids_of(samples: Samples) -> set[str]:
    return {dict(k[1])["pid"] for k in samples if k[0] == "reactor_worker_state"}


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[ServeProcess, tuple[str, int], str]]:
    """``reactor serve -b 127.0.0.1:0 --metrics-bind 127.0.0.1:0 ARGS`` (the demo app)."""
    proc = ServeProcess(["-b", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0", "-w", "2",
                         *request.param])
    try:
        (where,) = proc.wait_serving()
        url = proc.wait_for(r"metrics on (\S+)").group(1)
        yield proc, tcp_address(where), url
    finally:
        proc.close()


def wait_scrape(url: str, done: object, timeout: float = 10.0) -> Samples:
    """Scrape until ``done(samples)`` is true (children answer within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if done(samples) or time.monotonic() > deadline:  # type: ignore[operator]
            return samples
        time.sleep(0.1)


@pytest.mark.parametrize("served", [[]], indirect=True, ids=["one process"])
def test_one_process_metrics_match_its_stats(
    served: tuple[ServeProcess, tuple[str, int], str],
) -> None:
    _, address, url = served
    for _ in range(7):
        assert http_request(address, "/")[0] == 200
    assert http_request(address, "/nope")[0] == 404
    stats = get_json(address, "/stats")["server"]  # the 9th request, answered after this
    samples = scrape(url)
    assert value(samples, "reactor_processes") == 1
    assert value(samples, "reactor_requests_total", **{"class": "2xx"}) == 8
    assert value(samples, "reactor_requests_total", **{"class": "4xx"}) == 1
    assert value(samples, "reactor_request_duration_seconds_count") == 9
    assert value(samples, "reactor_connections_accepted_total") == stats["accepted"] == 9
    assert len(pids_of(samples)) == 1


@pytest.mark.parametrize("served", [["-p", "2"]], indirect=True, ids=["two processes"])
def test_two_processes_are_summed_and_a_rolling_restart_keeps_the_counters(
    served: tuple[ServeProcess, tuple[str, int], str],
) -> None:
    proc, address, url = served
    for _ in range(30):
        assert http_request(address, "/")[0] == 200
    for _ in range(4):
        assert http_request(address, "/nope")[0] == 404
    served_by = {get_json(address, "/stats")["pid"] for _ in range(20)}
    samples = wait_scrape(url, lambda s: value(s, "reactor_connections_closed_total") >= 54)
    assert value(samples, "reactor_processes") == 2
    assert value(samples, "reactor_requests_total", **{"class": "2xx"}) == 50
    assert value(samples, "reactor_requests_total", **{"class": "4xx"}) == 4
    assert value(samples, "reactor_request_duration_seconds_count") == 54
    assert value(samples, "reactor_request_duration_seconds_bucket", le="+Inf") == 54
    assert value(samples, "reactor_connections_accepted_total") == 54
    assert value(samples, "reactor_connections_closed_total") == 54
    assert value(samples, "reactor_connections_active") == 0
    assert value(samples, "reactor_workers", state="running") == 2  # one per process
    if os.path.exists("/proc/net/tcp"):  # read once, by the supervisor, for the whole port
        listener = f"{address[0]}:{address[1]}"
        assert value(samples, "reactor_listen_queue", listener=listener) == 0
    assert value(samples, "reactor_workers", state="standby") == 2
    before = pids_of(samples)
    assert len(before) == 2
    assert {str(p) for p in served_by} <= before

    # SIGHUP: both children are replaced; what they counted stays in the sums.
    mark = len(proc.lines)
    proc.signal(signal.SIGHUP)
    proc.wait_for("rolling restart done", start=mark, timeout=30)
    samples = wait_scrape(url, lambda s: not (pids_of(s) & before) and len(pids_of(s)) == 2)
    assert len(pids_of(samples)) == 2 and not pids_of(samples) & before
    assert value(samples, "reactor_processes") == 2
    assert value(samples, "reactor_requests_total", **{"class": "2xx"}) == 50
    assert value(samples, "reactor_connections_accepted_total") == 54
    for _ in range(6):
        assert http_request(address, "/")[0] == 200
    samples = wait_scrape(url, lambda s: value(s, "reactor_connections_closed_total") >= 60)
    assert value(samples, "reactor_requests_total", **{"class": "2xx"}) == 56
    assert value(samples, "reactor_request_duration_seconds_count") == 60


# -- the option ------------------------------------------------------------------------------
def test_metrics_bind_reaches_the_config_from_the_option_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configs: list[Config] = []
    monkeypatch.setattr("mioreactor.workers.process.supervisor.run", lambda c: configs.append(c) or 0)
    runner = CliRunner()
    result = runner.invoke(cli.reactor, ["serve", "--metrics-bind", "127.0.0.1:9100"],
                           env={"REACTOR_METRICS_BIND": None})
    assert result.exit_code == 0, result.output
    assert configs[-1].metrics_bind == "127.0.0.1:9100"
    assert configs[-1].server_kwargs()["metrics_bind"] == "127.0.0.1:9100"
    result = runner.invoke(cli.reactor, ["serve"], env={"REACTOR_METRICS_BIND": "[::1]:9101"})
    assert result.exit_code == 0, result.output
    assert configs[-1].metrics_bind == "[::1]:9101"
    result = runner.invoke(cli.reactor, ["serve"], env={"REACTOR_METRICS_BIND": None})
    assert configs[-1].metrics_bind is None


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1:99999", "::1:9100", "unix:/tmp/m.sock"])
def test_a_bad_metrics_bind_is_one_error_line_naming_the_option(bad: str) -> None:
    result = CliRunner().invoke(cli.reactor, ["serve", "--metrics-bind", bad],
                                env={"REACTOR_METRICS_BIND": None})
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--metrics-bind" in errors[0], result.output


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_metrics_address_in_use_fails_the_start_with_one_line(processes: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = ServeProcess(["-b", "127.0.0.1:0", "-p", processes,
                             "--metrics-bind", f"127.0.0.1:{port}"])
        try:
            assert proc.wait_exit(30) != 0
        finally:
            proc.close()
    errors = [line for line in proc.lines if line.startswith("Error:")]
    assert len(errors) == 1, proc.output
    assert "--metrics-bind" in errors[0] and f"127.0.0.1:{port}" in errors[0], errors
    assert "Traceback" not in proc.output


@pytest.mark.parametrize("served", [["-p", "2", "--max-requests", "12"]], indirect=True,
                         ids=["recycling"])
def test_counters_add_up_across_max_requests_recycling(
    served: tuple[ServeProcess, tuple[str, int], str],
) -> None:
    """Processes replaced every 12 requests: the sums still equal what was sent."""
    proc, address, url = served
    first = pids_of(scrape(url))
    sent = 0
    for _ in range(60):
        assert http_request(address, "/")[0] == 200
        sent += 1
    # Wait until the processes that served them were replaced (a retiring process drains
    # after its replacement serves, so this takes a moment after the last request).
    samples = wait_scrape(url, lambda s: value(s, "reactor_connections_closed_total") >= sent
                          and value(s, "reactor_processes") == 2
                          and not pids_of(s) & first, timeout=30)
    assert not pids_of(samples) & first, f"not recycled:\n{proc.output}"
    assert value(samples, "reactor_requests_total", **{"class": "2xx"}) == sent
    assert value(samples, "reactor_request_duration_seconds_count") == sent
    assert value(samples, "reactor_connections_accepted_total") == sent
    assert value(samples, "reactor_connections_closed_total") == sent
    assert value(samples, "reactor_connections_active") == 0
