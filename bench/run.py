"""``make bench``: mioreactor against its peers, interleaved, medians, ratios, docs.

What it does, start to finish (a fresh clone needs only python3 and network for pip):

1. Makes the peers' venv ``.bench-venv`` (``python3 -m venv``) and installs into it
   ``uvicorn[standard]``, ``waitress``, ``gunicorn``, ``granian`` and ``a2wsgi``, one at a
   time so that a peer that does not install is skipped with its reason, plus
   ``-e .`` (mioreactor itself). ``wrk`` comes from the OS (``apt-get install -y wrk``
   when missing and root; otherwise the wrk rows are skipped with a reason).
2. For each scenario, starts every server of the scenario (each on its own port,
   each serving ``bench/apps.py``), warms each up, then measures them round by round,
   rotating the order each round, so that a noisy neighbour on a shared machine hits
   every server alike. Figures are medians over rounds.
3. Prints the table (server, req/s, p50, p99, ours/peer) and the issue-6 targets, and
   appends a dated results block to ``docs/performance.md`` (``--no-docs`` to skip).

Every server is stopped in ``finally``; every wrk and client run has a time bound;
and the whole run stops starting new scenarios after ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.report import (
    Row,
    Sample,
    bounds,
    check_targets,
    format_checks,
    format_memory,
    format_table,
    machine_info,
    results_markdown,
    rows_from_samples,
)
from bench.servers import (
    PEERS,
    REPO,
    Launched,
    ServerSpec,
    launch,
    make_certificate,
    raise_nofile,
    session_rss_kib,
)
from bench.wrk import WrkResult, run_wrk, wrk_path

__all__ = ["SCENARIOS", "Scenario", "main"]

VENV = REPO / ".bench-venv"
DOCS = REPO / "docs" / "performance.md"
#: pip requirement -> the executable that proves it installed (None: a library)
PEER_PACKAGES: list[tuple[str, str | None]] = [
    ("uvicorn[standard]", "uvicorn"),
    ("waitress", "waitress-serve"),
    ("gunicorn", "gunicorn"),
    ("granian", "granian"),
    ("a2wsgi", None),
    ("fastapi", None),  # the fastapi scenario's app (bench.apps.fastapi_json_asgi)
]
SERVER_EXE = {
    "ours": "reactor",
    "uvicorn": "uvicorn",
    "uvicorn-asgi": "uvicorn",
    "waitress": "waitress-serve",
    "gunicorn": "gunicorn",
    "granian": "granian",
    "granian-asgi": "granian",
    "floor": "python",
}
HELLO_PEERS = ("ours", "uvicorn", "uvicorn-asgi", "waitress", "gunicorn", "granian", "floor")
#: What Chrome offers in ``Sec-WebSocket-Extensions`` (Firefox: ``permessage-deflate``).
BROWSER_DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


@dataclass(frozen=True)
class Scenario:
    """One row group of the table.

    Attributes:
        key: short name (``keepalive``); ``title`` is what the table shows.
        servers: the servers measured, ``ours`` first.
        app: the callable in ``bench/apps.py``.
        threads: worker threads for every server (ours ``-w``, peers' thread pools).
        processes: server processes.
        script: a wrk Lua script (relative to the repo).
        driver: ``wrk``, ``loadgen`` (``reactor bench``), ``idle`` (10k idle + wrk),
            ``ws`` (``reactor bench ws://``: WebSocket echo, messages per second) or
            ``ws-idle`` (10k idle WebSockets, ``bench/idle.py --ws``: RSS only).
        headers: extra request headers for wrk (``ws-idle``: for the handshake).
        tls: serve HTTPS (a self-signed ECDSA P-256 certificate made for the run;
            ``ours-plain`` stays plain, to show what TLS costs in the same run).
        connections: wrk's ``-c``.
        default: run when ``--scenarios`` is not given (the ``ws-idle`` ones take
            about 6 minutes each and are asked for by name).
    """

    key: str
    title: str
    servers: tuple[str, ...]
    app: str = "hello"
    threads: int = 4
    processes: int = 1
    headers: tuple[str, ...] = ()
    script: str | None = None
    driver: str = "wrk"
    tls: bool = False
    connections: int = 50
    default: bool = True


SCENARIOS: list[Scenario] = [
    Scenario("keepalive", "keep-alive hello", HELLO_PEERS),
    # The floor loop closes a connection whose request asks for it: a row of the
    # close scenario too, the bound of its targets.
    # TechEmpower's plaintext (16 requests per write, 256 connections) and json tests
    # (issue 23): where Python servers are compared in public.
    Scenario("pipelined", "hello, 16 pipelined per write, c256",
             ("ours", "ours-noexpress", "uvicorn-asgi", "granian"),
             script="bench/pipeline.lua", connections=256),
    Scenario("json", "JSON (json.dumps per request), keep-alive",
             ("ours", "uvicorn-asgi", "granian", "floor"), app="json"),
    Scenario("close", "Connection: close hello", HELLO_PEERS, headers=("Connection: close",)),
    Scenario("close-loadgen", "close hello (reactor bench)", ("ours", "uvicorn", "uvicorn-asgi"),
             driver="loadgen"),
    Scenario("mixed", "mixed 10% x 20 ms, 8 threads", ("ours", "waitress", "gunicorn"),
             app="mixed", threads=8, script="bench/mixed.lua"),
    Scenario("procs2", "2 processes, keep-alive", ("ours", "uvicorn", "uvicorn-asgi", "gunicorn"),
             processes=2),
    Scenario("idle", "50 active beside 10k idle", ("ours", "uvicorn"), driver="idle"),
    # ASGI (issue 21): ours serves the app natively, as uvicorn and granian do.
    # The floor serves an ``_asgi`` app as ASGI (a task per request, bench/floor.py).
    Scenario("asgi", "ASGI keep-alive hello", ("ours", "uvicorn-asgi", "granian-asgi", "floor"),
             app="hello_asgi"),
    Scenario("websocket", "WebSocket echo, 50 clients, 32 B (msg/s)",
             ("ours", "uvicorn-asgi", "granian-asgi"), app="ws_echo_asgi", driver="ws"),
    # Issue 21's memory target: RSS per idle WebSocket, 10k held open, no offer of
    # permessage-deflate and then the offer Chrome makes (browsers offer it).
    Scenario("ws-idle", "10k idle WebSockets", ("ours", "uvicorn-asgi"), app="ws_echo_asgi",
             driver="ws-idle", default=False),
    Scenario("ws-idle-deflate", "10k idle WebSockets, permessage-deflate offered",
             ("ours", "uvicorn-asgi"), app="ws_echo_asgi", driver="ws-idle",
             headers=(f"Sec-WebSocket-Extensions: {BROWSER_DEFLATE_OFFER}",), default=False),
    Scenario("fastapi", "FastAPI JSON endpoint, keep-alive",
             ("ours", "uvicorn-asgi", "granian-asgi", "floor"), app="fastapi_json_asgi"),
    Scenario("tls", "TLS keep-alive hello (https)",
             ("ours", "ours-plain", "uvicorn-asgi", "uvicorn", "granian", "floor"), tls=True),
]


def tls_cost(rows: list[Row]) -> list[str]:
    """What TLS costs ours per request: the medians of ``ours`` (TLS) and ``ours-plain``
    in the same interleaved run, as microseconds per request at full load."""
    by = {(r.scenario, r.server): r for r in rows}
    out = []
    for r in rows:
        plain = by.get((r.scenario, "ours-plain"))
        if r.server != "ours" or plain is None or not r.rps or not plain.rps:
            continue
        extra_us = (1.0 / r.rps - 1.0 / plain.rps) * 1e6
        out.append(f"{r.scenario}: TLS costs ours {extra_us:.1f} us per request "
                   f"({r.rps:,.0f} req/s over TLS vs {plain.rps:,.0f} plain, "
                   f"{r.rps / plain.rps:.2f}x, medians of the same interleaved run)")
    return out


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)


# -- setup -------------------------------------------------------------------------------

def ensure_venv(venv: Path) -> tuple[Path, dict[str, str]]:
    """Create and fill the peers' venv; return its bin dir and skip reasons by server."""
    bin_dir = venv / "bin"
    stamp = venv / ".bench-installed"
    pyproject = REPO / "pyproject.toml"
    packages = [r for r, _ in PEER_PACKAGES]
    fresh = not stamp.exists() or stamp.stat().st_mtime < pyproject.stat().st_mtime
    if not fresh:  # a package added to PEER_PACKAGES since: install again
        with contextlib.suppress(ValueError, OSError):
            fresh = json.loads(stamp.read_text()).get("packages") != packages
    failures: dict[str, str] = {}
    if fresh:
        if not (bin_dir / "python").exists():
            log(f"creating {venv}")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        for req in [*(r for r, _ in PEER_PACKAGES), "py-spy", "-e ."]:
            log(f"pip install {req}")
            args = ["-e", str(REPO)] if req == "-e ." else [req]
            try:
                proc = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                failures[req] = "pip install timed out"
                continue
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                failures[req] = f"pip install failed: {last}"
        stamp.write_text(json.dumps({"failures": failures, "packages": packages}))
    else:
        with contextlib.suppress(ValueError, OSError):
            failures = json.loads(stamp.read_text())["failures"]
    skipped: dict[str, str] = {}
    for server, exe in SERVER_EXE.items():
        if not (bin_dir / exe).exists():
            req = next((r for r, e in PEER_PACKAGES if e == exe), "-e .")
            skipped[server] = failures.get(req, f"{exe} is not installed in {venv}")
    return bin_dir, skipped


def ensure_wrk() -> str | None:
    """wrk's path, installing it from the OS packages when missing and root; else None."""
    path = wrk_path()
    if path is not None:
        return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    log("installing wrk (apt-get install -y wrk)")
    for argv in (["apt-get", "install", "-y", "wrk"], ["apt-get", "update"],
                 ["apt-get", "install", "-y", "wrk"]):
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(argv, capture_output=True, timeout=300, check=False)
        if wrk_path() is not None:
            break
    return wrk_path()


def versions(bin_dir: Path) -> dict[str, str]:
    """Installed versions of the servers, the parser, uvloop, and wrk."""
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for p in ('mioreactor','uvicorn','uvloop','httptools','websockets','waitress',\n"
        "          'gunicorn','granian'):\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        proc = subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True,
                              text=True, timeout=60, check=True)
        found: dict[str, str] = json.loads(proc.stdout)
    except (subprocess.SubprocessError, ValueError, OSError):
        found = {}
    exe = wrk_path()
    if exe:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
            first = (out.stdout + out.stderr).split()
            if len(first) > 1:
                found["wrk"] = first[1]
    return found


# -- drivers -----------------------------------------------------------------------------

def _sample(scn: Scenario, server: str, rnd: int, r: WrkResult) -> Sample:
    return Sample(scn.key, server, rnd, r.rps, r.p50, r.p99, r.error_count)


def _wrk(scn: Scenario, srv: Launched, duration: float) -> WrkResult:
    script = str(REPO / scn.script) if scn.script else None
    return run_wrk(srv.url, connections=scn.connections, duration=duration, headers=scn.headers,
                   script=script)


def _loadgen(bin_dir: Path, srv: Launched, duration: float, *, websocket: bool = False,
             ) -> WrkResult:
    """``reactor bench`` as a driver, its JSON read into a WrkResult: ``--close`` on HTTP,
    or (``websocket``) a ``ws://`` echo of 32-byte messages, messages/s as ``rps``."""
    url = "ws://" + srv.url.split("://", 1)[1] if websocket else srv.url
    mode = ["--size", "32"] if websocket else ["--close"]
    argv = [str(bin_dir / "reactor"), "bench", url, "-c", "50", "-d", str(duration), *mode,
            "--json", "-q"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise RuntimeError(f"reactor bench gave no JSON: {proc.stderr.strip()[-300:]}") from exc
    conns = data.get("connections", {})
    errors = sum(int(conns.get(k, 0) or 0) for k in ("refused", "reset", "timed_out"))
    lat = data.get("latency_ms", {})
    if not websocket:
        return WrkResult(
            rps=float(data["throughput_rps"]),
            requests=int(data.get("responses", 0)),
            latency_ms={50: float(lat.get("p50", 0.0)), 99: float(lat.get("p99", 0.0))},
            errors={"connections": errors} if errors else {},
        )
    errors += sum((conns.get("errors") or {}).values())  # failed handshakes, protocol errors
    bad = {c: n for c, n in (data.get("close_codes") or {}).items() if c != "1000"}
    return WrkResult(
        rps=float(data["messages_per_s"]),
        requests=int(data["messages"]["echoed"]),
        latency_ms={50: float(lat.get("p50", 0.0)), 99: float(lat.get("p99", 0.0))},
        errors={k: n for k, n in (("connections", errors), ("close codes", sum(bad.values())))
                if n},
    )


def run_interleaved(
    scn: Scenario,
    specs: list[ServerSpec],
    bin_dir: Path,
    rounds: int,
    duration: float,
    measure: Callable[[Launched], WrkResult],
    notes: list[str],
) -> list[Sample]:
    """Start every server of ``scn``, warm each up, then measure round by round."""
    samples: list[Sample] = []
    with contextlib.ExitStack() as stack:
        tls: tuple[str, str] | None = None
        if scn.tls:
            tls = make_certificate(stack.enter_context(tempfile.TemporaryDirectory()))
        running: list[Launched] = []
        for spec in specs:
            try:
                running.append(stack.enter_context(launch(
                    spec, bin_dir, app=scn.app, threads=scn.threads, processes=scn.processes,
                    tls=tls)))
            except RuntimeError as exc:
                notes.append(f"{scn.key}: {spec.name} skipped: {' '.join(str(exc).split())[:200]}")
                log(f"  {spec.name}: could not start: {exc}")
        for srv in running:
            with contextlib.suppress(RuntimeError, ValueError):
                run_wrk(srv.url, duration=1, latency=False)  # warm-up (imports, caches)
        for rnd in range(rounds):
            k = rnd % len(running) if running else 0
            for srv in running[k:] + running[:k]:
                try:
                    r = measure(srv)
                except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                    notes.append(f"{scn.key}: {srv.spec.name} round {rnd + 1} failed: {exc}")
                    continue
                samples.append(_sample(scn, srv.spec.name, rnd, r))
                log(f"  round {rnd + 1} {srv.spec.name:<13} {r.rps:>9,.0f} req/s  "
                    f"p99 {r.p99 if r.p99 is not None else float('nan'):.2f} ms"
                    + (f"  errors {r.errors}" if r.errors else ""))
    return samples


def _read_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    """The idle client's ``ready OPEN FAILED`` line, waiting at most ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError("idle client not ready in time")
    return proc.stdout.readline().strip()


def _rotated(specs: list[ServerSpec], rounds: int) -> Iterator[tuple[int, ServerSpec]]:
    """(round, server) for every round, the order rotated by one each round."""
    for rnd in range(rounds):
        k = rnd % len(specs)
        for spec in specs[k:] + specs[:k]:
            yield rnd, spec


def _stop_client(client: subprocess.Popen[str]) -> None:
    """Close the idle client's stdin (it closes its connections and exits); wait."""
    if client.stdin is not None:
        with contextlib.suppress(OSError):
            client.stdin.close()
    try:
        client.wait(30)
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait(5)


def run_idle(
    scn: Scenario,
    specs: list[ServerSpec],
    bin_dir: Path,
    rounds: int,
    duration: float,
    count: int,
    notes: list[str],
) -> list[Sample]:
    """Per round and server, on a fresh server: wrk alone, RSS, open ``count`` idle
    keep-alive connections, RSS again, wrk beside them. A fresh server per round keeps
    memory freed by an earlier round from hiding the growth."""
    samples: list[Sample] = []
    for rnd, spec in _rotated(specs, rounds):
        try:
            with launch(spec, bin_dir, app=scn.app, threads=scn.threads, idle=True) as srv:
                run_wrk(srv.url, duration=1, latency=False)
                alone = run_wrk(srv.url, duration=duration)
                time.sleep(0.3)
                rss0 = session_rss_kib(srv.proc.pid)
                client = subprocess.Popen(
                    [str(bin_dir / "python"), "-m", "bench.idle", "--port", str(srv.port),
                     "-n", str(count), "--hold", "300"],
                    cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
                try:
                    line = _read_ready(client, 120).split()
                    opened = int(line[1]) if len(line) == 3 else 0
                    time.sleep(0.5)
                    rss1 = session_rss_kib(srv.proc.pid)
                    beside = run_wrk(srv.url, duration=duration)
                finally:
                    _stop_client(client)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
            notes.append(f"idle: {spec.name} round {rnd + 1} failed: {str(exc).splitlines()[0]}")
            log(f"  {spec.name}: failed: {exc}")
            continue
        per_conn = (rss1 - rss0) / opened if opened else 0.0
        share = beside.rps / alone.rps if alone.rps else 0.0
        s = _sample(scn, spec.name, rnd, beside)
        s.extra = {"rps_alone": alone.rps, "active_share": share, "rss_per_conn_kib": per_conn,
                   "idle_open": float(opened)}
        samples.append(s)
        log(f"  round {rnd + 1} {spec.name:<13} alone {alone.rps:,.0f}  beside {opened} idle "
            f"{beside.rps:,.0f} req/s ({share:.0%})  RSS +{per_conn:.2f} KiB/conn")
    return samples


def run_ws_idle(
    scn: Scenario,
    specs: list[ServerSpec],
    bin_dir: Path,
    rounds: int,
    count: int,
    ping_wait: float,
    quiet: float,
    notes: list[str],
) -> list[Sample]:
    """Per round and server, on a fresh server: RSS; open ``count`` WebSockets that then
    send nothing (``bench.idle --ws``); RSS; hold them ``ping_wait`` seconds (past both
    servers' first keep-alive ping, which the client answers); RSS; one echoed message
    on each of the first half, RSS; ``quiet`` seconds later the same on the second half
    (the first half quiet meanwhile), RSS. Each figure is the growth per open
    WebSocket: the last is what WebSockets that talk now and then come to hold."""
    samples: list[Sample] = []
    for rnd, spec in _rotated(specs, rounds):
        try:
            with launch(spec, bin_dir, app=scn.app, threads=scn.threads, idle=True) as srv:
                extra = _ws_idle_round(scn, srv, bin_dir, count, ping_wait, quiet)
        except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"{scn.key}: {spec.name} round {rnd + 1} failed: "
                         f"{str(exc).splitlines()[0]}")
            log(f"  {spec.name}: failed: {exc}")
            continue
        s = Sample(scn.key, spec.name, rnd, 0.0, extra=extra)
        samples.append(s)
        log(f"  round {rnd + 1} {spec.name:<13} {extra['ws_open']:.0f} open "
            f"({extra['ws_failed']:.0f} failed, {extra['ws_deflate']:.0f} deflate)  "
            f"RSS {extra['rss_before_kib'] / 1024:.1f} -> {extra['rss_idle_kib'] / 1024:.1f} MiB"
            f"  +{extra['rss_per_conn_open_kib']:.2f} KiB/conn open, "
            f"+{extra['rss_per_conn_kib']:.2f} after {ping_wait:g} s "
            f"({extra['pings']:.0f} pings answered, {extra['lost']:.0f} lost), "
            f"+{extra['rss_per_conn_half_kib']:.2f} after one echo on half, "
            f"+{extra['rss_per_conn_echo_kib']:.2f} after the other half's {quiet:g} s later")
    return samples


def _ws_idle_round(scn: Scenario, srv: Launched, bin_dir: Path, count: int,
                   ping_wait: float, quiet: float) -> dict[str, float]:
    """One server's ``ws-idle`` measurement (see ``run_ws_idle``); the figures by name."""
    argv = [str(bin_dir / "python"), "-m", "bench.idle", "--port", str(srv.port), "-n",
            str(count), "--hold", str(ping_wait + quiet + 600), "--ws", "/"]
    for header in scn.headers:
        argv += ["--header", header]
    time.sleep(0.3)
    rss0 = session_rss_kib(srv.proc.pid)
    client = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert client.stdin is not None
    try:
        opened, failed, deflated = _read_line(client, "ready", 180)
        time.sleep(0.5)
        rss1 = session_rss_kib(srv.proc.pid)
        time.sleep(ping_wait)
        rss2 = session_rss_kib(srv.proc.pid)
        half = opened // 2
        client.stdin.write(f"echo 0 {half}\n")
        client.stdin.flush()
        (echoed,) = _read_line(client, "echoed", 90)
        time.sleep(0.5)
        rss3 = session_rss_kib(srv.proc.pid)
        time.sleep(quiet)  # the first half is quiet now
        client.stdin.write(f"echo {half} {opened}\n")
        client.stdin.flush()
        echoed += _read_line(client, "echoed", 90)[0]
        time.sleep(0.5)
        rss4 = session_rss_kib(srv.proc.pid)
        client.stdin.close()
        pings, lost = _read_line(client, "held", 60)
    finally:
        _stop_client(client)
    n = opened or 1
    return {"rss_before_kib": rss0, "rss_idle_kib": rss2, "ws_open": opened,
            "ws_failed": failed, "ws_deflate": deflated, "ws_echoed": echoed, "pings": pings,
            "lost": lost, "rss_per_conn_open_kib": (rss1 - rss0) / n,
            "rss_per_conn_kib": (rss2 - rss0) / n, "rss_per_conn_half_kib": (rss3 - rss0) / n,
            "rss_per_conn_echo_kib": (rss4 - rss0) / n}


def _read_line(proc: subprocess.Popen[str], word: str, timeout: float) -> list[int]:
    """The numbers of the idle client's next line that starts with ``word``.

    Raises:
        RuntimeError: no such line within ``timeout`` (or the client ended).
    """
    deadline = time.monotonic() + timeout
    while True:
        line = _read_ready(proc, max(0.0, deadline - time.monotonic())).split()
        if not line:
            raise RuntimeError(f"the idle client ended before its {word!r} line")
        if line[0] == word:
            return [int(v) for v in line[1:]]


# -- docs --------------------------------------------------------------------------------

_DOCS_SKELETON = """# Performance

How fast mioreactor is, how it is measured, and where the time goes.

## Results

`make bench` appends a dated block here (see "HTTP" for what each row means).
"""


def append_results(block: str, path: Path = DOCS) -> None:
    """Add ``block`` as the last entry of the ``## Results`` section of ``path``.

    Other sections (written by other benchmarks) may follow ``## Results``; the block
    goes before the next ``## `` heading, or at the end of the file.
    """
    text = path.read_text() if path.exists() else _DOCS_SKELETON
    start = text.find("\n## Results")
    if start < 0:
        text = text.rstrip("\n") + "\n\n## Results\n"
        start = text.find("\n## Results")
    nxt = text.find("\n## ", start + 1)
    if nxt < 0:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        text = text[:nxt].rstrip("\n") + "\n\n" + block + "\n" + text[nxt:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- main --------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="mioreactor vs peers (see bench/run.py).")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3 for claims)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    p.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS if s.default),
                   help="comma-separated: " + ",".join(s.key for s in SCENARIOS)
                   + " (the default: all but " + ",".join(s.key for s in SCENARIOS
                                                         if not s.default) + ")")
    p.add_argument("--servers", default="", help="only these servers (comma-separated)")
    p.add_argument("--idle-count", type=int, default=10000, help="idle connections to hold")
    p.add_argument("--ws-ping-wait", type=float, default=25.0,
                   help="seconds the idle WebSockets are held before the RSS that counts "
                        "(past the first keep-alive ping: 20 s on both servers)")
    p.add_argument("--ws-quiet", type=float, default=45.0,
                   help="seconds between the two halves' echoes in ws-idle (two ping "
                        "intervals and more: ours lets a compressor go at the second ping "
                        "without a message)")
    p.add_argument("--budget", type=float, default=540.0,
                   help="seconds after which no new scenario starts")
    p.add_argument("--venv", type=Path, default=VENV)
    p.add_argument("--no-docs", action="store_true", help="do not append to docs/performance.md")
    p.add_argument("--json", type=Path, help="also write the samples here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; append the results to the docs."""
    args = parse_args(argv)
    started = time.monotonic()
    raise_nofile()
    bin_dir, skipped = ensure_venv(args.venv)
    wrk = ensure_wrk()
    wanted = {s for s in args.servers.split(",") if s}
    keys = [k for k in args.scenarios.split(",") if k]
    notes = [f"{name} skipped: {why}" for name, why in skipped.items()]
    if wrk is None:
        notes.append("wrk rows skipped: wrk is not installed and cannot be installed "
                     "(not root, or no apt-get)")
    samples: list[Sample] = []
    titles = {s.key: s.title for s in SCENARIOS}
    for scn in SCENARIOS:
        if scn.key not in keys:
            continue
        if time.monotonic() - started > args.budget:
            notes.append(f"{scn.key}: not run (time budget of {args.budget:.0f} s spent)")
            continue
        if wrk is None and scn.driver != "ws-idle":
            continue
        specs = [PEERS[n] for n in scn.servers if n not in skipped and (not wanted or n in wanted)]
        if "ours" not in [s.name for s in specs]:
            notes.append(f"{scn.key}: not run (ours is not available)")
            continue
        log(f"== {scn.title}: {', '.join(s.name for s in specs)}")
        if scn.driver == "idle":
            samples += run_idle(scn, specs, bin_dir, args.rounds, args.duration,
                                args.idle_count, notes)
            continue
        if scn.driver == "ws-idle":
            samples += run_ws_idle(scn, specs, bin_dir, args.rounds, args.idle_count,
                                   args.ws_ping_wait, args.ws_quiet, notes)
            continue
        if scn.driver == "loadgen":
            def measure(srv: Launched) -> WrkResult:
                return _loadgen(bin_dir, srv, args.duration)
        elif scn.driver == "ws":
            def measure(srv: Launched) -> WrkResult:
                return _loadgen(bin_dir, srv, args.duration, websocket=True)
        else:
            def measure(srv: Launched, scn: Scenario = scn) -> WrkResult:
                return _wrk(scn, srv, args.duration)
        try:
            samples += run_interleaved(scn, specs, bin_dir, args.rounds, args.duration, measure,
                                       notes)
        except RuntimeError as exc:  # no certificate for a TLS scenario
            notes.append(f"{scn.key}: not run: {exc}")
    rows = rows_from_samples(samples)
    notes += tls_cost(rows)
    order = {s.key: i for i, s in enumerate(SCENARIOS)}
    rows.sort(key=lambda r: (order.get(r.scenario, 99), r.server != "ours"))
    checks = check_targets(rows)
    memory_keys = {s.key for s in SCENARIOS if s.driver == "ws-idle"}
    memory = [r for r in rows if r.scenario in memory_keys]
    rows = [r for r in rows if r.scenario not in memory_keys]
    if rows:
        print(format_table(rows, titles))
    if memory:
        print(f"\nIdle WebSockets ({args.idle_count:,} per server; KiB per open WebSocket):")
        print(format_memory(memory, titles))
    print("\nTargets (issues 6, 13 and 14; ratios of medians, per-round range in brackets):")
    print(format_checks(checks))
    bound = bounds(rows)
    if bound:
        print("\nBounds (the floor, bench/floor.py, against the same peers in this run):")
        print("\n".join(bound))
    for n in notes:
        print(f"note: {n}")
    elapsed = time.monotonic() - started
    print(f"\n{len(samples)} measurements in {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([s.__dict__ for s in samples], indent=1))
    if not args.no_docs and (rows or memory):
        settings = (f"wrk -t1 -c50 -d{args.duration:g}s --latency, {args.rounds} interleaved "
                    f"rounds, medians; threads 4 (mixed: 8)." if rows else
                    f"{args.rounds} interleaved rounds, medians.")
        if memory:
            settings += (f" Idle WebSockets: {args.idle_count:,} per server, held "
                         f"{args.ws_ping_wait:g} s (past the first 20 s keep-alive ping); "
                         f"the halves' echoes {args.ws_quiet:g} s apart.")
        block = results_markdown(time.strftime("%Y-%m-%d %H:%M"), machine_info(),
                                 versions(bin_dir), rows, titles, checks, notes, settings,
                                 memory)
        append_results(block)
        log(f"results appended to {DOCS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
