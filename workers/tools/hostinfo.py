"""Reading the host: the /proc parsers and sysctl readers behind ``reactor doctor``.

Everything here reads, nothing here judges: ``mioreactor.workers.tools.doctor`` turns these numbers into
verdicts and fixes, and ``reactor bench`` reuses the socket counters to explain a failed
connect. A value that cannot be read raises :class:`Unavailable` (or the helper returns
``None``) with the reason; nothing is ever guessed.

Format notes, once (see ``net/ipv4/tcp_ipv4.c``, ``get_tcp4_sock`` and friends):

* ``/proc/net/tcp`` and ``tcp6`` have one header line, then one socket per line:
  ``sl local_address rem_address st tx_queue:rx_queue ...``. Every number is hex.
  An address is ``ADDR:PORT``; the port is the plain hex number (``1F90`` is 8080),
  the address is the raw ``__be32`` words printed as native integers, so on a
  little-endian host ``0100007F`` is 127.0.0.1 (IPv6: four such words).
* ``st`` is the kernel's TCP state: ``06`` TIME_WAIT, ``0A`` LISTEN, and so on.
* For a LISTEN socket ``rx_queue`` is ``sk_ack_backlog``: the connections that finished
  the handshake and wait for ``accept()``. For any other socket it is unread bytes.
* The tables are per network namespace (``/proc/net`` is ``/proc/self/net``).
* ``/proc/net/netstat`` comes in line pairs with the same prefix: a header row of names
  (``TcpExt: SyncookiesSent ... ListenOverflows ListenDrops ...``) then a row of values.

On BSD and macOS there is no /proc: the sysctl names that differ are read with
``sysctl -n NAME`` under a timeout, and what has no sysctl (socket tables, listen
counters) is reported unavailable with the command to run by hand.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DEFAULT_PROC_ROOT",
    "TCP_LISTEN",
    "TCP_STATES",
    "TCP_TIME_WAIT",
    "HostSource",
    "ProcSource",
    "SysctlSource",
    "TcpSocket",
    "Unavailable",
    "count_states",
    "ephemeral_usage",
    "host_source",
    "listen_queue_depth",
    "parse_int",
    "parse_netstat",
    "parse_port_range",
    "parse_tcp_table",
    "read_tcp_sockets",
    "run_sysctl",
]

DEFAULT_PROC_ROOT = "/proc"
SYSCTL_TIMEOUT = 2.0
"""Seconds one ``sysctl -n`` may take before its value is reported unavailable."""

TCP_TIME_WAIT = 0x06
TCP_LISTEN = 0x0A
TCP_STATES: dict[int, str] = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
    0x0C: "NEW_SYN_RECV",
}


class Unavailable(Exception):
    """A host value that cannot be read here; the message says why."""


# -- parsers: text in, values out; no I/O --------------------------------------------


def _decode_address(hex_addr: str) -> str:
    """Turn a /proc/net/tcp{,6} address field (native-order 32-bit words) into text."""
    raw = bytes.fromhex(hex_addr)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One row of /proc/net/tcp or tcp6.

    Addresses stay in their hex form (cheap to group by); ``local_ip`` and
    ``remote_ip`` decode them on demand.

    Attributes:
        local_hex, remote_hex: the address part of the field, as the kernel prints it.
        local_port, remote_port: decoded port numbers.
        state: the kernel TCP state number (see ``TCP_STATES``).
        tx_queue, rx_queue: decoded queue lengths; for LISTEN, ``rx_queue`` is the
            accept queue (connections waiting for ``accept()``).
    """

    local_hex: str
    local_port: int
    remote_hex: str
    remote_port: int
    state: int
    tx_queue: int
    rx_queue: int

    @property
    def local_ip(self) -> str:
        return _decode_address(self.local_hex)

    @property
    def remote_ip(self) -> str:
        return _decode_address(self.remote_hex)

    @property
    def state_name(self) -> str:
        return TCP_STATES.get(self.state, f"0x{self.state:02X}")


