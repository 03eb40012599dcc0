"""Interest: which readiness a registration asks for (mio ``interest.rs``).

An interest is never empty: ``Interest(0)`` raises, and ``remove`` returns ``None``
when it would leave nothing, as mio's ``Interest::remove`` returns ``Option``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Interest"]

_READABLE = 0b01
_WRITABLE = 0b10
_ALL = _READABLE | _WRITABLE


class Interest:
    """A non-empty set of READABLE and WRITABLE.

    Combine with ``|`` or ``add``; test with ``is_readable``/``is_writable``.

    Raises:
        ValueError: on an empty or unknown bit set.
    """

    __slots__ = ("_bits",)

    READABLE: ClassVar[Interest]
    WRITABLE: ClassVar[Interest]

    def __init__(self, bits: int) -> None:
        if bits == 0:
            raise ValueError("an Interest cannot be empty")
        if bits & ~_ALL:
            raise ValueError(f"unknown Interest bits {bits:#x}")
        self._bits = bits

    @property
    def bits(self) -> int:
        """The raw bits: 1 readable, 2 writable."""
        return self._bits

    def add(self, other: Interest) -> Interest:
        """Return the union of both interests."""
        return Interest(self._bits | other._bits)

    def remove(self, other: Interest) -> Interest | None:
        """Return this interest without ``other``, or None if nothing would be left."""
        bits = self._bits & ~other._bits
        return Interest(bits) if bits else None

    @property
    def is_readable(self) -> bool:
        return bool(self._bits & _READABLE)

    @property
    def is_writable(self) -> bool:
        return bool(self._bits & _WRITABLE)

    def __or__(self, other: Interest) -> Interest:
        return self.add(other)

    def __contains__(self, other: Interest) -> bool:
        return self._bits & other._bits == other._bits

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Interest) and other._bits == self._bits

    def __hash__(self) -> int:
        return hash(self._bits)

    def __repr__(self) -> str:
        names = [n for n, b in (("READABLE", _READABLE), ("WRITABLE", _WRITABLE)) if self._bits & b]
        return "Interest." + " | Interest.".join(names)


Interest.READABLE = Interest(_READABLE)
Interest.WRITABLE = Interest(_WRITABLE)
