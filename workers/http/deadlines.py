"""An HTTP connection's deadlines: the phase timer, the send timer, and what expiry does.

The phase timer is the connection's own deadline (``Conn.rearm``, re-armed per
request without allocating): ``header_timeout`` while a head arrives,
``keepalive_timeout`` between requests, ``body_timeout`` of no body progress. The
send timer has a slot of its own and runs in any phase while the write buffer is above
its high-water mark (``send_timeout`` without progress aborts: nginx's rule). The
phases are in ``handler.py``'s module docstring.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from ..core.handler import Connection
from .errors import HTTPError, RequestTimeout
from .limits import HttpConfig
from .state import CLOSED, T_BODY, T_HEADER, T_SEND, _in_head, _State

__all__ = ["Deadlines", "fire_phase"]

log = logging.getLogger("mioreactor.http")


class Deadlines:
    """The timer methods of ``HttpHandler``; what they need of it is declared here."""

    config: HttpConfig

    # Defined by HttpHandler; declared for the type checker.
    def _fail(self, conn: Connection, st: _State, error: HTTPError) -> None:
        raise NotImplementedError

    def _close(self, conn: Connection, st: _State) -> None:
        raise NotImplementedError


    def _arm(self, conn: Connection, st: _State, kind: int, delay: float) -> None:
        # The phase timer (head, body, keep-alive) is the connection's own deadline:
        # re-armed on every request without allocating (mioreactor.workers.core.timers.Deadline).
        st.timer_kind = kind
        st.timer = conn.rearm(delay, fire_phase)

    def _arm_send(self, conn: Connection, st: _State) -> None:
        if st.send_timer is not None:
            st.send_timer.cancel()
        st.send_mark = conn.write_buffer_size
        st.send_timer = conn.call_later(self.config.send_timeout, partial(_fire_timer, conn, T_SEND))

    def _on_send_timer(self, conn: Connection, st: _State) -> None:
        """No write progress for ``send_timeout``: abort, in whatever phase."""
        st.send_timer = None
        if not st.write_paused:
            return
        size = conn.write_buffer_size
        if 0 < size < st.send_mark:  # the client reads, slowly: wait another period
            self._arm_send(conn, st)
            return
        log.info("%r: client stopped reading; aborting", conn.peer)
        st.phase = CLOSED
        self._disarm(st)
        conn.abort()

    @staticmethod
    def _disarm(st: _State) -> None:
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        st.timer_kind = -1

    def on_timer(self, conn: Connection, kind: int) -> None:
        """A connection timer fired (called through ``conn.handler``)."""
        if kind == T_SEND:
            self._on_send_timer(conn, conn.context)
            return
        self._on_timer(conn, kind)

    def _on_timer(self, conn: Connection, kind: int) -> None:
        st: _State = conn.context
        if st.timer_kind != kind or st.phase == CLOSED:
            return
        st.timer = None
        st.timer_kind = -1
        if kind == T_BODY:
            idle = time.monotonic() - st.last_rx
            if idle < self.config.body_timeout:  # progress since armed: wait the rest
                st.timer_kind = T_BODY
                st.timer = conn.rearm(self.config.body_timeout - idle, fire_phase)
                return
            self._fail(conn, st, RequestTimeout("request body stalled"))
        elif kind == T_HEADER and _in_head(st):
            self._fail(conn, st, RequestTimeout("request head incomplete"))
        else:
            self._close(conn, st)


def fire_phase(conn: Connection) -> None:
    """The connection's phase deadline fell due: run it for the phase armed last."""
    st = conn.context
    kind = st.timer_kind
    if kind >= 0:
        _fire_timer(conn, kind)


def _fire_timer(conn: Connection, kind: int) -> None:
    """Run a timer on the handler of whichever worker serves ``conn`` now.

    The worker that fires a timer sets ``conn.handler`` to its own handler first, so
    a handler instance is only ever used by its own thread.
    """
    handler = conn.handler
    assert isinstance(handler, Deadlines)
    handler.on_timer(conn, kind)
