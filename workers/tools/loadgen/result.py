"""BenchResult and the latency histogram: what a run measured, as JSON and as text.

Latencies go into a fixed log-linear histogram (HdrHistogram's layout, in whole
microseconds): exact below 256 us, then 128 buckets per power of two, so any
percentile is within 0.8 % of the true sample and memory stays a few thousand ints
however long the run. The sum and the maximum are kept exactly.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

__all__ = ["BenchResult", "ConnectionCounts", "LatencyHistogram", "WsBenchResult", "failure_kind"]

_SUB_BITS = 7
_SUB = 1 << _SUB_BITS  # 128 buckets per power of two
_EXACT = _SUB * 2  # values below 256 us have a bucket each
_BUCKETS = _EXACT + 48 * _SUB  # up to 2**55 us: far past any run's deadline
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def _bucket_of(us: int) -> int:
    if us < _EXACT:
        return us
    shift = us.bit_length() - _SUB_BITS - 1
    return (shift << _SUB_BITS) + (us >> shift)


def _bucket_high(index: int) -> int:
    """The largest microsecond value that lands in bucket ``index``."""
    if index < _EXACT:
        return index
    shift = (index >> _SUB_BITS) - 1
    mantissa = index - (shift << _SUB_BITS)
    return ((mantissa + 1) << shift) - 1


class LatencyHistogram:
    """Bounded-memory latency distribution with percentiles (seconds in, ms out)."""

    __slots__ = ("_counts", "count", "max_s", "sum_s")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def add_many(self, samples: Iterable[float]) -> None:
        """Record latencies given in seconds (negative values count as 0)."""
        counts = self._counts
        top = _BUCKETS - 1
        n = 0
        total = 0.0
        peak = self.max_s
        for s in samples:
            n += 1
            total += s
            if s > peak:
                peak = s
            us = int(s * 1e6)
            if us < _EXACT:
                counts[us if us > 0 else 0] += 1
            else:
                shift = us.bit_length() - _SUB_BITS - 1
                counts[min((shift << _SUB_BITS) + (us >> shift), top)] += 1
        self.count += n
        self.sum_s += total
        self.max_s = peak

    def copy(self) -> LatencyHistogram:
        """An independent copy (for snapshots)."""
        other = LatencyHistogram()
        other._counts = list(self._counts)
        other.count, other.sum_s, other.max_s = self.count, self.sum_s, self.max_s
        return other

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile (0 < q <= 100) in milliseconds; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, -(-int(q * self.count) // 100)) if q < 100 else self.count
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                return min(_bucket_high(index) / 1000.0, self.max_s * 1000.0)
        return self.max_s * 1000.0

    def mean_ms(self) -> float:
        return self.sum_s / self.count * 1000.0 if self.count else 0.0


def failure_kind(exc: OSError | None, kind: str | None = None) -> str:
    """The category of one failed connection (see ``ConnectionCounts.count_failure``)."""
    code = exc.errno if exc is not None else None
    if kind == "eof" or code in _RESET_ERRNOS:
        return "reset"
    if code == errno.ECONNREFUSED:
        return "refused"
    if kind == "timeout" or code == errno.ETIMEDOUT:
        return "timed_out"
    return kind or (errno.errorcode.get(code, str(code)) if code else type(exc).__name__)


@dataclass
class ConnectionCounts:
    """What happened to connections. ``errors`` counts other failures by errno name."""

    attempted: int = 0
    established: int = 0
    refused: int = 0
    reset: int = 0
    timed_out: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Every failed connection: refused + reset + timed out + all other errors."""
        return self.refused + self.reset + self.timed_out + sum(self.errors.values())

    def count_failure(self, exc: OSError | None, kind: str | None = None) -> str:
        """Count one failed connection and return its category.

        ``kind`` ``"eof"`` (peer closed before a complete response) and ECONNRESET,
        EPIPE, ECONNABORTED are resets; ECONNREFUSED is refused; ``"timeout"`` and
        ETIMEDOUT are timed out; anything else counts in ``errors`` under ``kind`` or
        its errno name.

        Returns:
            ``"reset"``, ``"refused"``, ``"timed_out"`` or the ``errors`` key.
        """
        name = failure_kind(exc, kind)
        if name == "reset":
            self.reset += 1
        elif name == "refused":
            self.refused += 1
        elif name == "timed_out":
            self.timed_out += 1
        else:
            self.errors[name] = self.errors.get(name, 0) + 1
        return name

    def to_json(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "established": self.established,
            "refused": self.refused,
            "reset": self.reset,
            "timed_out": self.timed_out,
            "errors": dict(sorted(self.errors.items())),
        }


