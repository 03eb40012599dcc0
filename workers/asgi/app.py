"""An ASGI application made ready to serve: the single callable, its loop, its lifespan."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from ..core.handler import HandlerFactory
from ..http.limits import HttpConfig
from .cycle import ASGIApp
from .handler import make_asgi_handler_factory
from .lifespan import Lifespan
from .loop import LoopDriver
from .wscycle import WsConfig

__all__ = ["AsgiServer", "as_asgi3", "is_asgi2", "is_asgi3"]


def _is_async_callable(obj: Any) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = inspect.getattr_static(type(obj), "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def is_asgi2(app: Any) -> bool:
    """An ASGI 2 app: a class whose instances (made from the scope) are async callables."""
    call = inspect.getattr_static(app, "__call__", None) if inspect.isclass(app) else None
    return call is not None and inspect.iscoroutinefunction(call)


def is_asgi3(app: Any) -> bool:
    """An ASGI 3 app: an ``async def`` function, or an object whose ``__call__`` is one."""
    return not inspect.isclass(app) and _is_async_callable(app)


def as_asgi3(app: Any) -> ASGIApp:
    """The single-callable form of ``app`` (ASGI 2 classes wrapped, as asgiref does).

    Raises:
        TypeError: ``app`` is neither ASGI 3 nor ASGI 2 (one line).
    """
    if is_asgi3(app):
        return app  # type: ignore[no-any-return]
    if is_asgi2(app):
        cls = app

        async def asgi3(scope: dict[str, Any], receive: Any, send: Any) -> None:
            instance = cls(scope)
            await instance(receive, send)

        return asgi3
    raise TypeError(f"{app!r} is not an ASGI application (an async callable of scope, receive, send)")


class AsgiServer:
    """What a ``Server`` needs to serve an ASGI app: the handler factory and lifespan.

    Args:
        app: an ASGI 3 app (or an ASGI 2 class).
        config: the HTTP limits and timeouts.
        lifespan: ``auto``, ``on`` or ``off``.
        loop: ``auto`` or ``asyncio`` (``uvloop``: not yet, a clear error).
        ws: the WebSocket settings (None: the defaults, WebSocket on).
    """

    def __init__(self, app: Any, config: HttpConfig, lifespan: str = "auto",
                 loop: str = "auto", ws: WsConfig | None = None) -> None:
        self.app = as_asgi3(app)
        self.driver = LoopDriver(loop)
        self.state: dict[str, Any] = {}
        self.lifespan = Lifespan(self.app, self.driver, lifespan, self.state)
        self.factory: HandlerFactory = make_asgi_handler_factory(
            self.app, self.driver, config, self.state, ws
        )

    def startup(self) -> None:
        """Run the lifespan startup (raises ``LifespanError``); before the workers start."""
        self.lifespan.startup()

    def shutdown(self) -> None:
        """Run the lifespan shutdown and close the loop; after the workers ended."""
        try:
            self.lifespan.shutdown()
        finally:
            self.driver.close()


