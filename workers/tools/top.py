"""``reactor top``: a live view of a server from its ``/metrics`` endpoint.

Everything but the terminal is plain functions on strings and numbers, testable
without a terminal: ``mioreactor.workers.ops.metrics.parse_text`` reads the text format, ``Scrape`` picks
out the figures, ``rate`` and ``quantile`` compare two scrapes, ``render_frame`` lays
out one frame as a string. ``run_terminal`` is the loop: cbreak mode (termios), the
alternate screen and plain ANSI escapes (no curses), ``select`` on stdin with the
refresh interval as timeout; ``q`` or Ctrl-C ends it and the terminal is put back.

When the endpoint cannot be reached the frame says ``unreachable`` with the reason,
keeps the last figures it had, and tries again every interval.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

from ..ops.metrics import parse_text

__all__ = [
    "FETCH_TIMEOUT",
    "Scrape",
    "Top",
    "fetch",
    "quantile",
    "rate",
    "render_frame",
    "run_once",
    "run_terminal",
    "target_url",
]

FETCH_TIMEOUT = 5.0
"""Seconds a scrape may take before the endpoint counts as unreachable ("timed out")."""



def target_url(target: str) -> str:
    """``HOST:PORT``, ``http://HOST:PORT`` or a full URL to the metrics URL.

    Raises:
        ValueError: not an http(s) URL or ``HOST:PORT``.
    """
    if "://" not in target:
        target = f"http://{target}"
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected HOST:PORT or http://HOST:PORT/metrics, got {target!r}")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ValueError(f"bad port in {target!r}") from None
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"


# -- the figures of one scrape ---------------------------------------------------------------
@dataclass
class Scrape:
    """The figures ``reactor top`` shows, from one scrape (``at``: a monotonic time)."""

    at: float = 0.0
    processes: int = 0
    accepted: float = 0.0
    closed: float = 0.0
    active: float = 0.0
    shed: float = 0.0
    queue_depth: float = 0.0
    handoffs: float = 0.0
    stuck: float = 0.0
    handler_errors: float = 0.0
    requests: dict[str, float] = field(default_factory=dict)
    accept_errors: dict[str, float] = field(default_factory=dict)
    listen_queue: dict[str, float] = field(default_factory=dict)
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative)
    duration_sum: float = 0.0
    workers: list[tuple[str, str, str]] = field(default_factory=list)  # (pid, name, state)
    stuck_now: float = 0.0
    stuck_for: dict[tuple[str, str], float] = field(default_factory=dict)  # (pid, name)
    gc_runs: float = 0.0  # collections of every generation
    gc_full: float = 0.0  # generation 2
    gc_pause: float = 0.0  # seconds, every generation
    gc_longest: float = 0.0

    @property
    def requests_total(self) -> float:
        return sum(self.requests.values())

    @classmethod
    def from_text(cls, text: str, at: float) -> Scrape:
        """Read the ``reactor_*`` samples of ``text``.

        Raises:
            ValueError: the text is not the exposition format, or has no ``reactor_``
                metrics (not a mioreactor endpoint).
        """
        s = cls(at=at)
        scalars = {
            "reactor_processes": "processes", "reactor_connections_accepted_total": "accepted",
            "reactor_connections_closed_total": "closed",
            "reactor_connections_active": "active", "reactor_connections_shed_total": "shed",
            "reactor_queue_depth": "queue_depth", "reactor_handoffs_total": "handoffs",
            "reactor_stuck_requests_total": "stuck", "reactor_stuck_workers": "stuck_now",
            "reactor_handler_errors_total": "handler_errors",
            "reactor_gc_longest_pause_seconds": "gc_longest",
        }
        seen = False
        for name, labels, value in parse_text(text):
            if not name.startswith("reactor_"):
                continue
            seen = True
            if name in scalars:
                attr = scalars[name]
                setattr(s, attr, int(value) if attr == "processes" else value)
            elif name == "reactor_requests_total":
                s.requests[labels.get("class", "?")] = value
            elif name == "reactor_accept_errors_total":
                s.accept_errors[labels.get("kind", "?")] = value
            elif name == "reactor_listen_queue":
                s.listen_queue[labels.get("listener", "?")] = value
            elif name == "reactor_request_duration_seconds_bucket":
                s.buckets.append((float(labels.get("le", "+Inf")), value))
            elif name == "reactor_request_duration_seconds_sum":
                s.duration_sum = value
            elif name == "reactor_worker_stuck_seconds" and value > 0:
                s.stuck_for[(labels.get("pid", "?"), labels.get("worker", "?"))] = value
            elif name == "reactor_gc_collections_total":
                s.gc_runs += value
                if labels.get("generation") == "2":
                    s.gc_full = value
            elif name == "reactor_gc_pause_seconds_total":
                s.gc_pause += value
            elif name == "reactor_worker_state" and value == 1:
                s.workers.append((labels.get("pid", "?"), labels.get("worker", "?"),
                                  labels.get("state", "?")))
        if not seen:
            raise ValueError("no reactor_ metrics: is this a mioreactor --metrics-bind endpoint?")
        s.buckets.sort()
        return s


def _delta(prev: float, cur: float) -> float:
    """A counter's increase; a decrease means it restarted from zero (as Prometheus)."""
    return cur - prev if cur >= prev else cur


