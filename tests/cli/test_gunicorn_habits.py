"""A gunicorn user's habits: each works with the same meaning or stops with a one-line
hint naming our option (issue 22, item 4)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from mioreactor import cli
from mioreactor.workers.process.appload import AppLoadError, load_app, parse_call

from tests.cli.proc import ServeProcess, free_port, http_request

pytestmark = pytest.mark.timeout(60)
LINUX = sys.platform.startswith("linux")


@pytest.fixture(autouse=True)
def no_reactor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("REACTOR_")]:
        monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("", "mioreactor", "mioreactor.http.access")]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.reactor, list(args), prog_name="reactor")


def one_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and "Did you mean" not in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "ours"),
    [
        (["--threads", "4"], "-w/--workers"),
        (["--preload"], "the supervisor never imports the app"),
        (["--worker-class", "gevent"], "--interface handler"),
        (["-k", "gevent"], "no worker classes"),
        (["--keep-alive", "5"], "--keepalive-timeout"),
        (["--worker-connections", "1000"], "--max-connections"),
        (["--chdir", "/srv"], "--app-dir"),
        (["-D"], "systemd"),
        (["--limit-request-line", "4094"], "--max-request-line"),
    ],
)
def test_a_gunicorn_option_gets_a_hint_naming_ours(args: list[str], ours: str) -> None:
    line = one_line(invoke("serve", *args))
    assert line.startswith(f"Error: no option {args[0]} here: ")
    assert ours in line


def test_dash_p_with_a_file_name_points_to_pid() -> None:
    line = one_line(invoke("serve", "-p", "/run/app.pid"))
    assert "a pid file is --pid FILE here (gunicorn's -p)" in line


def test_a_gunicorn_conf_py_is_refused_with_a_hint(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 4\nbind = '0.0.0.0:8000'\n")  # valid TOML too
    line = one_line(invoke("serve", "-c", str(conf)))
    assert "is Python, gunicorn's format; reactor serve reads TOML" in line
    assert "processes = 4" in line


def test_factory_call_syntax_takes_literal_arguments_only() -> None:
    assert parse_call("m:f('a', n=2)", "f('a', n=2)") == ("f", ("a",), {"n": 2})
    assert parse_call("m:f", "f") is None
    for attr in ("f(open('x'))", "f(*args)", "f(**kw)", "f(x)", "f()()"):
        with pytest.raises(AppLoadError):
            parse_call(f"m:{attr}", attr)
    app = load_app("tests.cli.apps:create_app()")
    assert app.__name__ == "made"


def test_a_module_alone_serves_application_then_app(tmp_path: Path) -> None:
    (tmp_path / "both.py").write_text("def application(e, s): pass\ndef app(e, s): pass\n")
    (tmp_path / "onlyapp.py").write_text("def app(e, s): pass\n")
    (tmp_path / "neither.py").write_text("x = 1\n")
    assert load_app("both", app_dir=str(tmp_path)).__name__ == "application"
    assert load_app("onlyapp", app_dir=str(tmp_path)).__name__ == "app"
    with pytest.raises(AppLoadError, match="has neither 'application' nor 'app'"):
        load_app("neither", app_dir=str(tmp_path))


def test_create_app_call_and_module_alone_serve(tmp_path: Path) -> None:
    for spec, expect in (("tests.cli.apps:create_app()", b"made by a factory"),
                         ("tests.cli.apps", b'"app": "plain"')):
        port = free_port()
        with ServeProcess([spec, "-b", f"127.0.0.1:{port}"]) as proc:
            proc.wait_serving()
            assert expect in http_request(("127.0.0.1", port))[2]


def test_access_and_error_log_files(tmp_path: Path) -> None:
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    port = free_port()
    with ServeProcess(["tests.cli.apps:app", "-b", f"127.0.0.1:{port}", "--access-logfile",
                       str(access), "--error-logfile", str(error)]) as proc:
        deadline = time.monotonic() + 15
        while "serving" not in (error.read_text() if error.exists() else ""):
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.output
            time.sleep(0.05)
        assert http_request(("127.0.0.1", port), "/logged")[0] == 200
    assert '"GET /logged HTTP/1.1" 200' in access.read_text()
    assert "mioreactor.serve: listening on" in error.read_text()
    assert proc.lines == []  # nothing went to stderr


def test_log_config_json_and_ini(tmp_path: Path) -> None:
    out = tmp_path / "server.log"
    conf = tmp_path / "logging.json"
    conf.write_text(json.dumps({
        "version": 1,
        "formatters": {"plain": {"format": "CUSTOM %(name)s %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(out),
                              "formatter": "plain"}},
        "loggers": {"mioreactor": {"handlers": ["file"], "propagate": False}},
    }))
    ini = tmp_path / "logging.ini"
    ini.write_text("[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n"
                   "[logger_root]\nhandlers=h\n[handler_h]\nclass=StreamHandler\nargs=()\n")
    port = free_port()
    with ServeProcess(["tests.cli.apps:app", "-b", f"127.0.0.1:{port}",
                       "--log-config", str(conf)]) as proc:
        deadline = time.monotonic() + 15
        while "CUSTOM mioreactor.serve listening" not in (out.read_text() if out.exists() else ""):
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.output
            time.sleep(0.05)
    assert invoke("serve", "--log-config", str(ini), "--check-config").exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert "--log-config" in one_line(invoke("serve", "--log-config", str(bad)))


def test_check_config_imports_the_app_and_does_not_serve() -> None:
    port = free_port()
    result = invoke("serve", "tests.cli.apps:app", "-b", f"127.0.0.1:{port}", "--check-config")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("configuration OK: tests.cli.apps:app (wsgi) imports")
    assert "nosuchmodule" in one_line(invoke("serve", "nosuchmodule:app", "--check-config"))


@pytest.mark.skipif(not LINUX, reason="/proc")
def test_name_sets_the_process_titles(tmp_path: Path) -> None:
    port = free_port()
    with ServeProcess(["tests.cli.apps:app", "-b", f"127.0.0.1:{port}", "-n", "shop",
                       "-p", "2"]) as proc:
        proc.wait_serving()
        pid = proc.proc.pid
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "shop"
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 2
        for child in children:
            assert Path(f"/proc/{child}/comm").read_text().strip() == "shop"
            cmdline = Path(f"/proc/{child}/cmdline").read_text().replace("\0", " ")
            assert "-m mioreactor.workers.process.child" in cmdline
            assert "import sys" not in cmdline
