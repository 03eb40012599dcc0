"""Import ``MODULE:APP`` the way gunicorn and uvicorn do, with one-line errors.

``load_app("pkg.web:app")`` imports ``pkg.web`` and returns its ``app`` attribute;
the attribute part may be dotted (``pkg.web:api.wsgi_app``). ``"pkg.web"`` alone
serves its ``application`` (gunicorn's default), else its ``app``. With
``factory=True`` the attribute is called with no arguments and its result is the app;
``"pkg.web:create_app('prod', debug=False)"`` (gunicorn's syntax) calls it with those
arguments, which must be literals (``ast.literal_eval``; nothing is evaluated). Every failure
is an ``AppLoadError`` whose message says what went wrong in one line (the module
that failed to import and where, the attribute that is missing, what was found
instead of a callable), so the CLI can print it without a traceback.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
import traceback
from typing import Any

__all__ = ["DEFAULT_NAMES", "AppLoadError", "load_app", "parse_call", "split_app_spec"]


class AppLoadError(ValueError):
    """``MODULE:APP`` could not be turned into a callable; the message says why."""


DEFAULT_NAMES = ("application", "app")
"""What ``MODULE`` alone serves: its ``application`` (gunicorn's default), else its ``app``."""


def split_app_spec(spec: str) -> tuple[str, str]:
    """``"pkg.mod:obj.attr"`` to ``("pkg.mod", "obj.attr")``; ``"pkg.mod"`` to ``("pkg.mod", "")``.

    The attribute may be a call with literal arguments, gunicorn's factory syntax:
    ``"pkg.mod:create_app('production', debug=False)"`` (``parse_call`` reads it).

    Raises:
        AppLoadError: not of the form ``MODULE[:APP]``, a file name given for the
            module, or a call that is not ``NAME(LITERALS)``.
    """
    module, sep, attr = spec.partition(":")
    module, attr = module.strip(), attr.strip()
    if not module or (sep and not attr):
        raise AppLoadError(f"app {spec!r}: expected MODULE:APP, e.g. myproject.wsgi:app")
    if module.endswith(".py") or "/" in module:
        dotted = module.removesuffix(".py").replace("/", ".").strip(".")
        raise AppLoadError(f"app {spec!r}: give the module, not the file: {dotted}"
                           f"{':' + attr if attr else ''}")
    if not all(part.isidentifier() for part in module.split(".")):
        raise AppLoadError(f"app {spec!r}: {module!r} is not a module name")
    parse_call(spec, attr)  # a bad call is a mistake now, not at import
    return module, attr


def parse_call(spec: str, attr: str) -> tuple[str, tuple[Any, ...], dict[str, Any]] | None:
    """``"create_app('x', debug=True)"`` to ``("create_app", ("x",), {"debug": True})``.

    None for a plain (dotted) name. Arguments must be literals (strings, numbers,
    tuples, lists, dicts, True/False/None), read with ``ast.literal_eval``: nothing
    of the command line is ever evaluated as code.

    Raises:
        AppLoadError: not ``NAME`` or ``NAME(LITERALS)``.
    """
    if "(" not in attr:
        if not all(part.isidentifier() for part in attr.split(".")) and attr:
            raise AppLoadError(f"app {spec!r}: {attr!r} is not a name (NAME, or NAME(ARGS) "
                               "to call a factory)")
        return None
    try:
        node = ast.parse(attr, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"app {spec!r}: {attr!r} is not NAME(ARGS) with literal "
                           "arguments") from None
    if not isinstance(node, ast.Call):
        raise AppLoadError(f"app {spec!r}: expected NAME or NAME(ARGS), got {attr!r}")
    parts: list[str] = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise AppLoadError(f"app {spec!r}: only a name can be called, e.g. create_app()")
    parts.append(func.id)
    try:
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError("**")
            kwargs[kw.arg] = ast.literal_eval(kw.value)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        raise AppLoadError(f"app {spec!r}: the arguments of a factory call must be literals "
                           "(strings, numbers, lists, dicts, True, False, None)") from None
    return ".".join(reversed(parts)), args, kwargs


def _where(exc: BaseException) -> str:
    """`` (file.py:12)`` for the innermost frame of ``exc``, or ``""``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
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
    module_name, attr = split_app_spec(spec)
    call = parse_call(spec, attr)
    if call is not None and factory:
        raise AppLoadError(f"app {spec!r}: give --factory or a call NAME(...), not both")
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if not os.path.isdir(path):
            raise AppLoadError(f"--app-dir {app_dir!r} is not a directory")
        if path not in sys.path:
            sys.path.insert(0, path)
    module: Any = _import(module_name, app_dir and os.path.abspath(app_dir))
    if not attr:
        found = next((n for n in DEFAULT_NAMES if hasattr(module, n)), None)
        if found is None:
            raise AppLoadError(
                f"app {spec!r}: {module_name!r} has neither 'application' nor 'app'; give "
                f"MODULE:NAME, e.g. {module_name}:create_app()"
            )
        attr = found
    attr_path = call[0] if call is not None else attr
    obj: Any = module
    walked = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"app {spec!r}: {walked!r} has no attribute {part!r}") from None
        walked = f"{walked}.{part}" if walked != module_name else f"{module_name}:{part}"
    if factory or call is not None:
        how = "with --factory" if factory else "called"
        if not callable(obj):
            raise AppLoadError(f"app {spec!r} {how}: {type(obj).__name__} is not callable")
        args, kwargs = (call[1], call[2]) if call is not None else ((), {})
        try:
            obj = obj(*args, **kwargs)
        except Exception as exc:
            raise AppLoadError(
                f"app factory {spec!r} failed: {type(exc).__name__}: {exc}{_where(exc)}"
            ) from None
    if not callable(obj):
        kind = f"{type(obj).__name__} {obj!r}"[:80]
        source = "its factory returned" if factory or call is not None else "it is"
        raise AppLoadError(f"app {spec!r} is not callable: {source} {kind}; expected {what}")
    return obj
