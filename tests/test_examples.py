"""Every example in examples/ runs: started the way its docstring says, driven over
loopback, stopped. In-process tests use the ``reactor_server`` fixture; script tests
start the file in a subprocess, wait for its "serving on ..." line and stop it with a
signal, expecting a clean exit."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
import requests
from mioreactor.workers import Server
from mioreactor.workers.tools.doctor import listen_queue_depth

from examples.chat_handler import ChatRoom, make_factory
from examples.echo_handler import Echo
from examples.flask_app import app as flask_app
from examples.hello_wsgi import app as hello_app

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
START_TIMEOUT = 15.0


# -- helpers ---------------------------------------------------------------------------
def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of ``proc``, or fail with what it printed on stderr."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no output within {timeout} s; stderr:\n{err}")
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate()
        pytest.fail(f"exited with {proc.returncode} before printing; stderr:\n{err}")
    return line.strip()


@contextmanager
def running(
    args: list[str], stop: int = signal.SIGINT
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start a server script, yield the address it prints (``serving on ADDRESS``),
    then stop it with ``stop`` and expect exit status 0."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line(proc, START_TIMEOUT)
        match = re.search(r"(?:serving on|on) (\S+?)/?$", line)
        assert match, f"unexpected first line: {line!r}"
        yield match.group(1), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(stop)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"{args[0]} did not stop on signal {stop}; stderr:\n{err}")
    assert proc.returncode == 0, f"{args[0]} exited with {proc.returncode}:\n{err}"


def host_port(address: str) -> tuple[str, int]:
    """``http://127.0.0.1:8000`` or ``127.0.0.1:8000`` to ``("127.0.0.1", 8000)``."""
    host, _, port = address.removeprefix("http://").rpartition(":")
    return host, int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)


