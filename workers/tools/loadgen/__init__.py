"""``reactor bench``: a load generator built on ``reactor`` itself.

::

    from mioreactor.workers.tools.loadgen import BenchConfig, run_bench

    result = run_bench(BenchConfig(url="http://127.0.0.1:8080/", connections=50, duration=10))
    print(result.to_text())

One thread, one ``Poll``, non-blocking connects, edge-triggered drains, responses
parsed by ``httptools``. Unlike wrk and siege it says what happened to connections
(attempted, established, refused, reset, timed out, other errors by errno) and, when
connects fail, the likely host-side cause (``BenchResult.diagnosis``). A ``ws://`` (or
``wss://``) URL loads a WebSocket echo endpoint instead (``websocket.WsEngine``): a
``WsBenchResult`` with messages per second, send-to-echo latency, handshakes, close
codes and protocol errors. Loopback only unless ``allow_remote``; every run is bounded
in time and count. See docs/bench.md.
"""

from __future__ import annotations

from .config import (
    MAX_CONNECTIONS,
    MAX_DURATION,
    MAX_REQUESTS,
    BenchConfig,
    Target,
    resolve_target,
)
from .diagnosis import HostProbe, diagnose, raise_nofile, restore_nofile
from .engine import Engine, ProgressCallback
from .result import BenchResult, ConnectionCounts, LatencyHistogram, WsBenchResult
from .websocket import WsEngine

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_DURATION",
    "MAX_REQUESTS",
    "BenchConfig",
    "BenchResult",
    "ConnectionCounts",
    "LatencyHistogram",
    "ProgressCallback",
    "Target",
    "WsBenchResult",
    "resolve_target",
    "run_bench",
]


def run_bench(config: BenchConfig, progress: ProgressCallback | None = None) -> BenchResult:
    """Load ``config.url`` and return what happened.

    Resolves the target and checks it (before any traffic), raises the soft descriptor
    limit to the hard one for the run, reads ListenOverflows before and after, runs the
    event loop, and fills ``result.diagnosis``.

    Args:
        config: the run.
        progress: called as ``progress(elapsed_s, snapshot)`` about every 0.5 s with
            an independent snapshot ``BenchResult`` (``finished`` False).

    Returns:
        The result; ``result.ok`` says whether every connection behaved.

    Raises:
        ValueError: the host does not resolve, or resolves to a remote address
            without ``allow_remote``.
    """
    target = resolve_target(config)
    soft, hard, raised_from = raise_nofile()
    probe = HostProbe()
    probe.start()
    try:
        engine = (WsEngine if config.websocket else Engine)(config, target, progress)
        result = engine.run()
    finally:
        if raised_from is not None:
            restore_nofile(raised_from)
    result.nofile = (soft, hard)
    result.nofile_raised_from = raised_from
    result.listen_overflows = probe.deltas()
    result.diagnosis = diagnose(result, config, target)
    return result
