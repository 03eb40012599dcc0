"""What every ``mioreactor.reactor.net`` socket shares: the descriptor and the would-block rule.

``_would_block`` is the one place that hears "would block". It re-arms the emulated
edge on the portable fallback (mio's ``IoSourceState::do_io``) and re-raises: the
caller still sees ``BlockingIOError``, which is how it knows it has drained. Nothing
else in the package swallows ``BlockingIOError``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["SocketSource"]


class SocketSource:
    """A non-blocking socket that can be registered with a ``Registry``."""

    __slots__ = ("_rearm_fd", "_rearm_sel", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._rearm_sel: Any = None
        self._rearm_fd = -1

    # -- registry hook ------------------------------------------------------------
    def _reactor_attach(self, selector: Any, fd: int, bits: int) -> None:
        self._rearm_sel = selector
        self._rearm_fd = fd

    def _would_block(self, bits: int) -> None:
        sel = self._rearm_sel
        if sel is not None:
            sel.rearm(self._rearm_fd, bits)

    # -- common surface -----------------------------------------------------------
    @property
    def socket(self) -> socket.socket:
        """The underlying socket, for options this class does not wrap.

        Reading or writing through it bypasses the fallback's re-arm: use the methods.
        """
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def local_addr(self) -> Any:
        return self._sock.getsockname()

    def take_error(self) -> OSError | None:
        """Read and clear ``SO_ERROR``: the error of a failed non-blocking connect."""
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return OSError(code, os.strerror(code)) if code else None

    def close(self) -> None:
        """Close the socket. Deregister it first."""
        self._sock.close()

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    def __enter__(self) -> SocketSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self._sock.fileno()}>"
