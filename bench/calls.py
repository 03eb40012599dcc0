"""Python function calls and memory allocations per keep-alive request: product vs floor.

Deterministic counts for A/B decisions on a noisy machine (timings swing by 30%, these
do not). The server runs in this process, every thread under a ``sys.setprofile``
counter (``threading.setprofile`` before its threads start); a load of ``--requests``
keep-alive GETs on ``--connections`` connections comes from a child process (a plain
socket client, so its own work is not counted), which opens its connections and
sends 200 warm-up requests before counting starts, and closes them after it stops:
only keep-alive requests are counted. With ``--close`` each request has a connection
of its own instead (``Connection: close``; the client closes once it has the
answer, as wrk does), so connecting and closing are counted too. Per request:

* ``py calls``: Python function calls (profile ``call`` events) in the server's threads;
* ``C calls``: calls of C functions from Python (``c_call``: ``sock.recv``,
  ``dict.get``, ``len``...);
* ``instructions`` (``--callgrind``): machine instructions per request in the server
  process, by callgrind (``measure_callgrind``);
* ``allocs`` (``--allocs``): calls of CPython's allocators in the server process,
  counted by ``perf`` uprobes in a second run (``measure_allocs`` says why not
  ``tracemalloc``, which cannot see blocks that are freed again).

Requests are counted as calls of the application (the same ``bench.apps.hello`` for
both), so nothing is added to the path being measured.

``--tls`` adds a row ``product-tls``: the same server over HTTPS (a self-signed
certificate made by ``openssl``, ``bench.servers.make_certificate``), its client
wrapping each socket in ``ssl`` with verification off (TLS 1.3). Its difference with
``product`` is what the TLS layer costs per keep-alive request: the client opens its
connections (and does the handshakes) and sends a warm-up of 200 requests before
counting starts, and counting stops before it closes them.

    .venv/bin/python bench/calls.py                   # product and floor, 20,000 requests
    .venv/bin/python bench/calls.py --only product --top 25   # + the most-called functions
    .venv/bin/python bench/calls.py --tls --opcodes   # + product over TLS
    .venv/bin/python bench/calls.py --only product-asgi --opcodes   # the ASGI hello
    .venv/bin/python bench/calls.py --asgi --callgrind   # + the ASGI hello, product and floor

The floor is ``bench/floor.py`` (``FLOOR_LOOP`` overrides the path),
imported and run in a thread; it only serves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import apps
from bench.servers import floor_loop_path, free_port

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

CLIENT = r"""
import selectors, socket, ssl, sys
port, conns, warm, total = (int(a) for a in sys.argv[1:5])
tls = sys.argv[5] == "tls"
depth = int(sys.argv[6])  # requests per write (pipelining); a new write when all are answered
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * depth
sel = selectors.DefaultSelector()
socks = []
if tls:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
for _ in range(conns):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        s = ctx.wrap_socket(s)  # the handshake, blocking
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, [b"", 0])
    socks.append(s)


def run(total):
    sent = done = 0
    for s in socks:
        if sent < total:
            s.send(req); sent += depth
            sel.get_key(s).data[1] = depth
    while done < total:
        for key, _ in sel.select(10):
            s, buf = key.fileobj, key.data
            try:
                data = s.recv(65536)
                while tls and s.pending():  # plaintext the ssl object holds: no edge
                    data += s.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
            if not data:
                raise SystemExit("server closed a connection")
            buf[0] += data
            while b"Hello, world!" in buf[0]:
                head, _, buf[0] = buf[0].partition(b"Hello, world!")
                done += 1
                buf[1] -= 1
                if not buf[1] and sent < total:
                    s.send(req); sent += depth
                    buf[1] = depth
    return done


print(run(warm), flush=True)  # the warm-up, on the same connections
sys.stdin.readline()  # counting has started
print(run(total), flush=True)
"""


CLOSE_CLIENT = r"""
import selectors, socket, sys
port, conns, warm, total = (int(a) for a in sys.argv[1:5])
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
sel = selectors.DefaultSelector()


def run(total):
    sent = done = 0

    def start():
        nonlocal sent
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        s.send(req); sent += 1
        sel.register(s, selectors.EVENT_READ, [b""])

    for _ in range(min(conns, total)):
        start()
    while done < total:
        for key, _ in sel.select(10):
            s, buf = key.fileobj, key.data
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            buf[0] += data
            if b"Hello, world!" not in buf[0]:  # the client closes once it has the answer,
                if not data:                     # as wrk does (the floor never closes)
                    raise SystemExit("closed without a response")
                continue
            sel.unregister(s); s.close()
            done += 1
            if sent < total:
                start()
    return done


