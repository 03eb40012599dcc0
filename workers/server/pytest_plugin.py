"""A pytest plugin: the ``reactor_server`` fixture runs an app or a handler on port 0.

Installed with the package (entry point ``pytest11``), so a user's own tests can write::

    def test_home(reactor_server):
        server = reactor_server(my_wsgi_app)
        assert requests.get(server.url + "/").status_code == 200

Every server started through the fixture is stopped, and its threads joined, when
the test ends, pass or fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .server import Server

__all__ = ["reactor_server"]


@pytest.fixture
def reactor_server() -> Iterator[Callable[..., Server]]:
    """Start servers with ``reactor_server(app)`` or ``reactor_server(handler=factory)``.

    Keyword arguments go to ``Server``; the defaults are ``bind="127.0.0.1:0"``,
    ``workers=2`` and ``graceful_timeout=5``.
    """
    servers: list[Server] = []

    def start(app: Any = None, **kwargs: Any) -> Server:
        kwargs.setdefault("bind", "127.0.0.1:0")
        kwargs.setdefault("workers", 2)
        kwargs.setdefault("graceful_timeout", 5.0)
        server = Server(app, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()
