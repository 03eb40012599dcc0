"""reactor: a port of Rust's mio core to Python.

``Poll`` waits for readiness, a ``Registry`` says what to wait for, ``Events`` holds
what one poll found, a ``Waker`` interrupts a poll from another thread, and
``reactor.net`` has the non-blocking sockets. Every backend is edge triggered: after an
event, drain until ``BlockingIOError`` (see ``reactor.poll``).

No threads, no queues, no HTTP live here.
"""

from reactor import net
from reactor.event import Event, Events
from reactor.interest import Interest
from reactor.poll import Poll, Registry, Waker
from reactor.sys import BACKEND_NAME, available_backends
from reactor.token import Token

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
