"""The load generator's event loop: one thread, one ``Poll``, N connection slots.

Each slot carries at most one request at a time (no pipelining). In closed loop a slot
takes its next request the moment a response completes; in open loop (``rate``) a
dispatcher hands requests to free slots when they come due, and a request's latency
counts from its due time, so a slow server cannot hide its queueing (coordinated
omission).

Edge triggered, like every reader of ``reactor``: each readable event drains ``recv``
until ``BlockingIOError`` (see ``mioreactor.reactor.poll``, "Draining readiness"); a socket is
registered once for READABLE|WRITABLE and never re-registered, so spurious writable
events are expected and ignored. Every handler below accepts an event with nothing to do.

Hot path, written for speed (style #16): events are read as ``(token, bits)`` tuples
from ``Events.raw``; bound methods (``recv``, ``send``, ``feed_data``) are stored on
the slot; each request is one pre-built ``bytes`` sent with one ``send``; latencies
are appended to an ``array('d')`` and folded into the histogram on the periodic tick.
"""

from __future__ import annotations

import errno
import math
import ssl
from array import array
from collections import deque
from collections.abc import Callable
from time import perf_counter

from httptools import HttpParserError

from ....reactor import Events, Interest, Poll
from ....reactor.event import ERROR, READ_CLOSED, READABLE, WRITABLE
from ....reactor.net import TcpStream
from .config import BenchConfig, Target
from .result import BenchResult, LatencyHistogram
from .slot import BUSY, CONNECTING, HANDSHAKING, NOCONN, READY, WAIT, Slot
from .tls import TlsClient, client_context

__all__ = ["Engine", "ProgressCallback"]

ProgressCallback = Callable[[float, BenchResult], None]

PROGRESS_EVERY = 0.5
"""Seconds between progress callbacks."""

RECV_SIZE = 65536
BACKOFF_FIRST = 0.001
BACKOFF_MAX = 1.0
"""A slot whose connect failed waits BACKOFF_FIRST * 2**(failures-1) s, at most BACKOFF_MAX,
before its next attempt: a dead port is reported, not hammered."""

_READ_BITS = READABLE | READ_CLOSED | ERROR
_RW = Interest.READABLE | Interest.WRITABLE


