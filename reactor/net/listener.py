"""Non-blocking listeners: TcpListener and UnixListener (mio ``net/tcp/listener.rs``).

The accept-drain rule lives here. Under edge triggering a listener is reported when
its accept queue goes from empty to non-empty. If the receiver accepts one connection
per event, the others stay queued with no new edge to announce them: they are
served only as later arrivals create edges, one stale connection per arrival. After a
load test the queue is full of connections the client has already closed, and every
new client is answered by the accept of a dead one: "connections hang up
immediately". ``accept()`` must be called until it raises ``BlockingIOError``.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any

from ._source import SocketSource
from .stream import TcpStream, UnixStream

__all__ = ["TcpListener", "UnixListener", "parse_host_port"]

_READ = 1


def parse_host_port(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` to a tuple.

    An empty host (``":8080"``) is ``0.0.0.0``, every IPv4 interface.

    Raises:
        ValueError: naming what is wrong: no port, a port that is not a number, a
            port outside 0-65535, an IPv6 host without brackets.
    """
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    text = port.strip()
    number = text[1:] if text[:1] in "+-" else text
    if not number.isdigit() or not number.isascii():
        raise ValueError(f"port {port!r} is not a number")
    if not 0 <= int(text) <= 65535:
        raise ValueError(f"port {int(text)} is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host must be bracketed: [{host}]:{port}")
    return host or "0.0.0.0", int(port)


class TcpListener(SocketSource):
    """A non-blocking TCP listener."""

    __slots__ = ("_family",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._family = int(sock.family)

    @classmethod
    def bind(
        cls,
        address: tuple[str, int] | str,
        backlog: int = 1024,
        *,
        reuse_port: bool = False,
    ) -> TcpListener:
        """Bind and listen. ``SO_REUSEADDR`` is always set on POSIX.

        Args:
            address: ``(host, port)`` or ``"host:port"`` / ``"[::1]:port"``; port 0
                picks a free port (see ``local_addr()``).
            backlog: the accept-queue length asked for; the kernel caps it at
                ``net.core.somaxconn``.
            reuse_port: set ``SO_REUSEPORT`` so several processes share the port.

        Raises:
            OSError: e.g. ``EADDRINUSE``.
            ValueError: ``reuse_port`` where the platform has no SO_REUSEPORT.
        """
        if isinstance(address, str):
            address = parse_host_port(address)
        host, port = address
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                if not hasattr(socket, "SO_REUSEPORT"):
                    raise ValueError("SO_REUSEPORT is not available on this platform")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and host in ("::", ""):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(sockaddr)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @classmethod
    def from_fd(cls, fd: int) -> TcpListener:
        """Adopt an inherited listening descriptor (``fd://N``, systemd).

        Raises:
            ValueError: ``fd`` is not a listening stream socket.
        """
        sock = socket.socket(fileno=fd)
        try:
            return cls.from_socket(sock)
        except BaseException:
            sock.detach()  # refused: the caller still owns ``fd``; do not close it
            raise

    @classmethod
    def from_socket(cls, sock: socket.socket) -> TcpListener:
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            raise ValueError(f"fd {sock.fileno()} is not a listening stream socket")
        return cls(sock)

    def accept(self) -> tuple[TcpStream, Any]:
        """Accept one connection; call until ``BlockingIOError`` (see the module doc).

        Raises:
            BlockingIOError: the accept queue is empty.
            OSError: ``ECONNABORTED`` (skip it), ``EMFILE``/``ENFILE`` (no descriptors).
        """
        # ``socket.accept()`` less its per-call conversions of family and type to
        # enums (~90 bytecodes per connection): the C ``_accept`` (accept4 with
        # SOCK_CLOEXEC, as ``accept()`` does) and a socket made with known ints.
        try:
            fd, addr = self._sock._accept()  # type: ignore[attr-defined]
        except BlockingIOError:
            self._would_block(_READ)
            raise
        return TcpStream(socket.socket(self._family, socket.SOCK_STREAM, 0, fd)), addr

    def set_ttl(self, ttl: int) -> None:
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)


class UnixListener(SocketSource):
    """A non-blocking Unix domain stream listener."""

    __slots__ = ()

    @classmethod
    def bind(cls, path: str, backlog: int = 1024, *, mode: int | None = None) -> UnixListener:
        """Bind to ``path`` and listen. A stale socket file left by a dead server is
        replaced; a socket file a server still listens on, or any other existing
        file, is an error.

        Raises:
            FileExistsError: ``path`` exists and is not a socket.
            OSError: ``EADDRINUSE``: a server listens on ``path``; bind failures.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise FileExistsError(f"{path} exists and is not a socket")
            if _listening(path):
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), path)
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            if mode is not None:
                os.chmod(path, mode)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @classmethod
    def from_fd(cls, fd: int) -> UnixListener:
        sock = socket.socket(fileno=fd)
        if sock.family != socket.AF_UNIX or not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            sock.detach()  # refused: the caller still owns ``fd``; do not close it
            raise ValueError(f"fd {fd} is not a listening Unix socket")
        return cls(sock)

    def accept(self) -> tuple[UnixStream, Any]:
        """Accept one connection; call until ``BlockingIOError``.

        Raises:
            BlockingIOError: the accept queue is empty.
        """
        try:
            sock, addr = self._sock.accept()
        except BlockingIOError:
            self._would_block(_READ)
            raise
        return UnixStream(sock), addr


def _listening(path: str) -> bool:
    """Whether a server listens on the Unix socket file ``path``: a connect gets in.

    A dead server's file refuses (``ECONNREFUSED``); a live one accepts, or, with its
    backlog full, makes a non-blocking connect wait (``EAGAIN``).
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return True
