"""Non-blocking stream sockets: TcpStream and UnixStream (mio ``net/tcp/stream.rs``).

Every I/O method raises ``BlockingIOError`` when the kernel would block. Under edge
triggering the owner must call it again until it does, before waiting for the next
event (see ``mioreactor.reactor.poll``, "Draining readiness").
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from ._source import SocketSource

__all__ = ["Stream", "TcpStream", "UnixStream"]

_READ = 1
_WRITE = 2
_SHUT = {"read": socket.SHUT_RD, "write": socket.SHUT_WR, "both": socket.SHUT_RDWR}


class Stream(SocketSource):
    """The I/O surface shared by TCP and Unix streams."""

    __slots__ = ()

    def recv(self, n: int) -> bytes:
        """Read up to ``n`` bytes; ``b""`` means the peer closed its side.

        Raises:
            BlockingIOError: nothing to read now (readiness drained).
        """
        try:
            return self._sock.recv(n)
        except BlockingIOError:
            self._would_block(_READ)
            raise

    read = recv

    def recv_into(self, buffer: bytearray | memoryview, n: int = 0) -> int:
        """Read into ``buffer``; returns the byte count, 0 at end of stream.

        Raises:
            BlockingIOError: nothing to read now.
        """
        try:
            return self._sock.recv_into(buffer, n)
        except BlockingIOError:
            self._would_block(_READ)
            raise

    read_into = recv_into

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the kernel takes now; returns the count (maybe short).

        Raises:
            BlockingIOError: the send buffer is full.
        """
        try:
            return self._sock.send(data)
        except BlockingIOError:
            self._would_block(_WRITE)
            raise

    write = send

    def io_methods(self) -> tuple[Callable[[int], bytes], Callable[[Any], int], Callable[[Any], int]]:
        """``(recv, send, sendmsg)`` for a hot loop, bound once per connection.

        On a backend with real edges (epoll, kqueue) nothing needs to hear "would
        block", so these are the socket's own methods: one Python call less per
        operation. On the fallback backend, which re-arms an emulated edge on that
        error, they are this stream's wrappers. Ask again after registering the
        stream with another ``Registry``; either way ``BlockingIOError`` reaches the
        caller, which is how it knows it has drained.
        """
        if self._rearm_sel is None:
            sock = self._sock
            return sock.recv, sock.send, sock.sendmsg
        return self.recv, self.send, self.sendmsg

    @property
    def short_io_drains(self) -> bool:
        """Whether a short read or write may count as drained (``mioreactor.reactor.poll``,
        "Draining readiness", the stream-socket exception).

        True on epoll and kqueue: a ``recv`` that returns fewer bytes than asked (and
        more than 0) left the receive queue empty, so data arriving after it raises a
        new edge; a ``send`` that took less than offered filled the send buffer, so
        space freed after it raises a new edge (tokio-rs/tokio#5866 takes the same
        shortcut). False on the fallback backend, whose emulated edge is re-armed only
        by ``BlockingIOError``. Ask again after registering with another ``Registry``.
        It never applies to ``accept()``, nor to a read after a read-closed event
        (that one reads to end of stream).
        """
        return self._rearm_sel is None

    def sendmsg(self, buffers: Sequence[bytes | bytearray | memoryview]) -> int:
        """Vectored write (``writev``): one system call for several buffers.

        Raises:
            BlockingIOError: the send buffer is full.
        """
        try:
            return self._sock.sendmsg(buffers)
        except BlockingIOError:
            self._would_block(_WRITE)
            raise

    writev = sendmsg

    def sendfile(self, in_fd: int, offset: int, count: int) -> int:
        """Send ``count`` bytes of file ``in_fd`` from ``offset`` (``os.sendfile``).

        Raises:
            BlockingIOError: the send buffer is full.
        """
        try:
            return os.sendfile(self._sock.fileno(), in_fd, offset, count)
        except BlockingIOError:
            self._would_block(_WRITE)
            raise

    def shutdown(self, how: str | int = "write") -> None:
        """Shut down ``"read"``, ``"write"`` or ``"both"`` directions."""
        self._sock.shutdown(_SHUT[how] if isinstance(how, str) else how)

    def peer_addr(self) -> Any:
        """The peer's address; ``OSError(ENOTCONN)`` until a connect completes."""
        return self._sock.getpeername()


class TcpStream(Stream):
    """A non-blocking TCP stream."""

    __slots__ = ()

    @classmethod
    def connect(cls, address: tuple[Any, ...]) -> TcpStream:
        """Start a non-blocking connect; returns at once.

        The stream becomes writable when the connect finishes; then ``take_error()``
        says whether it failed and ``peer_addr()`` whether it succeeded (mio's rule).

        Raises:
            OSError: the connect failed at once (e.g. no route, bad address).
        """
        family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            sock.close()
            raise OSError(code, f"connect to {address!r}: {errno.errorcode.get(code, code)}")
        return cls(sock)

    @classmethod
    def from_socket(cls, sock: socket.socket) -> TcpStream:
        """Wrap a connected (or connecting) socket; it is made non-blocking."""
        return cls(sock)

    def set_nodelay(self, nodelay: bool) -> None:
        """Enable or disable Nagle's algorithm (TCP_NODELAY)."""
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))

    def nodelay(self) -> bool:
        return bool(self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class UnixStream(Stream):
    """A non-blocking Unix domain stream."""

    __slots__ = ()

    @classmethod
    def connect(cls, path: str) -> UnixStream:
        """Start a non-blocking connect to ``path``.

        Raises:
            OSError: e.g. ``FileNotFoundError`` or ``ConnectionRefusedError``.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:
            pass
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @classmethod
    def pair(cls) -> tuple[UnixStream, UnixStream]:
        """Two connected streams (``socketpair``)."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls(a), cls(b)

    @classmethod
    def from_socket(cls, sock: socket.socket) -> UnixStream:
        return cls(sock)