print(run(warm), flush=True)
sys.stdin.readline()  # counting has started
print(run(total), flush=True)
"""

def _start_product() -> tuple[int, Callable[[], None]]:
    from mioreactor.workers import Server

    server = Server(apps.hello, bind="127.0.0.1:0")
    server.start()
    return server.address[1], lambda: server.stop(timeout=2)


def _start_product_tls() -> tuple[int, Callable[[], None]]:
    import shutil
    import tempfile

    from mioreactor.workers import Server
    from mioreactor.workers.tls.context import TlsConfig

    from bench.servers import make_certificate

    tmp = tempfile.mkdtemp(prefix="calls-tls-")
    cert, key = make_certificate(tmp)
    server = Server(apps.hello, bind="127.0.0.1:0", ssl=TlsConfig(certfile=cert, keyfile=key))
    server.start()  # the files are read by now

    def stop() -> None:
        server.stop(timeout=2)
        shutil.rmtree(tmp, ignore_errors=True)

    return server.address[1], stop


def _start_product_asgi() -> tuple[int, Callable[[], None]]:
    from mioreactor.workers import Server

    server = Server(apps.hello_asgi, bind="127.0.0.1:0", lifespan="off")
    server.start()
    return server.address[1], lambda: server.stop(timeout=2)


_STARTS: dict[str, Callable[[], tuple[int, Callable[[], None]]]] = {
    "product": _start_product,
    "product-tls": _start_product_tls,
    "product-asgi": _start_product_asgi,
    "floor-asgi": lambda: _start_floor("hello_asgi"),
}
_ROWS = ("product", "product-tls", "product-asgi", "floor", "floor-asgi")


def _app_code(which: str) -> Any:
    """The code object whose calls count the requests (the app each row serves)."""
    return (apps.hello_asgi if which.endswith("-asgi") else apps.hello).__code__


def _start_floor(app: str = "hello") -> tuple[int, Callable[[], None]]:
    spec = importlib.util.spec_from_file_location("floor_loop", floor_loop_path())
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    port = free_port()
    argv = ["floor_loop", "--port", str(port), "--app", f"bench.apps:{app}"]

    def run() -> None:
        sys.argv = argv
        mod.main()

    threading.Thread(target=run, name="floor-acceptor", daemon=True).start()
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    # One answer before returning: the floor listens before it starts its worker, and a
    # worker started after the caller's ``threading.setprofile(None)`` would go uncounted.
    with sock:
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(4096)
    return port, lambda: None  # daemon threads; the process ends after the run


_client = CLIENT  # set by --close
_depth = 1  # requests per write, set by --pipeline


def _drive(port: int, connections: int, requests: int, tls: bool,
           start: Callable[[], None], stop: Callable[[], None]) -> None:
    """Open ``connections`` (TLS handshakes done), send a warm-up of 200 requests,
    call ``start``, send ``requests`` more on the same connections, call ``stop``,
    then close them: what is counted between ``start`` and ``stop`` is keep-alive
    requests only (no accept, no handshake, no close)."""
    warm = -(-200 // _depth) * _depth  # whole batches when pipelining
    child = subprocess.Popen(
        [sys.executable, "-c", _client, str(port), str(connections), str(warm), str(requests),
         "tls" if tls else "plain", str(_depth)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        assert int(child.stdout.readline()) == warm
        start()
        child.stdin.write("go\n")
        child.stdin.flush()
        done = child.stdout.readline()
        assert done and int(done) == requests, done
        stop()
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(300)
    assert child.returncode == 0, child.returncode


class _Counter:
    def __init__(self) -> None:
        self.calls: collections.Counter[Any] = collections.Counter()
        self.c_calls: collections.Counter[Any] = collections.Counter()

    def __call__(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            self.calls[frame.f_code] += 1
        elif event == "c_call":
            self.c_calls[arg] += 1


class _OpCounter:
    """``sys.settrace`` with opcode events: bytecodes executed, per code object."""

    def __init__(self) -> None:
        self.ops: collections.Counter[Any] = collections.Counter()

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        elif event == "opcode":
            self.ops[frame.f_code] += 1
        return self


_CONN_FILES = {("core", "connection.py"), ("tls", "conn.py")}  # the connection layer


def measure_opcodes(which: str, connections: int, requests: int, top: int) -> float:
    """Bytecodes the server's threads execute per request (deterministic), and of
    them those of the connection layer (``workers/core/connection.py``, ``tlsconn.py``:
    reading, decrypting, encrypting, sending), which the waits between threads
    (a few bytecodes per request, timing-dependent) do not blur."""
    counter = _OpCounter()
    start = _STARTS.get(which, _start_floor)
    tls = which == "product-tls"
    threading.settrace(counter)
    port, stop = start()
    threading.settrace(None)  # type: ignore[arg-type]
    ops: dict[Any, int] = {}
    _drive(port, connections, requests, tls, counter.ops.clear,
           lambda: ops.update(counter.ops))
    stop()
    served = requests
    if top:
        print(f"-- {which}: bytecodes per request, by function")
        for code, n in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {n / served:7.1f}  {code.co_name} ({Path(code.co_filename).name}:"
                  f"{code.co_firstlineno})")
    layer = sum(n for code, n in ops.items()
                if (Path(code.co_filename).parent.name, Path(code.co_filename).name) in _CONN_FILES)
    print(f"{which:11s} connection layer bytecodes/req {layer / served:7.1f}")
    return sum(ops.values()) / served


def measure_calls(which: str, connections: int, requests: int, top: int) -> dict[str, float]:
    """Count calls with every server thread profiled; returns per-request figures."""
    counter = _Counter()
    start = _STARTS.get(which, _start_floor)
    tls = which == "product-tls"
    threading.setprofile(counter)
    port, stop = start()
    # Threads already started keep the profiler they were started with.
    threading.setprofile(None)  # type: ignore[arg-type]
    seen: dict[str, collections.Counter[Any]] = {}

    def reset() -> None:
        counter.calls.clear()
        counter.c_calls.clear()

    def snap() -> None:
        seen["calls"] = collections.Counter(dict(counter.calls))
        seen["c_calls"] = collections.Counter(dict(counter.c_calls))

    _drive(port, connections, requests, tls, reset, snap)
    stop()
    counter.calls, counter.c_calls = seen["calls"], seen["c_calls"]
    served = counter.calls[_app_code(which)]
    calls = sum(counter.calls.values())
    c_calls = sum(counter.c_calls.values())
    if top:
        print(f"-- {which}: most-called Python functions, per request")
        for code, n in counter.calls.most_common(top):
            print(f"  {n / served:6.2f}  {code.co_name} ({Path(code.co_filename).name}:"
                  f"{code.co_firstlineno})")
        print(f"-- {which}: most-called C functions, per request")
        for fn, n in counter.c_calls.most_common(top):
            print(f"  {n / served:6.2f}  {getattr(fn, '__qualname__', fn)}")
    return {"requests": served, "py_calls": calls / served, "c_calls": c_calls / served}


_PROBES = ("PyObject_Malloc", "PyObject_Calloc", "PyMem_Malloc", "PyMem_Calloc")


def _libpython() -> str | None:
    import sysconfig

    lib = sysconfig.get_config_var("LDLIBRARY")
    libdir = sysconfig.get_config_var("LIBDIR")
    if lib and libdir and lib.endswith(".so" + lib.rpartition(".so")[2]):
        path = Path(libdir) / lib
        if path.exists():
            return str(path)
    return sys.executable


def measure_allocs(which: str, connections: int, requests: int) -> dict[str, float] | None:
    """Allocator calls per request, counted by ``perf`` uprobes on CPython's allocators.

    ``tracemalloc`` cannot count them: it keeps a trace per *live* block, and every
    block the request path allocates is freed before the next request, so the
    traced set stays flat and a snapshot sees none of the churn (its
    ``get_traced_memory`` peak is reported instead, as the transient bytes). The
    uprobes see every call of ``PyObject_Malloc``/``Calloc`` and ``PyMem_Malloc``/
    ``Calloc`` in the server process; each is slow (a trap), which does not change
    the count. Needs root and ``perf``; None when they are missing.
    """
    import shutil

    perf = shutil.which("perf")
    lib = _libpython()
    if perf is None or lib is None:
        return None
    tls = which == "product-tls"
    events = []
    for fn in _PROBES:
        add = subprocess.run([perf, "probe", "-x", lib, "-a", fn], capture_output=True, text=True)
        if add.returncode != 0 and "already exists" not in add.stderr:
            return None
        events.append(f"probe_{Path(lib).name.split('.')[0].replace('-', '_')}:{fn}")
    child = subprocess.Popen([sys.executable, __file__, "--serve", which],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        stats: list[subprocess.Popen[str]] = []

        def begin() -> None:
            stats.append(subprocess.Popen([perf, "stat", "-x", ",", "-p", str(child.pid),
                                           "-e", ",".join(events)],
                                          stderr=subprocess.PIPE, text=True))
            time.sleep(0.5)

        _drive(port, connections, requests, tls, begin, lambda: stats[0].send_signal(2))
        _, err = stats[0].communicate(timeout=30)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)
        subprocess.run([perf, "probe", "-d", "probe_libpython*:*"], capture_output=True)
    total = 0
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            total += int(fields[0])
    return {"allocs": total / requests}


def measure_callgrind(which: str, connections: int, requests: int) -> float | None:
    """Instructions per request in the server process, counted by callgrind.

    The server runs under ``valgrind --tool=callgrind --instr-atstart=no``;
    instrumentation is switched on (``callgrind_control -i on``) after a warm-up of
    200 requests and off after ``requests`` more, so start-up is not counted. Every
    thread counts, including the acceptor's timed wake-ups, which valgrind's slowdown
    makes more frequent per request. None when valgrind is missing.
    """
    import shutil
    import tempfile

    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        return None
    tls = which == "product-tls"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        child = subprocess.Popen(
            [valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--serve", which],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            port = int(child.stdout.readline())

            def switch(on: str) -> Callable[[], None]:
                return lambda: subprocess.run([control, "-i", on, str(child.pid)],
                                              capture_output=True, check=True)

            _drive(port, connections, requests, tls, switch("on"), switch("off"))
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(120)
        total = 0
        for line in out.read_text().splitlines():
            if line.startswith("totals:"):
                total = int(line.split()[1])
    return total / requests


def serve(which: str) -> None:
    """Child mode: run a server, print its port, stop when stdin closes."""
    start = _STARTS.get(which, _start_floor)
    port, stop = start()
    print(port, flush=True)
    sys.stdin.read()
    stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--only", choices=_ROWS)
    ap.add_argument("--top", type=int, default=0, help="also list the N most-called functions")
    ap.add_argument("--allocs", action="store_true", help="also count allocator calls (perf)")
    ap.add_argument("--opcodes", action="store_true", help="also count bytecodes executed")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count instructions per request (valgrind)")
    ap.add_argument("--close", action="store_true",
                    help="one request per connection (Connection: close) instead of keep-alive")
    ap.add_argument("--tls", action="store_true",
                    help="also measure the product over TLS (row product-tls)")
    ap.add_argument("--pipeline", type=int, default=1, metavar="N",
                    help="N requests per write, the next write when all N are answered "
                         "(TechEmpower's plaintext: 16); --requests must be a multiple of N")
    ap.add_argument("--asgi", action="store_true",
                    help="also measure the ASGI hello (bench.apps:hello_asgi; row product-asgi)")
    ap.add_argument("--serve", choices=_ROWS,
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.close and (a.tls or a.only == "product-tls"):
        ap.error("--close and --tls: the Connection: close client speaks plain HTTP only")
    if a.pipeline < 1 or a.requests % a.pipeline:
        ap.error("--pipeline: N >= 1, and --requests a multiple of it")
    if a.close and a.pipeline != 1:
        ap.error("--close and --pipeline: one request per connection cannot pipeline")
    global _client, _depth
    _client = CLOSE_CLIENT if a.close else CLIENT
    _depth = a.pipeline
    if a.serve:
        serve(a.serve)
        return 0
    tls = a.tls or a.only == "product-tls"
    rows = ("product", "product-tls", "floor") if tls else ("product", "floor")
    if a.asgi or a.only in ("product-asgi", "floor-asgi"):
        rows = (*rows, "product-asgi", "floor-asgi")
    for which in rows:
        if a.only and which != a.only:
            continue
        r = measure_calls(which, a.connections, a.requests, a.top)
        print(f"{which:11s} py calls/req {r['py_calls']:7.2f}  C calls/req {r['c_calls']:7.2f}"
              f"  ({int(r['requests'])} requests)", flush=True)
        if a.opcodes:
            ops = measure_opcodes(which, a.connections, a.requests, a.top)
            print(f"{which:11s} bytecodes/req {ops:7.1f}", flush=True)
        if a.callgrind:
            ir = measure_callgrind(which, a.connections, a.requests)
            print(f"{which:11s} instructions/req {ir:,.0f}" if ir else
                  f"{which:11s} instructions: needs valgrind", flush=True)
        if a.allocs:
            m = measure_allocs(which, a.connections, a.requests)
            print(f"{which:11s} allocs/req {m['allocs']:7.2f}" if m else
                  f"{which:11s} allocs: needs root and perf (uprobes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