def rate(prev: float, cur: float, seconds: float) -> float:
    """Per-second increase of a counter between two readings ``seconds`` apart."""
    if seconds <= 0:
        return 0.0
    return _delta(prev, cur) / seconds


def bucket_deltas(
    prev: list[tuple[float, float]], cur: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Cumulative histogram buckets of what happened between two scrapes.

    If the buckets differ or any went down (the server restarted), ``cur`` itself.
    """
    if [le for le, _ in prev] != [le for le, _ in cur]:
        return list(cur)
    if any(c < p for (_, p), (_, c) in zip(prev, cur, strict=True)):
        return list(cur)
    return [(le, c - p) for (le, p), (_, c) in zip(prev, cur, strict=True)]


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of a cumulative histogram, as Prometheus's
    ``histogram_quantile``: linear inside the bucket where the rank falls; the largest
    finite bound if it falls in ``+Inf``. None when the histogram is empty."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank and count > below:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = (le if not math.isinf(le) else lower), count
    return lower


# -- a frame ----------------------------------------------------------------------------------
def _num(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{int(v):,}" if v == int(v) else f"{v:,.1f}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def render_frame(
    cur: Scrape | None,
    prev: Scrape | None,
    *,
    url: str,
    interval: float,
    width: int = 100,
    height: int = 40,
    error: str = "",
    last_ok: str = "",
    clock: str = "",
    interactive: bool = True,
) -> str:
    """One frame as plain text (no escapes), each line at most ``width`` characters and
    at most ``height`` lines. Rates and quantiles compare ``cur`` with ``prev``; without
    ``prev`` there are no rates and the quantiles cover everything since start."""
    hint = "  q quits" if interactive else ""
    lines = [f"reactor top  {url}  every {interval:g}s{hint}    {clock}".rstrip()]
    if error:
        seen = f"; last answer {last_ok}" if last_ok else ""
        lines.append(f"UNREACHABLE: {error}{seen}; retrying every {interval:g}s")
    if cur is None:
        if not error:
            lines.append("waiting for the first scrape...")
        return _fit(lines, width, height)
    states = {k: 0 for k in ("running", "standby", "detached")}
    for _, _, state in cur.workers:
        states[state] = states.get(state, 0) + 1
    lines.append(f"processes {cur.processes}   workers {len(cur.workers)}: "
                 + "  ".join(f"{k} {v}" for k, v in states.items()))
    lines.append("")
    dt = cur.at - prev.at if prev is not None and not error else 0.0
    fresh = prev is not None and dt > 0
    classes = "  ".join(f"{k} {_num(v)}" for k, v in sorted(cur.requests.items()))
    if fresh and prev is not None:
        rps = f"{rate(prev.requests_total, cur.requests_total, dt):,.1f}"
        window = bucket_deltas(prev.buckets, cur.buckets)
        span = f"last {dt:.1f} s, {_num(window[-1][1] if window else 0)} timed"
        hps = f"{rate(prev.handoffs, cur.handoffs, dt):,.1f}"
        gcs = f"{rate(prev.gc_pause, cur.gc_pause, dt) * 1000:,.2f}"
    else:
        rps, window, span, hps, gcs = "-", cur.buckets, "since start", "-", "-"
    lines.append(f"connections  active {_num(cur.active):>8}   accepted {_num(cur.accepted):>10}"
                 f"   closed {_num(cur.closed):>10}   shed {_num(cur.shed)}")
    lines.append(f"requests     total {_num(cur.requests_total):>9}   per second {rps:>8}   {classes}")
    lines.append(f"latency      p50 {_ms(quantile(0.5, window)):>11}   p99 {_ms(quantile(0.99, window)):>11}"
                 f"   ({span})")
    lq = "  ".join(f"{name} {_num(v)}" for name, v in sorted(cur.listen_queue.items())) or "-"
    lines.append(f"queue        depth {_num(cur.queue_depth):>9}   listen queue {lq}")
    lines.append(f"hand-offs    total {_num(cur.handoffs):>9}   per second {hps:>8}")
    errors = "  ".join(f"{k} {_num(v)}" for k, v in sorted(cur.accept_errors.items())) or "none"
    lines.append(f"stuck        total {_num(cur.stuck):>9}   now {_num(cur.stuck_now):>15}"
                 f"   handler errors {_num(cur.handler_errors)}   accept errors {errors}")
    lines.append(f"gc           runs {_num(cur.gc_runs):>10}   full {_num(cur.gc_full):>14}"
                 f"   paused ms/s {gcs}   longest {_ms(cur.gc_longest)}")
    lines.append("")
    lines.append(f"{'PID':<9}{'WORKER':<22}STATE")
    room = height - len(lines)
    workers = sorted(cur.workers, key=lambda w: (w[0], _worker_order(w[1])))
    shown = workers if len(workers) <= room else workers[: max(room - 1, 0)]
    for pid, name, state in shown:
        stuck = cur.stuck_for.get((pid, name))
        note = f"  stuck in the app for {stuck:.1f} s" if stuck else ""
        lines.append(f"{pid:<9}{name:<22}{state}{note}")
    if len(shown) < len(workers):
        lines.append(f"... and {len(workers) - len(shown)} more")
    return _fit(lines, width, height)


def _worker_order(name: str) -> tuple[int, str]:
    tail = name.rpartition("-")[2]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def _fit(lines: list[str], width: int, height: int) -> str:
    return "\n".join(line[: max(width, 1)] for line in lines[: max(height, 1)])


# -- fetching and the state between frames --------------------------------------------------
def fetch(url: str, timeout: float) -> str:
    """GET ``url``; the body as text.

    Raises:
        OSError: the endpoint cannot be reached or answered with an error status.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data: bytes = resp.read()
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise OSError(getattr(reason, "strerror", None) or str(reason)) from None
    return data.decode("utf-8", "replace")


class Top:
    """The scrapes behind the frames: the latest, the one before, and any error.

    Args:
        url: the metrics URL.
        interval: seconds between refreshes.
        get: fetches a URL (``fetch`` by default).
    """

    def __init__(self, url: str, interval: float,
                 get: Callable[[str, float], str] = fetch) -> None:
        self.url = url
        self.interval = interval
        self.get = get
        self.cur: Scrape | None = None
        self.prev: Scrape | None = None
        self.error = ""
        self.last_ok = ""
        self._lock = threading.Lock()  # refresh() runs on the fetch thread, frame() not

    def refresh(self) -> bool:
        """Scrape once (waiting up to ``FETCH_TIMEOUT``); True if it answered."""
        try:
            text = self.get(self.url, FETCH_TIMEOUT)
            scrape = Scrape.from_text(text, time.monotonic())
        except (OSError, ValueError) as exc:
            with self._lock:
                self.error = str(exc) or type(exc).__name__
            return False
        with self._lock:
            self.prev, self.cur = self.cur, scrape
            if self.error:
                self.prev = None  # no rates across the gap
            self.error = ""
            self.last_ok = time.strftime("%H:%M:%S")
        return True

    def frame(self, width: int, height: int, interactive: bool = True) -> str:
        with self._lock:
            return render_frame(self.cur, self.prev, url=self.url, interval=self.interval,
                                width=width, height=height, error=self.error,
                                last_ok=self.last_ok, clock=time.strftime("%H:%M:%S"),
                                interactive=interactive)


# -- running it ---------------------------------------------------------------------------------
def run_once(url: str, interval: float, out: TextIO) -> int:
    """Two scrapes ``interval`` apart, one plain frame on ``out``; 1 if unreachable."""
    top = Top(url, interval)
    if not top.refresh():
        print(f"reactor top: {url} unreachable: {top.error}", file=sys.stderr)
        return 1
    time.sleep(interval)
    top.refresh()
    size = shutil.get_terminal_size((100, 40))
    out.write(top.frame(size.columns, 1000, interactive=False) + "\n")
    return 1 if top.error else 0


_ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
_LEAVE = "\x1b[?25h\x1b[?1049l"
_QUIT_KEYS = (b"q", b"Q", b"\x03")


def run_terminal(url: str, interval: float, stdin: TextIO, out: TextIO) -> int:
    """Refresh a frame every ``interval`` until ``q`` or Ctrl-C; put the terminal back.

    The terminal is in cbreak mode (keys arrive at once, unechoed; Ctrl-C still
    interrupts) on the alternate screen; each frame is drawn from the top-left corner
    with every line cleared to its end, so nothing flickers or lingers. Scrapes run on
    a thread of their own (``reactor-top-fetch``), so a slow or silent endpoint never
    delays ``q``; each one wakes the drawing loop through a pipe.

    When ``out`` is not a terminal (a pipe, a file), frames are written one after the
    other as plain text, a blank line between them, until Ctrl-C or SIGTERM's default.
    """
    import termios
    import tty

    fd = stdin.fileno()
    interactive = os.isatty(fd)
    screen = out.isatty()
    saved = termios.tcgetattr(fd) if interactive else None
    top = Top(url, interval)
    stop = threading.Event()
    wake_r, wake_w = os.pipe()

    def fetch_loop() -> None:
        try:
            while not stop.is_set():
                began = time.monotonic()
                top.refresh()
                with contextlib.suppress(OSError):
                    os.write(wake_w, b".")
                stop.wait(max(interval - (time.monotonic() - began), 0.0))
        finally:  # this thread owns the pipe: it may be mid-scrape when the loop ends
            os.close(wake_r)
            os.close(wake_w)

    fetcher = threading.Thread(target=fetch_loop, name="reactor-top-fetch", daemon=True)
    try:
        if interactive:
            tty.setcbreak(fd)
        if screen:
            out.write(_ENTER)
        fetcher.start()
        watch = [fd, wake_r] if interactive else [wake_r]
        while True:
            if screen:
                size = shutil.get_terminal_size((100, 40))
                lines = top.frame(size.columns, size.lines).split("\n")
                out.write("\x1b[H" + "\x1b[K\r\n".join(lines) + "\x1b[K\x1b[J")
                out.flush()
            ready, _, _ = select.select(watch, [], [], interval)  # a timeout redraws (resize)
            if wake_r in ready:
                os.read(wake_r, 4096)
                if not screen:  # one plain frame per scrape
                    out.write(top.frame(100, 1000, interactive=interactive) + "\n\n")
                    out.flush()
            if fd in ready and interactive:
                keys = os.read(fd, 64)
                if not keys or any(k in keys for k in _QUIT_KEYS):
                    return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader went away (``reactor top URL | head``)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # no error at exit
        return 0
    finally:
        stop.set()
        if screen:
            out.write(_LEAVE)
            out.flush()
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if not fetcher.is_alive() and fetcher.ident is None:  # never started
            os.close(wake_r)
            os.close(wake_w)
