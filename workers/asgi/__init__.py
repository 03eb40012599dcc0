"""ASGI 3 over HTTP/1.1: the http scope, request cycles, the lifespan and where coroutines run.

Owns: ``handler`` (``AsgiHandler``: one connection's HTTP life, parsed by the HTTP
layer's ``HttpProtocol``, served to an app's coroutines), ``cycle`` (one request's
``receive`` and ``send``), ``express`` (the ASGI express lane: one bodiless head
per read, read without llhttp's callbacks), ``scope`` (the ``http`` scope), ``loop`` (``LoopDriver``:
the server's asyncio loop, stepped by the worker that serves the socket; see
docs/design.md, "ASGI: where coroutines run"), ``lifespan`` (startup, shutdown,
state), ``app`` (``AsgiServer``: an app made ready to serve; ASGI 2 wrapped) and
``wscycle`` (``WsCycle``: one WebSocket connection between an app and its socket,
on the codec of ``mioreactor.workers.websocket``; ``WsConfig``, its settings).

May import: ``mioreactor.workers.http`` (parser, validation, limits, errors, response
framing), ``mioreactor.workers.core`` (the handler protocol), ``mioreactor.workers.ops``
(metrics counters), ``mioreactor.workers.websocket`` (the sans-IO WebSocket codec),
``mioreactor.reactor``.
"""

from __future__ import annotations

from .app import AsgiServer, as_asgi3, is_asgi2, is_asgi3
from .cycle import ClientDisconnected
from .handler import AsgiHandler, make_asgi_handler_factory
from .lifespan import LIFESPAN_MODES, Lifespan, LifespanError
from .loop import LOOPS, LoopDriver
from .wscycle import WS_COUNTERS, WS_MODES, WsConfig, WsCycle

__all__ = [
    "LIFESPAN_MODES",
    "LOOPS",
    "WS_COUNTERS",
    "WS_MODES",
    "AsgiHandler",
    "AsgiServer",
    "ClientDisconnected",
    "Lifespan",
    "LifespanError",
    "LoopDriver",
    "WsConfig",
    "WsCycle",
    "as_asgi3",
    "is_asgi2",
    "is_asgi3",
    "make_asgi_handler_factory",
]
