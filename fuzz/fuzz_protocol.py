"""An atheris (libFuzzer) target for the sans-IO HTTP/1.1 protocol core.

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
  the input's CRC) give the same requests and bodies up to the first error.

When ``import atheris`` fails (atheris has no wheel for this Python), the script
says so and exits 0: fuzzing is skipped, not failed.
"""

from __future__ import annotations

import random
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the platform
    print("fuzz: atheris is not installed for this Python; skipping (pip install atheris)")
    sys.exit(0)

with atheris.instrument_imports():
    from mioreactor.workers.http import HttpConfig
    from mioreactor.workers.http.errors import HTTPError
    from mioreactor.workers.http.protocol import END_OF_MESSAGE, HttpProtocol, Request

CONFIG = HttpConfig(max_request_line=256, max_header_size=1024, max_headers=16, max_body_size=4096)
CLIENT_STATUSES = {400, 408, 413, 414, 417, 431, 501, 505}


def run(chunks: list[bytes]) -> list[object]:
    proto = HttpProtocol(CONFIG)
    events: list[object] = []
    for chunk in chunks:
        got = proto.feed(chunk)
        if events and isinstance(events[-1], HTTPError):
            assert got == [], "events after an error"
        events.extend(got)
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
    split = run([p for p in pieces if p])
    check_order(split)
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
