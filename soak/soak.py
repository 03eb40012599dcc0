"""Soak: hours of production in minutes. Mixed load with faults; resources must stay flat.

``make soak`` (``SOAK_SECONDS``, 180 by default) runs a server in a child process and,
from this one, a steady mixed load (``tests/reliability/loadclient.py``): keep-alive
and close clients, small and streamed and buffered responses, and injected faults:
clients that reset mid-request, idle connections that send nothing (closed by the
header timeout), and slow readers that never drain a large response (aborted by
the send timeout). Every second it samples the child's RSS, descriptor count and
thread count from ``/proc``.

Pass criteria (exit status 1 otherwise):

* 0 lost requests and 0 non-2xx responses;
* after the warm-up (the first 15% of the run), each series is flat: the maximum of
  the last third is at most the first third's maximum x 1.1 plus a small constant
  (RSS 4 MiB, descriptors 8, threads 2);
* the server's own counters agree: accepted == closed + active, no handler errors.

Output: ``docs/soak/soak.csv`` (the series), ``docs/img/soak.svg`` (a plot) and the
block between ``<!-- soak:begin -->`` and ``<!-- soak:end -->`` in
``docs/reliability.md`` (the figures of this run).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.loadclient import LoadClient, summary  # noqa: E402

CHILD = r"""
import json, sys
from tests.reliability.support import AppProbe, make_app
from mioreactor.workers.http import HttpConfig
from mioreactor.workers.server.server import Server

inner = make_app(AppProbe(record=False))  # a recording probe would grow by design

def app(environ, start_response):
    if environ["PATH_INFO"] == "/stats":
        body = json.dumps(server.stats()).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return inner(environ, start_response)

server = Server(app, bind="127.0.0.1:0", workers=4, graceful_timeout=5,
                http=HttpConfig(keepalive_timeout=2, header_timeout=1, send_timeout=1, body_timeout=2))
server.start()
print(json.dumps({"port": server.address[1]}), flush=True)
server.serve_forever()
"""

REQUESTS = [
    (20, b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"),
    (5, b"GET /env?x=1 HTTP/1.1\r\nHost: soak\r\n\r\n"),
    (2, b"GET /big?262144 HTTP/1.1\r\nHost: soak\r\n\r\n"),
    (2, b"GET /blob?131072 HTTP/1.1\r\nHost: soak\r\n\r\n"),
]
SLACK = {"rss_kib": 4096, "fds": 8, "threads": 2}


def proc_sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def get_stats(port: int) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    return json.loads(raw.partition(b"\r\n\r\n")[2])  # type: ignore[no-any-return]


class Faults:
    """Idle connectors and slow readers, a few every second."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts = {"idle": 0, "slow_reader": 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        held: list[tuple[float, socket.socket]] = []
        while not self.stop.wait(1.0):
            now = time.monotonic()
            try:
                for _ in range(3):
                    held.append((now, socket.create_connection(("127.0.0.1", self.port), timeout=5)))
                    self.counts["idle"] += 1
                slow = socket.socket()
                slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                slow.connect(("127.0.0.1", self.port))
                slow.sendall(b"GET /big?67108864 HTTP/1.1\r\nHost: soak\r\n\r\n")
                held.append((now, slow))
                self.counts["slow_reader"] += 1
            except OSError:
                pass
            # Let go of ours after 5 s (the server should have dropped them long before).
            keep = []
            for t, sock in held:
                if now - t > 5:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                else:
                    keep.append((t, sock))
            held = keep
        for _, sock in held:
            sock.close()


