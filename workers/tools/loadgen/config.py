"""BenchConfig: what one ``reactor bench`` run does, checked before any traffic.

Every run is bounded in time and in count (``MAX_DURATION``, ``MAX_REQUESTS``,
``MAX_CONNECTIONS``) and aimed at loopback unless ``allow_remote`` says otherwise.
``Target`` is the resolved form: the address to connect to and the exact request bytes
sent for every request (built once, sent with one ``send``). A ``ws://`` or ``wss://``
URL loads a WebSocket echo endpoint instead (``websocket.py``): the request is then the
upgrade, less the key each connection adds.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_DURATION",
    "MAX_MESSAGE_SIZE",
    "MAX_REQUESTS",
    "BenchConfig",
    "Target",
    "bench_url",
    "resolve_target",
]

MAX_DURATION = 3600.0
"""No run lasts longer than this many seconds, whatever it was asked for."""

MAX_REQUESTS = 100_000_000
"""The most requests one run may be asked for."""

MAX_CONNECTIONS = 60_000
"""The most concurrent connections: one client address has at most ~64k ports per target."""

MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""The largest WebSocket message a run may send (our server's default limit, 16 MiB)."""

DEFAULT_MESSAGE_SIZE = 32

USER_AGENT = "mioreactor-bench/0.1"

_SCHEMES = {"http": 80, "https": 443, "ws": 80, "wss": 443}

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


@dataclass(frozen=True)
class BenchConfig:
    """One load-generator run. Invalid values raise ``ValueError`` at construction.

    Args:
        url: ``http://HOST[:PORT]/PATH?QUERY`` (or ``https://``; ``ws://`` and ``wss://``
            for a WebSocket echo endpoint); HOST must be loopback (127.0.0.0/8,
            ``::1``, ``localhost``) unless ``allow_remote``.
        connections: concurrent connections (slots) kept busy.
        duration: seconds to run, at most ``MAX_DURATION``; ``None`` with ``requests``
            runs until that many requests are done (still bounded by ``MAX_DURATION``).
        requests: requests (WebSocket: messages) to make in total (each ends with a
            response or an error); with ``duration`` too, whichever comes first ends
            the run.
        keepalive: reuse each connection (reconnect when the server closes it); False
            opens a new connection per request and sends ``Connection: close``.
        method: the request method (``HEAD`` responses have no body).
        headers: extra ``(name, value)`` request headers; a ``Host`` here replaces ours.
        body: the request body (sent with ``Content-Length``).
        rate: open loop: total requests per second spread over the connections,
            latency measured from each request's scheduled time; ``None``: closed loop,
            as fast as responses come back.
        timeout: seconds a connect, and then a response, may take before it counts as
            timed out.
        allow_remote: allow a host that is not loopback (an explicit, deliberate target).
        insecure: https:// and wss:// only: do not verify the server's certificate.
        cacert: https:// and wss:// only: PEM file of the CAs to trust (default: the
            system's).
        message_size: ws:// only: bytes per message (``None``: 32).
        text: ws:// only: send text messages (ASCII) instead of binary ones.

    Raises:
        ValueError: a value out of range, a URL that is not ``http(s)://`` or
            ``ws(s)://``, ``--cacert``/``--insecure`` without TLS, an HTTP-only setting
            (method, body, rate, ``--close``) with ``ws://`` or a message setting
            without it, a header with CR/LF, or a remote host without ``allow_remote``.
    """

    url: str
    connections: int = 50
    duration: float | None = 10.0
    requests: int | None = None
    keepalive: bool = True
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    rate: float | None = None
    timeout: float = 5.0
    allow_remote: bool = False
    insecure: bool = False
    cacert: str | None = None
    message_size: int | None = None
    text: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise ValueError(f"connections must be 1..{MAX_CONNECTIONS}, got {self.connections}")
        if self.duration is None and self.requests is None:
            raise ValueError("give a duration or a number of requests (or both)")
        if self.duration is not None and not (
            math.isfinite(self.duration) and 0 < self.duration <= MAX_DURATION
        ):
            raise ValueError(
                f"duration must be more than 0 and at most {MAX_DURATION:g} s, got {self.duration}"
            )
        if self.requests is not None and not 1 <= self.requests <= MAX_REQUESTS:
            raise ValueError(f"requests must be 1..{MAX_REQUESTS}, got {self.requests}")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a positive number of requests/s, got {self.rate}")
        if not (math.isfinite(self.timeout) and 0 < self.timeout <= MAX_DURATION):
            raise ValueError(f"timeout must be more than 0 s, got {self.timeout}")
        if not _is_token(self.method):
            raise ValueError(f"not a valid HTTP method: {self.method!r}")
        for name, value in self.headers:
            if not _is_token(name):
                raise ValueError(f"not a valid header name: {name!r}")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name} has CR, LF or NUL in its value")
        scheme = _parse_url(self.url)[0]  # syntax, scheme and loopback check (literals)
        if (self.insecure or self.cacert) and scheme not in ("https", "wss"):
            raise ValueError("--insecure and --cacert are for https:// and wss:// URLs")
        self._check_websocket()
        if self.insecure and self.cacert:
            raise ValueError("give --cacert or --insecure, not both")
        if self.cacert is not None and not os.path.isfile(self.cacert):
            raise ValueError(f"--cacert {self.cacert}: no such file")
        if not self.allow_remote:
            host = urlsplit(self.url).hostname or ""
            if host.lower() != "localhost" and not _is_loopback_literal(host):
                raise ValueError(
                    f"refusing to load {host!r}: not a loopback address (127.0.0.0/8, ::1, "
                    "localhost); allow a remote target (reactor bench --allow-remote) only "
                    "for a host you are responsible for"
                )

    def _check_websocket(self) -> None:
        if not self.websocket:
            if self.message_size is not None or self.text:
                raise ValueError("--size and --text are for ws:// and wss:// URLs")
            return
        if self.message_size is not None and not 0 <= self.message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(
                f"message size must be 0..{MAX_MESSAGE_SIZE} bytes, got {self.message_size}")
        for given, option in ((self.method.upper() != "GET", "--method"), (self.body, "--body"),
                              (self.rate is not None, "--rate"), (not self.keepalive, "--close")):
            if given:
                raise ValueError(f"{option} is for http:// and https:// URLs, not ws://")

    @property
    def websocket(self) -> bool:
        """A ``ws://`` or ``wss://`` URL: load a WebSocket echo endpoint."""
        return self.url.lower().startswith(("ws://", "wss://"))

    @property
    def size(self) -> int:
        """Bytes per WebSocket message (``message_size``, 32 when not given)."""
        return DEFAULT_MESSAGE_SIZE if self.message_size is None else self.message_size

    @property
    def time_limit(self) -> float:
        """The run's hard deadline in seconds: ``duration``, else ``MAX_DURATION``."""
        return self.duration if self.duration is not None else MAX_DURATION

    def to_json(self) -> dict[str, object]:
        """The configuration as JSON-ready values (the body as its length)."""
        return {
            "url": self.url,
            "connections": self.connections,
            "duration": self.duration,
            "requests": self.requests,
            "keepalive": self.keepalive,
            "method": self.method,
            "headers": [list(h) for h in self.headers],
            "body_bytes": len(self.body),
            "rate": self.rate,
            "timeout": self.timeout,
            "allow_remote": self.allow_remote,
            "insecure": self.insecure,
            "cacert": self.cacert,
            **({"message_size": self.size, "text": self.text} if self.websocket else {}),
        }


