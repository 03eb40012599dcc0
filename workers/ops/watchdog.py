"""The watchdog: say which request is stuck in the app, and where (``--timeout``).

gunicorn kills a worker that has been silent for ``--timeout`` seconds, and the
operator learns only that it was killed. Here a request that has been inside the
application longer than ``timeout`` is *reported*, once, with its method and path,
how long it has been there, and the stack of the thread serving it (which names the
function it is blocked in); it is counted in ``Server.stats()["stuck_requests"]`` and
left to finish. Replacing a process whose every worker is stuck is the supervisor's
job (``mioreactor.workers.process.supervisor``): it is told through ``Watchdog.all_stuck``.

Cost on the request path: none here. Each worker's ``BlockingSection`` stores the
time it entered the app in ``SlotHolder.app_since`` (one attribute store on entry,
one on exit; no timer object, no lock); for an ASGI app, each step of the loop
stores it the same way (``mioreactor.workers.asgi.loop``, ``LoopDriver.watch``), so a
coroutine that blocks the loop is reported like a stuck WSGI call. This thread wakes every ``timeout / 4``
seconds (at most 1 s, at least 50 ms), reads those marks, and only does work (reading
``sys._current_frames()``) for a worker past the limit.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.worker import Worker

__all__ = ["Watchdog"]

log = logging.getLogger("mioreactor.watchdog")


class Watchdog:
    """The ``reactor-watchdog`` thread of one ``Server``.

    Args:
        workers: the server's workers.
        timeout: seconds inside the app after which a request is reported (> 0).
    """

    def __init__(self, workers: Sequence[Worker], timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.workers = list(workers)
        self.timeout = timeout
        self.interval = min(max(timeout / 4, 0.05), 1.0)
        self.stuck_requests = 0  # requests reported stuck, ever
        self._reported: dict[int, float] = {}  # worker index -> app_since reported
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reactor-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:  # never let a report kill the watchdog
                log.exception("watchdog scan failed")

    # -- what it sees ----------------------------------------------------------------
    def stuck_for(self, worker: Worker, now: float | None = None) -> float:
        """Seconds ``worker`` has been inside the app, if past the timeout; else 0.0."""
        since = worker._holder.app_since
        if not since:
            return 0.0
        elapsed = (time.monotonic() if now is None else now) - since
        return elapsed if elapsed >= self.timeout else 0.0

    def stuck_now(self) -> int:
        """Workers inside the app for longer than the timeout, now."""
        now = time.monotonic()
        return sum(1 for w in self.workers if self.stuck_for(w, now))

    @property
    def all_stuck(self) -> bool:
        """Every worker has been inside the app for longer than the timeout."""
        return bool(self.workers) and self.stuck_now() == len(self.workers)

    def describe(self, worker: Worker) -> str:
        """``GET /path`` of the request ``worker`` serves, if its handler can tell."""
        conn = worker._holder.current
        describe = getattr(worker.handler, "describe", None)
        if conn is None or describe is None:
            return "a request"
        try:
            return str(describe(conn))
        except Exception:  # the connection changed under us: say less
            return "a request"

    # -- the scan --------------------------------------------------------------------
    def scan(self) -> int:
        """Report each request newly past the timeout; the number reported."""
        now = time.monotonic()
        reported = 0
        for w in self.workers:
            since = w._holder.app_since
            if not since:
                self._reported.pop(w.index, None)
                continue
            if now - since < self.timeout or self._reported.get(w.index) == since:
                continue
            self._reported[w.index] = since
            self.stuck_requests += 1
            reported += 1
            self._report(w, now - since)
        return reported

    def _report(self, worker: Worker, elapsed: float) -> None:
        what = self.describe(worker)
        ident = worker._thread.ident
        frame = sys._current_frames().get(ident) if ident is not None else None
        stack = _app_stack(frame) if frame is not None else "  (no stack)\n"
        log.warning(
            "stuck request: %s has been inside the app for %.1f s (--timeout %g) on %s, "
            "pid %d; it is left to finish. Stack of the thread serving it:\n%s",
            what, elapsed, self.timeout, worker.name, os.getpid(), stack.rstrip("\n"),
        )


# The server's code: ``workers/`` (this file is in ``workers/ops/``). The stack is cut
# at its last frame above the app's.
_OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _app_stack(frame: FrameType) -> str:
    """The stack from the server's call into the app down to where it is now.

    The frames above (threading, the worker loop, the HTTP handler) are the same for
    every request and hide the part that matters; the last frame of the server's own
    code is kept, as it shows which call into the app this is.
    """
    summary = traceback.extract_stack(frame)
    ours = [i for i, f in enumerate(summary) if f.filename.startswith(_OURS)]
    start = ours[-1] if ours and ours[-1] < len(summary) - 1 else 0
    return "".join(traceback.format_list(summary[start:]))
