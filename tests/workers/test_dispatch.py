"""The dispatch rule: one hot worker, standby workers, hand-off of blocked app calls.

See workers/core/scheduler.py for the rule and docs/design.md ("The GIL") for why.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from mioreactor.workers import EchoHandler, Server
from mioreactor.workers.core import connection
from mioreactor.workers.core.scheduler import RunSlots

from tests.workers.util import Gate, echo_once, recv_exactly, wait_for

SLOW = 0.3


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path.startswith("/slow"):
        time.sleep(float(path[6:] or SLOW))
    body = path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(app, bind="127.0.0.1:0", workers=4, run_slots=1, handoff_after=0.005)
    s.start()
    yield s
    s.stop(timeout=5)


def get(address: tuple[str, int], path: str, timeout: float = 5.0) -> bytes:
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


# -- the scheduler alone -----------------------------------------------------------
def test_the_first_holders_run_and_the_rest_stand_by_until_promoted() -> None:
    slots = RunSlots(1, handoff_after=0.01)
    a, b = slots.holder("a"), slots.holder("b")
    slots.enter(a)
    promoted = threading.Event()

    def standby() -> None:
        slots.enter(b)
        promoted.set()

    t = threading.Thread(target=standby, daemon=True)
    t.start()
    assert wait_for(lambda: slots.standby_count == 1, 2.0)
    assert a.holding and not b.holding and not promoted.is_set()
    slots.leave(a)
    assert promoted.wait(2.0) and b.holding
    t.join(2.0)


def test_no_work_waiting_means_no_check_timeout_and_no_hand_off() -> None:
    slots = RunSlots(1, handoff_after=0.001)
    a = slots.holder("a")
    slots.enter(a)
    with slots.section(a):
        time.sleep(0.005)
        assert slots.check(queued=0) is None
    assert slots.handoffs == 0 and a.holding


def test_a_section_blocked_past_the_threshold_with_work_waiting_is_detached() -> None:
    slots = RunSlots(1, handoff_after=0.002)
    a, b = slots.holder("a"), slots.holder("b")
    slots.enter(a)
    threading.Thread(target=slots.enter, args=(b,), daemon=True).start()
    assert wait_for(lambda: slots.standby_count == 1, 2.0)

    class FakeConn:
        _busy: Any = None

    conn = FakeConn()
    a.current = conn
    a.batch = deque([("rest", 1)])
    with slots.section(a):
        assert slots.check(queued=1) is not None  # not past the threshold yet
        assert slots.handoffs == 0
        time.sleep(0.01)
        slots.check(queued=1)
        assert slots.handoffs == 1
        assert a.detached and not a.holding
        assert conn._busy is a, "the detached worker keeps its connection"
        assert list(slots.orphans) == [deque([("rest", 1)])], "the rest of its batch moves on"
    assert wait_for(lambda: b.holding, 2.0)


def test_a_stuck_holder_is_not_detached_when_nobody_stands_by() -> None:
    slots = RunSlots(1, handoff_after=0.001)
    a = slots.holder("a")
    slots.enter(a)
    with slots.section(a):
        time.sleep(0.005)
        slots.check(queued=3)
    assert slots.handoffs == 0 and a.holding and not a.detached


def test_a_worker_coming_to_stand_by_takes_over_a_stuck_holder_at_once() -> None:
    """No acceptor check needed: the freed thread itself detaches the stuck holder."""
    slots = RunSlots(1, handoff_after=0.002)
    a, b = slots.holder("a"), slots.holder("b")
    slots.enter(a)
    promoted = threading.Event()
    a.batch = deque([("rest", 1)])  # work waits behind the stuck call
    with slots.section(a):
        time.sleep(0.01)  # stuck past the threshold, and nobody stands by yet
        assert slots.handoffs == 0
        t = threading.Thread(target=lambda: (slots.enter(b), promoted.set()), daemon=True)
        t.start()
        assert promoted.wait(2.0), "b stood by instead of taking over"
        assert b.holding and a.detached and not a.holding and slots.handoffs == 1
    t.join(2.0)


def test_a_worker_coming_to_stand_by_leaves_a_holder_under_the_threshold_alone() -> None:
    slots = RunSlots(1, handoff_after=10.0)
    a, b = slots.holder("a"), slots.holder("b")
    slots.enter(a)
    with slots.section(a):
        threading.Thread(target=slots.enter, args=(b,), daemon=True).start()
        assert wait_for(lambda: slots.standby_count == 1, 2.0)
        assert a.holding and not b.holding and slots.handoffs == 0
    slots.leave(a)
    assert wait_for(lambda: b.holding, 2.0)


# -- through a real server -----------------------------------------------------------
def test_a_cpu_light_load_is_served_by_one_hot_worker(server: Server) -> None:
    for i in range(60):
        assert get(server.address, f"/fast{i}").endswith(f"/fast{i}".encode())
    stats = server.stats()
    busy = [w for w in stats["workers"] if w["batches"] > 0]
    assert len(busy) == 1, stats["workers"]
    assert stats["handoffs"] == 0
    assert sorted(w["state"] for w in stats["workers"]) == ["running"] + ["standby"] * 3


def test_a_blocked_app_call_does_not_hold_up_other_connections(server: Server) -> None:
    results: dict[str, float] = {}

    def timed(path: str) -> None:
        t0 = time.monotonic()
        assert get(server.address, path).endswith(path.encode())
        results[path] = time.monotonic() - t0

    slow = threading.Thread(target=timed, args=("/slow",))
    slow.start()
    time.sleep(0.05)  # the slow call is running
    for i in range(5):
        timed(f"/fast{i}")
    slow.join(5)
    assert results["/slow"] >= SLOW
    assert all(results[f"/fast{i}"] < SLOW / 2 for i in range(5)), results
    assert server.stats()["handoffs"] >= 1


def test_blocking_calls_run_concurrently_up_to_the_worker_count() -> None:
    with Server(app, bind="127.0.0.1:0", workers=8, run_slots=1, handoff_after=0.002) as s:
        t0 = time.monotonic()
        threads = [
            threading.Thread(target=get, args=(s.address, "/slow/0.2")) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        elapsed = time.monotonic() - t0
    assert elapsed < 4 * 0.2, f"8 blocking calls of 0.2 s took {elapsed:.2f} s: not concurrent"


def test_events_for_a_connection_served_by_a_detached_worker_are_handed_back(
    server: Server,
) -> None:
    """Keep-alive: /slow, then (while it runs) /after on the same connection. The
    second request's readiness event is stashed and handed back, never lost."""
    stop = threading.Event()

    def load() -> None:  # other work waiting, so the slow worker gets detached
        while not stop.is_set():
            get(server.address, "/fast")

    loader = threading.Thread(target=load)
    loader.start()
    try:
        with socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.1)
            sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"/after"):
                chunk = sock.recv(65536)
                assert chunk, f"closed early: {data!r}"
                data += chunk
    finally:
        stop.set()
        loader.join(5)
    assert data.index(b"/slow") < data.index(b"/after")
    assert server.stats()["handoffs"] >= 1


