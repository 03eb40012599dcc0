"""Config files: ``reactor serve --config FILE`` reads the options from TOML.

The keys are the long option names of ``reactor serve``, with dashes or underscores::

    # /etc/mioreactor/site.toml
    app = "myproject.wsgi:application"
    bind = ["0.0.0.0:8000", "unix:/run/site.sock"]
    workers = 8
    processes = 4
    max-requests = 10000
    timeout = 30

Precedence, highest first: the command line, ``REACTOR_*`` environment variables,
the file, the built-in defaults. The CLI (``cli.py``) checks each key against its
options, so an unknown key or a value of the wrong type is an error naming the key and
the file; this module only reads the file and keeps the CLI free of TOML details.

Python 3.11+ reads TOML with the standard library's ``tomllib``; 3.10 with ``tomli``
(a conditional dependency of the package).
"""

from __future__ import annotations

import sys
from typing import Any

from .config import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["format_value", "read_config_file", "read_env_file", "read_toml"]


def read_config_file(path: str) -> dict[str, Any]:
    """The top-level keys of the TOML file ``path``, with ``-`` turned into ``_``.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or names a key twice
            (``max-requests`` and ``max_requests``), or is gunicorn's Python config
            (``gunicorn.conf.py``: ``workers = 4`` is valid TOML, and would mean 4
            threads here); one line naming the file.
    """
    if path.endswith(".py") or path.startswith("python:"):
        raise ConfigError(
            f"config file {path!r} is Python, gunicorn's format; reactor serve reads TOML "
            "with keys named as its options (bind = [\"0.0.0.0:8000\"], processes = 4 for "
            "gunicorn's workers); docs/deployment.md maps gunicorn's settings"
        )
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not UTF-8 text: {exc.reason}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in out:
            raise ConfigError(f"config file {path!r}: {key!r} is given twice (with - and _)")
        out[name] = value
    return out


def read_toml(path: str) -> dict[str, Any]:
    """A TOML file as a dict (``tomllib``, or ``tomli`` on 3.10).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not TOML (``TOMLDecodeError`` is a ``ValueError``).
    """
    with open(path, "rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


def format_value(value: Any) -> str:
    """A value as TOML writes it (``--print-config`` output can be a config file)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def read_env_file(path: str) -> dict[str, str]:
    """The variables of a dotenv file (``--env-file``, uvicorn's), as python-dotenv reads
    the common forms: ``KEY=value``, ``export KEY=value``, ``# comments``, blank lines,
    values in single quotes (literal) or double quotes (``\\n``, ``\\"`` escapes), and
    an unquoted value's trailing `` # comment``. No ``${VAR}`` expansion.

    Raises:
        ConfigError: the file cannot be read, or a line is not ``KEY=value``
            (naming the file and the line number).
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--env-file {path} is not UTF-8 text: {exc.reason}") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise ConfigError(f"--env-file {path}, line {number}: expected KEY=value, got "
                              f"{raw.strip()[:60]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = (value[1:-1].replace("\\n", "\n").replace('\\"', '"')
                     .replace("\\\\", "\\"))
        else:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out
