"""Import ``MODULE:APP`` the way gunicorn and uvicorn do, with one-line errors.

``load_app("pkg.web:app")`` imports ``pkg.web`` and returns its ``app`` attribute;
the attribute part may be dotted (``pkg.web:api.wsgi_app``). With ``factory=True``
the attribute is called with no arguments and its result is the app. Every failure
is an ``AppLoadError`` whose message says what went wrong in one line (the module
that failed to import and where, the attribute that is missing, what was found
instead of a callable), so the CLI can print it without a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

__all__ = ["AppLoadError", "load_app", "split_app_spec"]


class AppLoadError(ValueError):
    """``MODULE:APP`` could not be turned into a callable; the message says why."""


def split_app_spec(spec: str) -> tuple[str, str]:
    """``"pkg.mod:obj.attr"`` to ``("pkg.mod", "obj.attr")``.

    Raises:
        AppLoadError: not of the form ``MODULE:APP``.
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise AppLoadError(f"app {spec!r}: expected MODULE:APP, e.g. myproject.wsgi:app")
    return module.strip(), attr.strip()


def _where(exc: BaseException) -> str:
    """`` (file.py:12)`` for the innermost frame of ``exc``, or ``""``."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" ({os.path.relpath(last.filename) if os.path.isabs(last.filename) else last.filename}:{last.lineno})"


def _import(module: str, app_dir: str | None) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise AppLoadError(
                f"cannot import {module!r}: no module named {exc.name!r} in --app-dir "
                f"{app_dir or os.getcwd()!r} or on sys.path"
            ) from None
        raise AppLoadError(
            f"importing {module!r} failed: ModuleNotFoundError: {exc}{_where(exc)}"
        ) from None
    except SyntaxError as exc:
        raise AppLoadError(
            f"importing {module!r} failed: SyntaxError: {exc.msg} ({exc.filename}:{exc.lineno})"
        ) from None
    except Exception as exc:
        raise AppLoadError(
            f"importing {module!r} failed: {type(exc).__name__}: {exc}{_where(exc)}"
        ) from None


def load_app(
    spec: str,
    *,
    factory: bool = False,
    app_dir: str | None = None,
    what: str = "a WSGI application",
) -> Any:
    """Import ``spec`` (``MODULE:APP``) and return the callable it names.

    Args:
        spec: ``MODULE:ATTR``, ``ATTR`` possibly dotted.
        factory: call the attribute with no arguments and return the result.
        app_dir: put this directory first on ``sys.path`` before importing.
        what: how to call the expected object in error messages.

    Returns:
        The callable.

    Raises:
        AppLoadError: naming the module, attribute or value at fault.
    """
    module_name, attr_path = split_app_spec(spec)
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if not os.path.isdir(path):
            raise AppLoadError(f"--app-dir {app_dir!r} is not a directory")
        if path not in sys.path:
            sys.path.insert(0, path)
    obj: Any = _import(module_name, app_dir and os.path.abspath(app_dir))
    walked = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"app {spec!r}: {walked!r} has no attribute {part!r}") from None
        walked = f"{walked}.{part}" if walked != module_name else f"{module_name}:{part}"
    if factory:
        if not callable(obj):
            raise AppLoadError(
                f"app {spec!r} with --factory: {type(obj).__name__} is not callable"
            )
        try:
            obj = obj()
        except Exception as exc:
            raise AppLoadError(
                f"app factory {spec!r} failed: {type(exc).__name__}: {exc}{_where(exc)}"
            ) from None
    if not callable(obj):
        kind = f"{type(obj).__name__} {obj!r}"[:80]
        source = "its factory returned" if factory else "it is"
        raise AppLoadError(f"app {spec!r} is not callable: {source} {kind}; expected {what}")
    return obj
