"""``reactor`` option parsing and error lines, with click's CliRunner (no server runs)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from mioreactor import cli
from mioreactor.workers.http.limits import HttpConfig
from mioreactor.workers.process.config import DEFAULT_BIND, Config

COMMANDS = {name: cmd for name, cmd in cli.reactor.commands.items()}
HTTP_FIELDS_WITHOUT_OPTION = {"multiprocess"}  # set from --processes


@pytest.fixture(autouse=True)
def no_reactor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Options come from the test alone, not from REACTOR_* variables of the caller."""
    import os

    for key in [k for k in os.environ if k.startswith("REACTOR_")]:
        monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A real ``run()`` configures the mioreactor loggers (and a --log-config may touch
    the root); put them back after each test."""
    loggers = [logging.getLogger(n) for n in ("", "mioreactor", "mioreactor.http.access")]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Replace ``mioreactor.workers.process.supervisor.run`` so ``serve`` only builds its Config."""
    configs: list[Config] = []

    def fake_run(config: Config) -> int:
        configs.append(config)
        return 0

    monkeypatch.setattr("mioreactor.workers.process.supervisor.run", fake_run)
    return configs


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.reactor, list(args), env=env, prog_name="reactor")


def serve_config(captured: list[Config], *args: str, env: dict[str, str] | None = None) -> Config:
    result = invoke("serve", *args, env=env)
    assert result.exit_code == 0, result.output
    return captured[-1]


