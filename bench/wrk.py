"""Run ``wrk`` and read its report: requests/s, latency percentiles, errors.

Only the parts of wrk's text report that the benchmark tables use are parsed, and
the parser is a pure function (``parse_wrk``) so the smoke test can feed it text.
Every run is bounded: wrk gets ``-d`` and the subprocess a hard timeout on top.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

__all__ = ["WrkResult", "parse_duration_ms", "parse_wrk", "run_wrk", "wrk_path"]

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^\s*([0-9.]+)\s*(us|ms|s|m|h)\s*$")
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_PCT = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([0-9.]+\s*(?:us|ms|s|m|h))\s*$", re.M)
_TOTAL = re.compile(r"^\s+(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", re.M)
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.M)


@dataclass
class WrkResult:
    """What one wrk run reported.

    Attributes:
        rps: requests per second (wrk's ``Requests/sec``).
        requests: completed requests.
        latency_ms: percentile -> milliseconds (50, 75, 90, 99 when ``--latency``).
        errors: socket errors by kind (connect, read, write, timeout) and ``non2xx``.
    """

    rps: float
    requests: int = 0
    latency_ms: dict[int, float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def p50(self) -> float | None:
        return self.latency_ms.get(50)

    @property
    def p99(self) -> float | None:
        return self.latency_ms.get(99)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def parse_duration_ms(text: str) -> float:
    """``"1.50ms"`` -> 1.5, ``"830.00us"`` -> 0.83, ``"1.02s"`` -> 1020.0.

    Raises:
        ValueError: not a wrk duration.
    """
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's text report.

    Raises:
        ValueError: the report has no ``Requests/sec`` line (wrk failed).
    """
    m = _RPS.search(output)
    if m is None:
        raise ValueError("no Requests/sec line in wrk output:\n" + output[-2000:])
    result = WrkResult(rps=float(m.group(1)))
    t = _TOTAL.search(output)
    if t is not None:
        result.requests = int(t.group(1))
    for pct, value in _PCT.findall(output):
        result.latency_ms[int(pct)] = parse_duration_ms(value)
    s = _SOCKET.search(output)
    if s is not None:
        for kind, n in zip(("connect", "read", "write", "timeout"), s.groups(), strict=True):
            if int(n):
                result.errors[kind] = int(n)
    n2 = _NON2XX.search(output)
    if n2 is not None and int(n2.group(1)):
        result.errors["non2xx"] = int(n2.group(1))
    return result


def wrk_path() -> str | None:
    """The wrk executable, or None when it is not installed."""
    return shutil.which("wrk")


def run_wrk(
    url: str,
    *,
    connections: int = 50,
    threads: int = 1,
    duration: float = 3.0,
    headers: tuple[str, ...] = (),
    script: str | None = None,
    latency: bool = True,
) -> WrkResult:
    """Run wrk once against ``url`` and parse its report.

    Args:
        url: the target.
        connections: ``-c``.
        threads: ``-t``.
        duration: seconds (``-d``, rounded to whole seconds by wrk at >= 1).
        headers: ``-H`` values such as ``"Connection: close"``.
        script: a Lua script (``-s``).
        latency: ask for the latency distribution (``--latency``).

    Raises:
        RuntimeError: wrk is missing, failed, or overran its time.
        ValueError: its report could not be parsed.
    """
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed")
    secs = max(1, round(duration))
    argv = [exe, f"-t{threads}", f"-c{connections}", f"-d{secs}s", "--timeout", "5s"]
    for h in headers:
        argv += ["-H", h]
    if script:
        argv += ["-s", script]
    if latency:
        argv.append("--latency")
    argv.append(url)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"wrk overran: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return parse_wrk(proc.stdout)
