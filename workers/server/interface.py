"""Which interface an application speaks: WSGI, ASGI 3 (or 2), or a raw handler factory.

``detect_interface`` is what ``reactor serve`` and ``Server(app)`` use when no
interface is forced: an ``async def`` app, an object whose ``__call__`` is
``async def`` or an ASGI 2 class is ASGI; a ``BaseHandler`` subclass or a callable
of one parameter (``factory(worker)``) is a handler factory; the rest is WSGI.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from ..asgi import is_asgi2, is_asgi3
from ..core.handler import BaseHandler

__all__ = ["INTERFACES", "Interface", "detect_interface"]

Interface = Literal["wsgi", "asgi", "handler"]
INTERFACES = ("auto", "wsgi", "asgi", "handler")


def detect_interface(app: Any) -> Interface:
    """Tell ``app``'s interface apart by its shape (module docstring)."""
    if is_asgi3(app) or is_asgi2(app):
        return "asgi"
    if inspect.isclass(app) and issubclass(app, BaseHandler):
        return "handler"
    try:
        params = [
            p for p in inspect.signature(app).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        return "wsgi"
    return "handler" if len(params) == 1 else "wsgi"
