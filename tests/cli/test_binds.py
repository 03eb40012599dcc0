"""Binds as people type them (gunicorn's and uvicorn's conventions), the problem named.

The same rules hold from the command line, a TOML config file and ``Server(bind=...)``.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from mioreactor import Server, cli
from mioreactor.workers.process.config import Config, ConfigError
from mioreactor.workers.server.binds import BindError, parse_bind

from tests.cli.apps import app
from tests.cli.proc import ServeProcess, free_port, http_request, tcp_address

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("spec", "address"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost", ("127.0.0.1", 8000)),  # gunicorn: a host alone is port 8000
        ("localhost:9000", ("127.0.0.1", 9000)),
        ("0.0.0.0", ("0.0.0.0", 8000)),
        ("8080", ("127.0.0.1", 8080)),  # a port alone: uvicorn's default host
        (":8080", ("0.0.0.0", 8080)),  # every IPv4 interface, as gunicorn
        ("[::1]", ("::1", 8000)),
        ("[::]:8080", ("::", 8080)),
        ("https://localhost", ("127.0.0.1", 8000)),
    ],
)
def test_a_tcp_bind_reads_as_people_type_it(spec: str, address: tuple[str, int]) -> None:
    assert parse_bind(spec) == ("tcp", address)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("127.0.0.1:99999", "port 99999 is out of range 0-65535"),
        ("127.0.0.1:-1", "port -1 is out of range 0-65535"),
        ("99999", "port 99999 is out of range 0-65535"),
        ("localhost:http", "port 'http' is not a number"),
        ("::1", "an IPv6 address needs brackets: [::1]:PORT"),
        ("", "expected HOST:PORT"),
    ],
)
def test_a_bad_bind_names_its_problem_everywhere(spec: str, problem: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BindError, match=f"bind {spec!r}: .*") as info:
        parse_bind(spec)
    assert problem in str(info.value)
    with pytest.raises(ConfigError) as config_info:
        Config(binds=(spec,))
    assert problem in str(config_info.value)
    with pytest.raises(BindError) as server_info:
        Server(app, bind=spec)
    assert problem in str(server_info.value)
    runner = CliRunner()
    result = runner.invoke(cli.reactor, ["serve", "-b", spec, "--print-config"])
    assert result.exit_code == 2 and problem in result.output, result.output
    config = tmp_path / "site.toml"
    config.write_text(f'bind = ["{spec}"]\n')
    result = runner.invoke(cli.reactor, ["serve", "-c", str(config), "--print-config"])
    assert result.exit_code != 0 and problem in result.output, result.output


def test_a_port_alone_serves_on_loopback() -> None:
    port = free_port()
    with ServeProcess(["tests.cli.apps:app", "-b", str(port)]) as proc:
        where = proc.wait_serving()
        assert where == [f"127.0.0.1:{port}"]
        assert http_request(tcp_address(where[0]))[0] == 200
