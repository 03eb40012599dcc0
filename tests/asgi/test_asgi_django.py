"""Django's ASGI handler (``get_asgi_application()``) with async views, served in-process.

Django's settings are the process's: configured here once, minimal (no database, no
middleware, no installed apps), with ``ROOT_URLCONF`` naming a module made here that
holds ``urlpatterns``.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
from mioreactor import Server
from mioreactor.workers.http import HttpConfig

pytestmark = pytest.mark.timeout(30)

django = pytest.importorskip("django", reason="django is in the test extra: pip install -e '.[test]'")
httpx = pytest.importorskip("httpx")

from django.conf import settings  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

URLCONF = "mioreactor_test_django_urls"


async def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({
        "hello": "django", "method": request.method, "path": request.path,
        "host": request.get_host(),  # checks ALLOWED_HOSTS
        "query": request.GET.get("q"), "remote": request.META.get("REMOTE_ADDR"),
        "secure": request.is_secure(),
    })


async def echo(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405)
    body = request.body  # read by Django's handler before the view runs
    data = json.loads(body) if request.content_type == "application/json" else None
    return JsonResponse({"size": len(body), "head": body[:16].hex(), "json": data})


def _configure() -> None:
    if not settings.configured:
        urls = types.ModuleType(URLCONF)
        urls.urlpatterns = [path("hello/", hello), path("echo/", echo)]  # type: ignore[attr-defined]
        sys.modules[URLCONF] = urls
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF=URLCONF,
            SECRET_KEY="not-a-secret-only-for-tests",
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            DATABASES={},
        )
    assert settings.ROOT_URLCONF == URLCONF, "Django was configured elsewhere in this process"


def django_app() -> Any:
    _configure()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def test_django_async_views_answer_json_and_read_a_post_body() -> None:
    with Server(django_app(), bind="127.0.0.1:0", workers=2, lifespan="off") as server:
        assert server.interface == "asgi"
        with httpx.Client(base_url=server.url, timeout=10) as client:
            r = client.get("/hello/", params={"q": "x"})
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert r.json() == {"hello": "django", "method": "GET", "path": "/hello/",
                                "host": f"127.0.0.1:{server.address[1]}", "query": "x",
                                "remote": "127.0.0.1", "secure": False}
            payload = {"items": list(range(100)), "name": "pen"}
            r = client.post("/echo/", json=payload)
            assert r.status_code == 200 and r.json()["json"] == payload
            big = bytes(range(256)) * 1024  # 256 KiB: several reads, reading may pause
            r = client.post("/echo/", content=big,
                            headers={"content-type": "application/octet-stream"})
            assert r.json() == {"size": len(big), "head": big[:16].hex(), "json": None}
            assert client.get("/echo/").status_code == 405
            assert client.get("/nowhere/").status_code == 404
            # ALLOWED_HOSTS is Django's own check (get_host): another Host is its 400.
            assert client.get("/hello/", headers={"host": "evil.example"}).status_code == 400


def test_django_sees_the_client_and_https_from_a_trusted_proxy() -> None:
    cfg = HttpConfig(forwarded_allow_ips=("127.0.0.1",))
    with Server(django_app(), bind="127.0.0.1:0", workers=1, http=cfg, lifespan="off") as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            r = client.get("/hello/", headers={"x-forwarded-for": "203.0.113.5",
                                               "x-forwarded-proto": "https"})
    assert r.json()["remote"] == "203.0.113.5" and r.json()["secure"] is True
