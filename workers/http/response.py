"""Response serialisation: status lines, the Date header, heads, chunks, error replies.

Everything here is pure (bytes in, bytes out) and cached where a response would
otherwise rebuild the same bytes: status lines per status string, the ``Date`` header
once per second, and each protocol-error reply once per status. The hot path builds a
head with one ``str.join`` and one ``encode``.
"""

from __future__ import annotations

import time
from email.utils import formatdate

from .errors import HTTPError

__all__ = [
    "CHUNKED_END",
    "CONTINUE_RESPONSE",
    "DateCache",
    "ResponseEncoder",
    "chunk",
]

#: The interim response sent before reading a body the client holds back.
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: The last chunk and an empty trailer section.
CHUNKED_END = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """Frame ``data`` (non-empty) as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class DateCache:
    """The ``Date: ...`` header line, regenerated at most once per second.

    One instance belongs to one worker thread, so it needs no lock.

    Two ways to ask whether the line is still good: against the wall clock
    (``_second <= time.time() < _until``), or, for a caller that has read
    ``time.monotonic()`` anyway (the express lanes, once per request), against
    ``mono_until``: the monotonic time at which the current wall-clock second ends,
    so that the check is a float comparison and no second clock read. A wall clock
    that is stepped leaves the line at most one second stale either way.
    """

    __slots__ = ("_line", "_second", "_until", "mono_until")

    def __init__(self) -> None:
        self._second = -1.0
        self._until = 0.0  # the line is good while time.time() is below this
        self.mono_until = 0.0  # ... and while time.monotonic() is below this
        self._line = b""

    def line(self) -> bytes:
        """Return ``b"Date: <IMF-fixdate>\\r\\n"`` for the current second."""
        now = time.time()
        second = float(int(now))  # a float: compared with time.time() per response
        if second != self._second:
            self._second = second
            self._until = second + 1.0
            self._line = b"Date: %b\r\n" % formatdate(now, usegmt=True).encode("ascii")
        self.mono_until = time.monotonic() + (self._until - now)
        return self._line


class ResponseEncoder:
    """Build response heads for one worker: status-line cache, Date, Server.

    Args:
        server_header: the ``Server`` value; empty to send none.
    """

    __slots__ = ("_date", "_errors", "_server", "_status_lines")

    def __init__(self, server_header: str) -> None:
        self._date = DateCache()
        self._server = f"Server: {server_header}\r\n".encode("latin-1") if server_header else b""
        self._status_lines: dict[str, bytes] = {}
        self._errors: dict[int, tuple[bytes, bytes]] = {}

    def status_line(self, status: str) -> bytes:
        """``b"HTTP/1.1 <status>\\r\\n"`` for a validated WSGI status, cached."""
        line = self._status_lines.get(status)
        if line is None:
            line = b"HTTP/1.1 %b\r\n" % status.encode("latin-1")
            if len(self._status_lines) < 256:
                self._status_lines[status] = line
        return line

    def head(self, status: str, headers: bytes, extra: bytes) -> bytes:
        """Serialise a response head.

        Args:
            status: the validated WSGI status (``"200 OK"``).
            headers: the application's validated fields, already joined as
                ``b"Name: value\\r\\n"`` lines.
            extra: server-added lines (framing, ``Connection``), already encoded.

        Returns:
            The head, ending with the blank line.
        """
        return self.whole(status, headers, extra, b"")

    def whole(self, status: str, headers: bytes, extra: bytes, body: bytes) -> bytes:
        """A whole response, head (as ``head``) and ``body``, in one ``bytes``."""
        line = self._status_lines.get(status)
        if line is None:
            line = self.status_line(status)
        date = self._date
        if not date._second <= time.time() < date._until:  # no int() per response
            date.line()  # a new second (or the clock went back)
        return b"".join(
            (line, date._line, self._server, headers, extra, b"\r\n", body)
        )

    def error(self, error: HTTPError) -> bytes:
        """The complete reply to a protocol error; it always closes the connection.

        The status line, headers and body are built once per status; only the
        ``Date`` line is spliced in per reply.
        """
        parts = self._errors.get(error.status)
        if parts is None:
            body = f"{error.status} {error.reason}\n".encode("latin-1")
            parts = (
                f"HTTP/1.1 {error.status} {error.reason}\r\n".encode("latin-1"),
                self._server
                + b"Content-Type: text/plain; charset=utf-8\r\n"
                + b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(body), body),
            )
            self._errors[error.status] = parts
        return parts[0] + self._date.line() + parts[1]

    def date_line(self) -> bytes:
        """The cached ``Date`` line, for callers that build their own head."""
        return self._date.line()
