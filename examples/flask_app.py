"""A small Flask application: any WSGI framework runs on mioreactor unchanged.

From the repository root::

    reactor serve examples.flask_app:app -b 127.0.0.1:8000 -w 4
    python examples/flask_app.py --bind 127.0.0.1:8000

then ``curl http://127.0.0.1:8000/`` or
``curl -X POST -H 'Content-Type: application/json' -d '{"name": "tea"}' http://127.0.0.1:8000/items``.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

from flask import Flask, abort, jsonify, request

from mioreactor.workers import Server

app = Flask(__name__)

# Worker threads share this store, so it is guarded by a lock (a real app would use a
# database). Requests run on several threads: never rely on one request per thread.
_items: dict[int, dict[str, Any]] = {}
_items_lock = threading.Lock()
_next_id = 1


@app.get("/")
def index() -> dict[str, Any]:
    """Say hello, and which worker thread runs this request."""
    return {"hello": "mioreactor", "thread": threading.current_thread().name}


@app.get("/items")
def list_items() -> Any:
    """Every item, oldest first."""
    with _items_lock:
        return jsonify(sorted(_items.values(), key=lambda item: item["id"]))


@app.post("/items")
def create_item() -> tuple[dict[str, Any], int]:
    """Create an item from a JSON body ``{"name": ...}``; 201 with the new item."""
    global _next_id
    payload = request.get_json(silent=True) or {}
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        abort(400, "expected a JSON body with a non-empty 'name'")
    with _items_lock:
        item = {"id": _next_id, "name": name}
        _items[_next_id] = item
        _next_id += 1
    return item, 201


@app.get("/items/<int:item_id>")
def get_item(item_id: int) -> dict[str, Any]:
    """One item, or 404."""
    with _items_lock:
        item = _items.get(item_id)
    if item is None:
        abort(404)
    return item


def main(argv: list[str] | None = None) -> None:
    """Serve the Flask app until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description="Serve the example Flask app.")
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (port 0: any)")
    parser.add_argument("--workers", type=int, default=4, help="worker threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = Server(app, bind=args.bind, workers=args.workers).start()
    # Announce once the signal handlers are in place: whoever reads the line may signal at once.
    server.serve_forever(ready=lambda s: print(f"serving on {s.url}", flush=True))


if __name__ == "__main__":
    main()
