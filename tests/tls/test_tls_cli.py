"""``reactor serve`` with TLS: options and their environment variables, a key that does
not match, a certificate renewed under SIGHUP (one process) and under the rolling
restart (``--processes``), and ``reactor bench https://`` and ``wss://``."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from mioreactor import cli
from mioreactor.workers.process.config import Config

from tests.cli.proc import REACTOR, ROOT, ServeProcess, tcp_address
from tests.tls.conftest import Pki
from tests.tls.util import recv_all


def _cn(ctx: ssl.SSLContext, address: tuple[str, int]) -> str:
    """The common name of the certificate the server presents to a new connection."""
    with socket.create_connection(address, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        cert = tls.getpeercert()
    return str(dict(x[0] for x in cert["subject"])["commonName"])


def _get(tls: ssl.SSLSocket, path: str = "/", close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode())
    if close:
        return recv_all(tls)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(65536)
        assert chunk, "the connection was closed"
        head += chunk
    return head


def _https_address(lines: list[str]) -> tuple[str, int]:
    where = next(w for w in lines if w.startswith("https://"))
    return tcp_address(where.removeprefix("https://"))


@pytest.fixture
def certs(pki: Pki, tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.cert_pem, cert)
    shutil.copy(pki.key_pem, key)
    return cert, key


def _renew(pki: Pki, cert: Path, key: Path) -> None:
    new_cert, new_key = pki.renew("renewed")
    # Write then rename, as certbot and friends do: never a half-written file.
    shutil.copy(new_cert, str(cert) + ".new")
    shutil.copy(new_key, str(key) + ".new")
    Path(str(cert) + ".new").replace(cert)
    Path(str(key) + ".new").replace(key)


def test_tls_options_and_environment_variables_build_the_tls_config(pki: Pki) -> None:
    opts = {
        "certfile": pki.cert_pem, "keyfile": pki.key_pem, "keyfile_password": None,
        "ca_certs": pki.client_ca_pem, "cert_reqs": "optional", "ciphers": "ECDHE+AESGCM",
        "ssl_min_version": "1.3",
    }
    tls = cli._tls_config(opts)
    assert tls is not None
    assert (tls.certfile, tls.keyfile, tls.cert_reqs, tls.min_version) == (
        pki.cert_pem, pki.key_pem, "optional", "1.3")
    env = {"REACTOR_CERTFILE": pki.cert_pem, "REACTOR_KEYFILE": pki.key_pem,
           "REACTOR_KEYFILE_PASSWORD": "sekret", "REACTOR_CERT_REQS": "required",
           "REACTOR_CA_CERTS": pki.client_ca_pem, "REACTOR_SSL_MIN_VERSION": "1.3"}
    out = CliRunner().invoke(cli.reactor, ["serve", "--print-config"], env=env)
    assert out.exit_code == 0, out.output
    assert f'certfile = "{pki.cert_pem}"' in out.output
    assert 'cert-reqs = "required"' in out.output and 'ssl-min-version = "1.3"' in out.output
    assert "sekret" not in out.output  # the password is never printed


def test_a_config_with_tls_crosses_to_children_as_json(pki: Pki) -> None:
    opts = {"certfile": pki.cert_pem, "keyfile": pki.key_pem, "cert_reqs": "none"}
    config = Config(binds=("127.0.0.1:0", "http://127.0.0.1:0"), tls=cli._tls_config(opts))
    again = Config.from_json(config.to_json())
    assert again.tls == config.tls and again.binds == config.binds
    assert Config.from_json(Config().to_json()).tls is None


@pytest.mark.parametrize("args, message", [
    (["--keyfile", "k.pem"], "--keyfile needs --certfile"),
    (["--cert-reqs", "required"], "--cert-reqs needs --certfile"),
    (["--certfile", "c.pem", "--cert-reqs", "required"], "--cert-reqs required needs --ca-certs"),
    (["-b", "https://127.0.0.1:0"], "https:// needs a certificate"),
])
def test_tls_options_that_cannot_work_are_named(args: list[str], message: str) -> None:
    out = CliRunner().invoke(cli.reactor, ["serve", *args])
    assert out.exit_code == 2
    assert message in out.output


@pytest.mark.parametrize("processes", ["1", "2"])
def test_serve_refuses_a_key_that_does_not_match_with_one_line(pki: Pki, tmp_path: Path,
                                                                processes: str) -> None:
    other = pki.ca.issue_cert("localhost")
    wrong = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(wrong))
    out = subprocess.run(
        [*REACTOR, "serve", "-b", "127.0.0.1:0", "-p", processes, "--certfile", pki.cert_pem,
         "--keyfile", str(wrong)],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert lines == [f"Error: --keyfile {wrong} does not match the certificate in --certfile "
                     f"{pki.cert_pem}"]


def test_sighup_reloads_the_certificate_and_keeps_open_connections(pki: Pki,
                                                                   certs: tuple[Path, Path]) -> None:
    cert, key = certs
    ctx = pki.client_context()
    with ServeProcess(["tests.cli.apps:app", "-b", "127.0.0.1:0", "-b", "http://127.0.0.1:0",
                       "--certfile", str(cert), "--keyfile", str(key), "-w", "2"]) as proc:
        listening = proc.wait_serving()
        assert [w.startswith("https://") for w in listening] == [True, False]
        address = _https_address(listening)
        assert _cn(ctx, address) == "server"
        old = ctx.wrap_socket(socket.create_connection(address, timeout=5),
                              server_hostname="localhost")
        with old:
            assert _get(old).startswith(b"HTTP/1.1 200 OK")
            _renew(pki, cert, key)
            mark = len(proc.lines)
            proc.signal(signal.SIGHUP)
            proc.wait_for("reloaded the TLS certificate of 1 listener", start=mark)
            assert _cn(ctx, address) == "renewed"
            # The connection opened before the reload goes on with its session.
            assert _get(old, close=True).startswith(b"HTTP/1.1 200 OK")
        # A renewal that does not load keeps the certificate that works.
        key.write_text("not a key\n")
        mark = len(proc.lines)
        proc.signal(signal.SIGHUP)
        proc.wait_for("the TLS certificate was not reloaded", start=mark)
        assert _cn(ctx, address) == "renewed"
        assert proc.proc.poll() is None


def test_the_rolling_restart_picks_up_a_renewed_certificate(pki: Pki,
                                                             certs: tuple[Path, Path]) -> None:
    cert, key = certs
    ctx = pki.client_context()
    with ServeProcess(["tests.cli.apps:slow", "-b", "127.0.0.1:0", "-p", "2", "-w", "2",
                       "--certfile", str(cert), "--keyfile", str(key)]) as proc:
        address = _https_address(proc.wait_serving(30))
        assert _cn(ctx, address) == "server"
        # A request in flight across the restart is answered.
        inflight = ctx.wrap_socket(socket.create_connection(address, timeout=20),
                                   server_hostname="localhost")
        answer: list[bytes] = []
        inflight.sendall(b"GET /?seconds=2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reader = threading.Thread(target=lambda: answer.append(recv_all(inflight, 20)))
        reader.start()
        _renew(pki, cert, key)
        mark = len(proc.lines)
        proc.signal(signal.SIGHUP)
        proc.wait_for("rolling restart done", start=mark, timeout=60)
        reader.join(25)
        inflight.close()
        assert answer and answer[0].startswith(b"HTTP/1.1 200 OK"), answer
        assert b"slept 2" in answer[0]
        # Once both old processes have drained and exited, only the new ones answer.
        for _ in range(2):
            mark = proc.lines.index(proc.wait_for("has exited", start=mark, timeout=30).string) + 1
        assert {_cn(ctx, address) for _ in range(6)} == {"renewed"}


# -- reactor bench https:// ---------------------------------------------------------------
def _hello(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [b"hello"]


def test_reactor_bench_loads_an_https_server_with_cacert_or_insecure(pki: Pki) -> None:
    import json

    from mioreactor.workers import Server
    from mioreactor.workers.tls.context import TlsConfig

    with Server(_hello, bind="127.0.0.1:0", workers=1,
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        port = srv.address[1]
        runner = CliRunner()
        for url, extra in ((f"https://localhost:{port}/", ["--cacert", pki.ca_pem]),
                           (f"https://127.0.0.1:{port}/", ["--cacert", pki.ca_pem]),
                           (f"https://127.0.0.1:{port}/", ["--insecure", "--close"])):
            out = runner.invoke(cli.reactor, ["bench", url, "-n", "300", "-c", "8", "--json",
                                              "-q", *extra])
            assert out.exit_code == 0, out.output
            data = json.loads(out.output)
            assert data["ok"] and data["status"] == {"200": 300}
            assert data["tls_errors"] == {}
        # Keep-alive reuses the TLS session: one handshake per connection.
        assert srv.stats()["tls_handshakes"] == 8 + 8 + 300
        # Without the CA the run fails, and says why and what to do.
        out = runner.invoke(cli.reactor, ["bench", f"https://localhost:{port}/", "-n", "20",
                                          "-c", "2", "-q"])
        assert out.exit_code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in out.output and "--cacert" in out.output


def test_reactor_bench_wss_loads_a_websocket_echo_over_tls(pki: Pki) -> None:
    import json

    from mioreactor.workers import Server
    from mioreactor.workers.tls.context import TlsConfig

    from bench.apps import ws_echo_asgi

    with Server(ws_echo_asgi, bind="127.0.0.1:0", workers=1,
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        port = srv.address[1]
        runner = CliRunner()
        for extra in (["--cacert", pki.ca_pem], ["--insecure"]):
            out = runner.invoke(cli.reactor, ["bench", f"wss://localhost:{port}/", "-n", "300",
                                              "-c", "4", "--json", "-q", *extra])
            assert out.exit_code == 0, out.output
            data = json.loads(out.output)
            assert data["ok"] and data["messages"] == {"sent": 300, "echoed": 300}
            assert data["close_codes"] == {"1000": 4} and data["handshakes"]["ok"] == 4
        out = runner.invoke(cli.reactor, ["bench", f"wss://localhost:{port}/", "-n", "4",
                                          "-c", "2", "-q"])
        assert out.exit_code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in out.output and "--cacert" in out.output


def test_reactor_bench_https_on_the_fallback_backend_gets_every_response(pki: Pki) -> None:
    # The read that finishes a client handshake returns data; the fallback backend
    # re-arms readable only on BlockingIOError, so a client that stops there never
    # hears the response (epoll would report it as a new edge). Every response must come.
    import json
    import os

    from mioreactor.workers import Server
    from mioreactor.workers.tls.context import TlsConfig

    with Server(_hello, bind="127.0.0.1:0", workers=1,
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        url = f"https://127.0.0.1:{srv.address[1]}/"
        env = {**os.environ, "REACTOR_BACKEND": "fallback"}
        proc = subprocess.run([*REACTOR, "bench", url, "-n", "200", "-c", "8", "--json", "-q",
                               "--cacert", pki.ca_pem, "--timeout", "3"],
                              env=env, capture_output=True, text=True, timeout=60)
        data = json.loads(proc.stdout)
        assert (data["responses"], data["timeouts"]["response"]) == (200, 0), proc.stdout
        assert proc.returncode == 0


@pytest.mark.parametrize("args, message", [
    (["http://127.0.0.1:1/", "--insecure"], "are for https:// and wss:// URLs"),
    (["https://127.0.0.1:1/", "--insecure", "--cacert", __file__], "not both"),
    (["https://127.0.0.1:1/", "--cacert", "/nonexistent/ca.pem"], "no such file"),
])
def test_reactor_bench_tls_options_that_cannot_work_are_named(args: list[str], message: str) -> None:
    out = CliRunner().invoke(cli.reactor, ["bench", *args, "-n", "1"])
    assert out.exit_code == 2
    assert message in out.output


@pytest.mark.parametrize("share", ["inherit", "reuseport"])
def test_processes_keep_each_binds_tls_choice(pki: Pki, share: str) -> None:
    if share == "reuseport" and not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("SO_REUSEPORT is not available here")
    with ServeProcess(["tests.cli.apps:app", "-b", "127.0.0.1:0", "-b", "http://127.0.0.1:0",
                       "-p", "2", "-w", "1", "--share", share, "--certfile", pki.both_pem]) as proc:
        listening = proc.wait_serving(30)
        assert [w.startswith("https://") for w in listening] == [True, False]
        tls_address = _https_address(listening)
        plain_address = tcp_address(listening[1])
        with socket.create_connection(tls_address, timeout=5) as raw, \
                pki.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            assert _get(tls, close=True).startswith(b"HTTP/1.1 200 OK")
        with socket.create_connection(plain_address, timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_all(sock).startswith(b"HTTP/1.1 200 OK")
