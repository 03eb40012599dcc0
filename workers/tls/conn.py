"""A TLS connection: ``Conn`` with a sans-IO ``ssl.SSLObject`` between socket and handler.

The TLS engine never touches the socket: ciphertext read from the socket is written
into an incoming ``MemoryBIO``, the ``SSLObject`` turns it into plaintext for the
handler, and what the handler writes is encrypted into an outgoing ``MemoryBIO`` whose
bytes go through the plain ``Conn`` write path (sent at once, the rest buffered and
flushed on writable events, the same high- and low-water marks). So the reads, the
writes and the edge-triggered rules stay the worker's, exactly as for plain TCP.

The trap, and the rule against it
---------------------------------
Plaintext held inside the TLS engine raises no readiness edge: the kernel has
already handed those bytes over. A record can arrive together with the next ones
(a client that writes a burst), and a handler can pause reading while records wait.
So after every socket read, **everything the engine holds is decrypted and handed to
the handler in the same turn**, never left for an event that will not come. The only
exits that leave ciphertext in the engine are the ones that will come back without
an edge: the handler paused reading (``resume_reading`` reads the engine first), or
the turn's read budget ran out (``Worker.reschedule`` serves the connection again
next batch, and that turn starts with the engine too). A partial record stays until
the rest arrives, which raises an edge of its own.

One handed-over chunk per socket read: the plaintext of the records decrypted from
one read reaches ``data_received`` as one ``bytes``, as one ``recv`` does on a plain
connection, and counts once against the worker's read budget.

The handshake
-------------
``connection_made`` is called only once the handshake is done: a handler never sees
a connection that failed its handshake, and a failure costs a debug log line, a
counter and the descriptor's close. The handshake has a deadline (the listener's
``handshake_timeout``: the HTTP header timeout, or ``DEFAULT_HANDSHAKE_TIMEOUT``),
on the connection's own re-armable timer, which the handler then takes over. A first
byte that cannot start a TLS record (0x16, a handshake) is not TLS: on an HTTP
listener a request line gets a plain-text ``400`` (nginx does the same), anything
else is closed.
"""

from __future__ import annotations

import os
import ssl
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from ...reactor.event import ERROR, READ_CLOSED
from ...reactor.net import Stream
from ..core.connection import DEBUG, HIGH_WATER, READ_BUDGET, RECV_SIZE, Conn, FileSlice
from .context import TlsSession

if TYPE_CHECKING:
    from ..core.connection import Owner
    from ..core.handler import Handler

__all__ = ["PLAIN_HTTP_RESPONSE", "ListenerSide", "TlsConn"]


class ListenerSide(Protocol):
    """What a TLS connection needs from its listener (``listener.TlsListener``).

    A ``Protocol`` here, so that this module does not import the listener (which
    makes these connections): the context to wrap with, the handshake deadline, whether
    the listener serves HTTP, and the counters the connection reports to.
    """

    context: ssl.SSLContext
    handshake_timeout: float
    http: bool

    def count_handshake(self) -> None:
        """One handshake completed."""

    def count_failure(self, peer: Any, reason: object) -> None:
        """One handshake failed, and why."""

    def count_plain_http(self, peer: Any) -> None:
        """A plain HTTP request arrived where TLS was expected."""

_HANDSHAKE_RECORD = 0x16
_HUP_BITS = READ_CLOSED | ERROR  # after these, read to end of stream (as Conn does)
# Every engine call (read, write, pending) releases the GIL in CPython's _ssl: with
# other threads runnable, each is a chance to lose it (docs/design.md, "The GIL"), so
# the hot path makes two per request (a read and a write) and asks ``pending()`` only
# when a read filled its whole buffer.
# Plaintext asked of the engine per read: one record's worth (TLS caps a record at
# 2**14 bytes), so one call empties a record; a larger ask only allocates more and
# shrinks it again (python -m bench.tls_micro: 1.7 us per request at 16 KiB, 2.1 to
# 5.2 us at 64 KiB, for the engine calls of one keep-alive request).
_RECORD = 16384
_FILE_CHUNK = 256 * 1024  # plaintext read from a file per encryption, for sendfile
_SSLError = ssl.SSLError
_WantRead = ssl.SSLWantReadError

_PLAIN_BODY = b"This port speaks HTTPS: send the request with TLS (https://).\n"
PLAIN_HTTP_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%b" % (len(_PLAIN_BODY), _PLAIN_BODY)
)
"""What a plain HTTP request on an HTTP listener with TLS gets (then the close)."""


