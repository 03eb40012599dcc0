"""Real client libraries against the strict server: requests, httpx, urllib.

The strict head rules must never refuse what real clients send (issue 12: "fix the
rule, not the client"): Host with and without a port, IPv4 literals, query strings
with reserved characters, percent-encoded paths, chunked and sized uploads,
``Expect: 100-continue``, keep-alive reuse.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest
import requests
from mioreactor.workers import Server
from mioreactor.workers.http import HttpConfig


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = b""
    while chunk := environ["wsgi.input"].read(65536):
        body += chunk
    out = json.dumps(
        {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "host": environ.get("HTTP_HOST"),
            "sha": hashlib.sha256(body).hexdigest(),
            "size": len(body),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server(validator(_app), bind="127.0.0.1:0", workers=2, http=HttpConfig(max_body_size=8 << 20)) as s:
        yield s


def _chunks(data: bytes, size: int = 10000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


PAYLOAD = bytes(range(256)) * 1000


def test_requests_get_post_chunked_and_keep_alive_work(server: Server) -> None:
    with requests.Session() as session:
        r = session.get(f"{server.url}/a%20b/c", params={"q": "x y&z=/?:@"}, timeout=10)
        assert r.status_code == 200
        seen = r.json()
        host, port = server.address
        assert (seen["path"], seen["host"]) == ("/a b/c", f"{host}:{port}")
        assert seen["query"] == "q=x+y%26z%3D%2F%3F%3A%40"
        r = session.post(f"{server.url}/up", data=PAYLOAD, timeout=10)
        assert r.json()["sha"] == hashlib.sha256(PAYLOAD).hexdigest()
        r = session.post(f"{server.url}/chunked", data=_chunks(PAYLOAD), timeout=10)
        assert r.json()["size"] == len(PAYLOAD)
        r = session.put(f"{server.url}/expect", data=PAYLOAD, headers={"Expect": "100-continue"}, timeout=10)
        assert r.json()["size"] == len(PAYLOAD)
    assert server.stats()["accepted"] >= 1


def test_httpx_get_post_streamed_upload_and_head_work(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.get("/p/ä", params={"k": "v"})
        assert r.status_code == 200 and r.json()["path"] == "/p/ä".encode().decode("latin-1")
        r = client.post("/up", content=PAYLOAD)
        assert r.json()["sha"] == hashlib.sha256(PAYLOAD).hexdigest()
        r = client.post("/stream", content=_chunks(PAYLOAD))
        assert r.json()["size"] == len(PAYLOAD)
        r = client.head("/")
        assert r.status_code == 200 and r.content == b""
        r = client.request("OPTIONS", "/")
        assert r.status_code == 200


def test_urllib_and_a_localhost_host_header_work(server: Server) -> None:
    port = server.address[1]
    with urllib.request.urlopen(f"http://localhost:{port}/u?x=1", timeout=10) as resp:
        seen = json.loads(resp.read())
    assert seen["host"] == f"localhost:{port}" and seen["query"] == "x=1"
