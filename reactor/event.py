"""Events and Event: what one call to ``Poll.poll`` reports (mio ``event/``).

Readiness is a *hint*, never a promise (mio "Spurious events"): an event may say
readable and the read may still raise ``BlockingIOError``; every handler must accept
an event with nothing to do. And because every backend is edge triggered, an event is
reported once per change of readiness: the receiver must drain (read, write, accept
until ``BlockingIOError``) before it can expect another (mio "Draining readiness").

Hot path: the backends append ``(token, bits)`` tuples to ``Events.raw``; code that
must be fast iterates that list and tests the bit constants below. ``Event`` objects
are made only when iterating ``Events`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "ERROR",
    "PRIORITY",
    "READABLE",
    "READ_CLOSED",
    "WRITABLE",
    "WRITE_CLOSED",
    "Event",
    "Events",
]

READABLE = 0x01
WRITABLE = 0x02
ERROR = 0x04
READ_CLOSED = 0x08
WRITE_CLOSED = 0x10
PRIORITY = 0x20


class Event:
    """One readiness event: a token and portable readiness bits.

    ``is_read_closed``: the peer will send nothing more (FIN, or hang-up). On the
    portable fallback this is only learned by reading end-of-file.
    ``is_write_closed``: writing will fail (peer gone, or local shutdown).
    """

    __slots__ = ("bits", "token")

    def __init__(self, token: int, bits: int) -> None:
        self.token = token
        self.bits = bits

    @property
    def is_readable(self) -> bool:
        return bool(self.bits & READABLE)

    @property
    def is_writable(self) -> bool:
        return bool(self.bits & WRITABLE)

    @property
    def is_error(self) -> bool:
        return bool(self.bits & ERROR)

    @property
    def is_read_closed(self) -> bool:
        return bool(self.bits & READ_CLOSED)

    @property
    def is_write_closed(self) -> bool:
        return bool(self.bits & WRITE_CLOSED)

    @property
    def is_priority(self) -> bool:
        return bool(self.bits & PRIORITY)

    def __repr__(self) -> str:
        flags = [
            name
            for name, bit in (
                ("readable", READABLE),
                ("writable", WRITABLE),
                ("error", ERROR),
                ("read_closed", READ_CLOSED),
                ("write_closed", WRITE_CLOSED),
                ("priority", PRIORITY),
            )
            if self.bits & bit
        ]
        return f"Event(token={self.token}, {'|'.join(flags) or 'none'})"


class Events:
    """A reusable buffer of events with a fixed capacity (mio ``Events::with_capacity``).

    ``Poll.poll`` clears it and fills it with at most ``capacity`` events; readiness
    beyond that is reported by a later poll.

    Args:
        capacity: the most events one poll may return (at least 1).

    Raises:
        ValueError: for a capacity below 1.
    """

    __slots__ = ("capacity", "raw")

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"Events capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.raw: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[Event]:
        for token, bits in self.raw:
            yield Event(token, bits)

    def __len__(self) -> int:
        return len(self.raw)

    def is_empty(self) -> bool:
        return not self.raw

    def clear(self) -> None:
        self.raw.clear()

    def __repr__(self) -> str:
        return f"Events(capacity={self.capacity}, {list(self)!r})"
