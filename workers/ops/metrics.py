"""Metrics: request accounting, merging ``Server.stats()`` over processes, and the
Prometheus text exposition format (version 0.0.4), written by us.

Request accounting is on the hot path, so it is three operations per response in
``HttpHandler`` (a clock read when the head is parsed, one when the response is
handed over, and one list increment): each handler, and so each worker thread, owns a
plain ``list[int]`` of ``10 * BUCKETS`` counters indexed by ``status // 100 * BUCKETS
+ bisect_left(DURATION_BOUNDS, seconds)``, and a float of summed seconds. Nobody else
writes them; ``request_counters`` reads them without a lock. The read race is benign:
an int in a list is replaced whole (never torn), so a scrape sees each counter either
before or after a concurrent increment, and the histogram's sum may lag its count by
the one response being accounted at that instant. Counters only grow.

A stats document is what ``Server.stats()`` returns (JSON-able). ``merge`` sums the
documents of several processes (the supervisor's view of ``--processes``);
``add_counters`` folds the counters of a process that has exited into a carry, so the
summed counters never go backwards when a process is replaced. ``render`` writes the
exposition text and ``parse_text`` reads it back (for ``reactor top``); docs/metrics.md
lists every metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .gcstats import GENERATIONS as GC_GENERATIONS

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE",
    "DURATION_BOUNDS",
    "STATUS_CLASSES",
    "WS_COUNTERS",
    "add_counters",
    "escape_label",
    "merge",
    "parse_text",
    "render",
    "request_counters",
    "websocket_counters",
]

DURATION_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""Upper bounds (seconds, inclusive: Prometheus ``le``) of the request duration buckets."""

BUCKETS = len(DURATION_BOUNDS) + 1
"""Buckets per status class: one per bound, then ``+Inf``."""

STATUS_CLASSES = 10
"""Rows of a handler's counter list: ``status // 100`` (0..9)."""

