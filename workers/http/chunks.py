"""Chunk framing for ``HttpProtocol``: where each chunk-size line is, and where the body ends.

llhttp decodes chunked bodies, but it refuses one valid form: BWS after the ``;`` of a
chunk extension or around its ``=`` (RFC 9112 section 7.1.1:
``chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )``), and
it has no leniency flag for it; and it lets through some that break the grammar
(``5;=v``, ``5;a=``, ``5;;a``). ``ChunkFramer`` walks the body's framing alongside
llhttp: it passes chunk data through untouched, checks each chunk-size line that
carries extensions against the grammar (400 if it breaks it), and hands llhttp that
line as the bare size (``5 ; name = value`` becomes ``5``; extensions have no meaning
for us, and llhttp reports none). Every other line (a size line without ``;``, the
trailer fields) reaches llhttp byte for byte, so llhttp still decides the size, the
CRLFs and the trailer fields: this module accepts nothing llhttp would refuse, except
the BWS the RFC allows.

It also finds the end of the body (the empty line after the trailer section), so the
message ends at the end of a ``feed_data`` call (``HttpProtocol._feed``).

The size read here is ``int(line, 16)``; llhttp reads the same line (or, with
extensions, its digits alone) and refuses anything but hex digits and CRLF, so where
the two could differ (``0x5``, ``5_0``, `` 5``) the request ends with 400 anyway.
"""

from __future__ import annotations

import re

from .errors import BadRequest

__all__ = ["ChunkFramer"]

SIZE, DATA, TRAILER = 0, 1, 2

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"'
_EXT = rb"[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?"
#: chunk-size [ chunk-ext ] CRLF, with the RFC's BWS (RFC 9112 section 7.1.1).
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:" + _EXT + rb")+\r\n\Z").match


class ChunkFramer:
    """The framing state of one chunked body; see the module docstring.

    Args:
        line_limit: the longest size or trailer line held while it is incomplete;
            longer is 400 (the chunk-extension limit of RFC 9112 section 7.1.1).
    """

    __slots__ = ("_left", "_limit", "_line", "_state")

    def __init__(self, line_limit: int) -> None:
        self._limit = line_limit
        self._state = SIZE
        self._left = 0  # DATA: chunk bytes and CRLF still to pass
        self._line = bytearray()  # the start of a line not yet complete

    def reset(self) -> None:
        """A new chunked body begins."""
        self._state = SIZE
        self._left = 0
        self._line = bytearray()

    def frame(self, data: bytes, pos: int, size: int, out: list[bytes | memoryview]) -> tuple[int, bool]:
        """Split ``data[pos:size]`` into what llhttp is to be fed, in order.

        Untouched bytes go out as one memoryview span; only a rewritten size line, or
        a line that was incomplete at the end of the previous read (held back, then
        completed), breaks the span. A body without extensions is therefore fed to
        llhttp in one call per read, as before this module existed.

        Args:
            data: the bytes read.
            pos: where this body's bytes begin in ``data``.
            size: where they end at most.
            out: receives the pieces to feed.

        Returns:
            ``(end, done)``: the offset consumed up to, and whether the body ended
            there (the message ends at ``end``; the bytes after it are the next head).

        Raises:
            BadRequest: a chunk extension that breaks the grammar, or a size or
                trailer line longer than the line limit.
        """
        view = memoryview(data)
        state = self._state
        left = self._left
        start = pos  # the untouched span not yet handed out
        done = False
        while pos < size:
            if state == DATA:
                take = left if left < size - pos else size - pos
                pos += take
                left -= take
                if not left:
                    state = SIZE
                continue
            lf = data.find(10, pos, size)
            if lf < 0:  # an incomplete line: hold it back until its LF arrives
                if start < pos:
                    out.append(view[start:pos])
                self._line += data[pos:size]
                if len(self._line) > self._limit:
                    raise BadRequest("chunk-size or trailer line too long")
                start = pos = size
                break
            nxt = lf + 1
            held = self._line
            if held:
                line = bytes(held) + data[pos:nxt]
                self._line = bytearray()
                if len(line) > self._limit:
                    raise BadRequest("chunk-size or trailer line too long")
            if state == TRAILER:
                if (held and line == b"\r\n") or (not held and lf == pos + 1 and data[pos] == 13):
                    done = True
                if held:
                    if start < pos:
                        out.append(view[start:pos])
                    out.append(line)
                    start = nxt
                pos = nxt
                if done:
                    state = SIZE
                    break
                continue
            split = bool(held)  # a held-back or rewritten line breaks the span
            if not held:
                line = data[pos:nxt]
            if 59 in line:  # ";": extensions; checked here, llhttp gets the bare size
                m = _SIZE_LINE(line)
                if m is None:
                    raise BadRequest("chunk extension breaks the grammar of RFC 9112 7.1.1")
                line = m.group(1) + b"\r\n"
                split = True
            if split:
                if start < pos:
                    out.append(view[start:pos])
                out.append(line)
                start = nxt
            pos = nxt
            try:
                chunk = int(line[:-2], 16)  # llhttp checks the digits of this very line
            except ValueError:
                chunk = 0  # llhttp refuses the line
            if chunk > 0:
                state = DATA
                left = chunk + 2  # the data, then its CRLF
            else:
                state = TRAILER
        if start < pos:
            out.append(view[start:pos])
        self._state = state
        self._left = left
        return pos, done
