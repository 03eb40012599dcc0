"""The five command lines of a gunicorn user and of a uvicorn user, as docs/deployment.md
writes them ("The first hour"), run: each serves, answers, and stops on SIGTERM.

Each line runs in a project folder of its own making, on a loopback port the test
picks: ``0.0.0.0:8000``, ``:8000``, ``--host 0.0.0.0`` and ``--port 8000`` are
rewritten to it, and a line without a bind gets it through ``REACTOR_BIND``.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

import pytest

from tests.cli.proc import ROOT, ServeProcess, free_port, http_request

pytestmark = pytest.mark.timeout(90)

WSGI = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"myproject " + environ["SCRIPT_NAME"].encode() + b"|" + environ["PATH_INFO"].encode()]
'''
FACTORY = '''
from .wsgi import application


def create_app(mode="development"):
    assert mode == "production", mode
    return application
'''
MAIN = '''
import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"main " + environ["SCRIPT_NAME"].encode() + b"|" + environ["PATH_INFO"].encode()]


def create_app():
    assert os.environ["DATABASE_URL"] == "sqlite:///shop.db"
    return app
'''


def documented_lines(marker: str) -> list[str]:
    text = (ROOT / "docs" / "deployment.md").read_text()
    block = text.split(f"<!-- {marker} -->\n```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("reactor serve ")]


GUNICORN = documented_lines("gunicorn-lines")
UVICORN = documented_lines("uvicorn-lines")


def test_there_are_five_of_each() -> None:
    assert len(GUNICORN) == 5 and len(UVICORN) == 5


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "myproject").mkdir()
    (tmp_path / "myproject" / "__init__.py").write_text("")
    (tmp_path / "myproject" / "wsgi.py").write_text(WSGI)
    (tmp_path / "myproject" / "app.py").write_text(FACTORY)
    (tmp_path / "main.py").write_text(MAIN)
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///shop.db\n")
    return tmp_path


def localised(line: str, port: int) -> tuple[list[str], dict[str, str]]:
    args = shlex.split(line)[2:]  # after "reactor serve"
    out, env = [], {}
    binds = False
    for arg in args:
        if arg in ("0.0.0.0:8000", ":8000"):
            arg, binds = f"127.0.0.1:{port}", True
        elif arg == "0.0.0.0":
            arg = "127.0.0.1"
        elif arg == "8000":
            arg, binds = str(port), True
        out.append(arg)
    if not binds:
        env["REACTOR_BIND"] = f"127.0.0.1:{port}"
    return out, env


@pytest.mark.parametrize("line", GUNICORN + UVICORN)
def test_a_documented_command_line_serves(line: str, project: Path) -> None:
    port = free_port()
    args, env = localised(line, port)
    assert "0.0.0.0" not in " ".join(args)  # loopback only
    path = "/api/hello" if "--root-path" in args else "/hello"
    with ServeProcess(args, env=env, cwd=project) as proc:
        proc.wait_serving(timeout=30)
        status, _, body = http_request(("127.0.0.1", port), path)
        assert status == 200, body
        expected = b"|/hello" if "--root-path" not in args else b" /api|/hello"
        assert body.endswith(expected), body
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(40) == 0, proc.output
