"""The ``http`` connection scope of one request (ASGI 3.0, HTTP spec version 2.4).

Behind a proxy the scope says what the proxy saw, as the WSGI environ does
(docs/http.md, "Proxies"): a PROXY protocol header sets the connection's ``client``
and ``server`` (``ConnInfo.proxied``); from a peer in ``forwarded_allow_ips``,
``X-Forwarded-For`` sets a request's ``client`` and ``X-Forwarded-Proto`` its
``scheme`` (``forwarded``). A peer not trusted changes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from ..http.protocol import Request
from ..http.wsgi import client_from_forwarded

__all__ = [
    "ASGI_VERSION", "LOWER", "ConnInfo", "express_scope", "forwarded", "http_scope",
    "lower_name", "websocket_scope",
]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
#: Header names as sent -> lower case (bounded; a pure function of the key, so what
#: one client's names put in it never changes what another client's scope holds).
LOWER: dict[bytes, bytes] = {}
_LOWER = LOWER


class ConnInfo:
    """What every scope of one connection shares: scheme, client, server, state.

    Args:
        peer: the client address (``(host, port)``, or a path or "" for Unix).
        local: the server address, likewise.
        scheme: ``http`` or ``https``.
        state: the lifespan state (each request gets a shallow copy).
        root_path: the prefix the app is mounted under behind a proxy (``--root-path``,
            ``HttpConfig.root_path``): the scope's ``root_path``, and the front of its
            ``path`` and ``raw_path`` (``with_root``).
        proxies: ``HttpConfig.forwarded_allow_ips`` as a set (``"*"``: every peer).
            When the peer is one of them (``trusted``), its ``X-Forwarded-For`` and
            ``X-Forwarded-Proto`` set each scope's ``client`` and ``scheme``
            (``forwarded``), as they set ``REMOTE_ADDR`` and ``wsgi.url_scheme``.
    """

    __slots__ = ("client", "proxies", "root", "root_raw", "scheme", "server", "state", "trusted")

    def __init__(self, peer: Any, local: Any, scheme: str, state: dict[str, Any] | None,
                 root_path: str = "", proxies: frozenset[str] = frozenset()) -> None:
        self.scheme = scheme
        self.root = root_path.rstrip("/")
        self.root_raw = self.root.encode("latin-1")
        self.client = (peer[0], peer[1]) if type(peer) is tuple else None
        if type(local) is tuple:
            self.server: tuple[str, int | None] | None = (local[0], local[1])
        elif local:
            self.server = (str(local), None)  # a Unix socket: its path, no port
        else:
            self.server = None
        self.state = state
        self.proxies = proxies
        # As ``http.wsgi.base_environ`` decides ``mioreactor.trusted_proxy``: by the
        # socket's peer ("" for a Unix socket, trusted only by "*").
        self.trusted = bool(proxies) and (
            "*" in proxies or (peer[0] if type(peer) is tuple else "") in proxies
        )

    def proxied(self, client: tuple[str, int] | None, server: tuple[str, int] | None) -> None:
        """The addresses a PROXY protocol header gave (None: keep the socket's)."""
        if client is not None:
            self.client = client
        if server is not None:
            self.server = server


def forwarded(scope: dict[str, Any], info: ConnInfo, secure: str, plain: str) -> None:
    """Apply a trusted proxy's ``X-Forwarded-For`` and ``X-Forwarded-Proto`` to ``scope``.

    Read as ``http.wsgi.request_environ`` reads them for WSGI: the fields of each
    name joined in arrival order; the client is ``client_from_forwarded`` of the
    list (the rightmost address not itself a trusted proxy), with port 0 (unknown,
    as uvicorn gives it); the scheme is the last entry of the proto list, when it is
    ``http`` or ``https`` (any case). One pass over the headers, one split of each
    value: linear in the head (docs/design.md, "Untrusted bytes").

    Args:
        scope: an ``http`` or ``websocket`` scope with lower-cased ``headers``.
        info: its connection, ``info.trusted`` (the caller checks it).
        secure: the scheme for ``https`` (``https``, or ``wss`` for a WebSocket).
        plain: the scheme for ``http`` (``http`` or ``ws``).
    """
    chain: list[bytes] = []
    proto: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            chain.append(value)
        elif name == b"x-forwarded-proto":
            proto = value
    if chain:
        client = client_from_forwarded(b", ".join(chain).decode("latin-1"), info.proxies)
        if client:
            scope["client"] = (client, 0)
    if proto:
        last = proto.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
        if last == "https":
            scope["scheme"] = secure
        elif last == "http":
            scope["scheme"] = plain


def with_root(info: ConnInfo, path: str, raw_path: bytes) -> tuple[str, bytes]:
    """``path`` and ``raw_path`` under the connection's root path, as uvicorn's
    ``--root-path`` gives them (ASGI: ``path`` includes ``root_path``). A proxy that
    strips the prefix sends ``/items``: it becomes ``/api/items``; one that keeps it
    sends ``/api/items``: left as it is (as ``wsgi.mounted`` reads ``SCRIPT_NAME``)."""
    root = info.root
    cut = len(root)
    if path.startswith(root) and (len(path) == cut or path[cut] == "/"):
        return path, raw_path
    return root + path, info.root_raw + raw_path


def lower_name(name: bytes) -> bytes:
    """``name.lower()``, kept in ``LOWER`` (up to 1,024 names of up to 64 bytes)."""
    low = _LOWER.get(name)
    if low is None:
        low = name.lower()
        if len(_LOWER) < 1024 and len(name) <= 64:
            _LOWER[name] = low
    return low


def _target(request: Request) -> tuple[str, bytes, bytes, list[tuple[bytes, bytes]]]:
    """(path, raw_path, query_string, headers) of ``request``, as both scopes carry them."""
    target = request.target
    authority = request.authority
    if authority is None:
        raw_path, _, query = target.partition(b"?")
    else:
        raw_path, _, query = target[target.index(b"://") + 3 + len(authority) :].partition(b"?")
        raw_path = raw_path or b"/"
    if 37 in raw_path:  # "%": decode as UTF-8 (invalid sequences become U+FFFD)
        path = unquote(raw_path.decode("latin-1"), "utf-8", "replace")
    else:
        path = raw_path.decode("latin-1")
    get = _LOWER.get
    headers = [(get(n) or lower_name(n), v) for n, v in request.headers]  # a call on a miss only
    if authority is not None:
        headers = [h for h in headers if h[0] != b"host"]
        headers.append((b"host", authority))
    return path, raw_path, query, headers


def http_scope(info: ConnInfo, request: Request,
               extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The scope of ``request``: path percent-decoded as UTF-8, headers lower-cased.

    An absolute-form target keeps only its path and query (the authority replaced
    ``Host`` in the parser); ``OPTIONS *`` has the path ``*``. ``extensions``: the
    scope's (the app's own dict), ``{}`` when None.
    """
    path, raw_path, query, headers = _target(request)
    return express_scope(info, request.method, raw_path, query, request.version, headers,
                         {} if extensions is None else extensions, path)


def express_scope(info: ConnInfo, method: str, raw_path: bytes, query: bytes, version: str,
                  headers: list[tuple[bytes, bytes]], extensions: dict[str, Any],
                  path: str | None = None) -> dict[str, Any]:
    """The scope of a head the express lane read (``express.match``), as ``http_scope``.

    The lane takes origin-form targets without ``%`` only, so the path is the raw path
    decoded as Latin-1 (ASCII here), with nothing to unquote and no authority;
    ``headers`` come lower-cased from the lane (its ``lowered``), a list of the
    request's own. One dict display, sized once; ``asgi`` and ``state`` are new per
    request. ``http_scope`` passes the ``path`` it decoded.
    """
    if path is None:
        path = raw_path.decode("latin-1")
    if info.root:
        path, raw_path = with_root(info, path, raw_path)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": version,
        "method": method,
        "scheme": info.scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": info.root,
        "headers": headers,
        "client": info.client,
        "server": info.server,
        "extensions": extensions,
    }
    if info.state is not None:
        scope["state"] = info.state.copy()
    if info.trusted:
        forwarded(scope, info, "https", "http")
    return scope


def websocket_scope(info: ConnInfo, request: Request, subprotocols: list[str]) -> dict[str, Any]:
    """The ``websocket`` scope of an upgrade ``request`` (ASGI WebSocket spec 2.4).

    As the ``http`` scope, without ``method``; ``scheme`` is ``ws`` or ``wss``,
    ``subprotocols`` the client's offers in its order, and ``extensions`` offers
    ``websocket.http.response`` (the app may deny with a whole HTTP response).
    """
    path, raw_path, query, headers = _target(request)
    if info.root:
        path, raw_path = with_root(info, path, raw_path)
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": request.version,
        "scheme": "wss" if info.scheme == "https" else "ws",
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": info.root,
        "headers": headers,
        "client": info.client,
        "server": info.server,
        "subprotocols": subprotocols,
        "extensions": {"websocket.http.response": {}},  # the app's own: it may change it
    }
    if info.state is not None:
        scope["state"] = info.state.copy()
    if info.trusted:
        forwarded(scope, info, "wss", "ws")
    return scope
