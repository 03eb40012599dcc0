"""How often the cyclic garbage collector ran, and how long it stopped the process.

A collection holds the interpreter (every thread waits), so its pauses are part of
every request's latency; a full one over a large heap takes milliseconds (10-14 ms
over the ~50k objects of a process with FastAPI loaded). Counted here, per
generation, for ``Server.stats()`` (``gc``) and ``/metrics``
(``reactor_gc_collections_total``, ``reactor_gc_pause_seconds_total``,
``reactor_gc_longest_pause_seconds``): what made the ``Connection: close`` p99 9.5 ms
was the collector (docs/design.md, "No garbage cycles"), and it shows here first.

One callback in ``gc.callbacks`` for the process, installed by the first server that
starts (``install``) and left in place: a collection costs it two calls. No lock:
CPython runs one collection at a time (a collection does not start while another is
running, on any build), so the callback is the only writer; readers copy.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

__all__ = ["GENERATIONS", "install", "reset", "snapshot"]

GENERATIONS = 3

_perf = time.perf_counter
_install_lock = threading.Lock()


class _Tally:
    """What the callback has counted (one for the process)."""

    __slots__ = ("collections", "longest", "pause", "started")

    def __init__(self) -> None:
        self.started = 0.0  # when the collection in progress began; 0: none seen
        self.clear()

    def clear(self) -> None:
        self.collections = [0] * GENERATIONS
        self.pause = [0.0] * GENERATIONS
        self.longest = 0.0


_TALLY = _Tally()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    tally = _TALLY
    if phase == "start":
        tally.started = _perf()
        return
    if not tally.started:
        return  # installed during a collection: its start was not seen
    took = _perf() - tally.started
    generation = info.get("generation", GENERATIONS - 1)
    if not 0 <= generation < GENERATIONS:
        generation = GENERATIONS - 1
    tally.collections[generation] += 1
    tally.pause[generation] += took
    if took > tally.longest:
        tally.longest = took


def install() -> None:
    """Count collections from now on (idempotent; the callback stays for the process)."""
    with _install_lock:
        if _on_gc not in gc.callbacks:
            gc.callbacks.append(_on_gc)


def reset() -> None:
    """Count from zero: ``reactor serve`` calls it after its own start-up collection
    (``runner.settle_heap``), whose one full pass over the whole heap says nothing of
    the pauses while serving."""
    _TALLY.clear()


def snapshot() -> dict[str, Any]:
    """``collections`` and ``pause_seconds`` per generation (youngest first), and the
    ``longest_pause`` seconds, since ``install``."""
    tally = _TALLY
    return {
        "collections": list(tally.collections),
        "pause_seconds": [round(s, 6) for s in tally.pause],
        "longest_pause": round(tally.longest, 6),
    }