def test_only_the_serving_worker_touches_a_connection_under_mixed_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "DEBUG", True)
    with Server(app, bind="127.0.0.1:0", workers=4, run_slots=1, handoff_after=0.002) as s:
        threads = [
            threading.Thread(target=get, args=(s.address, p))
            for p in ["/slow/0.05"] * 4 + ["/fast"] * 20
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        # The client sees EOF when the socket closes, just before the count moves.
        assert wait_for(lambda: s.stats()["closed"] == 24, 5.0), s.stats()
        stats = s.stats()
    assert all(w["handler_errors"] == 0 for w in stats["workers"]), stats["workers"]
    assert stats["accepted"] == 24


def test_stop_returns_while_a_worker_is_detached_in_a_long_app_call() -> None:
    s = Server(app, bind="127.0.0.1:0", workers=3, run_slots=1, handoff_after=0.002)
    s.start()
    slow = threading.Thread(target=get, args=(s.address, "/slow/0.5"))
    slow.start()
    time.sleep(0.05)
    for _ in range(5):  # work waiting: the slow worker is detached
        get(s.address, "/fast")
    assert s.stats()["handoffs"] >= 1
    t0 = time.monotonic()
    s.stop(timeout=0.1)
    assert time.monotonic() - t0 < 3.0
    assert not [t for t in threading.enumerate() if t.name.startswith("reactor-")]
    slow.join(5)


# -- the hot worker polls for itself -------------------------------------------------
def _echo(conn: Any, data: bytes) -> None:
    conn.write(data)


def test_events_ready_after_a_batch_are_polled_by_the_hot_worker_itself() -> None:
    gate = Gate()
    with Server(handler=gate.factory(_echo), bind="127.0.0.1:0", workers=2) as s:
        a = socket.create_connection(s.address, timeout=5)
        b = socket.create_connection(s.address, timeout=5)
        with a, b:
            for sock in (a, b):  # both adopted, the worker idle again
                sock.sendall(b"warm")
                assert recv_exactly(sock, 4) == b"warm"
            polled_before = sum(w["polled"] for w in s.stats()["workers"])
            a.sendall(b"hold")
            assert gate.entered.wait(5)
            b.sendall(b"next")  # ready in the kernel while the worker is busy
            time.sleep(0.05)
            gate.release.set()
            assert recv_exactly(a, 4) == b"hold"
            assert recv_exactly(b, 4) == b"next"
        stats = s.stats()
    assert sum(w["polled"] for w in stats["workers"]) > polled_before, stats["workers"]


def test_a_listener_event_met_by_the_hot_worker_is_handed_to_the_acceptor() -> None:
    gate = Gate()
    with Server(handler=gate.factory(_echo), bind="127.0.0.1:0", workers=2) as s:
        with socket.create_connection(s.address, timeout=5) as a:
            a.sendall(b"warm")
            assert recv_exactly(a, 4) == b"warm"
            a.sendall(b"hold")
            assert gate.entered.wait(5)
            # Connect while the worker is busy and the acceptor waits for it: the
            # worker's own poll meets the listener's edge and must pass it on, or
            # this client would wait in the backlog for the next edge.
            c = socket.create_connection(s.address, timeout=5)
            time.sleep(0.05)
            gate.release.set()
            with c:
                assert recv_exactly(a, 4) == b"hold"
                c.sendall(b"late")
                assert recv_exactly(c, 4) == b"late"
        stats = s.stats()
    assert stats["handed_back"] >= 1, stats
    assert stats["accepted"] == 2


def test_self_polling_can_be_switched_off() -> None:
    with Server(handler=EchoHandler, bind="127.0.0.1:0", workers=2, self_poll=False) as s:
        for _ in range(20):
            assert echo_once(s.address, b"ping") == b"ping"
        stats = s.stats()
    assert sum(w["polled"] for w in stats["workers"]) == 0
    assert stats["handed_back"] == 0


# -- the handback between the hot worker's poll and the acceptor's -----------------
def _standalone(poll: Any) -> tuple[Any, Any]:
    from mioreactor.workers.core.acceptor import Acceptor
    from mioreactor.workers.core.worker import Dispatch

    dispatch = Dispatch(poll.registry, RunSlots(1), lambda: None, poll)
    acceptor = Acceptor(poll, [], [], dispatch, max_connections=10, graceful_timeout=1.0)
    return dispatch, acceptor


def test_the_acceptor_sees_an_event_handed_back_while_it_waited_for_the_poll_lock() -> None:
    """The race a siege run found (1 run in 8): the acceptor looked at the handback
    before taking the poll lock, so an event parked meanwhile sat there while it
    blocked in the kernel, and the clients behind that listener edge waited."""
    from mioreactor.reactor import Events, Poll

    with Poll() as poll:
        dispatch, acceptor = _standalone(poll)
        events = Events(16)
        dispatch.poll_lock.acquire()  # the worker is polling
        t = threading.Thread(target=acceptor._poll, args=(events, None), daemon=True)
        t.start()
        time.sleep(0.05)  # the acceptor now waits for the lock, the handback empty
        dispatch.handback.append((1, 1))  # the worker parks a listener event
        dispatch.poll_lock.release()
        t.join(2.0)
        blocked = t.is_alive()
        acceptor.waker.wake()  # free it either way
        t.join(2.0)
        acceptor.waker.close()
    assert not blocked, "the acceptor blocked in poll with an event handed back"
    assert (1, 1) in events.raw


def test_the_worker_hands_back_listener_events_while_it_holds_the_poll_lock() -> None:
    from mioreactor.reactor import Interest, Poll
    from mioreactor.reactor.net import TcpListener
    from mioreactor.workers.core.worker import Worker

    with Poll() as poll:
        dispatch, acceptor = _standalone(poll)

        class Checked(deque):  # type: ignore[type-arg]
            def append(self, item: Any) -> None:
                assert dispatch.poll_lock.locked(), "handed back outside the poll lock"
                super().append(item)

        dispatch.handback = Checked()
        listener = TcpListener.bind(("127.0.0.1", 0))
        poll.registry.register(listener, 1, Interest.READABLE)
        client = socket.create_connection(listener.local_addr(), timeout=2)
        worker = Worker(0, EchoHandler, dispatch)
        try:
            assert wait_for(lambda: worker._poll_self() is None and dispatch.handback, 2.0)
            assert dispatch.handback[0][0] == 1 and dispatch.idle.is_set()
        finally:
            client.close()
            poll.registry.deregister(listener)
            listener.close()
            acceptor.waker.close()
