"""The kqueue backend (macOS, FreeBSD, NetBSD, OpenBSD) with EV_CLEAR (mio ``kqueue.rs``).

EV_CLEAR makes kqueue edge triggered: after a filter is reported its state is reset,
and it fires again only when the condition changes (new data, more buffer space).
Read and write are separate filters, so one fd may yield two events in one poll,
one per filter; they carry the same token (kqueue's ``udata``).

kqueue does not refuse a second EV_ADD (it modifies), so the registered set is kept
here to give the same errors as the other backends. The waker is EVFILT_USER with
NOTE_TRIGGER where the kernel has it, else a pipe.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import threading
from typing import Any

from ..event import ERROR, READ_CLOSED, READABLE, WRITABLE, WRITE_CLOSED

__all__ = ["NAME", "NEEDS_REARM", "Selector"]

NAME = "kqueue"
NEEDS_REARM = False

_k: Any = select  # the KQ_* names exist only on BSD builds of CPython
_FILTER_READ: int = getattr(_k, "KQ_FILTER_READ", -1)
_FILTER_WRITE: int = getattr(_k, "KQ_FILTER_WRITE", -2)
_EV_ADD: int = getattr(_k, "KQ_EV_ADD", 0x1)
_EV_DELETE: int = getattr(_k, "KQ_EV_DELETE", 0x2)
_EV_CLEAR: int = getattr(_k, "KQ_EV_CLEAR", 0x20)
_EV_RECEIPT: int = 0x40
_EV_EOF: int = getattr(_k, "KQ_EV_EOF", 0x8000)
_EV_ERROR: int = getattr(_k, "KQ_EV_ERROR", 0x4000)
# EVFILT_USER is not exported by CPython; its number differs by kernel.
_FILTER_USER: int | None = {"darwin": -10, "freebsd": -11}.get(
    "freebsd" if sys.platform.startswith("freebsd") else sys.platform
)
_NOTE_TRIGGER = 0x01000000


def _kevent(fd: int, filt: int, flags: int, udata: int = 0, fflags: int = 0) -> Any:
    return _k.kevent(fd, filter=filt, flags=flags, fflags=fflags, udata=udata)


class Selector:
    """A kqueue plus the set of registered fds. Thread-safe."""

    NEEDS_REARM = False

    def __init__(self) -> None:
        self._kq = _k.kqueue()
        self._interest: dict[int, int] = {}
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return int(self._kq.fileno())

    def _changes(self, fd: int, token: int, new: int, old: int) -> list[Any]:
        changes = []
        for bit, filt in ((1, _FILTER_READ), (2, _FILTER_WRITE)):
            if new & bit:
                changes.append(_kevent(fd, filt, _EV_ADD | _EV_CLEAR | _EV_RECEIPT, token))
            elif old & bit:
                changes.append(_kevent(fd, filt, _EV_DELETE | _EV_RECEIPT, token))
        return changes

    def _submit(self, changes: list[Any]) -> None:
        # EV_RECEIPT: every change comes back with EV_ERROR set and data = errno (0 = ok).
        for ev in self._kq.control(changes, len(changes), 0):
            if ev.flags & _EV_ERROR and ev.data not in (0, errno.ENOENT, errno.EPIPE):
                raise OSError(ev.data, f"kevent: {errno.errorcode.get(ev.data, ev.data)}")

    def register(self, fd: int, token: int, interest_bits: int) -> None:
        with self._lock:
            if fd in self._interest:
                raise FileExistsError(errno.EEXIST, f"fd {fd} is already registered")
            self._submit(self._changes(fd, token, interest_bits, 0))
            self._interest[fd] = interest_bits

    def reregister(self, fd: int, token: int, interest_bits: int) -> None:
        with self._lock:
            old = self._interest.get(fd)
            if old is None:
                raise FileNotFoundError(errno.ENOENT, f"fd {fd} is not registered")
            self._submit(self._changes(fd, token, interest_bits, old))
            self._interest[fd] = interest_bits

    def deregister(self, fd: int) -> None:
        with self._lock:
            old = self._interest.pop(fd, None)
            if old is None:
                raise FileNotFoundError(errno.ENOENT, f"fd {fd} is not registered")
            try:
                self._submit(self._changes(fd, 0, 0, old))
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise

    def rearm(self, fd: int, interest_bits: int) -> None:
        """Edges are real here: nothing to re-arm."""

    def select(self, out: list[tuple[int, int]], capacity: int, timeout_ms: int | None) -> None:
        timeout = None if timeout_ms is None else timeout_ms / 1000.0
        try:
            ready = self._kq.control(None, capacity, timeout)
        except InterruptedError:
            return
        registered = self._interest
        for ev in ready:
            filt = ev.filter
            if filt == _FILTER_USER:
                out.append((int(ev.udata), READABLE))
                continue
            if ev.ident not in registered:
                continue
            bits = 0
            flags = ev.flags
            if filt == _FILTER_READ:
                bits = READABLE | (READ_CLOSED if flags & _EV_EOF else 0)
            elif filt == _FILTER_WRITE:
                bits = WRITABLE | (WRITE_CLOSED if flags & _EV_EOF else 0)
            if flags & _EV_ERROR:
                bits |= ERROR
            out.append((int(ev.udata), bits))

    def new_waker(self, token: int) -> Any:
        if _FILTER_USER is not None:
            try:
                return UserWaker(self, token)
            except OSError:
                pass
        return _PipeWakerKq(self, token)

    def close(self) -> None:
        self._kq.close()


class UserWaker:
    """EVFILT_USER with EV_CLEAR: triggers coalesce until the next poll reports one."""

    _next_ident = 1

    def __init__(self, selector: Selector, token: int) -> None:
        assert _FILTER_USER is not None
        self._kq = selector._kq
        self._ident = UserWaker._next_ident
        UserWaker._next_ident += 1
        self._token = token
        self._kq.control(
            [_kevent(self._ident, _FILTER_USER, _EV_ADD | _EV_CLEAR | _EV_RECEIPT, token)], 1, 0
        )

    def wake(self) -> None:
        assert _FILTER_USER is not None
        self._kq.control([_kevent(self._ident, _FILTER_USER, 0, self._token, _NOTE_TRIGGER)], 0, 0)

    def close(self) -> None:
        assert _FILTER_USER is not None
        try:
            self._kq.control([_kevent(self._ident, _FILTER_USER, _EV_DELETE)], 0, 0)
        except OSError:
            pass


class _PipeWakerKq:
    """A pipe registered for reading: the portable waker where EVFILT_USER is missing."""

    def __init__(self, selector: Selector, token: int) -> None:
        self._selector = selector
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        selector.register(self._r, token, 1)

    def wake(self) -> None:
        # Drain first so the write is a fresh edge; then write one byte.
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        try:
            os.write(self._w, b"\1")
        except BlockingIOError:
            pass

    def close(self) -> None:
        try:
            self._selector.deregister(self._r)
        except OSError:
            pass
        os.close(self._r)
        os.close(self._w)
