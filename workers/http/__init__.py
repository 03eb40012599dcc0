"""HTTP/1.1 + WSGI for mioreactor: a sans-IO parser, a WSGI bridge and the handler."""

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