class LineClient:
    """A line-based TCP client for the chat: ``send`` a line, ``expect`` a line."""

    def __init__(self, address: tuple[str, int], rcvbuf: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # before connect, so the advertised window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(3)
        self.sock.connect(address)
        self.buffer = b""

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError("the server closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def expect(self, text: str) -> str:
        """Read lines until one contains ``text``; return it."""
        seen = []
        while True:
            try:
                line = self.line()
            except (EOFError, TimeoutError):
                pytest.fail(f"never got {text!r}; got {seen}")
            if text in line:
                return line
            seen.append(line)

    def close(self) -> None:
        self.sock.close()


# -- hello_wsgi.py -----------------------------------------------------------------------
def test_hello_wsgi_passes_the_pep_3333_validator(reactor_server: Callable[..., Server]) -> None:
    server = reactor_server(validator(hello_app))
    response = requests.get(server.url + "/there", timeout=5)
    assert response.status_code == 200
    assert response.text == "Hello from mioreactor! You asked for /there\n"


def test_hello_wsgi_script_serves_and_stops_on_ctrl_c() -> None:
    with running(["examples/hello_wsgi.py", "--bind", "127.0.0.1:0", "--workers", "2"]) as (url, _):
        assert requests.get(url + "/", timeout=5).text.startswith("Hello from mioreactor!")


# -- flask_app.py ------------------------------------------------------------------------
def test_flask_app_creates_and_reads_items(reactor_server: Callable[..., Server]) -> None:
    server = reactor_server(flask_app, workers=4)
    assert requests.get(server.url + "/", timeout=5).json()["hello"] == "mioreactor"
    created = requests.post(server.url + "/items", json={"name": "tea"}, timeout=5)
    assert created.status_code == 201
    item = created.json()
    assert requests.get(f"{server.url}/items/{item['id']}", timeout=5).json() == item
    assert item in requests.get(server.url + "/items", timeout=5).json()
    assert requests.post(server.url + "/items", json={}, timeout=5).status_code == 400
    assert requests.get(server.url + "/items/999999", timeout=5).status_code == 404


def test_flask_app_runs_under_reactor_serve() -> None:
    """The tutorial's first command: ``reactor serve examples.flask_app:app``."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mioreactor",
            "serve",
            "examples.flask_app:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        response = wait_until(lambda: requests.get(url + "/", timeout=1), START_TIMEOUT)
        assert response is not None and response.json()["hello"] == "mioreactor"
        assert response.json()["thread"].startswith("reactor-worker-")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_flask_app_script_serves_and_stops_on_sigterm() -> None:
    with running(["examples/flask_app.py", "--bind", "127.0.0.1:0"], signal.SIGTERM) as (url, _):
        assert requests.post(url + "/items", json={"name": "x"}, timeout=5).status_code == 201


# -- echo_handler.py ---------------------------------------------------------------------
def test_echo_handler_echoes_large_payloads_with_backpressure(
    reactor_server: Callable[..., Server],
) -> None:
    server = reactor_server(handler=Echo)
    payload = os.urandom(4 * 1024 * 1024)
    with socket.create_connection(server.address, timeout=10) as sock:
        # Send everything before reading: the server's buffer passes its high-water
        # mark, so the handler pauses reading until we drain the echo.
        sock.setblocking(False)
        sent = 0
        received = bytearray()
        while len(received) < len(payload):
            _, writable, _ = select.select([], [sock] if sent < len(payload) else [], [], 0)
            if writable:
                sent += sock.send(payload[sent : sent + 65536])
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                chunk = sock.recv(1 << 20)
                assert chunk, "the server closed early"
                received += chunk
    assert received == payload


def test_echo_handler_script_serves_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    with running(["examples/echo_handler.py", "--bind", f"unix:{path}"]) as (address, _):
        assert address == f"unix:{path}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"hello\n")
            assert sock.recv(100) == b"hello\n"
            sock.shutdown(socket.SHUT_WR)  # eof_received returns False: the server closes
            assert sock.recv(100) == b""
    assert not os.path.exists(path), "a graceful stop removes the socket file"


# -- chat_handler.py ---------------------------------------------------------------------
def test_chat_broadcasts_to_everyone_but_the_sender(reactor_server: Callable[..., Server]) -> None:
    server = reactor_server(handler=make_factory(ChatRoom()), workers=1)
    alice, bob = LineClient(server.address), LineClient(server.address)
    try:
        alice.expect("* welcome")
        bob.expect("* welcome")
        alice.send("/nick alice")
        bob.expect("is now alice")
        bob.send("/nick bob")
        alice.expect("is now bob")
        alice.send("hello, bob")
        assert bob.expect("<alice>") == "<alice> hello, bob"
        bob.send("/who")
        assert bob.expect("* here:") == "* here: alice, bob"
        alice.send("/quit")
        alice.expect("* bye")
        assert bob.expect("left") == "* alice left"
    finally:
        alice.close()
        bob.close()


def test_chat_refuses_more_than_one_worker() -> None:
    server = Server(handler=make_factory(ChatRoom()), bind="127.0.0.1:0", workers=2)
    with pytest.raises(RuntimeError, match="workers=1"):
        server.start()


def test_chat_drops_a_member_that_never_reads(reactor_server: Callable[..., Server]) -> None:
    server = reactor_server(handler=make_factory(ChatRoom()), workers=1)
    talker, sleeper = LineClient(server.address), LineClient(server.address, rcvbuf=4096)
    try:
        talker.expect("* welcome")
        line = "x" * 4000
        for _ in range(8000):  # up to 32 MB toward a member that reads nothing
            talker.send(line)
            if wait_until(lambda: server.stats()["closed"] >= 1, 0.0):
                break
        assert wait_until(lambda: server.stats()["closed"] >= 1, 5.0)
        assert talker.expect("left").endswith("left")
    finally:
        talker.close()
        sleeper.close()


def test_chat_script_serves_two_members() -> None:
    with running(["examples/chat_handler.py", "--bind", "127.0.0.1:0"]) as (address, _):
        a, b = LineClient(host_port(address)), LineClient(host_port(address))
        try:
            a.expect("* welcome")
            b.expect("* welcome")
            a.send("ping")
            assert b.expect("ping").endswith("> ping")
        finally:
            a.close()
            b.close()


# -- embed_background.py -----------------------------------------------------------------
def test_embed_background_serves_while_the_job_runs_and_stops() -> None:
    result = subprocess.run(
        [sys.executable, "examples/embed_background.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    statuses = [
        json.loads(line.removeprefix("status: "))
        for line in result.stdout.splitlines()
        if line.startswith("status: ")
    ]
    assert [s["done"] for s in statuses] == list(range(1, 11))
    assert result.stdout.rstrip().endswith("served 10 connection(s); stopped")


# -- naive_acceptor.py -------------------------------------------------------------------
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def abandon_clients(address: tuple[str, int], rounds: int = 4, clients: int = 30) -> None:
    """What a load tool leaves behind when its run ends: clients that connected, sent
    a request and closed without waiting for the answer."""
    for _ in range(rounds):
        socks = [socket.create_connection(address, timeout=2) for _ in range(clients)]
        for s in socks:
            s.sendall(REQUEST)
        for s in socks:
            s.close()


def served(address: tuple[str, int], timeout: float = 0.3) -> bool:
    """Does a brand-new client get an answer? A connect that times out is not served:
    with the accept queue full the kernel drops new handshakes. That is how the naive
    acceptor strands clients on the fallback backend, which re-arms a listener only when
    accept() would block (mio's poll(2) rule), so one accept per event never re-arms it."""
    try:
        s = socket.create_connection(address, timeout=timeout)
    except TimeoutError:
        return False
    with s:
        s.sendall(REQUEST)
        try:
            return s.recv(100).startswith(b"HTTP/1.0 200")
        except (TimeoutError, ConnectionResetError):
            return False


def abandon_while_stopped(proc: subprocess.Popen[str], address: tuple[str, int]) -> None:
    """Abandon clients while the server process is stopped (SIGSTOP), as a busy server
    is when a load tool opens its connections at once: the kernel completes and
    queues every handshake, and the server's next poll finds them all at once."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        abandon_clients(address)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    time.sleep(0.2)


def test_naive_acceptor_strands_new_clients_after_abandoned_ones() -> None:
    args = ["examples/naive_acceptor.py", "--port", "0", "--backlog", "128"]
    with running(args) as (url, proc):
        address = host_port(url)
        assert served(address, timeout=2), "a fresh server answers"
        abandon_while_stopped(proc, address)
        assert (listen_queue_depth(address[1]) or 0) > 0, "the accept queue keeps dead clients"
        ok = sum(served(address) for _ in range(10))
        assert ok < 5, f"the naive acceptor served {ok} of 10 new clients"


def test_naive_acceptor_with_drain_serves_every_new_client() -> None:
    args = ["examples/naive_acceptor.py", "--port", "0", "--backlog", "128", "--drain"]
    with running(args) as (url, proc):
        address = host_port(url)
        abandon_while_stopped(proc, address)
        assert wait_until(lambda: listen_queue_depth(address[1]) == 0, 2.0)
        assert sum(served(address, timeout=2) for _ in range(10)) == 10
