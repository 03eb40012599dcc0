"""Every mistake, and every exception configuration or start-up can raise, is one line.

Each case runs the real ``reactor`` command in a subprocess (as a user meets it) and
checks what docs/cli.md promises: a non-zero exit status and exactly one line on
stderr, ``Error: ...``, with no traceback and no Python names (``allow_remote=True``,
``ValueError:``) in it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mioreactor.reactor import available_backends

from tests.cli.proc import REACTOR, ROOT, free_port

pytestmark = pytest.mark.timeout(60)

BROKEN_FACTORY = '''
def factory(worker):
    raise ValueError("the database is not configured")
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project folder with the files the cases need."""
    path = tmp_path_factory.mktemp("project")
    (path / "brokenfactory.py").write_text(BROKEN_FACTORY)
    (path / "garbage.pem").write_text("not a certificate\n")
    (path / "empty.pem").write_text("")
    return path


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_reactor(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    full_env.update(env or {})
    return subprocess.run(
        [*REACTOR, *args], cwd=cwd, env=full_env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=45, check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed run (asserting there is one and no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("Error: "), line
    assert not re.search(r"Error: \w+Error:", line), line  # no "Error: ValueError: ..."
    assert not re.search(r"\b[a-z_]+=(True|False)\b", line), line  # no Python keywords
    return line


BIND = "127.0.0.1:0"
MISSING = next(b for b in ("kqueue", "epoll") if b not in available_backends())

# (id, arguments, environment, words the line must hold)
CASES: list[tuple[str, list[str], dict[str, str], list[str]]] = [
    ("wsgi app as a handler", ["serve", "examples.flask_app:app", "--interface", "handler",
                               "-b", BIND], {}, ["WSGI app", "--interface handler"]),
    ("handler needing one worker", ["serve", "--interface", "handler", "-w", "2",
                                    "examples.chat_handler:factory", "-b", BIND], {},
     ["needs workers=1", "chat_handler.py:"]),
    ("a factory that raises", ["serve", "--interface", "handler", "brokenfactory:factory",
                               "-b", BIND], {}, ["the database is not configured"]),
    ("a backend this kernel lacks", ["serve", "--backend", MISSING, "-b", BIND], {},
     [MISSING, "fallback"]),
    ("REACTOR_BACKEND at import", ["serve", "-b", BIND], {"REACTOR_BACKEND": MISSING},
     ["REACTOR_BACKEND"]),
    ("a bad bind is a usage error", ["serve", "-b", "localhost:http"], {}, ["--bind"]),
    ("no such option", ["serve", "--no-such-option"], {}, ["--no-such-option"]),
    ("bench to a remote host", ["bench", "http://192.0.2.1/", "-n", "1"], {},
     ["--allow-remote"]),
    ("an app that does not import", ["serve", "nosuchmodule:app", "-b", BIND], {},
     ["nosuchmodule"]),
]


@pytest.mark.parametrize(("args", "env", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_mistake_is_one_line(project: Path, args: list[str], env: dict[str, str],
                                   words: list[str]) -> None:
    line = one_error_line(run_reactor(args, project, env))
    for word in words:
        assert word in line, line


def test_an_address_in_use_is_one_line(project: Path, busy_port: int) -> None:
    line = one_error_line(run_reactor(["serve", "-b", f"127.0.0.1:{busy_port}"], project))
    assert "Address already in use" in line


def test_a_usage_error_exits_2_and_a_start_failure_1(project: Path) -> None:
    assert run_reactor(["serve", "-b", "localhost:http"], project).returncode == 2
    port = free_port()
    assert run_reactor(["serve", "nosuchmodule:app", "-b", f"127.0.0.1:{port}"],
                       project).returncode == 1


def test_python_m_mioreactor_is_the_same_command(project: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mioreactor", "serve", "--backend", MISSING], cwd=project,
        capture_output=True, text=True, timeout=45, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert one_error_line(result).startswith(f"Error: backend {MISSING} is not available")
