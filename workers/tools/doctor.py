"""``reactor doctor``: which host limits a load test will hit, with the number and the fix.

``diagnose()`` reads the host (``mioreactor.workers.tools.hostinfo``) and judges each limit: ``ok``,
``warn`` (a load test will likely hit it, or already did), or ``unknown`` (it could not
be read here; the detail says why, nothing is guessed). ``reactor bench`` reuses
``explain_connect_error`` to say why its connects fail; ``listen_queue_depth`` and
``count_states`` (from ``mioreactor.workers.tools.hostinfo``) are re-exported here for the server's stats
and the bench.

Why these limits, once (the long form is ``docs/doctor.md``):

* A client's ``connect()`` takes a local port from the ephemeral range. The limit is per
  (source ip, destination ip, destination port): one client address can hold only
  ``high - low + 1`` connections to one server port at once. Past that: EADDRNOTAVAIL.
* The side that closes first keeps the 4-tuple in TIME_WAIT for 60 s (Linux,
  ``TCP_TIMEWAIT_LEN``). A client that opens a connection per request toward one
  destination sustains about ``range / 60`` new connections per second, unless
  ``tcp_tw_reuse`` lets it take over TIME_WAIT tuples.
* ``listen(backlog)`` is silently capped at ``somaxconn``. When the accept queue is full the
  kernel drops the client's final ACK or SYN (ListenOverflows, ListenDrops) and the client
  retransmits after 1 s, 3 s, 7 s: the latency spikes of a server that does not drain
  ``accept()`` until EAGAIN, or whose backlog is too small.
* Every connection is a descriptor: ``ulimit -n`` (soft, raisable up to hard),
  ``fs.nr_open`` (ceiling of hard), ``fs.file-max`` (system wide). Past them: EMFILE/ENFILE.
"""

from __future__ import annotations

import errno
import importlib
import os
import select
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from .hostinfo import (
    DEFAULT_PROC_ROOT,
    TCP_TIME_WAIT,
    HostSource,
    Unavailable,
    count_states,
    ephemeral_usage,
    host_source,
    listen_queue_depth,
)

__all__ = [
    "KEYS",
    "NOFILE_WANTED",
    "Item",
    "Report",
    "Verdict",
    "build_report",
    "count_states",
    "detect_backend",
    "diagnose",
    "explain_connect_error",
    "listen_queue_depth",
]

NOFILE_WANTED = 4096
"""A soft ``ulimit -n`` below this warns: a load test of a few thousand connections needs it."""

EPHEMERAL_WANTED = 16384
"""An ephemeral range smaller than this warns (macOS's default 49152-65535 is exactly this)."""

TIME_WAIT_SECONDS = 60
"""Linux's fixed TIME_WAIT length (``TCP_TIMEWAIT_LEN``)."""

KEYS: tuple[str, ...] = (
    "ephemeral_ports",
    "ephemeral_ports_in_use",
    "time_wait",
    "tcp_tw_reuse",
    "somaxconn",
    "backlog_effective",
    "tcp_max_syn_backlog",
    "nofile",
    "file_max",
    "nr_open",
    "listen_overflows",
    "listen_drops",
    "backend",
)
"""Every key of ``Report.to_json()``, in report order. Each is always present."""

JSONValue: TypeAlias = "int | str | dict[str, int | str | None] | None"


class Verdict(str, Enum):
    """What a limit means for a load test."""

    OK = "ok"
    WARN = "warn"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Item:
    """One limit: its value (JSON-ready), verdict, what it means here, and the fix."""

    key: str
    value: JSONValue
    verdict: Verdict
    detail: str
    fix: str

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "value": self.value,
            "verdict": self.verdict.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def _display(value: JSONValue) -> str:
    if value is None:
        return "?"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items() if isinstance(v, int))
    return str(value)


@dataclass(frozen=True)
class Report:
    """The doctor's findings: ``items`` in ``KEYS`` order."""

    items: list[Item]
    platform: str
    backlog_requested: int

    def get(self, key: str) -> Item:
        """Return the item for ``key``. Raises KeyError for a key not in ``KEYS``."""
        for item in self.items:
            if item.key == key:
                return item
        raise KeyError(key)

    def to_json(self) -> dict[str, dict[str, JSONValue]]:
        """``{key: {"value", "verdict", "detail", "fix"}}`` for every key of ``KEYS``."""
        return {item.key: item.to_json() for item in self.items}

    def to_text(self) -> str:
        """An aligned table of values and verdicts, then each detail, and fixes where due."""
        rows = [(item.key, _display(item.value), item.verdict.value) for item in self.items]
        w_key = max(len("ITEM"), *(len(r[0]) for r in rows))
        w_val = max(len("VALUE"), *(len(r[1]) for r in rows))
        lines = [
            f"reactor doctor: host limits for a load test "
            f"({self.platform}, backlog {self.backlog_requested})",
            "",
            f"{'ITEM':<{w_key}}  {'VALUE':<{w_val}}  VERDICT",
        ]
        lines += [f"{k:<{w_key}}  {v:<{w_val}}  {verdict}" for k, v, verdict in rows]
        lines.append("")
        for item in self.items:
            lines.append(f"{item.key} [{item.verdict.value}]: {item.detail}")
            if item.verdict is not Verdict.OK:
                lines.append(f"    fix: {item.fix}")
        warns = sum(item.verdict is Verdict.WARN for item in self.items)
        unknown = sum(item.verdict is Verdict.UNKNOWN for item in self.items)
        lines += ["", f"{warns} warn, {unknown} unknown, {len(self.items)} checked"]
        return "\n".join(lines) + "\n"