class _NotMade:
    """The handler of a connection whose handshake did not complete: it hears nothing."""

    def connection_lost(self, conn: Any, exc: BaseException | None) -> None:
        pass

    def pause_writing(self, conn: Any) -> None:
        pass

    def resume_writing(self, conn: Any) -> None:
        pass


_NOT_MADE = _NotMade()


def _handshake_expired(conn: TlsConn) -> None:
    conn._handshake_expired()


class TlsConn(Conn):
    """A connection of a TLS listener. Implements ``mioreactor.workers.core.handler.Connection``.

    Attributes:
        tls: the ``TlsSession`` once the handshake is done (the handler only ever
            sees it done), else None.
    """

    __slots__ = (
        "_close_after",
        "_draining",
        "_fresh",
        "_hs",
        "_in",
        "_listener_tls",
        "_obj",
        "_out",
        "_peer_closed",
        "_queue_plain",
        "_shut",
        "_tls_pending",
        "_tls_read",
        "_tls_write",
        "tls",
    )

    def __init__(
        self,
        token: int,
        stream: Stream,
        peer: Any,
        worker: Owner,
        handler: Handler,
        listener: ListenerSide,
        local: Any = None,
    ) -> None:
        super().__init__(token, stream, peer, worker, handler, local)
        self._listener_tls = listener
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        obj = listener.context.wrap_bio(self._in, self._out, server_side=True)
        self._obj = obj
        # The engine's own methods, one Python frame less than SSLObject's wrappers
        # on the hot path (CPython keeps the engine in ``_sslobj``).
        raw = getattr(obj, "_sslobj", obj)
        self._tls_read = raw.read
        self._tls_write = raw.write
        self._tls_pending = raw.pending
        self._hs = True
        self._fresh = True  # no byte read yet: the first tells TLS from plain HTTP
        self._shut = False
        self._peer_closed = False
        self._draining = False
        self._close_after = False
        # Plaintext (and files) waiting behind a ``sendfile``, in order; None: none.
        self._queue_plain: deque[Any] | None = None
        self.tls: TlsSession | None = None

    def __repr__(self) -> str:
        return f"<TlsConn token={self.token} peer={self.peer!r} state={self._state}>"

    # -- the handshake ---------------------------------------------------------------
    def start(self) -> None:
        """Adopted by a worker: arm the handshake deadline. ``connection_made`` waits."""
        self.rearm(self._listener_tls.handshake_timeout, _handshake_expired)

    def _handshake(self) -> bool:
        """Read and answer handshake records until done (True) or would block (False)."""
        recv = self._recv
        inc = self._in
        do_handshake = self._obj.do_handshake
        while True:
            try:
                raw = recv(RECV_SIZE)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._handshake_failed(exc)
                return False
            if not raw:
                self._handshake_failed("the client closed the connection")
                return False
            if self._fresh:
                self._fresh = False
                if raw[0] != _HANDSHAKE_RECORD:
                    self._not_tls(raw)
                    return False
            inc.write(raw)
            try:
                do_handshake()
            except _WantRead:
                self._send_tls()
                if self._state:
                    return False
                continue
            except _SSLError as exc:
                self._send_tls()  # the alert, so the client knows why
                self._handshake_failed(exc.reason or exc)
                return False
            except (ValueError, OSError) as exc:
                self._handshake_failed(exc)
                return False
            self._send_tls()
            if self._state:
                return False
            return self._made()

    def _made(self) -> bool:
        self._hs = False
        listener = self._listener_tls
        listener.count_handshake()
        if self._deadline is not None:
            self._deadline.cancel()  # the handler's timers take over
        self.tls = TlsSession(self._obj)
        self.handler.connection_made(self)
        if self._draining and not self._state:
            self._draining = False
            Conn.close_when_idle(self)
        return not self._state and not self._read_paused

    def _handshake_failed(self, reason: object) -> None:
        self._listener_tls.count_failure(self.peer, reason)
        if self._wbuf:
            Conn.close(self)  # let the alert go out, then close
        else:
            self._teardown(None)

    def _handshake_expired(self) -> None:
        if self._hs and self._state == 0:
            self._listener_tls.count_failure(self.peer, "handshake timed out")
            self.abort()

    def _not_tls(self, raw: bytes) -> None:
        listener = self._listener_tls
        if listener.http and 0x41 <= raw[0] <= 0x5A:  # "GET ", "POST ", ...: a request line
            listener.count_plain_http(self.peer)
            Conn.write(self, PLAIN_HTTP_RESPONSE)
            Conn.close(self)
        else:
            self._handshake_failed(f"not a TLS record (first byte 0x{raw[0]:02x})")

    # -- reading -------------------------------------------------------------------------
    def on_readable(self, bits: int = 0, strict: bool = False) -> None:
        """Read the socket, decrypt, hand the plaintext over; the module docstring says
        why everything the engine holds is handed over before this returns.

        The socket follows ``Conn.on_readable``'s rule: on epoll and kqueue a read
        shorter than ``RECV_SIZE`` drained it (not after a read-closed ``bits``, nor
        when ``strict``), and the loop stops **once the engine has handed over all it
        can decrypt** from that read. A record cut by the short read stays in the
        engine; its rest arrives later and raises an edge of its own. The handshake
        reads strictly.
        """
        if bits & _HUP_BITS:
            self._hup = True
        if self._read_paused or self._state or self._eof:
            if self._state == 3:
                self._linger_read()  # a lingering close discards ciphertext unread
            return
        if self._hs and not self._handshake():
            return
        handler = self.handler
        inc = self._in
        budget = READ_BUDGET
        if inc.pending or self._peer_closed:
            # Left from before this turn: a request that came with the handshake's
            # last read (perhaps held by a pause in ``connection_made``), or a
            # close_notify held back by a pause.
            data = self._decrypt(b"") if inc.pending else b""
            if self._state:
                return
            if data:
                handler.data_received(self, data)
                if self._read_paused or self._state:
                    return
                budget -= 1
            if self._peer_closed:
                self._on_eof()
                return
        short = self._short and not self._hup and not strict
        while True:
            try:
                raw = self._recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self._teardown(exc)
                return
            if not raw:
                self._on_eof()
                return
            inc.write(raw)
            # The common case inline: one record (a request), one engine call and no
            # exception; more records, or a record bigger than the ask, go on in
            # ``_decrypt``. Either way the engine is left with no plaintext and no
            # whole record, so ``pending()`` (which drops the GIL) is not asked.
            try:
                data = self._tls_read(_RECORD)
            except _WantRead:
                data = b""  # a partial record: its rest raises an edge of its own
            except _SSLError as exc:
                if not isinstance(exc, ssl.SSLZeroReturnError):
                    self._teardown(exc)
                    return
                self._peer_closed = True
                data = b""
            else:
                if inc.pending or len(data) == _RECORD:
                    data = self._decrypt(data)
                    if self._state:
                        return
                elif not data:  # close_notify: the peer will send nothing more
                    self._peer_closed = True
            if self._out.pending:  # post-handshake messages (a key update's answer)
                self._send_tls()
                if self._state:
                    return
            if data:
                handler.data_received(self, data)
                if self._read_paused or self._state:
                    return
                budget -= 1
            if self._peer_closed:  # told after the plaintext before it
                self._on_eof()
                return
            if short and len(raw) < RECV_SIZE:
                return  # a short read drained the socket (epoll, kqueue)
            if not budget:
                self.worker.reschedule(self)
                return

    def _decrypt(self, first: bytes) -> bytes:
        """``first`` and all the plaintext the engine can give after it, as one chunk;
        sets ``_peer_closed`` on close_notify (the end of stream is told after the
        plaintext before it, even across a pause)."""
        inc = self._in
        read = self._tls_read
        pending = self._tls_pending
        data = first
        more: list[bytes] | None = None
        full = len(first) == _RECORD  # the last read filled its buffer: the record may hold more
        while inc.pending or (full and pending()):
            try:
                piece = read(_RECORD)
            except _WantRead:
                break  # a partial record: the rest raises an edge of its own
            except _SSLError as exc:
                if isinstance(exc, ssl.SSLZeroReturnError):
                    self._peer_closed = True
                    break
                self._teardown(exc)
                return b""
            if not piece:  # close_notify: the peer will send nothing more
                self._peer_closed = True
                break
            full = len(piece) == _RECORD
            if not data:
                data = piece
            elif more is None:
                more = [data, piece]
            else:
                more.append(piece)
        if self._out.pending:  # post-handshake messages (key update, tickets)
            self._send_tls()
        if more is not None:
            return b"".join(more)
        return data

    def _on_eof(self) -> None:
        self._eof = True
        if self._hs:
            self._handshake_failed("the client closed the connection")
            return
        super()._on_eof()

    # -- writing ---------------------------------------------------------------------------
    def _send_tls(self) -> None:
        """Send what the engine has encrypted, through the plain write path."""
        out = self._out.read()
        if out:
            Conn.write(self, out)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and send the records as ``Conn.write`` sends bytes."""
        if DEBUG:
            self._check_owner()
        if self._state or not data:
            return
        if self._queue_plain is not None:
            self._queue_plain.append(bytes(data))
            self._pump()
            return
        try:
            self._tls_write(data)
        except (_SSLError, ValueError) as exc:
            self._teardown(exc)
            return
        Conn.write(self, self._out.read())  # behind anything queued, as plain bytes

    def writelines(self, chunks: list[bytes]) -> None:
        if len(chunks) == 1:
            self.write(chunks[0])
        elif chunks:
            self.write(b"".join(chunks))

    def sendfile(self, file: Any, offset: int, count: int | None) -> None:
        """Queue ``count`` bytes of ``file`` from ``offset``: read and encrypted in
        chunks as the socket takes them (the kernel cannot encrypt for ``sendfile``)."""
        if self._state:
            return
        if count is None:
            count = os.fstat(file.fileno()).st_size - offset
        if count <= 0:
            return
        if self._queue_plain is None:
            self._queue_plain = deque()
        self._queue_plain.append(FileSlice(file.fileno(), offset, count))
        self._pump()

    def _pump(self) -> None:
        """Encrypt queued plaintext and file chunks while the write buffer is below
        its high-water mark; writable events call again (``on_writable``)."""
        queue = self._queue_plain
        while queue and self._state == 0 and self._wsize <= HIGH_WATER:
            head = queue[0]
            if type(head) is FileSlice:
                try:
                    chunk = os.pread(head.fd, min(head.count, _FILE_CHUNK), head.offset)
                except OSError as exc:
                    self._teardown(exc)
                    return
                if not chunk:  # the file is shorter than announced
                    queue.popleft().release()
                    continue
                head.offset += len(chunk)
                head.count -= len(chunk)
                if head.count <= 0:
                    queue.popleft().release()
            else:
                chunk = queue.popleft()
            try:
                self._tls_write(chunk)
            except (_SSLError, ValueError) as exc:
                self._teardown(exc)
                return
            Conn.write(self, self._out.read())
        if not queue and self._queue_plain is not None:
            self._queue_plain = None
            if self._close_after and self._state == 0:
                self.close()

    def on_writable(self) -> None:
        Conn.on_writable(self)
        if self._queue_plain is not None and self._state == 0:
            self._pump()

    @property
    def write_buffer_size(self) -> int:
        queued = self._queue_plain
        if queued is None:
            return self._wsize
        return self._wsize + sum(len(item) for item in queued)

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        """Send close_notify after what is queued, then close like a plain connection."""
        if self._state:
            Conn.close(self)  # closing already; a lingering close stops now
            return
        if self._queue_plain is not None:
            self._close_after = True  # the pump closes when the queue is sent
            self.pause_reading()
            return
        self._close_notify()
        if not self._state:
            Conn.close(self)

    def close_lingering(self, timeout: float, max_bytes: int) -> None:
        """As ``Conn.close_lingering``, with close_notify before the write side shuts:
        the client reads the response, then a clean end of the TLS stream."""
        if self._state:
            return
        self._close_notify()
        if not self._state:
            Conn.close_lingering(self, timeout, max_bytes)

    def _close_notify(self) -> None:
        """Queue TLS close_notify (once, after everything written so far)."""
        if self._hs or self._shut:
            return
        self._shut = True
        try:
            self._obj.unwrap()
        except (_SSLError, ValueError, OSError):
            pass  # expected: the peer's close_notify has not come (and need not)
        self._send_tls()

    def close_when_idle(self) -> None:
        """Graceful stop: a connection still in its handshake is drained once made."""
        if self._hs:
            self._draining = True
            return
        Conn.close_when_idle(self)

    def _teardown(self, exc: BaseException | None) -> None:
        if self._state == 2:
            return
        queue = self._queue_plain
        if queue is not None:
            self._queue_plain = None
            for item in queue:
                if type(item) is FileSlice:
                    item.release()
        if self._hs:
            # Never made: the handler never heard of it and hears nothing now.
            self.handler = _NOT_MADE  # type: ignore[assignment]
        super()._teardown(exc)
