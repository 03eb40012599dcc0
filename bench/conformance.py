"""What each server answers to the byte sequences of the strict head rules (issue 12).

Every case of ``CASES`` is sent on a fresh connection to each server (ours, gunicorn,
uvicorn, waitress, all serving ``bench.apps.hello``), and the status of the first
response is recorded: ``close`` when the server closed without answering, ``-`` when
it answered nothing within the timeout. The table in ``docs/http.md`` ("Conformance")
is this script's output::

    .venv/bin/python bench/conformance.py [--servers ours,gunicorn,uvicorn,waitress]

Ours runs from ``.venv/bin``, the peers from ``.bench-venv/bin`` (``bench/run.py``
makes it; or ``python3 -m venv .bench-venv && .bench-venv/bin/pip install gunicorn
'uvicorn[standard]' waitress``).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import versions
from bench.servers import PEERS, launch

REPO = Path(__file__).resolve().parents[1]

H = b"Host: h\r\n"


def _get(target: bytes = b"/", host: bytes | None = b"h", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\n" + (b"Host: " + host + b"\r\n" if host is not None else b"") + extra + b"\r\n"


_CHUNKED = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
# Visible ASCII outside RFC 3986's path and query characters (docs/http.md says why they
# pass); named so that a Markdown table can hold them.
_OUTSIDE_3986 = {
    0x22: '`"`', 0x3C: "`<`", 0x3E: "`>`", 0x5B: "`[`", 0x5D: "`]`", 0x5E: "`^`",
    0x60: "a backtick", 0x7B: "`{`", 0x7C: "a vertical bar", 0x7D: "`}`",
}

#: (rule, RFC section, the bytes sent, what RFC 9112/9110 call for)
CASES: list[tuple[str, str, bytes, str]] = [
    ("request line: two SP before the target", "9112 §3", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", "400"),
    ("request line: two SP after the target", "9112 §3", b"GET /  HTTP/1.1\r\n" + H + b"\r\n", "400"),
    ("one empty line (CRLF) before the request line", "9112 §2.2", b"\r\n" + _get(), "200"),
    ("an empty line that is a bare LF", "9112 §2.2", b"\n" + _get(), "400 or 200"),
    ("method: unknown token", "9110 §9.1", _get(method=b"FOO"), "501"),
    ("method: not a token", "9112 §3.1", _get(method=b"G@T"), "400"),
    ("version HTTP/1.2", "9112 §2.3", b"GET / HTTP/1.2\r\n" + H + b"\r\n", "505"),
    ("origin-form with %-escapes", "9112 §3.2.1", _get(b"/a%20b?q=%7e"), "200"),
    ("absolute-form http", "9112 §3.2.2", _get(b"http://example.com/x"), "200"),
    ("absolute-form with another scheme", "9112 §3.2.2", _get(b"ftp://example.com/x"), "400"),
    ("absolute-form, invalid authority `s://]ufd/:`", "9112 §3.2.2", _get(b"s://]ufd/:"), "400"),
    ("absolute-form with userinfo", "9110 §4.2.4", _get(b"http://u@example.com/"), "400"),
    ("absolute-form with an empty host", "9110 §4.2.1", _get(b"http:///x"), "400"),
    ("authority-form with GET", "9112 §3.2.3", _get(b"example.com:80"), "400"),
    ("CONNECT authority-form", "9112 §3.2.3", _get(b"example.com:443", method=b"CONNECT"), "501 (no tunnels)"),
    ("asterisk-form with OPTIONS", "9112 §3.2.4", _get(b"*", method=b"OPTIONS"), "200"),
    ("asterisk-form with GET", "9112 §3.2.4", _get(b"*"), "400"),
    ("target with a fragment `/a#frag`", "9112 §3.2", _get(b"/a#frag"), "400"),
    ("target with raw UTF-8 `/\\xc3\\xa9`", "9112 §3.2", _get(b"/\xc3\xa9"), "400"),
    ("target with over-long UTF-8 `/\\xc0\\xaf`", "9112 §3.2", _get(b"/\xc0\xaf"), "400"),
    ("target with raw UTF-8 in the query `?\\xc3\\xa9`", "9112 §3.2", _get(b"/?q=\xc3\xa9"), "400"),
    ("target with HTAB `/a\\tb`", "9112 §3.2", _get(b"/a\tb"), "400"),
    *[
        (f"path with {_OUTSIDE_3986[c]}", "3986 §3.3", _get(b"/a" + bytes([c]) + b"b"), "400 or 301 (our choice: 200)")
        for c in _OUTSIDE_3986
    ],
    *[
        (f"query with {_OUTSIDE_3986[c]}", "3986 §3.4", _get(b"/?q=a" + bytes([c]) + b"b"),
         "400 or 301 (our choice: 200)")
        for c in _OUTSIDE_3986
    ],
    ("target with `\\`", "3986 §3.3", _get(b"/a\\b"), "400 (our choice)"),
    ("target with `%00`", "3986 §2.1", _get(b"/a%00"), "400 (our choice)"),
    ("target with `%0d%0a`", "3986 §2.1", _get(b"/a%0d%0aX:%20y"), "400 (our choice)"),
    ("target with a malformed escape `%zz`", "3986 §2.1", _get(b"/a%zz"), "400"),
    ("HTTP/1.1 without Host", "9112 §3.2", _get(host=None), "400"),
    ("two equal Host lines", "9112 §3.2", _get(extra=H), "400"),
    ("two different Host lines", "9112 §3.2", _get(extra=b"Host: other\r\n"), "400"),
    ("Host empty", "9110 §4.2.1", _get(host=b""), "400"),
    ("Host with userinfo `user@h`", "9112 §3.2", _get(host=b"user@h"), "400"),
    ("Host with a path `h/x`", "9112 §3.2", _get(host=b"h/x"), "400"),
    ("Host with a non-numeric port `h:8x`", "9112 §3.2", _get(host=b"h:8x"), "400"),
    ("Host as a comma list `a, b`", "9112 §3.2", _get(host=b"a, b"), "400"),
    ("Host `[::1]:8080`", "3986 §3.2.2", _get(host=b"[::1]:8080"), "200"),
    ("header name with SP before `:`", "9112 §5.1", _get(extra=b"X : y\r\n"), "400"),
    ("header value with a bare CR", "9112 §2.2", _get(extra=b"X: a\rb\r\n"), "400"),
    ("header value with NUL", "9110 §5.5", _get(extra=b"X: a\x00b\r\n"), "400"),
    ("obs-fold", "9112 §5.2", _get(extra=b"X: a\r\n b\r\n"), "400 (or unfold)"),
    ("OWS around a field value", "9110 §5.5", _get(extra=b"X: \t a \t\r\n"), "200"),
    ("Content-Length with leading zeros `05`", "9112 §6.3", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 05\r\n\r\nhello",
     "400 (our choice)"),
    ("Content-Length list `5, 5`", "9112 §6.3", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
     "400 (or 200)"),
    ("chunk extension `5;name=value`", "9112 §7.1.1", _CHUNKED + b"5;name=value\r\nhello\r\n0\r\n\r\n", "200"),
    ("chunk extension with BWS `5 ;name=value`", "9112 §7.1.1", _CHUNKED + b"5 ;name=value\r\nhello\r\n0\r\n\r\n", "200"),
    ("chunk extension with BWS `5 ; name = value`", "9112 §7.1.1",
     _CHUNKED + b"5 ; name = value\r\nhello\r\n0\r\n\r\n", "200"),
    ("chunk extension without a name `5;=v`", "9112 §7.1.1", _CHUNKED + b"5;=v\r\nhello\r\n0\r\n\r\n", "400"),
    ("chunk size then SP `5 `", "9112 §7.1", _CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n", "400"),
    ("trailer field `X-Checksum`", "9112 §7.1.2", _CHUNKED + b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n", "200"),
    ("trailer field `Host`", "9110 §6.5.1", _CHUNKED + b"5\r\nhello\r\n0\r\nHost: evil\r\n\r\n", "400 (our choice)"),
    ("Expect: 100-continue", "9110 §10.1.1",
     b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", "200 (100 first)"),
    ("Expect: something else", "9110 §10.1.1", _get(extra=b"Expect: fly\r\n"), "417"),
]


def probe(port: int, data: bytes, timeout: float) -> str:
    """The first final status the server sends for ``data`` on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                return "reset" if not got else _status(got)
            if not chunk:
                break
            got += chunk
            if _status(got) not in ("-", "100"):
                break
    if not got:
        return "close"
    return _status(got)


