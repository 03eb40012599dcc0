"""Access log lines, written to the ``mioreactor.http.access`` logger when enabled.

The format is ``%``-style over these keys (gunicorn's names):

====  ==========================================
h     client address
r     request line (``GET /path?q HTTP/1.1``)
m     method
U     path (the raw target without the query)
q     query string
H     protocol (``HTTP/1.1``)
s     status code
b     response body bytes sent (``-`` for none)
D     request time in microseconds
T     request time in seconds (integer)
a     ``User-Agent``
f     ``Referer``
====  ==========================================
"""

from __future__ import annotations

import logging
import time

from .protocol import Request

__all__ = ["AccessLog"]

access_logger = logging.getLogger("mioreactor.http.access")


def _header(request: Request, name: bytes) -> str:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return "-"


class AccessLog:
    """Formats and emits one line per response.

    Args:
        fmt: the ``%``-style format (see the module docstring).
    """

    __slots__ = ("_fmt",)

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt

    def log(self, peer: str, request: Request, status: int, sent: int, started: float) -> None:
        """Emit the line for ``request``, answered with ``status`` and ``sent`` bytes."""
        if not access_logger.isEnabledFor(logging.INFO):
            return
        elapsed = time.monotonic() - started
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        atoms = {
            "h": peer or "-",
            "r": f"{request.method} {target} HTTP/{request.version}",
            "m": request.method,
            "U": path,
            "q": query,
            "H": f"HTTP/{request.version}",
            "s": status,
            "b": sent if sent else "-",
            "D": int(elapsed * 1_000_000),
            "T": int(elapsed),
            "a": _header(request, b"user-agent"),
            "f": _header(request, b"referer"),
        }
        try:
            line = self._fmt % atoms
        except (KeyError, TypeError, ValueError):
            line = f"bad access_log_format {self._fmt!r}"
        access_logger.info(line)
