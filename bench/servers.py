"""How each server in the benchmark is launched, made ready, measured and stopped.

Every server serves an app from ``bench/apps.py`` (the one app module all peers
share). Peers that speak ASGI natively are served through their WSGI interface
(``uvicorn --interface wsgi``, ``granian --interface wsgi``) so that the same WSGI
callable answers everywhere; ``uvicorn-asgi`` is a reference row only: uvicorn on its
own ground, a native ASGI app (``bench.apps:hello_asgi``) returning the same bytes.

Each server runs in its own session (process group) so that stopping it stops its
children too (uvicorn/gunicorn workers, our supervisor's processes), and every
launch is paired with a stop in ``finally`` (``Launched`` is a context manager).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "NOFILE",
    "PEERS",
    "Launched",
    "ServerSpec",
    "floor_loop_path",
    "free_port",
    "launch",
    "make_certificate",
    "raise_nofile",
    "session_rss_kib",
]

REPO = Path(__file__).resolve().parent.parent
NOFILE = 20000  # the descriptor limit asked for servers and clients (the hard limit here)


def raise_nofile(want: int = NOFILE) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``want`` (capped by the hard limit); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerSpec:
    """One way of running one server.

    Attributes:
        name: the row label (``ours``, ``uvicorn``, ...).
        argv: builds the command line from ``(bin_dir, port, app, threads, processes,
            idle)``; ``idle`` asks for settings that keep 10k idle keep-alive
            connections (long keep-alive timeout, high connection limit).
        package: the distribution whose version the report names.
        note: how it is run, for the docs.
    """

    name: str
    argv: Callable[[Path, int, str, int, int, bool], list[str]]
    package: str
    note: str
    tls_args: Callable[[str, str], list[str]] | None = None  # (certfile, keyfile) -> argv


def _ours(b: Path, port: int, app: str, threads: int, procs: int, idle: bool) -> list[str]:
    argv = [str(b / "reactor"), "serve", f"bench.apps:{app}", "-b", f"127.0.0.1:{port}",
            "-w", str(threads), "-p", str(procs), "--log-level", "warning", "--no-access-log",
            "--backlog", "4096"]
    if idle:
        argv += ["--max-connections", "19000", "--keepalive-timeout", "600"]
    return argv


def _ours_noexpress(b: Path, port: int, app: str, threads: int, procs: int,
                    idle: bool) -> list[str]:
    return [*_ours(b, port, app, threads, procs, idle), "--no-express"]


def _uvicorn(b: Path, port: int, app: str, threads: int, procs: int, idle: bool) -> list[str]:
    argv = [str(b / "uvicorn"), f"bench.apps:{app}", "--interface", "wsgi", "--host",
            "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--log-level", "warning", "--no-access-log", "--backlog", "4096"]
    if procs > 1:
        argv += ["--workers", str(procs)]
    if idle:
        argv += ["--timeout-keep-alive", "600"]
    return argv


def _uvicorn_asgi(b: Path, port: int, app: str, threads: int, procs: int, idle: bool) -> list[str]:
    argv = _uvicorn(b, port, app if app.endswith("_asgi") else app + "_asgi", threads, procs, idle)
    argv[argv.index("--interface") + 1] = "asgi3"
    return argv


def _granian_asgi(b: Path, port: int, app: str, threads: int, procs: int, idle: bool) -> list[str]:
    return [str(b / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port",
            str(port), "--workers", str(procs), "--log-level", "warning",
            f"bench.apps:{app if app.endswith('_asgi') else app + '_asgi'}"]


def _waitress(b: Path, port: int, app: str, threads: int, procs: int, idle: bool) -> list[str]:
    return [str(b / "waitress-serve"), f"--listen=127.0.0.1:{port}", f"--threads={threads}",
            "--backlog=4096", f"bench.apps:{app}"]


def _gunicorn(b: Path, port: int, app: str, threads: int, procs: int, idle: bool) -> list[str]:
    return [str(b / "gunicorn"), "-k", "gthread", "--threads", str(threads), "-w", str(procs),
            "-b", f"127.0.0.1:{port}", "--log-level", "warning", "--backlog", "4096",
            f"bench.apps:{app}"]


def _granian(b: Path, port: int, app: str, threads: int, procs: int, idle: bool) -> list[str]:
    return [str(b / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port",
            str(port), "--workers", str(procs), "--blocking-threads", str(threads),
            "--log-level", "warning", "--no-ws", f"bench.apps:{app}"]


def _gunicorn_tls(cert: str, key: str) -> list[str]:
    return ["--certfile", cert, "--keyfile", key]


def _uvicorn_tls(cert: str, key: str) -> list[str]:
    return ["--ssl-certfile", cert, "--ssl-keyfile", key]


def _granian_tls(cert: str, key: str) -> list[str]:
    return ["--ssl-certificate", cert, "--ssl-keyfile", key]


def _floor_tls(cert: str, key: str) -> list[str]:
    return ["--certfile", cert, "--keyfile", key]


def floor_loop_path() -> Path:
    """``bench/floor.py``: the architecture's bare shape ($FLOOR_LOOP overrides)."""
    env = os.environ.get("FLOOR_LOOP")
    return Path(env) if env else REPO / "bench" / "floor.py"


