"""Interleaved wrk rounds against any set of server commands: for A/B decisions.

Each server is a ``NAME=COMMAND`` where COMMAND is a shell command with ``{port}`` in
it; named presets save typing (``ours``, ``floor``, ``floor-rules``, ``uvicorn-asgi``,
``granian``, ``uvicorn``, ``gunicorn``). All servers run at once, each in its own session; a round
runs wrk once against each, in an order rotated every round, so a noisy neighbour
hits every server alike. Printed: the median req/s and p99 per server, and each
server's ratio to the first one (median of the per-round ratios, and the range).

    .venv/bin/python -m bench.ab ours floor uvicorn-asgi --rounds 5
    .venv/bin/python -m bench.ab 'old=cd /tmp/old && .venv/bin/reactor serve bench.apps:hello \\
        -b 127.0.0.1:{port}' ours --rounds 5
    .venv/bin/python -m bench.ab ours floor --close      # Connection: close

Peers come from ``.bench-venv`` (``python3 -m bench.run`` makes it); the floor loop
from ``bench/floor.py`` (``FLOOR_LOOP`` overrides the path).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from bench.servers import REPO, _http_ok, floor_loop_path, free_port, raise_nofile
from bench.wrk import WrkResult, run_wrk

__all__ = ["PRESETS", "floor_loop_path", "main"]

# Quoted: the presets are shell commands, and the checkout's path may hold spaces.
_VENV = shlex.quote(str(REPO / ".venv" / "bin"))
_PEERS = shlex.quote(str(REPO / ".bench-venv" / "bin"))


PRESETS: dict[str, str] = {
    "ours": f"{_VENV}/reactor serve bench.apps:hello -b 127.0.0.1:{{port}} --log-level warning "
    "--no-access-log --backlog 4096",
    "floor": f"{_VENV}/python {shlex.quote(str(floor_loop_path()))} --port {{port}} "
    "--app bench.apps:hello",
    # the floor with what no server may drop: Date, Server, an idle deadline
    "floor-rules": f"{_VENV}/python {shlex.quote(str(floor_loop_path()))} --port {{port}} "
    "--app bench.apps:hello --rules",
    "uvicorn-asgi": f"{_PEERS}/uvicorn bench.apps:hello_asgi --interface asgi3 --host 127.0.0.1 "
    "--port {port} --loop uvloop --http httptools --log-level warning --no-access-log "
    "--backlog 4096",
    "uvicorn": f"{_PEERS}/uvicorn bench.apps:hello --interface wsgi --host 127.0.0.1 "
    "--port {port} --loop uvloop --http httptools --log-level warning --no-access-log",
    "granian": f"{_PEERS}/granian --interface wsgi --host 127.0.0.1 --port {{port}} --workers 1 "
    "--blocking-threads 4 --log-level warning --no-ws bench.apps:hello",
    "gunicorn": f"{_PEERS}/gunicorn -k gthread --threads 4 -w 1 -b 127.0.0.1:{{port}} "
    "--log-level warning bench.apps:hello",
}


@contextlib.contextmanager
def _serve(name: str, command: str) -> Iterator[int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        command.format(port=port), shell=True, cwd=REPO, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, preexec_fn=raise_nofile,
    )
    try:
        deadline = time.monotonic() + 30
        while not _http_ok(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {command}")
            time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("servers", nargs="+", help="NAME=COMMAND (with {port}) or a preset name")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--connections", "-c", type=int, default=50)
    ap.add_argument("--close", action="store_true", help="Connection: close per request")
    a = ap.parse_args(argv)
    specs: list[tuple[str, str]] = []
    for s in a.servers:
        name, eq, cmd = s.partition("=")
        specs.append((name, cmd) if eq else (name, PRESETS[name]))
    headers = ("Connection: close",) if a.close else ()
    results: dict[str, list[WrkResult]] = {name: [] for name, _ in specs}
    with contextlib.ExitStack() as stack:
        ports = {name: stack.enter_context(_serve(name, cmd)) for name, cmd in specs}
        for port in ports.values():  # warm up
            run_wrk(f"http://127.0.0.1:{port}/", connections=a.connections, duration=1,
                    headers=headers, latency=False)
        names = [n for n, _ in specs]
        for rnd in range(a.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for name in order:
                r = run_wrk(f"http://127.0.0.1:{ports[name]}/", connections=a.connections,
                            duration=a.duration, headers=headers)
                results[name].append(r)
                print(f"round {rnd + 1} {name:14s} {r.rps:10,.0f} req/s  p99 {r.p99} ms"
                      f"{'  errors ' + str(r.errors) if r.errors else ''}", file=sys.stderr)
    first = specs[0][0]
    print(f"{'server':14s} {'req/s':>10s} {'p99 ms':>7s}  {first}/it (range)")
    for name, _ in specs:
        rs = results[name]
        med = statistics.median(r.rps for r in rs)
        p99 = statistics.median(r.p99 or 0.0 for r in rs)
        ratios = [x.rps / y.rps for x, y in zip(results[first], rs, strict=True)]
        print(f"{name:14s} {med:10,.0f} {p99:7.2f}  {statistics.median(ratios):.3f} "
              f"({min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
