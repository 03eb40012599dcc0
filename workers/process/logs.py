"""Where ``reactor serve`` logs: the ``mioreactor`` loggers only; the root is the app's.

Every logger of the package is named ``mioreactor.*`` (``mioreactor.serve``,
``mioreactor.supervisor``, ``mioreactor.http.access``, ...). ``setup_logging`` gives the
``mioreactor`` logger a handler of its own, on stderr or ``--error-logfile``, and stops
its records from propagating to the root logger, which stays as the application leaves
it: an app that configures logging (Django's ``LOGGING``, ``logging.basicConfig``) sees
each of its lines once, never a second copy through a handler of ours.

``--access-logfile`` gives the access logger (``mioreactor.http.access``) a handler of
its own (``-``: stdout, gunicorn's meaning). A file is opened in append mode by a
``WatchedFileHandler``, which reopens it when logrotate moves it away; every process
of a supervisor appends to the same file (each line is one ``write``).

``--log-config FILE`` replaces all of this with the user's configuration: dictConfig
in JSON or TOML (by the file's suffix), or fileConfig (INI) otherwise; loggers that
exist already (ours) are not disabled unless the file says so.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import logging.handlers
import sys
from typing import Any

from .config import Config, ConfigError

__all__ = ["LOGGER", "LOG_FORMAT", "read_log_config", "setup_logging"]

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
LOGGER = "mioreactor"
"""The logger every logger of the package is under."""

_ACCESS = "mioreactor.http.access"


def _ours(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, "_reactor", False):
            logger.removeHandler(handler)
            handler.close()


def _handler(target: str | None, default: Any, fmt: str | None) -> logging.Handler:
    handler: logging.Handler
    if target is None or target == "-":
        handler = logging.StreamHandler(default)
    else:
        try:
            handler = logging.handlers.WatchedFileHandler(target)
        except OSError as exc:
            raise ConfigError(f"cannot open log file {target}: {exc.strerror or exc}") from None
    handler.setFormatter(logging.Formatter(fmt, "%Y-%m-%d %H:%M:%S"))
    setattr(handler, "_reactor", True)  # noqa: B010  (marks our handlers for _ours)
    return handler


def read_log_config(path: str) -> dict[str, Any] | None:
    """The dictConfig of a ``.json`` or ``.toml`` file; None for an INI file (checked).

    Raises:
        ConfigError: the file cannot be read or parsed; one line naming it.
    """
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        elif path.endswith(".toml"):
            from .configfile import read_toml

            data = read_toml(path)
        else:
            parser = configparser.ConfigParser()
            if not parser.read(path, encoding="utf-8"):
                raise ConfigError(f"--log-config {path}: cannot read it")
            if not parser.has_section("loggers"):
                raise ConfigError(f"--log-config {path}: not a logging fileConfig (no "
                                  "[loggers] section); dictConfig goes in .json or .toml")
            return None
    except OSError as exc:
        raise ConfigError(f"--log-config {path}: {exc.strerror or exc}") from None
    except (ValueError, configparser.Error) as exc:  # JSON, TOML and INI errors
        raise ConfigError(f"--log-config {path}: not valid ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or "version" not in data:
        raise ConfigError(f"--log-config {path}: a dictConfig needs 'version = 1' at the top")
    return data


def _apply_log_config(path: str) -> None:
    data = read_log_config(path)
    try:
        if data is None:
            logging.config.fileConfig(path, disable_existing_loggers=False)
        else:
            data.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(data)
    except Exception as exc:  # dictConfig raises ValueError, KeyError, ImportError, ...
        raise ConfigError(f"--log-config {path}: {' '.join(str(exc).split())}") from None


def setup_logging(config: Config) -> None:
    """Send the package's records to stderr (or ``--error-logfile``) at
    ``config.log_level``, access lines where ``--access-logfile`` says; or apply
    ``--log-config``. The root logger is not touched (unless the log config does).

    Raises:
        ConfigError: a log file cannot be opened, a log config does not apply.
    """
    top = logging.getLogger(LOGGER)
    access = logging.getLogger(_ACCESS)
    _ours(top)
    _ours(access)
    access.propagate = True
    if config.log_config:
        top.setLevel(config.log_level_number)
        access.setLevel(logging.INFO if config.http.access_log else logging.NOTSET)
        _apply_log_config(config.log_config)
        return
    top.addHandler(_handler(config.error_logfile, sys.stderr, LOG_FORMAT))
    top.setLevel(config.log_level_number)
    top.propagate = False
    access.setLevel(logging.INFO if config.http.access_log else logging.NOTSET)
    if config.access_logfile:
        access.addHandler(_handler(config.access_logfile, sys.stdout, "%(message)s"))
        access.propagate = False
