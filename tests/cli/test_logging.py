"""Logging leaves the root logger to the application; levels in any case.

Only the ``mioreactor`` logger gets a handler of ours (and does not propagate), so an
app that configures its own logging sees each of its lines once: a Django 404 used to
print once by Django and once more as ``[WARNING] django.request: Not Found``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from mioreactor import cli
from mioreactor.workers.process.config import Config
from mioreactor.workers.process.logs import setup_logging

from tests.cli.proc import ServeProcess, free_port, http_request

pytestmark = pytest.mark.timeout(30)

DJANGO_LIKE = '''
import logging, sys

# What Django's LOGGING does for django.request: a handler on its own logger, which
# still propagates to the root.
log = logging.getLogger("shop.request")
handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter("shop: %(levelname)s %(message)s"))
log.addHandler(handler)
log.setLevel(logging.INFO)

def application(environ, start_response):
    log.warning("Not Found: %s", environ["PATH_INFO"])
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
'''


@pytest.fixture
def keep_logging() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("", "mioreactor", "mioreactor.http.access")]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def test_an_app_log_line_appears_once(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(DJANGO_LIKE)
    port = free_port()
    with ServeProcess(["shop:application", "--app-dir", str(tmp_path), "-b", f"127.0.0.1:{port}"]) as proc:
        proc.wait_serving()
        assert http_request(("127.0.0.1", port), "/missing")[0] == 404
        proc.wait_for("Not Found: /missing")
        proc.close()
    lines = [line for line in proc.lines if "Not Found: /missing" in line]
    assert lines == ["shop: WARNING Not Found: /missing"]


def test_setup_logging_leaves_the_root_logger_alone(keep_logging: None) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    setup_logging(Config(log_level="debug"))
    assert (list(root.handlers), root.level) == before
    ours = logging.getLogger("mioreactor")
    mine = [h for h in ours.handlers if getattr(h, "_reactor", False)]
    assert ours.level == logging.DEBUG and not ours.propagate and len(mine) == 1
    setup_logging(Config())  # again: the handler is replaced, not added
    assert len([h for h in ours.handlers if getattr(h, "_reactor", False)]) == 1


@pytest.mark.parametrize("level", ["DEBUG", "Warning", "info"])
def test_log_levels_are_case_insensitive(level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []
    monkeypatch.setattr("mioreactor.workers.process.supervisor.run", lambda c: seen.append(c) or 0)
    result = CliRunner().invoke(cli.reactor, ["serve", "--log-level", level])
    assert result.exit_code == 0, result.output
    assert seen[-1].log_level == level.lower()
    assert Config(log_level=level).log_level == level.lower()
