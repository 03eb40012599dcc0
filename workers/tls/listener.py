"""The TLS side of one listener: its context, handshake rules and counters.

A ``TlsListener`` is attached to a ``BoundListener`` (``core.acceptor``): the acceptor
asks it for the connection object of each stream accepted there (``TlsConn``), so plain
listeners pay nothing for TLS. The certificate is reloadable (``reload``, on SIGHUP):
new connections get the new context, open ones keep their session.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import TYPE_CHECKING, Any

from .conn import TlsConn
from .context import TlsConfig, _peer_text, prepare_context

if TYPE_CHECKING:
    from ...reactor.net import Stream
    from ..core.connection import Owner
    from ..core.handler import Handler

__all__ = ["TlsListener"]

log = logging.getLogger("mioreactor.tls")


class TlsListener:
    """The TLS side of one listener: its context, handshake rules and counters.

    Args:
        source: a ``TlsConfig`` (reloadable) or a ready ``ssl.SSLContext`` (used as
            given, with SNI recording added; ``reload`` cannot re-read its files).
        http: the listener serves HTTP: ALPN offers ``http/1.1`` and a plain HTTP
            request gets a plain-text ``400``.
        handshake_timeout: seconds a client has to complete the handshake.

    Raises:
        TlsError: the settings cannot make a context.
    """

    def __init__(
        self, source: TlsConfig | ssl.SSLContext, *, http: bool, handshake_timeout: float
    ) -> None:
        self.source = source
        self.http = http
        self.handshake_timeout = handshake_timeout
        self.context = self._make_context()
        self.handshakes = 0
        self.failed = 0
        self.plain_http = 0
        self.reloads = 0
        self._lock = threading.Lock()

    def _make_context(self) -> ssl.SSLContext:
        source = self.source
        if isinstance(source, TlsConfig):
            return prepare_context(source.context(("http/1.1",) if self.http else ()))
        return prepare_context(source)

    def connection(
        self,
        token: int,
        stream: Stream,
        peer: Any,
        worker: Owner,
        handler: Handler,
        local: Any = None,
    ) -> TlsConn:
        """The connection object of a stream accepted on this listener.

        ``local``: the connection's local address when the listener knows it
        (``BoundListener.local``); None asks the kernel.
        """
        return TlsConn(token, stream, peer, worker, handler, self, local)

    def reload(self) -> bool:
        """Read the certificate files again; new connections get the new context.

        Connections already open keep their session. Returns False (changing
        nothing) when the listener was given a ready ``SSLContext``.

        Raises:
            TlsError: the files cannot make a context; the old one stays in use.
        """
        if not isinstance(self.source, TlsConfig):
            return False
        self.context = self._make_context()  # one reference swap: atomic for readers
        self.reloads += 1
        return True

    # -- counters (workers call these; a lock, since several may run at once) ---------
    def count_handshake(self) -> None:
        with self._lock:
            self.handshakes += 1

    def count_failure(self, peer: Any, reason: object) -> None:
        with self._lock:
            self.failed += 1
        log.debug("TLS handshake with %s failed: %s", _peer_text(peer), reason)

    def count_plain_http(self, peer: Any) -> None:
        with self._lock:
            self.plain_http += 1
        log.debug("plain HTTP from %s on a TLS listener: answered 400", _peer_text(peer))
