"""Limits, timeouts and switches of the HTTP/1.1 handler, as one frozen value.

Every limit names the status sent when a request breaks it; every timeout says what
it measures. ``docs/http.md`` lists the same table for operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_ACCESS_LOG_FORMAT", "HttpConfig"]

#: The default access log line: peer, request line, status, body bytes, microseconds.
DEFAULT_ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(D)s'


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """How the HTTP/1.1 handler parses, limits, times and logs requests.

    Attributes:
        max_request_line: longest request target in bytes; longer gives 414.
        max_header_size: total bytes of the header section (names, values and
            separators, request line excluded); larger gives 431.
        max_headers: most header fields in one request; more gives 431.
        max_body_size: largest request body in bytes (declared or received); larger
            gives 413, at once when ``Content-Length`` declares it.
        body_spool_threshold: request bodies up to this size stay in memory; larger
            ones spill to a temporary file.
        header_timeout: seconds from the first byte of a request head until the head is
            complete; on expiry a partial head gets 408 and the connection closes.
        keepalive_timeout: seconds an idle keep-alive connection may wait for the next
            request before it is closed silently.
        body_timeout: seconds the request body may stall (no byte arriving) before the
            server answers 408 and closes.
        send_timeout: seconds a response may stay blocked on a client that does not
            read before the connection is aborted.
        linger_timeout: seconds an errored connection keeps reading (and discarding)
            after its error response and the shutdown of its write side, so that a
            client still sending reads the response instead of a reset.
        linger_max_bytes: bytes discarded at most while lingering; then it closes.
        max_pipeline_buffer: unprocessed bytes of pipelined requests held while a
            response is in progress before reading from the client is paused.
        server_header: value of the ``Server`` response header; empty sends none.
        access_log: write one line per response to the ``mioreactor.http.access`` logger.
        access_log_format: ``%``-style format over the keys documented in
            ``mioreactor.workers.http.accesslog``.
        forwarded_allow_ips: peers trusted to set ``X-Forwarded-For`` and
            ``X-Forwarded-Proto``; ``"*"`` trusts every peer; empty trusts none.
        proxy_protocol: expect a PROXY protocol v1/v2 header first on every connection.
        url_scheme: ``wsgi.url_scheme`` unless a trusted proxy says otherwise.
        multiprocess: the value of ``wsgi.multiprocess``.
        express: let the express lane (``mioreactor.workers.http.express``) serve the common
            request; off, every request goes through llhttp. Either way the same
            bytes are accepted and answered alike; the switch is for comparison.
        root_path: the prefix the app is mounted under behind a proxy (uvicorn's
            ``--root-path``): ``SCRIPT_NAME``, and taken off the front of
            ``PATH_INFO`` when a request's path starts with it
            (``mioreactor.workers.http.wsgi.mounted``). Empty: mounted at the root.
    """

    max_request_line: int = 8190
    max_header_size: int = 65536
    max_headers: int = 100
    max_body_size: int = 100 * 1024 * 1024
    body_spool_threshold: int = 1024 * 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    linger_timeout: float = 2.0
    linger_max_bytes: int = 4 * 1024 * 1024
    max_pipeline_buffer: int = 256 * 1024
    server_header: str = "mioreactor"
    access_log: bool = False
    access_log_format: str = DEFAULT_ACCESS_LOG_FORMAT
    forwarded_allow_ips: tuple[str, ...] = field(default_factory=tuple)
    proxy_protocol: bool = False
    url_scheme: str = "http"
    multiprocess: bool = False
    express: bool = True
    root_path: str = ""

    def __post_init__(self) -> None:
        for name in ("max_request_line", "max_header_size", "max_headers", "max_pipeline_buffer",
                     "linger_max_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"HttpConfig.{name} must be positive")
        if self.max_body_size < 0 or self.body_spool_threshold < 0:
            raise ValueError("HttpConfig body sizes must not be negative")
        for name in ("header_timeout", "keepalive_timeout", "body_timeout", "send_timeout",
                     "linger_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"HttpConfig.{name} must be positive seconds")
        if self.url_scheme not in ("http", "https"):
            raise ValueError("HttpConfig.url_scheme must be 'http' or 'https'")
        if isinstance(self.forwarded_allow_ips, str):
            raise TypeError("HttpConfig.forwarded_allow_ips is a tuple of addresses, not a str")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path == "/"
                               or any(c in self.root_path for c in "?#\r\n\0 ")):
            raise ValueError(f"root path {self.root_path!r}: expected a path such as /api "
                             "(a leading /, no query)")
        if any(c in self.server_header for c in "\r\n\0"):
            raise ValueError("HttpConfig.server_header must not contain CR, LF or NUL")
