"""The HTTP handler behind the real ``mioreactor.workers.server.server.Server``, driven by ``requests``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

requests = pytest.importorskip("requests")
flask = pytest.importorskip("flask")
server_mod = pytest.importorskip("mioreactor.workers.server.server")

from mioreactor.workers.http import HttpConfig, make_http_handler_factory  # noqa: E402


def make_app() -> object:
    app = flask.Flask("mioreactor-test")

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    @app.post("/json")
    def echo_json() -> object:
        return flask.jsonify(got=flask.request.get_json())

    @app.get("/stream")
    def stream() -> object:
        return flask.Response((b"%d\n" % i for i in range(1000)), mimetype="text/plain")

    @app.post("/upload")
    def upload() -> str:
        return hashlib.sha256(flask.request.get_data()).hexdigest()

    return app


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = make_app()
    factory = make_http_handler_factory(app, HttpConfig())
    with server_mod.Server(bind="127.0.0.1:0", workers=2, handler=factory) as server:
        yield server.url.rstrip("/")


def test_flask_routes_json_and_streaming(url: str) -> None:
    with requests.Session() as s:
        assert s.get(f"{url}/hello/bob", timeout=10).text == "hello bob"
        assert s.post(f"{url}/json", json={"a": [1, 2]}, timeout=10).json() == {"got": {"a": [1, 2]}}
        r = s.get(f"{url}/stream", timeout=10)
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert r.text == "".join(f"{i}\n" for i in range(1000))
        assert s.get(f"{url}/missing", timeout=10).status_code == 404


def test_ten_megabyte_chunked_upload_arrives_intact(url: str) -> None:
    data = os.urandom(10 * 1024 * 1024)

    def gen() -> Iterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    r = requests.post(f"{url}/upload", data=gen(), timeout=30)
    assert r.status_code == 200 and r.text == hashlib.sha256(data).hexdigest()