# -- the poll backend --------------------------------------------------------------------


def _probe_backend() -> str:
    """Probe what the kernel offers, as ``selectors._can_use`` does: make one, close it."""
    for name in ("epoll", "kqueue"):
        factory = getattr(select, name, None)
        if factory is None:
            continue
        try:
            poller = factory()
        except OSError:
            continue
        poller.close()
        return name
    return "fallback"


def detect_backend() -> tuple[str, str]:
    """Return ``(backend name, where it came from)``.

    Asks the reactor first, so the answer is the one the server will use:
    ``mioreactor.reactor.backend_name()``, then ``mioreactor.reactor.sys.BACKEND_NAME``; only when the reactor
    exposes neither does it probe ``select.epoll`` / ``select.kqueue`` itself.
    """
    try:
        reactor = importlib.import_module("reactor")
        func = getattr(reactor, "backend_name", None)
        if callable(func):
            return str(func()), "mioreactor.reactor.backend_name()"
        sys_mod = importlib.import_module("mioreactor.reactor.sys")
        name = getattr(sys_mod, "BACKEND_NAME", None)
        if isinstance(name, str):
            return name, "mioreactor.reactor.sys.BACKEND_NAME"
        how = "probed select.epoll/select.kqueue: the reactor exposes no backend name"
    except Exception as exc:  # a doctor must still report when the reactor is broken
        how = f"probed select.epoll/select.kqueue: importing the reactor failed ({exc!r})"
    return _probe_backend(), how


# -- the items ------------------------------------------------------------------------------


def _set(source: HostSource, key: str, value: str) -> str:
    name = source.names.get(key, key)
    return f"sudo sysctl -w {name}={value} (persist it in /etc/sysctl.d/ or /etc/sysctl.conf)"


