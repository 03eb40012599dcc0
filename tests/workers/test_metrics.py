"""/metrics: the exposition text we write, read back by prometheus_client's parser, and
its values against ``Server.stats()`` and the requests a test sent."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from mioreactor.workers import BindError, Server
from mioreactor.workers.ops.metrics import (
    BUCKETS,
    CONTENT_TYPE,
    DURATION_BOUNDS,
    add_counters,
    escape_label,
    merge,
    render,
)
from mioreactor.workers.ops.metrics_server import ChildStats, ListenQueues, StatsResponder
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name -> type, (sample name, sorted labels) -> value), by prometheus_client."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def scrape(url: str) -> tuple[dict[str, str], Samples]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"] == CONTENT_TYPE
        return parse(resp.read().decode())


def doc(pid: int = 7, **over: Any) -> dict[str, Any]:
    """A stats document shaped like ``Server.stats()``."""
    base: dict[str, Any] = {
        "pid": pid, "accepted": 10, "active": 2, "closed": 8, "shed": 1, "paused_at_max": 3,
        "accept_errors": {"EMFILE": 4}, "handoffs": 5, "handed_back": 0, "queue_depth": 1,
        "connections": 2, "listen_queue": {"127.0.0.1:8080": 6},
        "workers": [{"name": "reactor-worker-0", "state": "running", "handler_errors": 1},
                    {"name": "reactor-worker-1", "state": "detached", "handler_errors": 0}],
        "requests": {"1xx": 0, "2xx": 7, "3xx": 0, "4xx": 2, "5xx": 1},
        "request_duration": {"bounds": list(DURATION_BOUNDS),
                             "buckets": [3, 4] + [0] * (BUCKETS - 3) + [2],
                             "sum": 25.5, "count": 9},
    }
    base.update(over)
    return base


# -- the text format ----------------------------------------------------------------------
def test_every_family_has_help_and_type_and_counters_end_in_total() -> None:
    text = render(doc())
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    types = {line.split()[2]: line.split()[3] for line in text.splitlines()
             if line.startswith("# TYPE ")}
    assert helps == list(types)
    for name, kind in types.items():
        assert name.startswith("reactor_")
        assert name.endswith("_total") == (kind == "counter"), name
    parsed, _ = parse(text)
    assert parsed["reactor_request_duration_seconds"] == "histogram"
    assert parsed["reactor_connections_accepted"] == "counter"  # the parser drops _total


def test_a_stats_document_renders_to_the_values_it_holds() -> None:
    _, s = parse(render(doc()))
    assert value(s, "reactor_connections_accepted_total") == 10
    assert value(s, "reactor_connections_closed_total") == 8
    assert value(s, "reactor_connections_active") == 2
    assert value(s, "reactor_connections_shed_total") == 1
    assert value(s, "reactor_accept_paused_total") == 3
    assert value(s, "reactor_accept_errors_total", kind="EMFILE") == 4
    assert value(s, "reactor_listen_queue", listener="127.0.0.1:8080") == 6
    assert value(s, "reactor_queue_depth") == 1
    assert value(s, "reactor_handoffs_total") == 5
    assert value(s, "reactor_stuck_requests_total") == 0  # no such key yet: 0
    assert value(s, "reactor_handler_errors_total") == 1
    assert value(s, "reactor_workers", state="detached") == 1
    assert value(s, "reactor_worker_state", pid="7", worker="reactor-worker-1",
                 state="detached") == 1
    assert value(s, "reactor_worker_state", pid="7", worker="reactor-worker-1",
                 state="running") == 0
    assert value(s, "reactor_requests_total", **{"class": "4xx"}) == 2
    # Buckets are cumulative, +Inf equals the count.
    assert value(s, "reactor_request_duration_seconds_bucket", le="0.0005") == 3
    assert value(s, "reactor_request_duration_seconds_bucket", le="0.001") == 7
    assert value(s, "reactor_request_duration_seconds_bucket", le="10.0") == 7
    assert value(s, "reactor_request_duration_seconds_bucket", le="+Inf") == 9
    assert value(s, "reactor_request_duration_seconds_count") == 9
    assert value(s, "reactor_request_duration_seconds_sum") == 25.5
    assert value(s, "reactor_stuck_requests_total") == 0
    assert value(s, "reactor_stuck_workers") == 0
    workers = [{"name": "reactor-worker-0", "state": "detached", "stuck_for": 31.5}]
    _, s = parse(render(doc(stuck_requests=3, stuck_now=1, workers=workers)))
    assert value(s, "reactor_stuck_requests_total") == 3
    assert value(s, "reactor_stuck_workers") == 1
    assert value(s, "reactor_worker_stuck_seconds", pid="7", worker="reactor-worker-0") == 31.5


def test_label_values_are_escaped() -> None:
    nasty = 'unix:/tmp/a "quoted"\\path\nnext'
    assert escape_label(nasty) == 'unix:/tmp/a \\"quoted\\"\\\\path\\nnext'
    _, s = parse(render(doc(listen_queue={nasty: 4}, accept_errors={'E"X': 1})))
    assert value(s, "reactor_listen_queue", listener=nasty) == 4
    assert value(s, "reactor_accept_errors_total", kind='E"X') == 1


def test_merge_sums_processes_and_keeps_the_largest_listen_queue() -> None:
    a = doc(1)
    b = doc(2, accepted=5, closed=5, active=0, listen_queue={"127.0.0.1:8080": 2},
            accept_errors={"ECONNABORTED": 1})
    merged = merge([a, b])
    _, s = parse(render(merged))
    assert value(s, "reactor_processes") == 2
    assert value(s, "reactor_connections_accepted_total") == 15
    assert value(s, "reactor_connections_active") == 2
    assert value(s, "reactor_accept_errors_total", kind="EMFILE") == 4
    assert value(s, "reactor_accept_errors_total", kind="ECONNABORTED") == 1
    assert value(s, "reactor_listen_queue", listener="127.0.0.1:8080") == 6
    assert value(s, "reactor_requests_total", **{"class": "2xx"}) == 14
    assert value(s, "reactor_request_duration_seconds_count") == 18
    assert value(s, "reactor_request_duration_seconds_bucket", le="+Inf") == 18
    assert value(s, "reactor_workers", state="detached") == 2
    for pid in ("1", "2"):
        assert value(s, "reactor_worker_state", pid=pid, worker="reactor-worker-0",
                     state="running") == 1


def test_the_carry_keeps_counters_of_exited_processes_but_not_their_gauges() -> None:
    carry: dict[str, Any] = {}
    add_counters(carry, doc(1))
    add_counters(carry, doc(2))
    _, s = parse(render(merge([doc(3, active=1, queue_depth=0)], carry)))
    assert value(s, "reactor_processes") == 1
    assert value(s, "reactor_connections_accepted_total") == 30
    assert value(s, "reactor_requests_total", **{"class": "2xx"}) == 21
    assert value(s, "reactor_request_duration_seconds_count") == 27
    assert value(s, "reactor_handler_errors_total") == 3
    assert value(s, "reactor_connections_active") == 1  # gauges: the live process only
    assert value(s, "reactor_queue_depth") == 0


def test_a_histogram_with_other_buckets_is_left_out_of_the_sum() -> None:
    other = doc(2, request_duration={"bounds": [1.0], "buckets": [5, 5], "sum": 1.0, "count": 10})
    _, s = parse(render(merge([doc(1), other])))
    assert value(s, "reactor_request_duration_seconds_count") == 9


# -- a real server -----------------------------------------------------------------------
def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("failing on purpose")
    if path == "/sleep":
        time.sleep(0.03)
    status = "404 Not Found" if path == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def raw(address: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def wait_closed(server: Server, count: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        stats = server.stats()
        if stats["closed"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def test_metrics_match_the_requests_sent_and_stats() -> None:
    with Server(app, bind="127.0.0.1:0", workers=2, metrics_bind="127.0.0.1:0") as server:
        assert server.metrics is not None
        sent = {"/": 5, "/missing": 3, "/boom": 2, "/sleep": 1}
        for path, n in sent.items():
            for _ in range(n):
                assert get(server.url + path) in (200, 404, 500)
        # A malformed request: a 4xx before any head was parsed (no duration).
        answer = raw(server.address, b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 4"), answer[:40]
        stats = wait_closed(server, 12)
        _, s = scrape(server.metrics.url)
        assert value(s, "reactor_requests_total", **{"class": "2xx"}) == 6
        assert value(s, "reactor_requests_total", **{"class": "4xx"}) == 4
        assert value(s, "reactor_requests_total", **{"class": "5xx"}) == 2
        assert value(s, "reactor_requests_total", **{"class": "1xx"}) == 0
        assert value(s, "reactor_request_duration_seconds_count") == 11  # the 400 is untimed
        assert value(s, "reactor_request_duration_seconds_bucket", le="+Inf") == 11
        # The /sleep request took at least 30 ms: it is above the 25 ms bucket.
        assert value(s, "reactor_request_duration_seconds_bucket", le="0.025") <= 10
        assert value(s, "reactor_request_duration_seconds_sum") >= 0.03
        assert value(s, "reactor_connections_accepted_total") == stats["accepted"] == 12
        assert value(s, "reactor_connections_closed_total") == stats["closed"] == 12
        assert value(s, "reactor_connections_active") == stats["active"] == 0
        assert value(s, "reactor_handoffs_total") == stats["handoffs"]
        assert value(s, "reactor_queue_depth") == stats["queue_depth"]
        assert value(s, "reactor_processes") == 1
        for name, depth in stats["listen_queue"].items():
            if depth is not None:
                assert value(s, "reactor_listen_queue", listener=name) == depth
        states = sorted((dict(k[1])["worker"], dict(k[1])["state"]) for k, v in s.items()
                        if k[0] == "reactor_worker_state" and v == 1)
        assert states == sorted((w["name"], w["state"]) for w in stats["workers"])
        assert stats["requests"] == {"1xx": 0, "2xx": 6, "3xx": 0, "4xx": 4, "5xx": 2}
        assert stats["request_duration"]["count"] == 11


def test_the_endpoint_answers_while_every_app_worker_is_blocked() -> None:
    entered, release = threading.Event(), threading.Event()

    def blocking(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        entered.set()
        release.wait(10)
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    with Server(blocking, bind="127.0.0.1:0", workers=1, metrics_bind="127.0.0.1:0") as server:
        assert server.metrics is not None
        t = threading.Thread(target=get, args=(server.url + "/",))
        t.start()
        try:
            assert entered.wait(5)
            started = time.monotonic()
            _, s = scrape(server.metrics.url)
            assert time.monotonic() - started < 2.0, "the scrape waited for the app"
            assert value(s, "reactor_connections_active") == 1
            assert value(s, "reactor_requests_total", **{"class": "2xx"}) == 0
        finally:
            release.set()
            t.join(5)


def test_other_paths_and_methods_of_the_endpoint() -> None:
    with Server(app, bind="127.0.0.1:0", metrics_bind="127.0.0.1:0") as server:
        assert server.metrics is not None
        base = server.metrics.url.removesuffix("/metrics")
        assert get(base + "/") == 404
        req = urllib.request.Request(server.metrics.url, data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 405
        info.value.read()
        # The scrapes did not count as requests of the app.
        assert server.stats()["requests"]["2xx"] == 0


def test_a_bad_metrics_bind_is_refused_and_a_busy_one_stops_the_server() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        Server(app, bind="127.0.0.1:0", metrics_bind="nonsense")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = Server(app, bind="127.0.0.1:0", metrics_bind=f"127.0.0.1:{port}")
        with pytest.raises(BindError, match="--metrics-bind"):
            server.start()
        assert server.wait(0), "the server was left running"
    assert not [t for t in threading.enumerate() if t.name.startswith("reactor-")]


# -- the supervisor's channel to its children -----------------------------------------------
def test_child_stats_sum_live_children_and_carry_departed_ones() -> None:
    collector = ChildStats()

    def stats_of(accepted: list[int]) -> Callable[[], dict[str, Any]]:
        return lambda: doc(accepted=accepted[0], closed=accepted[0], active=0)

    a_count, b_count = [3], [4]
    a_mine, a_theirs = collector.channel()
    b_mine, b_theirs = collector.channel()
    collector.add(101, a_mine)
    collector.add(102, b_mine)
    a = StatsResponder(a_theirs, stats_of(a_count)).start()
    b = StatsResponder(b_theirs, stats_of(b_count)).start()
    try:
        deadline = time.monotonic() + 5
        docs: list[dict[str, Any]] = []
        while len(docs) < 2 and time.monotonic() < deadline:
            docs, carry = collector.collect(timeout=1.0)
        assert sorted(d["accepted"] for d in docs) == [3, 4]
        a_count[0] = 13
        docs, carry = collector.collect(timeout=1.0)
        assert sorted(d["accepted"] for d in docs) == [4, 13], "asked again: fresh figures"
        # Child a sends its final figures and exits: they move to the carry.
        a_count[0] = 20
        a.send()
        a.close()
        deadline = time.monotonic() + 5
        while len(docs) != 1 and time.monotonic() < deadline:
            docs, carry = collector.collect(timeout=1.0)
        assert [d["accepted"] for d in docs] == [4]
        assert carry["accepted"] == 20
        _, s = parse(collector.render())
        assert value(s, "reactor_connections_accepted_total") == 24
        assert value(s, "reactor_processes") == 1
    finally:
        b.close()
        collector.close()
    assert json.dumps(carry)  # plain data


def test_a_request_stuck_past_the_timeout_shows_in_the_metrics() -> None:
    entered, release = threading.Event(), threading.Event()

    def stuck_in_the_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        entered.set()
        release.wait(10)
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    with Server(stuck_in_the_app, bind="127.0.0.1:0", workers=2, timeout=0.2,
                metrics_bind="127.0.0.1:0") as server:
        assert server.metrics is not None
        t = threading.Thread(target=get, args=(server.url + "/",))
        t.start()
        try:
            assert entered.wait(5)
            deadline = time.monotonic() + 5
            while True:
                _, s = scrape(server.metrics.url)
                if value(s, "reactor_stuck_requests_total") >= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert value(s, "reactor_stuck_requests_total") == 1
            assert value(s, "reactor_stuck_workers") == 1
            stuck = [(dict(k[1])["worker"], v) for k, v in s.items()
                     if k[0] == "reactor_worker_stuck_seconds" and v > 0]
            assert len(stuck) == 1 and stuck[0][1] >= 0.2
            (name,) = [w["name"] for w in server.stats()["workers"] if w["stuck_for"]]
            assert stuck[0][0] == name
        finally:
            release.set()
            t.join(5)
        _, s = scrape(server.metrics.url)
        assert value(s, "reactor_stuck_workers") == 0
        assert value(s, "reactor_stuck_requests_total") == 1


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_listen_queues_reads_the_port_at_most_once_a_second() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        calls: list[int] = []

        def ports() -> list[tuple[str, int]]:
            calls.append(1)
            return [(f"127.0.0.1:{port}", port)]

        queues = ListenQueues(ports)
        assert queues() == {f"127.0.0.1:{port}": 0}
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            assert queues() == {f"127.0.0.1:{port}": 0}, "cached for a second"
            assert len(calls) == 1
            deadline = time.monotonic() + 5
            while queues() != {f"127.0.0.1:{port}": 2} and time.monotonic() < deadline:
                time.sleep(0.1)
            assert queues() == {f"127.0.0.1:{port}": 2}  # accepted by the kernel, not by us
        finally:
            for c in clients:
                c.close()


# -- the garbage collector's pauses ---------------------------------------------------------
def test_a_full_collection_shows_in_stats_and_metrics() -> None:
    import gc

    with Server(lambda e, s: [b""], bind="127.0.0.1:0", workers=1) as server:
        before = server.stats(listen_queue=False)["gc"]
        gc.collect(2)
        gc.collect(0)
        after = server.stats(listen_queue=False)["gc"]
        _, s = parse(render({**server.stats(listen_queue=False), "pid": 1}))
    assert after["collections"][2] >= before["collections"][2] + 1
    assert after["collections"][0] >= before["collections"][0] + 1
    assert after["pause_seconds"][2] > before["pause_seconds"][2]
    assert after["longest_pause"] > 0
    assert value(s, "reactor_gc_collections_total", generation="2") >= after["collections"][2]
    assert value(s, "reactor_gc_pause_seconds_total", generation="2") > 0
    assert value(s, "reactor_gc_longest_pause_seconds") > 0


def test_merge_sums_collections_and_keeps_the_longest_pause() -> None:
    a = doc(1, gc={"collections": [10, 2, 1], "pause_seconds": [0.01, 0.002, 0.012],
                   "longest_pause": 0.012})
    b = doc(2, gc={"collections": [5, 1, 0], "pause_seconds": [0.005, 0.001, 0.0],
                   "longest_pause": 0.004})
    carry: dict[str, Any] = {}
    add_counters(carry, doc(3, gc={"collections": [1, 0, 1], "pause_seconds": [0.0, 0.0, 0.02],
                                   "longest_pause": 0.02}))
    _, s = parse(render(merge([a, b], carry)))
    assert value(s, "reactor_gc_collections_total", generation="0") == 16
    assert value(s, "reactor_gc_collections_total", generation="2") == 2
    assert value(s, "reactor_gc_pause_seconds_total", generation="2") == pytest.approx(0.032)
    assert value(s, "reactor_gc_longest_pause_seconds") == pytest.approx(0.02)
    # a document without the figures (an older process in a rolling upgrade) adds nothing
    _, s = parse(render(merge([doc(4)])))
    assert value(s, "reactor_gc_collections_total", generation="1") == 0
