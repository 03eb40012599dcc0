"""Fixtures for the reactor contract suite: every test that takes ``poll`` runs once per
backend this machine really offers (CPython ``test_selectors``, uvicorn's
``http_protocol_cls``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mioreactor import reactor
from mioreactor.reactor import Events, Poll
from mioreactor.reactor.net import TcpListener

BACKENDS = reactor.available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def poll(backend: str) -> Iterator[Poll]:
    p = Poll(backend=backend)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def events() -> Events:
    return Events(64)


@pytest.fixture
def listener() -> Iterator[TcpListener]:
    sock = TcpListener.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def closing() -> Iterator[list[object]]:
    """Append sockets and streams here; they are closed when the test ends."""
    things: list[object] = []
    yield things
    for thing in reversed(things):
        close = getattr(thing, "close", None)
        if close is not None:
            close()