class _Checks:
    """Builds each item from one source; each method may raise ``Unavailable``."""

    def __init__(self, source: HostSource, backlog: int) -> None:
        self.src = source
        self.backlog = backlog

    def ephemeral_ports(self) -> Item:
        low, high = self.src.port_range()
        size = high - low + 1
        return Item(
            "ephemeral_ports",
            {"low": low, "high": high, "size": size},
            Verdict.WARN if size < EPHEMERAL_WANTED else Verdict.OK,
            f"connect() takes a local port from {low}-{high}: at most {size} connections at "
            "once per (source ip, destination ip, destination port); each other destination "
            "or source address gets its own set",
            _set(self.src, "ephemeral_ports", "'1024 65535'")
            + "; or spread the load over several client addresses or server ports",
        )

    def ephemeral_ports_in_use(self) -> Item:
        low, high = self.src.port_range()
        size = high - low + 1
        total, busiest, count = ephemeral_usage(self.src.sockets(), low, high)
        where = f"; the busiest 4-tuple group is {busiest} with {count}" if busiest else ""
        return Item(
            "ephemeral_ports_in_use",
            {"total": total, "busiest_count": count, "busiest": busiest, "size": size},
            Verdict.WARN if count * 2 >= size else Verdict.OK,
            f"{total} sockets (all destinations) hold a local port in the range{where} "
            f"(of {size} per group; TIME_WAIT included)",
            "use keep-alive in the load tool, widen the port range, or add client addresses",
        )

    def time_wait(self) -> Item:
        sockets = self.src.sockets()
        low, high = self.src.port_range()
        size = high - low + 1
        tw = [s for s in sockets if s.state == TCP_TIME_WAIT]
        in_range = sum(low <= s.local_port <= high for s in tw)
        try:
            reuse: int | None = self.src.tcp_tw_reuse()
        except Unavailable:
            reuse = None
        rate = size // TIME_WAIT_SECONDS
        return Item(
            "time_wait",
            len(tw),
            Verdict.WARN if in_range * 2 >= size and reuse != 1 else Verdict.OK,
            f"{len(tw)} sockets in TIME_WAIT, {in_range} of them holding an ephemeral port "
            f"(client side); a client opening a new connection per request toward one "
            f"destination sustains about {size}/{TIME_WAIT_SECONDS}s = {rate} connections/s "
            f"unless tcp_tw_reuse lets it reuse these",
            "make the load tool keep connections alive (wrk does, ab needs -k); on the client "
            "host " + _set(self.src, "tcp_tw_reuse", "1") + "; or widen the port range",
        )

    def tcp_tw_reuse(self) -> Item:
        reuse = self.src.tcp_tw_reuse()
        meaning = {0: "off", 1: "on for all destinations", 2: "on for loopback only"}
        return Item(
            "tcp_tw_reuse",
            reuse,
            Verdict.WARN if reuse == 0 else Verdict.OK,
            f"{reuse} = {meaning.get(reuse, 'unrecognised')}: whether connect() may take over "
            "a TIME_WAIT 4-tuple (needs TCP timestamps; client side only)",
            "on the client host " + _set(self.src, "tcp_tw_reuse", "1"),
        )

    def somaxconn(self) -> Item:
        cap = self.src.somaxconn()
        return Item(
            "somaxconn",
            cap,
            Verdict.WARN if cap < self.backlog else Verdict.OK,
            f"listen(backlog) is silently capped at {cap}",
            _set(self.src, "somaxconn", str(max(self.backlog, 4096))),
        )

    def backlog_effective(self) -> Item:
        cap = self.src.somaxconn()
        got = min(self.backlog, cap)
        capped = f", capped by somaxconn {cap}" if got < self.backlog else ""
        return Item(
            "backlog_effective",
            got,
            Verdict.WARN if got < self.backlog else Verdict.OK,
            f"requested {self.backlog}, the server gets {got}{capped}: about that many "
            "finished handshakes may wait for accept(); past it the kernel drops them "
            "(ListenOverflows) and clients retry after 1 s, 3 s, 7 s",
            f"raise somaxconn to at least {self.backlog} ("
            + _set(self.src, "somaxconn", str(self.backlog))
            + "), then restart the server: the backlog is fixed at listen()",
        )

    def tcp_max_syn_backlog(self) -> Item:
        syn = self.src.tcp_max_syn_backlog()
        try:
            cookies: int | None = self.src.tcp_syncookies()
        except Unavailable:
            cookies = None
        got = min(self.backlog, self.src.somaxconn())
        short = syn < got and cookies == 0
        return Item(
            "tcp_max_syn_backlog",
            syn,
            Verdict.WARN if short else Verdict.OK,
            f"half-open (SYN_RECV) connections a listener holds; tcp_syncookies={cookies} "
            "(with 1, an overflowing SYN queue answers with cookies instead of dropping)",
            _set(self.src, "tcp_max_syn_backlog", str(max(got, syn))),
        )

    def nofile(self) -> Item:
        try:
            import resource
        except ImportError as exc:
            raise Unavailable("no resource module on this platform") from exc
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft_v = -1 if soft == resource.RLIM_INFINITY else soft
        hard_v = -1 if hard == resource.RLIM_INFINITY else hard
        low = 0 <= soft_v < NOFILE_WANTED
        return Item(
            "nofile",
            {"soft": soft_v, "hard": hard_v},
            Verdict.WARN if low else Verdict.OK,
            f"ulimit -n: soft {soft_v}, hard {hard_v} (-1 = unlimited); every connection "
            "is a descriptor (two per connection when client and server run here); past "
            "the soft limit accept()/socket() fail with EMFILE",
            f"`ulimit -n {hard_v if hard_v > 0 else 65536}` in the shell that starts the server "
            "and the load tool; raise the hard limit in /etc/security/limits.conf or with "
            "systemd LimitNOFILE=",
        )

    def file_max(self) -> Item:
        fmax = self.src.file_max()
        try:
            soft: int | None = _soft_nofile()
        except Unavailable:
            soft = None
        return Item(
            "file_max",
            fmax,
            Verdict.WARN if soft is not None and fmax < soft else Verdict.OK,
            f"descriptors the whole system may open: {fmax}; past it: ENFILE",
            _set(self.src, "file_max", "2097152"),
        )

    def nr_open(self) -> Item:
        nr = self.src.nr_open()
        return Item(
            "nr_open",
            nr,
            Verdict.WARN if nr < NOFILE_WANTED else Verdict.OK,
            f"the per-process ceiling: the hard ulimit -n cannot go above {nr}",
            _set(self.src, "nr_open", "1048576"),
        )

    def _counter(self, key: str, name: str, meaning: str) -> Item:
        ext = self.src.tcp_ext()
        if name not in ext:
            raise Unavailable(f"no {name} in the TcpExt rows of net/netstat")
        n = ext[name]
        return Item(
            key,
            n,
            Verdict.WARN if n > 0 else Verdict.OK,
            f"{meaning}: {n} since boot, this network namespace; compare before and after a run",
            "raise --backlog and somaxconn, and make sure the acceptor drains accept() until "
            "EAGAIN on every readiness event",
        )

    def listen_overflows(self) -> Item:
        return self._counter(
            "listen_overflows", "ListenOverflows", "handshakes that found the accept queue full"
        )

    def listen_drops(self) -> Item:
        return self._counter(
            "listen_drops", "ListenDrops", "SYNs and handshakes a listener dropped, any reason"
        )

    def backend(self) -> Item:
        name, how = detect_backend()
        good = name in ("epoll", "kqueue")
        return Item(
            "backend",
            name,
            Verdict.OK if good else Verdict.WARN,
            f"the poll backend the reactor uses ({how})"
            + ("" if good else "; the portable fallback costs O(connections) per poll"),
            "run load tests on Linux (epoll) or BSD/macOS (kqueue)",
        )


