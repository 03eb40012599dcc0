"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mioreactor.workers.server.server import Server

from tests.reliability.support import AppProbe, make_app, running


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Server, int, AppProbe]]:
    """A server of the probing app (one per module): the server, its baseline
    descriptor count, and the probe that records what reached the app."""
    app = make_app()
    with running(app) as (server, baseline):
        yield server, baseline, app.probe  # type: ignore[attr-defined]
