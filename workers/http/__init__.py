"""HTTP/1.1 + WSGI: a sans-IO parser, the express lane, a WSGI bridge and the handler.

Owns: ``handler`` (``HttpHandler``: one connection's HTTP life on its worker, with
``state``, ``respond`` and ``deadlines``: its per-connection state, its response
writer and its timers), the general path (``protocol``, llhttp via httptools, with
``fields``, ``validate``, ``chunks``, ``body``), the express lane (``express``: the common request checked whole, linear in
its bytes), ``wsgi`` and ``response`` (PEP 3333 and the bytes of a response),
``limits`` (``HttpConfig``), ``errors`` (the 4xx/5xx family), ``proxy`` (PROXY
protocol, forwarded headers) and ``accesslog``.

May import: ``mioreactor.workers.core`` (the handler protocol), ``mioreactor.workers.ops``
(metrics counters), ``mioreactor.reactor``. Never ``tls``: TLS sits under it, unseen.
"""

from __future__ import annotations

from .body import InputBody
from .errors import (
    BadRequest,
    ExpectationFailed,
    HeaderFieldsTooLarge,
    HTTPError,
    InternalServerError,
    NotImplemented501,
    PayloadTooLarge,
    RequestTimeout,
    URITooLong,
    VersionNotSupported,
)
from .handler import HttpHandler, make_http_handler_factory
from .limits import HttpConfig
from .protocol import END_OF_MESSAGE, HttpProtocol, Request
from .proxy import parse_proxy_header
from .wsgi import AppError, FileWrapper

__all__ = [
    "END_OF_MESSAGE",
    "AppError",
    "BadRequest",
    "ExpectationFailed",
    "FileWrapper",
    "HTTPError",
    "HeaderFieldsTooLarge",
    "HttpConfig",
    "HttpHandler",
    "HttpProtocol",
    "InputBody",
    "InternalServerError",
    "NotImplemented501",
    "PayloadTooLarge",
    "Request",
    "RequestTimeout",
    "URITooLong",
    "VersionNotSupported",
    "make_http_handler_factory",
    "parse_proxy_header",
]