def _soft_nofile() -> int:
    try:
        import resource
    except ImportError as exc:
        raise Unavailable("no resource module on this platform") from exc
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_UNKNOWN_FIX = "read it by hand (see docs/doctor.md) or run the doctor where it is readable"


def build_report(source: HostSource, backlog: int = 1024) -> Report:
    """Judge every limit of ``KEYS`` as read from ``source``; unreadable ones are unknown."""
    checks = _Checks(source, backlog)
    items: list[Item] = []
    for key in KEYS:
        build: Callable[[], Item] = getattr(checks, key)
        try:
            items.append(build())
        except Unavailable as exc:
            items.append(Item(key, None, Verdict.UNKNOWN, str(exc), _UNKNOWN_FIX))
    return Report(items, source.platform, backlog)


def diagnose(backlog: int = 1024, *, proc_root: str = DEFAULT_PROC_ROOT) -> Report:
    """Read this host and say which limits a load test against ``backlog`` will hit.

    Args:
        backlog: the ``listen()`` backlog the server will ask for.
        proc_root: where procfs is mounted. Linux reads everything there; without a
            procfs (BSD, macOS) the values come from ``sysctl -n``.

    Returns:
        A ``Report`` with one item per key of ``KEYS``.
    """
    return build_report(host_source(proc_root), backlog)


def explain_connect_error(
    exc: OSError, *, port: int | None = None, proc_root: str = DEFAULT_PROC_ROOT
) -> str:
    """Say which host limit a failed client ``connect()`` (or ``socket()``) most likely hit.

    For ``reactor bench``: call it from the client process with the server's port.

    Args:
        exc: the error from ``socket()``/``connect()``; ``TimeoutError`` counts as ETIMEDOUT.
        port: the server port, to report the listener's accept-queue depth when local.
        proc_root: where procfs is mounted.
    """
    code = errno.ETIMEDOUT if isinstance(exc, TimeoutError) else exc.errno
    source = host_source(proc_root)
    report = build_report(source, backlog=0)

    def val(key: str) -> str:
        return _display(report.get(key).value)

    if code == errno.EADDRNOTAVAIL:
        return (
            f"no free local port (EADDRNOTAVAIL): ephemeral range {val('ephemeral_ports')}, "
            f"in use {val('ephemeral_ports_in_use')}, TIME_WAIT {val('time_wait')}, "
            f"tcp_tw_reuse {val('tcp_tw_reuse')}. Fix: {report.get('time_wait').fix}"
        )
    if code == errno.EMFILE:
        try:
            open_now = str(len(os.listdir(os.path.join(proc_root, "self", "fd"))))
        except OSError:
            open_now = "?"
        return (
            f"the client is out of descriptors (EMFILE): {val('nofile')}, open now {open_now}. "
            f"Fix: {report.get('nofile').fix}"
        )
    if code == errno.ENFILE:
        return (
            f"the system is out of descriptors (ENFILE): file-max {val('file_max')}. "
            f"Fix: {report.get('file_max').fix}"
        )
    if code in (errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET):
        depth = listen_queue_depth(port, proc_root=proc_root) if port is not None else None
        queue = f", accept queue of port {port} now {depth}" if depth is not None else ""
        return (
            f"{errno.errorcode.get(code or 0, str(code))}: if the server is up, its accept "
            f"queue was probably full: somaxconn {val('somaxconn')}, ListenOverflows "
            f"{val('listen_overflows')}, ListenDrops {val('listen_drops')}{queue}. "
            f"Fix: {report.get('listen_overflows').fix}"
        )
    return f"{exc}: no host limit explains this error"
