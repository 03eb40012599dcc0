"""mioreactor: a multithreaded, edge-triggered WSGI and raw-protocol server built like mio.

The one importable name of the distribution. Its parts:

* ``mioreactor.reactor``: the port of Rust's mio (``Poll``, ``Registry``, ``Token``,
  ``Interest``, ``Events``, ``Waker``, non-blocking sockets). No threads, no HTTP.
* ``mioreactor.workers``: the threading core, the protocols (HTTP/1.1 + WSGI, TLS),
  the embeddable ``Server``, process management and the operations tools.
* ``mioreactor.cli``: the ``reactor`` command (also ``python -m mioreactor``).

The names below are loaded on first use (PEP 562), so ``import mioreactor`` costs
nothing until ``mioreactor.Server`` or another export is touched: the CLI starts fast,
and a tool that imports the checkout's root as a package (pytest collecting from the
repository) loads no server code by doing so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workers.core.handler import BaseHandler, Connection, EchoHandler, Handler, HandlerFactory
    from .workers.http.limits import HttpConfig
    from .workers.server.binds import BindError
    from .workers.server.server import Server, serve
    from .workers.tls.context import TlsConfig

__all__ = [
    "BaseHandler",
    "BindError",
    "Connection",
    "EchoHandler",
    "Handler",
    "HandlerFactory",
    "HttpConfig",
    "Server",
    "TlsConfig",
    "serve",
]

# export -> the module (relative to this package) that defines it
_EXPORTS = {
    "BaseHandler": ".workers.core.handler",
    "Connection": ".workers.core.handler",
    "EchoHandler": ".workers.core.handler",
    "Handler": ".workers.core.handler",
    "HandlerFactory": ".workers.core.handler",
    "HttpConfig": ".workers.http.limits",
    "BindError": ".workers.server.binds",
    "Server": ".workers.server.server",
    "serve": ".workers.server.server",
    "TlsConfig": ".workers.tls.context",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
