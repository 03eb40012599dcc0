"""In-memory stand-ins for the worker side of the handler protocol (no sockets)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from mioreactor.workers.core.handler import Handler


class FakeTimer:
    def __init__(self, owner: FakeWorker, delay: float, callback: Callable[[], None]) -> None:
        self.owner, self.delay, self.callback, self.cancelled = owner, delay, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeWorker:
    """A WorkerContext: records timers; ``blocking()`` counts its sections."""

    def __init__(self) -> None:
        self.index = 0
        self.name = "reactor-worker-0"
        self.timers: list[FakeTimer] = []
        self.blocking_sections = 0

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self, delay, callback)
        self.timers.append(timer)
        return timer

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        self.blocking_sections += 1
        yield

    def live_timers(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]


class FakeConnection:
    """A Connection whose output is a bytearray and whose buffer we control.

    ``buffer_limit``: when set, writes beyond it count as unsent (``write_buffer_size``)
    and trigger ``pause_writing``; ``drain()`` empties the buffer and resumes.
    """

    HIGH_WATER = 64 * 1024

    def __init__(self, handler: Handler, worker: FakeWorker, *, stall: bool = False) -> None:
        self.handler = handler
        self.worker = worker
        self.token = 1
        self.peer: Any = ("10.0.0.7", 50000)
        self.local: Any = ("127.0.0.1", 8000)
        self.context: Any = None
        self.out = bytearray()
        self.stall = stall  # True: written bytes stay "buffered" until drain()
        self.buffered = 0
        self.paused_writing = False
        self.reading_paused = False
        self.closed = False
        self.aborted = False
        self.lingered: tuple[float, int] | None = None
        self.lost = False
        self.files: list[tuple[Any, int, int | None]] = []

    # Connection protocol
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.out += data
        if self.stall:
            self.buffered += len(data)
            if self.buffered > self.HIGH_WATER and not self.paused_writing:
                self.paused_writing = True
                self.handler.pause_writing(self)  # type: ignore[arg-type]

    def writelines(self, chunks: list[bytes]) -> None:
        for c in chunks:
            self.write(c)

    def sendfile(self, file: Any, offset: int, count: int | None) -> None:
        self.files.append((file, offset, count))
        file.seek(offset)
        self.write(file.read() if count is None else file.read(count))

    @property
    def write_buffer_size(self) -> int:
        return self.buffered

    @property
    def closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._lose()

    def close_lingering(self, timeout: float, max_bytes: int) -> None:
        self.lingered = (timeout, max_bytes)
        self.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = self.aborted = True
            self._lose()

    def _lose(self) -> None:
        for t in self.worker.timers:
            t.cancel()
        self.lost = True
        self.handler.connection_lost(self, None)  # type: ignore[arg-type]

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        return self.worker.call_later(delay, callback)

    def rearm(
        self, delay: float, callback: Callable[[Any], None], now: float | None = None
    ) -> FakeTimer:
        """The connection's own timer: re-arming replaces the previous one."""
        old = getattr(self, "_deadline", None)
        if old is not None:
            old.cancel()
        self._deadline = self.worker.call_later(delay, lambda: callback(self))
        return self._deadline

    # test helpers
    def drain(self) -> None:
        self.buffered = 0
        if self.paused_writing:
            self.paused_writing = False
            self.handler.resume_writing(self)  # type: ignore[arg-type]

    def feed(self, data: bytes) -> None:
        if not self.closed:
            self.handler.data_received(self, data)  # type: ignore[arg-type]

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


def connect(handler: Handler, worker: FakeWorker, **kw: Any) -> FakeConnection:
    conn = FakeConnection(handler, worker, **kw)
    handler.connection_made(conn)  # type: ignore[arg-type]
    return conn


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split raw response bytes into (status, headers, body); strict framing checks."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete head: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        version, code, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            assert name and "\r" not in value and "\n" not in value
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value
        status = int(code)
        if status == 100:
            data = rest
            out.append((status, headers, b""))
            continue
        if status in (204, 304):
            body, data = b"", rest
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
            assert len(body) == n, "short body"
        elif headers.get("transfer-encoding") == "chunked":
            body_parts = []
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    assert rest[:2] == b"\r\n"
                    data = rest[2:]
                    break
                body_parts.append(rest[:size])
                assert rest[size : size + 2] == b"\r\n"
                rest = rest[size + 2 :]
            body = b"".join(body_parts)
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out
