"""The platform layer: one selector backend per file (mio ``src/sys/``).

The contract every backend meets
================================
A backend module exposes ``NAME`` and a ``Selector`` class with:

``register(fd, token, interest_bits)``
    Start reporting readiness of ``fd`` under ``token``, edge triggered.
    Raises ``FileExistsError`` if ``fd`` is registered already.
``reregister(fd, token, interest_bits)``
    Replace token and interest; re-arms the edge (readiness that holds now is
    reported again). Raises ``FileNotFoundError`` for an unknown ``fd``.
``deregister(fd)``
    Stop reporting; after it returns, no poll translates an event for ``fd``.
    Raises ``FileNotFoundError`` for an unknown ``fd``.
``select(out, capacity, timeout_ms)``
    Block until readiness, or ``timeout_ms`` (None: forever, 0: do not block),
    then append at most ``capacity`` ``(token, bits)`` tuples to ``out``, with the
    portable bits of ``mioreactor.reactor.event``. A signal interrupting the wait runs its
    Python handler (PEP 475): a handler that raises ends ``select`` with its
    exception; one that returns lets the wait resume with the time left.
    Readiness beyond ``capacity`` is reported by the next call.
``new_waker(token)``
    A waker object (``wake()``, ``close()``) that makes ``select`` report ``token``
    readable. Wakes before a select coalesce into one event; a wake after a select
    produces a new one.
``rearm(fd, interest_bits)``
    Called by ``mioreactor.reactor.net`` sources after an operation raised ``BlockingIOError``
    when ``NEEDS_REARM`` is true (the fallback's emulated edges). A no-op otherwise.
``close()``
    Release the kernel object.

Every register call either succeeds or leaves the backend's bookkeeping as it was.
Every method may be called from any thread, including while another thread blocks in
``select``.

Choosing a backend
==================
Probed once at import, as CPython's ``selectors._can_use`` does: a backend is used if
its kernel object can really be created, not because of ``sys.platform``. The order is
epoll, kqueue, then the portable fallback. ``REACTOR_BACKEND=epoll|kqueue|fallback``
in the environment (or ``Poll(backend=...)``) forces one.
"""

from __future__ import annotations

import importlib
import os
import select
from types import ModuleType

__all__ = ["BACKEND_NAME", "available_backends", "load_backend"]


def _can_use(name: str) -> bool:
    if name == "fallback":
        return True
    factory = getattr(select, name, None)
    if factory is None:
        return False
    try:
        obj = factory()
    except OSError:
        return False
    obj.close()
    return True


def available_backends() -> list[str]:
    """The backends this kernel really offers, best first."""
    return [name for name in ("epoll", "kqueue", "fallback") if _can_use(name)]


def load_backend(name: str | None = None) -> ModuleType:
    """Return the backend module called ``name``, or the default one.

    Raises:
        ValueError: for an unknown name or one this machine does not offer.
    """
    name = name or BACKEND_NAME
    if name not in ("epoll", "kqueue", "fallback"):
        raise ValueError(f"unknown reactor backend {name!r} (expected epoll, kqueue or fallback)")
    if not _can_use(name):
        raise ValueError(
            f"reactor backend {name!r} is not available on this machine; it offers "
            f"{', '.join(available_backends())}"
        )
    return importlib.import_module(f".{name}", __name__)


def _default() -> str:
    forced = os.environ.get("REACTOR_BACKEND", "").strip().lower()
    if forced:
        if forced not in ("epoll", "kqueue", "fallback") or not _can_use(forced):
            raise ImportError(
                f"REACTOR_BACKEND={forced!r} is not available here; "
                f"choose one of {', '.join(available_backends())}"
            )
        return forced
    return available_backends()[0]


BACKEND_NAME: str = _default()
