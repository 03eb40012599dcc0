"""Token: the caller's name for a registered source (mio ``token.rs``).

A token is a plain ``int`` at run time. The registry never maps tokens to sources:
the caller owns that table, and picks tokens that it never reuses while an event for
the old owner may still be in flight.
"""

from __future__ import annotations

from typing import NewType

__all__ = ["Token"]

Token = NewType("Token", int)
