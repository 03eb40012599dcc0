"""The smallest WSGI application, served by mioreactor.

From the repository root::

    reactor serve examples.hello_wsgi:app            # the CLI
    python examples/hello_wsgi.py --bind 127.0.0.1:8000   # this file's main()

then ``curl http://127.0.0.1:8000/``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from typing import Any

from mioreactor.workers import Server

StartResponse = Callable[..., Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answer every request with a greeting and the path that was asked for."""
    body = f"Hello from mioreactor! You asked for {environ.get('PATH_INFO') or '/'}\n".encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


def main(argv: list[str] | None = None) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM (then stop gracefully)."""
    parser = argparse.ArgumentParser(description="Serve the hello-world WSGI app.")
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (port 0: any)")
    parser.add_argument("--workers", type=int, default=4, help="worker threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = Server(app, bind=args.bind, workers=args.workers).start()
    # Announce once the signal handlers are in place: whoever reads the line may signal at once.
    server.serve_forever(ready=lambda s: print(f"serving on {s.url}", flush=True))


if __name__ == "__main__":
    main()
