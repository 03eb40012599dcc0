"""reactor: a port of Rust's mio core to Python.

``Poll`` waits for readiness, a ``Registry`` says what to wait for, ``Events`` holds
what one poll found, a ``Waker`` interrupts a poll from another thread, and
``mioreactor.reactor.net`` has the non-blocking sockets. Every backend is edge triggered: after an
event, drain until ``BlockingIOError`` (see ``mioreactor.reactor.poll``).

No threads, no queues, no HTTP live here.
"""

from . import net
from .event import Event, Events
from .interest import Interest
from .poll import Poll, Registry, Waker
from .sys import BACKEND_NAME, available_backends
from .token import Token

__all__ = [
    "BACKEND_NAME",
    "Event",
    "Events",
    "Interest",
    "Poll",
    "Registry",
    "Token",
    "Waker",
    "available_backends",
    "backend_name",
    "net",
]


def backend_name() -> str:
    """The backend a ``Poll()`` gets here: ``epoll``, ``kqueue`` or ``fallback``."""
    return BACKEND_NAME
