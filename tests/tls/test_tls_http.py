"""HTTPS with real clients: requests, httpx, curl, openssl s_client, Python's ssl.

Certificates come from ``trustme`` (conftest). Covers ALPN, SNI, client certificates
(required and optional), what the WSGI environ says, responses far larger than the
socket buffers (buffered and ``wsgi.file_wrapper``), pipelined requests in one burst
of records, plain HTTP on the TLS port, mixed TLS and plain binds, and a certificate
reload that leaves open connections alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mioreactor.workers import Server
from mioreactor.workers.http import HttpConfig
from mioreactor.workers.tls.context import TlsConfig, TlsError

from tests.tls.conftest import Pki
from tests.tls.util import BioClient, recv_all
from tests.workers.util import open_fds, wait_for

BIG = 16 * 1024 * 1024


def env_app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
    """Answers with the TLS-related environ keys as JSON; /big is 16 MB; /file a file."""
    path = environ["PATH_INFO"]
    if path == "/big":
        start("200 OK", [("Content-Type", "application/octet-stream")])
        return [b"x" * BIG]
    if path == "/stream":
        start("200 OK", [("Content-Type", "application/octet-stream")])
        return (bytes([65 + i % 26]) * 65536 for i in range(200))
    if path == "/mid":
        start("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"m" * 65536 for _ in range(40))
    if path == "/file":
        start("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(environ["HTTP_X_FILE"], "rb"))
    keys = {k: v for k, v in environ.items()
            if k.startswith("SSL_") or k in ("HTTPS", "wsgi.url_scheme")}
    body = json.dumps(keys).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def https(pki: Pki) -> Iterator[Server]:
    with Server(env_app, bind="127.0.0.1:0", workers=2,
                ssl=TlsConfig(certfile=pki.cert_pem, keyfile=pki.key_pem)) as srv:
        yield srv


def local_url(server: Server, path: str = "/") -> str:
    return f"https://localhost:{server.address[1]}{path}"


def test_requests_with_the_ca_gets_https_environ_and_sni(https: Server, pki: Pki) -> None:
    r = requests.get(local_url(https), verify=pki.ca_pem, timeout=5)
    assert r.status_code == 200
    env = r.json()
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3")
    assert env["SSL_CIPHER"]
    assert env["SSL_SERVER_NAME"] == "localhost"
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_S_DN" not in env


def test_requests_without_the_ca_refuses_the_server(https: Server) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(local_url(https), timeout=5)


def test_httpx_keeps_one_tls_connection_alive_for_many_requests(https: Server, pki: Pki) -> None:
    httpx = pytest.importorskip("httpx")
    with httpx.Client(verify=pki.client_context(), timeout=5) as client:
        for _ in range(20):
            r = client.get(local_url(https))
            assert r.status_code == 200
            assert r.json()["wsgi.url_scheme"] == "https"
    assert https.stats()["tls_handshakes"] == 1


def test_server_url_says_https(https: Server) -> None:
    assert https.url.startswith("https://127.0.0.1:")
    assert https.listeners[0].describe().startswith("https://")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_cacert_negotiates_http_1_1_by_alpn(https: Server, pki: Pki) -> None:
    port = https.address[1]
    out = subprocess.run(
        ["curl", "-sS", "-v", "--cacert", pki.ca_pem, "--resolve", f"localhost:{port}:127.0.0.1",
         f"https://localhost:{port}/"],
        capture_output=True, text=True, timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["SSL_SERVER_NAME"] == "localhost"
    assert "http/1.1" in out.stderr.lower()  # "ALPN: server accepted http/1.1"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_s_client_verifies_and_gets_an_answer(https: Server, pki: Pki) -> None:
    port = https.address[1]
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-CAfile", pki.ca_pem, "-alpn", "http/1.1", "-ign_eof"],
        input=request, capture_output=True, timeout=20,
    )
    text = out.stdout.decode("latin-1")
    assert "Verify return code: 0 (ok)" in text
    assert "ALPN protocol: http/1.1" in text
    assert "HTTP/1.1 200 OK" in text


def test_alpn_offers_http_1_1_and_nothing_else(https: Server, pki: Pki) -> None:
    ctx = pki.client_context(alpn=["h2", "http/1.1"])
    with socket.create_connection(https.address, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
    ctx = pki.client_context(alpn=["h2"])
    with socket.create_connection(https.address, timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() is None


def test_a_response_larger_than_the_socket_buffers_arrives_whole(https: Server, pki: Pki) -> None:
    r = requests.get(local_url(https, "/big"), verify=pki.ca_pem, timeout=30)
    assert r.status_code == 200
    assert len(r.content) == BIG and r.content == b"x" * BIG
    r = requests.get(local_url(https, "/stream"), verify=pki.ca_pem, timeout=30)
    assert len(r.content) == 200 * 65536
    assert r.content[:65536] == b"A" * 65536 and r.content[-65536:] == bytes([65 + 199 % 26]) * 65536


def test_a_file_wrapper_response_is_encrypted_in_chunks(https: Server, pki: Pki,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = os.urandom(6 * 1024 * 1024 + 123)
    path.write_bytes(data)
    with requests.Session() as s:
        for _ in range(2):  # the connection stays usable after the file
            r = s.get(local_url(https, "/file"), verify=pki.ca_pem, timeout=30,
                      headers={"X-File": str(path)})
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == len(data)
            assert hashlib.sha256(r.content).digest() == hashlib.sha256(data).digest()


def test_pipelined_requests_in_one_burst_of_records_all_get_answers(https: Server, pki: Pki) -> None:
    client = BioClient(https.address, pki.client_context())
    try:
        # Six 2.5 MB chunked responses: the server pauses reading (pipeline buffer)
        # and writing (high-water mark) in turn while the burst waits in the engine.
        requests_ = [b"GET /mid HTTP/1.1\r\nHost: localhost\r\n\r\n"] * 6
        requests_.append(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        client.burst(requests_)
        got = client.read(10**9, timeout=30)  # until the server closes after the last
        assert got.count(b"HTTP/1.1 200 OK") == 7
        assert got.count(b"m" * 65536) == 6 * 40
        assert got.rstrip().endswith(b"}") and b'"SSL_PROTOCOL"' in got[-400:]
    finally:
        client.close()


def test_plain_http_on_the_tls_port_gets_400_in_plain_text(https: Server) -> None:
    baseline = open_fds()
    with socket.create_connection(https.address, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = recv_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in answer and b"HTTPS" in answer
    assert https.stats()["tls_plain_http"] == 1
    assert https.stats()["tls_handshake_failed"] == 0
    assert wait_for(lambda: open_fds() <= baseline, 3.0)


def test_the_handshake_is_bounded_by_the_header_timeout(pki: Pki) -> None:
    http = HttpConfig(header_timeout=0.5)
    with Server(env_app, bind="127.0.0.1:0", workers=1, http=http,
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        with socket.create_connection(srv.address, timeout=5) as sock:
            assert recv_all(sock, timeout=5) == b""
        assert srv.stats()["tls_handshake_failed"] == 1


# -- client certificates ---------------------------------------------------------------
@pytest.fixture
def mtls(pki: Pki, request: pytest.FixtureRequest) -> Iterator[Server]:
    cfg = TlsConfig(certfile=pki.both_pem, ca_certs=pki.client_ca_pem, cert_reqs=request.param)
    with Server(env_app, bind="127.0.0.1:0", workers=1, ssl=cfg) as srv:
        yield srv


@pytest.mark.parametrize("mtls", ["required"], indirect=True)
def test_required_client_cert_reaches_the_environ(mtls: Server, pki: Pki) -> None:
    r = requests.get(local_url(mtls), verify=pki.ca_pem, cert=pki.client_pem, timeout=5)
    env = r.json()
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN_CN"] == "alice"
    assert env["SSL_CLIENT_S_DN"].startswith("CN=alice,")
    assert "O=Client CA" in env["SSL_CLIENT_I_DN"]
    assert env["SSL_CLIENT_M_SERIAL"] and env["SSL_CLIENT_V_END"]


@pytest.mark.parametrize("mtls", ["required"], indirect=True)
def test_required_client_cert_refuses_a_client_without_one(mtls: Server, pki: Pki) -> None:
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(local_url(mtls), verify=pki.ca_pem, timeout=5)
    assert wait_for(lambda: mtls.stats()["tls_handshake_failed"] == 1, 3.0)
    assert wait_for(lambda: mtls.stats()["active"] == 0, 3.0)


@pytest.mark.parametrize("mtls", ["required"], indirect=True)
def test_required_client_cert_refuses_a_cert_from_another_ca(mtls: Server, pki: Pki) -> None:
    wrong = pki.ca.issue_cert("mallory@example.org", common_name="mallory")
    path = pki.dir / "mallory.pem"
    wrong.private_key_and_cert_chain_pem.write_to_path(str(path))
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(local_url(mtls), verify=pki.ca_pem, cert=str(path), timeout=5)
    assert wait_for(lambda: mtls.stats()["tls_handshake_failed"] == 1, 3.0)


@pytest.mark.parametrize("mtls", ["optional"], indirect=True)
def test_optional_client_cert_serves_with_and_without_one(mtls: Server, pki: Pki) -> None:
    without = requests.get(local_url(mtls), verify=pki.ca_pem, timeout=5).json()
    assert without["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_S_DN" not in without
    with_cert = requests.get(local_url(mtls), verify=pki.ca_pem, cert=pki.client_pem,
                             timeout=5).json()
    assert with_cert["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert with_cert["SSL_CLIENT_S_DN_CN"] == "alice"


# -- binds, contexts, reload -----------------------------------------------------------
def test_binds_mix_tls_and_plain(pki: Pki, tmp_path: Path) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.both_pem)
    sock_path = str(tmp_path / "s.sock")
    binds: list[Any] = ["127.0.0.1:0", "http://127.0.0.1:0", ("127.0.0.1:0", ctx),
                        ("127.0.0.1:0", None), "unix:" + sock_path]
    with Server(env_app, bind=binds, workers=1,
                ssl=TlsConfig(certfile=pki.cert_pem, keyfile=pki.key_pem)) as srv:
        tls = [bl.tls is not None for bl in srv.listeners]
        assert tls == [True, False, True, False, False]
        ports = [a[1] for a in srv.addresses[:4]]
        assert requests.get(f"https://localhost:{ports[0]}/", verify=pki.ca_pem,
                            timeout=5).json()["HTTPS"] == "on"
        assert "HTTPS" not in requests.get(f"http://127.0.0.1:{ports[1]}/", timeout=5).json()
        assert requests.get(f"https://localhost:{ports[2]}/", verify=pki.ca_pem,
                            timeout=5).json()["wsgi.url_scheme"] == "https"
        assert requests.get(f"http://127.0.0.1:{ports[3]}/", timeout=5).status_code == 200


def test_an_https_unix_bind_serves_tls(pki: Pki, tmp_path: Path) -> None:
    path = str(tmp_path / "tls.sock")
    with Server(env_app, bind="https://unix:" + path, workers=1,
                ssl=TlsConfig(certfile=pki.both_pem)):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(path)
        with pki.client_context().wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_all(tls).startswith(b"HTTP/1.1 200 OK")


def test_an_https_bind_without_tls_settings_is_refused(pki: Pki) -> None:
    from mioreactor.workers.server.binds import BindError

    srv = Server(env_app, bind="https://127.0.0.1:0", workers=1)
    with pytest.raises(BindError, match="TLS needs a certificate"):
        srv.start()


def test_a_client_context_is_refused(pki: Pki) -> None:
    srv = Server(env_app, bind="127.0.0.1:0", workers=1, ssl=pki.client_context())
    with pytest.raises(TlsError, match="client context"):
        srv.start()


def test_a_reload_serves_the_new_certificate_and_keeps_open_connections(pki: Pki,
                                                                         tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.cert_pem, cert)
    shutil.copy(pki.key_pem, key)
    with Server(env_app, bind="127.0.0.1:0", workers=1,
                ssl=TlsConfig(certfile=str(cert), keyfile=str(key))) as srv:
        old = pki.client_context().wrap_socket(socket.create_connection(srv.address, timeout=5),
                                               server_hostname="localhost")
        assert old.getpeercert()["subject"][-1][0][1] == "server"
        new_cert, new_key = pki.renew("renewed")
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        assert srv.reload_tls() == 1
        assert srv.stats()["tls_reloads"] == 1
        with pki.client_context().wrap_socket(socket.create_connection(srv.address, timeout=5),
                                              server_hostname="localhost") as fresh:
            assert fresh.getpeercert()["subject"][-1][0][1] == "renewed"
        with old:  # the connection opened before the reload still serves
            old.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_all(old).startswith(b"HTTP/1.1 200 OK")
        # A broken renewal keeps the certificate that works.
        key.write_text("not a key")
        with pytest.raises(TlsError):
            srv.reload_tls()
        with pki.client_context().wrap_socket(socket.create_connection(srv.address, timeout=5),
                                              server_hostname="localhost") as again:
            assert again.getpeercert()["subject"][-1][0][1] == "renewed"


def test_an_error_response_is_read_whole_then_a_clean_tls_close(pki: Pki) -> None:
    # 413 at once from Content-Length, while the client is still sending its body: the
    # lingering close sends close_notify, shuts the write side and discards the rest.
    with Server(env_app, bind="127.0.0.1:0", workers=1, http=HttpConfig(max_body_size=1000),
                ssl=TlsConfig(certfile=pki.both_pem)) as srv:
        # suppress_ragged_eofs=False: a TCP EOF without close_notify raises SSLEOFError.
        with socket.create_connection(srv.address, timeout=10) as raw, \
                pki.client_context().wrap_socket(raw, server_hostname="localhost",
                                                 suppress_ragged_eofs=False) as tls:
            tls.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
            tls.sendall(b"x" * 100_000)
            got = b""
            while True:
                try:
                    chunk = tls.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not chunk:
                    break  # close_notify: a clean end of the TLS stream
                got += chunk
        assert got.startswith(b"HTTP/1.1 413 ")
        assert b"Connection: close" in got
        assert wait_for(lambda: srv.stats()["active"] == 0, 5.0)


def test_a_contexts_own_sni_callback_still_picks_the_certificate(pki: Pki) -> None:
    other = pki.ca.issue_cert("other.localhost", common_name="other")
    other_pem = pki.dir / "other.pem"
    other.private_key_and_cert_chain_pem.write_to_path(str(other_pem))
    default = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    default.load_cert_chain(pki.both_pem)
    second = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    second.load_cert_chain(str(other_pem))

    def pick(sslobj: Any, name: str | None, ctx: ssl.SSLContext) -> None:
        if name == "other.localhost":
            sslobj.context = second

    default.sni_callback = pick
    with Server(env_app, bind="127.0.0.1:0", workers=1, ssl=default) as srv:
        for name, cn in (("localhost", "server"), ("other.localhost", "other")):
            with socket.create_connection(srv.address, timeout=5) as raw, \
                    pki.client_context().wrap_socket(raw, server_hostname=name) as tls:
                assert dict(x[0] for x in tls.getpeercert()["subject"])["commonName"] == cn
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                body = recv_all(tls).partition(b"\r\n\r\n")[2]
                assert json.loads(body)["SSL_SERVER_NAME"] == name
