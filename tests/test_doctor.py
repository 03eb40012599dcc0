"""Tests for ``reactor doctor``: /proc parsing from fixtures, the real host, a real accept queue."""

from __future__ import annotations

import errno
import os
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mioreactor.workers.tools.doctor import (
    KEYS,
    Verdict,
    build_report,
    diagnose,
    explain_connect_error,
)
from mioreactor.workers.tools.hostinfo import (
    SysctlSource,
    Unavailable,
    count_states,
    listen_queue_depth,
    parse_netstat,
    parse_port_range,
    parse_tcp_table,
    run_sysctl,
)

little_endian_only = pytest.mark.skipif(
    sys.byteorder != "little", reason="fixture addresses are in little-endian /proc order"
)
on_linux_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/sys/net/core"), reason="needs a Linux /proc"
)

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 12346 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:9C41 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   3: 0100007F:1F90 0100007F:9C42 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   4: 0F02000A:D431 5DB8D822:01BB 01 0000001A:0000002B 00:00000000 00000000  1000        0 12347 1 0000000000000000 20 4 30 10 -1
   5: 0100007F:9C43 0100007F:1F
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000002 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:A000 00000000000000000000000001000000:0050 06 00000000:00000000 03:00000BB8 00000000     0        0 0 3 0000000000000000
"""
NETSTAT = """\
TcpExt: SyncookiesSent SyncookiesRecv TW ListenOverflows ListenDrops TCPHPHits
TcpExt: 0 0 10 7 9 45
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
"""
SYS = {
    "net/ipv4/ip_local_port_range": "32768\t60999\n",
    "net/ipv4/tcp_tw_reuse": "0\n",
    "net/ipv4/tcp_max_syn_backlog": "128\n",
    "net/ipv4/tcp_syncookies": "1\n",
    "net/core/somaxconn": "128\n",
    "fs/file-max": "9223372036854775807\n",
    "fs/nr_open": "1048576\n",
}


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A handcrafted procfs: the tables above and the sysctls of an old, small kernel."""
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(TCP)
    (tmp_path / "net" / "tcp6").write_text(TCP6)
    (tmp_path / "net" / "netstat").write_text(NETSTAT)
    for rel, text in SYS.items():
        path = tmp_path / "sys" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


# -- (a) parsing handcrafted /proc ------------------------------------------------------


def test_ports_and_queues_are_decoded_from_hex() -> None:
    sockets = parse_tcp_table(TCP)
    assert len(sockets) == 5  # header and the torn last line are skipped
    listener = sockets[0]
    assert (listener.local_port, listener.state_name, listener.rx_queue) == (8080, "LISTEN", 3)
    assert sockets[1].local_port == 40000 and sockets[1].remote_port == 8080
    assert (sockets[4].local_port, sockets[4].remote_port) == (54321, 443)
    assert (sockets[4].tx_queue, sockets[4].rx_queue) == (0x1A, 0x2B)


@little_endian_only
def test_addresses_are_decoded_from_native_order_words() -> None:
    v4 = parse_tcp_table(TCP)
    assert v4[0].local_ip == "127.0.0.1" and v4[0].remote_ip == "0.0.0.0"
    assert (v4[4].local_ip, v4[4].remote_ip) == ("10.0.2.15", "34.216.184.93")
    v6 = parse_tcp_table(TCP6)
    assert (v6[0].local_ip, v6[1].local_ip, v6[1].local_port) == ("::", "::1", 40960)


@given(
    port=st.integers(0, 65535),
    rport=st.integers(0, 65535),
    state=st.integers(1, 12),
    tx=st.integers(0, 2**32 - 1),
    rx=st.integers(0, 2**32 - 1),
)
def test_any_kernel_formatted_line_parses_back(
    port: int, rport: int, state: int, tx: int, rx: int
) -> None:
    line = (
        f"   7: 0100007F:{port:04X} 0100007F:{rport:04X} {state:02X} {tx:08X}:{rx:08X} "
        "00:00000000 00000000  1000        0 1 1 0000000000000000 20 4 30 10 -1"
    )
    (s,) = parse_tcp_table(line)
    assert (s.local_port, s.remote_port, s.state, s.tx_queue, s.rx_queue) == (
        port,
        rport,
        state,
        tx,
        rx,
    )


def test_time_wait_is_counted_across_tcp_and_tcp6(proc: Path) -> None:
    assert count_states(proc_root=str(proc)) == {
        "LISTEN": 2,
        "ESTABLISHED": 2,
        "TIME_WAIT": 3,
    }
    report = diagnose(proc_root=str(proc)).to_json()
    assert report["time_wait"]["value"] == 3
    assert "2 of them holding an ephemeral port" in str(report["time_wait"]["detail"])


def test_count_states_filters_on_either_end_of_the_port(proc: Path) -> None:
    assert count_states(8080, proc_root=str(proc)) == {
        "LISTEN": 1,
        "ESTABLISHED": 1,
        "TIME_WAIT": 2,
    }
    assert count_states(1, proc_root=str(proc)) == {}
    assert count_states(proc_root=str(proc / "missing")) is None


