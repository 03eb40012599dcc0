"""``reactor top`` in a real terminal: a tmux pane (send-keys, capture-pane) watching a real
server. The numbers on screen must be the server's; ``q`` and Ctrl-C must end the process
and give the terminal back as it was."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cli.proc import REACTOR, ServeProcess, get_json, http_request, tcp_address

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("tmux") is None,
                       reason="tmux is not installed (.ci/run installs it)"),
]


class Pane:
    """One detached tmux session on a private server socket (-L), 120x40."""

    def __init__(self, command: str) -> None:
        self.socket = f"reactor-test-{uuid.uuid4().hex[:10]}"
        self.tmux("new-session", "-d", "-x", "120", "-y", "40", "-s", "top", command)
        self.pid = int(self.tmux("display-message", "-p", "-t", "top", "#{pane_pid}").strip())

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"tmux {args[0]}: {done.stderr.strip()}")
        return done.stdout

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def alive(self) -> bool:
        try:
            self.tmux("has-session", "-t", "top")
        except RuntimeError:
            return False
        return True

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def wait_text(self, check: Callable[[str], Any], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the pane never showed what was expected:\n{text}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def panes() -> Iterator[list[Pane]]:
    made: list[Pane] = []
    try:
        yield made
    finally:
        for pane in made:
            pane.close()


def figure(text: str, pattern: str) -> int | None:
    m = re.search(pattern, text)
    return int(m.group(1).replace(",", "")) if m else None


def gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped by its new parent counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def top_command(url: str, *after: str) -> str:
    return shlex.join([*REACTOR, "top", url, "--interval", "0.3"]) + "".join(after)


def test_top_shows_the_servers_numbers_and_q_ends_it(panes: list[Pane]) -> None:
    with ServeProcess(["-b", "127.0.0.1:0", "-w", "3", "--metrics-bind", "127.0.0.1:0"]) as server:
        (where,) = server.wait_serving()
        url = server.wait_for(r"metrics on (\S+)").group(1)
        address = tcp_address(where)
        sent = 23
        for _ in range(sent):
            assert http_request(address, "/")[0] == 200
        snapshot = get_json(address, "/stats")  # the 24th request: its snapshot counts it
        stats, pid = snapshot["server"], snapshot["pid"]
        assert stats["accepted"] == sent + 1
        pane = Pane(top_command(url))
        panes.append(pane)
        text = pane.wait_text(lambda t: figure(t, r"closed\s+([\d,]+)") == sent + 1)
        assert figure(text, r"accepted\s+([\d,]+)") == stats["accepted"]
        # Every response, the /stats one included (counted once it was sent).
        assert figure(text, r"requests\s+total\s+([\d,]+)") == sum(stats["requests"].values()) + 1
        assert figure(text, r"active\s+([\d,]+)") == 0
        assert figure(text, r"processes (\d+)") == 1
        rows = [line.split() for line in text.splitlines() if "reactor-worker-" in line]
        assert sorted(r[1] for r in rows) == sorted(w["name"] for w in stats["workers"])
        assert {r[0] for r in rows} == {str(pid)}
        assert "q quits" in text and "UNREACHABLE" not in text
        # Six more requests show up on the next refresh.
        for _ in range(6):
            assert http_request(address, "/")[0] == 200
        pane.wait_text(lambda t: figure(t, r"accepted\s+([\d,]+)") == sent + 7)
        pane.keys("q")
        deadline = time.monotonic() + 10
        while pane.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pane.alive(), "q did not end reactor top"
        while not gone(pane.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(pane.pid)


def test_top_survives_the_server_going_away_and_ctrl_c_restores_the_terminal(
    panes: list[Pane],
) -> None:
    server = ServeProcess(["-b", "127.0.0.1:0", "-p", "2", "-w", "2",
                           "--metrics-bind", "127.0.0.1:0"])
    try:
        (where,) = server.wait_serving()
        url = server.wait_for(r"metrics on (\S+)").group(1)
        for _ in range(9):
            assert http_request(tcp_address(where), "/")[0] == 200
        # After top ends, the shell prints its status and the terminal settings (its
        # trap keeps it alive through the Ctrl-C; a trap is reset for the command).
        script = "trap true INT; " + top_command(url, "; echo TOP-EXIT=$?; stty -a; sleep 60")
        pane = Pane("sh -c " + shlex.quote(script))
        panes.append(pane)
        text = pane.wait_text(lambda t: figure(t, r"accepted\s+([\d,]+)") == 9)
        assert figure(text, r"processes (\d+)") == 2
        assert len({line.split()[0] for line in text.splitlines() if "reactor-worker-" in line}) == 2
        server.close()
        text = pane.wait_text(lambda t: "UNREACHABLE" in t)
        assert figure(text, r"accepted\s+([\d,]+)") == 9, "the last figures stay on screen"
        time.sleep(0.7)
        assert "UNREACHABLE" in pane.text(), "it keeps trying"
        pane.keys("C-c")
        text = pane.wait_text(lambda t: "TOP-EXIT=" in t)
        assert "TOP-EXIT=0" in text
        flags = set(text.split())
        assert "icanon" in flags and "echo" in flags, "cbreak mode was not undone"
        assert "-icanon" not in flags and "-echo" not in flags
        assert "reactor top" not in text, "the alternate screen was not left"
    finally:
        server.close()


def test_top_into_a_pipe_writes_plain_frames_until_ctrl_c() -> None:
    """No terminal at all (stdout a pipe, stdin /dev/null): plain frames, one per scrape;
    SIGINT ends it with status 0."""
    with ServeProcess(["-b", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"]) as server:
        server.wait_serving()
        url = server.wait_for(r"metrics on (\S+)").group(1)
        proc = subprocess.Popen([*REACTOR, "top", url, "--interval", "0.2"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "\x1b" not in out
    frames = out.split("reactor top  ")[1:]
    assert len(frames) >= 3, out  # 1.5 s at 0.2 s a scrape
    assert all("processes 1" in f and "reactor-worker-0" in f for f in frames), out
