"""The ``reactor_server`` fixture, used as a project's own tests would use it.

The plugin is registered by the package's ``pytest11`` entry point, so no import and
no conftest is needed: asking for the fixture is enough.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from mioreactor.workers import EchoHandler, Server

from tests.workers.util import reactor_threads, recv_exactly

requests = pytest.importorskip("requests")

ROOT = Path(__file__).resolve().parents[2]


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b"hello " + environ["PATH_INFO"].encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def test_the_fixture_serves_a_raw_handler(reactor_server: Callable[..., Server]) -> None:
    server = reactor_server(handler=EchoHandler)
    host, port = server.address
    assert host == "127.0.0.1" and port > 0
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"


def test_the_fixture_serves_a_wsgi_app(reactor_server: Callable[..., Server]) -> None:
    server = reactor_server(hello_app)
    r = requests.get(server.url + "/world", timeout=5)
    assert r.status_code == 200
    assert r.text == "hello /world"


def test_the_fixture_passes_keyword_arguments_to_server(
    reactor_server: Callable[..., Server],
) -> None:
    server = reactor_server(handler=EchoHandler, workers=3, max_connections=7)
    assert server.workers_count == 3
    assert server.max_connections == 7
    assert len(reactor_threads()) == 4


USER_TESTS = """
import threading
from mioreactor.workers import EchoHandler

def test_one(reactor_server):
    reactor_server(handler=EchoHandler)
    reactor_server(handler=EchoHandler, workers=1)
    assert any(t.name == "reactor-acceptor" for t in threading.enumerate())

def test_two():
    names = [t.name for t in threading.enumerate() if t.name.startswith("reactor-")]
    assert names == []

def test_failing(reactor_server):
    reactor_server(handler=EchoHandler)
    raise AssertionError("fails on purpose")

def test_after_failure():
    names = [t.name for t in threading.enumerate() if t.name.startswith("reactor-")]
    assert names == []
"""


@pytest.mark.timeout(60)
def test_servers_from_the_fixture_are_stopped_when_the_test_ends(tmp_path: Path) -> None:
    """A user's project, in its own pytest run: the fixture comes from the entry point."""
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTEST_ADDOPTS", None)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert "1 failed, 3 passed" in out.stdout, out.stdout + out.stderr
