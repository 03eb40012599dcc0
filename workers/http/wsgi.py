"""The WSGI side (PEP 3333): environ, ``start_response`` validation, file wrapper.

The environ is built in two steps for speed: what is fixed for a connection (server
and peer addresses, trusted-proxy decision, the ``wsgi.*`` constants) once per
connection by ``base_environ``, and per request a ``dict.copy()`` of that plus the
request's own keys by ``request_environ``.

Application mistakes (a malformed status, a header name that is not a token, a value
with CR/LF/NUL or outside latin-1, a second ``start_response`` without ``exc_info``)
raise ``AppError``. The handler treats them like any application exception: a 500 if
nothing was sent yet, an aborted connection otherwise, and never malformed bytes on
the wire.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any
from urllib.parse import unquote_to_bytes

from .body import EMPTY_BODY, InputBody
from .limits import HttpConfig
from .protocol import Request
from .validate import parse_authority

__all__ = [
    "AppError",
    "ExcInfo",
    "FileWrapper",
    "StartResponse",
    "base_environ",
    "client_from_forwarded",
    "mounted",
    "request_environ",
]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_STATUS = re.compile(r"[2-9][0-9][0-9] [^\x00-\x08\x0a-\x1f\x7f]*\Z").match
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z").match
_BAD_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]").search
# Hop-by-hop fields belong to the server (PEP 3333); the application's are dropped,
# except that ``Connection: close`` is honoured.
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "transfer-encoding", "upgrade")
)
_SPECIAL = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}


# (status, *headers) that passed ``StartResponse``'s checks -> (lines, content
# length, close). Shared by the workers: a dict get/set is atomic, and a lost insert costs a
# re-check only.
_VALIDATED: dict[tuple[Any, ...], tuple[bytes, int | None, bool]] = {}
_VALIDATED_MAX = 512
# Status strings (exactly ``str``) that passed ``_STATUS``; bounded like _VALIDATED.
_GOOD_STATUS: set[str] = set()


class AppError(Exception):
    """The application broke the WSGI contract (answered with 500, logged)."""


class FileWrapper:
    """``wsgi.file_wrapper``: lets the handler send a file with ``sendfile``.

    Iterating it reads ``blksize`` chunks, so it also works where the handler cannot
    use the descriptor.

    Args:
        filelike: an object with ``read``; ``fileno`` and ``seek``/``tell`` enable
            ``sendfile`` from the current position.
        blksize: the chunk size when iterated.
    """

    __slots__ = ("blksize", "filelike")

    def __init__(self, filelike: IO[bytes], blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        read, size = self.filelike.read, self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class StartResponse:
    """The ``start_response`` callable of one request, and what the app told it.

    Attributes:
        status: the validated status string, or "" before the first call.
        headers: the validated fields as ``b"Name: value\\r\\n"`` lines (latin-1).
        content_length: the app's ``Content-Length``, if it set one.
        close: the app asked for ``Connection: close``.
        headers_sent: set by the handler once the head is on the wire.
        written: bytes passed to the legacy ``write()`` callable, in order.
    """

    __slots__ = ("close", "content_length", "headers", "headers_sent", "status", "written")

    def __init__(self) -> None:
        self.status = ""
        self.headers = b""
        self.content_length: int | None = None
        self.close = False
        self.headers_sent = False
        self.written: list[bytes] = []

    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        # The common call: a status and header list validated together before. Only
        # validated pairs are in ``_VALIDATED``, so a hit needs no other check.
        if exc_info is None and not self.status and type(status) is str and type(headers) is list:
            try:
                known = _VALIDATED.get((status, *headers))
            except TypeError:  # an unhashable item: the checks below reject it
                known = None
            if known is not None:
                self.status = status
                self.headers, self.content_length, self.close = known
                return self.written.append
        return self._check(status, headers, exc_info)

    def _check(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None,
    ) -> Callable[[bytes], None]:
        """Validate a call that is not a known (status, headers) pair."""
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the traceback cycle (PEP 3333)
        elif self.status:
            raise AppError("start_response called a second time without exc_info")
        # A status string is checked once (the regex is ~2k instructions per call).
        if type(status) is not str or status not in _GOOD_STATUS:
            if type(status) is not str or not _STATUS(status):
                raise AppError(f"invalid status {status!r}")
            if len(_GOOD_STATUS) < _VALIDATED_MAX:
                _GOOD_STATUS.add(status)
        if type(headers) is not list:
            raise AppError("response headers must be a list")
        # Validated here once; ``__call__`` looks the pair up the next times.
        try:
            key: tuple[Any, ...] | None = (status, *headers)
            hash(key)
        except TypeError:  # an unhashable item: the checks below reject it
            key = None
        lines = []
        content_length = None
        close = False
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise AppError(f"header {item!r} is not a (name, value) tuple")
            name, value = item
            if type(name) is not str or not _TOKEN(name):
                raise AppError(f"invalid header name {name!r}")
            if type(value) is not str or _BAD_VALUE(value):
                raise AppError(f"invalid value for header {name}")
            lname = name.lower()
            if lname in _HOP_BY_HOP:
                if lname == "connection" and "close" in value.lower():
                    close = True
                continue
            if lname == "content-length":
                value = value.strip()
                if not value.isdigit() or not value.isascii() or content_length is not None:
                    raise AppError(f"invalid Content-Length {value!r}")
                content_length = int(value)
                continue
            lines.append(f"{name}: {value}\r\n")
        self.status = status
        self.headers = "".join(lines).encode("latin-1")  # checked: latin-1 only
        self.content_length = content_length
        self.close = close
        if key is not None:
            if len(_VALIDATED) >= _VALIDATED_MAX:
                _VALIDATED.clear()  # varying lists (cookies, lengths): start again
            _VALIDATED[key] = (self.headers, content_length, close)
        return self.written.append


def _host_port(addr: Any) -> tuple[str, int | None]:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), int(addr[1])
    return "", None


def client_from_forwarded(value: str, trusted: frozenset[str]) -> str | None:
    """The client address named by an ``X-Forwarded-For`` list.

    The list is read from the right (the entry the nearest proxy appended) and the
    first address not itself a trusted proxy is the client; if every entry is trusted
    (as with ``*``), the leftmost is.

    Args:
        value: the (joined) header value.
        trusted: the trusted proxy addresses; ``"*"`` trusts all.

    Returns:
        The client address, or None if the list is empty.
    """
    entries = [e.strip() for e in value.split(",") if e.strip()]
    if not entries:
        return None
    if "*" not in trusted:
        for addr in reversed(entries):
            if addr not in trusted:
                return addr
    return entries[0]


def base_environ(peer: Any, local: Any, config: HttpConfig) -> dict[str, Any]:
    """The part of the environ that is the same for every request on a connection.

    Args:
        peer: the client address (``(host, port)`` for TCP; a path or "" for Unix).
        local: the server address, likewise.
        config: the handler configuration.

    Returns:
        A dict to ``copy()`` per request. The key ``mioreactor.trusted_proxy`` says
        whether ``X-Forwarded-*`` from this peer are believed.
    """
    peer_host, peer_port = _host_port(peer)
    local_host, local_port = _host_port(local)
    scheme = config.url_scheme
    allow = config.forwarded_allow_ips
    if local_port is None:
        local_host, local_port = "localhost", 443 if scheme == "https" else 80
    return {
        "SERVER_NAME": local_host,
        "SERVER_PORT": str(local_port),
        "REMOTE_ADDR": peer_host,
        "REMOTE_PORT": "" if peer_port is None else str(peer_port),
        "SCRIPT_NAME": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": config.multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input": EMPTY_BODY,  # a request with a body replaces it
        "mioreactor.trusted_proxy": bool(allow) and ("*" in allow or peer_host in allow),
    }


# Header name as sent -> its environ key ("" for a name to drop). Most clients send
# the same few names in the same spelling: one dict lookup instead of a lower(), a
# decode, an upper() and a replace() per field. Shared by the workers (dict get/set
# are atomic); bounded, cleared when full.
_KEYS: dict[bytes, str] = {}
_KEYS_MAX = 1024


def environ_key(name: bytes) -> str:
    """The environ key of header ``name`` (``""``: a name with ``_``, dropped), cached."""
    key = _SPECIAL.get(name.lower())
    if key is None:
        # "X_Forwarded_For" would alias X-Forwarded-For: such a name is dropped.
        key = "" if 95 in name else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
    if len(name) <= 64:  # long names are not worth keeping (nor their memory)
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[name] = key
    return key


def request_environ(
    base: dict[str, Any], request: Request, body: InputBody, trusted: frozenset[str]
) -> dict[str, Any]:
    """The environ of one request.

    Args:
        base: this connection's ``base_environ``.
        request: the parsed head.
        body: the complete body, becomes ``wsgi.input``.
        trusted: ``forwarded_allow_ips`` as a set.

    Returns:
        A fresh environ dict.
    """
    environ = base.copy()
    target = request.target
    authority = request.authority
    if authority is None:
        path, _, query = target.partition(b"?")
    else:  # absolute-form (checked by the parser): keep only the path and query
        path, _, query = target[target.index(b"://") + 3 + len(authority) :].partition(b"?")
        path = path or b"/"
    environ["REQUEST_METHOD"] = request.method
    # ``37 in path`` (the int of "%") is a memchr; ``b"%" in path`` first tries the
    # operand as an int, formats and clears a TypeError, then searches: callgrind
    # counted ~1,650 instructions per request for that one test.
    environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1") if 37 in path else path.decode("latin-1")
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["RAW_URI"] = environ["REQUEST_URI"] = target.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.version == "1.1" else "HTTP/1.0"
    environ["wsgi.input"] = body
    keys = _KEYS
    repeated: dict[str, list[str]] | None = None
    for name, raw in request.headers:
        key = keys.get(name)
        if key is None:
            key = environ_key(name)
        if not key:
            continue  # "X_Forwarded_For" would alias X-Forwarded-For: dropped
        value = raw.decode("latin-1")
        old = environ.get(key)
        if old is not None:
            # A repeated field: its values are joined once, after the loop (joining
            # here, one by one, would copy the growing value per field: quadratic).
            if repeated is None:
                repeated = {}
            parts = repeated.get(key)
            if parts is None:
                repeated[key] = [old, value]
            else:
                parts.append(value)
            continue
        environ[key] = value
    if repeated is not None:
        for key, parts in repeated.items():
            environ[key] = ("; " if key == "HTTP_COOKIE" else ", ").join(parts)
    if authority is not None:
        # RFC 9112 3.2.2: with an absolute-form target the Host field is ignored and
        # the target's authority is the host (one host for the app and any cache).
        host = parse_authority(authority)
        assert host is not None  # the parser checked it
        environ["HTTP_HOST"] = authority.decode("latin-1")
        environ["SERVER_NAME"] = host[0]
        environ["SERVER_PORT"] = host[1] or ("443" if target[4:5] in (b"s", b"S") else "80")
    if request.chunked or "CONTENT_LENGTH" in environ:
        environ["CONTENT_LENGTH"] = str(body.size)
    if environ["mioreactor.trusted_proxy"]:
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded_for:
            client = client_from_forwarded(forwarded_for, trusted)
            if client:
                environ["REMOTE_ADDR"] = client
                environ["REMOTE_PORT"] = ""
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto:
            proto = proto.rsplit(",", 1)[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
    return environ


def mounted(app: Callable[..., Any], root_path: str) -> Callable[..., Any]:
    """``app`` served under ``root_path`` (``--root-path /api``), as gunicorn reads
    ``SCRIPT_NAME``: ``SCRIPT_NAME`` is the prefix, and a ``PATH_INFO`` that starts with
    it (``/api/items``) loses it (``/items``); a path without it (a proxy that strips
    the prefix itself) is left as it is. Only wrapped when a root path is set: the
    common request pays nothing for the option.
    """
    root = root_path.rstrip("/")
    cut = len(root)

    def under_root(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ["PATH_INFO"]
        if path.startswith(root) and (len(path) == cut or path[cut] == "/"):
            environ["PATH_INFO"] = path[cut:]
        environ["SCRIPT_NAME"] = root
        return app(environ, start_response)

    return under_root


def close_iterable(result: Iterable[bytes]) -> None:
    """Call ``result.close()`` if it has one (PEP 3333 requires it)."""
    close = getattr(result, "close", None)
    if close is not None:
        close()