def parse_tcp_table(text: str) -> list[TcpSocket]:
    """Parse the text of /proc/net/tcp or tcp6.

    The header line and any line that does not have the expected shape are skipped
    (a table read while sockets come and go may end mid-line).

    Returns:
        One ``TcpSocket`` per well-formed line, in table order.
    """
    sockets: list[TcpSocket] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0].endswith(":"):
            continue
        try:
            local_hex, local_port = fields[1].split(":")
            remote_hex, remote_port = fields[2].split(":")
            tx_queue, rx_queue = fields[4].split(":")
            sockets.append(
                TcpSocket(
                    local_hex,
                    int(local_port, 16),
                    remote_hex,
                    int(remote_port, 16),
                    int(fields[3], 16),
                    int(tx_queue, 16),
                    int(rx_queue, 16),
                )
            )
        except ValueError:
            continue
    return sockets


def parse_int(text: str) -> int:
    """Parse a one-number file such as /proc/sys/net/core/somaxconn.

    Raises:
        ValueError: the text is not one integer.
    """
    return int(text.strip())


def parse_port_range(text: str) -> tuple[int, int]:
    """Parse ``ip_local_port_range`` ("32768\\t60999") into ``(low, high)``.

    Raises:
        ValueError: not two integers, or low > high.
    """
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"expected two numbers, got {text!r}")
    low, high = int(parts[0]), int(parts[1])
    if low > high:
        raise ValueError(f"empty port range {low}-{high}")
    return low, high


def parse_netstat(text: str) -> dict[str, dict[str, int]]:
    """Parse /proc/net/netstat (or /proc/net/snmp): header row then value row, per prefix.

    Returns:
        ``{"TcpExt": {"ListenOverflows": 0, ...}, "IpExt": {...}}``. A header row with no
        matching value row, or rows of different lengths, are left out.
    """
    tables: dict[str, dict[str, int]] = {}
    headers: dict[str, list[str]] = {}
    for line in text.splitlines():
        prefix, sep, rest = line.partition(":")
        if not sep:
            continue
        words = rest.split()
        if prefix not in headers:
            headers[prefix] = words
            continue
        names = headers.pop(prefix)
        try:
            values = [int(w) for w in words]
        except ValueError:
            continue
        if len(values) == len(names):
            tables[prefix] = dict(zip(names, values, strict=True))
    return tables


