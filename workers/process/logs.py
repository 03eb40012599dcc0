"""Where ``reactor serve`` logs: the ``mioreactor`` loggers only; the root is the app's.

Every logger of the package is named ``mioreactor.*`` (``mioreactor.serve``,
``mioreactor.supervisor``, ``mioreactor.http.access``, ...). ``setup_logging`` gives the
``mioreactor`` logger a handler of its own, on stderr, and stops its records from
propagating to the root logger, which stays as the application leaves it: an app
that configures logging (Django's ``LOGGING``, ``logging.basicConfig``) sees each of
its lines once, never a second copy through a handler of ours.
"""

from __future__ import annotations

import logging
import sys

from .config import Config

__all__ = ["LOGGER", "LOG_FORMAT", "setup_logging"]

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
LOGGER = "mioreactor"
"""The logger every logger of the package is under."""

_ACCESS = "mioreactor.http.access"


def _ours(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, "_reactor", False):
            logger.removeHandler(handler)
            handler.close()


def _handler(stream: logging.Handler) -> logging.Handler:
    stream.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
    stream._reactor = True  # type: ignore[attr-defined]
    return stream


def setup_logging(config: Config) -> None:
    """Send the package's records to stderr at ``config.log_level``; access lines
    when enabled. The root logger is not touched."""
    top = logging.getLogger(LOGGER)
    _ours(top)
    top.addHandler(_handler(logging.StreamHandler(sys.stderr)))
    top.setLevel(config.log_level_number)
    top.propagate = False
    access = logging.getLogger(_ACCESS)
    access.setLevel(logging.INFO if config.http.access_log else logging.NOTSET)
