"""The stepped loop's shortcuts keep asyncio's meaning (workers/asgi/loop.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from mioreactor.workers.asgi.loop import LoopDriver


class Posting:
    def __init__(self) -> None:
        self.posted: list[Callable[[], None]] = []

    def post(self, callback: Callable[[], None]) -> None:
        self.posted.append(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        return None


def test_debug_mode_is_still_honoured_by_tasks_and_futures() -> None:
    driver = LoopDriver()
    try:
        loop = driver.loop
        assert loop.get_debug() is False
        loop.set_debug(True)
        assert loop.get_debug() is True
        with driver.lock:
            fut = loop.create_future()
        assert fut._source_traceback  # type: ignore[attr-defined]  # debug: where it was made
        loop.set_debug(False)
        assert loop.get_debug() is False
        with driver.lock:
            assert not loop.create_future()._source_traceback  # type: ignore[attr-defined]
    finally:
        driver.close()


def test_resolve_resumes_the_waiting_task_at_once_and_others_in_turn() -> None:
    driver = LoopDriver()
    driver.attach(Posting())  # type: ignore[arg-type]
    order: list[str] = []
    try:
        loop = driver.loop
        with driver.lock:
            fut: asyncio.Future[None] = loop.create_future()

            async def waiter(name: str) -> None:
                await fut
                order.append(name)
                assert asyncio.current_task() is not None  # a real task, current

            driver.start(waiter("first"))
            loop.create_task(waiter("second"))
            driver.step()  # the second task's first step: it waits too
            assert order == []
            driver.resolve(fut)
            assert order == ["first"]  # inside resolve, no step
            driver.step()
            assert order == ["first", "second"]
    finally:
        driver.close()


def test_resolve_inside_a_step_waits_for_the_step() -> None:
    driver = LoopDriver()
    driver.attach(Posting())  # type: ignore[arg-type]
    order: list[str] = []
    try:
        loop = driver.loop
        with driver.lock:
            fut: asyncio.Future[None] = loop.create_future()

            async def waiter() -> None:
                await fut
                order.append("woken")

            async def resolver() -> None:
                driver.resolve(fut)
                order.append("resolver went on")

            driver.start(waiter())
            loop.create_task(resolver())
            driver.step()
        assert order == ["resolver went on", "woken"]
    finally:
        driver.close()


def test_uvloop_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with pytest.raises(ValueError, match=r"uvloop is not installed \(pip install uvloop"):
        LoopDriver("uvloop")
