"""The protocol-error family: each error carries the status the server must send.

A request that breaks the protocol or a limit becomes one of these values. The handler
answers with the error's response (built once per status, see
``mioreactor.workers.http.response``) and closes the connection: after a framing error the
server can no longer tell where the next request would begin, so it must not try.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ExpectationFailed",
    "HTTPError",
    "HeaderFieldsTooLarge",
    "InternalServerError",
    "NotImplemented501",
    "PayloadTooLarge",
    "RequestTimeout",
    "URITooLong",
    "VersionNotSupported",
]


class HTTPError(Exception):
    """A request the server refuses; ``status`` and ``reason`` say how to answer.

    Args:
        detail: what exactly was wrong, for logs (never sent to the client).
    """

    status: int = 400
    reason: str = "Bad Request"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


class BadRequest(HTTPError):
    """Malformed syntax or framing (400)."""

    status = 400
    reason = "Bad Request"


class RequestTimeout(HTTPError):
    """The head or body did not arrive in time (408)."""

    status = 408
    reason = "Request Timeout"


class PayloadTooLarge(HTTPError):
    """The body is larger than ``max_body_size`` (413)."""

    status = 413
    reason = "Content Too Large"


class URITooLong(HTTPError):
    """The request target is longer than ``max_request_line`` (414)."""

    status = 414
    reason = "URI Too Long"


class HeaderFieldsTooLarge(HTTPError):
    """Too many header fields, or too many header bytes (431)."""

    status = 431
    reason = "Request Header Fields Too Large"


class ExpectationFailed(HTTPError):
    """An ``Expect`` other than ``100-continue`` (417, RFC 9110 section 10.1.1)."""

    status = 417
    reason = "Expectation Failed"


class NotImplemented501(HTTPError):
    """An unknown method or an unsupported transfer coding (501)."""

    status = 501
    reason = "Not Implemented"


class VersionNotSupported(HTTPError):
    """An HTTP version other than 1.0 and 1.1 (505)."""

    status = 505
    reason = "HTTP Version Not Supported"


class InternalServerError(HTTPError):
    """The application failed before its response began (500)."""

    status = 500
    reason = "Internal Server Error"
