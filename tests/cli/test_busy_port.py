"""An address another process listens on is refused in every mode (issue 19, item 5).

A second ``reactor serve -p 2`` on the port of a first one used to start and serve
half the traffic: the supervisor's listeners carry SO_REUSEPORT, so the second one's
joined their group. The supervisor now claims each address with a listener opened
*without* SO_REUSEPORT (``workers.supervisor._claim``) and turns it on only once
that socket listens; ``--share reuseport`` asked for by name still shares, with a
warning. A Unix socket file a server listens on is no longer unlinked and taken
over either. Real processes on 127.0.0.1, on ports the tests hold or pick.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mioreactor.workers.process.supervisor import _claim, _slot_listener
from mioreactor.workers.server.binds import BindError

from tests.cli.proc import ServeProcess, get_json, tcp_address

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"),
        reason="the SO_REUSEPORT sharing these tests guard against is Linux's",
    ),
]

MODES = {
    "single": [],
    "processes": ["-p", "2"],
    "reload": ["--reload"],
    "max-requests": ["--max-requests", "100"],
    "inherit": ["-p", "2", "--share", "inherit"],
}


@contextmanager
def held_listener(reuse_port: bool) -> Iterator[socket.socket]:
    """A listener on 127.0.0.1 and a free port; with ``reuse_port``, as another
    supervisor's (SO_REUSEPORT, this user), which a naive second one would join."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock
    finally:
        sock.close()


def assert_refused_with_one_line(proc: ServeProcess, port: int) -> None:
    assert proc.wait_exit(30) == 1, proc.output
    errors = [line for line in proc.lines if line.startswith("Error:")]
    assert errors == [f"Error: bind '127.0.0.1:{port}': Address already in use"], proc.output
    assert "Traceback" not in proc.output
    assert "serving" not in proc.output, proc.output


def pids_answering(address: tuple[str, int], attempts: int = 60) -> set[int]:
    """The pids that answer ``/stats`` over ``attempts`` new connections."""
    return {get_json(address, "/stats")["pid"] for _ in range(attempts)}


# -- every mode, against a listener the test holds ----------------------------------------
@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuseport"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_refuses_a_port_another_process_listens_on(mode: str, reuse_port: bool) -> None:
    with held_listener(reuse_port) as busy:
        port = busy.getsockname()[1]
        with ServeProcess(["-b", f"127.0.0.1:{port}", "-w", "1", *MODES[mode]]) as proc:
            assert_refused_with_one_line(proc, port)
        # Nothing joined the held listener: a client still reaches it, and only it.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            busy.settimeout(5)
            busy.accept()[0].close()


@pytest.mark.parametrize("mode", ["single", "processes"])
def test_a_unix_socket_a_server_listens_on_is_refused_not_taken_over(mode: str) -> None:
    """A live server's socket file is not unlinked and replaced (a dead one's is)."""
    with tempfile.TemporaryDirectory(prefix="rx") as where:  # short: sun_path is ~100 bytes
        path = os.path.join(where, "s.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
            busy.bind(path)
            busy.listen(8)
            with ServeProcess(["-b", f"unix:{path}", "-w", "1", *MODES[mode]]) as proc:
                assert proc.wait_exit(30) == 1, proc.output
            errors = [line for line in proc.lines if line.startswith("Error:")]
            assert errors == [f"Error: bind 'unix:{path}': Address already in use"], proc.output
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(path)  # the file is still the held listener's


# -- a second reactor serve against a first one ---------------------------------------------
@pytest.fixture
def first() -> Iterator[tuple[ServeProcess, tuple[str, int]]]:
    """``reactor serve -p 2`` on a port it picked, serving; and its address."""
    with ServeProcess(["-b", "127.0.0.1:0", "-p", "2", "-w", "1"]) as proc:
        (where,) = proc.wait_serving()
        address = tcp_address(where)
        assert len(pids_answering(address, 200)) == 2
        yield proc, address


@pytest.mark.parametrize("mode", ["processes", "reload", "max-requests", "single"])
def test_a_second_server_on_the_port_of_a_first_is_refused(
    first: tuple[ServeProcess, tuple[str, int]], mode: str
) -> None:
    proc, address = first
    port = address[1]
    mine = pids_answering(address)
    with ServeProcess(["-b", f"127.0.0.1:{port}", "-w", "1", *MODES[mode]]) as second:
        assert_refused_with_one_line(second, port)
    assert pids_answering(address) <= mine, "only the first server's processes answer"
    assert proc.proc.poll() is None


def test_share_reuseport_by_name_joins_the_first_server_and_says_so(
    first: tuple[ServeProcess, tuple[str, int]],
) -> None:
    _, address = first
    mine = pids_answering(address)
    port = address[1]
    with ServeProcess(["-b", f"127.0.0.1:{port}", "-p", "2", "-w", "1",
                       "--share", "reuseport"]) as second:
        second.wait_serving()
        line = second.wait_for(r"another process listens on").string
        assert f"127.0.0.1:{port}: sharing the port with it (--share reuseport" in line
        seen: set[int] = set()
        for _ in range(5):
            seen |= pids_answering(address)
            if seen - mine:
                break
        assert seen & mine and seen - mine, f"both servers answer: {seen} (first: {mine})"


# -- the claim itself ------------------------------------------------------------------------
def test_claim_refuses_an_address_a_reuseport_group_listens_on_unless_asked_to_join() -> None:
    with held_listener(reuse_port=True) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(BindError, match=rf"bind '127.0.0.1:{port}': Address already in use"):
            _claim(f"127.0.0.1:{port}", 16, join=False)
        sock, where, joined = _claim(f"127.0.0.1:{port}", 16, join=True)
        with sock:
            assert (where, joined) == (f"127.0.0.1:{port}", True)


def test_the_claimed_listener_is_alone_and_the_slots_join_its_group() -> None:
    first, where, joined = _claim("127.0.0.1:0", 128, join=False)
    slot = _slot_listener(first, 128)
    with first, slot:
        assert not joined
        port = first.getsockname()[1]
        assert where == f"127.0.0.1:{port}"
        with pytest.raises(BindError, match="Address already in use"):
            _claim(where, 16, join=False)  # a second supervisor
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        try:
            counts = []
            for listener in (first, slot):
                listener.setblocking(False)
                n = 0
                while True:
                    try:
                        listener.accept()[0].close()
                    except BlockingIOError:
                        break
                    n += 1
                counts.append(n)
        finally:
            for c in clients:
                c.close()
        assert sum(counts) == 40 and min(counts) > 0, counts


def test_of_two_servers_starting_at_once_only_one_can_listen() -> None:
    """The window between another server's bind and its listen: the claim that listens
    first wins, and the other's listen fails (the kernel decides, atomically)."""
    other = socket.socket()
    with other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))  # bound, not yet listening
        port = other.getsockname()[1]
        sock, _, joined = _claim(f"127.0.0.1:{port}", 16, join=False)
        with sock:
            assert not joined
            with pytest.raises(OSError) as caught:
                other.listen(16)
            assert caught.value.errno == errno.EADDRINUSE