def test_listen_queue_depth_reads_rx_queue_of_the_listener(proc: Path) -> None:
    assert listen_queue_depth(8080, proc_root=str(proc)) == 3
    assert listen_queue_depth(80, proc_root=str(proc)) == 2
    assert listen_queue_depth(40000, proc_root=str(proc)) is None  # not a listener
    assert listen_queue_depth(8080, proc_root=str(proc / "missing")) is None


def test_ephemeral_ports_in_use_are_grouped_by_destination(proc: Path) -> None:
    value = diagnose(proc_root=str(proc)).to_json()["ephemeral_ports_in_use"]["value"]
    assert isinstance(value, dict)
    assert value["total"] == 4  # 40000, 40001, 54321, 40960; the listeners are outside
    assert value["busiest_count"] == 2
    if sys.byteorder == "little":
        assert value["busiest"] == "127.0.0.1 -> 127.0.0.1:8080"


def test_netstat_pairs_header_and_value_rows() -> None:
    tables = parse_netstat(NETSTAT)
    assert tables["TcpExt"]["ListenOverflows"] == 7
    assert tables["TcpExt"]["ListenDrops"] == 9
    assert tables["IpExt"] == {"InNoRoutes": 0, "InTruncatedPkts": 0}
    assert parse_netstat("TcpExt: A B\nTcpExt: 1\n") == {}  # ragged rows are left out


def test_port_range_parses_and_rejects_nonsense() -> None:
    assert parse_port_range("32768\t60999\n") == (32768, 60999)
    for bad in ("", "1", "a b", "600 500"):
        with pytest.raises(ValueError):
            parse_port_range(bad)


def test_a_small_old_kernel_gets_warnings_with_fixes(proc: Path) -> None:
    report = diagnose(1024, proc_root=str(proc))
    got = {item.key: item for item in report.items}
    assert list(got) == list(KEYS)
    assert got["somaxconn"].value == 128 and got["somaxconn"].verdict is Verdict.WARN
    assert got["backlog_effective"].value == 128
    assert got["backlog_effective"].verdict is Verdict.WARN
    assert "net.core.somaxconn=1024" in got["backlog_effective"].fix
    assert got["tcp_tw_reuse"].verdict is Verdict.WARN
    assert got["tcp_max_syn_backlog"].verdict is Verdict.OK  # syncookies cover it
    assert got["listen_overflows"].value == 7 and got["listen_overflows"].verdict is Verdict.WARN
    assert got["listen_drops"].value == 9
    assert got["ephemeral_ports"].value == {"low": 32768, "high": 60999, "size": 28232}


def test_the_backlog_asked_for_below_somaxconn_is_the_one_granted(proc: Path) -> None:
    item = diagnose(100, proc_root=str(proc)).get("backlog_effective")
    assert (item.value, item.verdict) == (100, Verdict.OK)


def test_unreadable_values_are_unknown_with_the_reason_never_guessed(proc: Path) -> None:
    (proc / "net" / "netstat").unlink()
    (proc / "sys" / "net" / "core" / "somaxconn").write_text("many\n")
    report = diagnose(proc_root=str(proc)).to_json()
    assert set(report) == set(KEYS)
    for key in ("listen_overflows", "listen_drops"):
        assert report[key]["verdict"] == "unknown" and report[key]["value"] is None
        assert "netstat" in str(report[key]["detail"])
    assert report["somaxconn"]["verdict"] == "unknown"
    assert "many" in str(report["somaxconn"]["detail"])
    assert report["backlog_effective"]["verdict"] == "unknown"


def test_to_text_is_an_aligned_table_with_fixes_for_warnings(proc: Path) -> None:
    text = diagnose(1024, proc_root=str(proc)).to_text()
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ITEM"))
    rows = lines[header : header + 1 + len(KEYS)]
    column = rows[0].index("VERDICT")
    for key, row in zip(KEYS, rows[1:], strict=True):
        assert row.startswith(key)
        assert row[column:] in ("ok", "warn", "unknown")
    assert "    fix: sudo sysctl -w net.core.somaxconn=" in text
    assert "warn," in lines[-1]


