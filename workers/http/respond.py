"""Writing a WSGI response: checking what the application returned, framing, pulling.

``Responder`` is the response half of ``HttpHandler`` (``handler.py``), kept apart so
that the request path reads top to bottom in files of one sitting: ``handler.py``
takes bytes to a complete request (the express lane inline, else ``HttpProtocol``) and
calls the application; this module turns its result into bytes on the connection.
The body is pulled lazily: while the connection's write buffer is above its
high-water mark pulling stops, and ``resume_writing`` goes on (``_pump``).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from time import monotonic
from typing import Any

from ..core.handler import Connection, WorkerContext
from ..ops.metrics import BUCKETS, DURATION_BOUNDS
from .accesslog import AccessLog
from .body import EMPTY_BODY
from .errors import HTTPError, InternalServerError
from .protocol import Request
from .response import CHUNKED_END, ResponseEncoder
from .state import (
    _BODY_INDEX,
    _CODES,
    _NO_ITERATOR,
    CHUNKED,
    CLOSED,
    IDLE,
    LENGTH,
    NO_BODY,
    RESPONDING,
    _Response,
    _State,
    frame_body,
    framing,
)
from .wsgi import AppError, FileWrapper, StartResponse

__all__ = ["Responder"]

log = logging.getLogger("mioreactor.http")


class Responder:
    """The response methods of ``HttpHandler``; what they need of it is declared here."""

    worker: WorkerContext
    encoder: ResponseEncoder
    access: AccessLog | None
    response_counts: list[int]
    response_seconds: float

    # Defined by HttpHandler (the request side); declared for the type checker.
    def _process(self, conn: Connection, st: _State) -> None:
        raise NotImplementedError

    def _fail(self, conn: Connection, st: _State, error: HTTPError) -> None:
        raise NotImplementedError

    def _close(self, conn: Connection, st: _State) -> None:
        raise NotImplementedError

    @staticmethod
    def _disarm(st: _State) -> None:
        raise NotImplementedError

    def _respond(
        self,
        conn: Connection,
        st: _State,
        request: Request,
        environ: dict[str, Any],
        start: StartResponse,
        result: Iterable[bytes],
    ) -> None:
        """The application returned ``result``: check it and start the response."""
        chunks: list[bytes] = []
        first = b""
        exhausted = True  # every body byte is in ``chunks``: the length is known
        iterator: Iterator[bytes] = _NO_ITERATOR
        try:
            if type(result) is list:
                chunks = result  # read, never changed (a new list if anything is added)
            elif type(result) is tuple:
                chunks = list(result)
            elif isinstance(result, FileWrapper):
                iterator = iter(result)
                exhausted = False
            else:
                # PEP 3333: the head waits for the first non-empty chunk.
                with self.worker.blocking():
                    iterator = iter(result)
                    for first in iterator:
                        if first:
                            exhausted = False
                            break
            if not start.status:
                raise AppError("the application did not call start_response")
            for item in chunks:
                if type(item) is not bytes:
                    raise AppError(f"response body item is {type(item).__name__}, not bytes")
            if type(first) is not bytes:
                raise AppError(f"response body item is {type(first).__name__}, not bytes")
        except Exception as exc:
            self._close_result(result)
            self._app_error(conn, st, exc, environ)
            return
        if start.written:
            chunks = start.written + chunks
        if first:
            chunks.append(first)
        status = start.status
        code = _CODES.get(status)
        if code is None:
            code = int(status[:3])
            if len(_CODES) < 256:
                _CODES[status] = code
                if code >= 200 and code != 204 and code != 304:
                    _BODY_INDEX[status] = code // 100 * BUCKETS
        resp = _Response(result, iterator, code)
        st.response = resp
        self._send_head(conn, st, request, start, resp, chunks, exhausted)

    def _send_head(
        self,
        conn: Connection,
        st: _State,
        request: Request,
        start: StartResponse,
        resp: _Response,
        chunks: list[bytes],
        exhausted: bool,
    ) -> None:
        """Choose the framing, write the head with the body at hand, go on pulling.

        Framing: the application's ``Content-Length`` if it set one; else the summed
        length when the whole body is already known (a list, or an iterator that
        ended); else the file size for a ``wsgi.file_wrapper`` over a real file; else
        chunked on HTTP/1.1 and close-delimited on HTTP/1.0. HEAD, 204 and 304 carry
        no body (the iterable is closed unread).
        """
        status = resp.status
        # After the client's EOF, requests it completed before are still answered:
        # close only after the last of them.
        keep_alive = (
            request.keep_alive
            and not start.close
            and not st.draining
            and not (st.eof and not st.events and not st.backlog)
        )
        result = resp.result
        length = start.content_length
        no_body = request.method == "HEAD" or status == 204 or status == 304
        if not no_body and length is None:
            if exhausted:
                length = sum(map(len, chunks))
            elif isinstance(result, FileWrapper):
                length = self._file_length(result)
        resp.mode, extra, keep_alive = framing(no_body, status, length, request.version,
                                               keep_alive)
        if resp.mode == LENGTH:
            resp.remaining = length  # type: ignore[assignment]
        resp.close = not keep_alive
        start.headers_sent = True
        head = self.encoder.head(start.status, start.headers, extra)
        if resp.mode == NO_BODY:
            conn.write(head)
            self._finish(conn, st)
            return
        if (
            isinstance(result, FileWrapper)
            and not chunks
            and resp.mode == LENGTH
            and self._sendfile(conn, resp, head, result)
        ):
            self._finish(conn, st)
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not data:
            conn.write(head)
        elif resp.mode == LENGTH and len(data) <= resp.remaining:  # frame_body, inline
            resp.remaining -= len(data)
            resp.sent = len(data)
            conn.write(head + data)
        else:
            conn.write(head + frame_body(resp, data, log, "application"))
        if exhausted:
            self._finish(conn, st)
        else:
            self._pump(conn, st)

    @staticmethod
    def _file_length(wrapper: FileWrapper) -> int | None:
        """Bytes a file wrapper would send from its position, if it is a real file."""
        f = wrapper.filelike
        try:
            fd = f.fileno()
            pos = f.tell()
            size = os.fstat(fd).st_size
        except (AttributeError, OSError, ValueError):
            return None
        return max(size - pos, 0)

    def _sendfile(self, conn: Connection, resp: _Response, head: bytes, wrapper: FileWrapper) -> bool:
        """Send the head, then the file with ``conn.sendfile``; False if it has no fd."""
        f = wrapper.filelike
        try:
            offset = f.tell()
            f.fileno()
        except (AttributeError, OSError, ValueError):
            return False
        conn.write(head)
        if resp.remaining:
            conn.sendfile(f, offset, resp.remaining)
        resp.sent = resp.remaining
        resp.remaining = 0
        return True

    def _pump(self, conn: Connection, st: _State) -> None:
        """Pull the body iterator while the connection takes more; finish at its end."""
        resp = st.response
        if resp is None:
            return
        write = conn.write
        nxt = resp.iterator.__next__
        try:
            with self.worker.blocking():
                while not st.write_paused:
                    try:
                        data = nxt()
                    except StopIteration:
                        break
                    if type(data) is not bytes:
                        raise AppError(f"response body item is {type(data).__name__}, not bytes")
                    if data:
                        write(frame_body(resp, data, log, "application"))
                        if st.phase != RESPONDING:
                            return  # the connection went away under us
                else:
                    return  # paused: resume_writing continues
        except Exception:
            log.exception("application failed while streaming its response")
            st.response = None
            self._close_result(resp.result)
            st.phase = CLOSED
            self._disarm(st)
            conn.abort()
            return
        self._finish(conn, st)

    def _finish(self, conn: Connection, st: _State) -> None:
        """The body is fully handed over: frame its end, log, go on or close."""
        resp = st.response
        request = st.request
        if resp is None or request is None:
            return  # the connection was lost while the head and body were written
        st.response = None
        if resp.mode == CHUNKED:
            conn.write(CHUNKED_END)
        elif resp.mode == LENGTH and resp.remaining:
            log.warning("application sent %d bytes less than its Content-Length", resp.remaining)
            resp.close = True
        if type(resp.result) is not list:
            self._close_result(resp.result)
        elapsed = monotonic() - st.started
        self.response_counts[resp.status // 100 * BUCKETS + bisect_left(DURATION_BOUNDS, elapsed)] += 1
        self.response_seconds += elapsed
        if self.access is not None:
            self.access.log(st.base["REMOTE_ADDR"], request, resp.status, resp.sent, st.started)
        if st.body is not EMPTY_BODY:
            st.body.close()
            st.body = EMPTY_BODY
        st.request = None
        if st.phase != RESPONDING:
            return
        if resp.close:
            self._close(conn, st)
            return
        st.phase = IDLE
        if not st.looping:  # else the loop in _process goes on with the next event
            self._process(conn, st)

    def _app_error(self, conn: Connection, st: _State, exc: Exception, environ: dict[str, Any]) -> None:
        log.error(
            "error in WSGI application for %s %s",
            environ.get("REQUEST_METHOD"),
            environ.get("RAW_URI"),
            exc_info=exc,
        )
        st.response = None
        self._fail(conn, st, InternalServerError(str(exc)))

    def _close_result(self, result: Iterable[bytes]) -> None:
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            with self.worker.blocking():
                close()
        except Exception:
            log.exception("error closing the WSGI response iterable")