def _is_loopback_literal(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def bench_url(target: str) -> str:
    """What ``reactor bench`` loads: a URL as given, or ``HOST:PORT[/PATH]`` as
    ``http://HOST:PORT[/PATH]`` (as ``reactor top`` reads ``HOST:PORT``)."""
    text = target.strip()
    return text if "://" in text else f"http://{text}"


def _parse_url(url: str) -> tuple[str, str, int, str]:
    """Split a URL into ``(scheme, host, port, path_and_query)``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"only http(s):// and ws(s):// URLs can be loaded, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    if any(c in url for c in " \r\n\t\0"):
        raise ValueError(f"URL {url!r} has whitespace or control characters")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port if port is not None else _SCHEMES[scheme], path


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect and what to send.

    Attributes:
        host: the host as written in the URL.
        address: the socket address to connect to (``(ip, port)``).
        port: the server port.
        request: the exact bytes of one request.
        head: the method is HEAD (responses carry no body).
        tls: an ``https://`` or ``wss://`` URL (``host`` is the SNI name and the name
            checked).
    """

    host: str
    address: tuple[str, int]
    port: int
    request: bytes
    head: bool
    tls: bool = False


def resolve_target(config: BenchConfig) -> Target:
    """Resolve the URL's host (once, before any traffic) and build the request bytes.

    A name is resolved with ``getaddrinfo`` (an IPv4 answer is preferred); without
    ``allow_remote`` every answer must be a loopback address (``localhost`` mapped
    elsewhere is refused). For ``ws://`` the request is the upgrade request without
    its ``Sec-WebSocket-Key`` (random per connection, added by the engine) and
    without the empty line that ends the head.

    Raises:
        ValueError: the host cannot be resolved, or resolves to a remote address.
    """
    scheme, host, port, path = _parse_url(config.url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from exc
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first, as servers bind it
    ip = str(infos[0][4][0])
    if not config.allow_remote and not all(_is_loopback_literal(str(i[4][0])) for i in infos):
        raise ValueError(f"{host!r} resolves to {ip}, not a loopback address; refusing")
    tls = scheme in ("https", "wss")
    default_port = port == _SCHEMES[scheme]
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
    names = {name.lower() for name, _ in config.headers}
    lines = [f"{config.method} {path} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host_header}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    lines += [f"{name}: {value}" for name, value in config.headers]
    if config.body and "content-length" not in names:
        lines.append(f"Content-Length: {len(config.body)}")
    if not config.keepalive and "connection" not in names:
        lines.append("Connection: close")
    if config.websocket:
        lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"]
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return Target(host, (ip, port), port, head, False, tls)
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + config.body
    return Target(host, (ip, port), port, request, config.method.upper() == "HEAD", tls)
