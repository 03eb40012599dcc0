"""workers: everything above the mio port: threads, protocols, the server, processes, tools.

Subpackages, each importing only those below it (``docs/design.md`` has the map):
``process`` (Config, supervisor) -> ``server`` (``Server``, binds) -> protocols
(``http``, ``tls``) -> ``core`` (acceptor, workers, connections, the handler protocol)
-> ``mioreactor.reactor``; ``ops`` (metrics, watchdog) and ``tools`` (doctor, bench,
top) sit beside, reading what the core publishes.
"""

from .core.acceptor import Acceptor, BoundListener
from .core.handler import BaseHandler, Connection, EchoHandler, Handler, HandlerFactory
from .server.binds import BindError, open_listeners, parse_bind
from .server.server import Server, serve

__all__ = [
    "Acceptor",
    "BaseHandler",
    "BindError",
    "BoundListener",
    "Connection",
    "EchoHandler",
    "Handler",
    "HandlerFactory",
    "Server",
    "open_listeners",
    "parse_bind",
    "serve",
]
