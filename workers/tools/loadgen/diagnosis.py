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
from .result import BenchResult, listed

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
    if result.timeouts_response:
        out.append(
            f"{result.timeouts_response} requests got no response within {config.timeout:g} s: "
            "the server is overloaded or blocked (a slow app, too few workers), or does not "
            "speak HTTP/1.1 on this port."
        )
    if c.reset:
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
        out.append(f"No response came back from {where} and no error explains it.")
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