@dataclass
class BenchResult:
    """The outcome of ``run_bench`` (or a progress snapshot of it).

    Attributes:
        config: the run's configuration as JSON (``BenchConfig.to_json()``).
        connections: connection outcomes.
        requests: requests written (fully or in part) to a socket.
        responses: complete final responses.
        status: responses by status code.
        latency: per-request latency (send to last byte; in close mode and open loop
            from the moment the request was due, so connect and queueing count).
        duration_s: wall time of the run.
        bytes_received: every byte read from the server.
        timeouts_connect, timeouts_response: the two parts of ``connections.timed_out``.
        not_sent: open loop only: requests that came due but found no free connection
            before the run ended (the target could not keep up with the rate).
        nofile: the client's ``(soft, hard)`` descriptor limits during the run, and
            ``nofile_raised_from`` the soft limit before the run raised it (or None).
        listen_overflows: ListenOverflows/ListenDrops deltas over the run (None when
            /proc/net/netstat cannot be read).
        tls_errors: https:// only: failed TLS handshakes by OpenSSL's reason
            (``CERTIFICATE_VERIFY_FAILED``, ...); each is also ``connections.errors["tls"]``.
        diagnosis: human sentences: what went wrong and the likely cause.
        finished: False for a progress snapshot taken while the run goes on.
        interrupted: the run was ended early by Ctrl-C (``KeyboardInterrupt``).
    """

    config: dict[str, Any]
    connections: ConnectionCounts = field(default_factory=ConnectionCounts)
    requests: int = 0
    responses: int = 0
    status: dict[int, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    duration_s: float = 0.0
    bytes_received: int = 0
    timeouts_connect: int = 0
    timeouts_response: int = 0
    not_sent: int = 0
    nofile: tuple[int, int] | None = None
    nofile_raised_from: int | None = None
    listen_overflows: dict[str, int] | None = None
    tls_errors: dict[str, int] = field(default_factory=dict)
    diagnosis: list[str] = field(default_factory=list)
    finished: bool = True
    interrupted: bool = False

    unit: ClassVar[str] = "responses"
    """What ``responses`` counts, for progress lines."""

    def copy(self) -> BenchResult:
        """An independent copy marked unfinished: a progress snapshot."""
        c = self.connections
        counts = ConnectionCounts(
            c.attempted, c.established, c.refused, c.reset, c.timed_out, dict(c.errors)
        )
        return replace(
            self,
            config=dict(self.config),
            connections=counts,
            status=dict(self.status),
            latency=self.latency.copy(),
            tls_errors=dict(self.tls_errors),
            diagnosis=list(self.diagnosis),
            finished=False,
        )

    @property
    def throughput_rps(self) -> float:
        """Responses per second over the run."""
        return self.responses / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when responses came back and no connection was refused, reset, timed
        out or failed otherwise. Status codes do not count: a 500 is an answer."""
        c = self.connections
        return (
            self.responses > 0
            and not (c.refused or c.reset or c.timed_out or c.errors)
            and not self.not_sent
        )

    def latency_ms(self) -> dict[str, float]:
        h = self.latency
        return {
            "p50": round(h.percentile_ms(50), 3),
            "p90": round(h.percentile_ms(90), 3),
            "p99": round(h.percentile_ms(99), 3),
            "max": round(h.max_s * 1000.0, 3),
            "mean": round(h.mean_ms(), 3),
        }

    def to_json(self) -> dict[str, Any]:
        """Stable keys: connections, requests, responses, status, latency_ms,
        throughput_rps, duration_s, bytes_received, diagnosis, config; plus timeouts,
        not_sent, client, listen_overflows, tls_errors, interrupted, ok."""
        soft, hard = self.nofile if self.nofile is not None else (None, None)
        return {
            "connections": self.connections.to_json(),
            "requests": self.requests,
            "responses": self.responses,
            "status": {str(code): n for code, n in sorted(self.status.items())},
            "latency_ms": self.latency_ms(),
            "throughput_rps": round(self.throughput_rps, 1),
            "duration_s": round(self.duration_s, 3),
            "bytes_received": self.bytes_received,
            "diagnosis": list(self.diagnosis),
            "config": dict(self.config),
            "timeouts": {"connect": self.timeouts_connect, "response": self.timeouts_response},
            "not_sent": self.not_sent,
            "client": {
                "nofile_soft": soft,
                "nofile_hard": hard,
                "nofile_raised_from": self.nofile_raised_from,
            },
            "listen_overflows": self.listen_overflows,
            "tls_errors": dict(sorted(self.tls_errors.items())),
            "interrupted": self.interrupted,
            "ok": self.ok,
        }

    def to_text(self) -> str:
        """A human report: connections, requests, statuses, latency, and the diagnosis."""
        cfg = self.config
        mode = "keep-alive" if cfg.get("keepalive", True) else "close (one connection per request)"
        loop = f"open loop at {cfg['rate']:g} req/s" if cfg.get("rate") else "closed loop"
        codes = "  ".join(f"{code}: {n}" for code, n in sorted(self.status.items())) or "none"
        lines = self._head_lines(f"{cfg.get('method', 'GET')} {cfg.get('url', '?')}",
                                 f"{mode}, {loop}")
        lines += [
            f"requests     sent {self.requests}  responses {self.responses}"
            + (f"  not sent (behind the rate) {self.not_sent}" if self.not_sent else ""),
            f"status       {codes}",
        ]
        return self._tail_text(lines)

    def _head_lines(self, target: str, mode: str) -> list[str]:
        """The report's title, the run's shape, and what happened to connections."""
        c = self.connections
        lines = [
            f"reactor bench {target}",
            f"  {self.config.get('connections', '?')} connections, {mode}, "
            f"{self.duration_s:.2f} s"
            + ("" if self.finished else " (running)")
            + (" (interrupted)" if self.interrupted else ""),
            "",
            f"connections  attempted {c.attempted}  established {c.established}  "
            f"refused {c.refused}  reset {c.reset}  timed out {c.timed_out} "
            f"(connect {self.timeouts_connect}, response {self.timeouts_response})",
        ]
        if c.errors:
            lines.append(f"  other errors: {listed(c.errors)}")
        return lines

    def _tail_text(self, lines: list[str]) -> str:
        """``lines``, then latency, throughput, the client's limits, the diagnosis and
        the verdict, as one text."""
        lat = self.latency_ms()
        lines += [
            f"latency ms   p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
            f"max {lat['max']:.3f}  mean {lat['mean']:.3f}",
            f"throughput   {self.throughput_rps:,.1f} {self.unit}/s, "
            f"{self.bytes_received / max(self.duration_s, 1e-9) / 1e6:.2f} MB/s "
            f"({self.bytes_received} bytes)",
        ]
        if self.nofile is not None:
            raised = (
                f" (raised from {self.nofile_raised_from})"
                if self.nofile_raised_from is not None
                else ""
            )
            lines.append(
                f"client       ulimit -n soft {self.nofile[0]}{raised}, hard {self.nofile[1]}"
            )
        if self.diagnosis:
            lines += ["", "diagnosis:"] + [f"  - {sentence}" for sentence in self.diagnosis]
        lines.append("")
        lines.append("result: " + ("ok" if self.ok else "FAILED (see the counts above)"))
        return "\n".join(lines) + "\n"


def listed(counts: dict[str, int], sep: str = " ") -> str:
    """``{"a": 1, "b": 2}`` as ``a 1, b 2`` (sorted; ``sep`` between name and count)."""
    return ", ".join(f"{what}{sep}{n}" for what, n in sorted(counts.items()))


@dataclass
class WsBenchResult(BenchResult):
    """The outcome of a ``ws://`` run: ``requests`` are messages sent, ``responses``
    their echoes, ``latency`` send to echo, ``status`` the upgrade responses' codes.

    Attributes:
        handshakes_ok: upgrades answered ``101`` with the right ``Sec-WebSocket-Accept``.
        handshake_errors: failed handshakes by reason (``HTTP 403``, ``bad
            Sec-WebSocket-Accept``, ``reset``, ``timed_out``, ...); a rejection or a bad
            answer also counts as ``connections.errors["handshake"]``.
        protocol_errors: connections failed on a broken RFC 6455 rule or a wrong echo,
            by what (``masked frame from the server``, ``echo mismatch``, ...); each
            also counts as ``connections.errors["protocol"]``.
        close_codes: the close codes the server sent (``"1000"``: n), mid-run or in
            answer to ours at the end; ``"1006"`` counts connections the server closed
            without a close frame after ours, ``"timeout"`` those that did not answer
            within the timeout.
    """

    handshakes_ok: int = 0
    handshake_errors: dict[str, int] = field(default_factory=dict)
    protocol_errors: dict[str, int] = field(default_factory=dict)
    close_codes: dict[str, int] = field(default_factory=dict)

    unit: ClassVar[str] = "messages"

    def copy(self) -> WsBenchResult:
        snap = super().copy()
        assert isinstance(snap, WsBenchResult)
        snap.handshake_errors = dict(self.handshake_errors)
        snap.protocol_errors = dict(self.protocol_errors)
        snap.close_codes = dict(self.close_codes)
        return snap

    @property
    def handshakes_failed(self) -> int:
        return sum(self.handshake_errors.values())

    @property
    def ok(self) -> bool:
        """Echoes came back, no connection failed, and every close was a 1000."""
        return super().ok and set(self.close_codes) <= {"1000"}

    def to_json(self) -> dict[str, Any]:
        """The HTTP keys less ``requests``, ``responses``, ``status``,
        ``throughput_rps`` and ``not_sent``; plus ``messages`` (sent, echoed),
        ``messages_per_s``, ``handshakes`` (ok, failed, status, errors), ``close_codes``
        and ``protocol_errors``."""
        data = super().to_json()
        for key in ("requests", "responses", "status", "throughput_rps", "not_sent"):
            del data[key]
        data.update({
            "messages": {"sent": self.requests, "echoed": self.responses},
            "messages_per_s": round(self.throughput_rps, 1),
            "handshakes": {
                "ok": self.handshakes_ok,
                "failed": self.handshakes_failed,
                "status": {str(code): n for code, n in sorted(self.status.items())},
                "errors": dict(sorted(self.handshake_errors.items())),
            },
            "close_codes": dict(sorted(self.close_codes.items())),
            "protocol_errors": dict(sorted(self.protocol_errors.items())),
        })
        return data

    def to_text(self) -> str:
        """A human report: connections, handshakes, messages, close codes, latency."""
        cfg = self.config
        kind = "text" if cfg.get("text") else "binary"
        lines = self._head_lines(
            str(cfg.get("url", "?")),
            f"{kind} messages of {cfg.get('message_size', '?')} bytes, one in flight each")
        failed = f" ({listed(self.handshake_errors, ': ')})" if self.handshake_errors else ""
        codes = "  ".join(f"{code}: {n}" for code, n in sorted(self.close_codes.items()))
        lines += [
            f"handshakes   ok {self.handshakes_ok}  failed {self.handshakes_failed}{failed}",
            f"messages     sent {self.requests}  echoed {self.responses}",
            f"close codes  {codes or 'none'}",
        ]
        if self.protocol_errors:
            lines.append(f"  protocol errors: {listed(self.protocol_errors, ': ')}")
        return self._tail_text(lines)
