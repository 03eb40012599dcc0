"""Non-blocking sockets for the reactor (mio ``net``)."""

from reactor.net.listener import TcpListener, UnixListener, parse_host_port
from reactor.net.stream import Stream, TcpStream, UnixStream

__all__ = ["Stream", "TcpListener", "TcpStream", "UnixListener", "UnixStream", "parse_host_port"]