WS_COUNTERS = ("opened", "closed", "messages_in", "messages_out")
"""A handler's ``ws_counts``, in order: WebSockets opened and closed, messages each way."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PREFIX = "reactor_"

# Counters of a stats document (never decrease in a live process); everything else is
# a gauge or a description. ``add_counters`` carries exactly these.
_SCALAR_COUNTERS = ("accepted", "closed", "shed", "paused_at_max", "handoffs", "handed_back",
                    "stuck_requests", "tls_handshakes", "tls_handshake_failed",
                    "tls_plain_http", "tls_reloads")
_DICT_COUNTERS = ("accept_errors", "requests", "websocket")


def request_counters(handlers: Iterable[Any]) -> tuple[dict[str, int], dict[str, Any]]:
    """Sum the request accounting of ``handlers`` (objects with ``response_counts``,
    ``response_untimed`` and ``response_seconds``; others are skipped).

    Returns:
        ``(requests, request_duration)``: responses by status class (``"2xx": n``; the
        classes 1xx..5xx always, others when non-zero) and the duration histogram
        ``{"bounds": [...], "buckets": [non-cumulative counts], "sum": s, "count": n}``.
    """
    classes = [0] * STATUS_CLASSES
    buckets = [0] * BUCKETS
    seconds = 0.0
    for handler in handlers:
        counts = getattr(handler, "response_counts", None)
        if counts is None:
            continue
        snap = list(counts)  # one C-level copy: no counter is torn
        untimed = list(handler.response_untimed)
        seconds += handler.response_seconds
        for cls in range(STATUS_CLASSES):
            row = snap[cls * BUCKETS:(cls + 1) * BUCKETS]
            classes[cls] += sum(row) + untimed[cls]
            for i, n in enumerate(row):
                buckets[i] += n
    requests = {f"{cls}xx": n for cls, n in enumerate(classes) if n or 1 <= cls <= 5}
    duration = {"bounds": list(DURATION_BOUNDS), "buckets": buckets, "sum": seconds,
                "count": sum(buckets)}
    return requests, duration


def websocket_counters(handlers: Iterable[Any]) -> dict[str, int]:
    """Sum the ``ws_counts`` of ``handlers`` (ASGI handlers; others are skipped).

    Returns:
        ``{"opened": n, "closed": n, "messages_in": n, "messages_out": n}``.
    """
    totals = [0] * len(WS_COUNTERS)
    for handler in handlers:
        counts = getattr(handler, "ws_counts", None)
        if counts is not None:
            for i, value in enumerate(list(counts)):
                totals[i] += value
    return dict(zip(WS_COUNTERS, totals, strict=True))


# -- several processes ---------------------------------------------------------------
def _add_dict(into: dict[str, Any], key: str, more: dict[str, Any] | None) -> None:
    target: dict[str, Any] = into.setdefault(key, {})
    for name, value in (more or {}).items():
        target[name] = target.get(name, 0) + (value or 0)


def _add_histogram(into: dict[str, Any], hist: dict[str, Any] | None) -> None:
    if not hist or list(hist.get("bounds", ())) != list(DURATION_BOUNDS):
        return  # another version's buckets (a rolling upgrade): not comparable
    mine = into.setdefault("request_duration", {
        "bounds": list(DURATION_BOUNDS), "buckets": [0] * BUCKETS, "sum": 0.0, "count": 0,
    })
    mine["buckets"] = [a + b for a, b in zip(mine["buckets"], hist["buckets"], strict=True)]
    mine["sum"] += hist["sum"]
    mine["count"] += hist["count"]


def add_counters(into: dict[str, Any], doc: dict[str, Any]) -> None:
    """Add the counters of stats document ``doc`` to ``into`` (a carry: counters only).

    The workers' ``handler_errors`` are summed into ``into["handler_errors"]``.
    """
    for key in _SCALAR_COUNTERS:
        into[key] = into.get(key, 0) + _number(doc.get(key))
    into["handler_errors"] = into.get("handler_errors", 0) + _handler_errors(doc)
    for key in _DICT_COUNTERS:
        _add_dict(into, key, doc.get(key))
    _add_histogram(into, doc.get("request_duration"))
    _add_gc(into, doc.get("gc"))


def _add_gc(into: dict[str, Any], gc: dict[str, Any] | None) -> None:
    """Collections and pauses summed per generation; the longest pause is the longest."""
    if not isinstance(gc, dict):
        return
    mine = into.setdefault("gc", {"collections": [0] * GC_GENERATIONS,
                                  "pause_seconds": [0.0] * GC_GENERATIONS, "longest_pause": 0.0})
    for key in ("collections", "pause_seconds"):
        theirs = gc.get(key)
        if isinstance(theirs, list) and len(theirs) == GC_GENERATIONS:
            mine[key] = [a + b for a, b in zip(mine[key], theirs, strict=True)]
    longest = gc.get("longest_pause")
    if isinstance(longest, (int, float)) and longest > mine["longest_pause"]:
        mine["longest_pause"] = float(longest)


def _number(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _handler_errors(doc: dict[str, Any]) -> int:
    """A merged document (or a carry) has the sum; ``Server.stats()`` has it per worker."""
    if "handler_errors" in doc:
        return _number(doc["handler_errors"])
    return sum(_number(w.get("handler_errors")) for w in doc.get("workers") or ())


def merge(docs: Sequence[dict[str, Any]], carry: dict[str, Any] | None = None) -> dict[str, Any]:
    """One stats document for several processes (each doc carries its ``pid``).

    Counters are summed (plus ``carry``: the counters of processes that have exited);
    ``active``, ``connections``, ``queue_depth`` and ``stuck_now`` are summed; a listener's
    ``listen_queue`` is the largest any process reports (every process reports the
    whole port: the kernel's figure for SO_REUSEPORT sockets is summed, and an
    inherited listener is one socket); ``workers`` are listed with their ``pid``.
    """
    out: dict[str, Any] = {}
    add_counters(out, carry or {})
    out["active"] = out["connections"] = out["queue_depth"] = out["stuck_now"] = 0
    out["listen_queue"] = {}
    out["workers"] = []
    out["processes"] = len(docs)
    for doc in docs:
        add_counters(out, doc)
        for key in ("active", "connections", "queue_depth", "stuck_now"):
            out[key] += _number(doc.get(key))
        for name, depth in (doc.get("listen_queue") or {}).items():
            known = out["listen_queue"].get(name)
            if depth is not None and (known is None or depth > known):
                out["listen_queue"][name] = depth
            elif name not in out["listen_queue"]:
                out["listen_queue"][name] = None
        for w in doc.get("workers") or ():
            out["workers"].append({**w, "pid": doc.get("pid", 0)})
    return out


# -- the exposition format -------------------------------------------------------------
def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs) + "}"


def _value(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


def _le(bound: float) -> str:
    return repr(float(bound))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {PREFIX}{name} {help_text}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(self, name: str, value: float, labels: Sequence[tuple[str, str]] = ()) -> None:
        self.lines.append(f"{PREFIX}{name}{_labels(labels)} {_value(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text)
        self.sample(name, value)


WORKER_STATES = ("running", "standby", "detached")


def render(doc: dict[str, Any]) -> str:
    """The exposition text (0.0.4) of a stats document (one process's ``Server.stats()``
    with its ``pid``, or ``merge`` of several). docs/metrics.md describes each metric."""
    w = _Writer()
    n = _number
    w.one("processes", "gauge", "Server processes whose figures are summed here.",
          n(doc.get("processes", 1)))
    w.one("connections_accepted_total", "counter", "Connections accepted.", n(doc.get("accepted")))
    w.one("connections_closed_total", "counter", "Connections closed.", n(doc.get("closed")))
    w.one("connections_active", "gauge", "Connections open now.", n(doc.get("active")))
    w.one("connections_shed_total", "counter",
          "Clients accepted with the reserve descriptor while out of descriptors, told 503 "
          "and closed.", n(doc.get("shed")))
    w.one("accept_paused_total", "counter",
          "Times accepting paused at max_connections.", n(doc.get("paused_at_max")))
    w.family("accept_errors_total", "counter", "accept() failures, by errno name.")
    for kind, count in sorted((doc.get("accept_errors") or {}).items()):
        w.sample("accept_errors_total", n(count), [("kind", str(kind))])
    w.family("listen_queue", "gauge",
             "Connections waiting in the kernel accept queue of a TCP listener "
             "(Linux; absent where unknown).")
    for name, depth in sorted((doc.get("listen_queue") or {}).items()):
        if depth is not None:
            w.sample("listen_queue", n(depth), [("listener", str(name))])
    w.one("queue_depth", "gauge", "Batches of work queued for the worker threads.",
          n(doc.get("queue_depth")))
    w.one("handoffs_total", "counter",
          "Times a worker blocked in the app was detached and another took over.",
          n(doc.get("handoffs")))
    w.one("stuck_requests_total", "counter",
          "Requests that stayed in the app longer than --timeout.",
          n(doc.get("stuck_requests", 0)))
    w.one("stuck_workers", "gauge",
          "Worker threads inside the app longer than --timeout now.", n(doc.get("stuck_now", 0)))
    w.one("handler_errors_total", "counter",
          "Exceptions from handler callbacks (each aborted its connection).",
          _handler_errors(doc))
    w.one("tls_handshakes_total", "counter", "TLS handshakes completed.",
          n(doc.get("tls_handshakes", 0)))
    w.one("tls_handshake_failures_total", "counter", "TLS handshakes that failed or timed out.",
          n(doc.get("tls_handshake_failed", 0)))
    w.one("tls_plain_http_total", "counter",
          "Plain HTTP requests on a TLS listener, answered 400.", n(doc.get("tls_plain_http", 0)))
    w.one("tls_reloads_total", "counter", "Certificate reloads.", n(doc.get("tls_reloads", 0)))
    workers = list(doc.get("workers") or ())
    w.family("workers", "gauge", "Worker threads by state.")
    for state in WORKER_STATES:
        w.sample("workers", sum(1 for x in workers if x.get("state") == state),
                 [("state", state)])
    w.family("worker_state", "gauge",
             "1 for the state each worker thread is in (running, standby, detached).")
    for x in workers:
        for state in WORKER_STATES:
            w.sample("worker_state", int(x.get("state") == state), [
                ("pid", str(x.get("pid", doc.get("pid", 0)))),
                ("worker", str(x.get("name", ""))), ("state", state),
            ])
    w.family("worker_stuck_seconds", "gauge",
             "Seconds a worker thread has been inside the app, once past --timeout (else 0).")
    for x in workers:
        stuck = x.get("stuck_for", 0.0)
        w.sample("worker_stuck_seconds", float(stuck) if isinstance(stuck, (int, float)) else 0.0, [
            ("pid", str(x.get("pid", doc.get("pid", 0)))), ("worker", str(x.get("name", ""))),
        ])
    w.family("requests_total", "counter", "HTTP responses sent, by status class.")
    for cls, count in sorted((doc.get("requests") or {}).items()):
        w.sample("requests_total", n(count), [("class", str(cls))])
    ws = doc.get("websocket") or {}
    w.family("websocket_connections_total", "counter",
             "WebSocket connections of ASGI apps, by event (opened: accepted; closed).")
    for event in ("opened", "closed"):
        w.sample("websocket_connections_total", n(ws.get(event)), [("event", event)])
    w.one("websocket_connections_active", "gauge", "WebSocket connections open now.",
          max(n(ws.get("opened")) - n(ws.get("closed")), 0))
    w.family("websocket_messages_total", "counter", "WebSocket messages, by direction.")
    for direction in ("in", "out"):
        w.sample("websocket_messages_total", n(ws.get(f"messages_{direction}")),
                 [("direction", direction)])
    gc = doc.get("gc") or {}
    w.family("gc_collections_total", "counter",
             "Runs of the cyclic garbage collector, by generation (2: a full collection).")
    w.family("gc_pause_seconds_total", "counter",
             "Seconds the cyclic garbage collector held the process, by generation.")
    for name, key in (("gc_collections_total", "collections"),
                      ("gc_pause_seconds_total", "pause_seconds")):
        values = gc.get(key) or [0] * GC_GENERATIONS
        for generation, value in enumerate(values):
            number = float(value) if isinstance(value, (int, float)) else 0.0
            w.sample(name, number, [("generation", str(generation))])
    longest = gc.get("longest_pause", 0.0)
    w.one("gc_longest_pause_seconds", "gauge",
          "The longest collection since the server started, in seconds.",
          float(longest) if isinstance(longest, (int, float)) else 0.0)
    hist = doc.get("request_duration")
    w.family("request_duration_seconds", "histogram",
             "Seconds from a request's head parsed to its response handed to the socket.")
    if hist:
        cumulative = 0
        for bound, count in zip([*hist["bounds"], math.inf], hist["buckets"], strict=True):
            cumulative += count
            le = "+Inf" if math.isinf(bound) else _le(bound)
            w.sample("request_duration_seconds_bucket", cumulative, [("le", le)])
        w.sample("request_duration_seconds_sum", float(hist["sum"]))
        w.sample("request_duration_seconds_count", n(hist["count"]))
    return "\n".join(w.lines) + "\n"


Labels = dict[str, str]
Sample = tuple[str, Labels, float]

_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


# -- reading the text format back (reactor top) ----------------------------------------------------------------------
def _parse_labels(text: str, i: int, line: str) -> tuple[Labels, int]:
    """Labels from ``text[i]`` (just after ``{``); returns them and the index after ``}``."""
    labels: Labels = {}
    n = len(text)
    while True:
        while i < n and text[i] in " ,":
            i += 1
        if i < n and text[i] == "}":
            return labels, i + 1
        eq = text.find("=", i)
        quote = eq + 1
        while 0 <= eq and quote < n and text[quote] == " ":
            quote += 1
        if eq < 0 or quote >= n or text[quote] != '"':
            raise ValueError(f"bad labels in {line!r}")
        name = text[i:eq].strip()
        i = quote + 1
        out: list[str] = []
        while True:
            if i >= n:
                raise ValueError(f"unterminated label value in {line!r}")
            c = text[i]
            if c == "\\" and i + 1 < n:
                out.append(_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                out.append(c)
                i += 1
        labels[name] = "".join(out)


def _parse_value(text: str, line: str) -> float:
    word = text.split()[0] if text.split() else ""
    try:
        return float(word)  # float() reads +Inf, -Inf and NaN too
    except ValueError:
        raise ValueError(f"bad value in {line!r}") from None


def parse_text(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition, in order: ``(name, labels, value)``.

    Comments (``# HELP``, ``# TYPE``) and blank lines are skipped; a timestamp after
    the value is ignored.

    Raises:
        ValueError: a line that is not a sample, naming it.
    """
    samples: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace >= 0 and (space < 0 or brace < space):
            name = line[:brace]
            labels, end = _parse_labels(line, brace + 1, raw)
            rest = line[end:]
        else:
            if space < 0:
                raise ValueError(f"not a sample: {raw!r}")
            name, labels, rest = line[:space], {}, line[space:]
        samples.append((name, labels, _parse_value(rest, raw)))
    return samples
