"""The built-in demo app that ``reactor serve`` runs when given no ``MODULE:APP``.

``/`` is a small HTML page saying what serves it (mioreactor's version, the poll
backend, worker threads, processes, this process's pid); ``/stats`` is JSON with the
serving process's ``pid`` and ``Server.stats()``. The app needs the ``Server`` that runs
it, which only exists after the app: build the app, build the server, then
``app.attach(server)``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from .server import Server

__all__ = ["DemoApp", "version"]

StartResponse = Callable[..., Any]


def version() -> str:
    """The installed mioreactor version, or ``"unknown"`` when run from a bare checkout."""
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version
    except ImportError:  # pragma: no cover - stdlib since 3.8
        return "unknown"
    try:
        return dist_version("mioreactor")
    except PackageNotFoundError:
        return "unknown"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mioreactor</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}
th{{text-align:left;padding-right:1em}}code{{background:#eee;padding:0 .2em}}</style></head>
<body><h1>mioreactor is serving</h1>
<p>This is the built-in demo app. Serve your own with <code>reactor serve MODULE:APP</code>.</p>
<table>
<tr><th>version</th><td>mioreactor {version}</td></tr>
<tr><th>backend</th><td>{backend}</td></tr>
<tr><th>worker threads</th><td>{workers}</td></tr>
<tr><th>processes</th><td>{processes}</td></tr>
<tr><th>pid</th><td>{pid}</td></tr>
<tr><th>listening on</th><td>{listeners}</td></tr>
</table>
<p><a href="/stats">/stats</a>: this process's server counters as JSON.</p>
</body></html>
"""


class DemoApp:
    """A WSGI app describing the server that runs it.

    Args:
        processes: how many server processes the supervisor runs (shown on the page).
    """

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes
        self.server: Server | None = None
        self._version = version()

    def attach(self, server: Server) -> None:
        """Give the app the server that serves it (for its backend, workers and stats)."""
        self.server = server

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return self._send(start_response, "405 Method Not Allowed", "text/plain", b"GET or HEAD\n",
                              [("Allow", "GET, HEAD")])
        if path == "/":
            return self._send(start_response, "200 OK", "text/html; charset=utf-8", self._page())
        if path == "/stats":
            body = json.dumps(self.stats(), indent=2, sort_keys=True).encode() + b"\n"
            return self._send(start_response, "200 OK", "application/json", body)
        return self._send(start_response, "404 Not Found", "text/plain", b"not found\n")

    def stats(self) -> dict[str, Any]:
        """``{"pid": ..., "server": Server.stats()}`` (``server`` is null before attach)."""
        server = self.server
        return {"pid": os.getpid(), "server": server.stats() if server is not None else None}

    def _page(self) -> bytes:
        server = self.server
        listeners = ", ".join(bl.describe() for bl in server.listeners) if server else ""
        return _PAGE.format(
            version=html.escape(self._version),
            backend=html.escape(server.backend_name if server else "?"),
            workers=server.workers_count if server else "?",
            processes=self.processes,
            pid=os.getpid(),
            listeners=html.escape(listeners),
        ).encode()

    @staticmethod
    def _send(
        start_response: StartResponse,
        status: str,
        content_type: str,
        body: bytes,
        extra: list[tuple[str, str]] | None = None,
    ) -> list[bytes]:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store")]
        start_response(status, headers + (extra or []))
        return [body]
