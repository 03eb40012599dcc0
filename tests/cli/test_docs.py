"""docs/cli.md matches the click definitions; the deployment examples are real."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest
from mioreactor import cli

from tests.cli.proc import ROOT, ServeProcess, free_port, get_json, http_request

DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"


def gen_cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_md_tables_are_generated_from_the_current_options() -> None:
    text = (DOCS / "cli.md").read_text()
    assert gen_cli().render(text) == text, "stale: run .venv/bin/python docs/gen_cli.py"


@pytest.mark.parametrize("name", sorted(cli.reactor.commands))
def test_cli_md_mentions_every_option_of_every_command(name: str) -> None:
    text = (DOCS / "cli.md").read_text()
    assert f"## reactor {name}" in text
    for param in cli.reactor.commands[name].params:
        if isinstance(param, click.Option):
            for opt in [*param.opts, *param.secondary_opts]:
                assert f"`{opt}`" in text, f"docs/cli.md does not mention reactor {name} {opt}"


def test_deployment_md_covers_the_operations() -> None:
    text = (DOCS / "deployment.md").read_text()
    for topic in ("## Processes", "## systemd", "## Behind nginx", "## Graceful rolling restarts",
                  "reactor doctor", "examples/systemd/mioreactor.socket",
                  "examples/systemd/mioreactor.service", "examples/nginx.conf", "SIGHUP"):
        assert topic in text


def test_systemd_units_are_well_formed() -> None:
    units = {}
    for name in ("mioreactor.socket", "mioreactor.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(EXAMPLES / "systemd" / name)
        units[name] = parser
    socket_unit, service = units["mioreactor.socket"], units["mioreactor.service"]
    assert socket_unit["Socket"]["ListenStream"]
    assert service["Unit"]["Requires"] == "mioreactor.socket"
    assert "reactor serve" in service["Service"]["ExecStart"]
    assert "--bind" not in service["Service"]["ExecStart"], "socket activation needs no --bind"
    assert service["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Service"]["KillMode"] == "mixed"


# -- nginx in front, for real ------------------------------------------------------------
@pytest.fixture
def nginx_bin() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        pytest.skip("nginx is not installed")
    return path


@pytest.fixture
def through_nginx(nginx_bin: str, tmp_path: Path) -> Iterator[tuple[tuple[str, int], ServeProcess]]:
    """The demo app behind nginx running examples/nginx.conf (ports rewritten)."""
    server = ServeProcess(["-b", "127.0.0.1:0", "-w", "2", "--forwarded-allow-ips", "127.0.0.1",
                           "--keepalive-timeout", "75"])
    nginx: subprocess.Popen[bytes] | None = None
    try:
        (where,) = server.wait_serving()
        front = free_port()
        conf = (EXAMPLES / "nginx.conf").read_text()
        assert "listen 80;" in conf and "server 127.0.0.1:8000;" in conf
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{front};")
        conf = conf.replace("server 127.0.0.1:8000;", f"server {where};")
        conf = conf.replace("worker_processes auto;", "worker_processes 1;")
        (tmp_path / "logs").mkdir()
        path = tmp_path / "nginx.conf"
        path.write_text(conf)
        check = subprocess.run([nginx_bin, "-t", "-p", str(tmp_path), "-c", str(path)],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen(
            [nginx_bin, "-p", str(tmp_path), "-c", str(path), "-g",
             f"daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/logs/error.log;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                http_request(("127.0.0.1", front), "/")
                break
            except OSError:
                assert nginx.poll() is None, "nginx exited"
                assert time.monotonic() < deadline, "nginx did not come up"
                time.sleep(0.05)
        yield ("127.0.0.1", front), server
    finally:
        if nginx is not None:
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(5)
        server.close()


def test_the_example_nginx_config_proxies_with_keepalive_upstream(
    through_nginx: tuple[tuple[str, int], ServeProcess],
) -> None:
    front, _server = through_nginx
    before = get_json(front, "/stats")["server"]["accepted"]
    for _ in range(20):
        status, _, body = http_request(front, "/")
        assert status == 200 and b"mioreactor is serving" in body
    after = get_json(front, "/stats")["server"]["accepted"]
    # 21 requests on new client connections, and nginx reused its upstream connection.
    assert after - before <= 2, (before, after)
