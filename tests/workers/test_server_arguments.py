"""``Server(...)`` checks what ``reactor serve`` checks, with clear messages.

``Server("not an app")`` used to start and answer 500; ``graceful_timeout=-1`` was taken.
"""

from __future__ import annotations

from typing import Any

import pytest
from mioreactor import Server
from mioreactor.reactor import available_backends
from mioreactor.workers.server.binds import BindError

from tests.cli.apps import app

pytestmark = pytest.mark.timeout(10)

MISSING = next(b for b in ("kqueue", "epoll") if b not in available_backends())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"app": "not an app"}, TypeError, "app must be a WSGI application .* got str 'not an app'"),
        ({"handler": 42}, TypeError, "handler must be a handler factory .* got int"),
        ({"http": {"keepalive_timeout": 5}}, TypeError, "http must be an HttpConfig, got dict"),
        ({"graceful_timeout": -1}, ValueError, "graceful_timeout must not be negative, got -1"),
        ({"graceful_timeout": float("nan")}, ValueError, "graceful_timeout must not be negative"),
        ({"timeout": -0.5}, ValueError, "timeout must not be negative, got -0.5"),
        ({"handoff_after": -1}, ValueError, "handoff_after must not be negative"),
        ({"workers": 0}, ValueError, "workers must be at least 1, got 0"),
        ({"workers": "4"}, TypeError, "workers must be an int, got str"),
        ({"backlog": 0}, ValueError, "backlog must be at least 1"),
        ({"run_slots": 0}, ValueError, "run_slots must be at least 1"),
        ({"tls_handshake_timeout": 0}, ValueError, "tls_handshake_timeout must be positive"),
        ({"backend": MISSING}, ValueError, f"backend '{MISSING}' is not available on this system"),
        ({"bind": "127.0.0.1:70000"}, BindError, "port 70000 is out of range 0-65535"),
        ({"metrics_bind": "127.0.0.1:x"}, ValueError, "port 'x' is not a number"),
    ],
)
def test_a_bad_argument_fails_at_construction(kwargs: dict[str, Any], error: type[Exception],
                                              message: str) -> None:
    args: dict[str, Any] = {"bind": "127.0.0.1:0"}
    if "handler" not in kwargs:
        args["app"] = app
    args.update(kwargs)
    with pytest.raises(error, match=message):
        Server(**args)


def test_good_arguments_are_taken() -> None:
    server = Server(app, bind=["127.0.0.1:0", "8080", ":0"], graceful_timeout=0, timeout=0)
    assert server.binds == ["127.0.0.1:0", "8080", ":0"]
