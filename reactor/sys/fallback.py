"""The portable fallback on the standard library ``selectors`` (mio ``sys/unix/selector/poll.rs``).

``selectors`` is level triggered. We emulate edges the way mio's poll(2) backend
does: once readiness is reported for an fd, that direction is *disarmed* and not
watched again until the owner re-arms it, which ``mioreactor.reactor.net`` does when an
operation raises ``BlockingIOError`` (and ``reregister`` does too). The receiver
therefore sees exactly what an edge-triggered kernel would show: one report, then
silence until it has drained.

Consequences, written where they bite:
- Register a ``mioreactor.reactor.net`` source (or call ``reregister`` after a would-block) so
  something re-arms it; a bare fd is reported once per registration.
- ``read_closed``/``write_closed`` are not known here; reading end-of-file tells.
- A blocking ``select`` does not see changes made by other threads, so every change
  wakes it through an internal pipe and it polls again (as mio's poll backend does).

``selectors.PollSelector`` is used where ``poll(2)`` exists, else ``SelectSelector``.
``selectors2`` (the original design's choice) is an older fork of this very module and
does not import on Python 3.10+ (``collections.Mapping``); see docs/decisions.md.
"""

from __future__ import annotations

import errno
import os
import selectors
import threading
import time

from ..event import READABLE, WRITABLE

__all__ = ["NAME", "NEEDS_REARM", "PipeWaker", "Selector"]

NAME = "fallback"
NEEDS_REARM = True

_R = selectors.EVENT_READ
_W = selectors.EVENT_WRITE


def _sel_events(bits: int) -> int:
    return (_R if bits & 1 else 0) | (_W if bits & 2 else 0)


def _make_selector() -> selectors.BaseSelector:
    if hasattr(selectors, "PollSelector"):
        return selectors.PollSelector()
    return selectors.SelectSelector()  # pragma: no cover - non-POSIX


class _Entry:
    __slots__ = ("armed", "interest", "token")

    def __init__(self, token: int, interest: int) -> None:
        self.token = token
        self.interest = interest
        self.armed = interest


class Selector:
    """Edge emulation over a level-triggered ``selectors`` selector. Thread-safe."""

    NEEDS_REARM = True

    def __init__(self) -> None:
        self._sel = _make_selector()
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._sel.register(self._wake_r, _R)
        self._wakers: dict[int, PipeWaker] = {}
        self._polling = False

    # -- bookkeeping (all under the lock) ---------------------------------------
    def _apply(self, fd: int, entry: _Entry | None, was_watched: bool) -> None:
        """Make the selector watch exactly ``entry.armed`` for ``fd``."""
        events = _sel_events(entry.armed) if entry is not None else 0
        if events and was_watched:
            self._sel.modify(fd, events)
        elif events:
            self._sel.register(fd, events)
        elif was_watched:
            self._sel.unregister(fd)

    def _interrupt(self) -> None:
        if self._polling:
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass

    def register(self, fd: int, token: int, interest_bits: int) -> None:
        if fd < 0:
            raise ValueError(f"invalid file descriptor {fd}")
        # poll(2) takes any number and reports a bad one as POLLNVAL, forever ready;
        # refuse it here as epoll_ctl and kevent do (EBADF), before any bookkeeping.
        os.fstat(fd)
        with self._lock:
            if fd in self._entries:
                raise FileExistsError(errno.EEXIST, f"fd {fd} is already registered")
            entry = _Entry(token, interest_bits)
            self._apply(fd, entry, False)
            self._entries[fd] = entry
            self._interrupt()

    def reregister(self, fd: int, token: int, interest_bits: int) -> None:
        with self._lock:
            old = self._entries.get(fd)
            if old is None:
                raise FileNotFoundError(errno.ENOENT, f"fd {fd} is not registered")
            entry = _Entry(token, interest_bits)
            self._apply(fd, entry, bool(old.armed))
            self._entries[fd] = entry
            self._interrupt()

    def deregister(self, fd: int) -> None:
        with self._lock:
            old = self._entries.get(fd)
            if old is None:
                raise FileNotFoundError(errno.ENOENT, f"fd {fd} is not registered")
            del self._entries[fd]
            if old.armed:
                try:
                    self._sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
            self._interrupt()

    def rearm(self, fd: int, interest_bits: int) -> None:
        with self._lock:
            entry = self._entries.get(fd)
            if entry is None:
                return
            want = entry.armed | (interest_bits & entry.interest)
            if want == entry.armed:
                return
            was = bool(entry.armed)
            entry.armed = want
            self._apply(fd, entry, was)
            self._interrupt()

    # -- waiting ----------------------------------------------------------------
    def select(self, out: list[tuple[int, int]], capacity: int, timeout_ms: int | None) -> None:
        timeout = None if timeout_ms is None else timeout_ms / 1000.0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                self._polling = True
            try:
                ready = self._sel.select(timeout)
            finally:
                with self._lock:
                    self._polling = False
            self._collect(out, capacity, ready)
            # Nothing to report, but something woke us: the internal pipe (another
            # thread changed a registration) or readiness that was consumed or
            # deregistered meanwhile. Wait again, with what is left of the timeout, so
            # a blocking poll never returns empty before its time (mio's poll backend
            # loops the same way).
            if out or not ready:
                return
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return

    def _collect(
        self,
        out: list[tuple[int, int]],
        capacity: int,
        ready: list[tuple[selectors.SelectorKey, int]],
    ) -> None:
        with self._lock:
            for key, mask in ready:
                fd = key.fd
                if fd == self._wake_r:
                    self._drain(fd)
                    continue
                waker = self._wakers.get(fd)
                if waker is not None:
                    if len(out) < capacity:
                        self._drain(fd)
                        out.append((waker.token, READABLE))
                    continue
                entry = self._entries.get(fd)
                if entry is None or len(out) >= capacity:
                    continue  # gone, or reported by the next poll (still armed)
                bits = (READABLE if mask & _R else 0) | (WRITABLE if mask & _W else 0)
                bits &= entry.armed
                if not bits:
                    continue
                out.append((entry.token, bits))
                was = bool(entry.armed)
                entry.armed &= ~bits
                self._apply(fd, entry, was)

    @staticmethod
    def _drain(fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass

    def new_waker(self, token: int) -> PipeWaker:
        waker = PipeWaker(self, token)
        with self._lock:
            self._wakers[waker.read_fd] = waker
            self._sel.register(waker.read_fd, _R)
            self._interrupt()
        return waker

    def _drop_waker(self, waker: PipeWaker) -> None:
        with self._lock:
            if self._wakers.pop(waker.read_fd, None) is not None:
                self._sel.unregister(waker.read_fd)

    def close(self) -> None:
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


class PipeWaker:
    """A waker on a non-blocking pipe: a byte written wakes the selector.

    The selector drains the pipe when it reports the wake, so wakes before a poll
    coalesce, and a wake after it is a new event.
    """

    def __init__(self, selector: Selector, token: int) -> None:
        self.token = token
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._selector = selector

    def wake(self) -> None:
        try:
            os.write(self._write_fd, b"\1")
        except BlockingIOError:
            pass  # a wake is pending already: wakes coalesce

    def close(self) -> None:
        if self._write_fd >= 0:
            self._selector._drop_waker(self)
            os.close(self.read_fd)
            os.close(self._write_fd)
            self._write_fd = -1