# -- /proc readers ---------------------------------------------------------------------


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError as exc:
        raise Unavailable(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise Unavailable(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_tcp_sockets(proc_root: str = DEFAULT_PROC_ROOT) -> list[TcpSocket]:
    """Read every TCP socket of this network namespace from ``net/tcp`` and ``net/tcp6``.

    A missing ``tcp6`` (IPv6 disabled) counts as empty when ``tcp`` was read.

    Raises:
        Unavailable: ``net/tcp`` cannot be read.
    """
    sockets = parse_tcp_table(_read_text(os.path.join(proc_root, "net", "tcp")))
    try:
        sockets += parse_tcp_table(_read_text(os.path.join(proc_root, "net", "tcp6")))
    except Unavailable:
        pass
    return sockets


def count_states(
    port: int | None = None, *, proc_root: str = DEFAULT_PROC_ROOT
) -> dict[str, int] | None:
    """Count TCP sockets by state name, for explaining a failed load test.

    Args:
        port: count only sockets whose local or remote port is this one (both ends of
            a loopback connection then count); ``None`` counts every socket.
        proc_root: where procfs is mounted.

    Returns:
        ``{"ESTABLISHED": 12, "TIME_WAIT": 3, ...}`` (states with no socket are absent),
        or ``None`` when the socket tables cannot be read (not Linux).
    """
    try:
        sockets = read_tcp_sockets(proc_root)
    except Unavailable:
        return None
    counts: Counter[str] = Counter(
        s.state_name
        for s in sockets
        if port is None or s.local_port == port or s.remote_port == port
    )
    return dict(counts)


def listen_queue_depth(port: int, *, proc_root: str = DEFAULT_PROC_ROOT) -> int | None:
    """Return how many connections wait in the accept queue of the listener on ``port``.

    This is ``rx_queue`` of the LISTEN socket(s) on that local port, summed when several
    listen there (IPv4 and IPv6, or SO_REUSEPORT). It counts handshakes completed by the
    kernel and not yet taken by ``accept()``; once it reaches the backlog, new clients
    are dropped (ListenOverflows) and see connect timeouts.

    Returns:
        The depth, or ``None`` if nothing listens on that port or /proc cannot be read.
    """
    # Called for live server stats (every scrape of /metrics, every second under
    # ``reactor top``), and a loaded host has tens of thousands of other rows: read the
    # bytes and jump with ``find`` to the rows that mention the port, instead of
    # splitting every line in Python (70,000 rows: 150 ms of GIL-holding Python before,
    # about 30 ms now, most of it the kernel writing the table).
    want = b":%04X " % port
    depth: int | None = None
    read_any = False
    for name in ("tcp", "tcp6"):
        try:
            data = _read_bytes(os.path.join(proc_root, "net", name))
        except Unavailable:
            continue
        read_any = True
        at = data.find(want)
        while at >= 0:
            begin = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            if end < 0:
                end = len(data)
            fields = data[begin:end].split(None, 5)
            if len(fields) >= 5 and fields[3] == b"0A" and fields[1].endswith(want[:-1]):
                try:
                    depth = (depth or 0) + int(fields[4].partition(b":")[2], 16)
                except ValueError:
                    pass
            at = data.find(want, end)
    return depth if read_any else None


def ephemeral_usage(
    sockets: Iterable[TcpSocket], low: int, high: int
) -> tuple[int, str | None, int]:
    """Count sockets whose local port lies in ``[low, high]``.

    The kernel's real limit is per 4-tuple: a client can hold ``high - low + 1``
    connections toward each (source ip, destination ip, destination port), so the
    busiest such group is what runs out first. LISTEN sockets count toward the total
    (their port is taken) but not toward any destination.

    Returns:
        ``(total, busiest, busiest_count)``: ``busiest`` reads
        ``"SRC -> DST:PORT"``, or ``None`` when no connected socket uses the range.
    """
    total = 0
    groups: Counter[tuple[str, str, int]] = Counter()
    for s in sockets:
        if low <= s.local_port <= high:
            total += 1
            if s.state != TCP_LISTEN:
                groups[(s.local_hex, s.remote_hex, s.remote_port)] += 1
    if not groups:
        return total, None, 0
    (src, dst, dport), n = groups.most_common(1)[0]
    dst_ip = _decode_address(dst)
    dst_text = f"[{dst_ip}]" if ":" in dst_ip else dst_ip
    return total, f"{_decode_address(src)} -> {dst_text}:{dport}", n


# -- sources: one per platform, same surface -----------------------------------------


class HostSource(Protocol):
    """The host values the doctor needs; each method raises ``Unavailable`` with why.

    ``names`` maps a doctor key to the sysctl name to set, for the fix text.
    """

    platform: str
    names: dict[str, str]

    def port_range(self) -> tuple[int, int]: ...
    def somaxconn(self) -> int: ...
    def tcp_max_syn_backlog(self) -> int: ...
    def tcp_syncookies(self) -> int: ...
    def tcp_tw_reuse(self) -> int: ...
    def file_max(self) -> int: ...
    def nr_open(self) -> int: ...
    def sockets(self) -> list[TcpSocket]: ...
    def tcp_ext(self) -> dict[str, int]: ...


class ProcSource:
    """Linux: everything from procfs at ``proc_root``. Socket tables are read once."""

    platform = "linux"
    names: dict[str, str] = {  # noqa: RUF012 - read-only table
        "ephemeral_ports": "net.ipv4.ip_local_port_range",
        "somaxconn": "net.core.somaxconn",
        "tcp_max_syn_backlog": "net.ipv4.tcp_max_syn_backlog",
        "tcp_tw_reuse": "net.ipv4.tcp_tw_reuse",
        "file_max": "fs.file-max",
        "nr_open": "fs.nr_open",
    }

    def __init__(self, proc_root: str = DEFAULT_PROC_ROOT) -> None:
        self.proc_root = proc_root
        self._sockets: list[TcpSocket] | None = None

    def _sys(self, rel: str) -> str:
        return _read_text(os.path.join(self.proc_root, "sys", *rel.split("/")))

    def _sys_int(self, rel: str) -> int:
        text = self._sys(rel)
        try:
            return parse_int(text)
        except ValueError as exc:
            raise Unavailable(f"cannot parse /proc/sys/{rel}: {text.strip()!r}") from exc

    def port_range(self) -> tuple[int, int]:
        text = self._sys("net/ipv4/ip_local_port_range")
        try:
            return parse_port_range(text)
        except ValueError as exc:
            raise Unavailable(f"cannot parse ip_local_port_range: {exc}") from exc

    def somaxconn(self) -> int:
        return self._sys_int("net/core/somaxconn")

    def tcp_max_syn_backlog(self) -> int:
        return self._sys_int("net/ipv4/tcp_max_syn_backlog")

    def tcp_syncookies(self) -> int:
        return self._sys_int("net/ipv4/tcp_syncookies")

    def tcp_tw_reuse(self) -> int:
        return self._sys_int("net/ipv4/tcp_tw_reuse")

    def file_max(self) -> int:
        return self._sys_int("fs/file-max")

    def nr_open(self) -> int:
        return self._sys_int("fs/nr_open")

    def sockets(self) -> list[TcpSocket]:
        if self._sockets is None:
            self._sockets = read_tcp_sockets(self.proc_root)
        return self._sockets

    def tcp_ext(self) -> dict[str, int]:
        path = os.path.join(self.proc_root, "net", "netstat")
        tables = parse_netstat(_read_text(path))
        if "TcpExt" not in tables:
            raise Unavailable(f"no TcpExt header/value rows in {path}")
        return tables["TcpExt"]


SysctlRunner = Callable[[str], str]


def run_sysctl(name: str) -> str:
    """Return the output of ``sysctl -n NAME``, bounded by ``SYSCTL_TIMEOUT``.

    Raises:
        Unavailable: no sysctl binary, a timeout, or a non-zero exit (unknown name).
    """
    try:
        done = subprocess.run(
            ["sysctl", "-n", name],
            capture_output=True,
            text=True,
            timeout=SYSCTL_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise Unavailable("no sysctl command on this host") from exc
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"sysctl -n {name} took over {SYSCTL_TIMEOUT:g}s") from exc
    if done.returncode != 0:
        err = done.stderr.strip() or f"exit status {done.returncode}"
        raise Unavailable(f"sysctl -n {name}: {err}")
    return done.stdout


class SysctlSource:
    """BSD and macOS: the values that exist as sysctls, read with ``run``."""

    platform = sys.platform
    names: dict[str, str] = {  # noqa: RUF012 - read-only table
        "ephemeral_ports": "net.inet.ip.portrange.first / net.inet.ip.portrange.last",
        "somaxconn": "kern.ipc.somaxconn",
        "file_max": "kern.maxfiles",
        "nr_open": "kern.maxfilesperproc",
    }

    def __init__(self, run: SysctlRunner = run_sysctl) -> None:
        self._run = run

    def _int(self, *names: str) -> int:
        """Read the first of ``names`` that exists (FreeBSD renamed a few)."""
        reasons: list[str] = []
        for name in names:
            try:
                text = self._run(name)
            except Unavailable as exc:
                reasons.append(str(exc))
                continue
            try:
                return parse_int(text)
            except ValueError as exc:
                raise Unavailable(f"cannot parse sysctl {name}: {text.strip()!r}") from exc
        raise Unavailable("; ".join(reasons))

    def port_range(self) -> tuple[int, int]:
        return self._int("net.inet.ip.portrange.first"), self._int("net.inet.ip.portrange.last")

    def somaxconn(self) -> int:
        return self._int("kern.ipc.soacceptqueue", "kern.ipc.somaxconn")

    def tcp_max_syn_backlog(self) -> int:
        raise Unavailable("no tcp_max_syn_backlog on BSD/macOS (the syncache sizes itself)")

    def tcp_syncookies(self) -> int:
        raise Unavailable("no tcp_syncookies on BSD/macOS")

    def tcp_tw_reuse(self) -> int:
        try:
            msl = f"; TIME_WAIT lasts 2 x net.inet.tcp.msl = 2 x {self._int('net.inet.tcp.msl')} ms"
        except Unavailable:
            msl = ""
        raise Unavailable(f"no tcp_tw_reuse on BSD/macOS{msl}")

    def file_max(self) -> int:
        return self._int("kern.maxfiles")

    def nr_open(self) -> int:
        return self._int("kern.maxfilesperproc")

    def sockets(self) -> list[TcpSocket]:
        raise Unavailable("no /proc/net/tcp here; count by hand with `netstat -an -p tcp`")

    def tcp_ext(self) -> dict[str, int]:
        raise Unavailable("no /proc/net/netstat here; see `netstat -s -p tcp` (listen queue)")


def host_source(proc_root: str = DEFAULT_PROC_ROOT) -> HostSource:
    """Pick how to read this host: procfs if it is there (or named), else sysctl."""
    if proc_root != DEFAULT_PROC_ROOT or os.path.isdir(os.path.join(proc_root, "sys", "net")):
        return ProcSource(proc_root)
    return SysctlSource()
