"""Python function calls and memory allocations per keep-alive request: product vs floor.

Deterministic counts for A/B decisions on a noisy machine (timings swing by 30%, these
do not). The server runs in this process, every thread under a ``sys.setprofile``
counter (``threading.setprofile`` before its threads start); a load of ``--requests``
keep-alive GETs on ``--connections`` connections comes from a child process (a plain
blocking-socket client, so its own work is not counted). Per request:

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

    .venv/bin/python bench/calls.py                   # product and floor, 20,000 requests
    .venv/bin/python bench/calls.py --only product --top 25   # + the most-called functions

The floor is ``../shared/bench/floor_loop.py`` (``FLOOR_LOOP`` overrides the path),
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
import selectors, socket, sys
port, conns, total = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
sel = selectors.DefaultSelector()
socks = []
for _ in range(conns):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, [b""])
    socks.append(s)
sent = done = 0
for s in socks:
    if sent < total:
        s.send(req); sent += 1
while done < total:
    for key, _ in sel.select(10):
        s, buf = key.fileobj, key.data
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        if not data:
            raise SystemExit("server closed a connection")
        buf[0] += data
        while b"Hello, world!" in buf[0]:
            head, _, buf[0] = buf[0].partition(b"Hello, world!")
            done += 1
            if sent < total:
                s.send(req); sent += 1
print(done)
"""


CLOSE_CLIENT = r"""
import selectors, socket, sys
port, conns, total = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
sel = selectors.DefaultSelector()
sent = done = 0
def start():
    global sent
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
print(done)
"""


def _start_product() -> tuple[int, Callable[[], None]]:
    from workers import Server

    server = Server(apps.hello, bind="127.0.0.1:0")
    server.start()
    return server.address[1], lambda: server.stop(timeout=2)


def _start_floor() -> tuple[int, Callable[[], None]]:
    spec = importlib.util.spec_from_file_location("floor_loop", floor_loop_path())
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    port = free_port()
    argv = ["floor_loop", "--port", str(port), "--app", "bench.apps:hello"]

    def run() -> None:
        sys.argv = argv
        mod.main()

    threading.Thread(target=run, name="floor-acceptor", daemon=True).start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return port, lambda: None  # daemon threads; the process ends after the run


_client = CLIENT  # set by --close


def _drive(port: int, connections: int, requests: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _client, str(port), str(connections), str(requests)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert int(out.stdout) == requests, out


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


def measure_opcodes(which: str, connections: int, requests: int, top: int) -> float:
    """Bytecodes the server's threads execute per request (deterministic)."""
    counter = _OpCounter()
    start = _start_product if which == "product" else _start_floor
    threading.settrace(counter)
    port, stop = start()
    _drive(port, connections, 200)
    threading.settrace(None)  # type: ignore[arg-type]
    counter.ops.clear()
    _drive(port, connections, requests)
    ops = dict(counter.ops)
    stop()
    served = requests
    if top:
        print(f"-- {which}: bytecodes per request, by function")
        for code, n in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {n / served:7.1f}  {code.co_name} ({Path(code.co_filename).name}:"
                  f"{code.co_firstlineno})")
    return sum(ops.values()) / served


def measure_calls(which: str, connections: int, requests: int, top: int) -> dict[str, float]:
    """Count calls with every server thread profiled; returns per-request figures."""
    counter = _Counter()
    start = _start_product if which == "product" else _start_floor
    threading.setprofile(counter)
    port, stop = start()
    _drive(port, connections, 200)  # warm up: connections made, caches filled
    threading.setprofile(None)  # type: ignore[arg-type]
    counter.calls.clear()
    counter.c_calls.clear()
    # Threads already started keep the profiler they were started with.
    _drive(port, connections, requests)
    served = counter.calls[apps.hello.__code__]
    stop()
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
        _drive(port, connections, 200)
        stat = subprocess.Popen([perf, "stat", "-x", ",", "-p", str(child.pid),
                                 "-e", ",".join(events)],
                                stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        _drive(port, connections, requests)
        stat.send_signal(2)
        _, err = stat.communicate(timeout=30)
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
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        child = subprocess.Popen(
            [valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--serve", which],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            port = int(child.stdout.readline())
            _drive(port, connections, 200)
            subprocess.run([control, "-i", "on", str(child.pid)], capture_output=True, check=True)
            _drive(port, connections, requests)
            subprocess.run([control, "-i", "off", str(child.pid)], capture_output=True, check=True)
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
    start = _start_product if which == "product" else _start_floor
    port, stop = start()
    print(port, flush=True)
    sys.stdin.read()
    stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--only", choices=("product", "floor"))
    ap.add_argument("--top", type=int, default=0, help="also list the N most-called functions")
    ap.add_argument("--allocs", action="store_true", help="also count allocator calls (perf)")
    ap.add_argument("--opcodes", action="store_true", help="also count bytecodes executed")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count instructions per request (valgrind)")
    ap.add_argument("--close", action="store_true",
                    help="one request per connection (Connection: close) instead of keep-alive")
    ap.add_argument("--serve", choices=("product", "floor"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    global _client
    _client = CLOSE_CLIENT if a.close else CLIENT
    if a.serve:
        serve(a.serve)
        return 0
    for which in ("product", "floor"):
        if a.only and which != a.only:
            continue
        r = measure_calls(which, a.connections, a.requests, a.top)
        print(f"{which:8s} py calls/req {r['py_calls']:7.2f}  C calls/req {r['c_calls']:7.2f}"
              f"  ({int(r['requests'])} requests)", flush=True)
        if a.opcodes:
            ops = measure_opcodes(which, a.connections, a.requests, a.top)
            print(f"{which:8s} bytecodes/req {ops:7.1f}", flush=True)
        if a.callgrind:
            ir = measure_callgrind(which, a.connections, a.requests)
            print(f"{which:8s} instructions/req {ir:,.0f}" if ir else
                  f"{which:8s} instructions: needs valgrind", flush=True)
        if a.allocs:
            m = measure_allocs(which, a.connections, a.requests)
            print(f"{which:8s} allocs/req {m['allocs']:7.2f}" if m else
                  f"{which:8s} allocs: needs root and perf (uprobes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
