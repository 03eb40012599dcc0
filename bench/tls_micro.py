"""What the TLS engine costs one keep-alive request, without sockets or threads.

``.venv/bin/python -m bench.tls_micro`` (needs ``trustme``, a test dependency) does a
TLS 1.3 handshake between two ``SSLObject``s over memory BIOs, then times, per request,
the server side's engine calls as ``workers/tls/conn.py`` makes them: write the
client's record into the incoming BIO, read the plaintext, encrypt a response, take it
from the outgoing BIO. Best of 5 runs of 2000 requests, for several read sizes.
"""

from __future__ import annotations

import ssl
import tempfile
import time

import trustme

REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESP = (b"HTTP/1.1 200 OK\r\nServer: mioreactor\r\nDate: Wed, 02 Dec 2026 07:00:00 GMT\r\n"
        b"Content-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!")


def _pair(sctx: ssl.SSLContext, cctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ...]:
    si, so, ci, co = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = sctx.wrap_bio(si, so, server_side=True)
    c = cctx.wrap_bio(ci, co, server_hostname="localhost")
    for _ in range(10):
        for obj in (c, s):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        if co.pending:
            si.write(co.read())
        if so.pending:
            ci.write(so.read())
    return s, si, so, c, co  # type: ignore[return-value]


def main() -> int:
    ca = trustme.CA()
    tmp = tempfile.mkdtemp()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(f"{tmp}/s.pem")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(f"{tmp}/s.pem")
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    n = 2000
    for size in (65536, 16384):
        best = float("inf")
        for _ in range(5):
            s, si, so, c, co = _pair(sctx, cctx)
            records = []
            for _ in range(n):
                c.write(REQ)
                records.append(co.read())  # type: ignore[attr-defined]
            engine = s._sslobj  # type: ignore[attr-defined]
            read, write, pending = engine.read, engine.write, engine.pending
            t = time.perf_counter()
            for record in records:
                si.write(record)  # type: ignore[attr-defined]
                read(size)
                _ = si.pending or pending()  # type: ignore[attr-defined]
                write(RESP)
                so.read()  # type: ignore[attr-defined]
            best = min(best, time.perf_counter() - t)
        print(f"read({size}): {best / n * 1e6:.2f} us per request (server-side engine calls)")
    print(f"({ssl.OPENSSL_VERSION}, {s.version()}, {s.cipher()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