def test_bsd_values_come_from_sysctl_names() -> None:
    values = {
        "net.inet.ip.portrange.first": "49152\n",
        "net.inet.ip.portrange.last": "65535\n",
        "kern.ipc.somaxconn": "128\n",  # macOS; FreeBSD's soacceptqueue is absent
        "kern.maxfiles": "245760\n",
        "kern.maxfilesperproc": "122880\n",
        "net.inet.tcp.msl": "15000\n",
    }

    def fake_sysctl(name: str) -> str:
        if name not in values:
            raise Unavailable(f"sysctl -n {name}: unknown oid")
        return values[name]

    report = build_report(SysctlSource(run=fake_sysctl), 1024).to_json()
    assert report["ephemeral_ports"]["value"] == {"low": 49152, "high": 65535, "size": 16384}
    assert report["somaxconn"]["value"] == 128
    assert report["backlog_effective"]["value"] == 128
    assert report["file_max"]["value"] == 245760
    assert report["nr_open"]["value"] == 122880
    assert report["somaxconn"]["fix"].startswith("sudo sysctl -w kern.ipc.somaxconn=")  # type: ignore[union-attr]
    for key in ("time_wait", "ephemeral_ports_in_use", "listen_overflows", "tcp_max_syn_backlog"):
        assert report[key]["verdict"] == "unknown", key
    assert "2 x 15000 ms" in str(report["tcp_tw_reuse"]["detail"])


def test_a_missing_sysctl_is_unavailable_not_a_crash() -> None:
    with pytest.raises(Unavailable):
        run_sysctl("no.such.mioreactor.name")


def test_connect_errors_are_explained_by_the_limit_they_hit(proc: Path) -> None:
    root = str(proc)
    text = explain_connect_error(OSError(errno.EADDRNOTAVAIL, "x"), proc_root=root)
    assert "EADDRNOTAVAIL" in text and "size=28232" in text and "TIME_WAIT 3" in text
    assert "EMFILE" in explain_connect_error(OSError(errno.EMFILE, "x"), proc_root=root)
    text = explain_connect_error(TimeoutError(), port=8080, proc_root=root)
    assert "ListenOverflows 7" in text and "accept queue of port 8080 now 3" in text


# -- (b) this host: diagnose() agrees with /proc read independently ---------------------


def _read(rel: str) -> str:
    with open(f"/proc/sys/{rel}") as f:
        return f.read()


def _tcp_lines() -> Iterator[list[str]]:
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if os.path.exists(name):
            with open(name) as f:
                yield from (line.split() for line in f.readlines()[1:])


def _time_wait_now() -> int:
    return sum(1 for fields in _tcp_lines() if fields[3] == "06")


def _tcpext_now() -> dict[str, int]:
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))


def _agrees(read: Callable[[], object], value: Callable[[], object]) -> None:
    """Assert ``value() == read()`` once two reads around it agree (the host is live)."""
    for _ in range(20):
        before, got, after = read(), value(), read()
        if before == after:
            assert got == before
            return
        time.sleep(0.05)
    pytest.skip("the host kept changing between reads")


@on_linux_proc
def test_diagnose_matches_this_hosts_proc() -> None:
    report = diagnose(1024).to_json()
    assert list(report) == list(KEYS)
    low, high = map(int, _read("net/ipv4/ip_local_port_range").split())
    assert report["ephemeral_ports"]["value"] == {"low": low, "high": high, "size": high - low + 1}
    somaxconn = int(_read("net/core/somaxconn"))
    assert report["somaxconn"]["value"] == somaxconn
    assert report["backlog_effective"]["value"] == min(1024, somaxconn)
    assert report["tcp_max_syn_backlog"]["value"] == int(_read("net/ipv4/tcp_max_syn_backlog"))
    assert report["tcp_tw_reuse"]["value"] == int(_read("net/ipv4/tcp_tw_reuse"))
    assert report["file_max"]["value"] == int(_read("fs/file-max"))
    assert report["nr_open"]["value"] == int(_read("fs/nr_open"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert report["nofile"]["value"] == {
        "soft": -1 if soft == resource.RLIM_INFINITY else soft,
        "hard": -1 if hard == resource.RLIM_INFINITY else hard,
    }
    assert report["backend"]["value"] == (os.environ.get("REACTOR_BACKEND") or "epoll")
    assert all(item["verdict"] != "unknown" for item in report.values())


@on_linux_proc
def test_live_counters_match_this_hosts_proc() -> None:
    _agrees(_time_wait_now, lambda: diagnose().to_json()["time_wait"]["value"])
    _agrees(
        lambda: (_tcpext_now()["ListenOverflows"], _tcpext_now()["ListenDrops"]),
        lambda: tuple(
            diagnose().to_json()[k]["value"] for k in ("listen_overflows", "listen_drops")
        ),
    )


# -- (c) a real accept queue on loopback ------------------------------------------------


def _wait_for_depth(port: int, want: int, deadline: float = 5.0) -> int | None:
    end = time.monotonic() + deadline
    depth = listen_queue_depth(port)
    while depth != want and time.monotonic() < end:
        time.sleep(0.02)
        depth = listen_queue_depth(port)
    return depth


@on_linux_proc
def test_listen_queue_depth_counts_connected_but_unaccepted_clients() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        assert _wait_for_depth(port, 0) == 0
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            assert _wait_for_depth(port, 3) == 3
            conn, _ = listener.accept()
            conn.close()
            assert _wait_for_depth(port, 2) == 2
            assert count_states(port) is not None
        finally:
            for client in clients:
                client.close()
    assert listen_queue_depth(port) is None  # closed: nothing listens there any more
