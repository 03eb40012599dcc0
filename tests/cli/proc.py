"""Run ``reactor serve`` as a real subprocess and read what it logs.

``ServeProcess`` starts the console script, collects stderr lines on a thread, and
parses the ``listening on ...`` lines the command logs at start; every wait is
bounded, and ``close()`` (called from a ``finally`` or the fixture) always kills
what is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("reactor")
REACTOR: list[str] = (
    [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mioreactor"]
)
LISTENING = re.compile(r"listening on (\S.*?)\s*$")  # to the end: a path may hold spaces
SERVING = re.compile(r"mioreactor \S+ serving ")


class ServeProcess:
    """``reactor serve ARGS`` in a subprocess.

    Args:
        args: arguments after ``serve``.
        env: extra environment variables.
        pass_fds: descriptors the server inherits.
        prefix: a command that runs the server (e.g. a ``sh -c`` wrapper).
        cwd: the working directory (default: the repository root).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        prefix: Sequence[str] = (),
        cwd: Path | str | None = None,
    ) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("REACTOR_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*prefix, *REACTOR, "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=ROOT if cwd is None else cwd,
            pass_fds=tuple(pass_fds),
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        """The first log line from index ``start`` matching ``pattern``; fails after ``timeout``."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no log line matched {rx.pattern!r} (exit {self.proc.poll()}):\n{self.output}"
                    )
                self._cond.wait(min(left, 0.1))

    def wait_serving(self, timeout: float = 20.0) -> list[str]:
        """Wait for the start-up summary; return every ``listening on`` address."""
        self.wait_for(SERVING, timeout)
        with self._cond:
            return [m.group(1) for m in map(LISTENING.search, self.lines) if m]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL of its process group's leftovers)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tcp_address(where: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` / ``"[::1]:8080"`` to ``(host, port)``."""
    host, _, port = where.rpartition(":")
    return host.strip("[]"), int(port)


def http_request(
    address: tuple[str, int] | str, path: str = "/", timeout: float = 5.0, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (TCP or, for a str, a Unix socket); close after."""
    family = socket.AF_UNIX if isinstance(address, str) else (
        socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    )
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def get_json(address: tuple[str, int] | str, path: str) -> Any:
    status, _, body = http_request(address, path)
    assert status == 200, (status, body)
    return json.loads(body)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
