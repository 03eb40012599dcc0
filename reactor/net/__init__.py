"""Non-blocking sockets for the reactor (mio ``net``).

Owns: ``listener`` (``TcpListener``, ``UnixListener``: ``accept()`` raises
``BlockingIOError`` when the backlog is drained) and ``stream`` (``TcpStream``,
``UnixStream``: reads and writes that raise ``BlockingIOError`` when they would block).

May import: the rest of ``mioreactor.reactor`` and the standard library.
"""

from .listener import TcpListener, UnixListener, parse_host_port
from .stream import Stream, TcpStream, UnixStream

__all__ = ["Stream", "TcpListener", "TcpStream", "UnixListener", "UnixStream", "parse_host_port"]