def flat(series: list[int], slack: int) -> tuple[bool, int, int]:
    third = max(1, len(series) // 3)
    first, last = max(series[:third]), max(series[-third:])
    return last <= first * 1.1 + slack, first, last


def svg_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Three small line charts (RSS, descriptors, threads) over time, one SVG."""
    w, h, pad = 640, 110, 30
    metrics = [("rss_kib", "RSS (MiB)", 1 / 1024), ("fds", "descriptors", 1), ("threads", "threads", 1)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h * 3 + 20}" '
             'font-family="sans-serif" font-size="11">']
    t_max = max(r["t"] for r in rows) or 1
    for i, (key, label, scale) in enumerate(metrics):
        y0 = i * h + 10
        values = [r[key] * scale for r in rows]
        lo, hi = 0.0, max(values) * 1.15 or 1
        pts = " ".join(
            f"{pad + (r['t'] / t_max) * (w - 2 * pad):.1f},{y0 + h - 20 - (v - lo) / (hi - lo) * (h - 30):.1f}"
            for r, v in zip(rows, values, strict=True)
        )
        parts.append(f'<rect x="{pad}" y="{y0}" width="{w - 2 * pad}" height="{h - 20}" fill="none" stroke="#ccc"/>')
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#1f6feb" stroke-width="1.5"/>')
        parts.append(f'<text x="{pad + 4}" y="{y0 + 12}">{label}: max {max(values):.1f}, '
                     f'last {values[-1]:.1f}</text>')
        parts.append(f'<text x="{w - pad}" y="{y0 + h - 8}" text-anchor="end">{t_max:.0f} s</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def spark(values: list[float], width: int = 60) -> str:
    bars = "▁▂▃▄▅▆▇█"
    step = max(1, len(values) // width)
    picked = [max(values[i : i + step]) for i in range(0, len(values), step)]
    lo, hi = min(picked), max(picked)
    return "".join(bars[int((v - lo) / (hi - lo) * 7) if hi > lo else 0] for v in picked)


def write_docs(report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    doc = ROOT / "docs" / "reliability.md"
    if not doc.exists():
        return
    text = doc.read_text()
    begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
    if begin not in text or end not in text:
        return
    c = report["load"]
    lines = [
        begin,
        f"Last run: {report['date']}, {report['seconds']} s on {report['host']} "
        f"(Python {report['python']}); result: **{'PASS' if report['ok'] else 'FAIL'}**.",
        "",
        "| | |",
        "|---|---|",
        f"| load held | {report['requests']} complete responses, {report['rps']:.0f} req/s mean, "
        f"8 clients (4 keep-alive, 4 close) |",
        f"| faults injected | {c['injected']} client resets mid-request, {report['faults']['idle']} idle "
        f"connections, {report['faults']['slow_reader']} slow readers |",
        f"| requests lost | **{c['lost']}** (non-2xx: {c['non_2xx']}; keep-alive retries: {c['retried']}) |",
        f"| server counters | accepted {report['server']['accepted']}, closed {report['server']['closed']}, "
        f"active {report['server']['active']}, handler errors {report['server']['handler_errors']} |",
    ]
    for key, label in (("rss_kib", "RSS KiB"), ("fds", "descriptors"), ("threads", "threads")):
        f = report["flat"][key]
        lines.append(f"| {label} (after warm-up) | first third max {f['first']}, last third max {f['last']}: "
                     f"{'flat' if f['ok'] else 'GROWING'} |")
    lines += [
        "",
        "```",
        *(
            f"{label:8s}{spark([r[key] for r in rows])}  {min(r[key] for r in rows)}..{max(r[key] for r in rows)}"
            for key, label in (("rss_kib", "RSS KiB"), ("fds", "fds"), ("threads", "threads"))
        ),
        "```",
        "",
        "![RSS, descriptors and threads over the run](img/soak.svg)",
        "",
        "Series: [docs/soak/soak.csv](soak/soak.csv).",
        end,
    ]
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    doc.write_text(head + "\n".join(lines) + tail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", "180")))
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/ with this run")
    args = parser.parse_args()
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    port = json.loads(child.stdout.readline())["port"]
    print(f"soak: server pid {child.pid} on 127.0.0.1:{port} for {args.seconds} s", flush=True)
    load = LoadClient(("127.0.0.1", port), clients=8, keepalive_share=0.5, requests=REQUESTS, reset_share=0.03)
    faults = Faults(port)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    load.start()
    faults.thread.start()
    try:
        while (t := time.monotonic() - started) < args.seconds:
            sample = proc_sample(child.pid)
            totals = load.totals()
            rows.append({"t": round(t, 1), **sample, "ok": totals["ok"], "lost": totals["lost"]})
            if len(rows) % 15 == 0:
                print(f"  t={t:5.0f}s rss={sample['rss_kib']} KiB fds={sample['fds']} "
                      f"threads={sample['threads']} | {summary(totals)}", flush=True)
            time.sleep(max(0.0, len(rows) - (time.monotonic() - started)))
    finally:
        faults.stop.set()
        totals = load.stop()
        faults.thread.join(10)
    time.sleep(3)  # let the header/keep-alive timers close what the clients left
    stats = get_stats(port)
    child.send_signal(signal.SIGTERM)
    code = child.wait(30)
    warm = max(1, len(rows) * 15 // 100)
    steady = rows[warm:]
    report_flat = {}
    for key, slack in SLACK.items():
        ok, first, last = flat([r[key] for r in steady], slack)
        report_flat[key] = {"ok": ok, "first": first, "last": last}
    handler_errors = sum(w["handler_errors"] for w in stats["workers"])
    ok = (
        totals["lost"] == 0
        and totals["non_2xx"] == 0
        and all(f["ok"] for f in report_flat.values())
        and stats["accepted"] == stats["closed"] + stats["active"]
        and handler_errors == 0
        and code == 0
    )
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": args.seconds,
        "host": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "requests": totals["ok"],
        "rps": totals["ok"] / args.seconds,
        "load": totals,
        "faults": faults.counts,
        "flat": report_flat,
        "server": {k: stats[k] for k in ("accepted", "closed", "active")} | {"handler_errors": handler_errors},
        "exit_code": code,
        "ok": ok,
        "lost_details": load.lost_details[:10],
    }
    print(json.dumps(report, indent=2))
    if not args.no_docs:
        out = ROOT / "docs" / "soak"
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "soak.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        svg_plot(rows, ROOT / "docs" / "img" / "soak.svg")
        write_docs(report, rows)
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
