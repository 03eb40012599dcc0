"""``reactor doctor`` and ``reactor bench`` through the CLI."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from mioreactor import cli
from mioreactor.workers import Server
from mioreactor.workers.tools.doctor import KEYS

from tests.cli.apps import app

on_linux_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/sys/net/core"), reason="needs a Linux /proc"
)


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.reactor, list(args), prog_name="reactor")
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout


# -- doctor -------------------------------------------------------------------------------
def test_doctor_json_has_every_key() -> None:
    code, out = run_cli("doctor", "--json")
    assert code == 0
    report = json.loads(out)
    assert list(report) == list(KEYS)
    for item in report.values():
        assert set(item) >= {"value", "verdict", "detail", "fix"}


@on_linux_proc
def test_doctor_json_matches_proc() -> None:
    code, out = run_cli("doctor", "--json", "--backlog", "100000")
    assert code == 0
    report = json.loads(out)
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    assert report["somaxconn"]["value"] == somaxconn
    ports = report["ephemeral_ports"]["value"]
    assert (ports["low"], ports["high"]) == (low, high)
    assert report["backlog_effective"]["value"] == min(100000, somaxconn)


def test_doctor_text_names_every_limit() -> None:
    code, out = run_cli("doctor")
    assert code == 0
    assert "somaxconn" in out and "backend" in out


# -- bench --------------------------------------------------------------------------------
@pytest.fixture
def server() -> Iterator[Server]:
    with Server(app, bind="127.0.0.1:0", workers=2) as srv:
        yield srv


def test_bench_counts_match_the_servers_stats(server: Server) -> None:
    pytest.importorskip("mioreactor.workers.tools.loadgen")
    code, out = run_cli("bench", f"{server.url}/", "-n", "200", "-c", "4", "--json", "-q")
    assert code == 0, out
    result = json.loads(out)
    stats = server.stats()
    assert result["responses"] == 200
    assert result["status"] in ({"200": 200}, {200: 200})
    established = result["connections"]["established"]
    assert established == stats["accepted"]


def test_bench_against_no_listener_reports_refused_and_fails() -> None:
    pytest.importorskip("mioreactor.workers.tools.loadgen")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connects are refused
        code, out = run_cli("bench", f"http://127.0.0.1:{port}/", "-d", "0.5", "-c", "2", "--json", "-q")
    assert code == 1
    result = json.loads(out)
    assert result["connections"]["refused"] > 0
    assert result["responses"] == 0


def test_bench_text_report_and_progress(server: Server) -> None:
    pytest.importorskip("mioreactor.workers.tools.loadgen")
    result = CliRunner().invoke(
        cli.reactor, ["bench", f"{server.url}/", "-d", "1.2", "-c", "2"], prog_name="reactor"
    )
    assert result.exit_code == 0, result.output
    assert "responses" in result.stdout
    assert "responses," in result.stderr and "/1.2s]" in result.stderr, "a progress line on stderr"
