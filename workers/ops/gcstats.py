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
_collections = [0] * GENERATIONS
_pause = [0.0] * GENERATIONS
_longest = [0.0]
_started = [0.0]
_installed = [False]
_install_lock = threading.Lock()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = _perf()
        return
    began = _started[0]
    if not began:
        return  # installed during a collection: its start was not seen
    took = _perf() - began
    generation = info.get("generation", GENERATIONS - 1)
    if not 0 <= generation < GENERATIONS:
        generation = GENERATIONS - 1
    _collections[generation] += 1
    _pause[generation] += took
    if took > _longest[0]:
        _longest[0] = took


def install() -> None:
    """Count collections from now on (idempotent; the callback stays for the process)."""
    with _install_lock:
        if not _installed[0]:
            gc.callbacks.append(_on_gc)
            _installed[0] = True


def reset() -> None:
    """Count from zero: ``reactor serve`` calls it after its own start-up collection
    (``runner.settle_heap``), whose one full pass over the whole heap says nothing of
    the pauses while serving."""
    for generation in range(GENERATIONS):
        _collections[generation] = 0
        _pause[generation] = 0.0
    _longest[0] = 0.0


def snapshot() -> dict[str, Any]:
    """``collections`` and ``pause_seconds`` per generation (youngest first), and the
    ``longest_pause`` seconds, since ``install``."""
    return {
        "collections": list(_collections),
        "pause_seconds": [round(s, 6) for s in _pause],
        "longest_pause": round(_longest[0], 6),
    }
