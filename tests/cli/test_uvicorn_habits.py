"""A uvicorn user's habits: each works with the same meaning or stops with a one-line
hint naming our option (issue 22, item 5)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from mioreactor import Server
from mioreactor.workers.http.limits import HttpConfig
from mioreactor.workers.process.config import Config
from mioreactor.workers.process.reloader import Watcher

from tests.cli.proc import ServeProcess, free_port, http_request
from tests.cli.test_cli_options import (
    captured,
    invoke,
    no_reactor_env,
    restore_logging,
    serve_config,
)

__all__ = ["captured", "no_reactor_env", "restore_logging"]  # fixtures used here

pytestmark = pytest.mark.timeout(60)


def where(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = json.dumps({k: environ[k] for k in ("SCRIPT_NAME", "PATH_INFO")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def test_host_port_and_uds_are_binds(captured: list[Config], tmp_path: Path) -> None:
    assert serve_config(captured, "--host", "0.0.0.0", "--port", "9000").binds == ("0.0.0.0:9000",)
    assert serve_config(captured, "--port", "9000").binds == ("127.0.0.1:9000",)
    assert serve_config(captured, "--host", "::1").binds == ("[::1]:8000",)  # uvicorn's port
    sock = str(tmp_path / "app.sock")
    assert serve_config(captured, "--uds", sock).binds == (f"unix:{sock}",)
    assert serve_config(captured, "-b", "127.0.0.1:1", "--port", "2").binds == (
        "127.0.0.1:1", "127.0.0.1:2")


def test_port_and_uds_serve(tmp_path: Path) -> None:
    port, sock = free_port(), str(tmp_path / "app.sock")
    with ServeProcess(["tests.cli.apps:app", "--port", str(port), "--uds", sock]) as proc:
        assert proc.wait_serving() == [f"127.0.0.1:{port}", f"unix:{sock}"]
        assert http_request(("127.0.0.1", port))[0] == 200
        assert http_request(sock)[0] == 200


def test_root_path_is_script_name() -> None:
    with Server(where, bind="127.0.0.1:0", workers=1, http=HttpConfig(root_path="/api")) as server:
        address = server.listeners[0].address[:2]
        seen = {path: json.loads(http_request(address, path)[2])
                for path in ("/api/items", "/api", "/items", "/apix")}
    assert seen["/api/items"] == {"SCRIPT_NAME": "/api", "PATH_INFO": "/items"}
    assert seen["/api"] == {"SCRIPT_NAME": "/api", "PATH_INFO": ""}
    assert seen["/items"] == {"SCRIPT_NAME": "/api", "PATH_INFO": "/items"}  # proxy stripped it
    assert seen["/apix"] == {"SCRIPT_NAME": "/api", "PATH_INFO": "/apix"}


def test_root_path_from_the_cli(captured: list[Config]) -> None:
    assert serve_config(captured, "--root-path", "/api").http.root_path == "/api"
    result = invoke("serve", "--root-path", "api")
    assert result.exit_code == 2 and "expected a path such as /api" in result.output


def test_env_file_sets_the_apps_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('# settings\nSHOP_DB="postgres://db/shop"\nexport SHOP_MODE=prod\n'
                                   "SHOP_KEEP=from-file\n")
    (tmp_path / "envapp.py").write_text(
        "import json, os\n"
        "SEEN = {k: os.environ.get(k) for k in ('SHOP_DB', 'SHOP_MODE', 'SHOP_KEEP')}\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [json.dumps(SEEN).encode()]\n"
    )
    port = free_port()
    with ServeProcess(["envapp:app", "--app-dir", str(tmp_path), "-b", f"127.0.0.1:{port}",
                       "--env-file", str(tmp_path / ".env")],
                      env={"SHOP_KEEP": "from-environment"}) as proc:
        proc.wait_serving()
        seen = json.loads(http_request(("127.0.0.1", port))[2])
    assert seen == {"SHOP_DB": "postgres://db/shop", "SHOP_MODE": "prod",
                    "SHOP_KEEP": "from-environment"}
    (tmp_path / "bad.env").write_text("OK=1\nthis is not a variable\n")
    result = invoke("serve", "--env-file", str(tmp_path / "bad.env"))
    assert result.exit_code == 1 and "line 2: expected KEY=value" in result.output


def test_proxy_headers_trust_loopback_or_the_given_peers(captured: list[Config]) -> None:
    assert serve_config(captured, "--proxy-headers").http.forwarded_allow_ips == ("127.0.0.1",)
    assert serve_config(captured, "--proxy-headers", "--forwarded-allow-ips", "10.0.0.1"
                        ).http.forwarded_allow_ips == ("10.0.0.1",)
    assert serve_config(captured).http.forwarded_allow_ips == ()


def test_limit_concurrency_answers_503_beyond_it(captured: list[Config]) -> None:
    assert serve_config(captured, "--limit-concurrency", "5").server_kwargs()["limit_concurrency"] == 5
    with Server(where, bind="127.0.0.1:0", workers=1, limit_concurrency=1) as server:
        address = server.listeners[0].address[:2]
        with socket.create_connection(address, timeout=5) as first:
            first.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert first.recv(65536).startswith(b"HTTP/1.1 200")  # it holds the one slot
            with socket.create_connection(address, timeout=5) as second:
                assert second.recv(65536).startswith(b"HTTP/1.1 503 Service Unavailable")
        deadline = time.monotonic() + 5  # the slot is free again once the first closes
        while True:
            try:
                assert http_request(address)[0] == 200
                break
            except (AssertionError, OSError, IndexError):
                assert time.monotonic() < deadline
                time.sleep(0.05)


def test_reload_include_and_exclude(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "migrations").mkdir()
    for name in ("app.py", "templates/page.html", "migrations/m1.py", "notes.txt"):
        (tmp_path / name).write_text("1")
    watcher = Watcher([str(tmp_path)], ("*.py", "templates/*.html"), ("migrations",))
    assert watcher.count == 2  # app.py and templates/page.html
    time.sleep(0.01)
    for name in ("templates/page.html", "migrations/m1.py", "notes.txt"):
        (tmp_path / name).write_text("22")
    assert [os.path.relpath(p, tmp_path) for p in watcher.changed()] == ["templates/page.html"]


def test_reload_patterns_reach_the_config(captured: list[Config]) -> None:
    config = serve_config(captured, "--reload", "--reload-include", "*.html",
                          "--reload-exclude", "tests/*")
    assert config.reload_includes == ("*.html",) and config.reload_excludes == ("tests/*",)


@pytest.mark.parametrize(
    ("option", "ours"),
    [("--ssl-certfile", "--certfile"), ("--ssl-keyfile", "--keyfile"),
     ("--timeout-keep-alive", "--keepalive-timeout"),
     ("--timeout-graceful-shutdown", "--graceful-timeout"),
     ("--limit-max-requests", "--max-requests"), ("--fd", "fd://N")],
)
def test_a_uvicorn_option_gets_a_hint_naming_ours(option: str, ours: str) -> None:
    result = invoke("serve", option, "x")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: no option {option} here: ") and ours in lines[0]