def _floor(b: Path, port: int, app: str, threads: int, procs: int, idle: bool) -> list[str]:
    # The yardstick of issue 13: the architecture's bare shape (one worker, no timeouts,
    # limits or Date header). Threads, processes and idle settings do not apply.
    return [str(b / "python"), str(floor_loop_path()), "--port", str(port), "--app",
            f"bench.apps:{app}"]


PEERS: dict[str, ServerSpec] = {
    s.name: s
    for s in (
        ServerSpec("ours", _ours, "mioreactor", "reactor serve -w W [-p P]", _gunicorn_tls),
        # ours without the express lane: what the lane buys or costs, in the same run
        ServerSpec("ours-noexpress", _ours_noexpress, "mioreactor",
                   "reactor serve -w W --no-express"),
        # ours over plain HTTP in a TLS scenario: what TLS costs, in the same run
        ServerSpec("ours-plain", _ours, "mioreactor", "reactor serve -w W, without TLS"),
        ServerSpec("uvicorn", _uvicorn, "uvicorn",
                   "uvicorn --interface wsgi --loop uvloop --http httptools [--workers P]",
                   _uvicorn_tls),
        ServerSpec("uvicorn-asgi", _uvicorn_asgi, "uvicorn",
                   "reference: native ASGI hello (bench.apps:hello_asgi), uvloop + httptools",
                   _uvicorn_tls),
        ServerSpec("waitress", _waitress, "waitress", "waitress-serve --threads=W"),
        ServerSpec("gunicorn", _gunicorn, "gunicorn", "gunicorn -k gthread --threads W -w P",
                   _gunicorn_tls),
        ServerSpec("granian", _granian, "granian",
                   "granian --interface wsgi --workers P --blocking-threads W", _granian_tls),
        ServerSpec("granian-asgi", _granian_asgi, "granian",
                   "granian --interface asgi --workers P (the ASGI scenarios)", _granian_tls),
        ServerSpec("floor", _floor, "httptools",
                   "reference: bench/floor.py --port P --app bench.apps:APP",
                   _floor_tls),
    )
}


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (``openssl req``), for the
    TLS rows: ``(certfile, keyfile)``. wrk does not verify it.

    Raises:
        RuntimeError: openssl is not installed or failed.
    """
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    try:
        subprocess.run(argv, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"cannot make a test certificate with openssl: {exc}") from exc
    return cert, key


def _child_setup() -> None:
    raise_nofile()


def _http_ok(port: int, timeout: float = 1.0, tls: bool = False) -> bool:
    """One ``GET /`` with ``Connection: close`` (over TLS, unverified); True on a 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            s = raw
            if tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s = ctx.wrap_socket(raw)
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200")


@dataclass
class Launched:
    """A running server: its process (the session leader), port and log file."""

    spec: ServerSpec
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the whole session, then SIGKILL what is left after 5 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers (children) too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@contextlib.contextmanager
def launch(
    spec: ServerSpec,
    bin_dir: Path,
    *,
    app: str = "hello",
    threads: int = 4,
    processes: int = 1,
    idle: bool = False,
    ready_timeout: float = 30.0,
    env: dict[str, str] | None = None,
    tls: tuple[str, str] | None = None,
) -> Iterator[Launched]:
    """Start ``spec`` on a free port, wait until it answers ``GET /``, stop it on exit.

    With ``tls`` (``(certfile, keyfile)``) a spec that has ``tls_args`` serves HTTPS.

    Raises:
        RuntimeError: it exited or did not answer within ``ready_timeout``.
    """
    last_error: RuntimeError | None = None
    for _attempt in range(3):  # a port taken between free_port() and the bind: try another
        running = _start(spec, bin_dir, app, threads, processes, idle, env, tls)
        try:
            _wait_ready(running, ready_timeout)
        except RuntimeError as exc:
            last_error = exc
            running.stop()
            with contextlib.suppress(OSError):
                running.log_path.unlink()
            continue
        break
    else:
        assert last_error is not None
        raise last_error
    try:
        yield running
    finally:
        running.stop()
        with contextlib.suppress(OSError):
            running.log_path.unlink()


def _start(
    spec: ServerSpec,
    bin_dir: Path,
    app: str,
    threads: int,
    processes: int,
    idle: bool,
    env: dict[str, str] | None,
    tls: tuple[str, str] | None = None,
) -> Launched:
    port = free_port()
    argv = spec.argv(bin_dir, port, app, threads, processes, idle)
    if tls is not None and spec.tls_args is not None:
        argv += spec.tls_args(*tls)
    else:
        tls = None
    fd, log_name = tempfile.mkstemp(prefix=f"bench-{spec.name}-", suffix=".log")
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup,  # a setrlimit only
            env=full_env,
        )
    return Launched(spec, port, proc, Path(log_name), tls=tls is not None)


def _wait_ready(running: Launched, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _http_ok(running.port, tls=running.tls):
        if running.proc.poll() is not None:
            raise RuntimeError(
                f"{running.spec.name} exited with {running.proc.returncode}: {running.log_tail(3)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{running.spec.name} not ready in {timeout:.0f} s")
        time.sleep(0.1)


def session_rss_kib(session: int) -> int:
    """Summed VmRSS (KiB) of every process in ``session`` (a server and its children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != session:
                continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue
    return total
