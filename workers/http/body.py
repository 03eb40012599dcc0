"""``wsgi.input``: the request body, held in memory or spooled to a temporary file.

The worker thread cannot block waiting for the socket while an application runs, so
the handler receives the whole body before it calls the application, and the
application reads from this object. Small bodies stay in one ``bytes``; a body that
grows past ``spool_threshold`` moves to an anonymous temporary file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

__all__ = ["EMPTY_BODY", "InputBody"]


class InputBody:
    """A readable, write-once request body (PEP 3333 ``wsgi.input``).

    Fill it with ``append`` while the body arrives, call ``finish`` once, then read.

    Args:
        spool_threshold: bytes kept in memory before spilling to a temporary file.
    """

    __slots__ = ("_buf", "_file", "_parts", "_pos", "_size", "_threshold")

    def __init__(self, spool_threshold: int = 1024 * 1024) -> None:
        self._threshold = spool_threshold
        self._parts: list[bytes] = []
        self._buf = b""
        self._pos = 0
        self._size = 0
        self._file: IO[bytes] | None = None

    @property
    def size(self) -> int:
        """Bytes received so far."""
        return self._size

    @property
    def spooled(self) -> bool:
        """True when the body lives in a temporary file."""
        return self._file is not None

    def append(self, data: bytes) -> None:
        """Add the next piece of the body (while it is still arriving)."""
        self._size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._parts.append(data)
        if self._size > self._threshold:
            self._file = tempfile.TemporaryFile(prefix="mioreactor-body-")
            self._file.writelines(self._parts)
            self._parts = []

    def finish(self) -> None:
        """The body is complete: prepare for reading from the start."""
        if self._file is not None:
            self._file.seek(0)
        else:
            parts = self._parts
            self._buf = parts[0] if len(parts) == 1 else b"".join(parts)
            self._parts = []

    def close(self) -> None:
        """Release the temporary file, if any."""
        if self._file is not None:
            self._file.close()

    # -- the PEP 3333 input stream -----------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all that remain when ``size`` is negative or None)."""
        if self._file is not None:
            return self._file.read(-1 if size is None else size)
        pos = self._pos
        end = len(self._buf) if size is None or size < 0 else min(pos + size, len(self._buf))
        self._pos = end
        return self._buf[pos:end]

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line, including its ``\\n``, of at most ``size`` bytes."""
        if self._file is not None:
            return self._file.readline(-1 if size is None else size)
        buf, pos = self._buf, self._pos
        nl = buf.find(b"\n", pos)
        end = len(buf) if nl < 0 else nl + 1
        if size is not None and size >= 0:
            end = min(end, pos + size)
        self._pos = end
        return buf[pos:end]

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Read lines until the end, or until ``hint`` bytes have been read."""
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class _EmptyBody(InputBody):
    """The shared, always-exhausted input of requests without a body."""

    __slots__ = ()

    def append(self, data: bytes) -> None:
        raise RuntimeError("EMPTY_BODY is immutable")


#: ``wsgi.input`` of every request without a body (reads always return b"").
EMPTY_BODY: InputBody = _EmptyBody(0)
