"""SERVER_NAME and SERVER_PORT are the address the client reached, on every kind of bind.

A listener bound to one address hands that address to its connections (no
``getsockname`` per connection); a wildcard bind asks the kernel for each one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

import pytest
from mioreactor.workers.server.server import Server


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['SERVER_NAME']} {environ['SERVER_PORT']}".encode()]


def ask(host: str, port: int) -> tuple[str, str]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        local = s.getpeername()
    name, _, port_text = data.partition(b"\r\n\r\n")[2].decode().partition(" ")
    assert (name, port_text) == (local[0], str(local[1]))
    return name, port_text


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_a_bind_to_one_address_gives_that_address() -> None:
    with Server(app, bind="127.0.0.1:0", workers=1) as server:
        port = server.address[1]
        assert ask("127.0.0.1", port) == ("127.0.0.1", str(port))


def test_a_wildcard_bind_gives_the_address_each_client_reached() -> None:
    with Server(app, bind="0.0.0.0:0", workers=1) as server:
        port = server.address[1]
        assert ask("127.0.0.1", port) == ("127.0.0.1", str(port))


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_an_ipv6_bind_gives_the_ipv6_address() -> None:
    with Server(app, bind="[::1]:0", workers=1) as server:
        port = server.address[1]
        assert ask("::1", port) == ("::1", str(port))
