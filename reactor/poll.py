"""Poll and Registry: wait for readiness, and say what to wait for (mio ``poll.rs``).

Waiting is separate from dispatching: ``Poll.poll`` fills a reusable ``Events``
buffer and returns; what to do with the events lives with the caller.

Draining readiness
------------------
Every backend is edge triggered. After an event, the receiver must perform the
operation until it raises ``BlockingIOError`` (read, write, accept); only then is a
new event guaranteed when readiness returns. Stopping early can mean never hearing
about that source again.

One exception, for stream sockets on epoll and kqueue (``Stream.short_io_drains``;
tokio-rs/tokio#5866): a read that returns fewer bytes than asked (and more than 0)
counts as drained, and so does a write that sends less than offered. The kernel
only returns short when the queue ran dry (or the buffer filled), and whatever
arrives (or frees) after that raises a new edge. ``accept()`` is never shortened,
an event with the read-closed bit still means read to end of stream, and the
fallback backend, whose edges are emulated, keeps the strict rule.

Spurious events
---------------
An event may arrive with nothing to do (readiness can be consumed by a previous
drain, or reported twice). Every receiver must accept an event whose operation
raises ``BlockingIOError`` at once.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Protocol

from . import sys as _sys
from .event import Events
from .interest import Interest

__all__ = ["Poll", "Registry", "Source", "Waker", "timeout_to_ms"]


class Source(Protocol):
    """Anything with a file descriptor: sockets, ``mioreactor.reactor.net`` types, pipes."""

    def fileno(self) -> int: ...


def _fd_of(source: Source | int) -> int:
    fd = source if isinstance(source, int) else source.fileno()
    if fd < 0:
        raise ValueError(f"cannot register a closed source ({source!r})")
    return fd


def timeout_to_ms(timeout: float | None) -> int | None:
    """Seconds to whole milliseconds, rounded up so a wait is never cut short.

    ``None`` blocks, ``0`` (or less) does not block, and any positive time rounds up
    to the next millisecond (``0.0001`` waits 1 ms, not 0).
    """
    if timeout is None:
        return None
    if timeout <= 0:
        return 0
    return math.ceil(timeout * 1000)


class Registry:
    """Registers sources with a ``Poll``. Usable from any thread, and cloneable.

    The registry never owns or keeps sources; it knows file descriptors and tokens.
    """

    __slots__ = ("_backend", "_poll_state", "_rearm", "_selector")

    def __init__(self, selector: Any, backend: Any, poll_state: _PollState) -> None:
        self._selector = selector
        self._backend = backend
        self._poll_state = poll_state
        # Only an emulated backend (fallback) re-arms through the source: elsewhere
        # the source needs no hook, and registering costs no call to set one.
        self._rearm = bool(selector.NEEDS_REARM)

    @property
    def backend_name(self) -> str:
        """``epoll``, ``kqueue`` or ``fallback``."""
        return str(self._backend.NAME)

    def register(self, source: Source | int, token: int, interests: Interest) -> None:
        """Start reporting readiness of ``source`` under ``token``, edge triggered.

        Args:
            source: a socket, a ``mioreactor.reactor.net`` type, or a file descriptor.
            token: the caller's name for it (an ``int``; the caller owns the map).
            interests: a non-empty ``Interest``.

        Raises:
            FileExistsError: the source is registered already.
            ValueError: the source is closed.
            TypeError: ``interests`` is not an ``Interest``.
            OSError: the kernel refused; nothing was recorded.
        """
        if not isinstance(interests, Interest):
            _bits(interests)  # raises the TypeError
        fd = source if isinstance(source, int) else source.fileno()  # _fd_of, inline
        if fd < 0:
            _fd_of(source)  # raises the ValueError
        bits = interests._bits  # the ``bits`` property, without the call
        self._selector.register(fd, token, bits)
        if self._rearm:
            _attach(source, self._selector, fd, bits)

    def reregister(self, source: Source | int, token: int, interests: Interest) -> None:
        """Replace the token and interest of a registered source, and re-arm its edges.

        Raises:
            FileNotFoundError: the source is not registered.
        """
        bits = _bits(interests)
        fd = _fd_of(source)
        self._selector.reregister(fd, token, bits)
        _attach(source, self._selector, fd, bits)

    def deregister(self, source: Source | int) -> None:
        """Stop reporting readiness. No event for it is translated after this returns.

        Deregister before close: a closed descriptor cannot be named to the kernel.

        Raises:
            FileNotFoundError: the source is not registered.
        """
        fd = source if isinstance(source, int) else source.fileno()  # _fd_of, inline
        if fd < 0:
            _fd_of(source)  # raises the ValueError
        if not self._rearm:
            self._selector.deregister(fd)
            return
        try:
            self._selector.deregister(fd)
        finally:
            _attach(source, None, fd, 0)

    def try_clone(self) -> Registry:
        """Another handle on the same Poll (for another thread)."""
        return Registry(self._selector, self._backend, self._poll_state)

    def _new_waker(self, token: int) -> Any:
        with self._poll_state.lock:
            if self._poll_state.has_waker:
                raise ValueError("this Poll already has a Waker (mio allows one per Poll)")
            waker = self._selector.new_waker(token)
            self._poll_state.has_waker = True
        return waker

    def _drop_waker(self) -> None:
        with self._poll_state.lock:
            self._poll_state.has_waker = False


def _bits(interests: Interest) -> int:
    if not isinstance(interests, Interest):
        raise TypeError(f"interests must be an Interest, not {type(interests).__name__}")
    return interests.bits


def _attach(source: Source | int, selector: Any, fd: int, bits: int) -> None:
    """Tell a ``mioreactor.reactor.net`` source how to re-arm itself (fallback backend only)."""
    hook = getattr(source, "_reactor_attach", None)
    if hook is not None:
        hook(selector if selector is not None and selector.NEEDS_REARM else None, fd, bits)


class _PollState:
    __slots__ = ("has_waker", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.has_waker = False


class Poll:
    """The readiness queue: one per event loop thread (mio ``Poll``).

    Args:
        backend: ``"epoll"``, ``"kqueue"`` or ``"fallback"``; default: the one probed at
            import (``REACTOR_BACKEND`` overrides).

    Raises:
        ValueError: for a backend this machine does not offer.
    """

    def __init__(self, backend: str | None = None) -> None:
        module = _sys.load_backend(backend)
        selector = module.Selector()
        self._selector = selector
        self._state = _PollState()
        self.registry = Registry(selector, module, self._state)
        self._closed = False

    @property
    def backend_name(self) -> str:
        return self.registry.backend_name

    def poll(self, events: Events, timeout: float | None) -> None:
        """Wait for readiness and fill ``events`` (cleared first).

        Args:
            events: the reusable buffer; at most ``events.capacity`` are returned, the
                rest come with the next poll.
            timeout: seconds; ``None`` blocks until an event, ``0`` returns at once,
                a positive value is rounded **up** to whole milliseconds.

        Signals (PEP 475, see docs/decisions.md): CPython runs the Python handler when
        a signal interrupts the wait. If the handler raises, ``poll`` raises that
        exception; if it returns, the wait resumes with the time left, so a plain
        handler does *not* end the poll (mio's "EINTR returns no events" does not hold
        here). A handler that must end the poll calls ``Waker.wake()``.

        The fallback backend never returns empty before ``timeout`` just because
        another thread changed a registration; any backend may still return an event
        with nothing to do (see "Spurious events").
        """
        raw = events.raw
        raw.clear()
        self._selector.select(raw, events.capacity, timeout_to_ms(timeout))

    def close(self) -> None:
        """Release the kernel object. Registered sources are not closed."""
        if not self._closed:
            self._closed = True
            self._selector.close()

    def __enter__(self) -> Poll:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Waker:
    """Wakes a blocking ``Poll.poll`` from another thread (mio ``Waker``).

    ``wake()`` makes the poll report ``token`` as readable. Wakes before a poll
    coalesce into one event and are never lost; a wake after a poll gives a new
    event. One Waker per Poll. eventfd on Linux, EVFILT_USER on kqueue, a pipe on the
    fallback.
    """

    __slots__ = ("_impl", "_registry", "token")

    def __init__(self, registry: Registry, token: int) -> None:
        self._impl = registry._new_waker(token)
        self._registry = registry
        self.token = token

    def wake(self) -> None:
        """Wake the poll. Safe from any thread; never blocks."""
        self._impl.wake()

    def close(self) -> None:
        self._impl.close()
        self._registry._drop_waker()
