"""Embedding: an application that serves HTTP in the background while it works.

A batch job that exposes its progress on ``/status`` (for a health check or a
dashboard) while its main thread does the work, then stops the server gracefully::

    python examples/embed_background.py

``Server.start()`` returns once the listener is bound and every thread runs;
``stop()`` returns only when every thread has ended. Port 0 lets the kernel pick a
free port; ``server.url`` says which. See docs/embedding.md for the whole API.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from mioreactor.workers import Server

StartResponse = Callable[..., Any]


class Progress:
    """The job's state, written by the main thread and read by the server's workers."""

    def __init__(self, total: int) -> None:
        self._lock = threading.Lock()
        self.total = total
        self.done = 0

    def advance(self) -> None:
        with self._lock:
            self.done += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"done": self.done, "total": self.total}


def make_status_app(progress: Progress) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: ``/status`` answers the job's progress as JSON; anything else 404."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] != "/status":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        body = json.dumps(progress.snapshot()).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


def main() -> None:
    """Run a ten-step job with a status server beside it."""
    progress = Progress(total=10)
    server = Server(make_status_app(progress), bind="127.0.0.1:0", workers=2)
    server.start()
    print(f"status on {server.url}/status", flush=True)
    try:
        for _ in range(progress.total):
            time.sleep(0.02)  # the real work would go here
            progress.advance()
            with urllib.request.urlopen(server.url + "/status", timeout=5) as response:
                print("status:", response.read().decode(), flush=True)
    finally:
        stats = server.stats()
        server.stop(timeout=5)  # graceful: in-flight requests finish first
    print(f"served {stats['accepted']} connection(s); stopped", flush=True)


if __name__ == "__main__":
    main()
