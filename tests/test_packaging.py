"""One distribution, one import name: the wheel, installed in a fresh venv, next to a user's project.

A user's own ``cli.py``, ``reactor.py`` and ``workers/`` package must never be shadowed
by ours (issue 20): the wheel holds ``mioreactor/`` and its dist-info only, the
``reactor`` command serves a project that has all three, that project's own pytest runs
with our plugin loaded, and ``python -m mioreactor`` is the CLI.

The venv is made once per module (about 10 s: a venv, the wheel and its two runtime
dependencies plus pytest, from the package index or pip's cache).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REACTOR_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: setuptools and wheel come with the test extras, so no download.
    result = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                   "--no-build-isolation", "-w", str(out), str(ROOT)], cwd=out)
    assert result.returncode == 0, result.stderr
    [built] = out.glob("mioreactor-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    assert _run([sys.executable, "-m", "venv", str(home)], cwd=home).returncode == 0
    result = _run([str(home / "bin" / "python"), "-m", "pip", "install", "-q",
                   "--disable-pip-version-check", str(wheel), "pytest", "pytest-timeout"],
                  cwd=home)
    if result.returncode != 0 and "No matching distribution" in result.stderr + result.stdout:
        pytest.skip(f"the package index is out of reach: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr
    return home


def test_the_wheel_holds_mioreactor_and_its_dist_info_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"mioreactor", wheel.name.split("-py")[0] + ".dist-info"}
    top_level = [n for n in names if n.endswith("top_level.txt")]
    for name in top_level:
        assert zipfile.ZipFile(wheel).read(name).decode().split() == ["mioreactor"]
    # every source file of the package is in it (a new subpackage missing from
    # pyproject's list would silently vanish from the wheel)
    expected = {"mioreactor/__init__.py", "mioreactor/__main__.py", "mioreactor/cli.py",
                "mioreactor/py.typed"}
    for top in ("reactor", "workers"):
        expected |= {f"mioreactor/{p.relative_to(ROOT)}" for p in (ROOT / top).rglob("*.py")}
    assert expected - set(names) == set()
    assert not [n for n in names if n.startswith("mioreactor/tests/") or "/bench/" in n]


def _user_project(path: Path) -> Path:
    (path / "workers").mkdir(parents=True)
    (path / "cli.py").write_text("greeting = 'hello from the user cli'\n")
    (path / "reactor.py").write_text("NAME = 'user reactor'\n")
    (path / "workers" / "__init__.py").write_text("")
    (path / "workers" / "tasks.py").write_text("def task():\n    return 'user task'\n")
    (path / "app.py").write_text(
        "from cli import greeting\n"
        "from reactor import NAME\n"
        "from workers.tasks import task\n\n"
        "def app(environ, start_response):\n"
        "    body = f'{greeting}|{NAME}|{task()}'.encode()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'),"
        " ('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    (path / "test_user.py").write_text(
        "import urllib.request\n\n"
        "from app import app\n"
        "from workers.tasks import task\n\n"
        "def test_own_workers_package():\n"
        "    assert task() == 'user task'\n\n"
        "def test_served_by_the_fixture(reactor_server):\n"
        "    server = reactor_server(app)\n"
        "    body = urllib.request.urlopen(server.url + '/', timeout=10).read()\n"
        "    assert body == b'hello from the user cli|user reactor|user task'\n"
    )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    yield _user_project(tmp_path / "my project")  # a space in the path, too


def test_a_user_project_with_its_own_cli_reactor_and_workers_is_served(
    venv: Path, project: Path
) -> None:
    port = _free_port()
    proc = subprocess.Popen([str(venv / "bin" / "reactor"), "serve", "app:app", "-b",
                             f"127.0.0.1:{port}"], cwd=project, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        body = b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        assert body == b"hello from the user cli|user reactor|user task", proc.poll()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_the_user_projects_own_pytest_passes_with_our_plugin_loaded(
    venv: Path, project: Path
) -> None:
    result = _run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p",
                   "no:cacheprovider"], cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_python_m_mioreactor_is_the_cli(venv: Path, tmp_path: Path) -> None:
    result = _run([str(venv / "bin" / "python"), "-m", "mioreactor", "--version"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "reactor" in result.stdout and "0." in result.stdout
    result = _run([str(venv / "bin" / "python"), "-c",
                   "import importlib.util as u; print([n for n in ('cli', 'reactor', 'workers') "
                   "if u.find_spec(n)])"], cwd=tmp_path)
    assert result.stdout.strip() == "[]"  # no top-level name of ours is installed
