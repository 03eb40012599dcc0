"""Why a bench run went wrong, in sentences: the host limits behind failed connects.

``HostProbe`` reads what must be read before a run (ListenOverflows/ListenDrops, the
descriptor limit, raised here for the run) and after it; ``diagnose`` turns a result
and those readings into sentences, using ``mioreactor.workers.tools.doctor.explain_connect_error`` for
the per-errno explanations (ephemeral ports, TIME_WAIT, EMFILE, accept queues). Host
tables are read only when something failed: a clean run costs two reads of
/proc/net/netstat.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ..doctor import count_states, explain_connect_error
from ..hostinfo import DEFAULT_PROC_ROOT, Unavailable, host_source
from .config import BenchConfig, Target
from .result import BenchResult, WsBenchResult, listed

__all__ = ["HostProbe", "diagnose", "raise_nofile", "restore_nofile"]

NOFILE_RESERVE = 64
"""Descriptors the client needs besides its connections (poll, stdio, imports, /proc)."""

_COUNTERS = ("ListenOverflows", "ListenDrops")


def raise_nofile() -> tuple[int, int, int | None]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, so EMFILE is not self-inflicted.

    Returns:
        ``(soft, hard, raised_from)``: the limits now in force and the soft limit before
        (``None`` if it was not changed). ``-1`` stands for unlimited.
    """
    try:
        import resource
    except ImportError:  # not POSIX: nothing to raise
        return -1, -1, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    if hard == inf:
        target = 1 << 20  # Linux refuses RLIM_INFINITY above fs.nr_open
    else:
        target = hard
    if soft != inf and soft < target:
        for want in (target, 1 << 16):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            except (ValueError, OSError):
                continue
            new = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            return new, -1 if hard == inf else hard, soft
    return -1 if soft == inf else soft, -1 if hard == inf else hard, None


def restore_nofile(soft: int) -> None:
    """Put the soft RLIMIT_NOFILE back to ``soft`` (after the run's sockets are closed)."""
    try:
        import resource

        resource.setrlimit(
            resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )
    except (ImportError, ValueError, OSError):
        pass


@dataclass
class HostProbe:
    """Host counters read before and after a run (Linux /proc; None where unreadable)."""

    proc_root: str = DEFAULT_PROC_ROOT
    before: dict[str, int] | None = None

    def _read(self) -> dict[str, int] | None:
        try:
            ext = host_source(self.proc_root).tcp_ext()
        except Unavailable:
            return None
        return {name: ext[name] for name in _COUNTERS if name in ext}

    def start(self) -> None:
        self.before = self._read()

    def deltas(self) -> dict[str, int] | None:
        """``{"ListenOverflows": d, "ListenDrops": d}`` since ``start()``, or None."""
        after = self._read()
        if self.before is None or after is None:
            return None
        return {k: after[k] - self.before[k] for k in after if k in self.before}


def _explain(code: int, port: int, proc_root: str) -> str:
    try:
        return explain_connect_error(
            OSError(code, errno.errorcode.get(code, "")), port=port, proc_root=proc_root
        )
    except Exception as exc:  # the diagnosis must never lose the result it explains
        return f"(the host could not be read to explain it: {exc!r})"


def diagnose(
    result: BenchResult,
    config: BenchConfig,
    target: Target,
    *,
    proc_root: str = DEFAULT_PROC_ROOT,
) -> list[str]:
    """Sentences saying what went wrong in ``result`` and the likely host-side cause.

    Returns:
        An empty list for a clean run.
    """
    c = result.connections
    where = f"{target.host}:{target.port}"
    port = target.port
    out: list[str] = []
    if c.refused and not c.established:
        out.append(
            f"Nothing is listening on {where}: all {c.refused} connection attempts were "
            "refused (ECONNREFUSED). Start the server, or check the host and port."
        )
    elif c.refused:
        out.append(
            f"{c.refused} of {c.attempted} connects were refused while {c.established} "
            "succeeded: the server stopped or restarted during the run, or its accept queue "
            "overflowed with net.ipv4.tcp_abort_on_overflow=1. "
            + _explain(errno.ECONNREFUSED, port, proc_root)
        )
    for code in (errno.EADDRNOTAVAIL, errno.EMFILE, errno.ENFILE):
        n = c.errors.get(errno.errorcode[code], 0)
        if n:
            out.append(f"{n} connects failed at once: " + _explain(code, port, proc_root))
    if result.timeouts_connect:
        out.append(
            f"{result.timeouts_connect} connects got no answer within {config.timeout:g} s. "
            + _explain(errno.ETIMEDOUT, port, proc_root)
        )
    if isinstance(result, WsBenchResult):
        out += _websocket(result, config, where)
    elif result.timeouts_response:
        out.append(
            f"{result.timeouts_response} requests got no response within {config.timeout:g} s: "
            "the server is overloaded or blocked (a slow app, too few workers), or does not "
            "speak HTTP/1.1 on this port."
        )
    if c.reset and not isinstance(result, WsBenchResult):
        out.append(
            f"{c.reset} connections were reset or closed by the server before a complete "
            "response (ECONNRESET, EPIPE, or end of stream mid-response): the server crashed "
            "or dropped them (a connection limit, SO_LINGER 0, an idle keep-alive timeout "
            "racing a new request)."
        )
    if result.tls_errors:
        reasons = listed(result.tls_errors)
        hint = ""
        if any("VERIFY" in why for why in result.tls_errors):
            hint = (" The server's certificate is not trusted here: pass --cacert CA.pem (the "
                    "CA that signed it), or --insecure to skip the check (a test server only).")
        out.append(f"{sum(result.tls_errors.values())} TLS handshakes failed ({reasons}).{hint}")
    bad = c.errors.get("bad_response", 0)
    if bad:
        out.append(f"{bad} responses could not be parsed as HTTP/1.x: is this an HTTP server?")
    overflow = (result.listen_overflows or {}).get("ListenOverflows", 0)
    drops = (result.listen_overflows or {}).get("ListenDrops", 0)
    if overflow or drops:
        out.append(
            f"The kernel's ListenOverflows counter rose by {overflow} during the run "
            f"(ListenDrops +{drops}; host-wide, this network namespace): an accept queue was "
            "full and handshakes were dropped, so clients retried after 1 s, 3 s, 7 s. Raise "
            "the server's backlog and net.core.somaxconn, and make sure it drains accept() "
            "until EAGAIN."
        )
    if result.not_sent:
        out.append(
            f"The target could not keep up with {config.rate:g} req/s: {result.not_sent} "
            "requests came due while every connection was busy and were never sent. Add "
            "connections or lower the rate."
        )
    if result.nofile is not None:
        soft, hard = result.nofile
        if 0 <= soft < config.connections + NOFILE_RESERVE:
            out.append(
                f"{config.connections} connections need about "
                f"{config.connections + NOFILE_RESERVE} descriptors but ulimit -n is {soft} "
                f"(hard {hard}): expect EMFILE. Raise the hard limit (limits.conf, systemd "
                "LimitNOFILE=) or use fewer connections."
            )
    if not config.keepalive and (c.errors.get("EADDRNOTAVAIL") or result.timeouts_connect):
        out.append(_time_wait_sentence(port, proc_root))
    if result.responses == 0 and not out:
        what = "echo" if isinstance(result, WsBenchResult) else "response"
        out.append(f"No {what} came back from {where} and no error explains it.")
    return out


