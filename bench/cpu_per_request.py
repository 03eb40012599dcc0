"""CPU time a server spends per request under wrk: plain against TLS, ours against peers.

``python3 -m bench.cpu_per_request --servers ours,uvicorn-asgi --modes plain,tls``
(``--app hello_asgi --modes plain``: the ASGI hello against uvicorn's)
launches each server as ``make bench`` does (``.bench-venv``), warms it up, then runs
``perf stat -e task-clock -p PID`` around a wrk run and divides the CPU time of the
server's processes by the requests wrk completed (where ``perf`` cannot count, the
utime and stime of the server's process tree from ``/proc``, in 10 ms ticks). On a shared machine this moves
less than req/s: a neighbour slows the server down but does not make it do more
work per request. Needs ``perf`` and wrk.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time

from bench.run import VENV
from bench.servers import PEERS, launch, make_certificate
from bench.wrk import run_wrk


def _task_clock_ms(text: str) -> float:
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] == "task-clock":
            return float(parts[0])
    raise RuntimeError(f"perf stat gave no task-clock: {text[-300:]}")


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, from ``/proc``."""
    parent: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return total


def _perf_works() -> bool:
    try:
        out = subprocess.run(["perf", "stat", "-e", "task-clock", "-x", ",", "-p",
                              str(os.getpid()), "sleep", "0.2"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "<not counted>" not in out.stderr and out.returncode == 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--servers", default="ours,uvicorn-asgi")
    p.add_argument("--modes", default="plain,tls")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--app", default="hello",
                   help="the bench.apps app (hello_asgi: the ASGI hello of the asgi scenario)")
    args = p.parse_args(argv)
    bin_dir = VENV / "bin"
    use_perf = _perf_works()  # else (no permission, a container) /proc's CPU ticks
    with tempfile.TemporaryDirectory() as tmp:
        cert = make_certificate(tmp)
        for rnd in range(args.rounds):
            for name in args.servers.split(","):
                for mode in args.modes.split(","):
                    tls = cert if mode == "tls" else None
                    with launch(PEERS[name], bin_dir, app=args.app, threads=4, tls=tls) as srv:
                        run_wrk(srv.url, duration=1, latency=False)
                        if not use_perf:  # /proc: the whole process tree, 10 ms ticks
                            before = _tree_cpu(srv.proc.pid)
                            r = run_wrk(srv.url, duration=args.duration, latency=False)
                            used = _tree_cpu(srv.proc.pid) - before
                            us = used * 1e6 / max(r.requests, 1)
                            print(f"round {rnd + 1} {name:13} {mode:5} {r.rps:9,.0f} req/s  "
                                  f"{us:6.1f} us CPU per request (/proc)", flush=True)
                            continue
                        perf = subprocess.Popen(
                            ["perf", "stat", "-e", "task-clock", "-x", ",", "-p",
                             str(srv.proc.pid)], stderr=subprocess.PIPE, text=True)
                        time.sleep(0.3)
                        r = run_wrk(srv.url, duration=args.duration, latency=False)
                        perf.send_signal(signal.SIGINT)
                        _, err = perf.communicate(timeout=30)
                        us = _task_clock_ms(err) * 1000.0 / max(r.requests, 1)
                        print(f"round {rnd + 1} {name:13} {mode:5} {r.rps:9,.0f} req/s  "
                              f"{us:6.1f} us CPU per request", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