class Engine:
    """Runs one bench: ``Engine(config, target, progress).run()`` -> ``BenchResult``.

    Not reusable and not thread-safe: one engine, one run, on the calling thread.
    """

    def __init__(
        self, config: BenchConfig, target: Target, progress: ProgressCallback | None = None
    ) -> None:
        self.config = config
        self.target = target
        self.progress = progress
        self.poll = Poll()
        self.registry = self.poll.registry
        self.request = target.request
        self.keepalive = config.keepalive
        self.timeout = config.timeout
        self.rate = config.rate
        self.budget = config.requests if config.requests is not None else -1
        self.slots = [self._new_slot(i) for i in range(config.connections)]
        self.conns: dict[int, Slot] = {}
        self.free: deque[Slot] = deque()
        self.next_token = 1
        self.taken = 0
        self.inflight = 0
        self.t0 = 0.0
        self.samples: array[float] = array("d")
        self.hist = LatencyHistogram()
        self.result = BenchResult(config.to_json())
        self.status: dict[int, int] = self.result.status
        self.bytes_received = 0
        self.requests_sent = 0
        self.responses = 0
        self.tls_context = (
            client_context(insecure=config.insecure, cacert=config.cacert) if target.tls else None
        )

    def _new_slot(self, index: int) -> Slot:
        """Slot ``index`` of the run (a subclass's engine makes its own kind)."""
        return Slot(index, self.target.head)

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> BenchResult:
        """Run until the duration ends or every request is done; then close everything.

        A ``KeyboardInterrupt`` (Ctrl-C) ends the run early: the partial result is
        returned with ``interrupted`` set, as siege does, rather than lost.

        Returns:
            The result without a diagnosis (``run_bench`` adds it).
        """
        now = self.t0 = perf_counter()
        end = now + self.config.time_limit
        open_loop = self.rate is not None
        try:
            if open_loop and self.keepalive:
                for slot in self.slots:
                    self._open(slot, now, with_request=False)
            elif open_loop:
                self.free.extend(self.slots)
            else:
                for slot in self.slots:
                    if self._take():
                        self._open(slot, now, with_request=True)
            self._loop(end)
            self._wind_down()
        except KeyboardInterrupt:
            self.result.interrupted = True  # Ctrl-C ends the run; its numbers still count
        finally:
            now = perf_counter()
            for slot in self.slots:
                if slot.stream is not None:
                    self._close(slot)
            self.poll.close()
        if open_loop and self.rate is not None:
            # requests due strictly before the end (less a hair of float error)
            due = math.ceil((min(now, end) - self.t0) * self.rate - 1e-6)
            if self.budget >= 0:
                due = min(due, self.budget)
            self.result.not_sent = max(0, due - self.taken)
        return self.snapshot(now, finished=True)

    def _finished(self) -> bool:
        """The loop may end before its deadline: every request of the budget is done."""
        return 0 <= self.budget <= self.taken and not self.inflight

    def _wind_down(self) -> None:
        """Called once when the run ends normally, before every connection is closed:
        HTTP has nothing to say first (the WebSocket engine sends its closes here)."""

    def _loop(self, end: float) -> None:
        """Poll and dispatch events until ``end`` or ``_finished()``."""
        now = perf_counter()
        tick_every = min(0.1, max(0.01, self.timeout / 4))
        next_tick = now + tick_every
        next_progress = now + PROGRESS_EVERY
        events = Events(1024)
        raw = events.raw
        poll = self.poll.poll
        conns_get = self.conns.get
        on_read, on_write, on_connect = self._on_read, self._flush, self._on_connect
        open_loop = self.rate is not None
        while True:
            if now >= end or self._finished():
                break
            wait = min(next_tick, end) - now
            if open_loop:
                wait = min(wait, self._dispatch(now))
            poll(events, wait if wait > 0 else 0)
            for token, bits in raw:
                s = conns_get(token)
                if s is None:
                    continue  # a connection closed earlier in this batch
                state = s.state
                if state == BUSY:
                    if bits & WRITABLE and s.pending is not None:
                        on_write(s)
                    if bits & _READ_BITS and s.state == BUSY:
                        on_read(s)
                elif state == CONNECTING:
                    on_connect(s)
                elif state == HANDSHAKING:
                    self._handshake(s)
                elif state == READY:
                    self._on_idle_event(s)
            now = perf_counter()
            if now >= next_tick:
                next_tick = now + tick_every
                self._tick(now)
                if now >= next_progress and self.progress is not None:
                    next_progress = now + PROGRESS_EVERY
                    self.progress(now - self.t0, self.snapshot(now, finished=False))

    def snapshot(self, now: float, *, finished: bool) -> BenchResult:
        """Fold pending latency samples and return the result as of ``now``.

        A progress snapshot (``finished=False``) is an independent copy.
        """
        if self.samples:
            self.hist.add_many(self.samples)
            del self.samples[:]
        r = self.result
        r.requests, r.responses = self.requests_sent, self.responses
        r.bytes_received = self.bytes_received
        r.duration_s = now - self.t0
        r.latency = self.hist
        return r if finished else r.copy()

    # -- requests ---------------------------------------------------------------------
    def _take(self) -> bool:
        """Claim the next request of the budget; False when none is left."""
        if 0 <= self.budget <= self.taken:
            return False
        self.taken += 1
        self.inflight += 1
        return True

    def _dispatch(self, now: float) -> float:
        """Open loop: start the requests that are due on free slots.

        Returns:
            Seconds until the next request comes due (what the poll may wait).
        """
        rate = self.rate or 1.0
        due = int((now - self.t0) * rate) + 1
        if self.budget >= 0:
            due = min(due, self.budget)
        free = self.free
        while self.taken < due and free:
            slot = free.popleft()
            scheduled = self.t0 + self.taken / rate
            self.taken += 1
            self.inflight += 1
            if slot.stream is not None and slot.state == READY:
                self._send(slot, scheduled, now)
            else:
                self._open(slot, scheduled, with_request=True)
        if self.taken < due:
            return 0.1  # behind: a completion will free a slot; the tick re-checks
        return self.t0 + self.taken / rate - now

    def _send(self, slot: Slot, t_req: float, now: float) -> None:
        """Start a request on an established, idle connection: one ``send``."""
        slot.state = BUSY
        slot.has_req = True
        slot.t_req = t_req
        slot.deadline = now + self.timeout
        self.requests_sent += 1
        self._write(slot, self.request)

    def _write(self, slot: Slot, data: bytes) -> None:
        """Send ``data`` on a busy connection: one ``send``, the rest on writable events
        (after what an earlier short write left, if any)."""
        if slot.pending is not None:
            slot.pending = memoryview(bytes(slot.pending) + data)  # rare: queue behind it
            self._flush(slot)
            return
        try:
            n = slot.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(slot, exc)
            return
        if n < len(data):
            # a short write: keep writing until done or BlockingIOError (the drain rule;
            # only that re-arms writable on the fallback backend)
            slot.pending = memoryview(data)[n:]
            self._flush(slot)

    def _flush(self, slot: Slot) -> None:
        """Writable: send what is left of the request until done or would block."""
        pending = slot.pending
        while pending is not None:
            try:
                n = slot.send(pending)
            except BlockingIOError:
                break
            except OSError as exc:
                self._fail(slot, exc)
                return
            pending = pending[n:] if n < len(pending) else None
        slot.pending = pending

    def _on_read(self, slot: Slot) -> None:
        """Readable: drain ``recv`` until ``BlockingIOError``, feeding the parser."""
        eof = self._drain(slot, slot.take)
        if eof is None:
            return
        if slot.done:
            self._complete(slot, eof)
        elif eof:
            if slot.headers_done and slot.body_until_eof():
                slot.done = True  # a close-delimited body ends at end of stream
                self._complete(slot, eof)
            else:
                self._fail(slot, None, kind="eof")

    def _drain(self, slot: Slot, take: Callable[[bytes], None]) -> bool | None:
        """Read until ``BlockingIOError``, handing each read to ``take``.

        Returns:
            True at the end of the stream, False when drained, None when the connection
            failed (an ``OSError``, or ``take`` raised ``HttpParserError``: counted).
        """
        recv = slot.recv
        got = 0
        try:
            while True:
                try:
                    data = recv(RECV_SIZE)
                except BlockingIOError:
                    return False
                if not data:
                    return True
                got += len(data)
                take(data)
        except OSError as exc:
            self._fail(slot, exc)
        except HttpParserError:
            self._fail(slot, None, kind="bad_response")
        finally:
            self.bytes_received += got
        return None

    def _complete(self, slot: Slot, eof: bool) -> None:
        """A final response arrived: count it, then reuse, replace or idle the slot."""
        now = perf_counter()
        self.samples.append(now - slot.t_req)
        parser = slot.parser
        code = parser.get_status_code()
        status = self.status
        status[code] = status.get(code, 0) + 1
        self.responses += 1
        self.inflight -= 1
        keep = self.keepalive and not eof and slot.keep
        slot.has_req = False
        slot.reset_response()
        if keep:
            if self.rate is None:
                if self._take():
                    self._send(slot, now, now)
                    return
            else:
                self.free.append(slot)
            slot.state = READY
            slot.deadline = 0.0
            return
        self._close(slot)
        if self.rate is not None:
            self.free.append(slot)
        elif self._take():
            self._open(slot, now, with_request=True)

    def _on_idle_event(self, slot: Slot) -> None:
        """An idle keep-alive connection is readable: the server closed it (or sent
        something unasked, which is dropped with the connection)."""
        try:
            data = slot.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.bytes_received += len(data)
        self._close(slot)

    # -- connections ------------------------------------------------------------------
    def _open(self, slot: Slot, t_req: float, *, with_request: bool) -> None:
        """Start a non-blocking connect for ``slot`` (its request, if any, is taken)."""
        c = self.result.connections
        c.attempted += 1
        slot.has_req = with_request
        slot.t_req = t_req
        try:
            stream = TcpStream.connect(self.target.address)
        except OSError as exc:
            self._fail(slot, exc, connecting=True)
            return
        token = self.next_token
        self.next_token += 1
        try:
            self.registry.register(stream, token, _RW)
        except OSError as exc:
            stream.close()
            self._fail(slot, exc, connecting=True)
            return
        slot.attach(stream, token)
        slot.state = CONNECTING
        slot.deadline = perf_counter() + self.timeout
        self.conns[token] = slot

    def _on_connect(self, slot: Slot) -> None:
        """Any event while connecting: failed (SO_ERROR), done (has a peer), or spurious."""
        stream = slot.stream
        assert stream is not None
        err = stream.take_error()
        if err is None:
            try:
                stream.peer_addr()
            except OSError as exc:
                if exc.errno == errno.ENOTCONN:
                    return  # spurious: the connect is still in progress
                err = exc
        if err is not None:
            self._fail(slot, err, connecting=True)
            return
        self.result.connections.established += 1
        slot.fails = 0
        stream.set_nodelay(True)
        if self.tls_context is not None:
            slot.tls = TlsClient(stream, self.tls_context, self.target.host)
            slot.state = HANDSHAKING
            self._handshake(slot)
            return
        self._connected(slot)

    def _handshake(self, slot: Slot) -> None:
        """https://: advance the TLS handshake; once done, the slot goes on as connected
        with the TLS client's ``recv``/``send`` (which keep the drain rule)."""
        tls = slot.tls
        assert tls is not None
        try:
            tls.handshake()
        except BlockingIOError:
            return  # the next event continues it
        except ssl.SSLError as exc:
            self.result.tls_errors[exc.reason or type(exc).__name__] = (
                self.result.tls_errors.get(exc.reason or type(exc).__name__, 0) + 1)
            self._fail(slot, None, kind="tls", connecting=True)
            return
        except OSError as exc:
            self._fail(slot, exc, connecting=True)
            return
        slot.recv = tls.recv
        slot.send = tls.send
        self._connected(slot)

    def _connected(self, slot: Slot) -> None:
        """Ready for requests: send the slot's own, or wait for one (open loop)."""
        if slot.has_req:
            self._send(slot, slot.t_req, perf_counter())
        else:
            slot.state = READY
            slot.deadline = 0.0
            self.free.append(slot)

    def _close(self, slot: Slot) -> None:
        """Deregister, then close; the slot keeps no descriptor."""
        stream = slot.stream
        if stream is None:
            return
        self.conns.pop(slot.token, None)
        try:
            self.registry.deregister(stream)
        except (OSError, ValueError):
            pass  # never registered (failed register) or already gone
        stream.close()
        slot.detach()

    def _fail(
        self,
        slot: Slot,
        exc: OSError | None,
        *,
        kind: str | None = None,
        connecting: bool = False,
    ) -> None:
        """Count a failure by kind, close the connection, and move the slot on."""
        if self.result.connections.count_failure(exc, kind) == "timed_out":
            if connecting:
                self.result.timeouts_connect += 1
            else:
                self.result.timeouts_response += 1
        if slot.has_req:
            slot.has_req = False
            self.inflight -= 1
        self._close(slot)
        slot.reset_response()
        if connecting:
            slot.fails += 1
            slot.state = WAIT
            slot.deadline = perf_counter() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (slot.fails - 1))
            return
        if self.rate is not None:
            self.free.append(slot)
        elif self._take():
            self._open(slot, perf_counter(), with_request=True)

    def _tick(self, now: float) -> None:
        """Periodic: time out slow connects and responses, retry backed-off slots."""
        for slot in self.slots:
            deadline = slot.deadline
            if not deadline or now < deadline:
                continue
            state = slot.state
            if state == CONNECTING or state == HANDSHAKING:
                self._fail(slot, None, kind="timeout", connecting=True)
            elif state == BUSY:
                self._fail(slot, None, kind="timeout")
            elif state == WAIT:
                slot.state = NOCONN
                slot.deadline = 0.0
                if self.rate is not None:
                    self.free.append(slot)
                elif self._take():
                    self._open(slot, now, with_request=True)
