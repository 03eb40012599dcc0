"""Medians, ratios, target checks, the printed table and the docs results block.

Pure functions over ``Sample`` lists, so the smoke test can check them without a
server. A scenario's rows come from interleaved rounds; every figure is the median
over rounds, and each ratio is ours over the peer's median (higher is better for
req/s; for p99 the target compares the medians directly).
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Row",
    "Sample",
    "TargetCheck",
    "bounds",
    "check_targets",
    "format_memory",
    "format_table",
    "machine_info",
    "median",
    "results_markdown",
    "rows_from_samples",
]


@dataclass
class Sample:
    """One measurement: a server in a scenario in one round."""

    scenario: str
    server: str
    round: int
    rps: float
    p50: float | None = None
    p99: float | None = None
    errors: int = 0
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Row:
    """The medians of one server in one scenario, and its ratio to ours."""

    scenario: str
    server: str
    rps: float
    p50: float | None
    p99: float | None
    rounds: int
    errors: int
    ratio: float | None = None  # ours rps / this server's rps
    round_ratios: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def rows_from_samples(samples: Sequence[Sample], ours: str = "ours") -> list[Row]:
    """Group samples by (scenario, server), take medians, add ratios to ``ours``.

    Per-round ratios (ours / peer in the same round) are kept as well: on a shared
    machine they show how stable a ratio is.
    """
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.scenario, s.server), []).append(s)
    rows: list[Row] = []
    for (scenario, server), group in groups.items():
        extra_keys = sorted({k for s in group for k in s.extra})
        extra = {k: median(s.extra.get(k) for s in group) for k in extra_keys}
        rows.append(
            Row(
                scenario,
                server,
                median(s.rps for s in group) or 0.0,
                median(s.p50 for s in group),
                median(s.p99 for s in group),
                len(group),
                sum(s.errors for s in group),
                extra={k: v for k, v in extra.items() if v is not None},
            )
        )
    by_key = {(r.scenario, r.server): r for r in rows}
    for r in rows:
        mine = by_key.get((r.scenario, ours))
        if mine is None or r.rps <= 0:
            continue
        r.ratio = mine.rps / r.rps
        ours_by_round = {s.round: s.rps for s in samples if s.scenario == r.scenario and s.server == ours}
        for s in samples:
            if s.scenario == r.scenario and s.server == r.server and s.rps > 0:
                o = ours_by_round.get(s.round)
                if o is not None:
                    r.round_ratios.append(o / s.rps)
    return rows


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def format_table(rows: Sequence[Row], titles: dict[str, str], markdown: bool = False) -> str:
    """The results table: scenario, server, req/s, p50, p99, ratio ours/peer."""
    head = ["scenario", "server", "req/s", "p50 ms", "p99 ms", "ours/peer", "rounds", "errors"]
    lines: list[list[str]] = []
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        if r.round_ratios and r.server != "ours":
            ratio += f" ({min(r.round_ratios):.2f}-{max(r.round_ratios):.2f})"
        lines.append([
            titles.get(r.scenario, r.scenario), r.server, f"{r.rps:,.0f}", _ms(r.p50),
            _ms(r.p99), ratio, str(r.rounds), str(r.errors),
        ])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*cells) for cells in lines]
    return "\n".join(out)


def format_memory(rows: Sequence[Row], titles: dict[str, str], markdown: bool = False) -> str:
    """The idle-WebSocket table (``ws-idle`` rows): RSS and its growth per WebSocket.

    "open" is the growth right after the handshakes, "idle" after the hold (past the
    first keep-alive ping), "talked" once every WebSocket echoed one message (half of
    them, then after another hold the other half); "ours/peer" divides ours by the
    peer's "idle" figure (below 1: ours holds less).
    """
    head = ["scenario", "server", "RSS before MiB", "RSS held MiB", "KiB/WS open",
            "KiB/WS idle", "KiB/WS talked", "ours/peer", "opened", "deflate", "pings",
            "lost", "rounds"]
    by = {(r.scenario, r.server): r for r in rows}
    lines: list[list[str]] = []
    for r in rows:
        x = r.extra
        mine = by.get((r.scenario, "ours"))
        ratio = "-"
        if mine is not None and r.server != "ours" and x.get("rss_per_conn_kib"):
            ratio = f"{mine.extra.get('rss_per_conn_kib', 0.0) / x['rss_per_conn_kib']:.2f}"
        lines.append([
            titles.get(r.scenario, r.scenario), r.server,
            f"{x.get('rss_before_kib', 0.0) / 1024:.1f}", f"{x.get('rss_idle_kib', 0.0) / 1024:.1f}",
            f"{x.get('rss_per_conn_open_kib', 0.0):.2f}", f"{x.get('rss_per_conn_kib', 0.0):.2f}",
            f"{x.get('rss_per_conn_echo_kib', 0.0):.2f}", ratio,
            f"{x.get('ws_open', 0.0):,.0f}", f"{x.get('ws_deflate', 0.0):,.0f}",
            f"{x.get('pings', 0.0):,.0f}", f"{x.get('lost', 0.0):,.0f}", str(r.rounds),
        ])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*cells) for cells in lines]
    return "\n".join(out)


@dataclass
class TargetCheck:
    """One target of issue 6 and whether this run met it."""

    name: str
    met: bool | None  # None: not measured in this run
    detail: str


def _row(rows: Sequence[Row], scenario: str, server: str) -> Row | None:
    return next((r for r in rows if r.scenario == scenario and r.server == server), None)


def _ratio_check(rows: Sequence[Row], name: str, scenario: str, peer: str, need: float) -> TargetCheck:
    r = _row(rows, scenario, peer)
    if r is None or r.ratio is None:
        return TargetCheck(name, None, "not measured")
    spread = f" (rounds {min(r.round_ratios):.2f}-{max(r.round_ratios):.2f})" if r.round_ratios else ""
    return TargetCheck(name, r.ratio >= need, f"{r.ratio:.2f} vs >= {need}{spread}")


def _p99_check(rows: Sequence[Row], name: str, scenario: str, peer: str) -> TargetCheck:
    mine, r = _row(rows, scenario, "ours"), _row(rows, scenario, peer)
    if mine is None or r is None or mine.p99 is None or r.p99 is None:
        return TargetCheck(name, None, "not measured")
    if not mine.p99 or not r.p99:  # wrk reports 0 when its histogram misses (pipelining)
        return TargetCheck(name, None, "wrk reported no p99 for one side")
    return TargetCheck(name, mine.p99 <= r.p99, f"{mine.p99:.2f} ms vs {r.p99:.2f} ms")


def check_targets(rows: Sequence[Row]) -> list[TargetCheck]:
    """Issues 6 and 13's targets against this run's rows (ratios of medians)."""
    checks = [
        # issue 13: the bare shape, uvicorn on its own ground, and granian
        _ratio_check(rows, "keep-alive / floor loop >= 0.9 (issue 13)", "keepalive", "floor", 0.9),
        _ratio_check(rows, "keep-alive / uvicorn-asgi >= 1.35 (issue 13)", "keepalive",
                     "uvicorn-asgi", 1.35),
        _ratio_check(rows, "keep-alive / granian >= 0.75 (issue 13)", "keepalive", "granian", 0.75),
        _ratio_check(rows, "close / uvicorn-asgi >= 1.5 (issue 13)", "close", "uvicorn-asgi", 1.5),
        _p99_check(rows, "p99 at 50 conns <= uvicorn-asgi (issue 13)", "keepalive", "uvicorn-asgi"),
        _ratio_check(rows, "2 processes / uvicorn-asgi -w2 >= 1.2 (issue 13)", "procs2",
                     "uvicorn-asgi", 1.2),
        _ratio_check(rows, "mixed / gunicorn gthread >= 1.1 (issue 13)", "mixed", "gunicorn", 1.1),
        # issue 23: level with granian where it led
        _ratio_check(rows, "pipelined / granian >= 1.0 (issue 23)", "pipelined", "granian", 1.0),
        _p99_check(rows, "pipelined p99 <= granian (issue 23)", "pipelined", "granian"),
        _ratio_check(rows, "pipelined: the lane costs nothing, ours / --no-express >= 1.0 "
                     "(issue 23)", "pipelined", "ours-noexpress", 1.0),
        _ratio_check(rows, "JSON / granian >= 0.95 (issue 23)", "json", "granian", 0.95),
        _ratio_check(rows, "keep-alive / granian >= 0.95 (issue 23)", "keepalive", "granian", 0.95),
        _ratio_check(rows, "close / granian >= 1.0 (issue 23)", "close", "granian", 1.0),
        _p99_check(rows, "close p99 <= uvicorn-asgi (issue 23)", "close", "uvicorn-asgi"),
        _ratio_check(rows, "TLS keep-alive / granian >= 0.9 (issue 23)", "tls", "granian", 0.9),
        # issue 6
        _ratio_check(rows, "ASGI hello / uvicorn-asgi >= 1.3 (issue 21)", "asgi",
                     "uvicorn-asgi", 1.3),
        _ratio_check(rows, "ASGI hello / granian-asgi >= 0.8 (issue 21)", "asgi",
                     "granian-asgi", 0.8),
        _ratio_check(rows, "WebSocket echo msg/s / uvicorn-asgi >= 1.2 (issue 21)", "websocket",
                     "uvicorn-asgi", 1.2),
        _p99_check(rows, "WebSocket echo p99 <= uvicorn-asgi's (issue 21)", "websocket",
                   "uvicorn-asgi"),
        _ratio_check(rows, "FastAPI JSON / uvicorn-asgi >= 1.2 (issue 21)", "fastapi",
                     "uvicorn-asgi", 1.2),
        _ratio_check(rows, "keep-alive / uvicorn >= 1.35", "keepalive", "uvicorn", 1.35),
        _ratio_check(rows, "keep-alive / waitress >= 2 (issue 4)", "keepalive", "waitress", 2.0),
        _ratio_check(rows, "close / uvicorn >= 1.5", "close", "uvicorn", 1.5),
        _p99_check(rows, "p99 at 50 conns <= uvicorn", "keepalive", "uvicorn"),
        _ratio_check(rows, "2 processes / uvicorn -w2 >= 1.0", "procs2", "uvicorn", 1.0),
        _ratio_check(rows, "2 processes / gunicorn gthread -w2 >= 1.0", "procs2", "gunicorn", 1.0),
        _ratio_check(rows, "mixed / waitress (8 threads) >= 1.0", "mixed", "waitress", 1.0),
        _p99_check(rows, "mixed p99 <= waitress", "mixed", "waitress"),
        _ratio_check(rows, "mixed / gunicorn gthread (8 threads) >= 1.0", "mixed", "gunicorn", 1.0),
        _p99_check(rows, "mixed p99 <= gunicorn", "mixed", "gunicorn"),
        _ratio_check(rows, "TLS keep-alive / uvicorn-asgi --ssl-* >= 1.0 (issue 14)", "tls",
                     "uvicorn-asgi", 1.0),
    ]
    mine, peer = _row(rows, "idle", "ours"), _row(rows, "idle", "uvicorn")
    if mine is not None and peer is not None and "rss_per_conn_kib" in mine.extra:
        a, b = mine.extra["rss_per_conn_kib"], peer.extra.get("rss_per_conn_kib", 0.0)
        checks.append(TargetCheck("idle 10k: RSS/conn <= uvicorn", a <= b, f"{a:.2f} KiB vs {b:.2f} KiB"))
        checks.append(TargetCheck("idle 10k: RSS/conn <= 3 KiB (issue 13)", a <= 3.0, f"{a:.2f} KiB"))
    else:
        checks.append(TargetCheck("idle 10k: RSS/conn <= uvicorn", None, "not measured"))
    for key, what in (("ws-idle", "idle WebSocket"),
                      ("ws-idle-deflate", "idle WebSocket, deflate offered")):
        mine, peer = _row(rows, key, "ours"), _row(rows, key, "uvicorn-asgi")
        name = f"10k {what}: RSS/conn <= uvicorn-asgi (issue 21)"
        if mine is None or peer is None or "rss_per_conn_kib" not in peer.extra:
            checks.append(TargetCheck(name, None, "not measured"))
            continue
        a, b = mine.extra["rss_per_conn_kib"], peer.extra["rss_per_conn_kib"]
        # every WebSocket opened and none lost while held (ping rounds included)
        whole = not mine.extra.get("ws_failed", 0.0) and not mine.extra.get("lost", 0.0)
        checks.append(TargetCheck(name, a <= b and whole, f"{a:.2f} KiB vs {b:.2f} KiB; ours "
                                  f"{mine.extra.get('ws_open', 0.0):,.0f} open, "
                                  f"{mine.extra.get('lost', 0.0):,.0f} lost"))
    mine = _row(rows, "idle", "ours")
    if mine is not None and "active_share" in mine.extra:
        share = mine.extra["active_share"]
        checks.append(TargetCheck("idle 10k: active req/s >= 90% of without", share >= 0.9,
                                  f"{share:.0%}"))
    else:
        checks.append(TargetCheck("idle 10k: active req/s >= 90% of without", None, "not measured"))
    return checks


#: (scenario, peer, target ratio): targets against a peer that the bare shape
#: (``bench/floor.py``, a row of the scenario) bounds from above.
BOUNDED = (
    ("keepalive", "granian", 0.95),
    ("json", "granian", 0.95),
    ("close", "granian", 1.0),
    ("tls", "granian", 0.9),
    ("asgi", "uvicorn-asgi", 1.3),
    ("asgi", "granian-asgi", 0.8),
    ("fastapi", "uvicorn-asgi", 1.2),
)


def bounds(rows: Sequence[Row]) -> list[str]:
    """What the floor itself reaches against a peer, beside the target ours must meet.

    The floor runs the architecture's bare shape in the same process model (one
    Python thread doing the HTTP work and the app): a target above the floor's own
    ratio cannot be met by trimming the product, only by changing the shape.
    """
    out = []
    for scenario, peer, need in BOUNDED:
        floor, other = _row(rows, scenario, "floor"), _row(rows, scenario, peer)
        if floor is None or other is None or not other.rps:
            continue
        reach = floor.rps / other.rps
        verdict = "within" if reach >= need else "ABOVE"
        out.append(f"  {scenario}: the floor reaches {reach:.2f}x {peer}; the target "
                   f"{need}x is {verdict} what the bare shape does")
    return out


def format_checks(checks: Sequence[TargetCheck]) -> str:
    """One line per target: met / MISSED / n/a, name, numbers."""
    mark = {True: "met   ", False: "MISSED", None: "n/a   "}
    return "\n".join(f"  {mark[c.met]}  {c.name}: {c.detail}" for c in checks)


def machine_info() -> dict[str, str]:
    """nproc, CPU model (from /proc/cpuinfo), kernel and Python."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count() or 0),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def results_markdown(
    date: str,
    machine: dict[str, str],
    versions: dict[str, str],
    rows: Sequence[Row],
    titles: dict[str, str],
    checks: Sequence[TargetCheck],
    notes: Sequence[str],
    settings: str,
    memory: Sequence[Row] = (),
) -> str:
    """The dated block appended to docs/performance.md (``memory``: ``ws-idle`` rows)."""
    vers = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    out = [
        f"### {date}",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, "
        f"CPython {machine['python']}. Versions: {vers}. {settings}",
        "",
        *([format_table(rows, titles, markdown=True), ""] if rows else []),
        *(["Idle WebSockets (KiB per open WebSocket; \"idle\": after the hold):", "",
           format_memory(memory, titles, markdown=True), ""] if memory else []),
        "Targets (issues 6, 13 and 14):",
        "",
    ]
    mark = {True: "met", False: "**missed**", None: "not measured"}
    out += [f"- {c.name}: {mark[c.met]} ({c.detail})" for c in checks if c.met is not None]
    unmeasured = sum(c.met is None for c in checks)
    if unmeasured:
        out.append(f"- {unmeasured} other targets: not measured in this run")
    bound = bounds(rows)
    if bound:
        out += ["", "Bounds (bench/floor.py, the bare shape, against the same peers):", "",
                *[f"- {b.strip()}" for b in bound]]
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"
