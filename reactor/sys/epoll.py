"""The epoll backend (Linux), edge triggered (mio ``sys/unix/selector/epoll.rs``).

Every registration carries EPOLLET and EPOLLRDHUP. Under EPOLLET the kernel reports a
file descriptor when its readiness *changes*; an fd that stays readable because the
receiver stopped short of ``EAGAIN`` is never reported again. That is why every
reader in this project drains until ``BlockingIOError``, and why the acceptor drains
``accept()``: a listener whose backlog was not emptied gets no new edge for the
connections still queued, only for the next arrival.

epoll's event carries the fd, not our token, so this backend keeps ``fd -> token``.
The entry is written *before* ``epoll_ctl`` (an edge may arrive between the kernel
call and the bookkeeping, and must not be dropped) and rolled back if the kernel
refuses.
"""

from __future__ import annotations

import errno
import os
import select
import threading

from ..event import ERROR, PRIORITY, READ_CLOSED, READABLE, WRITABLE, WRITE_CLOSED

__all__ = ["NAME", "NEEDS_REARM", "EventFdWaker", "Selector"]

NAME = "epoll"
NEEDS_REARM = False

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_EPOLLPRI = select.EPOLLPRI
_EPOLLERR = select.EPOLLERR
_EPOLLHUP = select.EPOLLHUP
_EPOLLRDHUP = select.EPOLLRDHUP
_EPOLLET = select.EPOLLET


def _kernel_mask(interest_bits: int) -> int:
    mask = _EPOLLET | _EPOLLRDHUP
    if interest_bits & 1:
        mask |= _EPOLLIN
    if interest_bits & 2:
        mask |= _EPOLLOUT
    return mask


# Interest bits -> kernel mask, made once (registering is on every accept).
_MASKS = {bits: _kernel_mask(bits) for bits in range(16)}


def _translate(mask: int) -> int:
    """epoll mask -> portable bits, with mio's rules for the closed states."""
    bits = 0
    if mask & (_EPOLLIN | _EPOLLPRI):
        bits |= READABLE
    if mask & _EPOLLOUT:
        bits |= WRITABLE
    if mask & _EPOLLERR:
        bits |= ERROR
    if mask & _EPOLLPRI:
        bits |= PRIORITY
    if mask & _EPOLLHUP or (mask & _EPOLLIN and mask & _EPOLLRDHUP):
        bits |= READ_CLOSED
    if mask & _EPOLLHUP or (mask & _EPOLLOUT and mask & _EPOLLERR) or mask == _EPOLLERR:
        bits |= WRITE_CLOSED
    return bits


class Selector:
    """An epoll instance plus the ``fd -> token`` table. Thread-safe."""

    NEEDS_REARM = False

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._tokens: dict[int, int] = {}
        self._lock = threading.Lock()
        # The same few masks recur; translating through a dict is one lookup per event.
        self._bits_for: dict[int, int] = {}

    def fileno(self) -> int:
        return self._epoll.fileno()

    def register(self, fd: int, token: int, interest_bits: int) -> None:
        with self._lock:
            if fd in self._tokens:
                raise FileExistsError(errno.EEXIST, f"fd {fd} is already registered")
            self._tokens[fd] = token
            try:
                self._epoll.register(fd, _MASKS[interest_bits & 15])
            except BaseException:
                del self._tokens[fd]
                raise

    def reregister(self, fd: int, token: int, interest_bits: int) -> None:
        with self._lock:
            old = self._tokens.get(fd)
            if old is None:
                raise FileNotFoundError(errno.ENOENT, f"fd {fd} is not registered")
            self._tokens[fd] = token
            try:
                self._epoll.modify(fd, _MASKS[interest_bits & 15])
            except BaseException:
                self._tokens[fd] = old
                raise

    def deregister(self, fd: int) -> None:
        with self._lock:
            if fd not in self._tokens:
                raise FileNotFoundError(errno.ENOENT, f"fd {fd} is not registered")
            try:
                self._epoll.unregister(fd)
            except OSError as exc:
                # A source closed before deregister left the epoll set already (the
                # kernel drops closed descriptions): forget it, but say what happened.
                if exc.errno not in (errno.EBADF, errno.ENOENT):
                    raise
                del self._tokens[fd]
                raise
            del self._tokens[fd]

    def rearm(self, fd: int, interest_bits: int) -> None:
        """Edges are real here: nothing to re-arm."""

    def select(self, out: list[tuple[int, int]], capacity: int, timeout_ms: int | None) -> None:
        timeout = -1.0 if timeout_ms is None else timeout_ms / 1000.0
        # No InterruptedError here: CPython retries epoll_wait after a signal handler
        # that returns (PEP 475), and a handler that raises propagates from poll().
        ready = self._epoll.poll(timeout, capacity)
        # Hot path: one comprehension while every fd is known and every mask has been
        # seen (a third cheaper per event than the loop below). A fd deregistered while
        # we waited, or a mask not seen before, takes the careful loop.
        tokens = self._tokens
        bits_for = self._bits_for
        try:
            out += [(tokens[fd], bits_for[mask]) for fd, mask in ready]
        except KeyError:
            self._slow_translate(out, ready)

    def _slow_translate(self, out: list[tuple[int, int]], ready: list[tuple[int, int]]) -> None:
        tokens_get = self._tokens.get
        bits_for = self._bits_for
        append = out.append
        for fd, mask in ready:
            token = tokens_get(fd)
            if token is None:  # deregistered while we waited
                continue
            bits = bits_for.get(mask)
            if bits is None:
                bits = bits_for[mask] = _translate(mask)
            append((token, bits))

    def new_waker(self, token: int) -> EventFdWaker:
        return EventFdWaker(self, token)

    def close(self) -> None:
        self._epoll.close()


class EventFdWaker:
    """A waker on an eventfd, registered edge triggered and readable.

    Every write is a new edge, and writes between two polls show as one event. The
    counter is only read when it would overflow (mio does the same).
    """

    def __init__(self, selector: Selector, token: int) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._selector = selector
        try:
            selector.register(self._fd, token, 1)
        except BaseException:
            os.close(self._fd)
            raise

    def wake(self) -> None:
        try:
            os.eventfd_write(self._fd, 1)
        except BlockingIOError:
            self._reset()
            os.eventfd_write(self._fd, 1)

    def _reset(self) -> None:
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self._selector.deregister(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1