def _status(raw: bytes) -> str:
    """The status of the first non-1xx response in ``raw``."""
    while raw.startswith(b"HTTP/"):
        line, _, rest = raw.partition(b"\r\n")
        parts = line.split(b" ")
        code = parts[1].decode("latin-1") if len(parts) > 1 else "?"
        if not code.startswith("1"):
            return code
        _, sep, raw = rest.partition(b"\r\n\r\n") if rest[:2] != b"\r\n" else (b"", b"x", rest[2:])
        if not sep:
            return "100"
    return "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="ours,gunicorn,uvicorn,waitress")
    ap.add_argument("--timeout", type=float, default=1.5)
    args = ap.parse_args()
    names = args.servers.split(",")
    results: dict[str, list[str]] = {}
    found: dict[str, str] = {}
    for name in names:
        spec = PEERS[name]
        bin_dir = REPO / (".venv" if name == "ours" else ".bench-venv") / "bin"
        found[name] = versions(bin_dir).get(spec.package, "?")
        with launch(spec, bin_dir, threads=2) as running:
            results[name] = [probe(running.port, data, args.timeout) for _, _, data, _ in CASES]
    header = " | ".join(f"{n} {found[n]}" for n in names)
    print(f"| rule | RFC | RFC calls for | {header} |")
    print("|---|---|---|" + "---|" * len(names))
    for i, (rule, rfc, _, want) in enumerate(CASES):
        cells = " | ".join(results[n][i] for n in names)
        print(f"| {rule} | {rfc} | {want} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