def error_line(result: Result) -> str:
    """The single ``Error: ...`` line of a failed invocation (and no traceback)."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# -- help -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_a_default_and_an_env_var(name: str) -> None:
    command = COMMANDS[name]
    result = invoke(name, "--help")
    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        assert param.help, f"{name} {param.opts[0]} has no help"
        assert param.show_default, f"{name} {param.opts[0]} does not show its default"
        assert param.show_envvar, f"{name} {param.opts[0]} does not show its env var"
        for opt in param.opts + param.secondary_opts:
            assert opt in flat, f"{opt} missing from reactor {name} --help"
    assert flat.count("default:") >= len([p for p in command.params if isinstance(p, click.Option)])


def test_serve_help_names_the_env_vars_with_the_reactor_prefix() -> None:
    flat = " ".join(invoke("serve", "--help").output.split())
    for var in ("REACTOR_BIND", "REACTOR_WORKERS", "REACTOR_PROCESSES", "REACTOR_LOG_LEVEL"):
        assert var in flat


def test_every_http_config_field_has_a_serve_option() -> None:
    names = {p.name for p in COMMANDS["serve"].params}
    for f in dataclasses.fields(HttpConfig):
        if f.name not in HTTP_FIELDS_WITHOUT_OPTION:
            assert f.name in names, f"HttpConfig.{f.name} has no --{f.name.replace('_', '-')}"


def test_version_option() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.startswith("reactor (mioreactor) ")


# -- parsing into a Config ---------------------------------------------------------------
def test_defaults_build_the_default_config(captured: list[Config]) -> None:
    config = serve_config(captured)
    assert config.app is None and config.binds == ()
    assert config.effective_binds == (DEFAULT_BIND,)
    assert config.http == HttpConfig()
    assert (config.workers, config.processes, config.backlog) == (4, 1, 1024)


def test_every_serve_option_reaches_the_config(captured: list[Config]) -> None:
    config = serve_config(
        captured,
        "pkg.mod:obj.app", "--factory", "--app-dir", "/tmp", "--interface", "handler",
        "-b", "127.0.0.1:9000", "--bind", "[::1]:9001", "-b", "unix:/tmp/r.sock", "-b", "fd://3",
        "--unix-mode", "660", "-w", "8", "-p", "3", "--share", "inherit", "--backlog", "128",
        "--max-connections", "500", "--run-slots", "2", "--handoff-ms", "5.5",
        "--backend", "fallback", "--max-request-line", "4k", "--max-header-size", "32k",
        "--max-headers", "50", "--max-body-size", "1M", "--body-spool-threshold", "64k",
        "--max-pipeline-buffer", "128k", "--header-timeout", "3", "--keepalive-timeout", "7.5",
        "--body-timeout", "11", "--send-timeout", "12", "--graceful-timeout", "0",
        "--server-header", "", "--url-scheme", "https", "--access-log",
        "--access-log-format", "%(h)s %(s)s", "--log-level", "debug",
        "--forwarded-allow-ips", "127.0.0.1, ::1", "--proxy-protocol", "--reload",
        "--reload-dir", "/tmp", "--timeout", "7", "--max-requests", "1000",
        "--max-requests-jitter", "50", "--pid", "/tmp/r.pid", "--user", "nobody",
        "--group", "nogroup", "--umask", "027",
    )
    assert config == Config(
        app="pkg.mod:obj.app", factory=True, app_dir="/tmp", interface="handler",
        binds=("127.0.0.1:9000", "[::1]:9001", "unix:/tmp/r.sock", "fd://3"),
        unix_mode=0o660, workers=8, processes=3, share="inherit", backlog=128,
        max_connections=500, run_slots=2, handoff_ms=5.5, graceful_timeout=0.0,
        backend="fallback", log_level="debug", reload=True, reload_dirs=("/tmp",),
        timeout=7.0, max_requests=1000, max_requests_jitter=50, pid_file="/tmp/r.pid",
        user="nobody", group="nogroup", umask=0o027,
        http=HttpConfig(
            max_request_line=4096, max_header_size=32768, max_headers=50,
            max_body_size=1 << 20, body_spool_threshold=65536, max_pipeline_buffer=131072,
            header_timeout=3.0, keepalive_timeout=7.5, body_timeout=11.0, send_timeout=12.0,
            server_header="", url_scheme="https", access_log=True,
            access_log_format="%(h)s %(s)s", forwarded_allow_ips=("127.0.0.1", "::1"),
            proxy_protocol=True,
        ),
    )
    kwargs = config.server_kwargs()
    assert kwargs["handoff_after"] == pytest.approx(0.0055)
    assert kwargs["http"] is None, "a raw-protocol handler gets no HttpConfig"


def test_environment_variables_are_honoured(captured: list[Config]) -> None:
    config = serve_config(captured, env={
        "REACTOR_WORKERS": "3",
        "REACTOR_BIND": "127.0.0.1:9000 unix:/tmp/x.sock",
        "REACTOR_ACCESS_LOG": "1",
        "REACTOR_MAX_BODY_SIZE": "2M",
        "REACTOR_APP": "pkg:app",
    })
    assert config.workers == 3
    assert config.binds == ("127.0.0.1:9000", "unix:/tmp/x.sock")
    assert config.http.access_log is True
    assert config.http.max_body_size == 2 << 20
    assert config.app == "pkg:app"


def test_a_command_line_option_beats_its_env_var(captured: list[Config]) -> None:
    config = serve_config(captured, "-w", "2", env={"REACTOR_WORKERS": "9"})
    assert config.workers == 2


def test_max_requests_runs_the_supervisor_even_for_one_process(captured: list[Config]) -> None:
    assert serve_config(captured, "--max-requests", "100").supervised is True
    assert serve_config(captured).supervised is False
    assert serve_config(captured, "--timeout", "0").server_kwargs()["timeout"] == 0.0


def test_multiprocess_is_set_for_several_processes(captured: list[Config]) -> None:
    assert serve_config(captured, "-p", "2").server_kwargs()["http"].multiprocess is True
    assert serve_config(captured).server_kwargs()["http"].multiprocess is False


# -- one-line errors ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["-b", "127.0.0.1:http"], "port 'http' is not a number"),
        (["-b", "127.0.0.1:99999"], "port 99999 is out of range 0-65535"),
        (["-b", "::1:80"], "'::1:80'"),
        (["-b", "unix:"], "unix: needs a path"),
        (["-b", "fd://x"], "fd:// needs a descriptor number"),
        (["-w", "0"], "'--workers'"),
        (["-w", "many"], "'many' is not a valid integer"),
        (["-p", "-1"], "'--processes'"),
        (["--max-body-size", "12q"], "is not a size"),
        (["--max-header-size", "-5"], "is not a size"),
        (["--header-timeout", "0"], "'--header-timeout'"),
        (["--keepalive-timeout", "soon"], "'soon' is not a valid float"),
        (["--unix-mode", "999"], "not an octal file mode"),
        (["--forwarded-allow-ips", "10.0.0.1,proxy"], "'proxy' is not an IP address"),
        (["--access-log-format", "%(nope)s"], "unknown access log key 'nope'"),
        (["--log-level", "loud"], "'loud' is not one of"),
        (["--interface", "wsgi2"], "'wsgi2' is not one of"),
        (["--interface", "asgi"], "demo app is WSGI"),
        (["--interface", "handler"], "demo app is WSGI"),
        (["--timeout", "-1"], "'--timeout'"),
        (["--max-requests", "-1"], "'--max-requests'"),
        (["--max-requests-jitter", "x"], "'x' is not a valid integer"),
        (["app.py"], "give the module, not the file: app"),
        (["mod:"], "expected MODULE:APP"),
    ],
)
def test_bad_serve_values_give_one_error_line(
    captured: list[Config], args: list[str], problem: str
) -> None:
    result = invoke("serve", *args)
    assert result.exit_code == 2
    assert problem in error_line(result)
    assert not captured


@pytest.mark.parametrize(
    ("app", "problem"),
    [
        ("no_such_module_here:app", "no module named 'no_such_module_here'"),
        ("tests.cli.apps:missing", "'tests.cli.apps' has no attribute 'missing'"),
        ("tests.cli.apps:Nested.nope", "'tests.cli.apps:Nested' has no attribute 'nope'"),
        ("tests.cli.apps:not_callable", "is not callable: it is int 42"),
        ("tests.cli.broken:app", "RuntimeError: this module is broken on purpose (tests/cli/broken.py:3)"),
    ],
)
def test_an_app_that_does_not_load_gives_one_error_line(app: str, problem: str) -> None:
    result = invoke("serve", app, "-b", "127.0.0.1:0")
    assert result.exit_code == 1
    assert problem in error_line(result)


def test_a_bad_app_dir_gives_one_error_line() -> None:
    result = invoke("serve", "x:app", "--app-dir", "/nonexistent/dir", "-b", "127.0.0.1:0")
    assert "is not a directory" in error_line(result)


# -- bench and doctor argument errors ------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["ftp://127.0.0.1/"], "http"),
        (["http://192.0.2.1/"], "not a loopback address"),
        (["http://127.0.0.1/", "-H", "NoColon"], "expected 'Name: value'"),
        (["http://127.0.0.1/", "-c", "0"], "'--connections'"),
        (["http://127.0.0.1/", "--method", "GE T"], "not a valid HTTP method"),
        (["http://127.0.0.1/", "--body", "@/nonexistent/body"], "cannot read"),
        (["http://127.0.0.1/", "--rate", "0"], "'--rate'"),
    ],
)
def test_bad_bench_values_give_one_error_line(args: list[str], problem: str) -> None:
    pytest.importorskip("mioreactor.workers.tools.loadgen")
    result = invoke("bench", *args)
    assert result.exit_code == 2
    assert problem in error_line(result)


def test_doctor_rejects_a_bad_backlog() -> None:
    assert "'--backlog'" in error_line(invoke("doctor", "--backlog", "0"))


def test_bench_env_vars_use_their_command_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    loadgen = pytest.importorskip("mioreactor.workers.tools.loadgen")

    def fake_run(config: Any, progress: Any = None) -> Any:
        seen["config"] = config
        raise ValueError("stop here")

    monkeypatch.setattr(loadgen, "run_bench", fake_run)
    result = invoke("bench", "http://127.0.0.1:1/", "-q", env={"REACTOR_BENCH_CONNECTIONS": "7"})
    assert "stop here" in error_line(result)
    assert seen["config"].connections == 7
