"""``reactor bench`` against wrk on the same server, with the server's own count as referee.

A server in this process (one worker, the 13-byte hello) counts every request its app
answers. Rounds alternate wrk and ``reactor bench`` (same connections and duration);
for each run this prints what the tool reported (requests, responses, rate) beside
what the server counted during it. A tool that over-counts shows more responses than
the server answered; one that is starved (by its neighbour on a 2-core machine) shows
a lower rate with exact counts.

    .venv/bin/python bench/loadgen_vs_wrk.py [--rounds 3] [--seconds 2] [-c 50]

The test suite checks the counts (tests/test_loadgen.py,
``test_a_timed_run_reports_what_the_server_answered``), never the rates.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mioreactor.workers import Server  # noqa: E402

from bench.wrk import parse_wrk  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("-c", "--connections", type=int, default=50)
    a = ap.parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed", file=sys.stderr)
        return 1
    counter = itertools.count()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        next(counter)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, world!"]

    reactor = str(Path(sys.executable).parent / "reactor")
    rates: dict[str, list[float]] = {"wrk": [], "reactor bench": []}
    with Server(app, bind="127.0.0.1:0", workers=1) as server:
        url = f"http://127.0.0.1:{server.address[1]}/"

        def counted() -> int:
            time.sleep(0.2)  # in-flight requests land
            return next(counter)

        for rnd in range(a.rounds):
            before = counted()
            out = subprocess.run([wrk, "-t1", f"-c{a.connections}", f"-d{a.seconds}s", url],
                                 capture_output=True, text=True, timeout=a.seconds + 30,
                                 check=True).stdout
            served = counted() - before - 1
            w = parse_wrk(out)
            rates["wrk"].append(w.rps)
            print(f"round {rnd + 1} wrk           reported {w.requests:8d} responses "
                  f"{w.rps:9,.0f}/s   server answered {served:8d}")
            before = counted()
            out = subprocess.run([reactor, "bench", url, "-c", str(a.connections), "-d",
                                  str(a.seconds), "--json"], capture_output=True, text=True,
                                 timeout=a.seconds + 30, check=False).stdout
            served = counted() - before - 1
            r = json.loads(out)
            rates["reactor bench"].append(r["throughput_rps"])
            print(f"round {rnd + 1} reactor bench reported {r['responses']:8d} responses "
                  f"{r['throughput_rps']:9,.0f}/s   server answered {served:8d} "
                  f"(requests sent {r['requests']})")
    ratio = statistics.median(rates["reactor bench"]) / statistics.median(rates["wrk"])
    print(f"median rate, reactor bench / wrk: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
