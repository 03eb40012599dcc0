"""``reactor serve`` freezes the heap it set up (``settle_heap``: docs/design.md, "No
garbage cycles"): the cyclic collector then walks only what came after."""

from __future__ import annotations

import gc
import weakref

import pytest
from mioreactor.workers.process.runner import settle_heap

from tests.cli.proc import ServeProcess, free_port, get_json

pytestmark = pytest.mark.timeout(60)


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_settle_heap_collects_then_freezes() -> None:
    cycle = _Node()
    gone = weakref.ref(cycle)
    del cycle
    try:
        settle_heap()
        assert gone() is None  # garbage of the set-up is freed, not frozen
        assert gc.get_freeze_count() > 1000  # the modules, this test's heap
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_serving_process_has_frozen_its_start(processes: str) -> None:
    port = free_port()
    with ServeProcess(["tests.cli.apps:gc_state", "-b", f"127.0.0.1:{port}",
                       "-p", processes]) as proc:
        proc.wait_serving()
        answer = get_json(("127.0.0.1", port), "/")
    assert answer["frozen"] > 1000, answer


def test_settle_heap_counts_the_collector_from_zero_after_its_own_pass() -> None:
    from mioreactor.workers.ops import gcstats

    gcstats.install()
    gc.collect(2)
    assert gcstats.snapshot()["collections"][2] >= 1
    try:
        settle_heap()  # one more full pass, not counted
        after = gcstats.snapshot()
        assert after["collections"][2] == 0
        assert after["pause_seconds"][2] == 0.0
    finally:
        gc.unfreeze()
