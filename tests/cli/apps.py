"""Apps the CLI tests serve with ``reactor serve tests.cli.apps:NAME``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answers every request with JSON naming this process and the path."""
    body = json.dumps({"pid": os.getpid(), "path": environ["PATH_INFO"], "app": "plain"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI 3 app: the same JSON as ``app``."""
    if scope["type"] != "http":
        return
    body = json.dumps({"pid": os.getpid(), "path": scope["path"], "app": "asgi"}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def slow(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Sleeps ``?seconds`` (default 1) before answering: an in-flight request to drain."""
    query = environ.get("QUERY_STRING", "")
    seconds = float(query.partition("seconds=")[2] or 1.0)
    time.sleep(seconds)
    body = f"slept {seconds}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def create_app() -> Callable[..., Iterable[bytes]]:
    """A factory (``--factory``) returning an app that says it was made by one."""

    def made(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = b"made by a factory\n"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return made


def failing_factory() -> Callable[..., Iterable[bytes]]:
    raise RuntimeError("the factory failed on purpose")


class Nested:
    """Dotted attribute access: ``tests.cli.apps:Nested.inner.app``."""

    class inner:
        app = staticmethod(app)


not_callable = 42


def pid(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """This process's id, zero-padded: a fixed length, as ``ab`` checks lengths."""
    body = b"%010d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def whoami(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The uid, gid, pid and umask the app runs with (``--user``, ``--group``, ``--umask``)."""
    umask = None
    with open("/proc/self/status") as f:  # reading it with os.umask would change it
        for line in f:
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    body = json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                       "groups": os.getgroups(), "pid": os.getpid(), "umask": umask}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def gil_hog(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``/hog`` runs C code that holds the GIL for ages (``sum`` over a huge range never
    returns to the interpreter loop): the whole process runs no other Python."""
    if environ["PATH_INFO"] == "/hog":
        sum(range(10**13))
    body = b"%010d\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def gc_state(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """JSON: this process's pid and how many objects ``gc.freeze`` set aside."""
    import gc

    body = json.dumps({"pid": os.getpid(), "frozen": gc.get_freeze_count()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
