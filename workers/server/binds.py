"""Bind specifications to listening sockets.

Forms (as gunicorn and uvicorn spell them):
``HOST:PORT``, ``[V6]:PORT``, ``unix:PATH``, ``fd://N``; and systemd socket
activation, picked up from ``LISTEN_FDS``/``LISTEN_PID`` (descriptors from 3 on).
A TCP bind may leave out a part (``parse_tcp_bind``): ``:8080`` is every IPv4
interface, ``8080`` is 127.0.0.1:8080, ``localhost`` is 127.0.0.1:8000.

Any form may start with ``https://`` or ``http://`` to say whether it serves TLS
when the server has TLS settings (docs/tls.md): ``http://`` keeps a bind plain,
``https://`` asks for TLS; without a prefix, TCP binds serve TLS when there are
settings and Unix sockets stay plain. ``BoundListener.scheme`` keeps the prefix.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from ...reactor.net import TcpListener, UnixListener, parse_host_port
from ..core.acceptor import BoundListener

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "BindError",
    "open_listeners",
    "parse_bind",
    "parse_tcp_bind",
    "split_scheme",
    "systemd_fds",
]

SD_LISTEN_FDS_START = 3
DEFAULT_HOST = "127.0.0.1"
"""The host of a bind given as a port alone (``-b 8080``, ``--port 8080``)."""
DEFAULT_PORT = 8000
"""The port of a bind given as a host alone (``-b 0.0.0.0``), gunicorn's and uvicorn's."""


class BindError(ValueError):
    """A bind specification that is malformed or cannot be bound; the message says which."""


def split_scheme(spec: str) -> tuple[str | None, str]:
    """``"https://HOST:PORT"`` to ``("https", "HOST:PORT")``; no prefix gives ``None``."""
    spec = spec.strip()
    for scheme in ("https", "http"):
        if spec.startswith(scheme + "://"):
            return scheme, spec[len(scheme) + 3 :]
    return None, spec


def parse_bind(spec: str) -> tuple[str, object]:
    """Classify a bind spec: ``("tcp", (host, port))``, ``("unix", path)``, ``("fd", n)``.

    An ``https://`` or ``http://`` prefix is allowed and ignored here (``split_scheme``).

    Raises:
        BindError: naming the spec and what was expected.
    """
    _, spec = split_scheme(spec)
    if spec.startswith("unix:"):
        path = spec[5:]
        if not path:
            raise BindError(f"bind {spec!r}: unix: needs a path, e.g. unix:/run/app.sock")
        return "unix", path
    if spec.startswith("fd://"):
        num = spec[5:]
        if not num.isdigit():
            raise BindError(f"bind {spec!r}: fd:// needs a descriptor number, e.g. fd://3")
        return "fd", int(num)
    try:
        return "tcp", parse_tcp_bind(spec)
    except ValueError as exc:
        raise BindError(f"bind {spec!r}: {exc}") from None


def parse_tcp_bind(spec: str) -> tuple[str, int]:
    """A TCP bind as people type it (gunicorn's and uvicorn's conventions) to ``(host, port)``.

    * ``HOST:PORT``, ``[IPV6]:PORT``: as written;
    * ``:PORT``: every IPv4 interface (``0.0.0.0``), as gunicorn;
    * ``PORT`` alone (``8080``): ``127.0.0.1``, uvicorn's default host;
    * ``HOST`` or ``[IPV6]`` alone: port ``DEFAULT_PORT`` (8000), as gunicorn and
      uvicorn; ``localhost`` is ``127.0.0.1`` (``-b localhost``: 127.0.0.1:8000).

    Raises:
        ValueError: naming what is wrong (a port out of range, an unbracketed IPv6
            address, nothing at all).
    """
    text = spec.strip()
    if not text:
        raise ValueError("empty; expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N")
    if text.isdigit() or (text[:1] == "-" and text[1:].isdigit()):
        host, port = parse_host_port(f"{DEFAULT_HOST}:{text}")
    elif text.startswith("[") and text.endswith("]"):
        host, port = text[1:-1], DEFAULT_PORT
    elif ":" not in text:
        host, port = text, DEFAULT_PORT
    elif text.count(":") > 1 and not text.startswith("["):
        raise ValueError(f"an IPv6 address needs brackets: [{text}]:PORT, e.g. [::1]:8000")
    else:
        host, port = parse_host_port(text)
    if any(c.isspace() for c in host):
        raise ValueError(f"host {host!r} has a space in it")
    return ("127.0.0.1" if host.lower() == "localhost" else host), port


def systemd_fds(environ: dict[str, str] | None = None) -> list[int]:
    """Descriptors passed by systemd socket activation, or ``[]``.

    Honoured only when ``LISTEN_PID`` names this process; the variables are then
    removed so children do not inherit them.
    """
    env = os.environ if environ is None else environ
    try:
        pid = int(env.get("LISTEN_PID", ""))
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if pid != os.getpid() or count <= 0:
        return []
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def _adopt_fd(fd: int, proxy_protocol: bool) -> BoundListener:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"bind fd://{fd}: not an open socket ({exc.strerror})") from exc
    try:
        if sock.family == socket.AF_UNIX:
            ul = UnixListener.from_fd(sock.detach())
            return BoundListener(ul, "unix", ul.local_addr(), None, proxy_protocol)
        tl = TcpListener.from_socket(sock)
    except ValueError as exc:
        raise BindError(f"bind fd://{fd}: {exc}") from exc
    return BoundListener(tl, "tcp", tl.local_addr(), None, proxy_protocol)


def open_listeners(
    binds: Sequence[str],
    *,
    backlog: int = 1024,
    reuse_port: bool = False,
    unix_mode: int | None = None,
    proxy_protocol: bool = False,
    use_systemd: bool = True,
) -> list[BoundListener]:
    """Open every bind (and any systemd sockets); all or nothing.

    Raises:
        BindError: a malformed spec, an address in use, a bad descriptor; the listeners
            opened before it are closed.
    """
    opened: list[BoundListener] = []
    try:
        if use_systemd:
            for fd in systemd_fds():
                opened.append(_adopt_fd(fd, proxy_protocol))
        for spec in binds:
            scheme = split_scheme(spec)[0]
            kind, value = parse_bind(spec)
            if kind == "unix":
                path = str(value)
                try:
                    ul = UnixListener.bind(path, backlog, mode=unix_mode)
                except OSError as exc:
                    raise BindError(f"bind {spec!r}: {exc.strerror or exc}") from exc
                opened.append(BoundListener(ul, "unix", path, path, proxy_protocol))
            elif kind == "fd":
                assert isinstance(value, int)
                opened.append(_adopt_fd(value, proxy_protocol))
            else:
                assert isinstance(value, tuple)
                try:
                    tl = TcpListener.bind(value, backlog, reuse_port=reuse_port)
                except socket.gaierror as exc:
                    raise BindError(f"bind {spec!r}: cannot resolve host ({exc})") from exc
                except OSError as exc:
                    raise BindError(f"bind {spec!r}: {exc.strerror or exc}") from exc
                opened.append(BoundListener(tl, "tcp", tl.local_addr(), None, proxy_protocol))
            opened[-1].scheme = scheme
    except BaseException:
        for bl in opened:
            bl.listener.close()
        raise
    return opened