def _websocket(result: WsBenchResult, config: BenchConfig, where: str) -> list[str]:
    """The sentences of a ``ws://`` run: the upgrade, the frames, the echoes, the closes."""
    out: list[str] = []
    shake = result.handshake_errors
    rejected = {why: n for why, n in shake.items() if why.startswith("HTTP ")}
    if rejected:
        out.append(
            f"{sum(rejected.values())} upgrades were rejected ({listed(rejected, ': ')}): the "
            "server answered the WebSocket handshake with an HTTP status, not 101. Is the path a "
            "WebSocket endpoint? A 403 is the app refusing (closing before accept, an Origin "
            "or authentication check); a 404 a wrong path; a 400 or 426 a request it could "
            "not take."
        )
    bad = {why: n for why, n in shake.items()
           if why not in rejected and why not in ("reset", "timed_out", "refused")}
    if bad:
        out.append(
            f"{sum(bad.values())} upgrades got a 101 or an answer that breaks RFC 6455 4.1 "
            f"({listed(bad, ': ')}): not a conforming WebSocket server on {where}, or a proxy "
            "rewrote the response."
        )
    timeouts = shake.get("timed_out", 0)
    if timeouts:
        out.append(
            f"{timeouts} upgrade requests got no answer within {config.timeout:g} s: the "
            "server is overloaded or blocked, or does not speak HTTP on this port."
        )
    if result.timeouts_response > timeouts:
        out.append(
            f"{result.timeouts_response - timeouts} messages got no echo within "
            f"{config.timeout:g} s: the endpoint does not echo, or the server is overloaded "
            "or blocked (a slow app, too few workers)."
        )
    if result.connections.reset:
        out.append(
            f"{result.connections.reset} connections were reset or closed without a close "
            f"frame ({shake.get('reset', 0)} during the upgrade): the server crashed or "
            "dropped them (a connection limit, an idle timeout)."
        )
    if result.protocol_errors:
        out.append(
            f"{sum(result.protocol_errors.values())} connections broke RFC 6455 or did not "
            f"echo ({listed(result.protocol_errors, ': ')}): the server's framing is wrong, or "
            "the endpoint is not an echo."
        )
    mid_run = result.connections.errors.get("closed_by_server", 0)
    if mid_run:
        out.append(
            f"{mid_run} connections were closed by the server during the run (its close "
            "codes are counted with the others): it shut down (1001), found an error "
            "(1002, 1007, 1009, 1011), or closes connections on its own."
        )
    odd = {code: n for code, n in result.close_codes.items() if code != "1000"}
    if odd:
        out.append(
            f"Close codes other than 1000: {listed(odd, ': ')} (1006: closed without a close "
            f"frame; timeout: no close within {config.timeout:g} s of ours)."
        )
    return out


def _time_wait_sentence(port: int, proc_root: str) -> str:
    states = count_states(port, proc_root=proc_root)
    tw = states.get("TIME_WAIT", 0) if states is not None else None
    try:
        low, high = host_source(proc_root).port_range()
        size: int | None = high - low + 1
    except Unavailable:
        size = None
    per_s = f"about {size // 60} new connections/s per destination" if size else "a limited rate"
    return (
        f"One connection per request leaves each closed socket in TIME_WAIT for 60 s "
        f"({tw if tw is not None else '?'} now toward port {port}; ephemeral range "
        f"{size if size else '?'} ports), which sustains {per_s}. Use keep-alive, or "
        "enable net.ipv4.tcp_tw_reuse on the client."
    )
