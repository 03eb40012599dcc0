"""The smaller rough edges of a first hour (issue 22, item 8)."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
from pathlib import Path

import httptools  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from mioreactor import Server, cli

from tests.cli.apps import app
from tests.cli.proc import ROOT, ServeProcess, free_port

pytestmark = pytest.mark.timeout(60)


def test_bench_takes_a_bare_host_and_port_like_top() -> None:
    with Server(app, bind="127.0.0.1:0", workers=1) as server:
        host, port = server.listeners[0].address[:2]
        result = CliRunner().invoke(
            cli.reactor, ["bench", f"{host}:{port}", "-n", "20", "-c", "2", "-q", "--json"])
    assert result.exit_code == 0, result.output
    assert '"200": 20' in result.output


def test_version_names_python_httptools_and_openssl() -> None:
    result = CliRunner().invoke(cli.reactor, ["--version"])
    assert result.exit_code == 0
    text = result.output
    assert re.match(r"reactor \(mioreactor\) \d+\.\d+", text)
    assert f"Python {sys.version.split()[0]}" in text
    assert f"httptools {httptools.__version__}" in text
    assert ssl.OPENSSL_VERSION in text


def test_the_thirty_seconds_snippet_runs_from_any_directory(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "index.md").read_text()
    section = text.split("## In thirty seconds", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "accepted 1 connection(s)" in result.stdout


def test_a_second_server_on_the_same_pid_file_fails_before_it_serves(tmp_path: Path) -> None:
    pid = tmp_path / "app.pid"
    with ServeProcess(["tests.cli.apps:app", "-b", f"127.0.0.1:{free_port()}",
                       "--pid", str(pid)]) as first:
        first.wait_serving()
        second = ServeProcess(["tests.cli.apps:app", "-b", f"127.0.0.1:{free_port()}",
                               "--pid", str(pid)])
        try:
            assert second.wait_exit() == 1
        finally:
            second.close()
        assert second.lines == [
            f"Error: pid file {pid} names process {first.proc.pid}, which is running"
        ]


def test_cli_md_says_what_sighup_does_in_one_process() -> None:
    text = " ".join((ROOT / "docs" / "cli.md").read_text().split())
    assert "SIGHUP is ignored (with a warning). Supervisor" not in text
    assert "SIGHUP reloads the TLS certificate with `--certfile`" in text
