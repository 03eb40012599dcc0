"""An atheris (libFuzzer) target for the HTTP/1.1 core: the parser, the express lane, the handler.

Run with ``make fuzz`` (bounded by ``FUZZ_SECONDS``, 60 by default), or directly::

    .venv/bin/python fuzz/fuzz_protocol.py -max_total_time=60 fuzz/corpus

Each input is split into feeds at fuzzer-chosen points (the parser must not care
where the bytes are cut) and parsed with small limits, so the limit paths are
reached too. Invariants checked on every input:

* ``feed`` raises nothing: every problem is an ``HTTPError`` event;
* an ``HTTPError`` is the last event ever returned, and its status is one the
  server may send for a client's bytes (400, 408, 413, 414, 417, 431, 501, 505);
* events come in a legal order: a ``Request``, then body ``bytes`` (only if the head
  declared a body), then ``END_OF_MESSAGE``; body bytes never exceed the declared
  ``Content-Length`` nor ``max_body_size``;
* the same bytes fed whole and fed in pieces (cut points drawn from a seed that is
  the input's CRC) give the same requests and bodies up to the first error;
* a parser that says it is ``at_rest`` after the input takes a fresh request;
* the express lane (``express.match``) takes only what the general path reads as one
  bodiless request with the same environ and keep-alive decision;
* the whole handler (``HttpHandler`` over in-memory connections, the lane on and
  off) answers the input, in the same pieces, with the same bytes (less ``Date``),
  and another client of the same handler is served after it (a parser the input
  spoiled must not reach it from the pool);
* time: no path takes longer than ``_BUDGET`` (linear in the input's bytes, about a
  hundred times what it takes), nor much longer on one path than on the other; a slow
  input is timed again before it counts, then raised as a finding like a crash, so
  libFuzzer saves it to ``fuzz/artifacts/`` (``make fuzz`` also passes
  ``-timeout``, for an input that never returns, and ``-report_slow_units``).

When ``import atheris`` fails (atheris has no wheel for this Python), the script
says so and exits 0: fuzzing is skipped, not failed.
"""

from __future__ import annotations

import random
import re
import sys
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from time import thread_time
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the platform
    print("fuzz: atheris is not installed for this Python; skipping (pip install atheris)")
    sys.exit(0)

with atheris.instrument_imports():
    from mioreactor.workers.http import HttpConfig, make_http_handler_factory
    from mioreactor.workers.http.body import EMPTY_BODY
    from mioreactor.workers.http.errors import HTTPError
    from mioreactor.workers.http.express import CLOSE, match
    from mioreactor.workers.http.protocol import END_OF_MESSAGE, HttpProtocol, Request
    from mioreactor.workers.http.wsgi import base_environ, request_environ

from tests.http.fakes import FakeWorker, connect  # a test helper: not instrumented

CONFIG = HttpConfig(max_request_line=256, max_header_size=1024, max_headers=16, max_body_size=4096)
CLIENT_STATUSES = {400, 408, 413, 414, 417, 431, 501, 505}
BASE = base_environ(("10.0.0.7", 50000), ("127.0.0.1", 8000), CONFIG)
LANE_MAX = min(CONFIG.max_request_line, CONFIG.max_header_size)
VICTIM = b"POST /victim HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok"

# Time: a path may take _BUDGET_BASE + _BUDGET_PER_BYTE a byte (seconds), and at most
# _SLOWER times the other path's time plus _BUDGET_BASE.
_BUDGET_BASE = 0.05
_BUDGET_PER_BYTE = 20e-6
_SLOWER = 20


class SlowInput(AssertionError):
    """An input took far longer than its bytes allow: a finding, like a crash."""


