"""The ASGI lifespan protocol: startup before the server accepts, shutdown after it stops.

``--lifespan auto`` runs it and, if the app raises before answering the startup (it
does not speak lifespan), logs one line and serves on; ``on`` makes that a failure;
``off`` never calls the app with a lifespan scope. A ``lifespan.startup.failed`` (or
an error with ``on``) stops the server before it binds, with the app's message.

The lifespan ``state`` dict is the one each request's scope gets a shallow copy of.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .cycle import ASGIApp, Message
from .loop import LoopDriver

__all__ = ["LIFESPAN_MODES", "Lifespan", "LifespanError"]

log = logging.getLogger("mioreactor.asgi")

LIFESPAN_MODES = ("auto", "on", "off")


class LifespanError(RuntimeError):
    """The application's startup failed; the message is one line for the operator."""


class Lifespan:
    """Run an app's lifespan on the server's loop (from the thread that starts it).

    Args:
        app: the ASGI 3 application.
        driver: the loop to run it on (before any worker steps it, after they stop).
        mode: ``auto``, ``on`` or ``off``.
        state: the dict given as ``scope["state"]``.
        timeout: seconds startup and shutdown may take each.
    """

    def __init__(self, app: ASGIApp, driver: LoopDriver, mode: str, state: dict[str, Any],
                 timeout: float = 60.0) -> None:
        if mode not in LIFESPAN_MODES:
            raise ValueError(f"lifespan must be one of {', '.join(LIFESPAN_MODES)}, got {mode!r}")
        self.app = app
        self.driver = driver
        self.mode = mode
        self.state = state
        self.timeout = timeout
        self.supported = False
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Message] | None = None
        self._started: asyncio.Future[str | None] | None = None
        self._stopped: asyncio.Future[str | None] | None = None
        self._answered = False

    def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer.

        Raises:
            LifespanError: the app reported a failure (or raised, with ``on``).
        """
        if self.mode == "off":
            return
        loop = self.driver.loop
        self._queue = asyncio.Queue()
        self._started = loop.create_future()
        self._stopped = loop.create_future()
        self._queue.put_nowait({"type": "lifespan.startup"})
        self._task = loop.create_task(self._main())
        try:
            failure = self.driver.run(asyncio.shield(self._started), self.timeout)
        except asyncio.TimeoutError:
            raise LifespanError(f"ASGI lifespan startup took more than {self.timeout:g} s") from None
        if failure is not None:
            raise LifespanError(f"ASGI lifespan startup failed: {failure}")

    def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the answer (errors are logged)."""
        task = self._task
        if task is None or task.done() or not self.supported or self._queue is None:
            return
        assert self._stopped is not None
        self._queue.put_nowait({"type": "lifespan.shutdown"})
        try:
            failure = self.driver.run(asyncio.shield(self._stopped), self.timeout)
        except asyncio.TimeoutError:
            log.error("ASGI lifespan shutdown took more than %g s", self.timeout)
            return
        if failure is not None:
            log.error("ASGI lifespan shutdown failed: %s", failure)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if not self._answered and self.mode == "auto":
                log.info("ASGI lifespan unsupported by the app (%s: %s); going on without it",
                         type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self._resolve(None, None)
                return
            log.error("exception in the ASGI lifespan", exc_info=exc)
            line = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self._resolve(line, line)
            return
        if not self._answered:  # returned at once: it does not speak lifespan (as uvicorn)
            log.info("ASGI lifespan: the app returned without answering; going on without it")
        self._resolve(None, None)

    def _resolve(self, started: str | None, stopped: str | None) -> None:
        for fut, value in ((self._started, started), (self._stopped, stopped)):
            if fut is not None and not fut.done():
                fut.set_result(value)

    async def _receive(self) -> Message:
        assert self._queue is not None
        return await self._queue.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        assert self._started is not None and self._stopped is not None
        if kind == "lifespan.startup.complete":
            self._answered = self.supported = True
            self._started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self._answered = True
            self._started.set_result(message.get("message") or "(no message)")
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self._stopped.set_result(message.get("message") or "(no message)")
        else:
            raise RuntimeError(f"unexpected lifespan message type {kind!r}")
