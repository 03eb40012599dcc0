"""workers: the threading model on top of ``reactor``.

One acceptor thread owns the Poll, drains ``accept()`` and forwards readiness in
batches to N worker threads; each worker owns its connections and runs its own
handler. ``Server`` embeds it; ``serve`` runs it until a signal.
"""

from workers.acceptor import Acceptor, BoundListener
from workers.binds import BindError, open_listeners, parse_bind
from workers.handler import BaseHandler, Connection, EchoHandler, Handler, HandlerFactory
from workers.server import Server, serve

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