def timed(what: str, data: bytes, call: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``call``; raise if it takes more than its budget of this thread's CPU time
    (``time.thread_time``: other processes do not count) three times running."""
    start = thread_time()
    result = call()
    took = thread_time() - start
    budget = _BUDGET_BASE + _BUDGET_PER_BYTE * len(data)
    for _ in range(2):
        if took <= budget:
            break
        start = thread_time()
        call()
        took = min(took, thread_time() - start)
    else:
        if took > budget:
            raise SlowInput(f"{what}: {took * 1e3:.1f} ms for {len(data)} bytes (budget {budget * 1e3:.1f} ms)")
    return result, took


def check_alike(what: str, one: float, other: float, again: Callable[[], tuple[float, float]]) -> None:
    """Raise if one path took far longer than the other, twice."""
    if max(one, other) <= _SLOWER * min(one, other) + _BUDGET_BASE:
        return
    one, other = again()
    if max(one, other) > _SLOWER * min(one, other) + _BUDGET_BASE:
        raise SlowInput(f"{what}: {one * 1e3:.1f} ms against {other * 1e3:.1f} ms")


def run(chunks: list[bytes]) -> list[object]:
    proto = HttpProtocol(CONFIG)
    events: list[object] = []
    for chunk in chunks:
        got = proto.feed(chunk)
        if events and isinstance(events[-1], HTTPError):
            assert got == [], "events after an error"
        events.extend(got)
    if proto.at_rest:
        # The pool's rule: a parser at rest takes the next connection's request.
        after = proto.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert after and type(after[0]) is Request, f"a parser at rest refused a fresh request: {after}"
    return events


def check_order(events: list[object]) -> None:
    request: Request | None = None
    body = 0
    for i, ev in enumerate(events):
        if isinstance(ev, HTTPError):
            assert i == len(events) - 1, "an error is not the last event"
            assert ev.status in CLIENT_STATUSES, ev
        elif isinstance(ev, Request):
            assert request is None, "a head inside a message"
            request, body = ev, 0
        elif isinstance(ev, bytes):
            assert request is not None and ev, "body bytes outside a message"
            assert request.has_body or request.method != "", "body for a message without one"
            body += len(ev)
            assert body <= CONFIG.max_body_size
            if request.content_length is not None:
                assert body <= request.content_length
        else:
            assert ev is END_OF_MESSAGE and request is not None, "end without a head"
            if request.content_length is not None and not request.chunked:
                assert body == request.content_length
            request = None


def summary(events: list[object]) -> list[object]:
    out: list[object] = []
    for ev in events:
        if isinstance(ev, Request):
            out.append((ev.method, ev.target, ev.version, ev.headers, ev.content_length, ev.chunked))
        elif isinstance(ev, bytes):
            if out and isinstance(out[-1], bytes):
                out[-1] += ev
            else:
                out.append(ev)
        elif isinstance(ev, HTTPError):
            out.append("error")
        else:
            out.append(ev)
    return out


def check_lane(data: bytes) -> None:
    """The lane takes only what the general path reads the same; neither is slow."""
    found, lane_took = timed("express.match", data, lambda: match(data, BASE, LANE_MAX, CONFIG.max_headers))
    events, general_took = timed("HttpProtocol.feed", data, lambda: HttpProtocol(CONFIG).feed(data))

    def again() -> tuple[float, float]:
        return (timed("express.match", data, lambda: match(data, BASE, LANE_MAX, CONFIG.max_headers))[1],
                timed("HttpProtocol.feed", data, lambda: HttpProtocol(CONFIG).feed(data))[1])

    check_alike("the lane against the general parser", lane_took, general_took, again)
    if found is None:
        return
    environ, connection = found
    assert len(events) == 2 and type(events[0]) is Request and events[1] is END_OF_MESSAGE, (
        "the lane took what the general path does not read as one bodiless request")
    request = events[0]
    assert environ == request_environ(BASE, request, EMPTY_BODY, frozenset()), "the lane's environ differs"
    assert (connection is not CLOSE) == request.keep_alive, "the lane's keep-alive differs"


def _app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%s %d" % (environ["PATH_INFO"].encode("latin-1"), len(body))]


def serve(pieces: list[bytes], express: bool) -> tuple[bytes, bytes]:
    """What the handler answers ``pieces`` (less Date), and then another client."""
    worker = FakeWorker()
    handler = make_http_handler_factory(_app, HttpConfig(
        max_request_line=CONFIG.max_request_line, max_header_size=CONFIG.max_header_size,
        max_headers=CONFIG.max_headers, max_body_size=CONFIG.max_body_size, express=express))(worker)
    conn = connect(handler, worker)
    for piece in pieces:
        conn.feed(piece)
    out = re.sub(rb"Date: [^\r]*\r\n", b"", conn.take())
    victim = connect(handler, worker)
    victim.feed(VICTIM)
    return out, victim.take()


def check_handler(data: bytes, pieces: list[bytes]) -> None:
    (lane_out, lane_victim), lane_took = timed("the handler", data, lambda: serve(pieces, True))
    (out, victim), took = timed("the handler --no-express", data, lambda: serve(pieces, False))

    def again() -> tuple[float, float]:
        return (timed("the handler", data, lambda: serve(pieces, True))[1],
                timed("the handler --no-express", data, lambda: serve(pieces, False))[1])

    check_alike("the handler with the lane against without", lane_took, took, again)
    assert lane_out == out, "the lane on and off answer differently"
    for answer in (lane_victim, victim):
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"/victim 2"), (
            f"another client got {answer[:60]!r} after this one")


def test_one_input(data: bytes) -> None:
    payload = data
    # Cut points derived from the input itself, so the corpus stays plain HTTP bytes.
    rng = random.Random(zlib.crc32(data))
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(6)))
    whole = run([payload])
    check_order(whole)
    pieces, last = [], 0
    for cut in cuts:
        cut = min(cut, len(payload))
        pieces.append(payload[last:cut])
        last = max(last, cut)
    pieces.append(payload[last:])
    pieces = [p for p in pieces if p]
    split = run(pieces)
    check_order(split)
    check_lane(payload)
    if pieces:
        check_lane(pieces[0])  # the first read of a head in pieces, as the lane sees it
        check_handler(payload, pieces)
    # Errors may be found at a different byte when the input is cut (a limit counted
    # per feed), but everything before the first error must agree.
    a, b = summary(whole), summary(split)
    n = min(len(a), len(b))
    if "error" in a[:n] or "error" in b[:n]:
        n = min(a.index("error") if "error" in a else n, b.index("error") if "error" in b else n)
        # The last body piece before an error may be cut differently.
        n = max(0, n - 1)
    assert a[:n] == b[:n], (a[:n], b[:n])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
