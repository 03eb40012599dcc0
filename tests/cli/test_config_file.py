"""``reactor serve --config FILE`` and ``--print-config``, with click's CliRunner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from mioreactor import cli
from mioreactor.workers.process.config import Config

from tests.cli.test_cli_options import captured, error_line, no_reactor_env, restore_logging

__all__ = ["captured", "no_reactor_env", "restore_logging"]  # fixtures used here


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.reactor, list(args), env=env, prog_name="reactor")


def write(tmp_path: Path, text: str, name: str = "site.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def serve_config(captured: list[Config], *args: str, env: dict[str, str] | None = None) -> Config:
    result = invoke("serve", *args, env=env)
    assert result.exit_code == 0, result.output
    return captured[-1]


def test_a_config_file_sets_options_by_their_long_names(
    captured: list[Config], tmp_path: Path
) -> None:
    path = write(tmp_path, """
app = "pkg.mod:app"
bind = ["127.0.0.1:9000", "unix:/tmp/r.sock"]
workers = 8
max-body-size = "2M"
max_headers = 50
keepalive-timeout = 7
unix-mode = 0o660
forwarded-allow-ips = ["10.0.0.1", "::1"]
access-log = true
""")
    config = serve_config(captured, "--config", path)
    assert config.app == "pkg.mod:app"
    assert config.binds == ("127.0.0.1:9000", "unix:/tmp/r.sock")
    assert config.workers == 8
    assert config.unix_mode == 0o660
    assert config.http.max_body_size == 2 << 20
    assert config.http.max_headers == 50
    assert config.http.keepalive_timeout == 7.0
    assert config.http.forwarded_allow_ips == ("10.0.0.1", "::1")
    assert config.http.access_log is True


def test_process_settings_in_a_config_file(captured: list[Config], tmp_path: Path) -> None:
    path = write(tmp_path, """
pid = "/run/site.pid"
user = "nobody"
group = "nogroup"
umask = 0o027
timeout = 60
max-requests = 5000
max-requests-jitter = 500
""")
    config = serve_config(captured, "--config", path)
    assert (config.pid_file, config.user, config.group, config.umask) == (
        "/run/site.pid", "nobody", "nogroup", 0o027)
    assert (config.timeout, config.max_requests, config.max_requests_jitter) == (60.0, 5000, 500)
    assert config.supervised, "--user runs the supervisor, which keeps root"


def test_precedence_is_command_line_then_environment_then_file_then_default(
    captured: list[Config], tmp_path: Path
) -> None:
    path = write(tmp_path, "workers = 8\nbacklog = 100\nmax-connections = 50\n")
    env = {"REACTOR_WORKERS": "6", "REACTOR_BACKLOG": "200"}
    config = serve_config(captured, "--config", path, "-w", "3", env=env)
    assert config.workers == 3  # command line beats the environment and the file
    assert config.backlog == 200  # the environment beats the file
    assert config.max_connections == 50  # the file beats the default
    assert config.processes == 1  # the default


def test_the_config_file_can_come_from_the_environment(
    captured: list[Config], tmp_path: Path
) -> None:
    path = write(tmp_path, "workers = 5\n")
    assert serve_config(captured, env={"REACTOR_CONFIG": path}).workers == 5


def test_print_config_names_where_each_setting_came_from(
    captured: list[Config], tmp_path: Path
) -> None:
    path = write(tmp_path, 'workers = 8\nbacklog = 100\nbind = ["127.0.0.1:9000"]\n')
    result = invoke("serve", "--config", path, "--print-config", "--processes", "2",
                    env={"REACTOR_BACKLOG": "200"})
    assert result.exit_code == 0, result.output
    assert not captured, "--print-config does not serve"
    lines = {line.split(" = ")[0]: line for line in result.output.splitlines() if " = " in line}
    assert lines["workers"].split("#")[0].strip() == "workers = 8"
    assert lines["workers"].endswith(f"# config file {path}")
    assert lines["backlog"].split("#")[0].strip() == "backlog = 200"
    assert lines["backlog"].endswith("# environment REACTOR_BACKLOG")
    assert lines["processes"].split("#")[0].strip() == "processes = 2"
    assert lines["processes"].endswith("# command line")
    assert lines["max-connections"].endswith("# default")
    assert lines["bind"].startswith('bind = ["127.0.0.1:9000"]')


def test_print_config_output_is_a_config_file_giving_the_same_settings(
    captured: list[Config], tmp_path: Path
) -> None:
    first = invoke("serve", "x.y:app", "-w", "7", "--unix-mode", "600", "--access-log",
                   "--forwarded-allow-ips", "10.0.0.1", "--print-config")
    assert first.exit_code == 0, first.output
    path = write(tmp_path, first.output, "printed.toml")
    again = serve_config(captured, "--config", path)
    direct = serve_config(captured, "x.y:app", "-w", "7", "--unix-mode", "600", "--access-log",
                          "--forwarded-allow-ips", "10.0.0.1")
    assert again == direct


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("wrokers = 3\n", "unknown key 'wrokers' (did you mean 'workers'?)"),
        ("print-config = true\n", "unknown key 'print-config'"),
        ("config = 'other.toml'\n", "unknown key 'config'"),
        ('workers = "many"\n', 'workers = "many": expected an integer'),
        ("workers = 0\n", "workers = 0: Invalid value for '--workers'"),
        ("workers = [1, 2]\n", "expected one value, not a list"),
        ('access-log = "yes"\n', 'access-log = "yes": expected true or false'),
        ("header-timeout = true\n", "expected float range, not true/false"),
        ("bind = [1]\n", "expected a string or a list of strings"),
        ('bind = ["127.0.0.1:-1"]\n', "bind '127.0.0.1:-1': port -1 is out of range 0-65535"),
        ("log-level = 'loud'\n", "'loud' is not one of"),
        ("workers = {n = 2}\n", "workers = {...}: expected a value, not a table"),
        ("[server]\nworkers = 2\n", "unknown key 'server'"),
        ("bind = [\n", "is not valid TOML"),
        ("workers = 2\nworkers = 3\n", "is not valid TOML"),
        ("max-requests = 1\nmax_requests = 2\n", "given twice"),
    ],
)
def test_a_bad_config_file_gives_one_line_naming_the_file_and_the_key(
    captured: list[Config], tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    line = error_line(invoke("serve", "--config", path))
    assert problem in line
    assert path in line
    assert not captured


def test_an_unreadable_config_file_gives_one_line(captured: list[Config], tmp_path: Path) -> None:
    line = error_line(invoke("serve", "--config", str(tmp_path / "missing.toml")))
    assert "cannot read config file" in line and "missing.toml" in line
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        path = write(tmp_path, "workers = 2\n")
        os.chmod(path, 0)
        assert "Permission denied" in error_line(invoke("serve", "--config", path))
    not_utf8 = tmp_path / "latin1.toml"
    not_utf8.write_bytes(b"server-header = '\xe9'\n")
    assert "latin1.toml" in error_line(invoke("serve", "--config", str(not_utf8)))
    assert not captured
